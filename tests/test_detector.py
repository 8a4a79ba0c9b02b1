"""Tests of the detector: box coding, RoI sampling, the model's config round trip and its
training modes' equivalence, training on cached maps (a learnable toy problem, resume after a
kill), the ignore rule, the tf.data input, and deep MIL. The serving recipe's own tests are in
test_serving_recipe.py."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from click_supervision import bags as bags_lib
from click_supervision import cache as cache_lib
from click_supervision import config as config_lib
from click_supervision import evaluation
from click_supervision import features as features_lib
from click_supervision import localizations
from click_supervision import mil
from click_supervision import pipeline
from click_supervision.datasets import records as records_lib
from click_supervision.detector import batches as batches_lib
from click_supervision.detector import box_coding
from click_supervision.detector import deep_mil
from click_supervision.detector import fast_rcnn
from click_supervision.detector import head as head_lib
from click_supervision.detector import inference
from click_supervision.detector import sampling
from click_supervision.detector import train as train_lib
from tests import helpers

SIZE, STRIDE, CHANNELS = 64, 8, 4


def toy_maps(tmp_path, num_images=16, seed=0, name='toy', sides=(16, 24, 32),
             real_images=False):
  """Cached trunk maps and proposals of toy images with one object each.

  Each 64 x 64 image holds a 24 x 24 object of class i % 2 at a random place on the 8 px grid.
  Its trunk map (8 x 8 cells, stride 8) has channel `class` at 1 inside the object, channel 2
  noise and channel 3 a constant: an object is visible to the head only through its map, as in
  real trunk maps. The proposals are every box on the 8 px grid with sides in `sides`. With
  `real_images` the image files are PNGs with the object painted red (class 0) or blue.

  Returns:
    (records, class names, `bags.TrunkMapBags`).
  """
  rng = np.random.default_rng(seed)
  grid = [(y, x, y + h, x + w) for h in sides for w in sides
          for y in range(0, SIZE - h + 1, 8) for x in range(0, SIZE - w + 1, 8)]
  grid = np.array(grid, np.float32)
  records, proposals, maps = [], {}, {}
  for i in range(num_images):
    label = i % 2
    y, x = rng.integers(0, 6, size=2) * 8
    box = np.array([[y, x, y + 24, x + 24]], np.float32)
    feature_map = np.zeros((SIZE // STRIDE, SIZE // STRIDE, CHANNELS), np.float32)
    feature_map[y // 8:y // 8 + 3, x // 8:x // 8 + 3, label] = 1.0
    feature_map[..., 2] = rng.uniform(0, 0.3, size=feature_map.shape[:2])
    feature_map[..., 3] = 0.5
    image_id = f'{name}{i:02d}'
    path = tmp_path / f'{image_id}.{"png" if real_images else "jpg"}'
    if real_images:
      pixels = rng.integers(90, 110, size=(SIZE, SIZE, 3)).astype(np.uint8)
      pixels[y:y + 24, x:x + 24] = (230, 20, 20) if label == 0 else (20, 20, 230)
      Image.fromarray(pixels).save(path)
    else:
      path.write_bytes(b'x')
    records.append(records_lib.make_record(image_id, str(path), SIZE, SIZE, box, [label]))
    proposals[image_id] = {'boxes': grid, 'scores': rng.uniform(size=len(grid)).astype(np.float32)}
    maps[image_id] = {'map': feature_map.astype(np.float16), 'factors': np.ones(4, np.float32),
                      'geometry': np.array([STRIDE, 0.0], np.float32)}
  # The toy map is cell-aligned (64 px, stride 8, offset 0): the mirrored image's map is the
  # map mirrored.
  mirrored = {i: dict(m, map=np.ascontiguousarray(m['map'][:, ::-1])) for i, m in maps.items()}
  files = [(r['image_id'], r['path']) for r in records]
  root = str(tmp_path / 'c')
  proposal_cache = cache_lib.ShardedCache(root, 'proposals', {'n': name}, files, 8)
  map_cache = cache_lib.ShardedCache(root, 'trunk_maps', {'n': name}, files, 4)
  mirrored_cache = cache_lib.ShardedCache(root, 'trunk_maps', {'n': name, 'm': 1}, files, 4)
  for cache, data in ((proposal_cache, proposals), (map_cache, maps), (mirrored_cache, mirrored)):
    for shard in range(cache.num_shards):
      cache.write_shard(shard, {i: data[i] for i in cache.shard_image_ids(shard)})
  return records, ['a', 'b'], bags_lib.TrunkMapBags(records, proposal_cache, map_cache,
                                                    pool_size=2, mirrored_maps=mirrored_cache)


def toy_source(tmp_path, mode='none', **kwargs):
  """`toy_maps` as the detector's `InputSource` (images for `top` / `all`: real PNGs)."""
  records, names, bags = toy_maps(tmp_path, real_images=mode in ('top', 'all'), **kwargs)
  image_settings = (None, None, STRIDE) if mode in ('top', 'all') else None
  return records, names, batches_lib.InputSource(bags, mode, image_settings=image_settings)


FAST = config_lib.DetectorConfig(hidden_units=32, epochs=60, deep_mil_epochs=0,
                                 rois_per_image=32, learning_rate=0.1, checkpoint_every=20,
                                 dropout=0.1, pool_size=2, pool_cut=False, test_flip=False,
                                 deep_mil_min_images=0)
