"""Reference multi-fold MIL with click supervision (PAPER.md 2-4).

Per class, the positive images (the class is in the image-level labels) are bags of proposals; the
learner alternates

  re-training:     a linear SVM per (class, fold) on the currently selected proposals of the
                   positive images of the OTHER folds, against proposals of negative images
                   (images without the class), with hard-negative mining;
  re-localisation: in each positive image of fold k, the proposal maximising
                       S(p) = S_ap(p) * cue(p),   S_ap = A(p)^k * O(p)
                   with A the fold-k model's score (trained without fold k) and O the objectness,
                   each min-max normalised over the image's proposals so that they mix on one
                   scale, and cue(p) the click cues of the pair (1 without clicks; `cues.py`).
                   (The paper mixes S_ap = w * A + (1 - w) * O, `fusion='sum'`; the product
                   with k = 2 localises better on the tuning sets, BUILD_NOTES.)

Initialisation: the proposal best overlapping the whole image (no clicks), or the largest window
centered on the click (`click_init`). Iterations stop after `num_iterations` or when no
selection changes.

Memory: features are streamed from the cache one image at a time; the learner keeps only the
selected positive features and, per class, a capped pool of hard negatives.

`run_mil` writes a checkpoint after every iteration (atomic); a rerun with the same inputs resumes
from the last finished iteration and gives the same selections as an uninterrupted run.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import tempfile
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from click_supervision import boxes as box_lib
from click_supervision import cues as cues_lib
from click_supervision import evaluation

CUES = ('objectness', 'appearance', 'box_center', 'box_area', 'click_init', 'split_instances')

TRAINERS = ('svm', 'lda')
INITS = ('window', 'cues')
NORMALIZATIONS = ('minmax', 'rank')
FUSIONS = ('sum', 'product')

CHECKPOINT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class MilConfig:
  """Settings of the MIL learner (defaults: BUILD_NOTES, chosen on the synthetic set).

  Attributes:
    num_folds: K of multi-fold MIL (1 = plain MIL: an image is re-localised by a model that
      trained on it).
    num_iterations: maximum re-training / re-localisation rounds.
    cues: the switched-on cues, a subset of CUES: `objectness` (O in S_ap), `appearance` (A in
      S_ap; off = cue-only localisation), `box_center`, `box_area`, `click_init`,
      `split_instances` (two clicks far apart are treated as two instances, PAPER.md 4.3).
    fusion: how A and O make S_ap: `product` (S_ap = A^k x O, k = `appearance_exponent`: a
      log-linear mix, so a box must score well on both; the default) or `sum` (the paper:
      S_ap = w A + (1 - w) O). See `appearance_objectness`. Chosen on the synthetic set and
      tinycoco (BUILD_NOTES): with k = 2, MIL CorLoc on the synthetic set is 0.536 / 0.730 /
      0.825 for 0 / 1 / 2 clicks against 0.297 / 0.727 / 0.797 with the sum, and within noise
      of the sum on tinycoco.
    appearance_weight: w of the `sum` fusion (the paper: 0.5).
    appearance_exponent: k of the `product` fusion (the weight of log A against log O; with
      min-max A, k > 1 sharpens the appearance model's preference among the boxes O likes).
    sigma_bc: box-center sigma: a fraction of sqrt(proposal area) (`sigma_bc_relative`) or pixels.
    sigma_bc_relative: scale sigma_bc with the proposal size.
    size_exponent: lambda of the box-center cue's size factor `cues.box_size_score` (the
      1 / area normaliser of the click likelihood, tempered; 0 = the paper's s_bc alone). Part of
      the `box_center` cue and used only with `sigma_bc_relative` (with a fixed sigma in pixels
      the likelihood has no area term). 0 by default: 0.3 raises cue-only CorLoc on the tuning
      sets but not MIL's (BUILD_NOTES).
    sigma_bc_two_clicks_factor: sigma for the mean of two clicks = factor x sigma_bc (the mean of
      two independent clicks errs by 1/sqrt(2) of one).
    sigma_ba: box-area sigma in natural-log units; None = `sigma_ba_factor` x the area model's
      residual std.
    sigma_ba_factor: the residual std of mu(d) is how far object areas scatter around mu; as a
      score over proposals it was too tight on the synthetic set (two-click cue-only CorLoc 0.801
      at 1x, 0.837 / 0.835 at about 1.7x / 2.3x, 0.806 without the cue; BUILD_NOTES), so 2x.
    init: the first selection of each pair: `window` (the paper: the proposal best overlapping
      the whole image, or with clicks and `click_init` on, the largest window centered on the
      click) or `cues` (the cue-only choice, argmax of O x cue, so the first appearance model
      trains on the boxes the clicks and objectness already point to; BUILD_NOTES).
    trainer: the appearance model: `svm` (the paper: a linear SVM per (fold, class) with
      hard-negative mining) or `lda` (linear discriminant analysis with one shared background
      covariance, as in Hariharan et al. ECCV 2012: w = (Sigma + shrinkage)^-1 (mu_pos - mu_neg);
      closed form, no mining; the whole MIL stage 5-15x faster on the VOC sample, BUILD_NOTES).
    normalization: how A and O of an image are brought to [0, 1] before mixing: `minmax` or
      `rank` (percentile within the image); see `normalize_per_image`.
    rerank_top: with clicks, re-localisation chooses only among the pair's `rerank_top` best
      proposals by the cue-only score O x cue (0 = among all, as in the paper): the clicks pick
      the candidates, the appearance model decides between them.
    near_miss_negatives: per positive pair and iteration, up to this many proposals of the
      pair's own image overlapping its current selection with IoU in [0.1, 0.5) (Fast R-CNN's
      background rule) become negatives of the class, teaching the model the difference between
      the object and boxes too big around it or on a part of it, the commonest errors (0 = off,
      as in the paper). They are taken from the selections of the cue initialisation and of every
      re-localisation, and like positives are held out of their own fold's model. SVM: added to
      the negatives; LDA: mu_neg = the mean of the background mean and the near-miss mean.
    svm_c: LinearSVC C (features are L2-normalised).
    svm_tol: LinearSVC stopping tolerance (liblinear's dual gap). 1e-3, not sklearn's 1e-4: SVM
      training takes 14 % less time on the VOC sample, with the same CorLoc at every iteration
      there and on the tuning sets (BUILD_NOTES).
    negatives_per_image: random proposals per negative image in the first negative pool.
    max_negatives: cap on each class's pool of hard negatives.
    hard_margin: mined negatives are proposals of negative images scoring above this.
    seed: folds, negative sampling and SVM solver order.
    num_threads: SVMs trained in parallel.
  """
  num_folds: int = 10
  num_iterations: int = 5
  cues: tuple = CUES
  fusion: str = 'product'
  appearance_weight: float = 0.5
  appearance_exponent: float = 2.0
  sigma_bc: float = 0.15
  sigma_bc_relative: bool = True
  size_exponent: float = 0.0
  sigma_bc_two_clicks_factor: float = 0.7071
  sigma_ba: float | None = None
  sigma_ba_factor: float = 2.0
  init: str = 'window'
  trainer: str = 'svm'
  normalization: str = 'minmax'
  rerank_top: int = 0
  near_miss_negatives: int = 0
  svm_c: float = 1.0
  svm_tol: float = 1e-3
  negatives_per_image: int = 20
  max_negatives: int = 5000
  hard_margin: float = -1.0
  seed: int = 0
  num_threads: int = 2

  def __post_init__(self):
    unknown = set(self.cues) - set(CUES)
    if unknown:
      raise ValueError(f'unknown cues {sorted(unknown)}; cues are {CUES}')
    object.__setattr__(self, 'cues', tuple(c for c in CUES if c in self.cues))
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f'unknown normalization {self.normalization!r}; choices are '
                       f'{NORMALIZATIONS}')
    if self.init not in INITS:
      raise ValueError(f'unknown init {self.init!r}; choices are {INITS}')
    if self.fusion not in FUSIONS:
      raise ValueError(f'unknown fusion {self.fusion!r}; choices are {FUSIONS}')
    if self.appearance_exponent <= 0:
      raise ValueError(f'appearance_exponent must be > 0, not {self.appearance_exponent}')
    if self.svm_c <= 0 or self.svm_tol <= 0:
      raise ValueError(f'svm_c and svm_tol must be > 0, not {self.svm_c} and {self.svm_tol}')
    if self.size_exponent < 0:
      raise ValueError(f'size_exponent must be >= 0, not {self.size_exponent}')
    if self.trainer not in TRAINERS:
      raise ValueError(f'unknown trainer {self.trainer!r}; trainers are {TRAINERS}')

  def uses(self, cue):
    return cue in self.cues


# ---------------------------------------------------------------------------------------------
# Reading bags from the caches.


def iter_bags(proposals, features, image_ids=None):
  """Yields `(image_id, boxes float32 [P, 4], objectness float32 [P], features float32 [P, D])`.

  Features are L2-normalised; one proposals shard and one features shard are in memory at a time.

  Args:
    proposals, features: filled `cache.ShardedCache`s over the same images.
    image_ids: optional set; other images are skipped without reading their features.
  """
  proposal_shard, proposal_data = None, None
  for shard in range(features.num_shards):
    ids = [i for i in features.shard_image_ids(shard) if image_ids is None or i in image_ids]
    if not ids:
      continue
    per_image = features.read_shard(shard)
    if per_image is None:
      raise RuntimeError(f'{features.shard_path(shard)} is missing or corrupt')
    for image_id in ids:
      if proposals.shard_of(image_id) != proposal_shard:
        proposal_shard = proposals.shard_of(image_id)
        proposal_data = proposals.read_shard(proposal_shard)
        if proposal_data is None:
          raise RuntimeError(f'{proposals.shard_path(proposal_shard)} is missing or corrupt')
      feats = per_image[image_id]['features'].astype(np.float32)
      feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
      yield (image_id, proposal_data[image_id]['boxes'], proposal_data[image_id]['scores'],
             feats)


def normalize_per_image(scores, method='minmax'):
  """One image's proposal scores -> [0, 1]: `minmax` (all equal -> all 1) or `rank` (the
  fraction of the image's proposals scoring at most as high; ties share the highest rank)."""
  scores = np.asarray(scores, np.float32)
  if method == 'rank':
    order = np.sort(scores)
    return (np.searchsorted(order, scores, side='right') / len(scores)).astype(np.float32)
  low, high = scores.min(), scores.max()
  if high - low < 1e-12:
    return np.ones_like(scores)
  return (scores - low) / (high - low)


def appearance_objectness(appearance, objectness, config):
  """S_ap of one image's proposals from normalised A and O (both float32 [P] in [0, 1]).

  `sum`: w A + (1 - w) O (PAPER.md 2.1). `product`: A^k x O. O may be None (the `objectness`
  cue off): S_ap = A (sum) or A^k (product).
  """
  if config.fusion == 'product':
    s_ap = appearance ** config.appearance_exponent
    return s_ap if objectness is None else s_ap * objectness
  if objectness is None:
    return appearance
  return config.appearance_weight * appearance + (1.0 - config.appearance_weight) * objectness


# ---------------------------------------------------------------------------------------------
# Folds and cues of a pair.


def assign_folds(image_ids, num_folds, seed):
  """Image id -> fold in [0, num_folds): a seeded permutation dealt round-robin, so folds differ in
  size by at most one image. All classes of an image share its fold."""
  order = sorted(image_ids)
  permutation = np.random.default_rng(seed).permutation(len(order))
  return {order[i]: int(rank % num_folds) for rank, i in enumerate(permutation)}


def two_clicks_on_different_instances(boxes, objectness, clicks, config):
  """PAPER.md 4.3 rule: do the two clicks of a pair mark different instances?

  For each click, the box an annotator's click alone would give (the proposal maximising
  O x s_bc of that click) is found; the clicks are judged to be on different instances when
  neither click lies inside the other click's box. Two clicks on one object both fall inside its
  box (the click error is a fraction of the object size), while clicks on two objects usually do
  not.

  Returns:
    bool.
  """
  inside = []
  for own, other in ((0, 1), (1, 0)):
    score = objectness * cues_lib.box_center_score(boxes, clicks[own], config.sigma_bc,
                                                   config.sigma_bc_relative)
    box = boxes[int(np.argmax(score))]
    y, x = clicks[other]
    inside.append(box[0] <= y <= box[2] and box[1] <= x <= box[3])
  return not any(inside)


def pair_cue(boxes, objectness, clicks, area_model, config):
  """The click cue of one pair over its image's proposals, and how it was built.

  Args:
    boxes: float32 [P, 4] proposals.
    objectness: float32 [P] normalised O.
    clicks: float32 [C, 2] `(y, x)`, C in {0, 1, 2}.
    area_model: `cues.AreaModel` (two clicks) or None.
    config: MilConfig.
  Returns:
    (cue float32 [P], init_center `(y, x)` or None, split bool).
  """
  cue = np.ones(len(boxes), np.float32)
  if len(clicks) == 0:
    return cue, None, False
  if config.uses('box_center') and config.sigma_bc_relative and config.size_exponent:
    # With one, two or split clicks alike: sigma grows with sqrt(area) in each case.
    cue *= cues_lib.box_size_score(boxes, config.size_exponent)
  if len(clicks) == 1:
    if config.uses('box_center'):
      cue *= cues_lib.box_center_score(boxes, clicks[0], config.sigma_bc, config.sigma_bc_relative)
    return cue, clicks[0], False
  split = config.uses('split_instances') and two_clicks_on_different_instances(
      boxes, objectness, clicks, config)
  if split:
    # One bump per click (each at the one-click sigma); the distance says nothing about size.
    if config.uses('box_center'):
      cue *= np.maximum(
          cues_lib.box_center_score(boxes, clicks[0], config.sigma_bc, config.sigma_bc_relative),
          cues_lib.box_center_score(boxes, clicks[1], config.sigma_bc, config.sigma_bc_relative))
    return cue, clicks[0], True
  center = clicks.mean(axis=0)
  if config.uses('box_center'):
    cue *= cues_lib.box_center_score(boxes, center,
                                     config.sigma_bc * config.sigma_bc_two_clicks_factor,
                                     config.sigma_bc_relative)
  if config.uses('box_area') and area_model is not None:
    sigma = (config.sigma_ba if config.sigma_ba is not None
             else config.sigma_ba_factor * area_model.sigma)
    cue *= cues_lib.box_area_score(boxes, area_model.log_area(cues_lib.click_distance(clicks)),
                                   max(sigma, 1e-3))
  return cue, center, False


def initial_box_index(boxes, height, width, center):
  """Index of the proposal best overlapping the whole image (no center) or the largest window
  centered on `center` (PAPER.md 3.3)."""
  if center is None:
    target = np.array([0, 0, height, width], np.float32)
  else:
    target = cues_lib.largest_centered_window(center, height, width)
  return int(np.argmax(box_lib.pairwise_iou(target[None], boxes)[0]))


# ---------------------------------------------------------------------------------------------
# Re-training.


def _fit_svm(positives, negatives, c, seed, tol):
  """One linear SVM (liblinear, squared hinge, balanced class weights): (w float32 [D], b)."""
  x = np.concatenate([positives, negatives])
  y = np.concatenate([np.ones(len(positives)), -np.ones(len(negatives))])
  svm = LinearSVC(C=c, class_weight='balanced', random_state=seed, max_iter=2000, dual=True,
                  tol=tol)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', ConvergenceWarning)
    svm.fit(x, y)
  return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])


