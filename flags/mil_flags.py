"""absl flag definitions of `run_mil.py` (definitions only; `run_mil.config_from_flags` maps them
to `click_supervision.config.Config`)."""

from absl import flags

from click_supervision import area_fit
from click_supervision import backbones
from click_supervision import clicks as clicks_lib
from click_supervision import config as config_lib
from click_supervision import datasets
from click_supervision import mil
from click_supervision import precompute
from click_supervision import proposals

_PROPOSALS = proposals.ProposalConfig
_FEATURES = precompute.FeatureConfig

_DATA = config_lib.DataConfig
_CLICKS = config_lib.ClickConfig

PRESET = flags.DEFINE_enum('preset', None, sorted(config_lib.PRESETS), 'Start from a preset: '
                           '"smoke" shrinks every stage (tiny synthetic set, few proposals, native '
                           'image size) so the whole driver runs in seconds; explicit flags win.')
DATASET = flags.DEFINE_string('dataset', _DATA.dataset, f'Data source: {datasets.DATASET_HELP}.')
SPLIT = flags.DEFINE_string('split', _DATA.split, 'Split: trainval, train, val or test (ignored by '
                            'coco:JSON, whose file is the split).')
CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'Shared cache folder (default '
                                '$CLICKSUP_CACHE_DIR or ~/.cache/click_supervision).')
WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder of this run (default '
                              'runs/<dataset>_<split>_clicks<N>_seed<S>).')