QUIET = {'log': lambda m: None}


# --- box coding -------------------------------------------------------------------------------

def test_box_coding_hand_values_and_round_trip():
  roi = np.array([[0, 0, 10, 20]], np.float32)
  # Center moved by 1 px down and 2 px right (0.1 of the height and width), size doubled.
  target = np.array([[-4, -8, 16, 32]], np.float32)
  deltas = box_coding.encode(roi, np.array([[1, 2, 11, 22]], np.float32))
  np.testing.assert_allclose(deltas, [[0.1 / 0.1, 0.1 / 0.1, 0.0, 0.0]], atol=1e-6)
  deltas = box_coding.encode(roi, target)
  np.testing.assert_allclose(deltas, [[0.1 / 0.1, 0.1 / 0.1, np.log(2) / 0.2, np.log(2) / 0.2]],
                             atol=1e-6)
  np.testing.assert_allclose(box_coding.decode(roi, deltas), target, atol=1e-4)
  # One delta per class: [N, K, 4].
  per_class = box_coding.decode(roi, np.stack([deltas, np.zeros_like(deltas)], axis=1))
  assert per_class.shape == (1, 2, 4)
  np.testing.assert_allclose(per_class[0, 1], roi[0], atol=1e-5)


# --- RoI sampling -----------------------------------------------------------------------------

def test_sampling_follows_the_fast_rcnn_recipe():
  rng = np.random.default_rng(0)
  truth = np.array([[0, 0, 40, 40]], np.float32)
  shifts = np.arange(0, 60, 2, dtype=np.float32)
  proposals = np.stack([shifts * 0, shifts, shifts * 0 + 40, shifts + 40], axis=1)
  sample = sampling.sample_rois(proposals, truth, [3], 16, rng)
  iou = np.array([box_lib_iou(r, truth[0]) for r in sample['rois']])
  labels = sample['labels']
  assert len(labels) == 16
  assert (labels > 0).sum() == 4  # 25 % foreground.
  assert np.all(labels[labels > 0] == 4)  # Class 3 -> label 4 (0 is background).
  assert np.all(iou[labels > 0] >= 0.5) and np.all(iou[labels == 0] < 0.5)
  np.testing.assert_array_equal(sample['targets'][labels == 0], 0.0)
  fg = labels > 0
  np.testing.assert_allclose(box_coding.decode(sample['rois'][fg], sample['targets'][fg]),
                             np.repeat(truth, fg.sum(), 0), atol=1e-3)


def box_lib_iou(a, b):
  from click_supervision import boxes  # pylint: disable=g-import-not-at-top
  return boxes.pairwise_iou(a[None], b[None])[0, 0]


def test_sampling_tops_background_up_below_the_low_threshold_and_handles_no_boxes():
  rng = np.random.default_rng(0)
  truth = np.array([[0, 0, 10, 10]], np.float32)
  far = np.array([[50, 50, 60, 60], [70, 70, 80, 80]], np.float32)  # IoU 0 with the truth.
  sample = sampling.sample_rois(far, truth, [0], 8, rng)
  # The truth itself is foreground; both far boxes fill the background although IoU < 0.1.
  assert sorted(sample['labels'].tolist()) == [0, 0, 1]
  empty = sampling.sample_rois(far, np.zeros((0, 4)), [], 8, rng)
  assert empty['labels'].tolist() == [0, 0]


# --- the model --------------------------------------------------------------------------------

def test_model_round_trips_through_get_config_with_and_without_trunk(tmp_path):
  trunk = helpers.tiny_trunk(stride=4, channels=5)
  model = fast_rcnn.FastRcnn(3, 4, 0.0, pool_size=2, hidden_units=8, trunk=trunk)
  inputs = {'images': tf.random.uniform([1, 32, 32, 3], 0, 255, seed=1),
            'boxes': tf.constant([[0, 0, 16, 16], [4, 8, 28, 30]], tf.float32),
            'box_indices': tf.zeros([2], tf.int32)}
  out = model(inputs)
  assert out['class_logits'].shape == (2, 4) and out['box_deltas'].shape == (2, 3, 4)
  path = str(tmp_path / 'm.keras')
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert loaded.trunk.feature_stride == 4
  np.testing.assert_allclose(loaded(inputs)['class_logits'], out['class_logits'], atol=1e-6)
  head = head_lib.FastRcnnHead(3, hidden_units=8, dropout=0.25)
  assert head_lib.FastRcnnHead.from_config(head.get_config()).get_config() == head.get_config()
  bare = fast_rcnn.FastRcnn.from_config(
      dict(model.get_config(), trunk=None))
  assert bare.trunk is None and bare.get_config()['pool_size'] == 2


