"""Reference multi-fold MIL with click supervision (docs/method.md, sections 2-4).

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

The parts, each replaceable on its own:
  bag source     `bags`: an image's proposals, objectness and RoI features, pooled on demand
                 from the trunk-map cache, one image at a time;
  appearance     `appearance`: the trainers (SVM, LDA) behind one `fit` -> scorer interface, and
                 the bounded, de-duplicated negative pools;
  re-localisation `relocalize_image`: S_ap(A of any scorer, O) x the pair's click cues;
  loop state     `mil_state.MilState`: saved atomically after the initialisation and after every
                 iteration; a rerun with the same inputs resumes from the last finished one and
                 gives the same selections as an uninterrupted run.

Memory: bounded by the selections (one feature row per pair) and the negative pools (at most
`max_negatives` rows per class), not by the number of images: proposals and click cues are
recomputed from the caches in each pass.
"""

import dataclasses
import os
import time

import numpy as np

from click_supervision import appearance
from click_supervision import boxes as box_lib
from click_supervision import cache as cache_lib
from click_supervision import config as config_lib
from click_supervision import cues as cues_lib
from click_supervision import evaluation
from click_supervision import mil_state

# The learner's settings live with the other stages' in `config` (no heavy imports there).
CUES, TRAINERS, INITS = config_lib.CUES, config_lib.TRAINERS, config_lib.INITS
NORMALIZATIONS, FUSIONS = config_lib.NORMALIZATIONS, config_lib.FUSIONS
MilConfig = config_lib.MilConfig


# ---------------------------------------------------------------------------------------------
# Scores of one image's proposals.


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

  `sum`: w A + (1 - w) O (the paper; docs/method.md, section 2). `product`: A^k x O. O may be
  None (the `objectness` cue off): S_ap = A (sum) or A^k (product).
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
  """Do the two clicks of a pair mark different instances? (docs/method.md, section 4)

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
  centered on `center` (docs/method.md, section 3)."""
  if center is None:
    target = np.array([0, 0, height, width], np.float32)
  else:
    target = cues_lib.largest_centered_window(center, height, width)
  return int(np.argmax(box_lib.pairwise_iou(target[None], boxes)[0]))


def near_miss_indices(boxes, index, count, rng):
  """Up to `count` proposals (random, seeded) overlapping proposal `index` with IoU in
  [0.1, 0.5): int [<= count]."""
  iou = box_lib.pairwise_iou(boxes[index][None], boxes)[0]
  candidates = np.flatnonzero((iou >= 0.1) & (iou < 0.5))
  if len(candidates) > count:
    candidates = np.sort(rng.choice(candidates, count, replace=False))
  return candidates



def relocalize_image(bag, classes, fold, cues, scorer, config, cue_only_scores=None):
  """Re-localisation of one image's positive pairs: argmax of S = S_ap(A, O) x cue.

  Args:
    bag: `bags.Bag`.
    classes: int sequence, the image's positive classes.
    fold: the image's fold; A comes from that fold's models (trained without this image).
    cues: list (one per class) of float32 [P] click cues (`pair_cue`).
    scorer: any object with `scores(bag, fold, classes) -> float32 [P, n]` raw appearance
      scores (`appearance.LinearModels`; later the detector).
    config: MilConfig.
    cue_only_scores: with `rerank_top`, list (one per class) of float32 [P] cue-only scores
      O x cue, or None for a pair without clicks.
  Returns:
    list (one per class) of (proposal index, score S of that proposal, rival score): the rival
    score is the highest S among the candidates that overlap the chosen one with IoU below
    `RIVAL_MAX_IOU` (a different answer), 0 when there is none. A rival close to the chosen
    score is doubt, which the adaptive second click (`second_click`) asks about.
  """
  o = normalize_per_image(bag.objectness, config.normalization) if config.uses(
      'objectness') else None
  raw = scorer.scores(bag, fold, classes)
  chosen = []
  for j in range(len(classes)):
    a = normalize_per_image(raw[:, j], config.normalization)
    score = appearance_objectness(a, o, config) * cues[j]
    if config.rerank_top and cue_only_scores is not None and cue_only_scores[j] is not None:
      outside = np.argsort(-cue_only_scores[j], kind='stable')[config.rerank_top:]
      score[outside] = -1.0
    best = int(np.argmax(score))
    different = box_lib.pairwise_iou(bag.boxes[best][None], bag.boxes)[0] < RIVAL_MAX_IOU
    rival = float(score[different].max()) if different.any() else 0.0
    chosen.append((best, float(score[best]), max(rival, 0.0)))
  return chosen


