"""The typed run configuration: one place for every setting and its default.

The driver builds a `Config` from flags once and passes parts of it down explicitly; library
functions never read flags. Each stage's settings are a frozen dataclass here, so reading a
configuration imports no learner, no TensorFlow and no scikit-learn (the click tool and the flag
definitions import this module); the stage modules re-export them (`mil.MilConfig`,
`precompute.FeatureConfig`; `proposals.ProposalConfig` lives in its light module).
"""

import dataclasses

from click_supervision import cache as cache_lib
from click_supervision import clicks as clicks_lib
from click_supervision import proposals as proposals_lib

# Stages in the order they run. Without --stages a run localises (up to `mil`); the detector
# stages are asked for by name (they train networks: minutes to hours on a CPU).
STAGES = ('data', 'clicks', 'proposals', 'features', 'mil', 'deep_mil', 'detector')
DEFAULT_STAGES = ('data', 'clicks', 'proposals', 'features', 'mil')
SUPERVISIONS = ('mil', 'boxes', 'boxes_all')
DETECTOR_FINETUNES = ('none', 'upper', 'top', 'all')
LR_SCHEDULES = ('step', 'cosine')
IGNORE_RULES = ('none', 'score')


default_cache_dir = cache_lib.default_cache_dir

FEATURE_STORES = ('maps', 'rois')


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  """How RoI features are computed.

  Attributes:
    trunk: `backbones.TRUNKS` name.
    weights: `imagenet`, `hed`, `none` or a file, as the trunk allows.
    short_side: images are resized so their short side has this many pixels before the trunk
      (0 keeps the original size); the linear probe (BUILD_NOTES) chose 600.
    max_long_side: cap on the resized long side.
    pool_size: RoI grid side; feature length = pool_size**2 x trunk channels. 3 (2880 values
      with the default trunk) was chosen over 2 by MIL CorLoc on the tuning sets (BUILD_NOTES).
    context_scale: 0 (off) or the factor by which boxes are enlarged for a second, context grid
      (`features.FeatureExtractor`; doubles the feature length).
    images_per_shard: images per cache shard (a shard is held in memory while written).
    store: what the cache holds: `maps` (the trunk's feature map per image, RoI features pooled
      on demand; the default) or `rois` (one float16 feature row per proposal, 40x the disk;
      kept to compare against, BUILD_NOTES).
  """
  trunk: str = 'efficientnet_lite0'
  weights: str = 'imagenet'
  short_side: int = 600
  max_long_side: int = 1000
  pool_size: int = 3
  context_scale: float = 0.0
  images_per_shard: int = 16
  store: str = 'maps'

  def __post_init__(self):
    if self.store not in FEATURE_STORES:
      raise ValueError(f'unknown feature store {self.store!r}; choices are {FEATURE_STORES}')


CUES = ('objectness', 'appearance', 'box_center', 'box_area', 'click_init', 'split_instances')