def test_head_on_cached_map_features_equals_the_model_on_the_image():
  """--detector_finetune=none trains the head on rows pooled from trunk maps; the full model
  pools inside. The two must see the same numbers."""
  trunk = helpers.tiny_trunk(stride=4, channels=5)
  model = fast_rcnn.FastRcnn(2, 4, 0.0, pool_size=3, hidden_units=8, trunk=trunk)
  image = np.random.default_rng(0).uniform(0, 255, size=(1, 40, 48, 3)).astype(np.float32)
  boxes = np.array([[0, 0, 40, 48], [5, 6, 30, 20]], np.float32)
  direct = model({'images': tf.constant(image), 'boxes': tf.constant(boxes),
                  'box_indices': tf.zeros([2], tf.int32)})
  feature_map = trunk(tf.constant(image)).numpy()[0]
  rows = bags_lib.l2_normalize(features_lib.MapPooler(4, 0.0, pool_size=3)(feature_map, boxes))
  from_rows = model.head(tf.constant(rows))
  np.testing.assert_allclose(from_rows['class_logits'], direct['class_logits'], atol=1e-5)
  np.testing.assert_allclose(from_rows['box_deltas'], direct['box_deltas'], atol=1e-5)


def test_the_cut_trunk_gives_the_same_outputs_from_images_cut_maps_and_cached_maps():
  """The three entry points of a cut trunk's detector (`fast_rcnn` module docstring): images
  (serving), cut maps (finetune upper) and cached maps of both levels (finetune none with
  pool_cut) see the same numbers."""
  trunk = helpers.tiny_cut_trunk()
  model = fast_rcnn.FastRcnn(2, 8, 2.0, pool_size=2, hidden_units=8, trunk=trunk, cut_stride=4,
                             cut_offset=0.0, pool_cut=True)
  image = tf.random.uniform([1, 48, 64, 3], 0, 255, seed=2)
  rois = {'boxes': tf.constant([[0, 0, 48, 64], [5, 6, 30, 20]], tf.float32),
          'box_indices': tf.zeros([2], tf.int32)}
  cut = trunk.get_layer('lower')(image)
  top = trunk.get_layer('upper')(cut)
  outs = [model(dict(rois, images=image)), model(dict(rois, cut_maps=cut)),
          model(dict(rois, feature_maps=top, cut_maps=cut))]
  for out in outs[1:]:
    np.testing.assert_allclose(out['class_logits'], outs[0]['class_logits'], atol=1e-5)
    np.testing.assert_allclose(out['box_deltas'], outs[0]['box_deltas'], atol=1e-5)
  # Each level is normalised on its own: both halves of the head's input have unit norm.
  features = model.roi_features(dict(rois, images=image)).numpy()
  assert features.shape == (2, 2 * 2 * (4 + 3))
  np.testing.assert_allclose(np.linalg.norm(features[:, :16], axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(features[:, 16:], axis=1), 1.0, atol=1e-5)


def test_a_padded_batch_with_sizes_equals_each_image_alone():
  """Images of different sizes padded into one batch give, with `sizes`, what each gives alone
  (the trunk's zero padding at the border would otherwise see the batch padding)."""
  trunk = helpers.tiny_cut_trunk()
  model = fast_rcnn.FastRcnn(2, 8, 2.0, pool_size=2, hidden_units=8, trunk=trunk, cut_stride=4)
  small = tf.random.uniform([1, 32, 48, 3], 0, 255, seed=3)
  large = tf.random.uniform([1, 64, 64, 3], 0, 255, seed=4)
  boxes = tf.constant([[0, 0, 32, 48], [8, 8, 60, 60], [4, 4, 30, 40]], tf.float32)
  padded = tf.concat([tf.pad(small, [[0, 0], [0, 32], [0, 16], [0, 0]]), large], 0)
  model({'images': large, 'boxes': boxes, 'box_indices': tf.zeros([3], tf.int32)})  # Builds it.
  for key, pixels in (('images', padded), ('cut_maps', None)):
    batch = pixels if pixels is not None else trunk.get_layer('lower')(padded)
    together = model({key: batch, 'sizes': tf.constant([[32, 48], [64, 64]]),
                      'boxes': boxes, 'box_indices': tf.constant([0, 1, 0])})
    alone_small = model({key: small if key == 'images' else trunk.get_layer('lower')(small),
                         'boxes': tf.gather(boxes, [0, 2]), 'box_indices': tf.zeros([2], tf.int32)})
    alone_large = model({key: large if key == 'images' else trunk.get_layer('lower')(large),
                         'boxes': boxes[1:2], 'box_indices': tf.zeros([1], tf.int32)})
    expected = tf.concat([alone_small['class_logits'][:1], alone_large['class_logits'],
                          alone_small['class_logits'][1:]], 0)
    np.testing.assert_allclose(together['class_logits'], expected, atol=1e-5, err_msg=key)
    # Without `sizes` the small image's border sees the padding: a different number.
    unsized = model({key: batch, 'boxes': boxes, 'box_indices': tf.constant([0, 1, 0])})
    assert not np.allclose(unsized['class_logits'][0], expected[0], atol=1e-5), key


def test_the_cut_trunk_round_trips_and_trains_only_its_upper_part():
  trunk = helpers.tiny_cut_trunk()
  model = fast_rcnn.build_detector(
      2, dataclasses.replace(FAST, pool_cut=True), batches_lib.trunk_geometry(trunk),
      trunk=train_lib.copy_trunk(trunk))
  train_lib.set_trunk_trainable(model.trunk, 'upper')
  names = {v.path.split('/')[-2] for v in model.trunk.trainable_variables}
  assert names == {'u1'}, names  # Not the lower part's conv, nor BatchNorm.
  train_lib.set_trunk_trainable(model.trunk, 'all')
  assert {v.path.split('/')[-2] for v in model.trunk.trainable_variables} == {'l1', 'u1'}
  restored = fast_rcnn.FastRcnn.from_config(model.get_config())
  assert restored.is_cut and restored.pool_cut and restored.cut_stride == 4
  assert restored.trunk.cut_stride == 4 and restored.trunk.feature_stride == 8


# --- training and inference -------------------------------------------------------------------

def test_the_detector_learns_the_toy_objects(tmp_path):
  records, names, source = toy_source(tmp_path, num_images=16, seed=0)
  truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
  model = train_lib.train_detector(source, truth, len(names), FAST, str(tmp_path / 'det'),
                                   **QUIET)
  test_records, _, test_source = toy_source(tmp_path, num_images=12, seed=1, name='test')
  detections = inference.detect_all(model, test_source, FAST)
  result = evaluation.voc_ap(detections, test_records, len(names))
  # Golden range: objects are plain in the maps; a head that learned nothing scores near 0.
  assert result['map'] > 0.8, result
  per_image = {}
  for d in detections:
    per_image[d['image_id']] = per_image.get(d['image_id'], 0) + 1
  assert max(per_image.values()) <= FAST.max_detections
  # The finished model is kept; a second call loads it instead of training again.
  again = train_lib.train_detector(source, truth, len(names), FAST, str(tmp_path / 'det'),
                                   **QUIET)
  np.testing.assert_array_equal(again.head.fc6.kernel.numpy(), model.head.fc6.kernel.numpy())


class Killed(Exception):
  pass


def test_a_killed_training_resumes_to_the_same_detections(tmp_path, monkeypatch):
  records, _, source = toy_source(tmp_path, num_images=8, seed=2)
  truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
  config = dataclasses.replace(FAST, epochs=10, checkpoint_every=15)  # 40 steps.
  whole = train_lib.train_detector(source, truth, 2, config, str(tmp_path / 'whole'), **QUIET)
  real_make_batch = batches_lib.make_batch

  def killed_at_step_35(source_, ids, boxes, config_, seed, step, **kwargs):
    if step == 35:
      raise Killed('killed')
    return real_make_batch(source_, ids, boxes, config_, seed, step, **kwargs)

  monkeypatch.setattr(batches_lib, 'make_batch', killed_at_step_35)
  # The input pipeline hands the error on when the step reaches that batch.
  with pytest.raises(Exception, match='killed'):
    train_lib.train_detector(source, truth, 2, config, str(tmp_path / 'resumed'), **QUIET)
  monkeypatch.setattr(batches_lib, 'make_batch', real_make_batch)
  messages = []
  resumed = train_lib.train_detector(source, truth, 2, config, str(tmp_path / 'resumed'),
                                     log=messages.append)
  assert any('resumed at step 30' in m for m in messages), messages
  a = inference.detect_all(whole, source, config)
  b = inference.detect_all(resumed, source, config)
  assert [d['score'] for d in a] == pytest.approx([d['score'] for d in b], abs=1e-6)


def test_other_training_boxes_retrain_from_scratch(tmp_path):
  records, _, source = toy_source(tmp_path, num_images=4, seed=3)
  config = dataclasses.replace(FAST, epochs=1)
  truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
  train_lib.train_detector(source, truth, 2, config, str(tmp_path / 'det'), **QUIET)
  moved = {i: (b + 8, l) for i, (b, l) in truth.items()}
  messages = []
  train_lib.train_detector(source, moved, 2, config, str(tmp_path / 'det'), log=messages.append)
  assert not any('trained model found' in m for m in messages)


def test_input_order_is_a_function_of_seed_and_step(tmp_path):
  _, _, bags = toy_maps(tmp_path, num_images=10, seed=4)
  epoch = batches_lib.epoch_image_order(bags, 0, 0)
  assert sorted(epoch) == sorted(bags.image_ids)
  assert epoch != batches_lib.epoch_image_order(bags, 0, 1)
  assert batches_lib.images_of_step(bags, 0, 6, 2) == batches_lib.epoch_image_order(bags, 0, 1)[2:4]


def test_the_tf_data_input_gives_make_batch_batches_in_step_order(tmp_path):
  records, _, source = toy_source(tmp_path, num_images=6, seed=4)
  truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
  config = dataclasses.replace(FAST, flip=True, ignore_rule='score')

  def make_element(step, replica):
    ids = batches_lib.images_of_step(source.bags, config.seed, step, 2)
    return batches_lib.make_batch(source, ids, truth, config, config.seed, step, num_classes=2)

  # A resumed run starts its pipeline at its checkpoint's step: steps 3..6 here.
  dataset = pipeline.make_training_dataset(make_element, 3, 7)
  elements = list(dataset)
  assert [int(e['step']) for e in elements] == [3, 4, 5, 6]
  for element in elements:
    expected = make_element(int(element['step']), 0)
    assert set(element) == set(expected) | {'step'}
    for key, value in expected.items():
      np.testing.assert_array_equal(element[key].numpy(), value, err_msg=key)
  first = elements[0]
  assert first['feature_maps'].shape[0] == 2 and first['feature_maps'].dtype == tf.float16
  assert first['boxes'].shape == (2 * config.rois_per_image, 4)
  assert first['other_classes'].shape == (2 * config.rois_per_image, 2)
  np.testing.assert_array_equal(first['sizes'].numpy(), [[SIZE, SIZE]] * 2)


def test_training_boxes_from_ground_truth_one_per_class_or_all():
  record = records_lib.make_record(
      'a', 'a.jpg', 100, 100,
      np.array([[0, 0, 10, 10], [0, 0, 50, 50], [0, 0, 90, 90], [5, 5, 20, 20]], np.float32),
      [0, 0, 0, 1], difficult=[False, False, True, False])
  boxes, labels = batches_lib.training_boxes_from_ground_truth([record], 'boxes')['a']
  # Class 0: the largest non-difficult box (the difficult 90 x 90 one is not used).
  np.testing.assert_array_equal(boxes, [[0, 0, 50, 50], [5, 5, 20, 20]])
  assert labels.tolist() == [0, 1]
  boxes, labels = batches_lib.training_boxes_from_ground_truth([record], 'boxes_all')['a']
  assert len(boxes) == 3 and labels.tolist() == [0, 0, 1]


def test_learning_rate_schedules():
  step = train_lib.LearningRate(0.1, 100, 'step', 0.75)
  assert [round(float(step(s)), 6) for s in (0, 75, 76, 99)] == [0.1, 0.1, 0.01, 0.01]
  cosine = train_lib.LearningRate(0.1, 100, 'cosine', warmup_steps=10)
  assert float(cosine(0)) == pytest.approx(0.1 * 0.1 * 1.0)  # Warm-up: 1/10 of the rate.
  assert float(cosine(50)) == pytest.approx(0.05, abs=1e-6)
  assert float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
  restored = train_lib.LearningRate(**cosine.get_config())
  assert float(restored(37)) == float(cosine(37))


# --- the ignore rule ----------------------------------------------------------------------------

def test_other_instance_candidates_hand_values():
  boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)  # Class 0, class 2.
  rois = np.array([[0, 0, 10, 10],      # Class 0's box itself: all inside it.
                   [50, 50, 60, 60],    # Outside both: could be either class.
                   [0, 0, 10, 30],      # A third inside class 0's box; outside class 2's.
                   [2, 2, 8, 8],        # A part of class 0's object: inside its box.
                   [21, 21, 41, 41]],   # Class 2's box shifted: 90 % inside it.
                  np.float32)
  out = sampling.other_instance_candidates(rois, boxes, [0, 2], 3, max_overlap=0.5)
  np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 1], [1, 0, 1], [0, 0, 1], [1, 0, 0]])
  assert sampling.other_instance_candidates(rois, np.zeros((0, 4)), [], 3).sum() == 0


