"""The test-time recipe, written once in TensorFlow: model outputs -> decoded class boxes ->
per-class NMS, plus the model call on one image's input.

Fast R-CNN's test: every proposal is scored by the (C+1)-way softmax and moved by its class's box
deltas; the class boxes are clipped to the image; per class, boxes scoring below
`score_threshold` are dropped and the rest go through NMS at `nms_iou`; the `max_detections` best
over all classes are kept (`tf.image.combined_non_max_suppression` does the last three).

Test-time augmentation: an image can be seen in several *views* (other scales, the mirrored
image, `DetectorConfig.test_scales` / `test_flip`); each view scores the same proposals (mirrored
for a mirrored view), and the class probabilities and the decoded class boxes (mirrored back)
are averaged over the views before NMS.

In-process detection (`detector.inference`), deep MIL's scoring (`detector.scorer`) and the
SavedModel's `serve` (`export`) all call these functions; each works eagerly and inside a
`tf.function`. Image preparation is `features.prepare_image_tf`, the same ops the caches used.
"""

import tensorflow as tf

from click_supervision.detector import box_coding


def model_outputs(model, inputs, proposals, factors):
  """The head's outputs for one image's proposals.

  Args:
    model: `detector.FastRcnn`.
    inputs: dict with the model's per-image input, each with a batch axis of 1 (`images`
      float32 [1, H, W, 3] from `prepare_image_tf`, or cached `feature_maps` / `cut_maps`).
    proposals: float32 [P, 4] pixels of the original image.
    factors: float32 [4], original pixels -> prepared pixels.
  Returns:
    (class probabilities float32 [P, C + 1], box deltas float32 [P, C, 4]).
  """
  proposals = tf.convert_to_tensor(proposals, tf.float32)
  model_inputs = dict(inputs, boxes=proposals * tf.cast(factors, tf.float32),
                      box_indices=tf.zeros(tf.shape(proposals)[:1], tf.int32))
  out = model(model_inputs, training=False)
  return tf.nn.softmax(out['class_logits']), out['box_deltas']


def mirror_boxes(boxes, width):
  """Boxes float [..., 4] of an image `width` px wide in the mirrored image (x -> width - x);
  the inverse of itself."""
  width = tf.cast(width, tf.float32)
  return tf.stack([boxes[..., 0], width - boxes[..., 3], boxes[..., 2], width - boxes[..., 1]],
                  axis=-1)


def view_outputs(model, views, proposals, width):
  """Class probabilities and class boxes of the proposals, averaged over an image's views.

  Args:
    model: `detector.FastRcnn`.
    views: list of (inputs, factors, mirrored): the model input of the image prepared one way
      (`model_outputs`), its pixel factors, and whether that image is the mirrored one.
    proposals: float32 [P, 4] pixels of the (unmirrored) image.
    width: the image width in pixels.
  Returns:
    (probabilities float32 [P, C + 1], class boxes float32 [P, C, 4] pixels).
  """
  proposals = tf.convert_to_tensor(proposals, tf.float32)
  probabilities, boxes = [], []
  for inputs, factors, mirrored in views:
    seen = mirror_boxes(proposals, width) if mirrored else proposals
    p, deltas = model_outputs(model, inputs, seen, factors)
    decoded = box_coding.decode(seen, deltas)
    probabilities.append(p)
    boxes.append(mirror_boxes(decoded, width) if mirrored else decoded)
  if len(views) == 1:
    return probabilities[0], boxes[0]
  return tf.add_n(probabilities) / len(views), tf.add_n(boxes) / len(views)


def detections(probabilities, boxes, height, width, score_threshold, nms_iou, max_detections):
  """Detections of one image from the head's outputs.

  Args:
    probabilities: float32 [P, C + 1] class probabilities (0 = background).
    boxes: float32 [P, C, 4] class-specific boxes in pixels (the proposals decoded with their
      deltas: `box_coding.decode`, or `view_outputs`).
    height, width: the image size in pixels (class boxes are clipped to it).
    score_threshold, nms_iou, max_detections: `DetectorConfig`'s test settings.
  Returns:
    dict `boxes` float32 [D, 4] pixels, `classes` int32 [D] class indices, `scores` float32
    [D], by descending score, D <= max_detections.
  """
  height = tf.cast(height, tf.float32)
  width = tf.cast(width, tf.float32)
  boxes = tf.clip_by_value(boxes, 0.0, tf.stack([height, width, height, width]))
  scores = probabilities[:, 1:]
  # A box clipped to nothing is no detection: its score goes under the threshold.
  empty = (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])
  scores = tf.where(empty, tf.zeros_like(scores), scores)
  found = tf.image.combined_non_max_suppression(
      boxes[None], scores[None], max_output_size_per_class=max_detections,
      max_total_size=max_detections, iou_threshold=nms_iou, score_threshold=score_threshold,
      clip_boxes=False)
  count = found.valid_detections[0]
  return {'boxes': found.nmsed_boxes[0, :count],
          'classes': tf.cast(found.nmsed_classes[0, :count], tf.int32),
          'scores': found.nmsed_scores[0, :count]}


def make_detect_function(model, config):
  """One image's detections from its views' model inputs, as a retrace-sparing `tf.function`.

  Args:
    model: `detector.FastRcnn`.
    config: `DetectorConfig` (score_threshold, nms_iou, max_detections).
  Returns:
    detect(views, proposals, height, width) -> `detections`' dict (views and proposals as
    `view_outputs`).
  """

  @tf.function(reduce_retracing=True)
  def detect(views, proposals, height, width):
    probabilities, boxes = view_outputs(model, views, proposals, width)
    return detections(probabilities, boxes, height, width, config.score_threshold,
                      config.nms_iou, config.max_detections)

  return detect


def make_score_function(model):
  """Class probabilities and class boxes of one image's proposals over its views (deep MIL's
  appearance score) as a `tf.function`: score(views, proposals, width) -> `view_outputs`."""
  return tf.function(lambda views, proposals, width: view_outputs(model, views, proposals, width),
                     reduce_retracing=True)
