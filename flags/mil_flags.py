"""absl flag definitions of `run_mil.py` (definitions only; `run_mil.config_from_flags` maps them
to `click_supervision.config.Config`)."""

from absl import flags

from click_supervision import clicks as clicks_lib
from click_supervision import config as config_lib
from click_supervision import datasets

_DATA = config_lib.DataConfig
_CLICKS = config_lib.ClickConfig

DATASET = flags.DEFINE_string('dataset', _DATA.dataset, f'Data source: {datasets.DATASET_HELP}.')
SPLIT = flags.DEFINE_string('split', _DATA.split, 'Split: trainval, train, val or test (ignored by '
                            'coco:JSON, whose file is the split).')
CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'Shared cache folder (default '
                                '$CLICKSUP_CACHE_DIR or ~/.cache/click_supervision).')
WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder of this run (default '
                              'runs/<dataset>_<split>_clicks<N>_seed<S>).')
STAGES = flags.DEFINE_list('stages', list(config_lib.STAGES), 'Stages to run, comma separated, '
                           f'from {",".join(config_lib.STAGES)}.')
SKIP_BAD_RECORDS = flags.DEFINE_bool('skip_bad_records', _DATA.skip_bad_records, 'Skip bad images '
                                     'or annotations (counted and logged) instead of stopping.')
TFDS_DATA_DIR = flags.DEFINE_string('tfds_data_dir', None, 'TFDS data folder (voc2007, coco2017).')
TFDS_DOWNLOAD = flags.DEFINE_bool('tfds_download', _DATA.tfds_download, 'Let TFDS download and '
                                  'prepare voc2007 / coco2017 (needs a network).')

CLICKS = flags.DEFINE_enum('clicks', str(_CLICKS.num_clicks), ['0', '1', '2'],
                           'Center clicks per (image, class) the learner uses (annotators).')
CLICK_SOURCE = flags.DEFINE_string('click_source', _CLICKS.source, '"simulated" or the path of a '
                                   'click file (JSON Lines, see README).')
CLICK_NOISE = flags.DEFINE_float('click_noise', _CLICKS.noise, 'Simulated click error: per-axis '
                                 'std in units of sqrt(box area).', lower_bound=0.0)
CLICK_INSTANCE = flags.DEFINE_enum('click_instance', _CLICKS.instance,
                                   list(clicks_lib.INSTANCE_CHOICES), 'Instance a simulated '
                                   'annotator clicks: uniform, area (proportional), largest.')
SEED = flags.DEFINE_integer('seed', _CLICKS.seed, 'Seed of the click simulator and the run.')
USE_FLAGGED_CLICKS = flags.DEFINE_bool('use_flagged_clicks', _CLICKS.use_flagged, 'Also use clicks '
                                       'of annotators flagged by quality control.')
SECONDS_PER_CLICK = flags.DEFINE_float('seconds_per_click', _CLICKS.seconds_per_click,
                                       'Annotation time of one center click (s).')
SECONDS_PER_BOX = flags.DEFINE_float('seconds_per_box', _CLICKS.seconds_per_box,
                                     'Annotation time of one drawn box (s).')