def test_the_ignore_rule_drops_confident_background_rois_of_present_classes():
  """A background RoI that could be another instance of class 0 and that the detector scores
  above the threshold for class 0 has no classification loss; one it scores low keeps it."""
  config = dataclasses.replace(FAST, ignore_rule='score', ignore_score=0.5, dropout=0.0,
                               weight_decay=0.0)
  model = fast_rcnn.build_detector(2, config, {'stride': 8, 'offset': 0.0, 'channels': 4})
  kernel, bias = model.head.classifier.get_weights()
  model.head.classifier.set_weights([np.zeros_like(kernel), np.array([0, 5, 0], np.float32)])
  optimizer = keras.optimizers.SGD(0.0)
  optimizer.build(model.trainable_variables)
  strategy = tf.distribute.get_strategy()
  step = train_lib.make_train_step(model, optimizer, strategy, config)
  batch = {'feature_maps': tf.ones([1, 4, 4, 4], tf.float16), 'sizes': tf.constant([[32, 32]]),
           'boxes': tf.constant([[0, 0, 16, 16]] * 4, tf.float32),
           'box_indices': tf.zeros([4], tf.int32), 'labels': tf.constant([1, 0, 0, 0]),
           'targets': tf.zeros([4, 4]), 'valid': tf.constant([1, 1, 1, 0], tf.float32),
           'other_classes': tf.constant([[1, 0], [1, 0], [0, 1], [1, 0]], tf.float32),
           'step': tf.constant(0, tf.int64)}
  metrics = step(batch)
  # p(class 0) = e^5 / (e^5 + 2) > 0.5 everywhere. Row 0 is foreground, row 1 a candidate of
  # class 0 (ignored), row 2 a candidate of class 1 only (p 0.013: kept), row 3 padding.
  assert float(metrics['ignored']) == pytest.approx(1 / 3)
  p_background = 1 / (np.exp(5) + 2)
  p_class0 = np.exp(5) / (np.exp(5) + 2)
  expected = (-np.log(p_class0) - np.log(p_background)) / 3
  assert float(metrics['class_loss']) == pytest.approx(expected, rel=1e-4)


