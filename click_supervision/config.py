"""The typed run configuration: every setting of every stage, its default, its flag and its checks.

One place decides a setting. A field of a stage's frozen dataclass below is declared with
`setting(default, help, ...)`; from that declaration

  * `flags/mil_flags.py` defines the absl flag (name: `flag_name`, help text, bounds, choices),
  * `run_mil.config_from_flags` reads the flags given on the command line into a `Config` (a loop
    over `settings()`, no per-flag code),
  * the dataclass's `__post_init__` checks values and combinations, raising `ConfigError` whose
    message names the flag, so `run_mil.py` and `api.train(config)` refuse the same
    configurations with the same `error:` line.

A setting `section.field` has the flag `FLAG_PREFIXES[section] + field` unless `FLAG_NAMES` names
another (flags older than this table kept their names). Reading a configuration imports no
learner, no TensorFlow and no scikit-learn (the click tool and the flag definitions import this
module); the stage modules re-export their section (`mil.MilConfig`, `precompute.FeatureConfig`,
`proposals.ProposalConfig`).

Presets are constructors: `Config.smoke()`; `PRESETS` maps `--preset` names to them.
"""

import dataclasses
import os
import types

from click_supervision import cache as cache_lib
from click_supervision import clicks as clicks_lib
from click_supervision.errors import UserError


class ConfigError(UserError, ValueError):
  """A setting or a combination of settings no run can use (one line naming the flag)."""


# --- stages -------------------------------------------------------------------------------------

# Stages in the order they run. Without --stages a run localises (up to `mil`); the detector
# stages are asked for by name (they train networks: minutes to hours on a CPU).
STAGES = ('data', 'clicks', 'proposals', 'features', 'mil', 'deep_mil', 'detector')
DEFAULT_STAGES = ('data', 'clicks', 'proposals', 'features', 'mil')
# What each stage needs (the one table; `Config.needs` asks it):
#   clicks      clicks of the learner: skipped when the detector trains on drawn boxes
#   proposals   the proposals cache
#   maps        the trunk-map cache (and, through it, TensorFlow)
#   tensorflow  the stage imports TensorFlow (HParams summaries are written for such runs)
#   detector    trains detectors: the tf.distribute strategy, the detector's own caches
STAGE_NEEDS = types.MappingProxyType({
    'data': frozenset(),
    'clicks': frozenset({'clicks'}),
    'proposals': frozenset({'proposals'}),
    'features': frozenset({'proposals', 'maps', 'tensorflow'}),
    'mil': frozenset({'clicks', 'proposals', 'maps', 'tensorflow'}),
    'deep_mil': frozenset({'clicks', 'proposals', 'maps', 'tensorflow', 'detector'}),
    'detector': frozenset({'proposals', 'maps', 'tensorflow', 'detector'}),
})

SUPERVISIONS = ('mil', 'boxes', 'boxes_all')
DETECTOR_FINETUNES = ('none', 'upper', 'top', 'all')
LR_SCHEDULES = ('step', 'cosine')
IGNORE_RULES = ('none', 'score')
# Images each deep MIL detector must train on (BUILD_NOTES, "Deep MIL against SVM MIL by data
# size"): at 30 (60 photos, 2 folds) deep MIL lowered CorLoc with 0 and 2 clicks, at 125 it
# lowered it without clicks (-0.8 points; +3.4 with two), from 250 on it raised it.
DEEP_MIL_MIN_IMAGES = 200
SECOND_CLICK_CHOICES = ('need', 'random')  # `second_click.CHOICES`
STRATEGIES = ('default', 'mirrored', 'tpu', 'multi_worker')
CUES = ('objectness', 'appearance', 'box_center', 'box_area', 'click_init', 'split_instances')
TRAINERS = ('svm', 'lda')
INITS = ('window', 'cues')
NORMALIZATIONS = ('minmax', 'rank')
FUSIONS = ('sum', 'product')
EDGE_BOXES = 'edge_boxes'
SELECTIVE_SEARCH = 'selective_search'

default_cache_dir = cache_lib.default_cache_dir


# --- how a setting is declared and named ----------------------------------------------------------

FLAG_PREFIXES = {'': '', 'data': '', 'clicks': 'click_', 'proposals': '', 'features': 'feature_',
                 'mil': '', 'detector': 'detector_'}
FLAG_NAMES = {
    'clicks.num_clicks': 'clicks', 'clicks.seed': 'seed', 'clicks.use_flagged': 'use_flagged_clicks',
    'clicks.seconds_per_click': 'seconds_per_click', 'clicks.seconds_per_box': 'seconds_per_box',
    'clicks.num_annotators': 'simulated_annotators',
    **{f'clicks.second_click_{f}': f'second_click_{f}'
       for f in ('requests', 'from', 'fraction', 'choice', 'seed', 'size_weight')},
    'proposals.method': 'proposals', 'proposals.max_boxes': 'max_proposals',
    'proposals.edge_source': 'sed_model', 'proposals.short_side': 'proposal_short_side',
    'features.trunk': 'trunk', 'features.weights': 'weights',
    'mil.num_folds': 'folds', 'mil.num_iterations': 'mil_iterations', 'mil.fusion': 'mil_fusion',
    'mil.init': 'mil_init', 'mil.trainer': 'mil_trainer', 'mil.seed': 'mil_seed',
    'mil.normalization': 'mil_normalization',
    'detector.supervision': 'supervision', 'detector.deterministic': 'deterministic',
    'detector.trunk_learning_rate_factor': 'detector_trunk_lr_factor',
    'detector.deep_mil_iterations': 'deep_mil_iterations', 'detector.deep_mil_folds': 'deep_mil_folds',
    'detector.deep_mil_refine': 'deep_mil_refine', 'detector.deep_mil_epochs': 'deep_mil_epochs',
    'detector.deep_mil_min_images': 'deep_mil_min_images',
}
# Edge Boxes' own parameters get the prefix `edge_boxes_` (`--edge_boxes_alpha`).
_EDGE_BOXES_FIELDS = ('alpha', 'beta', 'eta', 'min_score', 'max_aspect_ratio', 'min_box_area',
                      'gamma', 'kappa', 'edge_min_mag', 'edge_merge_thr', 'cluster_min_mag')