def train_models(positive_features, positive_folds, negatives, num_classes, dim, config,
                 iteration, near_misses=None):
  """Trains the per-(fold, class) SVMs, `num_threads` at a time (liblinear releases the GIL).

  Model (k, c) trains on the selected positives of class c outside fold k (all of them with one
  fold) against class c's negative pool. (A joint L-BFGS solve of a class's K models with shared
  negatives was tried and was 20x slower than liblinear's dual coordinate descent here.)

  Args:
    positive_features: list over classes of float32 [N_c, D] selected positives.
    positive_folds: list over classes of int [N_c] fold of each positive.
    negatives: list over classes of float32 [M_c, D] negative pools.
    num_classes, dim: sizes.
    config: MilConfig.
    iteration: for the solver seeds.
    near_misses: optional list over classes of (features float32 [M, D], folds int [M]): extra
      negatives, held out of their own fold's model.
  Returns:
    (weights float32 [K, C, D], biases float32 [K, C]); a (fold, class) without positives or
    negatives gets a zero model.
  """
  k = config.num_folds
  weights = np.zeros((k, num_classes, dim), np.float32)
  biases = np.zeros((k, num_classes), np.float32)
  jobs = {}
  with concurrent.futures.ThreadPoolExecutor(config.num_threads) as pool:
    for c in range(num_classes):
      for fold in range(k):
        train = _outside_fold(positive_folds[c], fold, k)
        fold_negatives = negatives[c]
        if near_misses is not None and len(near_misses[c][0]):
          near = _outside_fold(near_misses[c][1], fold, k)
          fold_negatives = np.concatenate([negatives[c], near_misses[c][0][near]])
        if train.any() and len(fold_negatives):
          seed = (config.seed * 1000003 + iteration * 1009 + c * 31 + fold) % (2 ** 31)
          jobs[(fold, c)] = pool.submit(_fit_svm, positive_features[c][train], fold_negatives,
                                        config.svm_c, seed, config.svm_tol)
    for (fold, c), job in jobs.items():
      weights[fold, c], biases[fold, c] = job.result()
  return weights, biases