TRAINERS = ('svm', 'lda')
INITS = ('window', 'cues')
NORMALIZATIONS = ('minmax', 'rank')
FUSIONS = ('sum', 'product')



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
    svm_tol: LinearSVC stopping tolerance (liblinear's primal solver, `appearance._fit_svm`).
    negatives_per_image: random proposals per negative image offered to the first negative
      pool of each class the image lacks (a seeded uniform sample of at most `max_negatives`
      of them is kept).
    max_negatives: cap on each class's pool of hard negatives.
    hard_margin: mined negatives are proposals of negative images scoring above this.
    keep_easy_negatives: keep negatives that became easy (scoring below `hard_margin`) while the
      pool has room, instead of dropping them after each mining round; a model that no longer
      sees them cannot forget them, which is one way the selections cycle (BUILD_NOTES).
    model_momentum: beta in [0, 1): the appearance model of iteration t is beta x the model of
      t - 1 + (1 - beta) x the model trained on t's selections (0 = the paper: each iteration's
      model alone). Damps the two-cycle in which selections A train a model that picks B, and B
      one that picks A again (BUILD_NOTES).
    average_models_from: 0 (off) or a: from iteration a on, the appearance model of iteration t
      is the mean of the models trained in iterations a..t (overrides `model_momentum`), so
      each iteration moves the model less than the one before and the selections settle
      instead of cycling. 2 by default: the model of iteration 1, trained on the initial
      selections (whole images without clicks), is left out of the mean (BUILD_NOTES).
    seed: folds and negative sampling (`--mil_seed`; the clicks have their own `--seed`).

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
  keep_easy_negatives: bool = False
  model_momentum: float = 0.0
  average_models_from: int = 2
  seed: int = 0

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
    if self.average_models_from < 0:
      raise ValueError(f'average_models_from must be >= 0, not {self.average_models_from}')
    if not 0 <= self.model_momentum < 1:
      raise ValueError(f'model_momentum must be in [0, 1), not {self.model_momentum}')
    if self.size_exponent < 0:
      raise ValueError(f'size_exponent must be >= 0, not {self.size_exponent}')
    if self.trainer not in TRAINERS:
      raise ValueError(f'unknown trainer {self.trainer!r}; trainers are {TRAINERS}')

  def uses(self, cue):
    return cue in self.cues


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  """The Fast R-CNN style detector (`click_supervision.detector`), deep MIL and the test.

  Attributes:
    supervision: what the detector trains on: `mil` (the localisations of MIL and deep MIL; the
      clicks and image labels are the only annotation), `boxes` (one drawn box per class per
      image, the largest non-difficult one: the paper's fair comparison) or `boxes_all` (every
      non-difficult drawn box).
    finetune: `none` trains the head on the cached trunk maps; `upper` also the trunk's part
      above its stride-16 cut (EfficientNet-Lite's stages 6 and 7), run in the step on the
      cached maps of the frozen part below the cut; `top` the last third of the trunk's layers
      and `all` the whole trunk, both run on the images in the step (accelerators). BatchNorm
      stays frozen in every mode.
    pool_size: the detector's RoI grid side (MIL keeps `FeatureConfig.pool_size`).
    pool_cut: also pool each RoI from the stride-16 map of the cut (`detector.fast_rcnn`).
    hidden_units: width of fc6 and fc7.
    dropout: dropout after fc6 and fc7.
    images_per_batch, rois_per_image: a step's images and RoIs sampled per image (Fast R-CNN:
      2 x 128).
    foreground_fraction, foreground_iou, background_iou_low: RoI sampling (`detector.sampling`).
    learning_rate, momentum, weight_decay: SGD with momentum.
    lr_schedule: `step` (the rate drops tenfold after `lr_drop_at` of the steps) or `cosine`
      (from the rate down to 0 over the steps).
    warmup_steps: the rate rises linearly from 0 over this many first steps (0: none).
    ignore_rule: which background RoIs are not taught as background because they probably cover
      another instance of a class present in the image (the training boxes say where one
      instance is, not that the rest is background): `none`, or `score`: a RoI that overlaps no
      training box of a class present in the image by IoU >= `ignore_iou` and that the detector
      being trained already scores above `ignore_score` for that class gets weight 0.
    trunk_learning_rate_factor: with `finetune` `top` / `all`, the trunk's layers learn at this
      fraction of `learning_rate` (their gradients are scaled by it): at the head's 0.01 the
      whole EfficientNet-Lite0 trunk collapsed (BUILD_NOTES, "Run anywhere: throughput").
    epochs: passes over the training images (steps = epochs x images / images_per_batch).
    deep_mil_epochs: the same for the detectors of deep MIL (0: `epochs`).
    flip: horizontal flip augmentation: each training image is mirrored with probability 1/2,
      with the trunk maps of the mirrored images (cached beside the others: twice the trunk
      time and map cache of the training images).
    deep_mil_iterations: iterations of deep MIL (the detector as MIL's appearance model).
    deep_mil_folds: detectors per deep MIL iteration, each re-localising the images it was not
      trained on (`detector.deep_mil`).
    deep_mil_refine: move each re-localised box by the detector's box regression.
    nms_iou, max_detections, score_threshold: test-time per-class NMS, detections kept per image,
      and the class probability below which a box is not a detection.
    checkpoint_every: steps between training checkpoints.
    seed: seeds the input order, RoI sampling, dropout and initialisation.
    deterministic: TensorFlow op determinism (a resumed run then gives the same detections as
      an uninterrupted one).
  """
  supervision: str = 'mil'
  finetune: str = 'none'
  pool_size: int = 3
  pool_cut: bool = False
  hidden_units: int = 1024
  dropout: float = 0.5
  images_per_batch: int = 2
  rois_per_image: int = 128
  foreground_fraction: float = 0.25
  foreground_iou: float = 0.5
  background_iou_low: float = 0.1
  learning_rate: float = 0.01
  trunk_learning_rate_factor: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  lr_drop_at: float = 0.75
  lr_schedule: str = 'step'
  warmup_steps: int = 0
  ignore_rule: str = 'none'
  ignore_iou: float = 0.1
  ignore_score: float = 0.5
  epochs: float = 32.0
  deep_mil_epochs: float = 4.0
  flip: bool = False
  deep_mil_iterations: int = 2
  deep_mil_folds: int = 2
  deep_mil_refine: bool = False
  nms_iou: float = 0.3
  max_detections: int = 100
  score_threshold: float = 1e-3
  checkpoint_every: int = 200
  seed: int = 0
  deterministic: bool = False

  def __post_init__(self):
    if self.supervision not in SUPERVISIONS:
      raise ValueError(f'unknown supervision {self.supervision!r}; choices are {SUPERVISIONS}')
    if self.finetune not in DETECTOR_FINETUNES:
      raise ValueError(f'unknown finetune {self.finetune!r}; choices are {DETECTOR_FINETUNES}')
    if self.lr_schedule not in LR_SCHEDULES:
      raise ValueError(f'unknown lr_schedule {self.lr_schedule!r}; choices are {LR_SCHEDULES}')
    if self.ignore_rule not in IGNORE_RULES:
      raise ValueError(f'unknown ignore_rule {self.ignore_rule!r}; choices are {IGNORE_RULES}')
    if self.pool_size < 1 or self.warmup_steps < 0:
      raise ValueError(f'pool_size must be >= 1 and warmup_steps >= 0, not {self.pool_size} '
                       f'and {self.warmup_steps}')
    for name in ('ignore_iou', 'ignore_score'):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f'{name} must be in [0, 1], not {getattr(self, name)}')
    for name in ('hidden_units', 'images_per_batch', 'rois_per_image', 'max_detections',
                 'checkpoint_every'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, not {getattr(self, name)}')
    if self.deep_mil_epochs < 0:
      raise ValueError(f'deep_mil_epochs must be >= 0, not {self.deep_mil_epochs}')
    if self.epochs <= 0 or self.learning_rate <= 0:
      raise ValueError(f'epochs and learning_rate must be > 0, not {self.epochs} and '
                       f'{self.learning_rate}')
    if self.deep_mil_folds < 1:
      raise ValueError(f'deep_mil_folds must be >= 1, not {self.deep_mil_folds}')
    if self.deep_mil_iterations < 0:
      raise ValueError(f'deep_mil_iterations must be >= 0, not {self.deep_mil_iterations}')
    for name in ('dropout', 'foreground_fraction', 'lr_drop_at'):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f'{name} must be in [0, 1], not {getattr(self, name)}')
    if not 0 <= self.background_iou_low < self.foreground_iou <= 1:
      raise ValueError(f'need 0 <= background_iou_low < foreground_iou <= 1, not '
                       f'{self.background_iou_low} and {self.foreground_iou}')




