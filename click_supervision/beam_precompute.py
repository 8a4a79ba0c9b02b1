"""The precompute stages (proposals, trunk maps) as an Apache Beam pipeline, for datasets that
outgrow one machine (COCO train2017: 118k images).

  pip install ".[beam]"
  python -m click_supervision.beam_precompute --dataset=voc:VOCdevkit/VOC2007 --split=trainval \\
      --cache_dir=/shared/cache --runner=DirectRunner --direct_num_workers=2 \\
      --direct_running_mode=multi_processing

The pipeline writes exactly the cache the driver reads (`precompute`): one element per missing
shard of the proposals cache and of the trunk-map cache, each computed by the same code as the
driver's stages and written atomically, so a rerun (or the driver afterwards) skips what is
done and a killed pipeline loses at most the shards in flight. Then run the driver with the
same `--dataset`, `--split`, `--cache_dir` and proposal/feature settings: its proposals and
features stages find every shard cached.

Every worker opens the dataset itself (`setup`) and builds its HED edge detector and trunk
once, so the dataset's files and the cache folder must be at the same paths on every worker:
a shared file system (NFS, GCS FUSE, Filestore) mounted alike. Runners, with Beam's own flags
(anything this module does not define is passed to Beam's `PipelineOptions`):
  DirectRunner   `--direct_num_workers=N --direct_running_mode=multi_processing` (one machine)
  Dataflow       `--runner=DataflowRunner --project=P --region=R --temp_location=gs://...`
                 `--sdk_container_image=IMAGE` (an image with this package installed)
  Flink / Spark  `--runner=FlinkRunner --flink_master=HOST:PORT` / `--runner=SparkRunner`
                 `--spark_master_url=...`, with `--environment_type=DOCKER` or `PROCESS`
Only the DirectRunner is tested here. The driver's `--num_shards/--shard_index` remain the
simple way to split the same work over array jobs without Beam.
"""

import dataclasses
import os
import sys
import time

from absl import flags

from click_supervision import command_line
from click_supervision import config as config_lib
from click_supervision import errors
from click_supervision import tf_logs
from click_supervision.errors import UserError

STAGES = ('proposals', 'features')

USAGE = ('python -m click_supervision.beam_precompute --dataset=DATASET --cache_dir=DIR '
         '[--split=trainval] [--stages=proposals,features] [proposal/feature flags] '
         '[Beam flags]')
FLAGS = command_line.new_flag_values()
_DATASET = flags.DEFINE_string('dataset', None, 'as the driver\'s --dataset', flag_values=FLAGS)
_SPLIT = flags.DEFINE_string('split', 'trainval', 'as the driver\'s --split', flag_values=FLAGS)
_CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'the cache folder the driver will read',
                                 flag_values=FLAGS)
_STAGES = flags.DEFINE_string('stages', ','.join(STAGES), 'proposals,features', flag_values=FLAGS)
# The settings that key the caches, with the driver's flag names and defaults: the driver finds
# Beam's shards only when they match its own.
_PROPOSALS = flags.DEFINE_string('proposals', config_lib.ProposalConfig.method,
                                 'as the driver\'s --proposals', flag_values=FLAGS)
_MAX_PROPOSALS = flags.DEFINE_integer('max_proposals', config_lib.ProposalConfig.max_boxes,
                                      'as the driver\'s --max_proposals', flag_values=FLAGS)
_SED_MODEL = flags.DEFINE_string('sed_model', '', 'OpenCV SED model.yml.gz (default: HED)',
                                 flag_values=FLAGS)
_TRUNK = flags.DEFINE_string('trunk', config_lib.FeatureConfig.trunk, 'as the driver\'s --trunk',
                             flag_values=FLAGS)
_WEIGHTS = flags.DEFINE_string('weights', config_lib.FeatureConfig.weights,
                               'as the driver\'s --weights', flag_values=FLAGS)
_FEATURE_SHORT_SIDE = flags.DEFINE_integer('feature_short_side',
                                           config_lib.FeatureConfig.short_side,
                                           'as the driver\'s --feature_short_side',
                                           flag_values=FLAGS)


def _quiet(message):
  del message


def _load_dataset(spec, split, cache_dir):
  from click_supervision import datasets  # pylint: disable=g-import-not-at-top
  return datasets.load_dataset(spec, split, cache_dir=cache_dir, log=_quiet)


def missing_shards(spec, split, cache_dir, proposal_config, feature_config, stages=STAGES):
  """(stage, shard) pairs still to compute, and the dataset's image count."""
  from click_supervision import precompute  # pylint: disable=g-import-not-at-top
  dataset = _load_dataset(spec, split, cache_dir)
  work = []
  if 'proposals' in stages:
    cache = precompute.proposals_cache(dataset, proposal_config, cache_dir)
    work += [('proposals', s) for s in cache.missing_shards()]
  if 'features' in stages:
    cache = precompute.trunk_maps_cache(dataset, feature_config, cache_dir)
    work += [('features', s) for s in cache.missing_shards()]
  return work, len(dataset.records)


