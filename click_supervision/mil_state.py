"""The MIL loop's state: what a killed run resumes from, saved after every finished iteration.

Everything in it is bounded by the number of pairs (selections) and the negative pools, not by
the number of proposals or images: per-pair proposals and cues are recomputed from the caches
when an iteration needs them.
"""

import dataclasses
import os
import zipfile

import numpy as np

from click_supervision import atomic

VERSION = 3  # 3: history_rival.
FILE_NAME = 'mil_checkpoint.npz'


@dataclasses.dataclass
class MilState:
  """The loop state after `iteration` iterations (0 = after initialisation).

  Per pair (N pairs, in `run_mil`'s pair order):
    selected_index: int64 [N] proposal index of the selection (in the bag, whole-image box
      included).
    selected_boxes: float32 [N, 4] its box, pixels.
    selected_score: float32 [N] its combined score (0 before the first re-localisation).
    selected_iteration: int64 [N] the iteration that chose it.
    selected_features: float32 [N, D] its RoI feature (the positives of the next re-training).
    split: bool [N] two clicks judged to be on different instances.
    cue_only_boxes: float32 [N, 4] the cue-only choice (argmax O x cue), for `corloc_cue_only`.
  Per iteration t = 0..iteration:
    history_index: int64 [T + 1, N], history_boxes float32 [T + 1, N, 4], history_score float32
      [T + 1, N]: the selections after each iteration, so a rerun asking for fewer iterations
      reports exactly that many.
    changes_per_iteration: int64 [T + 1] selections changed by each iteration (0 for t = 0).
  Learner:
    negatives: list over classes of dicts (`appearance.KeyedPool.state`).
    near_misses: list over classes of (features, folds), or None.
    lda_precision, lda_negative_means: the LDA trainer's background model, or None.
    zero_model_classes: int64 [k] classes without negative images (their model is zero).
    model_weights, model_biases: the last iteration's appearance models (float32 [K, C, D],
      [K, C]) when `model_momentum` blends them into the next, else None.
  """
  fingerprint: str
  iteration: int
  selected_index: np.ndarray
  selected_boxes: np.ndarray
  selected_score: np.ndarray
  selected_iteration: np.ndarray
  selected_features: np.ndarray
  split: np.ndarray
  cue_only_boxes: np.ndarray
  history_index: np.ndarray
  history_boxes: np.ndarray
  history_score: np.ndarray
  history_rival: np.ndarray
  changes_per_iteration: np.ndarray
  negatives: list
  near_misses: list | None = None
  lda_precision: np.ndarray | None = None
  lda_negative_means: np.ndarray | None = None
  zero_model_classes: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, np.int64))
  model_weights: np.ndarray | None = None
  model_biases: np.ndarray | None = None

  def record_iteration(self, iteration, new_index, new_boxes, new_score, new_features,
                       new_rival):
    """Adopts an iteration's selections (and their rival scores); returns the number that
    changed."""
    changed = new_index != self.selected_index
    self.selected_iteration = np.where(changed, iteration, self.selected_iteration)
    self.selected_index, self.selected_boxes = new_index, new_boxes
    self.selected_score, self.selected_features = new_score, new_features
    self.iteration = iteration
    self.history_index = np.concatenate([self.history_index[:iteration], new_index[None]])
    self.history_boxes = np.concatenate([self.history_boxes[:iteration], new_boxes[None]])
    self.history_score = np.concatenate([self.history_score[:iteration], new_score[None]])
    self.history_rival = np.concatenate([self.history_rival[:iteration], new_rival[None]])
    self.changes_per_iteration = np.concatenate(
        [self.changes_per_iteration[:iteration], [int(changed.sum())]]).astype(np.int64)
    return int(changed.sum())

  def save(self, workdir):
    """Writes the state atomically to `<workdir>/mil_checkpoint.npz`."""
    arrays = {'version': np.array(VERSION), 'fingerprint': np.array(self.fingerprint),
              'iteration': np.array(self.iteration)}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.name in ('fingerprint', 'iteration') or value is None:
        continue
      if field.name == 'negatives':
        for c, pool in enumerate(value):
          arrays.update({f'negatives/{c}/{k}': v for k, v in pool.items()})
        arrays['num_classes'] = np.array(len(value))
      elif field.name == 'near_misses':
        for c, (features, folds) in enumerate(value):
          arrays[f'near_misses/{c}/features'] = features
          arrays[f'near_misses/{c}/folds'] = folds
      else:
        arrays[field.name] = np.asarray(value)
    with atomic.open_atomic(os.path.join(workdir, FILE_NAME)) as f:
      np.savez(f, **arrays)

  @classmethod
  def load(cls, workdir, fingerprint, log=print):
    """The saved state of the same inputs, or None (none saved, other inputs, or damaged).

    A damaged file (truncated by a full disk, edited) only costs recomputation: it is reported
    in the log and ignored.
    """
    path = os.path.join(workdir, FILE_NAME)
    if not os.path.exists(path):
      return None
    try:
      with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}  # Reads every member: zip CRCs are checked.
      if int(arrays['version']) != VERSION or str(arrays['fingerprint']) != fingerprint:
        log(f'mil: {path} is from other inputs or another version; starting over')
        return None
      num_classes = int(arrays['num_classes'])
      negatives = [{k: arrays[f'negatives/{c}/{k}'] for k in ('features', 'keys', 'scores')}
                   for c in range(num_classes)]
      near_misses = None
      if 'near_misses/0/features' in arrays:
        near_misses = [(arrays[f'near_misses/{c}/features'], arrays[f'near_misses/{c}/folds'])
                       for c in range(num_classes)]
      kwargs = {f.name: arrays.get(f.name) for f in dataclasses.fields(cls)
                if f.name not in ('negatives', 'near_misses')}
      kwargs.update(fingerprint=fingerprint, iteration=int(arrays['iteration']),
                    negatives=negatives, near_misses=near_misses)
      if kwargs['zero_model_classes'] is None:
        kwargs['zero_model_classes'] = np.zeros(0, np.int64)
      return cls(**kwargs)
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as e:
      log(f'mil: ignoring the damaged checkpoint {path} ({type(e).__name__}: {e}); recomputing')
      return None