@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which data to read and how strictly.

  Attributes:
    dataset: `--dataset` value (see `click_supervision.datasets.DATASET_HELP`).
    split: split name.
    cache_dir: shared cache folder (generated data, verified-image cache, later proposals and
      features); runs with different click settings share it.
    skip_bad_records: count and log bad images/annotations instead of stopping at the first one.
    tfds_data_dir: TFDS data folder, None for TFDS's default.
    tfds_download: allow TFDS downloads (needs a network).
  """
  dataset: str = 'synthetic'
  split: str = 'trainval'
  cache_dir: str = dataclasses.field(default_factory=default_cache_dir)
  skip_bad_records: bool = False
  tfds_data_dir: str | None = None
  tfds_download: bool = False


@dataclasses.dataclass(frozen=True)
class ClickConfig:
  """Where clicks come from and how many the learner uses.

  Attributes:
    num_clicks: annotators per (image, class) pair the learner uses: 0, 1 or 2.
    source: `simulated` or the path of a click file.
    noise: simulated click error, per-axis std in units of sqrt(box area) (BUILD_NOTES explains
      the default).
    instance: how a simulated annotator picks among a class's instances: uniform, area, largest.
    num_annotators: annotators the simulator clicks for per pair (>= num_clicks; two, as the
      paper, so 1- and 2-click runs share the first annotator's clicks).
    seed: seed of the simulator (and of the rest of the run).
    use_flagged: also use clicks of annotators flagged by quality control.
    seconds_per_click, seconds_per_box: annotation-time constants (PAPER.md 1.3, 6.4).
  """
  num_clicks: int = 2
  source: str = 'simulated'
  noise: float = 0.1
  instance: str = 'area'
  num_annotators: int = 2
  seed: int = 0
  use_flagged: bool = False
  seconds_per_click: float = clicks_lib.SECONDS_PER_CLICK
  seconds_per_box: float = clicks_lib.SECONDS_PER_BOX


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs.

  Attributes:
    data: DataConfig.
    clicks: ClickConfig.
    proposals: `proposals.ProposalConfig`.
    features: `precompute.FeatureConfig`.
    mil: `mil.MilConfig`.
    detector: DetectorConfig (stages deep_mil and detector).
    test_dataset, test_split: where the detector stage measures mAP (`--test_dataset`, empty =
      the training dataset; `--test_split`).
    area_fit_data: where mu(d) of the box-area cue is fitted for simulated clicks (`area_fit`):
      `auto` (the synthetic set of another seed for synthetic data, the shipped photo model for
      photos), `synthetic`, `shipped`, or a `--dataset` value of held-back data with boxes.
    workdir: output folder of this run (results.json, data_summary.json, clicks, logs).
    stages: tuple of stage names to run, a subset of STAGES, run in STAGES order.
    num_workers, worker_index: this process computes every `num_workers`-th shard of the cached
      stages, starting at `worker_index` (`--num_shards`, `--shard_index`).
    strategy, tpu: the `tf.distribute` strategy the detector trains under (`distribute`;
      `--strategy`, `--tpu`). Not part of a trained detector's fingerprint: a run resumed under
      another strategy continues from its checkpoint.
  """
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  clicks: ClickConfig = dataclasses.field(default_factory=ClickConfig)
  proposals: proposals_lib.ProposalConfig = dataclasses.field(
      default_factory=proposals_lib.ProposalConfig)
  features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
  mil: MilConfig = dataclasses.field(default_factory=MilConfig)
  detector: DetectorConfig = dataclasses.field(default_factory=DetectorConfig)
  test_dataset: str = ''
  test_split: str = 'test'
  area_fit_data: str = 'auto'
  workdir: str = ''
  stages: tuple = DEFAULT_STAGES
  num_workers: int = 1
  worker_index: int = 0
  strategy: str = 'default'
  tpu: str = ''

  def to_dict(self):
    return dataclasses.asdict(self)



# Presets: flag name -> value, applied where the flag is not given explicitly.
PRESETS = {
    'smoke': {
        'dataset': 'synthetic:smoke',
        'max_proposals': 200,
        'feature_short_side': 0,
        'mil_iterations': 2,
        'folds': 3,
    },
}