# A box overlapping the chosen one less than this is a different answer: CorLoc's own threshold,
# so at most one of the two can be right about an object both would be judged against.
RIVAL_MAX_IOU = 0.5


# ---------------------------------------------------------------------------------------------
# The learner.


@dataclasses.dataclass
class _Problem:
  """The fixed parts of a run: pairs, folds and clicks (small; per pair, not per proposal)."""
  records: list
  class_names: list
  pairs: list            # [(image_id, class_index)] in record order.
  pair_index: dict       # pair -> row.
  pair_class: np.ndarray  # int64 [N].
  pair_fold: np.ndarray   # int64 [N].
  folds: dict            # image_id -> fold.
  image_number: dict     # image_id -> its position in `records` (negative pool keys).
  labels: dict           # image_id -> int64 [L] positive classes.
  clicks: dict           # pair -> float32 [C, 2].

  @classmethod
  def build(cls, records, class_names, selected_clicks, config):
    pairs = [(r['image_id'], int(c)) for r in records for c in r['image_labels']]
    folds = assign_folds([r['image_id'] for r in records], config.num_folds, config.seed)
    return cls(records, list(class_names), pairs, {p: i for i, p in enumerate(pairs)},
               np.array([c for _, c in pairs], np.int64),
               np.array([folds[i] for i, _ in pairs], np.int64), folds,
               {r['image_id']: n for n, r in enumerate(records)},
               {r['image_id']: np.asarray(r['image_labels'], np.int64) for r in records},
               {p: np.asarray(selected_clicks.get(p, np.zeros((0, 2))), np.float32).reshape(-1, 2)
                for p in pairs})

  @property
  def num_classes(self):
    return len(self.class_names)

  def rows_of(self, image_id):
    return [self.pair_index[(image_id, int(c))] for c in self.labels[image_id]]

  def corloc(self, boxes):
    """`evaluation.corloc` of per-pair boxes float32 [N, 4]."""
    return evaluation.corloc(self.records, {p: boxes[i] for i, p in enumerate(self.pairs)},
                             self.num_classes)


def _fingerprint(problem, bags, config, area_model):
  """What a checkpoint must match to be resumed (num_iterations left out: a rerun
  asking for more iterations continues the old run, one asking for fewer reports fewer)."""
  return cache_lib.fingerprint(
      {'config': dict(dataclasses.asdict(config), num_iterations=None),
       'bags': bags.key, 'pairs': problem.pairs, 'version': mil_state.VERSION,
       'area_model': area_model.to_dict() if area_model else None,
       'clicks': {f'{p[0]}/{p[1]}': v.round(3).tolist() for p, v in problem.clicks.items()}},
      length=None)


def _image_cues(bag, problem, rows, area_model, config):
  """The click cues of an image's pairs: lists (one per row) of cue float32 [P], init center
  or None, split bool, and the cue-only score O x cue (None for pairs without clicks)."""
  o = normalize_per_image(bag.objectness, config.normalization)
  cues, centers, splits, cue_only = [], [], [], []
  for i in rows:
    cue, center, split = pair_cue(bag.boxes, o, problem.clicks[problem.pairs[i]], area_model,
                                  config)
    cues.append(cue)
    centers.append(center)
    splits.append(split)
    cue_only.append(((o if config.uses('objectness') else 1.0) * cue)
                    if len(problem.clicks[problem.pairs[i]]) else None)
  return cues, centers, splits, cue_only