def test_detections_file_format(tmp_path):
  path = tmp_path / 'detections.jsonl'
  inference.write_detections(path, [
      {'image_id': 'b', 'label': 1, 'box': [1, 2, 3, 4], 'score': 0.5},
      {'image_id': 'a', 'label': 0, 'box': [0.123, 2, 3, 4], 'score': 0.25},
      {'image_id': 'a', 'label': 1, 'box': [0, 2, 3, 4], 'score': 0.75}], ['cat', 'dog'])
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert [(r['image_id'], r['class'], r['score']) for r in rows] == [
      ('a', 'dog', 0.75), ('a', 'cat', 0.25), ('b', 'dog', 0.5)]
  assert rows[1]['box'] == [0.12, 2.0, 3.0, 4.0]


# --- deep MIL ---------------------------------------------------------------------------------

def test_deep_mil_corrects_wrong_localisations_and_resumes(tmp_path):
  # Object-sized proposals only: A alone (no objectness, no cues) cannot tell a whole object
  # from a part of it, which the other tests' smaller proposals would be.
  records, names, bags = toy_maps(tmp_path, num_images=24, seed=5, sides=(24,))
  source = batches_lib.InputSource(bags)
  # Start: two thirds of the pairs localised on their object, one third on a patch of
  # background. The detector trained on these learns the objects from the majority and, as A,
  # moves the wrong third onto their objects.
  mil_config = mil.MilConfig(cues=('appearance',))
  start = {}
  for n, r in enumerate(records):
    box = r['gt_boxes'][0].copy()
    if n % 3 == 0:
      y, x = (0, 40) if box[1] >= 32 else (40, 40)
      box = np.array([y, x if box[0] < 32 or box[1] < 32 else 0, y + 16,
                      (x if box[0] < 32 or box[1] < 32 else 0) + 16], np.float32)
    start[(r['image_id'], int(r['gt_labels'][0]))] = {
        'box': box, 'index': -1, 'score': 0.0, 'iteration': 5, 'split': False}
  config = dataclasses.replace(FAST, deep_mil_iterations=2)
  result = deep_mil.run_deep_mil(records, names, bags, source, {}, start, mil_config, config,
                                 str(tmp_path / 'run'), folds=2, **QUIET)
  first = result['corloc_deep_mil_per_iteration'][0]
  assert first < 0.75
  assert result['corloc_deep_mil'] >= 0.9, result['corloc_deep_mil_per_iteration']
  assert len(result['changes_per_iteration_deep_mil']) == 2
  saved = localizations.read_localizations(
      str(tmp_path / 'run' / 'deep_mil' / 'iteration_2.jsonl'), names)
  assert set(saved) == set(start)
  messages = []
  again = deep_mil.run_deep_mil(records, names, bags, source, {}, start, mil_config, config,
                                str(tmp_path / 'run'), folds=2, log=messages.append)
  assert sum('read from' in m for m in messages) == 2
  assert again['corloc_deep_mil'] == result['corloc_deep_mil']


