"""Tests of the cached proposals and features stages: fill, resume after a crash, worker split."""

import numpy as np
import pytest
from PIL import Image

import helpers
from helpers import tiny_trunk
from click_supervision import bags as bags_lib
from click_supervision import features as features_lib
from click_supervision import precompute
from click_supervision import proposals as proposals_lib


def tiny_dataset(tmp_path, num_images=7):
  return helpers.image_dataset(tmp_path, [(24 + i, 32) for i in range(num_images)], '.png',
                               box=(0, 0, 8, 8))


class FakeGenerator:
  """Three fixed boxes per image; can fail on one image to simulate a crash."""
  precomputed = None

  def __init__(self, fail_on=None):
    self.fail_on = fail_on
    self.calls = []

  def __call__(self, image, image_id):
    if image_id == self.fail_on:
      raise KeyboardInterrupt('killed')
    self.calls.append(image_id)
    height, width = image.shape[:2]
    boxes = np.array([[0, 0, height, width], [2, 2, 10, 12], [5, 6, 20, 30]], np.float32)
    return boxes, np.array([0.9, 0.5, 0.1], np.float32), {'edges': 0.1, 'thinning': 0.0,
                                                            'boxes': 0.01}


CONFIG = proposals_lib.ProposalConfig()


def test_proposals_fill_then_reuse(tmp_path):
  dataset = tiny_dataset(tmp_path)
  generator = FakeGenerator()
  cache, info = precompute.compute_proposals(dataset, CONFIG, str(tmp_path / 'c'), log=print,
                                             generator=generator, images_per_shard=3)
  assert info['images_computed'] == 7 and cache.num_shards == 3
  assert info['sec_per_image']['edges'] == pytest.approx(0.1)
  items = dict(cache.iter_images())
  assert items['im4']['boxes'].shape == (3, 4) and items['im4']['scores'].dtype == np.float32
  np.testing.assert_array_equal(items['im4']['boxes'][0], [0, 0, 28, 32])
  again = FakeGenerator()
  _, info = precompute.compute_proposals(dataset, CONFIG, str(tmp_path / 'c'), generator=again,
                                         images_per_shard=3)
  assert info['images_computed'] == 0 and again.calls == []


def test_proposals_resume_after_a_kill(tmp_path):
  dataset = tiny_dataset(tmp_path)
  with pytest.raises(KeyboardInterrupt):
    precompute.compute_proposals(dataset, CONFIG, str(tmp_path / 'c'),
                                 generator=FakeGenerator(fail_on='im4'), images_per_shard=3)
  # Shard 0 (im0-im2) was finished before the kill; shard 1 died half way and is redone.
  resumed = FakeGenerator()
  cache, info = precompute.compute_proposals(dataset, CONFIG, str(tmp_path / 'c'),
                                             generator=resumed, images_per_shard=3)
  assert resumed.calls == ['im3', 'im4', 'im5', 'im6'] and info['images_computed'] == 4
  assert cache.missing_shards() == []


def test_jobs_split_the_shards(tmp_path):
  dataset = tiny_dataset(tmp_path)
  root = str(tmp_path / 'c')
  worker0, worker1 = FakeGenerator(), FakeGenerator()
  cache, _ = precompute.compute_proposals(dataset, CONFIG, root, num_jobs=2, job_index=0,
                                          generator=worker0, images_per_shard=3)
  assert worker0.calls == ['im0', 'im1', 'im2', 'im6'] and cache.missing_shards() == [1]
  precompute.compute_proposals(dataset, CONFIG, root, num_jobs=2, job_index=1,
                               generator=worker1, images_per_shard=3)
  assert worker1.calls == ['im3', 'im4', 'im5'] and cache.missing_shards() == []

  # The trunk maps split the same way.
  feature_config = precompute.FeatureConfig(short_side=0, images_per_shard=2)
  maps, info = precompute.compute_trunk_maps(dataset, feature_config, root, trunk=tiny_trunk(),
                                             num_jobs=2, job_index=1)
  assert info['images_computed'] == 3 and maps.missing_shards() == [0, 2]
  _, info = precompute.compute_trunk_maps(dataset, feature_config, root, trunk=tiny_trunk())
  assert info['images_computed'] == 4 and maps.missing_shards() == []