class FillShard:
  """The Beam DoFn body: computes one (stage, shard) of the cache, as the driver would.

  Kept free of Beam imports so it can be tested and pickled alike; `build_pipeline` wraps it.
  """

  def __init__(self, spec, split, cache_dir, proposal_config, feature_config):
    self.spec, self.split, self.cache_dir = spec, split, cache_dir
    self.proposal_config = proposal_config
    self.feature_config = feature_config
    self._dataset = self._generator = self._trunk = None

  def setup(self):
    tf_logs.quiet()  # A worker process may be new: its TensorFlow import is quiet too.
    self._dataset = _load_dataset(self.spec, self.split, self.cache_dir)

  def process(self, element):
    """element: (stage, shard index). Yields (stage, shard, images computed, seconds)."""
    from click_supervision import precompute  # pylint: disable=g-import-not-at-top
    from click_supervision import proposals as proposals_lib  # pylint: disable=g-import-not-at-top
    if self._dataset is None:
      self.setup()
    stage, shard = element
    start = time.time()
    if stage == 'proposals':
      cache = precompute.proposals_cache(self._dataset, self.proposal_config, self.cache_dir)
      if self._generator is None:
        self._generator = proposals_lib.ProposalGenerator(self.proposal_config)
      _, info = precompute.compute_proposals(
          self._dataset, self.proposal_config, self.cache_dir, num_jobs=cache.num_shards,
          job_index=shard, log=_quiet, generator=self._generator)
    else:
      from click_supervision import backbones  # pylint: disable=g-import-not-at-top
      cache = precompute.trunk_maps_cache(self._dataset, self.feature_config, self.cache_dir)
      if self._trunk is None:
        self._trunk = backbones.build_trunk(self.feature_config.trunk,
                                            self.feature_config.weights,
                                            cache_dir=self.cache_dir)
      _, info = precompute.compute_trunk_maps(
          self._dataset, self.feature_config, self.cache_dir, num_jobs=cache.num_shards,
          job_index=shard, log=_quiet, trunk=self._trunk)
    yield stage, shard, info['images_computed'], time.time() - start


def build_pipeline(pipeline, work, fill):
  """Adds the precompute transforms to a `beam.Pipeline`: the (stage, shard) elements, spread
  over workers, each filled by `fill` (a `FillShard`). Returns the PCollection of
  (stage, shard, images, seconds)."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  class _FillShardFn(beam.DoFn):

    def __init__(self, body):
      super().__init__()
      self.body = body

    def setup(self):
      self.body.setup()

    def process(self, element):
      yield from self.body.process(element)

  return (pipeline
          | 'shards' >> beam.Create(work)
          | 'spread' >> beam.Reshuffle()
          | 'fill' >> beam.ParDo(_FillShardFn(fill)))


def run(spec, split, cache_dir, proposal_config, feature_config, beam_args=(), stages=STAGES,
        log=print):
  """Runs the pipeline until every shard is cached; returns a summary dict."""
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError('Apache Beam is not installed: pip install ".[beam]" (or use the driver\'s '
                    '--num_shards/--shard_index)') from None
  work, num_images = missing_shards(spec, split, cache_dir, proposal_config, feature_config,
                                    stages)
  log(f'beam precompute: {num_images} images of {spec} {split}; {len(work)} shards to compute '
      f'({", ".join(f"{sum(1 for w in work if w[0] == s)} {s}" for s in stages)}) into '
      f'{cache_dir}')
  start = time.time()
  if work:
    options = pipeline_options.PipelineOptions(list(beam_args))
    with beam.Pipeline(options=options) as pipeline:
      build_pipeline(pipeline, work, FillShard(spec, split, cache_dir, proposal_config,
                                               feature_config))
  left, _ = missing_shards(spec, split, cache_dir, proposal_config, feature_config, stages)
  elapsed = time.time() - start
  if left:
    raise UserError(f'beam precompute: {len(left)} shards still missing after the pipeline '
                    f'(first: {left[0][0]} shard {left[0][1]}); see the runner\'s log')
  log(f'beam precompute: {len(work)} shards in {elapsed:.1f} s '
      f'({num_images * len(stages) / max(elapsed, 1e-9):.2f} image-stages/s)')
  return {'shards': len(work), 'images': num_images, 'seconds': elapsed}


def main(argv=None):
  """The command (module docstring); argv: its arguments, without the program name (default
  `sys.argv[1:]`); what this module does not define goes to Beam's `PipelineOptions`. Returns
  the exit code."""
  beam_args = command_line.parse(
      FLAGS, argv, USAGE,
      'Fills the proposals and trunk-map caches with an Apache Beam pipeline; other flags go to '
      'Beam (e.g. --runner, --direct_num_workers).',
      required=('dataset', 'cache_dir'), pass_unknown=True)
  tf_logs.quiet()
  spec, split, cache_dir = _DATASET.value, _SPLIT.value, _CACHE_DIR.value
  stages = tuple(s.strip() for s in _STAGES.value.split(',') if s.strip())
  proposal_settings = {'method': _PROPOSALS.value, 'max_boxes': _MAX_PROPOSALS.value,
                       'edge_source': _SED_MODEL.value or 'hed'}
  feature_settings = {'trunk': _TRUNK.value, 'weights': _WEIGHTS.value,
                      'short_side': _FEATURE_SHORT_SIDE.value}

  def body():
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
      raise UserError(f'--stages: unknown stage {unknown[0]!r}; stages are {",".join(STAGES)}')
    from click_supervision import datasets  # pylint: disable=g-import-not-at-top
    datasets.check_spec(spec)
    proposal_config = config_lib.ProposalConfig(**proposal_settings)
    feature_config = dataclasses.replace(config_lib.FeatureConfig(), **feature_settings)
    run(spec, split, os.path.abspath(cache_dir), proposal_config, feature_config, beam_args,
        stages)

  # Every finished shard is in the cache: a rerun computes only the rest.
  return errors.run_command(body, interrupted=errors.INTERRUPTED_RESUMABLE)


if __name__ == '__main__':
  sys.exit(main())