def test_deep_mil_on_too_few_images_keeps_the_svm_localisations(tmp_path):
  # 24 images in 2 folds: each detector would train on 12, fewer than asked for. Deep MIL then
  # trains nothing and returns MIL's localisations: on small sets its detectors are worse
  # appearance models than the SVMs (BUILD_NOTES, "Deep MIL against SVM MIL by data size").
  records, names, bags = toy_maps(tmp_path, num_images=24, seed=5, sides=(24,))
  start = {(r['image_id'], int(r['gt_labels'][0])): {
      'box': r['gt_boxes'][0] + np.float32([0, 0, -4, -4]), 'index': -1, 'score': 0.0,
      'iteration': 5, 'split': False} for r in records}
  config = dataclasses.replace(FAST, deep_mil_iterations=2, deep_mil_min_images=13)
  messages = []
  result = deep_mil.run_deep_mil(records, names, bags, batches_lib.InputSource(bags), {}, start,
                                 mil.MilConfig(cues=('appearance',)), config,
                                 str(tmp_path / 'run'), folds=2, log=messages.append)
  assert 'train on 12 images, fewer than --deep_mil_min_images=13' in result['deep_mil_skipped']
  assert any('SVM MIL\'s localisations are kept' in m for m in messages), messages
  assert result['corloc_deep_mil_per_iteration'] == [result['corloc_deep_mil']]
  assert result['changes_per_iteration_deep_mil'] == []
  for pair, selection in result['selections'].items():
    np.testing.assert_array_equal(selection['box'], start[pair]['box'])
  assert not os.listdir(tmp_path / 'run' / 'deep_mil')  # No detector trained.
  # At the threshold it runs.
  enough = dataclasses.replace(config, deep_mil_min_images=12, deep_mil_iterations=1)
  result = deep_mil.run_deep_mil(records, names, bags, batches_lib.InputSource(bags), {}, start,
                                 mil.MilConfig(cues=('appearance',)), enough,
                                 str(tmp_path / 'run'), folds=2, **QUIET)
  assert 'deep_mil_skipped' not in result and len(result['changes_per_iteration_deep_mil']) == 1


def test_detector_config_rejects_bad_values():
  with pytest.raises(ValueError, match='supervision'):
    config_lib.DetectorConfig(supervision='points')
  with pytest.raises(ValueError, match='background_iou_low'):
    config_lib.DetectorConfig(background_iou_low=0.6)
  with pytest.raises(ValueError, match='deep_mil_folds'):
    config_lib.DetectorConfig(deep_mil_folds=0)
  with pytest.raises(ValueError, match='ignore_rule'):
    config_lib.DetectorConfig(ignore_rule='maybe')
  with pytest.raises(ValueError, match='lr_schedule'):
    config_lib.DetectorConfig(lr_schedule='linear')