STAGES = flags.DEFINE_list('stages', list(config_lib.DEFAULT_STAGES), 'Stages to run, comma separated, '
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
SEED = flags.DEFINE_integer('seed', _CLICKS.seed, 'Seed of the click simulator (MIL has '
                            '--mil_seed).', lower_bound=0)
USE_FLAGGED_CLICKS = flags.DEFINE_bool('use_flagged_clicks', _CLICKS.use_flagged, 'Also use clicks '
                                       'of annotators flagged by quality control.')
SECONDS_PER_CLICK = flags.DEFINE_float('seconds_per_click', _CLICKS.seconds_per_click,
                                       'Annotation time of one center click (s).')
SECONDS_PER_BOX = flags.DEFINE_float('seconds_per_box', _CLICKS.seconds_per_box,
                                     'Annotation time of one drawn box (s).')

PROPOSALS = flags.DEFINE_string('proposals', _PROPOSALS.method, 'edge_boxes, selective_search, or '
                                'the path of a proposals file (.jsonl or .npz, see README).')
MAX_PROPOSALS = flags.DEFINE_integer('max_proposals', _PROPOSALS.max_boxes,
                                     'Proposals kept per image (highest objectness).', lower_bound=1)
SED_MODEL = flags.DEFINE_string('sed_model', None, "OpenCV Structured Edge Detection model "
                                "(model.yml.gz) to use instead of HED edges, as the paper did.")
TRUNK = flags.DEFINE_enum('trunk', _FEATURES.trunk, sorted(backbones.TRUNKS),
                          'Conv trunk for RoI features.')
WEIGHTS = flags.DEFINE_string('weights', _FEATURES.weights, 'Trunk weights: imagenet, hed, none or '
                              'a file (which ones a trunk takes: README).')
FEATURE_SHORT_SIDE = flags.DEFINE_integer('feature_short_side', _FEATURES.short_side,
                                          'Image short side (pixels) for the trunk; 0 = native.',
                                          lower_bound=0)
FEATURE_POOL_SIZE = flags.DEFINE_integer('feature_pool_size', _FEATURES.pool_size,
                                         'RoI grid side: each proposal gives pool_size**2 x '
                                         'trunk channels values.', lower_bound=1)
FEATURE_STORE = flags.DEFINE_enum('feature_store', _FEATURES.store, list(precompute.STORES),
                                  'What the features cache holds: maps (trunk feature maps, RoI '
                                  'features pooled on demand) or rois (one row per proposal, '
                                  '40x the disk; for comparisons).')
FEATURE_CONTEXT_SCALE = flags.DEFINE_float('feature_context_scale', _FEATURES.context_scale,
                                           '0 (off), or also pool each proposal enlarged this '
                                           'many times about its center (doubles the length).',
                                           lower_bound=0.0)
NUM_SHARDS = flags.DEFINE_integer('num_shards', 1, 'Split the cached stages (proposals, features) '
                                  'over this many workers ...', lower_bound=1)
SHARD_INDEX = flags.DEFINE_integer('shard_index', 0, '... of which this process is number '
                                   'shard_index (0-based).', lower_bound=0)

_MIL = mil.MilConfig
MIL_ITERATIONS = flags.DEFINE_integer('mil_iterations', _MIL.num_iterations,
                                      'Maximum MIL re-training / re-localisation rounds.',
                                      lower_bound=0)
FOLDS = flags.DEFINE_integer('folds', _MIL.num_folds, 'Folds of multi-fold MIL (1 = plain MIL).',
                             lower_bound=1)
CUES = flags.DEFINE_list('cues', list(mil.CUES), 'Cues switched on (ablations): '
                         f'{",".join(mil.CUES)}.')
MIL_FUSION = flags.DEFINE_enum('mil_fusion', _MIL.fusion, list(mil.FUSIONS),
                               'How appearance A and objectness O make S_ap: sum = w * A + '
                               '(1 - w) * O (the paper), product = A^k * O (BUILD_NOTES).')
APPEARANCE_WEIGHT = flags.DEFINE_float('appearance_weight', _MIL.appearance_weight,
                                       'w in S_ap = w * A + (1 - w) * O (sum fusion).',
                                       lower_bound=0.0, upper_bound=1.0)
APPEARANCE_EXPONENT = flags.DEFINE_float('appearance_exponent', _MIL.appearance_exponent,
                                         'k in S_ap = A^k * O (product fusion).',
                                         lower_bound=1e-6)
SIGMA_BC = flags.DEFINE_float('sigma_bc', _MIL.sigma_bc, 'Box-center sigma, as a fraction of '
                              'sqrt(proposal area).', lower_bound=0.0)
SIZE_EXPONENT = flags.DEFINE_float(
    'size_exponent', _MIL.size_exponent, 'lambda of the box-center cue\'s size factor '
    '(min area / area)^lambda, the tempered 1 / area normaliser of the click likelihood '
    '(0 = the paper\'s s_bc alone).', lower_bound=0.0)
MIL_INIT = flags.DEFINE_enum('mil_init', _MIL.init, list(mil.INITS),
                             'First selection of each pair: the whole image or the window '
                             'centered on the click (the paper), or the cue-only choice '
                             '(BUILD_NOTES).')
MIL_TRAINER = flags.DEFINE_enum('mil_trainer', _MIL.trainer, list(mil.TRAINERS),
                                'Appearance model of MIL: linear SVMs with hard-negative mining '
                                '(the paper) or closed-form LDA with a shared background '
                                'covariance (BUILD_NOTES).')
RERANK_TOP = flags.DEFINE_integer(
    'rerank_top', _MIL.rerank_top, 'With clicks, re-localise only among the pair\'s N best '
    'proposals by O x cue (0 = all, the paper).', lower_bound=0)
NEAR_MISS_NEGATIVES = flags.DEFINE_integer(
    'near_miss_negatives', _MIL.near_miss_negatives, 'Per positive pair and iteration, proposals '
    'overlapping its selection with IoU in [0.1, 0.5) used as negatives of the class (0 = off).',
    lower_bound=0)
SVM_C = flags.DEFINE_float('svm_c', _MIL.svm_c, 'C of the linear SVMs.', lower_bound=0.0)
SVM_TOL = flags.DEFINE_float('svm_tol', _MIL.svm_tol, 'Stopping tolerance of the linear SVMs '
                             '(liblinear\'s primal solver).', lower_bound=0.0)
MODEL_MOMENTUM = flags.DEFINE_float('model_momentum', _MIL.model_momentum, 'beta: the appearance '
                                    'model of an iteration is beta x the previous one + (1 - '
                                    'beta) x the newly trained one (0 = the paper).',
                                    lower_bound=0.0, upper_bound=0.99)
AVERAGE_MODELS_FROM = flags.DEFINE_integer(
    'average_models_from', _MIL.average_models_from, 'From this iteration on, the appearance '
    'model is the mean of the models trained since (0 = off; overrides --model_momentum).',
    lower_bound=0)
KEEP_EASY_NEGATIVES = flags.DEFINE_bool('keep_easy_negatives', _MIL.keep_easy_negatives,
                                        'Keep mined negatives that became easy while the pool '
                                        'has room.')
MIL_SEED = flags.DEFINE_integer('mil_seed', _MIL.seed, 'Seed of MIL\'s folds and negative '
                                'sampling (apart from --seed, so click noise and MIL variance '
                                'can be told apart).', lower_bound=0)
AREA_FIT_DATA = flags.DEFINE_string('area_fit_data', config_lib.Config.area_fit_data,
                                    'Where mu(d) of the box-area cue is fitted for simulated '
                                    f'clicks: {area_fit.CHOICES_HELP}; never the localised '
                                    'images.')

_DETECTOR = config_lib.DetectorConfig
SUPERVISION = flags.DEFINE_enum('supervision', _DETECTOR.supervision, list(config_lib.SUPERVISIONS),
                                'What the detector trains on: mil (the localisations of MIL and '
                                'deep MIL), boxes (one drawn box per class per image; skips '
                                'clicks, mil and deep_mil) or boxes_all (every drawn box).')
DETECTOR_FINETUNE = flags.DEFINE_enum('detector_finetune', _DETECTOR.finetune,
                                      list(config_lib.DETECTOR_FINETUNES),
                                      'none: train the head on the cached trunk maps; upper: '
                                      'also the trunk above its stride-16 cut, on the cached '
                                      'maps of the part below (EfficientNet-Lite); top: the last '
                                      'third of the trunk layers, all: the whole trunk, both on '
                                      'the images (accelerators). BatchNorm stays frozen.')
DETECTOR_HIDDEN_UNITS = flags.DEFINE_integer('detector_hidden_units', _DETECTOR.hidden_units,
                                             'Width of the fc6 and fc7 layers.', lower_bound=1)
DETECTOR_EPOCHS = flags.DEFINE_float('detector_epochs', _DETECTOR.epochs,
                                     'Passes over the training images per detector training.',
                                     lower_bound=0.01)
DETECTOR_LEARNING_RATE = flags.DEFINE_float('detector_learning_rate', _DETECTOR.learning_rate,
                                            'SGD learning rate (x0.1 after 75 % of the steps).',
                                            lower_bound=0.0)
DETECTOR_SEED = flags.DEFINE_integer('detector_seed', _DETECTOR.seed, 'Seed of the detector\'s '
                                     'initialisation, input order, RoI sampling and dropout.',
                                     lower_bound=0)
DETERMINISTIC = flags.DEFINE_bool('deterministic', _DETECTOR.deterministic, 'TensorFlow op '
                                  'determinism: a resumed detector training gives the same '
                                  'detections as an uninterrupted one (slower on accelerators).')
DEEP_MIL_ITERATIONS = flags.DEFINE_integer('deep_mil_iterations', _DETECTOR.deep_mil_iterations,
                                           'Deep MIL iterations (the detector as the appearance '
                                           'model).', lower_bound=0)
DEEP_MIL_FOLDS = flags.DEFINE_integer('deep_mil_folds', _DETECTOR.deep_mil_folds,
                                      'Detectors per deep MIL iteration; each re-localises the '
                                      'images it was not trained on (1 = one detector for all).',
                                      lower_bound=1)
TEST_DATASET = flags.DEFINE_string('test_dataset', None, 'Data source the detector stage '
                                   'measures mAP on (default: --dataset).')
TEST_SPLIT = flags.DEFINE_string('test_split', config_lib.Config.test_split, 'Split of '
                                 '--test_dataset the detector stage measures mAP on.')
DEEP_MIL_REFINE = flags.DEFINE_bool('deep_mil_refine', _DETECTOR.deep_mil_refine, 'Move each '
                                    'box deep MIL selects by the detector\'s box regression.')
DETECTOR_FLIP = flags.DEFINE_bool('detector_flip', _DETECTOR.flip, 'Horizontal flips when '
                                  'training the detector (caches the mirrored images\' trunk '
                                  'maps too).')
DEEP_MIL_EPOCHS = flags.DEFINE_float('deep_mil_epochs', _DETECTOR.deep_mil_epochs,
                                     'Epochs of each deep MIL detector (0: --detector_epochs).',
                                     lower_bound=0.0)
STRATEGY = flags.DEFINE_enum('strategy', config_lib.Config.strategy,
                             ['default', 'mirrored', 'tpu', 'multi_worker'],
                             'tf.distribute strategy of the detector\'s training (deep_mil and '
                             'detector stages): one device, every local GPU in sync, a Cloud TPU '
                             '(--tpu), or several machines (TF_CONFIG). See '
                             'click_supervision/distribute.py.')
TPU = flags.DEFINE_string('tpu', config_lib.Config.tpu, 'With --strategy=tpu: the TPU name, '
                          'grpc://host:port, or local.')
DETECTOR_IMAGES_PER_BATCH = flags.DEFINE_integer(
    'detector_images_per_batch', _DETECTOR.images_per_batch, 'Images per detector training step '
    '(each gives its RoIs); a multiple of the replica count under --strategy.', lower_bound=1)
DETECTOR_TRUNK_LR_FACTOR = flags.DEFINE_float(
    'detector_trunk_lr_factor', _DETECTOR.trunk_learning_rate_factor, 'With '
    '--detector_finetune=top|all: the trunk learns at this fraction of '
    '--detector_learning_rate.', lower_bound=0.0)
DETECTOR_POOL_SIZE = flags.DEFINE_integer('detector_pool_size', _DETECTOR.pool_size,
                                          'RoI grid side of the detector (MIL keeps '
                                          '--feature_pool_size).', lower_bound=1)
DETECTOR_POOL_CUT = flags.DEFINE_bool('detector_pool_cut', _DETECTOR.pool_cut, 'Also pool each '
                                      'RoI from the stride-16 map of the trunk\'s cut '
                                      '(EfficientNet-Lite; caches those maps).')
DETECTOR_LR_SCHEDULE = flags.DEFINE_enum('detector_lr_schedule', _DETECTOR.lr_schedule,
                                         list(config_lib.LR_SCHEDULES), 'step: x0.1 after 75 % '
                                         'of the steps; cosine: down to 0 at the last step.')
DETECTOR_WARMUP_STEPS = flags.DEFINE_integer('detector_warmup_steps', _DETECTOR.warmup_steps,
                                             'Linear learning-rate warm-up steps.', lower_bound=0)
DETECTOR_IGNORE_RULE = flags.DEFINE_enum(
    'detector_ignore_rule', _DETECTOR.ignore_rule, list(config_lib.IGNORE_RULES),
    'score: a background RoI apart from every training box of a class present in the image, '
    'which the detector already scores above --detector_ignore_score for that class, is not '
    'taught as background (it may be another instance); the same rule for every supervision.')
DETECTOR_IGNORE_IOU = flags.DEFINE_float('detector_ignore_iou', _DETECTOR.ignore_iou, 'IoU below '
                                         'which a RoI is apart from a training box.',
                                         lower_bound=0.0, upper_bound=1.0)
DETECTOR_IGNORE_SCORE = flags.DEFINE_float('detector_ignore_score', _DETECTOR.ignore_score,
                                           'Class probability above which such a RoI is '
                                           'ignored.', lower_bound=0.0, upper_bound=1.0)
