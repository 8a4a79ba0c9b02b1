"""The cached per-image stages: proposals and trunk feature maps, filled shard by shard.

Both stages write a `cache.ShardedCache` under `--cache_dir`, so runs that differ only in click
settings share them, a killed run resumes at the first unfinished shard, and `num_jobs` /
`job_index` (`--num_shards` / `--shard_index`) let several machines or array jobs split the
shards. Per image the caches hold:

  proposals:  boxes float32 [P, 4] pixels (`boxes` convention), scores float32 [P] (objectness
              O, descending).
  trunk_maps: map float16 [h, w, C], the trunk's feature map of the resized image;
              factors float32 [4], image pixels -> resized pixels for `[ymin, xmin, ymax, xmax]`;
              geometry float32 [2], the trunk's (feature_stride, feature_offset) in pixels.
              Any box's RoI feature is pooled from these on demand (`features.MapPooler`,
              `bags.TrunkMapBags`): about 0.3 MB per VOC photo at the 600 px default, where one
              float16 row per proposal (2,000 x 2,880 values) took 11.5 MB.
"""

import collections
import time

import numpy as np

from click_supervision import cache as cache_lib
from click_supervision import config as config_lib
from click_supervision import progress as progress_lib
from click_supervision.datasets import images as images_lib

# Bump when the code that fills a cache changes its result; part of the cache keys.
PROPOSALS_VERSION = 1
TRUNK_MAPS_VERSION = 1


FeatureConfig = config_lib.FeatureConfig


def image_files(dataset):
  return [(r['image_id'], r['path']) for r in dataset.records]


def proposals_cache(dataset, proposal_config, cache_dir, images_per_shard=64):
  """The `ShardedCache` holding `dataset`'s proposals under `proposal_config`."""
  params = dict(proposal_config.cache_params(), version=PROPOSALS_VERSION)
  return cache_lib.ShardedCache(cache_dir, 'proposals', params, image_files(dataset),
                                images_per_shard)


def trunk_maps_cache(dataset, feature_config, cache_dir, mirrored=False, part=None):
  """The `ShardedCache` of trunk maps: it depends on the trunk and the image scale only, not on
  the proposals or the RoI grid, so every proposal method and pool size shares it.

  `mirrored`: the maps of the horizontally mirrored images (the detector's flip augmentation:
  a trunk map mirrored is not the map of the mirrored image, so those are computed too).
  `part`: None (the whole trunk's output) or `lower`: the stride-16 map where the trunk is cut
  (`backbones.build_trunk(cut=True)`), from which the detector trains the upper part.
  """
  params = {'trunk': feature_config.trunk, 'weights': feature_config.weights,
            'short_side': feature_config.short_side,
            'max_long_side': feature_config.max_long_side, 'version': TRUNK_MAPS_VERSION}
  if mirrored:
    params['mirrored'] = True  # Only when set: the unmirrored cache keeps its key.
  if part:
    params['part'] = part  # Likewise.
  return cache_lib.ShardedCache(cache_dir, 'trunk_maps', params, image_files(dataset),
                                feature_config.images_per_shard)


def _fill(cache, compute_image, records_by_id, num_jobs, job_index, desc, log):
  """Computes this job's missing shards; returns (images done now, summed timings)."""
  missing = cache.missing_shards(num_jobs, job_index)
  todo = sum(len(cache.shard_image_ids(s)) for s in missing)
  done = len(cache.image_ids) - todo if num_jobs == 1 else None
  timings = collections.Counter()
  if not missing:
    log(f'{desc}: all shards of this job cached in {cache.dir}')
    return 0, timings
  log(f'{desc}: {len(missing)} of {cache.num_shards} shards to compute ({todo} images'
      + (f', {done} cached' if done else '') + f') in {cache.dir}')
  start = time.time()
  with progress_lib.factory(log)(todo, desc) as bar:
    for shard in missing:
      per_image = {}
      for image_id in cache.shard_image_ids(shard):
        per_image[image_id], image_timings = compute_image(records_by_id[image_id])
        timings.update(image_timings)
        bar.update(1)
      cache.write_shard(shard, per_image)
  elapsed = time.time() - start
  parts = ', '.join(f'{k} {v / todo:.3f}' for k, v in sorted(timings.items()))
  log(f'{desc}: {todo} images in {elapsed:.1f} s ({todo / elapsed:.2f} img/s; s/img: {parts})')
  return todo, timings