FLAG_NAMES.update({f'proposals.{f}': f'edge_boxes_{f}' for f in _EDGE_BOXES_FIELDS})
FLAG_NAMES.update({'proposals.hed_scales': 'hed_scales', 'proposals.nms_radius': 'edge_nms_radius',
                   'proposals.nms_multiplier': 'edge_nms_multiplier'})


def setting(default=dataclasses.MISSING, help='', *, factory=dataclasses.MISSING, lower=None,
            upper=None, choices=None):  # pylint: disable=redefined-builtin
  """A dataclass field that is a setting: its default, the flag's help text, bounds, choices."""
  return dataclasses.field(default=default, default_factory=factory, metadata={
      'help': help, 'lower': lower, 'upper': upper, 'choices': choices})


def flag_name(section, field):
  """The flag of setting `section.field` (`section` '' for the top-level `Config` fields)."""
  path = f'{section}.{field}' if section else field
  return FLAG_NAMES.get(path, FLAG_PREFIXES[section] + field)


def _describe(section, field, value):
  """`--flag=value (section.field)`: how a problem names the setting, for the driver's users and
  for Python's alike."""
  path = f'{section}.{field}' if section else field
  name = flag_name(section, field)
  if isinstance(value, (tuple, list)):
    value = ','.join(map(str, value))
  return f'--{name}={value}' + (f' ({path})' if path != name else '')


class _Checks:
  """Collects the problems of one section; `done()` raises them as one `ConfigError`."""

  def __init__(self, section, values):
    self.section = section
    self.values = values
    self.problems = []

  def __call__(self, ok, field, problem):
    """Notes `problem` of `field` (of this section, or 'section.field') unless `ok`."""
    if not ok:
      section, _, name = field.rpartition('.') if '.' in field else (self.section, '', field)
      value = getattr(self.values, name) if section == self.section else (
          getattr(getattr(self.values, section), name))
      self.problems.append(f'{_describe(section, name, value)}: {problem}')

  def choice(self, value, field, choices):
    self(value in choices, field, f'unknown {field} {value!r}; choose one of '
         f'{", ".join(map(str, choices))}')

  def done(self):
    if self.problems:
      raise ConfigError('; '.join(self.problems))


# --- the sections -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which data to read and how strictly.

  Attributes:
    dataset: a data source (`datasets.DATASET_HELP`).
    split: split name.
    cache_dir: shared cache folder (generated data, verified-image cache, proposals and trunk
      maps); runs with different click settings share it. Made absolute.
    skip_bad_records: count and log bad images/annotations instead of stopping at the first one.
    tfds_data_dir: TFDS data folder, None for TFDS's default.
    tfds_download: allow TFDS downloads (needs a network).
  """
  dataset: str = setting('synthetic', 'Data source: synthetic (default), synthetic:smoke, '
                         'voc:PATH, coco:ANNOTATIONS_JSON[:IMAGES_DIR], voc2007, coco2017.')
  split: str = setting('trainval', 'Split: trainval, train, val or test (ignored by coco:JSON, '
                       'whose file is the split).')
  cache_dir: str = setting(factory=default_cache_dir, help='Shared cache folder (default '
                           '$CLICKSUP_CACHE_DIR or ~/.cache/click_supervision).')
  skip_bad_records: bool = setting(False, 'Skip bad images or annotations (counted and logged) '
                                   'instead of stopping.')
  tfds_data_dir: str | None = setting(None, 'TFDS data folder (voc2007, coco2017).')
  tfds_download: bool = setting(False, 'Let TFDS download and prepare voc2007 / coco2017 (needs '
                                'a network).')

  def __post_init__(self):
    object.__setattr__(self, 'cache_dir', os.path.abspath(self.cache_dir))
    check = _Checks('data', self)
    check(bool(self.dataset), 'dataset', 'is empty')
    check(bool(self.split), 'split', 'is empty')
    check.done()


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
    seconds_per_click, seconds_per_box: annotation-time constants (docs/method.md, section 1).
    second_click_requests: the adaptive second click (`second_click`): a request file naming
      the pairs that get the second annotator's click; with `num_clicks` 1 the learner uses two
      clicks on those pairs and one elsewhere.
    second_click_from, second_click_fraction, second_click_choice, second_click_seed,
    second_click_size_weight: or the run chooses them itself from a finished one-click run:
      the `fraction` of its pairs with the highest need (`choice` `need`) or a seeded random
      sample of the same size (`random`); the need is `second_click.pair_need` with
      `size_weight` (chosen on the tuning set, BUILD_NOTES).
  """
  num_clicks: int = setting(2, 'Center clicks per (image, class) the learner uses (annotators).',
                            choices=(0, 1, 2))
  source: str = setting('simulated', '"simulated" or the path of a click file (JSON Lines, see '
                        'README).')
  noise: float = setting(0.1, 'Simulated click error: per-axis std in units of sqrt(box area).',
                         lower=0.0)
  instance: str = setting('area', 'Instance a simulated annotator clicks: uniform, area '
                          '(proportional), largest.', choices=clicks_lib.INSTANCE_CHOICES)
  num_annotators: int = setting(2, 'Annotators the click simulator clicks for per pair (at '
                                'least --clicks are simulated).', lower=1)
  seed: int = setting(0, 'Seed of the click simulator (MIL has --mil_seed).', lower=0)
  use_flagged: bool = setting(False, 'Also use clicks of annotators flagged by quality control.')
  seconds_per_click: float = setting(clicks_lib.SECONDS_PER_CLICK, 'Annotation time of one '
                                     'center click (s).', lower=0.0)
  seconds_per_box: float = setting(clicks_lib.SECONDS_PER_BOX, 'Annotation time of one drawn '
                                   'box (s).', lower=0.0)
  second_click_requests: str = setting('', 'With --clicks=1: a second-click request file; its '
                                       'pairs use the second annotator\'s click too.')
  second_click_from: str = setting('', 'With --clicks=1: a finished one-click run of the same '
                                   'data; the pairs it doubts most get a second click.')
  second_click_fraction: float = setting(0.5, 'With --second_click_from: the fraction of pairs '
                                         'that get a second click.', lower=0.0, upper=1.0)
  second_click_choice: str = setting('need', 'With --second_click_from: need (the most doubtful '
                                     'pairs) or random (a baseline of the same size).',
                                     choices=SECOND_CLICK_CHOICES)
  second_click_seed: int = setting(0, 'Seed of --second_click_choice=random.', lower=0)
  # 0: on voc2007-tune train the size term did not raise the mixed CorLoc (BUILD_NOTES).
  second_click_size_weight: float = setting(0.0, 'Weight of the chosen box\'s share of the image '
                                            'in the need for a second click.', lower=0.0)

  def __post_init__(self):
    object.__setattr__(self, 'num_clicks', int(self.num_clicks))
    check = _Checks('clicks', self)
    check.choice(self.num_clicks, 'num_clicks', (0, 1, 2))
    check.choice(self.instance, 'instance', clicks_lib.INSTANCE_CHOICES)
    check(self.noise >= 0, 'noise', 'must be >= 0')
    check(0.0 <= self.second_click_fraction <= 1.0, 'second_click_fraction', 'must be in [0, 1]')
    check.choice(self.second_click_choice, 'second_click_choice', SECOND_CLICK_CHOICES)
    check(not (self.second_click_requests and self.second_click_from), 'second_click_from',
          'give a request file (--second_click_requests) or a run to choose from, not both')
    check(not self.adaptive or self.num_clicks == 1, 'num_clicks',
          'the adaptive second click adds to one click everywhere: use --clicks=1')
    check.done()

  @property
  def adaptive(self):
    """Some pairs get a second click (`second_click`)."""
    return bool(self.second_click_requests or self.second_click_from)

  @property
  def uses_two_clicks(self):
    """Some pairs have two clicks (the box-area cue needs its mu(d))."""
    return self.num_clicks == 2 or self.adaptive


