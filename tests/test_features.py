"""Tests of RoI pooling (against a numpy reference) and the per-image feature extractor."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import tiny_trunk
from click_supervision import features


def bilinear(feature_map, y, x):
  """Numpy reference: bilinear sample of [h, w, C] at feature coordinates (y, x).

  Within one cell outside the outer cell centers the border value is used; further out, 0.
  """
  h, w, _ = feature_map.shape
  if not (-1 <= y <= h and -1 <= x <= w):
    return np.zeros(feature_map.shape[-1])
  y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
  y0, x0 = int(np.floor(y)), int(np.floor(x))
  y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
  dy, dx = y - y0, x - x0
  return ((1 - dy) * (1 - dx) * feature_map[y0, x0] + (1 - dy) * dx * feature_map[y0, x1] +
          dy * (1 - dx) * feature_map[y1, x0] + dy * dx * feature_map[y1, x1])


def roi_pool_reference(feature_map, box, stride, pool_size, samples_per_bin):
  """Numpy reference of RoiPooling for one box: [pool, pool, C]."""
  ymin, xmin, ymax, xmax = np.asarray(box, np.float64) / stride - 0.5
  n = pool_size * samples_per_bin
  ys = ymin + (np.arange(n) + 0.5) * (ymax - ymin) / n
  xs = xmin + (np.arange(n) + 0.5) * (xmax - xmin) / n
  samples = np.array([[bilinear(feature_map, y, x) for x in xs] for y in ys])
  return samples.reshape(pool_size, samples_per_bin, pool_size, samples_per_bin, -1).mean(
      axis=(1, 3))


def test_roi_pooling_matches_numpy_reference():
  rng = np.random.default_rng(0)
  maps = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  stride = 16
  boxes = np.array([[0, 0, 80, 112],      # the whole 5x7 map of image 0
                    [10, 20, 50, 70],     # inside
                    [-20, 90, 40, 130],   # partly outside the map: zeros there
                    [33, 33, 34, 34]],    # a 1-pixel box
                   np.float32)
  indices = np.array([0, 1, 0, 1], np.int32)
  layer = features.RoiPooling(stride=stride, pool_size=2, samples_per_bin=2)
  pooled = layer(maps, boxes, indices).numpy()
  assert pooled.shape == (4, 2, 2, 3)
  for box, index, got in zip(boxes, indices, pooled):
    np.testing.assert_allclose(got, roi_pool_reference(maps[index], box, stride, 2, 2),
                               rtol=1e-5, atol=1e-5)


def test_roi_pooling_cell_aligned_box_gives_cell_values():
  # Feature cell (i, j) covers pixels [8i, 8i+8) x [8j, 8j+8). A box over cells 1..2 x 0..1
  # pooled 2x2: each bin's four samples sit +-0.25 cell around a cell center.
  maps = np.arange(4 * 4, dtype=np.float32).reshape(1, 4, 4, 1)  # value = 4 * row + col
  layer = features.RoiPooling(stride=8, pool_size=2, samples_per_bin=2)
  pooled = layer(maps, np.array([[8, 0, 24, 16]], np.float32), np.zeros(1, np.int32)).numpy()
  # Inside the map it is linear, so a bin averages to its cell's value (5, 9). In column 0 the
  # samples at x = -0.25 take the border value (x clamped to 0: 4 or 8) and those at x = 0.25
  # give 4.25 or 8.25, so the bin is 4.125 or 8.125 (not dimmed towards 0).
  np.testing.assert_allclose(pooled[0, :, :, 0], [[4.125, 5], [8.125, 9]], atol=1e-5)
  # A box far left of the map, x in [-24, 0) px = cells [-3.5, -0.5): its left bin's samples
  # (x = -3.125, -2.375) lie beyond the one replicated cell and are 0.
  outside = layer(maps, np.array([[8, -24, 24, 0]], np.float32), np.zeros(1, np.int32)).numpy()
  np.testing.assert_allclose(outside[0, :, 0, 0], [0, 0])


def test_roi_pooling_config_round_trip():
  layer = features.RoiPooling(stride=32, offset=15.5, pool_size=3, samples_per_bin=1, name='roi')
  clone = features.RoiPooling.from_config(layer.get_config())
  assert (clone.stride, clone.offset, clone.pool_size, clone.samples_per_bin, clone.name) == (
      32, 15.5, 3, 1, 'roi')


def test_roi_pooling_offset_shifts_the_grid():
  # With offset 8 px at stride 8, cell i is centered on pixel 8i + 12 instead of 8i + 4 (on both
  # axes): a box shifted by 8 px down and right with offset 8 pools exactly what the unshifted
  # box pools with offset 0.
  maps = np.random.default_rng(2).normal(size=(1, 4, 6, 2)).astype(np.float32)
  box, index = np.array([[3, 5, 20, 30]], np.float32), np.zeros(1, np.int32)
  plain = features.RoiPooling(stride=8)(maps, box, index)
  shifted = features.RoiPooling(stride=8, offset=8.0)(maps, box + 8, index)
  np.testing.assert_allclose(plain, shifted, atol=1e-5)


def test_rescale_factor():
  assert features.rescale_factor(375, 500, 600, 1000) == pytest.approx(1.6)
  # 600 / 100 = 6 would make the long side 3000 > 1000: capped at 1000 / 500 = 2.
  assert features.rescale_factor(100, 500, 600, 1000) == pytest.approx(2.0)
  assert features.rescale_factor(100, 500, None, 1000) == 1.0


def test_rescale_factor_caps_the_long_side_at_native_size():
  # short_side 0 or None keeps the native size, but not past max_long_side.
  assert features.rescale_factor(3000, 4000, None, 1000) == pytest.approx(0.25)
  assert features.rescale_factor(3000, 4000, 0, 1000) == pytest.approx(0.25)
  assert features.rescale_factor(8000, 2000, 0, 1000) == pytest.approx(0.125)
  assert features.rescale_factor(375, 500, 0, 1000) == 1.0  # VOC photos keep their size.
  assert features.rescale_factor(1000, 640, None, 1000) == 1.0  # At the cap: kept.
  assert features.rescale_factor(3000, 4000, None, None) == 1.0  # No cap asked for.
  assert features.rescale_factor(3000, 4000, 0, 0) == 1.0


def test_extractor_shapes_and_scaling_consistency():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 255, size=(30, 41, 3), dtype=np.uint8)
  boxes = np.array([[0, 0, 30, 41], [5, 6, 20, 30], [1, 1, 3, 3]], np.float32)
  trunk = tiny_trunk()
  native = features.FeatureExtractor(trunk, pool_size=2, short_side=None)
  feats, timings = native(image, boxes)
  assert feats.shape == (3, 2 * 2 * 5) and feats.dtype == np.float32
  assert set(timings) == {'trunk', 'pooling'}
  # The same image 2x larger with boxes 2x larger, at native size, equals the extractor that
  # upsamples by 2 itself (short side 30 -> 60).
  upsampled = features.FeatureExtractor(trunk, pool_size=2, short_side=60)
  big = tf.image.resize(image[None].astype(np.float32), [60, 82]).numpy()[0]
  direct = native.__class__(trunk, short_side=None)
  # 82 columns are padded to 84 (a multiple of the stride 4) by repeating the last column.
  padded = features._pad_replicate(tf.constant(big[None]), 0, 2)
  direct_feats = direct.pooler._pool(direct._forward(padded), boxes * [2, 82 / 41, 2, 82 / 41])
  np.testing.assert_allclose(upsampled(image, boxes)[0], direct_feats.numpy(), rtol=1e-4,
                             atol=1e-4)


def test_extractor_many_rois_in_chunks_and_no_rois():
  trunk = tiny_trunk()
  image = np.zeros((16, 16, 3), np.uint8)
  boxes = np.tile(np.array([[0, 0, 8, 8]], np.float32), (10, 1))
  chunked = features.FeatureExtractor(trunk, short_side=None, max_rois_per_call=3)
  assert chunked(image, boxes)[0].shape == (10, 20)
  assert chunked(image, np.zeros((0, 4), np.float32))[0].shape == (0, 20)


def test_extractor_context_grid():
  rng = np.random.default_rng(2)
  image = rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
  boxes = np.array([[8, 8, 16, 24], [0, 0, 32, 32]], np.float32)
  trunk = tiny_trunk()
  plain = features.FeatureExtractor(trunk, short_side=None)
  context = features.FeatureExtractor(trunk, short_side=None, context_scale=2.0,
                                      max_rois_per_call=3)
  feats = context(image, boxes)[0]
  assert feats.shape == (2, 40) and context.feature_dim() == 40
  # First half: the box itself; second half: the box doubled about its center, here [4, 0, 20, 32].
  np.testing.assert_allclose(feats[:, :20], plain(image, boxes)[0], rtol=1e-5, atol=1e-5)
  enlarged = np.array([[4, 0, 20, 32], [-16, -16, 48, 48]], np.float32)
  np.testing.assert_allclose(feats[:, 20:], plain(image, enlarged)[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(features.enlarge_boxes(boxes, 2.0), enlarged)
  assert context(image, np.zeros((0, 4), np.float32))[0].shape == (0, 40)
  with pytest.raises(ValueError, match='context_scale'):
    features.FeatureExtractor(trunk, context_scale=0.5)


def test_pad_replicate():
  images = tf.constant(np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1))
  padded = features._pad_replicate(images, 1, 2).numpy()[0, :, :, 0]
  np.testing.assert_array_equal(padded, [[0, 1, 2, 2, 2], [3, 4, 5, 5, 5], [3, 4, 5, 5, 5]])


def receptive_field_center(trunk, size, cell):
  """Image pixel (y, x) where the gradient of one output cell is centered (|grad| centroid)."""
  image = tf.Variable(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)), dtype=tf.float32)
  with tf.GradientTape() as tape:
    value = tf.reduce_sum(trunk(image)[0, cell[0], cell[1], :] ** 2)
  weight = np.abs(tape.gradient(value, image).numpy()[0]).sum(-1)
  rows, cols = np.mgrid[0:size, 0:size] + 0.5  # Pixel centers in the continuous frame.
  return (weight * rows).sum() / weight.sum(), (weight * cols).sum() / weight.sum()


def test_efficientnet_feature_offset_matches_its_receptive_fields():
  from click_supervision.backbones import efficientnet_lite  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  trunk = efficientnet_lite.efficientnet_lite0_trunk(weights=None)
  assert (trunk.feature_stride, trunk.feature_offset) == (32, 15.5)
  # Random weights have no preferred direction, so the gradient centroid sits at the geometric
  # receptive-field center: (i + 0.5) * 32 + 15.5 = 127.5, 159.5 for cell (3, 4); without the
  # offset it would be 112, 144. Measured about (131, 158).
  y, x = receptive_field_center(trunk, 256, (3, 4))
  assert abs(y - 127.5) < 6 and abs(x - 159.5) < 6, (y, x)


@pytest.mark.parametrize('name', ['vgg16', 'alexnet'])
def test_other_trunks_feature_offsets_match_their_receptive_fields(name):
  from click_supervision.backbones import alexnet, vgg16  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  trunk = (vgg16.vgg16_trunk(weights=None) if name == 'vgg16' else
           alexnet.alexnet_trunk(weights=None))
  # Cell (5, 6) at stride 16: (i + 0.5) * 16 + offset.
  expected = (5.5 * 16 + trunk.feature_offset, 6.5 * 16 + trunk.feature_offset)
  y, x = receptive_field_center(trunk, 192, (5, 6))
  assert abs(y - expected[0]) < 3 and abs(x - expected[1]) < 3, (name, y, x, expected)
