"""The typed run configuration: one place for every setting and its default.

The driver builds a `Config` from flags once and passes parts of it down explicitly; library
functions never read flags.
"""

import dataclasses

from click_supervision import cache as cache_lib
from click_supervision import clicks as clicks_lib
from click_supervision import mil as mil_lib
from click_supervision import precompute
from click_supervision import proposals as proposals_lib

# Stages in the order they run; later issues add mil, deep_mil, detector, report.
STAGES = ('data', 'clicks', 'proposals', 'features', 'mil')


default_cache_dir = cache_lib.default_cache_dir


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
    area_fit_data: where mu(d) of the box-area cue is fitted for simulated clicks (`area_fit`):
      `auto` (the synthetic set of another seed for synthetic data, the shipped photo model for
      photos), `synthetic`, `shipped`, or a `--dataset` value of held-back data with boxes.
    workdir: output folder of this run (results.json, data_summary.json, clicks, logs).
    stages: tuple of stage names to run, a subset of STAGES, run in STAGES order.
    num_workers, worker_index: this process computes every `num_workers`-th shard of the cached
      stages, starting at `worker_index` (`--num_shards`, `--shard_index`).
  """
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  clicks: ClickConfig = dataclasses.field(default_factory=ClickConfig)
  proposals: proposals_lib.ProposalConfig = dataclasses.field(
      default_factory=proposals_lib.ProposalConfig)
  features: precompute.FeatureConfig = dataclasses.field(default_factory=precompute.FeatureConfig)
  mil: mil_lib.MilConfig = dataclasses.field(default_factory=mil_lib.MilConfig)
  area_fit_data: str = 'auto'
  workdir: str = ''
  stages: tuple = STAGES
  num_workers: int = 1
  worker_index: int = 0

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