def _near_misses(collected, num_classes, dim):
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


def _random_negatives(bag, problem, config):
  """A seeded random sample of an image's proposals with random priorities: (indices, keys
  int64 [n, 2], priorities float [n]). Seeded per image, so the sample does not depend on which
  other images are in the run or in what order they are read."""
  number = problem.image_number[bag.image_id]
  rng = np.random.default_rng([config.seed, number])
  take = np.sort(rng.choice(len(bag.boxes), min(config.negatives_per_image, len(bag.boxes)),
                            replace=False))
  keys = np.stack([np.full(len(take), number), take], axis=1).astype(np.int64)
  return take, keys, rng.random(len(take))


def initialise(problem, bags, area_model, config, fingerprint, log=print, progress=None):
  """The first pass over the images: initial selections, cue-only choices, first negatives.

  Returns:
    `mil_state.MilState` at iteration 0.
  """
  n = len(problem.pairs)
  selected_index = np.zeros(n, np.int64)
  selected_boxes = np.zeros((n, 4), np.float32)
  cue_only_boxes = np.zeros((n, 4), np.float32)
  split = np.zeros(n, bool)
  selected_features = None
  pools = [None] * problem.num_classes
  background = None
  near_collected = []
  rng = np.random.default_rng(config.seed)
  bar = progress(len(bags.image_ids), 'mil initialisation') if progress else None
  for bag in bags:
    record = problem.records[problem.image_number[bag.image_id]]
    rows = problem.rows_of(bag.image_id)
    cues, centers, splits, _ = _image_cues(bag, problem, rows, area_model, config)
    o = normalize_per_image(bag.objectness, config.normalization)
    if selected_features is None:
      dim = bag.features.shape[1]
      selected_features = np.zeros((n, dim), np.float32)
      pools = [appearance.KeyedPool(dim, config.max_negatives)
               for _ in range(problem.num_classes)]
      if config.trainer == 'lda':
        background = appearance.KeyedPool(dim, 4 * config.max_negatives)
    for i, cue, center, is_split in zip(rows, cues, centers, splits):
      cue_only = int(np.argmax((o if config.uses('objectness') else 1.0) * cue))
      cue_only_boxes[i] = bag.boxes[cue_only]
      split[i] = is_split
      if config.init == 'cues' or not config.uses('appearance'):
        # (Without the appearance model nothing is learned: the answer is the cue-only choice.)
        selected_index[i] = cue_only
      else:
        selected_index[i] = initial_box_index(bag.boxes, record['height'], record['width'],
                                              center if config.uses('click_init') else None)
      selected_boxes[i] = bag.boxes[selected_index[i]]
      selected_features[i] = bag.features[selected_index[i]]
      if config.near_miss_negatives and config.init == 'cues':
        # (The paper's whole-image start has no near misses worth the name.)
        near = near_miss_indices(bag.boxes, selected_index[i], config.near_miss_negatives, rng)
        near_collected.append((int(problem.pair_class[i]), problem.folds[bag.image_id],
                               bag.features[near]))
    # A random sample of each image's proposals: negatives of the classes it lacks.
    take, keys, priorities = _random_negatives(bag, problem, config)
    for c in np.setdiff1d(np.arange(problem.num_classes), problem.labels[bag.image_id]):
      pools[c].add(bag.features[take], keys, -priorities)
    if background is not None:
      background.add(bag.features[take], keys, -priorities)
    if bar:
      bar.update(1)
  if bar:
    bar.close()
  if selected_features is None:
    raise ValueError('no images to localise')
  dim = selected_features.shape[1]
  classes_with_pairs = set(problem.pair_class.tolist())
  zero = np.array([c for c in sorted(classes_with_pairs) if not len(pools[c])], np.int64)
  state = mil_state.MilState(
      fingerprint=fingerprint, iteration=0, selected_index=selected_index,
      selected_boxes=selected_boxes, selected_score=np.zeros(n, np.float32),
      selected_iteration=np.zeros(n, np.int64), selected_features=selected_features,
      split=split, cue_only_boxes=cue_only_boxes, history_index=selected_index[None],
      history_boxes=selected_boxes[None], history_score=np.zeros((1, n), np.float32),
      history_rival=np.zeros((1, n), np.float32),
      changes_per_iteration=np.zeros(1, np.int64), negatives=[p.state() for p in pools],
      near_misses=(_near_misses(near_collected, problem.num_classes, dim)
                   if config.near_miss_negatives else None),
      zero_model_classes=zero)
  if config.trainer == 'lda':
    samples = background.rows()[0]
    state.lda_precision = appearance.background_statistics(samples)
    state.lda_negative_means = np.stack([
        p.rows()[0].mean(axis=0) if len(p) else samples.mean(axis=0) for p in pools
    ]).astype(np.float64)
  return state