def background_statistics(samples):
  """The shared background model of the LDA trainer.

  Args:
    samples: float32 [N, D] random proposals of all images.
  Returns:
    precision float64 [D, D]: the inverse of the Ledoit-Wolf shrunk covariance (shrinkage chosen
    by the Ledoit-Wolf formula; with N of a few thousand and D = 1280 the raw covariance is
    singular or nearly so).
  """
  from sklearn.covariance import LedoitWolf  # pylint: disable=g-import-not-at-top
  return LedoitWolf().fit(samples.astype(np.float64)).precision_


def _outside_fold(folds, fold, num_folds):
  return folds != fold if num_folds > 1 else np.ones(len(folds), bool)


def train_lda(positive_features, positive_folds, negative_means, precision, num_classes, dim,
              config, near_misses=None):
  """Per-(fold, class) LDA models in closed form: w = P (mu_pos - mu_neg), b = -w.(mu_pos +
  mu_neg) / 2, with P the shared background precision and mu_neg the mean of class c's random
  negatives (averaged with the mean of its near misses outside the fold, when there are any).
  Same arguments and returns as `train_models`, plus `negative_means` float32 [C, D] and
  `precision` float64 [D, D]."""
  k = config.num_folds
  weights = np.zeros((k, num_classes, dim), np.float32)
  biases = np.zeros((k, num_classes), np.float32)
  for c in range(num_classes):
    for fold in range(k):
      train = _outside_fold(positive_folds[c], fold, k)
      if not train.any():
        continue
      mu_pos = positive_features[c][train].mean(axis=0).astype(np.float64)
      mu_neg = negative_means[c]
      if near_misses is not None:
        near_features, near_folds = near_misses[c]
        near = _outside_fold(near_folds, fold, k)
        if near.any():
          mu_neg = (mu_neg + near_features[near].mean(axis=0)) / 2
      w = precision @ (mu_pos - mu_neg)
      weights[fold, c] = w
      biases[fold, c] = -w @ (mu_pos + mu_neg) / 2
  return weights, biases