@dataclasses.dataclass(frozen=True)
class ProposalConfig:
  """How proposals are made. Defaults were chosen by measurement (BUILD_NOTES, Proposals).

  Attributes:
    method: `edge_boxes`, `selective_search`, or the path of a proposals file (`proposals`
      module docstring).
    max_boxes: keep at most this many boxes per image (the highest-scoring).
    edge_source: `hed`, or the path of OpenCV's Structured Edge Detection `model.yml.gz`.
    short_side: before edge detection the image is resized so its short side has this many
      pixels (boxes are mapped back to the original pixels); 0 keeps the original size. Either
      way the long side is then capped at `proposals.MAX_WORKING_LONG_SIDE`.
    hed_scales: HED runs on the (resized) image scaled by each of these factors; the edge maps
      are resized back to it and averaged. The default, one pass at 0.7, costs half of a pass at
      full size and gave the same recall (BUILD_NOTES). Not used with a SED model, which runs at
      the image size.
    alpha, beta, eta, min_score, max_aspect_ratio, min_box_area, gamma, kappa, edge_min_mag,
    edge_merge_thr, cluster_min_mag: OpenCV Edge Boxes parameters (Zitnick & Dollar 2014):
      alpha: sliding-window step (IoU of neighbouring windows); beta: NMS IoU threshold; eta: NMS
      threshold decay per kept box (1 = none); min_score: boxes scoring less are dropped;
      max_aspect_ratio: of windows searched; min_box_area: smallest window, in square pixels of the
      ORIGINAL image (scaled with `short_side`); gamma: edge-group affinity exponent; kappa: box
      size normalisation exponent (larger favours small boxes); edge_min_mag: edges weaker than this
      are ignored; edge_merge_thr: orientation change that ends an edge group; cluster_min_mag:
      edge groups with a smaller total magnitude are merged into neighbours.
    nms_radius, nms_multiplier: edge thinning (`edges.thin_edges`).
  """
  method: str = setting(EDGE_BOXES, 'edge_boxes, selective_search, or the path of a proposals '
                        'file (.jsonl or .npz, see README).')
  max_boxes: int = setting(2000, 'Proposals kept per image (highest objectness).', lower=1)
  edge_source: str = setting('hed', 'Edges for Edge Boxes: hed, or the path of OpenCV\'s '
                             'Structured Edge Detection model (model.yml.gz), as the paper.')
  short_side: int = setting(0, 'Image short side (pixels) for the proposal method; 0 = native.',
                            lower=0)
  hed_scales: tuple = setting((0.7,), 'Scales HED runs at (edge maps averaged).')
  alpha: float = setting(0.65, 'Edge Boxes alpha: sliding-window step.')
  beta: float = setting(0.8, 'Edge Boxes beta: NMS IoU threshold.')
  eta: float = setting(0.9997, 'Edge Boxes eta: NMS threshold decay per kept box.')
  min_score: float = setting(0.01, 'Edge Boxes: boxes scoring less are dropped.')
  max_aspect_ratio: float = setting(5.0, 'Edge Boxes: largest aspect ratio searched.')
  min_box_area: float = setting(300.0, 'Edge Boxes: smallest window (square pixels).')
  gamma: float = setting(2.5, 'Edge Boxes gamma: edge-group affinity exponent.')
  kappa: float = setting(1.5, 'Edge Boxes kappa: box size normalisation exponent.')
  edge_min_mag: float = setting(0.1, 'Edge Boxes: edges weaker than this are ignored.')
  edge_merge_thr: float = setting(1.0, 'Edge Boxes: orientation change ending an edge group.')
  cluster_min_mag: float = setting(0.5, 'Edge Boxes: smaller edge groups are merged.')
  nms_radius: int = setting(2, 'Edge thinning: NMS radius (pixels).', lower=0)
  nms_multiplier: float = setting(1.0, 'Edge thinning: NMS multiplier.')

  def __post_init__(self):
    object.__setattr__(self, 'hed_scales', tuple(float(s) for s in self.hed_scales))
    check = _Checks('proposals', self)
    check(bool(self.method), 'method', 'is empty')
    check(self.max_boxes >= 1, 'max_boxes', 'must be >= 1')
    check(self.short_side >= 0, 'short_side', 'must be >= 0 (0 = original size)')
    check(bool(self.hed_scales) and all(0 < s <= 4 for s in self.hed_scales), 'hed_scales',
          'must be in (0, 4]')
    check(0 < self.alpha < 1, 'alpha', 'must be in (0, 1)')
    check(0 < self.beta <= 1, 'beta', 'must be in (0, 1]')
    check(0 < self.eta <= 1, 'eta', 'must be in (0, 1]')
    check(self.max_aspect_ratio >= 1, 'max_aspect_ratio', 'must be >= 1')
    check(self.min_box_area >= 1, 'min_box_area', 'must be >= 1')
    check(self.nms_radius >= 0, 'nms_radius', 'must be >= 0')
    check.done()

  @property
  def is_precomputed(self):
    return self.method not in (EDGE_BOXES, SELECTIVE_SEARCH)

  def cache_params(self):
    """A JSON-serialisable dict of everything that changes the proposals (for cache keys).

    A proposals file or SED model enters with its size and modification time, so a replaced file
    gives a new key.
    """
    params = dataclasses.asdict(self)
    params['hed_scales'] = list(self.hed_scales)
    for field in ('method', 'edge_source'):
      value = params[field]
      if value not in (EDGE_BOXES, SELECTIVE_SEARCH, 'hed') and os.path.exists(value):
        stat = os.stat(value)
        params[field] = [os.path.abspath(value), stat.st_size, stat.st_mtime_ns]
    if self.method == SELECTIVE_SEARCH:
      # Edge parameters do not matter here; keep the key stable when they change.
      params = {k: params[k] for k in ('method', 'max_boxes', 'short_side')}
    elif self.is_precomputed:
      params = {k: params[k] for k in ('method', 'max_boxes')}
    return params


