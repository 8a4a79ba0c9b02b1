"""Trains object localisation from image-level labels plus 0, 1 or 2 center clicks per class.

  python run_mil.py                                   # embedded synthetic default
  python run_mil.py --dataset=voc:VOCdevkit/VOC2007 --split=trainval --clicks=2

Flags -> one `Config` -> the stages of `click_supervision.runner` (also reachable from Python:
`click_supervision.api.train`). Every stage writes into --workdir; expensive, reusable work goes
to --cache_dir, shared by runs with different click settings. The last line of output is
`results: <path>` on success, or `error: <what went wrong>`.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Keep TensorFlow's start-up chatter out.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging as absl_logging

from click_supervision import config as config_lib
from click_supervision import datasets
from click_supervision import mil as mil_lib
from click_supervision import precompute
from click_supervision import proposals as proposals_lib
from click_supervision import runner
from click_supervision.errors import UserError
from flags import mil_flags


def flag(holder):
  """A flag's value, or the `--preset`'s value for it when the flag was not given."""
  preset = config_lib.PRESETS.get(mil_flags.PRESET.value, {})
  if not holder.present and holder.name in preset:
    return preset[holder.name]
  return holder.value


def config_from_flags():
  """Reads the absl flags once into a `Config` (the only place flags are read)."""
  stages = tuple(s.strip() for s in mil_flags.STAGES.value if s.strip())
  unknown = [s for s in stages if s not in config_lib.STAGES]
  if unknown:
    raise UserError(f'--stages: unknown stage {unknown[0]!r}; stages are '
                    f'{",".join(config_lib.STAGES)}')
  data = config_lib.DataConfig(
      dataset=flag(mil_flags.DATASET), split=mil_flags.SPLIT.value,
      cache_dir=os.path.abspath(mil_flags.CACHE_DIR.value or config_lib.default_cache_dir()),
      skip_bad_records=mil_flags.SKIP_BAD_RECORDS.value,
      tfds_data_dir=mil_flags.TFDS_DATA_DIR.value, tfds_download=mil_flags.TFDS_DOWNLOAD.value)
  click_config = config_lib.ClickConfig(
      num_clicks=int(mil_flags.CLICKS.value), source=mil_flags.CLICK_SOURCE.value,
      noise=mil_flags.CLICK_NOISE.value, instance=mil_flags.CLICK_INSTANCE.value,
      seed=mil_flags.SEED.value, use_flagged=mil_flags.USE_FLAGGED_CLICKS.value,
      seconds_per_click=mil_flags.SECONDS_PER_CLICK.value,
      seconds_per_box=mil_flags.SECONDS_PER_BOX.value)
  if mil_flags.SHARD_INDEX.value >= mil_flags.NUM_SHARDS.value:
    raise UserError(f'--shard_index={mil_flags.SHARD_INDEX.value} must be smaller than '
                    f'--num_shards={mil_flags.NUM_SHARDS.value}')
  proposal_config = proposals_lib.ProposalConfig(
      method=mil_flags.PROPOSALS.value, max_boxes=flag(mil_flags.MAX_PROPOSALS),
      edge_source=mil_flags.SED_MODEL.value or 'hed')
  feature_config = precompute.FeatureConfig(
      trunk=mil_flags.TRUNK.value, weights=mil_flags.WEIGHTS.value,
      short_side=flag(mil_flags.FEATURE_SHORT_SIDE), pool_size=mil_flags.FEATURE_POOL_SIZE.value,
      context_scale=mil_flags.FEATURE_CONTEXT_SCALE.value, store=mil_flags.FEATURE_STORE.value)
  if feature_config.context_scale and feature_config.context_scale <= 1.0:
    raise UserError(f'--feature_context_scale={feature_config.context_scale}: use 0 (off) or a '
                    f'factor above 1')
  cues = tuple(c.strip() for c in mil_flags.CUES.value if c.strip())
  unknown = sorted(set(cues) - set(mil_lib.CUES))
  if unknown:
    raise UserError(f'--cues: unknown cue {unknown[0]!r}; cues are {",".join(mil_lib.CUES)}')
  try:
    mil_config = mil_lib.MilConfig(
        num_folds=flag(mil_flags.FOLDS), num_iterations=flag(mil_flags.MIL_ITERATIONS), cues=cues,
        fusion=mil_flags.MIL_FUSION.value, appearance_weight=mil_flags.APPEARANCE_WEIGHT.value,
        appearance_exponent=mil_flags.APPEARANCE_EXPONENT.value, sigma_bc=mil_flags.SIGMA_BC.value,
        size_exponent=mil_flags.SIZE_EXPONENT.value, init=mil_flags.MIL_INIT.value,
        trainer=flag(mil_flags.MIL_TRAINER),
        rerank_top=mil_flags.RERANK_TOP.value,
        near_miss_negatives=mil_flags.NEAR_MISS_NEGATIVES.value, svm_c=mil_flags.SVM_C.value,
        svm_tol=mil_flags.SVM_TOL.value, model_momentum=mil_flags.MODEL_MOMENTUM.value,
        average_models_from=mil_flags.AVERAGE_MODELS_FROM.value,
        keep_easy_negatives=mil_flags.KEEP_EASY_NEGATIVES.value, seed=mil_flags.MIL_SEED.value)
  except ValueError as e:  # MilConfig names the bad field; absl's bounds cannot say "> 0".
    raise UserError(f'MIL flags: {e}') from None
  try:
    detector_config = config_lib.DetectorConfig(
        supervision=mil_flags.SUPERVISION.value, finetune=mil_flags.DETECTOR_FINETUNE.value,
        hidden_units=mil_flags.DETECTOR_HIDDEN_UNITS.value,
        images_per_batch=mil_flags.DETECTOR_IMAGES_PER_BATCH.value,
        epochs=mil_flags.DETECTOR_EPOCHS.value, deep_mil_epochs=mil_flags.DEEP_MIL_EPOCHS.value,
        learning_rate=mil_flags.DETECTOR_LEARNING_RATE.value,
        trunk_learning_rate_factor=mil_flags.DETECTOR_TRUNK_LR_FACTOR.value,
        seed=mil_flags.DETECTOR_SEED.value,
        deterministic=mil_flags.DETERMINISTIC.value,
        deep_mil_iterations=mil_flags.DEEP_MIL_ITERATIONS.value,
        deep_mil_folds=mil_flags.DEEP_MIL_FOLDS.value,
        deep_mil_refine=mil_flags.DEEP_MIL_REFINE.value, flip=mil_flags.DETECTOR_FLIP.value,
        pool_size=mil_flags.DETECTOR_POOL_SIZE.value, pool_cut=mil_flags.DETECTOR_POOL_CUT.value,
        lr_schedule=mil_flags.DETECTOR_LR_SCHEDULE.value,
        warmup_steps=mil_flags.DETECTOR_WARMUP_STEPS.value,
        ignore_rule=mil_flags.DETECTOR_IGNORE_RULE.value,
        ignore_iou=mil_flags.DETECTOR_IGNORE_IOU.value,
        ignore_score=mil_flags.DETECTOR_IGNORE_SCORE.value)
  except ValueError as e:
    raise UserError(f'detector flags: {e}') from None
  if feature_config.store != 'maps' and {'deep_mil', 'detector'} & set(stages):
    raise UserError(f'--feature_store={feature_config.store}: the detector pools its RoIs from '
                    f'trunk maps; use --feature_store=maps')
  # Inputs named by flags are checked here, before any stage runs.
  datasets.check_spec(data.dataset)
  test_dataset = mil_flags.TEST_DATASET.value or data.dataset
  if 'detector' in stages:
    datasets.check_spec(test_dataset, '--test_dataset')
    datasets.check_split(test_dataset, mil_flags.TEST_SPLIT.value, data.cache_dir,
                         '--test_split')
  if mil_flags.AREA_FIT_DATA.value not in ('auto', 'synthetic', 'shipped'):
    datasets.check_spec(mil_flags.AREA_FIT_DATA.value, '--area_fit_data')
  if mil_flags.STRATEGY.value == 'tpu' and not mil_flags.TPU.value:
    raise UserError('--strategy=tpu needs --tpu=ADDRESS (the TPU name, grpc://host:port, or '
                    'local)')
  if click_config.source != 'simulated' and not os.path.isfile(click_config.source):
    raise UserError(f'--click_source={click_config.source}: no such file (or "simulated")')
  workdir = mil_flags.WORKDIR.value or os.path.join(
      'runs', f'{datasets.dataset_slug(data.dataset)}_{data.split}_clicks{click_config.num_clicks}'
      f'_seed{click_config.seed}')
  return config_lib.Config(data=data, clicks=click_config, proposals=proposal_config,
                           features=feature_config, mil=mil_config,
                           detector=detector_config, test_dataset=test_dataset,
                           test_split=mil_flags.TEST_SPLIT.value,
                           area_fit_data=mil_flags.AREA_FIT_DATA.value,
                           workdir=os.path.abspath(workdir),
                           stages=tuple(s for s in config_lib.STAGES if s in stages),
                           num_workers=mil_flags.NUM_SHARDS.value,
                           worker_index=mil_flags.SHARD_INDEX.value,
                           strategy=mil_flags.STRATEGY.value, tpu=mil_flags.TPU.value)


def parse_flags(argv):
  """absl's flag parsing, with bad values reported as one `error:` line (exit 2)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr, flush=True)
    sys.exit(2)
  # TensorFlow's checkpointing logs a line per save through absl at INFO; progress is ours.
  absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    results_path = runner.run(config_from_flags())
  except UserError as e:
    sys.stdout.flush()
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)
  except KeyboardInterrupt:
    sys.stdout.flush()
    print('error: interrupted; rerun the same command to resume', file=sys.stderr, flush=True)
    sys.exit(130)
  print(f'results: {results_path}', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