def test_scorer_gives_class_probabilities_and_refined_boxes(tmp_path):
  from click_supervision.detector import scorer as scorer_lib  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import serving  # pylint: disable=g-import-not-at-top
  _, _, source = toy_source(tmp_path, num_images=2, seed=7)
  model = fast_rcnn.build_detector(2, dataclasses.replace(FAST, seed=1), source.geometry())
  # Box regression that always says "twice as tall, centre 1/10 of the height lower", class 1.
  kernel, bias = model.head.box_regressor.get_weights()
  bias = np.zeros_like(bias)
  bias[4:8] = [0.1 / 0.1, 0.0, np.log(2) / 0.2, 0.0]
  model.head.box_regressor.set_weights([np.zeros_like(kernel), bias])
  image_id = source.image_ids[0]
  boxes = np.array([[10, 10, 30, 20], [0, 0, 64, 64]], np.float32)
  bag = bags_lib.Bag(image_id, boxes, np.ones(2, np.float32), np.zeros((2, 1), np.float32))
  scorer = scorer_lib.DetectorScorer([model], source)
  scores = scorer.scores(bag, 0, [1, 0])
  inputs, factors, _ = inference.model_inputs(source, image_id)
  probabilities, _ = serving.model_outputs(model, inputs, boxes, factors)
  np.testing.assert_allclose(scores, probabilities.numpy()[:, [2, 1]], atol=1e-6)
  # Height 20 -> 40 about a centre moved from 20 to 22; clipped to the 64 px image.
  np.testing.assert_allclose(scorer.refined_box(bag, 0, 1, 0, 64, 64), [2, 10, 42, 20],
                             atol=1e-4)
  np.testing.assert_allclose(scorer.refined_box(bag, 0, 0, 0, 64, 64), boxes[0], atol=1e-4)
  np.testing.assert_allclose(scorer.refined_box(bag, 0, 1, 1, 64, 64), [0, 0, 64, 64],
                             atol=1e-4)


def test_mirrored_boxes_and_flipped_training(tmp_path):
  np.testing.assert_array_equal(bags_lib.mirror_boxes([[1, 2, 3, 10]], 64), [[1, 54, 3, 62]])
  records, names, source = toy_source(tmp_path, num_images=16, seed=0)
  image_id = records[0]['image_id']
  np.testing.assert_array_equal(source.proposals(image_id, mirrored=True)[0],
                                bags_lib.mirror_boxes(source.proposals(image_id)[0], SIZE))
  np.testing.assert_array_equal(source.inputs(image_id, mirrored=True)['feature_maps'],
                                source.inputs(image_id)['feature_maps'][:, ::-1])
  truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
  config = dataclasses.replace(FAST, flip=True)
  model = train_lib.train_detector(source, truth, len(names), config, str(tmp_path / 'det'),
                                   **QUIET)
  test_records, _, test_source = toy_source(tmp_path, num_images=12, seed=1, name='test')
  detections = inference.detect_all(model, test_source, config)
  assert evaluation.voc_ap(detections, test_records, len(names))['map'] > 0.8


def test_trainable_trunk_layers_and_fine_tuning_its_own_trunk(tmp_path):
  inputs = keras.Input([None, None, 3])
  x = keras.layers.Conv2D(4, 3, padding='same', name='c1')(inputs)
  x = keras.layers.BatchNormalization(name='bn')(x)
  x = keras.layers.Conv2D(4, 3, padding='same', name='c2')(x)
  x = keras.layers.Conv2D(4, 8, strides=8, padding='same', name='c3')(x)
  trunk = keras.Model(inputs, x)
  trunk.feature_stride, trunk.feature_offset, trunk.feature_channels = 8, 0.0, 4
  train_lib.set_trunk_trainable(trunk, 'top')
  assert [l.name for l in trunk.layers if l.trainable] == ['c3']  # The last third of 3.
  train_lib.set_trunk_trainable(trunk, 'all')
  assert [l.name for l in trunk.layers if l.trainable] == ['c1', 'c2', 'c3']  # Never BN.

  records, _, source = toy_source(tmp_path, mode='all', num_images=8, seed=6)
  truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
  before = [w.copy() for w in trunk.get_weights()]
  config = dataclasses.replace(FAST, finetune='all', epochs=2)
  model = train_lib.train_detector(source, truth, 2, config, str(tmp_path / 'det'), trunk=trunk,
                                   **QUIET)
  # The given trunk is left as it was; the detector's own copy was trained.
  assert all(np.array_equal(a, b) for a, b in zip(before, trunk.get_weights()))
  assert not np.array_equal(model.trunk.get_layer('c1').kernel.numpy(), before[0])
  # Inference runs the detector's own trunk on the image files.
  detections = inference.detect_all(model, source, config)
  assert detections and {d['image_id'] for d in detections} <= {r['image_id'] for r in records}
  loaded = train_lib.load_detector(str(tmp_path / 'det'))
  np.testing.assert_array_equal(loaded.trunk.get_layer('c1').kernel.numpy(),
                                model.trunk.get_layer('c1').kernel.numpy())