def _trainer(config, num_classes, state):
  if config.trainer == 'lda':
    return appearance.LdaTrainer(config.num_folds, num_classes, state.lda_precision,
                                 state.lda_negative_means)
  return appearance.SvmTrainer(config.num_folds, num_classes, c=config.svm_c,
                               tol=config.svm_tol)


def model_momentum_at(iteration, config):
  """beta of iteration `iteration`: the weight of the previous model in the blend.

  With `average_models_from` = a > 0: 0 up to iteration a (each keeps its own model), then
  (t - a) / (t - a + 1), which makes the model of iteration t the mean of those trained in
  iterations a..t. Else the constant `model_momentum`.
  """
  start = config.average_models_from
  if not start:
    return config.model_momentum
  return (iteration - start) / (iteration - start + 1) if iteration > start else 0.0


def iterate(problem, bags, state, trainer, pools, area_model, config, iteration, progress=None):
  """One MIL iteration: re-training, then re-localisation of every pair and hard-negative
  mining in one pass over the images. Updates `state` and `pools` in place.

  Returns:
    number of selections that changed.
  """
  positives = appearance.Positives(
      [state.selected_features[problem.pair_class == c] for c in range(problem.num_classes)],
      [problem.pair_fold[problem.pair_class == c] for c in range(problem.num_classes)],
      state.near_misses)
  bar = progress(None, f'mil iteration {iteration}: training', 'class') if progress else None
  models = trainer.fit(positives, pools,
                       progress=(lambda done, total: bar.update(1, total)) if bar else None)
  if bar:
    bar.close()
  previous = (appearance.LinearModels(state.model_weights, state.model_biases)
              if state.model_weights is not None else None)
  models = models.blend(previous, model_momentum_at(iteration, config))
  if config.average_models_from or config.model_momentum:
    state.model_weights, state.model_biases = models.weights, models.biases
  mining = trainer.uses_mined_negatives
  mean_models = models.mean()
  if mining:
    appearance.mine_hard_negatives(pools, mean_models, config.hard_margin, begin=True)
  new_index = state.selected_index.copy()
  new_boxes = state.selected_boxes.copy()
  new_score = state.selected_score.copy()
  new_rival = np.zeros_like(new_score)
  new_features = state.selected_features.copy()
  near_collected = []
  near_rng = np.random.default_rng([config.seed, iteration])
  bar = (progress(len(bags.image_ids), f'mil iteration {iteration}: re-localisation')
         if progress else None)
  for bag in bags:
    rows = problem.rows_of(bag.image_id)
    fold = problem.folds[bag.image_id]
    if rows:
      cues, _, _, cue_only = _image_cues(bag, problem, rows, area_model, config)
      chosen = relocalize_image(bag, problem.labels[bag.image_id], fold, cues, models, config,
                                cue_only)
      for i, (index, score, rival) in zip(rows, chosen):
        new_index[i], new_score[i], new_rival[i] = index, score, rival
        new_boxes[i], new_features[i] = bag.boxes[index], bag.features[index]
        if config.near_miss_negatives:
          near = near_miss_indices(bag.boxes, index, config.near_miss_negatives, near_rng)
          near_collected.append((int(problem.pair_class[i]), fold, bag.features[near]))
    absent = np.setdiff1d(np.arange(problem.num_classes), problem.labels[bag.image_id])
    if mining and len(absent):
      scores = mean_models.scores(bag, 0, absent)
      number = problem.image_number[bag.image_id]
      for column, c in enumerate(absent):
        hard = appearance.hardest_per_image(scores[:, column], config.hard_margin)
        if len(hard):
          keys = np.stack([np.full(len(hard), number), hard], axis=1)
          pools[c].add(bag.features[hard], keys, scores[hard, column])
    if bar:
      bar.update(1)
  if bar:
    bar.close()
  if mining:
    appearance.mine_hard_negatives(pools, mean_models, config.hard_margin, begin=False,
                                   keep_easy=config.keep_easy_negatives)
  if config.near_miss_negatives:
    state.near_misses = _near_misses(near_collected, problem.num_classes,
                                     state.selected_features.shape[1])
  changed = state.record_iteration(iteration, new_index, new_boxes, new_score, new_features,
                                   new_rival)
  state.negatives = [p.state() for p in pools]
  return changed