def test_trunk_maps_give_the_features_of_the_trunk_run_directly(tmp_path):
  dataset = tiny_dataset(tmp_path)
  root = str(tmp_path / 'c')
  proposals, _ = precompute.compute_proposals(dataset, CONFIG, root, generator=FakeGenerator(),
                                              images_per_shard=3)
  trunk = tiny_trunk()
  # Upsampling by 1.25-1.6 (short side 40) so the box scaling is exercised too.
  config = precompute.FeatureConfig(short_side=40, images_per_shard=2, pool_size=2)
  maps, info = precompute.compute_trunk_maps(dataset, config, root, trunk=trunk)
  assert info['images_computed'] == 7 and maps.num_shards == 4
  # The cache holds per image the map, not one row per proposal.
  assert 0 < info['bytes_per_image'] < 10 * 14 * 5 * 2 + 2000
  bags = bags_lib.TrunkMapBags(dataset.records, proposals, maps, pool_size=2)
  extractor = features_lib.FeatureExtractor(trunk, pool_size=2, short_side=40)
  boxes_by_id = dict(proposals.iter_images())
  for bag in bags:
    record = dataset.by_id()[bag.image_id]
    image = np.asarray(Image.open(record['path']).convert('RGB'))
    direct, _ = extractor(image, boxes_by_id[bag.image_id]['boxes'])
    # The whole-image box is already the first proposal: nothing is appended.
    np.testing.assert_array_equal(bag.boxes, boxes_by_id[bag.image_id]['boxes'])
    # Equal up to the float16 rounding of the stored map.
    np.testing.assert_allclose(bag.features, bags_lib.l2_normalize(direct), atol=2e-3)
    # Exactly equal to pooling the trunk's map rounded to float16 the same way.
    feature_map, factors, _ = extractor.trunk_map(image)
    rounded = extractor.pool(feature_map.astype(np.float16),
                             boxes_by_id[bag.image_id]['boxes'] * factors)
    np.testing.assert_array_equal(bag.features, bags_lib.l2_normalize(rounded))
  # The maps do not depend on the proposals: other proposals reuse the same cache.
  other = precompute.proposals_cache(dataset, proposals_lib.ProposalConfig(max_boxes=5), root)
  assert precompute.trunk_maps_cache(dataset, config, root).dir == maps.dir
  assert other.dir != proposals.dir
  _, info = precompute.compute_trunk_maps(dataset, config, root, trunk=trunk)
  assert info['images_computed'] == 0


def test_remembered_bags_are_the_pooled_ones_and_only_kept_when_they_fit(tmp_path, monkeypatch):
  dataset = tiny_dataset(tmp_path)
  root = str(tmp_path / 'c')
  proposals, _ = precompute.compute_proposals(dataset, CONFIG, root, generator=FakeGenerator(),
                                              images_per_shard=3)
  config = precompute.FeatureConfig(short_side=0, images_per_shard=2, pool_size=2)
  maps, _ = precompute.compute_trunk_maps(dataset, config, root, trunk=tiny_trunk())
  bags = bags_lib.TrunkMapBags(dataset.records, proposals, maps, pool_size=2)
  pooled = {b.image_id: b.features.copy() for b in bags}
  calls = []
  pool = bags.pool
  monkeypatch.setattr(bags, 'pool', lambda *a: calls.append(1) or pool(*a))
  size = sum(len(f) * (4 * 4 + 4 + f.shape[1] * 4) for f in pooled.values())  # boxes, O, rows

  bags.remember(size)
  first = list(bags)
  assert len(calls) == len(pooled)
  second = list(bags)
  assert len(calls) == len(pooled)  # Served from memory: nothing pooled again.
  assert [b.image_id for b in second] == list(pooled)
  for bag in second:
    np.testing.assert_array_equal(bag.features, pooled[bag.image_id])
  assert second[0] is first[0]
  with pytest.raises(ValueError):  # Read-only: a reader cannot change the next pass.
    second[0].features[0, 0] = 1.0
  # A pass over some images, or a subset, pools again; forgetting pools again.
  list(bags.iter(image_ids={second[0].image_id}))
  assert [b.image_id for b in bags.subset([second[0].image_id])] == [second[0].image_id]
  assert len(calls) == len(pooled) + 2
  bags.remember(0)
  list(bags)
  assert len(calls) == 2 * len(pooled) + 2

  # One byte short of the whole pass: nothing is kept, and it is not tried again.
  bags.remember(size - 1)
  calls.clear()
  list(bags)
  list(bags)
  assert len(calls) == 2 * len(pooled)
  # A pass stopped halfway keeps nothing.
  bags.remember(0)
  bags.remember(size)
  calls.clear()
  next(iter(bags))
  list(bags)
  list(bags)
  assert len(calls) == 1 + len(pooled)


def test_the_cut_maps_give_the_whole_trunks_maps_through_the_upper_part(tmp_path):
  """The lower part's maps are cached from images padded to the whole trunk's stride, so the
  upper part run on a cached map gives the map the whole trunk gives (up to float16)."""
  dataset = tiny_dataset(tmp_path, num_images=3)
  trunk = helpers.tiny_cut_trunk()
  config = precompute.FeatureConfig(short_side=0, max_long_side=0)
  cut, _ = precompute.compute_trunk_maps(dataset, config, str(tmp_path / 'c'), trunk=trunk,
                                         part='lower')
  whole, _ = precompute.compute_trunk_maps(dataset, config, str(tmp_path / 'c'), trunk=trunk)
  assert cut.dir != whole.dir  # Keyed apart.
  cut_maps, whole_maps = dict(cut.iter_images()), dict(whole.iter_images())
  for image_id, entry in cut_maps.items():
    np.testing.assert_array_equal(entry['geometry'], [4, 0.0])
    assert entry['map'].dtype == np.float16 and entry['map'].shape[0] % 2 == 0
    top = trunk.get_layer('upper')(entry['map'][None].astype(np.float32)).numpy()[0]
    np.testing.assert_allclose(top, whole_maps[image_id]['map'], atol=2e-2)