TRUNKS = ('efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2', 'vgg16', 'alexnet')
# The trunks that split at a stride-16 cut into a cached `lower` and a trainable `upper` part.
CUTTABLE_TRUNKS = ('efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2')


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  """How the trunk sees images (the trunk-map cache) and how MIL pools RoI features.

  Attributes:
    trunk: `backbones.TRUNKS` name.
    weights: `imagenet`, `hed`, `none` or a file, as the trunk allows.
    short_side: images are resized so their short side has this many pixels before the trunk
      (0 keeps the original size); the linear probe (BUILD_NOTES) chose 600.
    max_long_side: cap on the resized long side.
    pool_size: MIL's RoI grid side; feature length = pool_size**2 x trunk channels. 3 (2880
      values with the default trunk) was chosen over 2 by MIL CorLoc on the tuning sets
      (BUILD_NOTES). The detector has its own (`DetectorConfig.pool_size`).
    context_scale: 0 (off) or the factor by which boxes are enlarged for a second, context grid
      (`features.FeatureExtractor`; doubles the feature length).
    images_per_shard: images per cache shard (a shard is held in memory while written).
  """
  trunk: str = setting('efficientnet_lite0', 'Conv trunk of the feature maps.', choices=TRUNKS)
  weights: str = setting('imagenet', 'Trunk weights: imagenet, hed, none or a file (which ones '
                         'a trunk takes: README).')
  short_side: int = setting(600, 'Image short side (pixels) for the trunk; 0 = native.',
                            lower=0)
  max_long_side: int = setting(1000, 'Cap on the image long side (pixels) for the trunk; 0 = '
                               'none.', lower=0)
  pool_size: int = setting(3, 'MIL\'s RoI grid side: each proposal gives pool_size**2 x trunk '
                           'channels values.', lower=1)
  context_scale: float = setting(0.0, '0 (off), or also pool each proposal enlarged this many '
                                 'times about its center (doubles the length).', lower=0.0)
  images_per_shard: int = setting(16, 'Images per trunk-map cache shard.', lower=1)

  def __post_init__(self):
    check = _Checks('features', self)
    check.choice(self.trunk, 'trunk', TRUNKS)
    check(self.context_scale == 0 or self.context_scale > 1, 'context_scale',
          'use 0 (off) or a factor above 1')
    check(self.pool_size >= 1, 'pool_size', 'must be >= 1')
    check.done()