def run_mil(records, class_names, bags, selected_clicks, config, workdir=None, area_model=None,
            log=print, on_iteration=None, progress=None):
  """Localises every positive (image, class) pair.

  Args:
    records: list of record dicts (ground truth is used ONLY to report CorLoc).
    class_names: list of str.
    bags: a bag source over `records` (`bags.TrunkMapBags`, `bags.RoiFeatureBags`).
    selected_clicks: dict `(image_id, class_index)` -> float32 [C, 2] `(y, x)` clicks (C = 0, 1 or
      2 for every pair; a missing pair has none).
    config: MilConfig.
    workdir: folder for the checkpoint (None: no checkpoint, no resume).
    area_model: `cues.AreaModel` for two clicks (needed when `box_area` is on and C = 2).
    log: callable taking one str.
    on_iteration: optional callable(iteration, info dict with `corloc` and `changes`) after each
      iteration (the driver writes TensorBoard summaries with it).
    progress: optional `progress.Progress`-like factory `(total, description) -> bar`.
  Returns:
    dict with `selections` (pair -> dict(box float32 [4], index, score, iteration, split)),
    `corloc` (mean over classes), `corloc_pooled`, their `_non_difficult` variants,
    `corloc_per_class`, `corloc_per_iteration` and `corloc_pooled_per_iteration` (index 0 =
    initialisation), `changes_per_iteration`, `corloc_cue_only` (S = O x cue, no appearance
    model) and `corloc_cue_only_pooled`, `num_iterations`, `num_split_pairs`,
    `classes_without_negatives`, `timings_s`.
  """
  problem = _Problem.build(records, class_names, selected_clicks, config)
  fingerprint = _fingerprint(problem, bags, config, area_model)
  timings = {'init': 0.0, 'train_and_relocalize': 0.0}
  start = time.time()
  state = mil_state.MilState.load(workdir, fingerprint, log) if workdir else None
  if state is None:
    state = initialise(problem, bags, area_model, config, fingerprint, log, progress)
    if workdir:
      state.save(workdir)
  else:
    log(f'mil: resumed after iteration {state.iteration} from '
        f'{os.path.join(workdir, mil_state.FILE_NAME)}')
  timings['init'] = time.time() - start
  zero_names = [problem.class_names[c] for c in state.zero_model_classes]
  if zero_names and config.uses('appearance'):
    log(f'mil: warning: no negative images for {", ".join(zero_names)}: '
        + ('their appearance models are zero (A is flat; the cues and O decide)'
           if config.trainer == 'svm' else 'LDA contrasts them with all images instead'))
  cue_only = problem.corloc(state.cue_only_boxes)
  log(f'mil: {len(problem.pairs)} pairs, {config.num_folds} folds, '
      f'{state.selected_features.shape[1]}-d features; {int(state.split.sum())} two-click pairs '
      f'split; CorLoc cue-only {cue_only["corloc"]:.3f}, initialisation '
      f'{problem.corloc(state.history_boxes[0])["corloc"]:.3f} (class means)')

  trainer = _trainer(config, problem.num_classes, state)
  pools = [appearance.KeyedPool.from_state(p, config.max_negatives) for p in state.negatives]
  start = time.time()
  for iteration in range(state.iteration + 1, config.num_iterations + 1):
    if not config.uses('appearance'):
      break  # Cue-only: nothing to learn.
    if iteration > 1 and state.changes_per_iteration[-1] == 0:
      break  # Converged.
    changed = iterate(problem, bags, state, trainer, pools, area_model, config, iteration,
                      progress)
    if workdir:
      state.save(workdir)
    corloc = problem.corloc(state.selected_boxes)
    log(f'mil: iteration {iteration}: CorLoc {corloc["corloc"]:.3f} (pooled '
        f'{corloc["corloc_pooled"]:.3f}), {changed} of {len(problem.pairs)} selections changed, '
        f'negatives per class {int(np.mean([len(p) for p in pools]))}')
    if on_iteration is not None:
      on_iteration(iteration, {'corloc': corloc['corloc'], 'changes': changed})
  timings['train_and_relocalize'] = time.time() - start
  return _result(problem, state, min(config.num_iterations, state.iteration), cue_only,
                 timings)


