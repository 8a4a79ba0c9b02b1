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

import argparse
import dataclasses
import os
import sys
import time

from click_supervision import errors
from click_supervision import tf_logs
from click_supervision.errors import UserError

STAGES = ('proposals', 'features')


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
  from click_supervision import config as config_lib  # pylint: disable=g-import-not-at-top
  from click_supervision import proposals as proposals_lib  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog='python -m click_supervision.beam_precompute',
      description='Fills the proposals and trunk-map caches with an Apache Beam pipeline; '
                  'other flags go to Beam (e.g. --runner, --direct_num_workers).')
  parser.add_argument('--dataset', required=True, help='as the driver\'s --dataset')
  parser.add_argument('--split', default='trainval')
  parser.add_argument('--cache_dir', required=True, help='the cache folder the driver will read')
  parser.add_argument('--stages', default=','.join(STAGES), help='proposals,features')
  # The settings that key the caches, with the driver's flag names and defaults: the driver
  # finds Beam's shards only when they match its own.
  parser.add_argument('--proposals', default=proposals_lib.ProposalConfig.method)
  parser.add_argument('--max_proposals', type=int, default=proposals_lib.ProposalConfig.max_boxes)
  parser.add_argument('--sed_model', default='', help='OpenCV SED model.yml.gz (default: HED)')
  parser.add_argument('--trunk', default=config_lib.FeatureConfig.trunk)
  parser.add_argument('--weights', default=config_lib.FeatureConfig.weights)
  parser.add_argument('--feature_short_side', type=int,
                      default=config_lib.FeatureConfig.short_side)
  args, beam_args = parser.parse_known_args(argv)
  tf_logs.quiet()
  stages = tuple(s.strip() for s in args.stages.split(',') if s.strip())

  def body():
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
      raise UserError(f'--stages: unknown stage {unknown[0]!r}; stages are {",".join(STAGES)}')
    from click_supervision import datasets  # pylint: disable=g-import-not-at-top
    datasets.check_spec(args.dataset)
    proposal_config = proposals_lib.ProposalConfig(
        method=args.proposals, max_boxes=args.max_proposals, edge_source=args.sed_model or 'hed')
    feature_config = dataclasses.replace(config_lib.FeatureConfig(), trunk=args.trunk,
                                         weights=args.weights, short_side=args.feature_short_side)
    run(args.dataset, args.split, os.path.abspath(args.cache_dir), proposal_config,
        feature_config, beam_args, stages)

  # Every finished shard is in the cache: a rerun computes only the rest.
  return errors.run_command(body, interrupted=errors.INTERRUPTED_RESUMABLE)


if __name__ == '__main__':
  sys.exit(main())