@dataclasses.dataclass(frozen=True)
class MilConfig:
  """Settings of the MIL learner (defaults: BUILD_NOTES, chosen on the synthetic set and the
  tuning set; docs/method.md, section 2).

  Attributes:
    num_folds: K of multi-fold MIL (1 = plain MIL: an image is re-localised by a model that
      trained on it).
    num_iterations: maximum re-training / re-localisation rounds.
    cues: the switched-on cues, a subset of CUES: `objectness` (O in S_ap), `appearance` (A in
      S_ap; off = cue-only localisation), `box_center`, `box_area`, `click_init`,
      `split_instances` (two clicks far apart are treated as two instances, docs/method.md,
      section 4).
    fusion: how A and O make S_ap: `product` (S_ap = A^k x O, k = `appearance_exponent`: a
      log-linear mix, so a box must score well on both; the default) or `sum` (the paper:
      S_ap = w A + (1 - w) O). See `mil.appearance_objectness`. Chosen on the synthetic set and
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
      `rank` (percentile within the image); see `mil.normalize_per_image`.
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
  num_folds: int = setting(10, 'Folds of multi-fold MIL (1 = plain MIL).', lower=1)
  num_iterations: int = setting(5, 'Maximum MIL re-training / re-localisation rounds.', lower=0)
  cues: tuple = setting(CUES, f'Cues switched on (ablations): {",".join(CUES)}.')
  fusion: str = setting('product', 'How appearance A and objectness O make S_ap: sum = w * A + '
                        '(1 - w) * O (the paper), product = A^k * O (BUILD_NOTES).',
                        choices=FUSIONS)
  appearance_weight: float = setting(0.5, 'w in S_ap = w * A + (1 - w) * O (sum fusion).',
                                     lower=0.0, upper=1.0)
  appearance_exponent: float = setting(2.0, 'k in S_ap = A^k * O (product fusion).',
                                       lower=1e-6)
  sigma_bc: float = setting(0.15, 'Box-center sigma, as a fraction of sqrt(proposal area).',
                            lower=0.0)
  sigma_bc_relative: bool = setting(True, 'Box-center sigma relative to the proposal size '
                                    '(else pixels).')
  size_exponent: float = setting(0.0, 'lambda of the box-center cue\'s size factor (min area / '
                                 'area)^lambda (0 = the paper\'s s_bc alone).', lower=0.0)
  sigma_bc_two_clicks_factor: float = setting(0.7071, 'Box-center sigma of the mean of two '
                                              'clicks, as a factor of --sigma_bc.', lower=0.0)
  sigma_ba: float | None = setting(None, 'Box-area sigma (log units); default: '
                                   '--sigma_ba_factor x the area model\'s residual std.')
  sigma_ba_factor: float = setting(2.0, 'Box-area sigma as a factor of the area model\'s '
                                   'residual std.', lower=0.0)
  init: str = setting('window', 'First selection of each pair: the whole image or the window '
                      'centered on the click (the paper), or the cue-only choice (BUILD_NOTES).',
                      choices=INITS)
  trainer: str = setting('svm', 'Appearance model of MIL: linear SVMs with hard-negative mining '
                         '(the paper) or closed-form LDA (BUILD_NOTES).', choices=TRAINERS)
  normalization: str = setting('minmax', 'How A and O of an image are brought to [0, 1]: minmax '
                               'or rank.', choices=NORMALIZATIONS)
  rerank_top: int = setting(0, 'With clicks, re-localise only among the pair\'s N best '
                            'proposals by O x cue (0 = all, the paper).', lower=0)
  near_miss_negatives: int = setting(0, 'Per positive pair and iteration, proposals overlapping '
                                     'its selection with IoU in [0.1, 0.5) used as negatives of '
                                     'the class (0 = off).', lower=0)
  svm_c: float = setting(1.0, 'C of the linear SVMs.', lower=0.0)
  svm_tol: float = setting(1e-3, 'Stopping tolerance of the linear SVMs (liblinear\'s primal '
                           'solver).', lower=0.0)
  negatives_per_image: int = setting(20, 'Random proposals per negative image offered to the '
                                     'first negative pools.', lower=0)
  max_negatives: int = setting(5000, 'Cap on each class\'s pool of hard negatives.', lower=1)
  hard_margin: float = setting(-1.0, 'Mined negatives are proposals of negative images scoring '
                               'above this.')
  keep_easy_negatives: bool = setting(False, 'Keep mined negatives that became easy while the '
                                      'pool has room.')
  model_momentum: float = setting(0.0, 'beta: the appearance model of an iteration is beta x the '
                                  'previous one + (1 - beta) x the newly trained one (0 = the '
                                  'paper).', lower=0.0, upper=0.99)
  average_models_from: int = setting(2, 'From this iteration on, the appearance model is the '
                                     'mean of the models trained since (0 = off; overrides '
                                     '--model_momentum).', lower=0)
  seed: int = setting(0, 'Seed of MIL\'s folds and negative sampling (apart from --seed, so '
                      'click noise and MIL variance can be told apart).', lower=0)

  def __post_init__(self):
    cues = tuple(c.strip() for c in self.cues if c.strip())
    check = _Checks('mil', self)
    unknown = sorted(set(cues) - set(CUES))
    check(not unknown, 'cues', f'unknown cues {unknown}; cues are {",".join(CUES)}')
    object.__setattr__(self, 'cues', tuple(c for c in CUES if c in cues))
    check.choice(self.normalization, 'normalization', NORMALIZATIONS)
    check.choice(self.init, 'init', INITS)
    check.choice(self.fusion, 'fusion', FUSIONS)
    check.choice(self.trainer, 'trainer', TRAINERS)
    check(self.appearance_exponent > 0, 'appearance_exponent', 'must be > 0')
    check(self.svm_c > 0, 'svm_c', 'must be > 0')
    check(self.svm_tol > 0, 'svm_tol', 'must be > 0')
    check(self.average_models_from >= 0, 'average_models_from', 'must be >= 0')
    check(0 <= self.model_momentum < 1, 'model_momentum', 'must be in [0, 1)')
    check(self.size_exponent >= 0, 'size_exponent', 'must be >= 0')
    check(self.num_folds >= 1, 'num_folds', 'must be >= 1')
    check.done()

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
    pool_cut: also pool each RoI from the stride-16 map of the cut (`detector.fast_rcnn`); on by
      default (+8 points mAP on the tuning set, BUILD_NOTES). A trunk that cannot be cut
      (`backbones.CUTTABLE`) pools its one map: `Config.resolved()` turns the setting off.
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
      instance is, not that the rest is background): `none`, or `score`: a background RoI that
      lies mostly outside every training box of a class present in the image (less than
      `ignore_overlap` of its area inside one) and that the detector being trained already
      scores above `ignore_score` for that class gets weight 0 (`detector.sampling`).
    trunk_learning_rate_factor: with `finetune` other than `none`, the trunk's layers learn at
      this fraction of `learning_rate` (their gradients are scaled by it): at the head's 0.01 the
      whole EfficientNet-Lite0 trunk collapsed (BUILD_NOTES, "Run anywhere: throughput").
    epochs: passes over the training images (steps = epochs x images / images_per_batch).
    deep_mil_epochs: the same for the detectors of deep MIL (0: `epochs`).
    flip: horizontal flip augmentation: each training image is mirrored with probability 1/2,
      with the trunk maps of the mirrored images (cached beside the others: twice the trunk
      time and map cache of the training images).
    train_scales, test_scales: image short sides the detector trains at (one drawn per image
      and step) and is tested at (outputs averaged); each has its own cached maps. Empty: the
      trunk-map cache's `FeatureConfig.short_side` alone.
    test_flip: the test also runs on the mirrored image; class probabilities and the
      mirrored-back boxes are averaged with the plain image's (`detector.serving`). Deep MIL
      scores the proposals of its training images with the test's views too.
    deep_mil_iterations: iterations of deep MIL (the detector as the appearance model).
    deep_mil_folds: detectors per deep MIL iteration, each re-localising the images it was not
      trained on (`detector.deep_mil`).
    deep_mil_min_images: deep MIL runs only when each of its detectors (one per fold) trains on
      at least this many images; with fewer, SVM MIL's localisations are kept (its detectors
      are then worse appearance models than the SVMs they replace: BUILD_NOTES, "Deep MIL
      against SVM MIL by data size").
    deep_mil_refine: move each re-localised box by the detector's box regression.
    nms_iou, max_detections, score_threshold: test-time per-class NMS, detections kept per image,
      and the class probability below which a box is not a detection.
    checkpoint_every: steps between training checkpoints.
    seed: seeds the input order, RoI sampling, dropout and initialisation.
    deterministic: TensorFlow op determinism (a resumed run then gives the same detections as
      an uninterrupted one).
  """
  supervision: str = setting('mil', 'What the detector trains on: mil (the localisations of MIL '
                             'and deep MIL), boxes (one drawn box per class per image; skips '
                             'clicks, mil and deep_mil) or boxes_all (every drawn box).',
                             choices=SUPERVISIONS)
  finetune: str = setting('none', 'none: train the head on the cached trunk maps; upper: also '
                          'the trunk above its stride-16 cut, on the cached maps of the part '
                          'below (EfficientNet-Lite); top: the last third of the trunk layers, '
                          'all: the whole trunk, both on the images (accelerators). BatchNorm '
                          'stays frozen.', choices=DETECTOR_FINETUNES)
  pool_size: int = setting(3, 'RoI grid side of the detector (MIL keeps --feature_pool_size).',
                           lower=1)
  pool_cut: bool = setting(True, 'Also pool each RoI from the stride-16 map of the trunk\'s cut '
                           '(caches those maps). Trunks without a cut (vgg16, alexnet) pool their '
                           'one map.')
  hidden_units: int = setting(1024, 'Width of the fc6 and fc7 layers.', lower=1)
  dropout: float = setting(0.5, 'Dropout after fc6 and fc7.', lower=0.0, upper=1.0)
  images_per_batch: int = setting(2, 'Images per detector training step (each gives its RoIs); '
                                  'a multiple of the replica count under --strategy.', lower=1)
  rois_per_image: int = setting(128, 'RoIs sampled per image and step.', lower=1)
  foreground_fraction: float = setting(0.25, 'Largest foreground share of the sampled RoIs.',
                                       lower=0.0, upper=1.0)
  foreground_iou: float = setting(0.5, 'IoU with a training box from which a RoI is foreground.',
                                  lower=0.0, upper=1.0)
  background_iou_low: float = setting(0.1, 'Background RoIs are sampled from IoU [this, '
                                      'foreground IoU) first.', lower=0.0, upper=1.0)
  learning_rate: float = setting(0.01, 'SGD learning rate.', lower=0.0)
  trunk_learning_rate_factor: float = setting(0.1, 'With --detector_finetune other than none: '
                                              'the trunk learns at this fraction of '
                                              '--detector_learning_rate.', lower=0.0)
  momentum: float = setting(0.9, 'SGD momentum.', lower=0.0, upper=1.0)
  weight_decay: float = setting(5e-4, 'Decoupled weight decay.', lower=0.0)
  lr_drop_at: float = setting(0.75, 'With the step schedule: the rate drops tenfold after this '
                              'fraction of the steps.', lower=0.0, upper=1.0)
  lr_schedule: str = setting('step', 'step: x0.1 after --detector_lr_drop_at of the steps; '
                             'cosine: down to 0 at the last step.', choices=LR_SCHEDULES)
  warmup_steps: int = setting(0, 'Linear learning-rate warm-up steps.', lower=0)
  ignore_rule: str = setting('none', 'score: a background RoI apart from every training box of a '
                             'class present in the image, which the detector already scores '
                             'above --detector_ignore_score for that class, is not taught as '
                             'background (it may be another instance); the same rule for every '
                             'supervision.', choices=IGNORE_RULES)
  ignore_overlap: float = setting(0.5, 'A RoI with less than this fraction of its area inside '
                                  'every training box of a class could be another instance '
                                  'of it.', lower=0.0, upper=1.0)
  ignore_score: float = setting(0.5, 'Class probability above which such a RoI is ignored.',
                                lower=0.0, upper=1.0)
  epochs: float = setting(32.0, 'Passes over the training images per detector training.',
                          lower=0.01)
  deep_mil_epochs: float = setting(4.0, 'Epochs of each deep MIL detector (0: '
                                   '--detector_epochs).', lower=0.0)
  flip: bool = setting(False, 'Horizontal flips when training the detector (caches the '
                       'mirrored images\' trunk maps too).')
  train_scales: tuple = setting((), 'Image short sides (pixels) the detector trains at, one '
                                'drawn per image and step (each has its own cached maps; empty: '
                                '--feature_short_side).')
  test_scales: tuple = setting((), 'Image short sides the detector is tested at, its class '
                               'probabilities and boxes averaged over them (empty: '
                               '--feature_short_side).')
  test_flip: bool = setting(True, 'Also test on the mirrored image and average (caches the '
                            'mirrored test images\' maps).')
  deep_mil_iterations: int = setting(2, 'Deep MIL iterations (the detector as the appearance '
                                     'model).', lower=0)
  deep_mil_folds: int = setting(2, 'Detectors per deep MIL iteration; each re-localises the '
                                'images it was not trained on (1 = one detector for all).',
                                lower=1)
  deep_mil_min_images: int = setting(DEEP_MIL_MIN_IMAGES, 'Deep MIL runs only when each of its '
                                     'detectors trains on at least this many images; below, SVM '
                                     'MIL\'s localisations are kept (on small sets deep MIL made '
                                     'CorLoc worse).', lower=0)
  deep_mil_refine: bool = setting(False, 'Move each box deep MIL selects by the detector\'s box '
                                  'regression.')
  nms_iou: float = setting(0.3, 'Test: per-class NMS IoU threshold.', lower=0.0, upper=1.0)
  max_detections: int = setting(100, 'Test: detections kept per image.', lower=1)
  score_threshold: float = setting(1e-3, 'Test: class probability below which a box is no '
                                   'detection.', lower=0.0, upper=1.0)
  checkpoint_every: int = setting(200, 'Steps between training checkpoints.', lower=1)
  seed: int = setting(0, 'Seed of the detector\'s initialisation, input order, RoI sampling and '
                      'dropout.', lower=0)
  deterministic: bool = setting(False, 'TensorFlow op determinism: a resumed detector training '
                                'gives the same detections as an uninterrupted one (slower on '
                                'accelerators).')

  def __post_init__(self):
    for name in ('train_scales', 'test_scales'):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    check = _Checks('detector', self)
    check.choice(self.supervision, 'supervision', SUPERVISIONS)
    for name in ('train_scales', 'test_scales'):
      check(all(v >= 16 for v in getattr(self, name)), name, 'short sides must be >= 16 pixels')
    check.choice(self.finetune, 'finetune', DETECTOR_FINETUNES)
    check.choice(self.lr_schedule, 'lr_schedule', LR_SCHEDULES)
    check.choice(self.ignore_rule, 'ignore_rule', IGNORE_RULES)
    for name in ('hidden_units', 'images_per_batch', 'rois_per_image', 'max_detections',
                 'checkpoint_every', 'pool_size', 'deep_mil_folds'):
      check(getattr(self, name) >= 1, name, 'must be >= 1')
    for name in ('deep_mil_epochs', 'deep_mil_iterations', 'warmup_steps'):
      check(getattr(self, name) >= 0, name, 'must be >= 0')
    for name in ('epochs', 'learning_rate'):
      check(getattr(self, name) > 0, name, 'must be > 0')
    for name in ('dropout', 'foreground_fraction', 'lr_drop_at', 'ignore_overlap', 'ignore_score'):
      check(0 <= getattr(self, name) <= 1, name, 'must be in [0, 1]')
    check(0 <= self.background_iou_low < self.foreground_iou <= 1, 'background_iou_low',
          f'must be in [0, --detector_foreground_iou={self.foreground_iou})')
    check.done()