def near_miss_indices(boxes, index, count, rng):
  """Up to `count` proposals (random, seeded) overlapping proposal `index` with IoU in
  [0.1, 0.5): int [<= count]."""
  iou = box_lib.pairwise_iou(boxes[index][None], boxes)[0]
  candidates = np.flatnonzero((iou >= 0.1) & (iou < 0.5))
  if len(candidates) > count:
    candidates = np.sort(rng.choice(candidates, count, replace=False))
  return candidates


def _collect_near_misses(collected, num_classes, dim):
  """[(class, fold, features [n, D])] -> list over classes of (features [M, D], folds [M])."""
  result = []
  for c in range(num_classes):
    parts = [(f, fold) for cc, fold, f in collected if cc == c and len(f)]
    if parts:
      result.append((np.concatenate([f for f, _ in parts]),
                     np.concatenate([np.full(len(f), fold) for f, fold in parts])))
    else:
      result.append((np.zeros((0, dim), np.float32), np.zeros(0, np.int64)))
  return result


def update_negatives(pool, candidates, w, b, config):
  """Keeps the hardest negatives of `pool` + `candidates` under model (w, b), at most
  `max_negatives`, dropping those scoring below `hard_margin` (easy negatives) unless the pool
  would fall below 10 % of the cap."""
  merged = np.concatenate([pool, candidates]) if len(candidates) else pool
  scores = merged @ w + b
  order = np.argsort(-scores, kind='stable')
  hard = int((scores > config.hard_margin).sum())
  keep = min(max(hard, config.max_negatives // 10), config.max_negatives, len(merged))
  return merged[order[:keep]]


# ---------------------------------------------------------------------------------------------
# The learner.


def _state_path(workdir):
  return os.path.join(workdir, 'mil_checkpoint.npz')


def _save_state(workdir, state):
  os.makedirs(workdir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=workdir, suffix='.tmp')
  with os.fdopen(fd, 'wb') as f:
    np.savez(f, **state)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, _state_path(workdir))


def _load_state(workdir, fingerprint):
  path = _state_path(workdir)
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      state = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError):
    return None  # A damaged checkpoint only costs recomputation.
  if str(state.get('fingerprint')) != fingerprint:
    return None
  return state