def test_the_trunk_learns_at_its_own_rate(tmp_path):
  records, _, source = toy_source(tmp_path, mode='all', num_images=4, seed=6)
  truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
  keras.utils.set_random_seed(1)
  inputs = keras.Input([None, None, 3])
  trunk = keras.Model(inputs, keras.layers.Conv2D(4, 8, strides=8, padding='same', name='c')(inputs))
  trunk.feature_stride, trunk.feature_offset, trunk.feature_channels = 8, 0.0, 4
  before = trunk.get_layer('c').kernel.numpy().copy()
  moved = {}
  for factor in (0.0, 1.0):
    config = dataclasses.replace(FAST, finetune='all', epochs=1, weight_decay=0.0,
                                 trunk_learning_rate_factor=factor)
    model = train_lib.train_detector(source, truth, 2, config, str(tmp_path / f'det{factor}'),
                                     trunk=trunk, **QUIET)
    moved[factor] = np.abs(model.trunk.get_layer('c').kernel.numpy() - before).max()
  assert moved[0.0] == 0.0 and moved[1.0] > 1e-4


def test_upper_mode_trains_on_cached_cut_maps(tmp_path):
  """`finetune=upper`: the cut maps come from their cache, the upper part trains, the lower
  part stays as it was, and the test runs the same way."""
  records, names, bags = toy_maps(tmp_path, num_images=8, seed=8, real_images=True)
  trunk = helpers.tiny_cut_trunk()
  lower = trunk.get_layer('lower')
  files = [(r['image_id'], r['path']) for r in records]
  cut_cache = cache_lib.ShardedCache(str(tmp_path / 'c'), 'trunk_maps', {'part': 'lower'},
                                     files, 4)
  for shard in range(cut_cache.num_shards):
    entries = {}
    for image_id in cut_cache.shard_image_ids(shard):
      pixels = np.asarray(Image.open(bags.path(image_id)), np.float32)[None]
      entries[image_id] = {'map': lower(pixels).numpy()[0].astype(np.float16),
                           'factors': np.ones(4, np.float32),
                           'geometry': np.array([4, 0.0], np.float32)}
    cut_cache.write_shard(shard, entries)
  bags.cut_maps = cut_cache
  source = batches_lib.InputSource(bags, 'upper')
  truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
  config = dataclasses.replace(FAST, finetune='upper', epochs=2, trunk_learning_rate_factor=1.0)
  model = train_lib.train_detector(source, truth, 2, config, str(tmp_path / 'det'), trunk=trunk,
                                   **QUIET)
  np.testing.assert_array_equal(model.part('lower').get_layer('l1').kernel.numpy(),
                                lower.get_layer('l1').kernel.numpy())
  assert not np.array_equal(model.part('upper').get_layer('u1').kernel.numpy(),
                            trunk.get_layer('upper').get_layer('u1').kernel.numpy())
  from_cut = inference.detect_all(model, source, config)
  from_images = inference.detect_all(
      model, batches_lib.InputSource(bags, 'all', image_settings=(None, None, 8)), config)
  assert [d['score'] for d in from_cut] == pytest.approx([d['score'] for d in from_images],
                                                          abs=1e-3)


def test_test_views_and_train_scales(tmp_path):
  """Test-time flips average the plain and mirrored views (the toy learns as well); training
  scales draw one cached scale per image and step."""
  records, names, source = toy_source(tmp_path, num_images=16, seed=0)
  truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
  model = train_lib.train_detector(source, truth, len(names), FAST, str(tmp_path / 'det'),
                                   **QUIET)
  test_records, _, test_source = toy_source(tmp_path, num_images=12, seed=1, name='test')
  flipped = dataclasses.replace(FAST, test_flip=True)
  assert inference.test_views(flipped) == [(None, False), (None, True)]
  detections = inference.detect_all(model, test_source, flipped)
  assert evaluation.voc_ap(detections, test_records, len(names))['map'] > 0.8
  # A second scale: the toy images prepared at half size (maps pooled 2 x 2, factors 0.5).
  files = [(r['image_id'], r['path']) for r in records]
  half = cache_lib.ShardedCache(str(tmp_path / 'c'), 'trunk_maps', {'half': 1}, files, 4)
  for shard in range(half.num_shards):
    entries = {}
    for image_id in half.shard_image_ids(shard):
      full = source.inputs(image_id)['feature_maps'].astype(np.float32)
      pooled = full.reshape(4, 2, 4, 2, CHANNELS).mean(axis=(1, 3))
      entries[image_id] = {'map': pooled.astype(np.float16),
                           'factors': np.full(4, 0.5, np.float32),
                           'geometry': np.array([STRIDE, 0.0], np.float32)}
    half.write_shard(shard, entries)
  scaled = batches_lib.InputSource(
      source.bags, scales={32: bags_lib.TrunkMapBags(records, source.bags.proposals, half)},
      base_scale=64)
  config = dataclasses.replace(FAST, train_scales=(64, 32))
  sizes = set()
  for step in range(6):
    ids = batches_lib.images_of_step(scaled.bags, 0, step, 2)
    batch = batches_lib.make_batch(scaled, ids, truth, config, 0, step)
    for size, boxes in zip(batch['sizes'], np.split(batch['boxes'], 2)):
      sizes.add(int(size[0]))
      assert boxes.max() <= size[0] + 1e-3  # RoIs in the prepared image's pixels.
  assert sizes == {32, 64}
