"""The detector on a test set: every image's detections (`detector.serving`'s recipe) and the
detections file.
"""

import numpy as np
import tensorflow as tf

def model_inputs(source, image_id, mirrored=False, scale=None):
  """One image's model input from an `InputSource` with a batch axis, and its size.

  Returns:
    (inputs dict for `serving.model_outputs`, factors float32 [4], (height, width) pixels).
  """
  image = source.inputs(image_id, mirrored, scale)
  return ({k: tf.constant(image[k][None]) for k in source.keys}, tf.constant(image['factors']),
          source.bags.size(image_id))


def test_views(config):
  """The (scale, mirrored) views the test averages over (`DetectorConfig.test_scales`,
  `test_flip`); scale None is the cache's own."""
  scales = config.test_scales or (None,)
  return [(scale, mirrored) for scale in scales
          for mirrored in ((False, True) if config.test_flip else (False,))]


def detect_all(model, source, config, progress=None):
  """Detections in every image of an input source (`serving`'s recipe).

  Args:
    model: `detector.FastRcnn`.
    source: `batches.InputSource` over the test images, in the mode the model was trained in
      (cached maps for `none` / `upper`, images for `top` / `all`), with the maps of every
      test view.
    config: `config.DetectorConfig` (`nms_iou`, `max_detections`, `score_threshold`, the test
      views: `test_views`).
    progress: optional progress factory.
  Returns:
    list of detection dicts (`evaluation` module docstring: image_id, label, box, score).
  """
  from click_supervision import evaluation  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import serving  # pylint: disable=g-import-not-at-top
  detect = serving.make_detect_function(model, config)
  detections = []
  bar = progress(len(source.image_ids), 'detector test') if progress else None
  views = test_views(config)
  for image_id in source.image_ids:
    image_views = []
    for scale, mirrored in views:
      inputs, factors, (height, width) = model_inputs(source, image_id, mirrored, scale)
      image_views.append((inputs, factors, mirrored))
    proposals, _ = source.proposals(image_id)
    found = detect(image_views, tf.constant(proposals), tf.constant(height), tf.constant(width))
    detections.extend(evaluation.detection_dicts(
        image_id, found['boxes'].numpy(), found['classes'].numpy().astype(np.int64),
        found['scores'].numpy()))
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