def run_mil(records, class_names, proposals, features, selected_clicks, config, workdir=None,
            area_model=None, log=print, on_iteration=None):
  """Localises every positive (image, class) pair.

  Args:
    records: list of record dicts (ground truth is used ONLY to report CorLoc).
    class_names: list of str.
    proposals, features: filled `cache.ShardedCache`s covering `records`.
    selected_clicks: dict `(image_id, class_index)` -> float32 [C, 2] `(y, x)` clicks (C = 0, 1 or
      2 for every pair).
    config: MilConfig.
    workdir: folder for the checkpoint (None: no checkpoint, no resume).
    area_model: `cues.AreaModel` for two clicks (needed when `box_area` is on and C = 2).
    log: callable taking one str.
    on_iteration: optional callable(iteration, info dict with `corloc` and `changes`) after each
      iteration (the driver writes TensorBoard summaries with it).
  Returns:
    dict with `selections` (pair -> dict(box float32 [4], index, score, iteration)),
    `corloc_per_iteration` (list, index 0 = initialisation), `changes_per_iteration`,
    `corloc_cue_only` (S = O x cue, no appearance model), `num_split_pairs`, `timings_s`.
  """
  num_classes = len(class_names)
  by_id = {r['image_id']: r for r in records}
  pairs = [(r['image_id'], int(c)) for r in records for c in r['image_labels']]
  pair_index = {pair: i for i, pair in enumerate(pairs)}
  folds = assign_folds(list(by_id), config.num_folds, config.seed)
  pair_class = np.array([c for _, c in pairs], np.int64)
  pair_fold = np.array([folds[i] for i, _ in pairs], np.int64)
  rng = np.random.default_rng(config.seed)
  timings = {'init': 0.0, 'train': 0.0, 'relocalize': 0.0}
  fingerprint = hashlib.sha256(json.dumps(
      # num_iterations is left out: a rerun asking for more iterations continues the old run.
      {'config': dict(dataclasses.asdict(config), num_iterations=None),
       'proposals': proposals.key,
       'features': features.key, 'pairs': pairs, 'version': CHECKPOINT_VERSION,
       'area_model': area_model.to_dict() if area_model else None,
       'clicks': {f'{p[0]}/{p[1]}': np.asarray(v).round(3).tolist()
                  for p, v in sorted(selected_clicks.items())}},
      sort_keys=True).encode()).hexdigest()

  # --- initialisation pass: cues of every pair, initial selections, first negative pools. ---
  start = time.time()
  pair_cues = [None] * len(pairs)
  cue_only_index = np.zeros(len(pairs), np.int64)
  selected_index = np.zeros(len(pairs), np.int64)
  selected_features = None
  split = np.zeros(len(pairs), bool)
  pair_has_clicks = np.zeros(len(pairs), bool)
  pair_boxes = [None] * len(pairs)
  negative_samples, negative_labels = [], []
  near_collected = []
  for image_id, boxes, objectness, feats in iter_bags(proposals, features):
    record = by_id[image_id]
    o = normalize_per_image(objectness, config.normalization)
    for c in record['image_labels']:
      i = pair_index[(image_id, int(c))]
      clicks = np.asarray(selected_clicks.get((image_id, int(c)), np.zeros((0, 2))), np.float32)
      cue, center, split[i] = pair_cue(boxes, o, clicks, area_model, config)
      pair_has_clicks[i] = len(clicks) > 0
      pair_cues[i] = cue
      pair_boxes[i] = boxes
      cue_only_index[i] = int(np.argmax((o if config.uses('objectness') else 1.0) * cue))
      if config.init == 'cues' or not config.uses('appearance'):
        # (Without the appearance model nothing is learned: the answer is the cue-only choice.)
        selected_index[i] = cue_only_index[i]
      else:
        selected_index[i] = initial_box_index(boxes, record['height'], record['width'],
                                              center if config.uses('click_init') else None)
      if selected_features is None:
        selected_features = np.zeros((len(pairs), feats.shape[1]), np.float32)
      selected_features[i] = feats[selected_index[i]]
      if config.near_miss_negatives and config.init == 'cues':
        # (The paper's whole-image start has no near misses worth the name.)
        near = near_miss_indices(boxes, selected_index[i], config.near_miss_negatives, rng)
        near_collected.append((int(c), folds[image_id], feats[near]))
    # A random sample of each image's proposals; used as negatives of the classes it lacks.
    take = rng.choice(len(feats), min(config.negatives_per_image, len(feats)), replace=False)
    negative_samples.append(feats[take])
    labels = np.zeros(num_classes, bool)
    labels[record['image_labels']] = True
    negative_labels.append(np.repeat(labels[None], len(take), axis=0))
  dim = selected_features.shape[1]
  negative_samples = np.concatenate(negative_samples)
  negative_labels = np.concatenate(negative_labels)
  negatives = [negative_samples[~negative_labels[:, c]] for c in range(num_classes)]
  near_misses = (_collect_near_misses(near_collected, num_classes, dim)
                 if config.near_miss_negatives else None)
  if config.trainer == 'lda':
    precision = background_statistics(negative_samples)
    negative_means = np.stack([n.mean(axis=0) if len(n) else negative_samples.mean(axis=0)
                               for n in negatives]).astype(np.float64)
  timings['init'] += time.time() - start

  def corloc_of(indices):
    localizations = {pair: pair_boxes[i][indices[i]] for pair, i in pair_index.items()}
    return evaluation.corloc(records, localizations, num_classes)

  corloc_per_iteration = [corloc_of(selected_index)['corloc']]
  corloc_cue_only = corloc_of(cue_only_index)
  changes_per_iteration = [0]
  selected_score = np.zeros(len(pairs), np.float32)
  selected_iteration = np.zeros(len(pairs), np.int64)
  log(f'mil: {len(pairs)} pairs, {config.num_folds} folds, {dim}-d features; '
      f'{int(split.sum())} two-click pairs split; CorLoc cue-only {corloc_cue_only["corloc"]:.3f}, '
      f'initialisation {corloc_per_iteration[0]:.3f}')

  first_iteration = 1
  state = _load_state(workdir, fingerprint) if workdir else None
  if state is not None:
    selected_index = state['selected_index']
    selected_features = state['selected_features']
    selected_score = state['selected_score']
    selected_iteration = state['selected_iteration']
    negatives = [state[f'negatives_{c}'] for c in range(num_classes)]
    if near_misses is not None:
      near_misses = [(state[f'near_miss_{c}'], state[f'near_miss_folds_{c}'])
                     for c in range(num_classes)]
    corloc_per_iteration = list(state['corloc_per_iteration'])
    changes_per_iteration = list(state['changes_per_iteration'])
    first_iteration = int(state['iteration']) + 1
    log(f'mil: resumed after iteration {first_iteration - 1} from {_state_path(workdir)}')

  # --- the MIL loop ---
  for iteration in range(first_iteration, config.num_iterations + 1):
    if not config.uses('appearance'):
      break  # Cue-only: nothing to learn.
    if iteration > 1 and changes_per_iteration[-1] == 0:
      break  # Converged.
    # Re-training.
    start = time.time()
    positive_features = [selected_features[pair_class == c] for c in range(num_classes)]
    positive_folds = [pair_fold[pair_class == c] for c in range(num_classes)]
    if config.trainer == 'lda':
      weights, biases = train_lda(positive_features, positive_folds, negative_means, precision,
                                  num_classes, dim, config, near_misses)
    else:
      weights, biases = train_models(positive_features, positive_folds, negatives, num_classes,
                                     dim, config, iteration, near_misses)
    mean_w, mean_b = weights.mean(axis=0), biases.mean(axis=0)
    timings['train'] += time.time() - start

    # Re-localisation of every positive pair (fold-held-out model) and hard-negative mining.
    start = time.time()
    new_index = selected_index.copy()
    new_features = selected_features.copy()
    candidates = [[] for _ in range(num_classes)]
    near_collected = []
    near_rng = np.random.default_rng([config.seed, iteration])
    for image_id, boxes, objectness, feats in iter_bags(proposals, features):
      record = by_id[image_id]
      o = (normalize_per_image(objectness, config.normalization) if config.uses('objectness')
           else None)
      fold = folds[image_id]
      for c in record['image_labels']:
        i = pair_index[(image_id, int(c))]
        a = normalize_per_image(feats @ weights[fold, c] + biases[fold, c], config.normalization)
        s_ap = appearance_objectness(a, o, config)
        score = s_ap * pair_cues[i]
        if config.rerank_top and pair_has_clicks[i]:
          cue_only = (o if o is not None else 1.0) * pair_cues[i]
          outside = np.argsort(-cue_only, kind='stable')[config.rerank_top:]
          score[outside] = -1.0
        new_index[i] = int(np.argmax(score))
        new_features[i] = feats[new_index[i]]
        selected_score[i] = score[new_index[i]]
        if config.near_miss_negatives:
          near = near_miss_indices(boxes, new_index[i], config.near_miss_negatives, near_rng)
          near_collected.append((int(c), fold, feats[near]))
      absent = np.setdiff1d(np.arange(num_classes), record['image_labels'])
      if len(absent) and config.trainer == 'svm':  # LDA has no use for mined negatives.
        scores = feats @ mean_w[absent].T + mean_b[absent]
        for column, c in enumerate(absent):
          hard = scores[:, column] > config.hard_margin
          if hard.any():
            # At most the 50 hardest per image, so one cluttered image does not fill the pool.
            top = np.argsort(-scores[:, column])[:min(int(hard.sum()), 50)]
            candidates[c].append(feats[top])
    for c in range(num_classes):
      if candidates[c]:
        negatives[c] = update_negatives(negatives[c], np.concatenate(candidates[c]), mean_w[c],
                                        mean_b[c], config)
    if config.near_miss_negatives:
      near_misses = _collect_near_misses(near_collected, num_classes, dim)
    timings['relocalize'] += time.time() - start

    changed = int((new_index != selected_index).sum())
    selected_iteration[new_index != selected_index] = iteration
    selected_index, selected_features = new_index, new_features
    corloc_per_iteration.append(corloc_of(selected_index)['corloc'])
    changes_per_iteration.append(changed)
    log(f'mil: iteration {iteration}: CorLoc {corloc_per_iteration[-1]:.3f}, {changed} '
        f'selections changed, negatives per class {int(np.mean([len(n) for n in negatives]))}')
    if workdir:
      state = {'fingerprint': np.array(fingerprint), 'iteration': np.array(iteration),
               'selected_index': selected_index, 'selected_features': selected_features,
               'selected_score': selected_score, 'selected_iteration': selected_iteration,
               'corloc_per_iteration': np.array(corloc_per_iteration),
               'changes_per_iteration': np.array(changes_per_iteration)}
      state.update({f'negatives_{c}': negatives[c] for c in range(num_classes)})
      if near_misses is not None:
        state.update({f'near_miss_{c}': near_misses[c][0] for c in range(num_classes)})
        state.update({f'near_miss_folds_{c}': near_misses[c][1] for c in range(num_classes)})
      _save_state(workdir, state)
    if on_iteration is not None:
      on_iteration(iteration, {'corloc': corloc_per_iteration[-1], 'changes': changed})

  final = corloc_of(selected_index)
  selections = {pair: {'box': pair_boxes[i][selected_index[i]], 'index': int(selected_index[i]),
                       'score': float(selected_score[i]),
                       'iteration': int(selected_iteration[i]), 'split': bool(split[i])}
                for pair, i in pair_index.items()}
  return {'selections': selections, 'corloc': final['corloc'],
          'corloc_non_difficult': final['corloc_non_difficult'],
          'corloc_per_class': final['per_class'],
          'corloc_per_iteration': corloc_per_iteration,
          'changes_per_iteration': changes_per_iteration,
          'corloc_cue_only': corloc_cue_only['corloc'],
          'corloc_cue_only_non_difficult': corloc_cue_only['corloc_non_difficult'],
          'num_pairs': len(pairs), 'num_split_pairs': int(split.sum()), 'timings_s': timings}
