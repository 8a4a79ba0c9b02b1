"""Tests of the cached proposals and features stages: fill, resume after a crash, worker split."""

import keras
import numpy as np
import pytest
from PIL import Image

from click_supervision import precompute
from click_supervision import proposals as proposals_lib
from click_supervision.datasets import records as records_lib


def tiny_dataset(tmp_path, num_images=7):
  rng = np.random.default_rng(0)
  records = []
  for i in range(num_images):
    path = str(tmp_path / f'{i}.png')
    Image.fromarray(rng.integers(0, 255, (24 + i, 32, 3), dtype=np.uint8)).save(path)
    records.append(records_lib.make_record(f'im{i}', path, 24 + i, 32, [[0, 0, 8, 8]], [0]))
  return records_lib.Dataset('tiny', 'trainval', ['thing'], records)


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


def tiny_trunk():
  inputs = keras.Input([None, None, 3])
  outputs = keras.layers.Conv2D(3, 4, strides=4, padding='same',
                                kernel_initializer=keras.initializers.GlorotUniform(seed=0))(inputs)
  trunk = keras.Model(inputs, outputs)
  trunk.feature_stride, trunk.feature_offset = 4, 0.0
  return trunk


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


def test_workers_split_shards_and_features_follow(tmp_path):
  dataset = tiny_dataset(tmp_path)
  root = str(tmp_path / 'c')
  worker0, worker1 = FakeGenerator(), FakeGenerator()
  cache, _ = precompute.compute_proposals(dataset, CONFIG, root, num_workers=2, worker_index=0,
                                          generator=worker0, images_per_shard=3)
  assert worker0.calls == ['im0', 'im1', 'im2', 'im6'] and cache.missing_shards() == [1]
  precompute.compute_proposals(dataset, CONFIG, root, num_workers=2, worker_index=1,
                               generator=worker1, images_per_shard=3)
  assert worker1.calls == ['im3', 'im4', 'im5'] and cache.missing_shards() == []

  feature_config = precompute.FeatureConfig(short_side=0, images_per_shard=2)
  features, info = precompute.compute_features(dataset, feature_config, cache, root,
                                               trunk=tiny_trunk())
  assert info['images_computed'] == 7 and features.num_shards == 4
  feats = dict(features.iter_images())
  # 3 proposals per image, 3 x 3 pooling (the default) of 3 channels.
  assert feats['im5']['features'].shape == (3, 27)
  assert feats['im5']['features'].dtype == np.float16
  # The features key follows the proposals key: other proposals, another features cache.
  other = precompute.proposals_cache(dataset, proposals_lib.ProposalConfig(max_boxes=5), root)
  assert precompute.features_cache(dataset, feature_config, other, root).dir != features.dir
  _, info = precompute.compute_features(dataset, feature_config, cache, root, trunk=tiny_trunk())
  assert info['images_computed'] == 0
