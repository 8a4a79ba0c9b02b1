"""The test-time recipe written once in TensorFlow (`detector.serving`, `box_coding.decode`,
`features.prepare_image_tf`): hand values, and the same numbers eagerly and inside a
`tf.function` (the SavedModel's graph)."""

import numpy as np
import pytest
import tensorflow as tf

from click_supervision import features as features_lib
from click_supervision.detector import box_coding
from click_supervision.detector import serving


def fixed_outputs():
  """Three proposals, two classes: class 0 scores 0.9 / 0.7 / 0.5, class 1 0.4 everywhere;
  zero deltas (the class boxes are the proposals)."""
  proposals = np.array([[0, 0, 10, 10], [0, 1, 10, 11], [20, 20, 30, 30]], np.float32)
  probabilities = np.zeros((3, 3), np.float32)
  probabilities[:, 1] = [0.9, 0.7, 0.5]
  probabilities[:, 2] = 0.4
  probabilities[:, 0] = 1 - probabilities[:, 1] - probabilities[:, 2]
  return probabilities, np.zeros((3, 2, 4), np.float32), proposals


def detect(probabilities, deltas, proposals, *args):
  return serving.detections(probabilities, box_coding.decode(proposals, deltas), *args)


def test_per_class_nms_the_cap_and_the_order():
  probabilities, deltas, proposals = fixed_outputs()
  found = detect(probabilities, deltas, proposals, 40, 40, 1e-3, 0.3, 3)
  # Per class the near-duplicate (IoU 0.82) of the best box is suppressed: 2 + 2 boxes, cap 3.
  assert found['classes'].numpy().tolist() == [0, 0, 1]
  np.testing.assert_allclose(found['scores'], [0.9, 0.5, 0.4], atol=1e-6)
  np.testing.assert_array_equal(found['boxes'][1], proposals[2])
  # A threshold above class 1's score leaves class 0's two boxes.
  found = detect(probabilities, deltas, proposals, 40, 40, 0.45, 0.3, 100)
  assert found['classes'].numpy().tolist() == [0, 0]


def test_class_boxes_are_decoded_and_clipped_and_empty_ones_dropped():
  probabilities, deltas, proposals = fixed_outputs()
  deltas[0, 0] = [1.0, 0.0, 0.0, 0.0]  # Class 0 of proposal 0: 0.1 of its height down.
  deltas[2, :] = [0.0, 0.0, 0.0, 0.0]
  # The image ends at x = 20: proposal 2 (x from 20 to 30) is clipped to nothing.
  found = detect(probabilities, deltas, proposals, 40, 20, 1e-3, 0.3, 100)
  boxes = found['boxes'].numpy()
  np.testing.assert_allclose(boxes[0], [1, 0, 11, 10], atol=1e-5)
  assert np.all(boxes[:, 3] <= 20) and np.all(boxes[:, 3] > boxes[:, 1])
  assert not any(np.allclose(b, [20, 20, 30, 20]) for b in boxes)


def test_the_recipe_is_the_same_eagerly_and_inside_a_tf_function():
  rng = np.random.default_rng(0)
  corners = rng.uniform(0, 60, size=(50, 2))
  proposals = np.concatenate([corners, corners + rng.uniform(5, 40, size=(50, 2))], 1)
  proposals = proposals.astype(np.float32)
  logits = rng.normal(size=(50, 4)).astype(np.float32)
  probabilities = tf.nn.softmax(logits).numpy()
  deltas = rng.normal(scale=0.5, size=(50, 3, 4)).astype(np.float32)
  boxes = box_coding.decode(proposals, deltas)
  eager = serving.detections(probabilities, boxes, 90, 100, 0.01, 0.3, 20)
  graph = tf.function(serving.detections)(probabilities, boxes, 90, 100, 0.01, 0.3, 20)
  for key in ('boxes', 'classes', 'scores'):
    np.testing.assert_allclose(graph[key].numpy(), eager[key].numpy(), rtol=1e-6, err_msg=key)
  decoded = box_coding.decode(proposals, deltas)
  np.testing.assert_allclose(tf.function(box_coding.decode)(proposals, deltas), decoded,
                             rtol=1e-6)
  # decode inverts encode.
  targets = proposals + 3.0
  np.testing.assert_allclose(box_coding.decode(proposals, box_coding.encode(proposals, targets)),
                             targets, atol=1e-3)


@pytest.mark.parametrize('size,short_side,max_long_side', [
    ((37, 53), 600, 1000),    # upscaled, odd sizes
    ((500, 375), 600, 1000),  # VOC-like portrait, upscaled
    ((90, 400), 600, 1000),   # capped by the long side
    ((333, 250), 200, 0),     # downscaled (antialiased), no cap
    ((48, 64), None, None),   # native size: padding only
])
def test_image_preparation_is_the_same_in_the_served_graph(size, short_side, max_long_side):
  rng = np.random.default_rng(sum(size))
  image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
  expected, expected_factors = features_lib.prepare_image(image, short_side, max_long_side, 16)
  prepare = tf.function(lambda x: features_lib.prepare_image_tf(x, short_side, max_long_side, 16),
                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  pixels, factors = prepare(tf.constant(image))
  assert pixels.shape == expected.shape and pixels.shape[1] % 16 == 0
  np.testing.assert_allclose(pixels.numpy(), expected.numpy(), atol=1e-3)
  np.testing.assert_array_equal(factors.numpy(), expected_factors)


def test_mirroring_boxes_is_its_own_inverse():
  boxes = tf.constant([[1, 2, 3, 10], [0, 0, 5, 64]], tf.float32)
  np.testing.assert_array_equal(serving.mirror_boxes(boxes, 64), [[1, 54, 3, 62], [0, 0, 5, 64]])
  np.testing.assert_array_equal(serving.mirror_boxes(serving.mirror_boxes(boxes, 64), 64), boxes)


def test_views_average_probabilities_and_boxes_mirrored_back():
  """The mirrored view scores the mirrored proposals on the mirrored image; its class boxes come
  back to the plain image and are averaged with the plain view's."""
  from tests import helpers  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import fast_rcnn  # pylint: disable=g-import-not-at-top
  model = fast_rcnn.FastRcnn(2, 4, 0.0, pool_size=2, hidden_units=8,
                             trunk=helpers.tiny_trunk(stride=4, channels=5))
  image = tf.random.uniform([1, 32, 48, 3], 0, 255, seed=5)
  mirrored = tf.reverse(image, [2])
  proposals = tf.constant([[2, 3, 20, 30], [0, 10, 32, 44]], tf.float32)
  ones = tf.ones([4])
  plain = serving.model_outputs(model, {'images': image}, proposals, ones)
  flipped = serving.model_outputs(model, {'images': mirrored},
                                  serving.mirror_boxes(proposals, 48), ones)
  probabilities, boxes = serving.view_outputs(
      model, [({'images': image}, ones, False), ({'images': mirrored}, ones, True)], proposals, 48)
  np.testing.assert_allclose(probabilities, (plain[0] + flipped[0]) / 2, atol=1e-6)
  flipped_boxes = serving.mirror_boxes(
      box_coding.decode(serving.mirror_boxes(proposals, 48), flipped[1]), 48)
  np.testing.assert_allclose(
      boxes, (box_coding.decode(proposals, plain[1]) + flipped_boxes) / 2, atol=1e-4)
  # One view is the model's own output.
  single = serving.view_outputs(model, [({'images': image}, ones, False)], proposals, 48)
  np.testing.assert_allclose(single[0], plain[0], atol=1e-6)
