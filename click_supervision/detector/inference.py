"""Detections of one image: class probabilities, class-specific boxes, per-class NMS.

Fast R-CNN's test recipe: every proposal is scored by the (C+1)-way softmax and moved by its
class's box deltas; per class, boxes scoring below `score_threshold` are dropped and the rest
go through NMS at `nms_iou`; the `max_detections` best over all classes are kept.
"""

import numpy as np
import tensorflow as tf

from click_supervision import boxes as box_lib
from click_supervision.detector import box_coding

_ROWS_PER_CALL = 2048


class HeadRunner:
  """Runs a `FastRcnn`'s head on RoI feature rows in fixed-size chunks (one trace).

  Args:
    model: `detector.FastRcnn`.
  """

  def __init__(self, model):
    self.model = model
    self._forward = tf.function(lambda features: model.head(features, training=False),
                                reduce_retracing=True)

  def __call__(self, features):
    """Class probabilities float32 [P, C + 1] and box deltas float32 [P, C, 4] of float
    [P, D] feature rows."""
    features = np.asarray(features, np.float32)
    probabilities, deltas = [], []
    for start in range(0, len(features), _ROWS_PER_CALL):
      chunk = features[start:start + _ROWS_PER_CALL]
      padded = np.pad(chunk, [(0, _ROWS_PER_CALL - len(chunk)), (0, 0)])
      out = self._forward(tf.constant(padded))
      probabilities.append(tf.nn.softmax(out['class_logits']).numpy()[:len(chunk)])
      deltas.append(out['box_deltas'].numpy()[:len(chunk)])
    num_classes = self.model.num_classes
    if not probabilities:
      return np.zeros((0, num_classes + 1), np.float32), np.zeros((0, num_classes, 4), np.float32)
    return np.concatenate(probabilities), np.concatenate(deltas)


class TrunkFeatureBags:
  """Bags whose RoI features come from a detector's own (fine-tuned) trunk run on each image,
  for detectors trained with `finetune` `top` / `all` (the cached maps are of the original
  trunk). Images are prepared as for the cache (`features.prepare_image`).

  Args:
    bags: a bag source (proposals, image paths and sizes; `bags.TrunkMapBags`).
    model: `detector.FastRcnn` with a trunk.
    image_settings: (short_side, max_long_side) of the trunk-map cache.
  """

  def __init__(self, bags, model, image_settings):
    self.bags = bags
    self.image_ids = bags.image_ids
    self.model = model
    self.image_settings = tuple(image_settings)
    self._forward = tf.function(lambda pixels: model.trunk(pixels, training=False),
                                reduce_retracing=True)

  def features(self, image_id, boxes):
    """L2-normalised RoI features float32 [P, D] of pixel boxes float [P, 4] of one image."""
    from click_supervision import bags as bags_lib  # pylint: disable=g-import-not-at-top
    from click_supervision import features as features_lib  # pylint: disable=g-import-not-at-top
    from click_supervision.datasets import images as images_lib  # pylint: disable=g-import-not-at-top
    image = images_lib.load_image(self.bags.path(image_id))
    pixels, factors = features_lib.prepare_image(image, *self.image_settings,
                                                 self.model.feature_stride)
    maps = self._forward(pixels)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * factors
    pooled = self.model.roi_pooling(maps, tf.constant(boxes), tf.zeros([len(boxes)], tf.int32))
    return bags_lib.l2_normalize(tf.reshape(pooled, [len(boxes), -1]).numpy())

  def __iter__(self):
    from click_supervision import bags as bags_lib  # pylint: disable=g-import-not-at-top
    for image_id in self.image_ids:
      boxes, objectness = self.bags.proposals_of(image_id)
      yield bags_lib.Bag(image_id, boxes, objectness, self.features(image_id, boxes))


def detect(runner, bag, height, width, config):
  """Detections in one image.

  Args:
    runner: `HeadRunner`.
    bag: `bags.Bag` (proposal boxes and their features).
    height, width: the image size in pixels (boxes are clipped to it).
    config: `config.DetectorConfig` (`nms_iou`, `max_detections`, `score_threshold`).
  Returns:
    (boxes float32 [D, 4] pixels, labels int64 [D] class indices, scores float32 [D]), by
    descending score, D <= max_detections.
  """
  probabilities, deltas = runner(bag.features)
  boxes = box_coding.decode(bag.boxes, deltas)  # [P, C, 4]
  found_boxes, found_labels, found_scores = [], [], []
  for c in range(probabilities.shape[1] - 1):
    scores = probabilities[:, c + 1]
    keep = np.flatnonzero(scores >= config.score_threshold)
    if not len(keep):
      continue
    class_boxes = box_lib.clip_to_image(boxes[keep, c], height, width)
    valid = box_lib.is_valid(class_boxes)
    keep, class_boxes = keep[valid], class_boxes[valid]
    selected = tf.image.non_max_suppression(
        class_boxes, scores[keep], config.max_detections, iou_threshold=config.nms_iou).numpy()
    found_boxes.append(class_boxes[selected])
    found_labels.append(np.full(len(selected), c, np.int64))
    found_scores.append(scores[keep][selected])
  if not found_boxes:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
  boxes = np.concatenate(found_boxes)
  labels = np.concatenate(found_labels)
  scores = np.concatenate(found_scores).astype(np.float32)
  best = np.argsort(-scores, kind='stable')[:config.max_detections]
  return boxes[best], labels[best], scores[best]


def detect_all(model, bags, records, config, progress=None, image_settings=None):
  """Detections in every image of a bag source.

  Args:
    model: `detector.FastRcnn`.
    bags: `bags.TrunkMapBags` over `records`.
    records: the test records (image sizes).
    config: `config.DetectorConfig`.
    progress: optional progress factory.
    image_settings: for a model with a (fine-tuned) trunk: (short_side, max_long_side) of the
      cache; its features then come from its own trunk (`TrunkFeatureBags`).
  Returns:
    list of detection dicts (`evaluation` module docstring: image_id, label, box, score).
  """
  from click_supervision import evaluation  # pylint: disable=g-import-not-at-top
  if model.trunk is not None:
    bags = TrunkFeatureBags(bags, model, image_settings)
  runner = HeadRunner(model)
  sizes = {r['image_id']: (r['height'], r['width']) for r in records}
  detections = []
  bar = progress(len(bags.image_ids), 'detector test') if progress else None
  for bag in bags:
    boxes, labels, scores = detect(runner, bag, *sizes[bag.image_id], config)
    detections.extend(evaluation.detection_dicts(bag.image_id, boxes, labels, scores))
    if bar:
      bar.update(1)
  if bar:
    bar.close()
  return detections


def write_detections(path, detections, class_names):
  """Writes `detections.jsonl` atomically: one detection per line, sorted by image id, then
  descending score:

    {"image_id": "000005", "class": "chair", "box": [211.0, 262.0, 339.0, 324.0], "score": 0.91}

  `box` is `[ymin, xmin, ymax, xmax]` in pixels, 0-based, end-exclusive (`boxes` convention).

  Args:
    path: destination file.
    detections: list of detection dicts (`evaluation` module docstring).
    class_names: list of str.
  """
  from click_supervision import atomic  # pylint: disable=g-import-not-at-top
  ordered = sorted(detections, key=lambda d: (str(d['image_id']), -float(d['score'])))
  atomic.write_jsonl(path, [{'image_id': str(d['image_id']), 'class': class_names[int(d['label'])],
                             'box': [round(float(v), 2) for v in d['box']],
                             'score': round(float(d['score']), 6)} for d in ordered])