def compute_proposals(dataset, proposal_config, cache_dir, num_jobs=1, job_index=0,
                      log=print, generator=None, images_per_shard=64):
  """Fills the proposals cache for this job's shards.

  Args:
    dataset: `records.Dataset`.
    proposal_config: `proposals.ProposalConfig`.
    cache_dir: the shared cache folder.
    num_jobs, job_index: this job's share of the shards.
    log: callable taking one str.
    generator: optional `proposals.ProposalGenerator` to use (default: built from the config).
    images_per_shard: proposal cache shard size.
  Returns:
    (cache, info): the `ShardedCache` and a dict with `images_computed` and per-part
    `sec_per_image`.
  """
  from click_supervision import proposals as proposals_lib  # pylint: disable=g-import-not-at-top
  cache = proposals_cache(dataset, proposal_config, cache_dir, images_per_shard)
  generator = generator or proposals_lib.ProposalGenerator(proposal_config)
  if generator.precomputed is not None:
    generator.precomputed.check_records(dataset.records)

  def compute_image(record):
    boxes, scores, timings = generator(images_lib.load_image(record['path']), record['image_id'])
    return {'boxes': boxes.astype(np.float32), 'scores': scores.astype(np.float32)}, timings

  count, timings = _fill(cache, compute_image, dataset.by_id(), num_jobs, job_index,
                         'proposals', log)
  return cache, {'images_computed': count,
                 'sec_per_image': {k: v / count for k, v in timings.items()} if count else {}}


def compute_trunk_maps(dataset, feature_config, cache_dir, num_jobs=1, job_index=0,
                       log=print, trunk=None, mirrored=False, part=None):
  """Fills the trunk-map cache for this job's shards (the `features` stage).

  Args:
    dataset: `records.Dataset`.
    feature_config: `FeatureConfig`.
    cache_dir: the shared cache folder.
    num_jobs, job_index: this job's share of the shards.
    log: callable taking one str.
    trunk: optional prebuilt trunk (default: `backbones.build_trunk` from the config).
    mirrored: compute the maps of the horizontally mirrored images (`trunk_maps_cache`).
    part: None or `lower` (`trunk_maps_cache`). The lower part's input is padded to the whole
      trunk's stride, so the upper part run on a cached map gives the whole trunk's map.
  Returns:
    (cache, info) as `compute_proposals`; info also has `bytes_per_image` of the whole cache.
  """
  # pylint: disable=g-import-not-at-top
  from click_supervision import backbones
  from click_supervision import features as features_lib
  cache = trunk_maps_cache(dataset, feature_config, cache_dir, mirrored=mirrored, part=part)
  info = {'images_computed': 0, 'sec_per_image': {}}
  if cache.missing_shards(num_jobs, job_index):
    pad_stride = None
    if part == 'lower':  # `trunk`, when given, is the whole cut trunk.
      whole = trunk or backbones.build_trunk(feature_config.trunk, feature_config.weights,
                                             cache_dir=cache_dir, cut=True)
      trunk, pad_stride = whole.get_layer('lower'), whole.feature_stride
    trunk = trunk or backbones.build_trunk(feature_config.trunk, feature_config.weights,
                                           cache_dir=cache_dir)
    extractor = features_lib.FeatureExtractor(
        trunk, pool_size=feature_config.pool_size, short_side=feature_config.short_side or None,
        max_long_side=feature_config.max_long_side, pad_stride=pad_stride)
    geometry = np.array([trunk.feature_stride, trunk.feature_offset], np.float32)

    def compute_image(record):
      start = time.perf_counter()
      image = images_lib.load_image(record['path'])
      if mirrored:
        image = np.ascontiguousarray(image[:, ::-1])
      load_seconds = time.perf_counter() - start
      feature_map, factors, timings = extractor.trunk_map(image)
      timings['load'] = load_seconds
      return {'map': feature_map.astype(np.float16), 'factors': factors,
              'geometry': geometry}, timings

    desc = 'features' + (f' ({part} part)' if part else '') + (' (mirrored)' if mirrored else '')
    count, timings = _fill(cache, compute_image, dataset.by_id(), num_jobs, job_index,
                           desc, log)
    info = {'images_computed': count,
            'sec_per_image': {k: v / count for k, v in timings.items()} if count else {}}
  info['bytes_per_image'] = cache.size_bytes() / max(1, len(cache.image_ids))
  return cache, info