def _result(problem, state, last, cue_only, timings):
  """The results after iteration `last` (<= the iterations the state holds)."""
  per_iteration = [problem.corloc(state.history_boxes[t]) for t in range(last + 1)]
  final = per_iteration[-1]
  selections = {pair: {'box': state.history_boxes[last, i],
                       'index': int(state.history_index[last, i]),
                       'score': float(state.history_score[last, i]),
                       'rival_score': float(state.history_rival[last, i]),
                       'iteration': int(_chosen_at(state.history_index[:last + 1, i])),
                       'split': bool(state.split[i])}
                for i, pair in enumerate(problem.pairs)}
  return {'selections': selections, 'corloc': final['corloc'],
          'corloc_pooled': final['corloc_pooled'],
          'corloc_non_difficult': final['corloc_non_difficult'],
          'corloc_pooled_non_difficult': final['corloc_pooled_non_difficult'],
          'corloc_per_class': dict(zip(problem.class_names, final['per_class'])),
          'corloc_per_iteration': [r['corloc'] for r in per_iteration],
          'corloc_pooled_per_iteration': [r['corloc_pooled'] for r in per_iteration],
          'changes_per_iteration': [int(v) for v in state.changes_per_iteration[:last + 1]],
          'corloc_cue_only': cue_only['corloc'],
          'corloc_cue_only_pooled': cue_only['corloc_pooled'],
          'corloc_cue_only_non_difficult': cue_only['corloc_non_difficult'],
          'num_iterations': last, 'num_pairs': len(problem.pairs),
          'num_split_pairs': int(state.split.sum()),
          'classes_without_negatives': [problem.class_names[c] for c in state.zero_model_classes],
          'timings_s': timings}


def _chosen_at(history):
  """The iteration since which the last entry of int [T + 1] `history` has not changed."""
  t = len(history) - 1
  while t > 0 and history[t - 1] == history[t]:
    t -= 1
  return t


# Shared with deep MIL (`detector.deep_mil`), which re-localises the same pairs with the same
# cues and another appearance scorer.
Problem = _Problem
image_cues = _image_cues