# --- the whole run ------------------------------------------------------------------------------

SECTIONS = {'data': DataConfig, 'clicks': ClickConfig, 'proposals': ProposalConfig,
            'features': FeatureConfig, 'mil': MilConfig, 'detector': DetectorConfig}


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs.

  Attributes:
    data, clicks, proposals, features, mil, detector: the stages' sections.
    test_dataset, test_split: where the detector stage measures mAP (empty test_dataset: the
      training dataset).
    area_fit_data: where mu(d) of the box-area cue is fitted for simulated clicks (`area_fit`):
      `auto` (the synthetic set of another seed for synthetic data, the shipped photo model for
      photos), `synthetic`, `shipped`, or a data source of held-back data with boxes.
    workdir: output folder of this run (results.json, data_summary.json, clicks, logs); empty:
      `runs/<dataset>_<split>_clicks<N>_seed<S>` (`resolved`).
    stages: tuple of stage names to run, a subset of STAGES, run in STAGES order.
    num_shards, shard_index: this process computes every `num_shards`-th shard of the cached
      stages, starting at `shard_index` (a precompute *job* of several; not a tf.distribute
      worker, which `strategy` is about).
    strategy, tpu: the `tf.distribute` strategy the detector trains under (`distribute`). Not
      part of a trained detector's fingerprint: a run resumed under another strategy continues
      from its checkpoint.
    feature_memory_gib: MIL keeps every image's pooled RoI features in memory after its first
      pass when they fit in this many GiB and in a quarter of the machine's memory
      (`bags.remember`); otherwise it pools them from the trunk maps on every pass. The results
      are the same either way (the same arrays); not part of any fingerprint.
  """
  data: DataConfig = setting(factory=DataConfig)
  clicks: ClickConfig = setting(factory=ClickConfig)
  proposals: ProposalConfig = setting(factory=ProposalConfig)
  features: FeatureConfig = setting(factory=FeatureConfig)
  mil: MilConfig = setting(factory=MilConfig)
  detector: DetectorConfig = setting(factory=DetectorConfig)
  test_dataset: str = setting('', 'Data source the detector stage measures mAP on (default: '
                              '--dataset).')
  test_split: str = setting('test', 'Split of --test_dataset the detector stage measures mAP on.')
  area_fit_data: str = setting('auto', 'Where mu(d) of the box-area cue is fitted for simulated '
                               'clicks: "auto", "synthetic", "shipped" or a data source of '
                               'held-back data with boxes; never the localised images.')
  workdir: str = setting('', 'Output folder of this run (default '
                         'runs/<dataset>_<split>_clicks<N>_seed<S>).')
  stages: tuple = setting(DEFAULT_STAGES, f'Stages to run, comma separated, from '
                          f'{",".join(STAGES)}.')
  num_shards: int = setting(1, 'Split the cached stages (proposals, features) over this many '
                            'precompute jobs ...', lower=1)
  shard_index: int = setting(0, '... of which this process is number shard_index (0-based).',
                             lower=0)
  strategy: str = setting('default', 'tf.distribute strategy of the detector\'s training '
                          '(deep_mil and detector stages): one device, every local GPU in sync, '
                          'a Cloud TPU (--tpu), or several machines (TF_CONFIG). See '
                          'click_supervision/distribute.py.', choices=STRATEGIES)
  tpu: str = setting('', 'With --strategy=tpu: the TPU name, grpc://host:port, or local.')
  feature_memory_gib: float = setting(
      4.0, 'MIL keeps the pooled RoI features in memory between its passes when they fit in '
      'this many GiB (and in a quarter of the machine\'s memory); 0: pool them again on every '
      'pass. The results are the same.', lower=0.0)

  def __post_init__(self):
    stages = tuple(s.strip() for s in self.stages if s.strip())
    check = _Checks('', self)
    unknown = [s for s in stages if s not in STAGES]
    check(not unknown, 'stages', f'unknown stage {unknown[0]!r}; stages are '
          f'{",".join(STAGES)}' if unknown else '')
    object.__setattr__(self, 'stages', tuple(s for s in STAGES if s in stages))
    check(0 <= self.shard_index < self.num_shards, 'shard_index',
          f'must be in [0, --num_shards={self.num_shards})')
    check.choice(self.strategy, 'strategy', STRATEGIES)
    check(self.strategy != 'tpu' or bool(self.tpu), 'tpu',
          '--strategy=tpu needs --tpu=ADDRESS (the TPU name, grpc://host:port, or local)')
    check(self.detector.finetune != 'upper' or self.features.trunk in CUTTABLE_TRUNKS or
          not self.needs('detector'),
          'features.trunk', '--detector_finetune=upper trains the trunk above its stride-16 cut, '
          f'which only {", ".join(CUTTABLE_TRUNKS)} have')
    check.done()

  def resolved(self):
    """This Config with its derived values filled in (what a run records): an empty
    `test_dataset` is the training data source, an empty `workdir` is
    `runs/<dataset>_<split>_clicks<N>_seed<S>`; the workdir is made absolute; a trunk without
    a stride-16 cut pools its one map (`detector.pool_cut` off)."""
    workdir = self.workdir
    if not workdir:
      from click_supervision import datasets  # pylint: disable=g-import-not-at-top
      clicks = f'clicks{self.clicks.num_clicks}'
      if self.clicks.second_click_requests:
        clicks += '_second_requested'
      elif self.clicks.second_click_from:
        clicks += (f'_second_{self.clicks.second_click_choice}'
                   f'{self.clicks.second_click_fraction:g}')
      workdir = os.path.join('runs', f'{datasets.dataset_slug(self.data.dataset)}_'
                             f'{self.data.split}_{clicks}_seed{self.clicks.seed}')
    detector = self.detector
    if detector.pool_cut and self.features.trunk not in CUTTABLE_TRUNKS:
      detector = dataclasses.replace(detector, pool_cut=False)
    return dataclasses.replace(self, workdir=os.path.abspath(workdir), detector=detector,
                               test_dataset=self.test_dataset or self.data.dataset)

  def needs(self, what):
    """Whether a stage of this run needs `what` (a `STAGE_NEEDS` entry)."""
    if what == 'clicks' and self.detector.supervision != 'mil':
      return False  # Drawn boxes: no click stage runs (`skipped_stages`).
    return any(what in STAGE_NEEDS[s] for s in self.stages)

  def skipped_stages(self):
    """The asked-for stages a drawn-box run leaves out (they need clicks)."""
    if self.detector.supervision == 'mil':
      return ()
    return tuple(s for s in self.stages if 'clicks' in STAGE_NEEDS[s])

  def runs(self, stage):
    """Whether `stage` runs (asked for, and not skipped)."""
    return stage in self.stages and stage not in self.skipped_stages()

  def check_inputs(self):
    """Checks what the settings name on disk before any stage runs (a typo should not surface
    after an hour of proposals): the data sources, the test split, the click files, and the
    localisations a deep_mil or detector stage starts from when mil is not asked for.

    Raises:
      UserError naming the flag, the file and the problem.
    """
    from click_supervision import datasets  # pylint: disable=g-import-not-at-top
    datasets.check_spec(self.data.dataset)
    if 'detector' in self.stages:
      test_dataset = self.test_dataset or self.data.dataset
      datasets.check_spec(test_dataset, '--test_dataset')
      datasets.check_split(test_dataset, self.test_split, self.data.cache_dir, '--test_split')
    if self.area_fit_data not in ('auto', 'synthetic', 'shipped'):
      datasets.check_spec(self.area_fit_data, '--area_fit_data')
    if (self.clicks.source != 'simulated' and self.needs('clicks') and
        not os.path.isfile(self.clicks.source)):
      raise UserError(f'--click_source={self.clicks.source}: no such file (or "simulated")')
    # A stage that starts from an earlier stage's file, asked for without that stage.
    workdir = self.resolved().workdir
    start = os.path.join(workdir, 'localizations_mil.jsonl')
    if self.runs('deep_mil') and not self.runs('mil') and not os.path.exists(start):
      raise UserError(f'{start} does not exist: deep_mil starts from the mil stage\'s '
                      f'localisations (add mil to --stages)')
    final = os.path.join(workdir, 'localizations.jsonl')
    if (self.runs('detector') and self.detector.supervision == 'mil' and not self.runs('mil')
        and not os.path.exists(final)):
      raise UserError(f'{final} does not exist: the detector trains on the localisations of the '
                      f'mil stage (add mil to --stages, or use --supervision=boxes)')
    if self.needs('clicks') and self.clicks.second_click_requests and not os.path.isfile(
        self.clicks.second_click_requests):
      raise UserError(f'--second_click_requests={self.clicks.second_click_requests}: no such file')
    if self.needs('clicks') and self.clicks.second_click_from and not os.path.isfile(
        os.path.join(self.clicks.second_click_from, 'localizations.jsonl')):
      raise UserError(f'--second_click_from={self.clicks.second_click_from}: no '
                      f'localizations.jsonl there (a finished one-click run is needed)')

  def to_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def smoke(cls, **changes):
    """The smoke preset: every stage shrunk (the 20-image synthetic set, 200 proposals, native
    image size, 2 MIL iterations of 3 folds, deep MIL however few its images) so the whole
    driver runs in seconds.

    Args:
      **changes: settings as `from_settings` takes them (`'detector.epochs': 4`, or top-level
        names), applied over the preset.
    """
    preset = {'data.dataset': 'synthetic:smoke', 'proposals.max_boxes': 200,
              'features.short_side': 0, 'mil.num_iterations': 2, 'mil.num_folds': 3,
              'detector.deep_mil_min_images': 0}  # 12 images: run deep MIL all the same.
    return cls.from_settings(dict(preset, **changes))

  @classmethod
  def from_settings(cls, values, base=None):
    """A Config from settings given by path: {'detector.epochs': 4, 'stages': (...), ...}.

    Args:
      values: dict `section.field` (or a top-level field name) -> value.
      base: the Config the values change (default: all defaults).
    Raises:
      ConfigError for an unknown setting or a bad value.
    """
    base = base if base is not None else cls()
    sections, top = {}, {}
    for path, value in values.items():
      section, _, field = path.rpartition('.')
      known = SECTIONS[section] if section in SECTIONS else (cls if not section else None)
      if known is None or field not in {f.name for f in dataclasses.fields(known)}:
        raise ConfigError(f'unknown setting {path!r}')
      (sections.setdefault(section, {}) if section else top)[field] = value
    changed = {name: dataclasses.replace(getattr(base, name), **fields)
               for name, fields in sections.items()}
    return dataclasses.replace(base, **changed, **top)


PRESETS = {'smoke': Config.smoke}


def settings():
  """Every setting: yields (path `section.field` or top-level name, section, dataclasses.Field)
  in declaration order."""
  for field in dataclasses.fields(Config):
    if field.name in SECTIONS:
      for inner in dataclasses.fields(SECTIONS[field.name]):
        yield f'{field.name}.{inner.name}', field.name, inner
    else:
      yield field.name, '', field
