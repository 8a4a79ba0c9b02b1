"""Exports a run's detector as a TensorFlow SavedModel with a serving signature.

  python -m click_supervision.export --run=RUN_DIR --out=MODEL_DIR

The SavedModel's `serve` endpoint (also `serving_default`) maps one image and its proposals to
detections, the whole test recipe in one graph (`detector.inference` does the same in NumPy):

  image      uint8 [H, W, 3] RGB
  proposals  float32 [P, 4] `[ymin, xmin, ymax, xmax]` pixels of `image` (boxes convention)
  ->
  boxes      float32 [D, 4] pixels, clipped to the image
  classes    int32 [D] class indices (`class_names` in click_supervision_model.json)
  scores     float32 [D], descending; D <= max_detections

The graph resizes and pads the image as the run's trunk-map cache did (`features.prepare_image`),
runs the trunk (the detector's own when it was fine-tuned, else the pretrained one the cache came
from), pools each proposal, runs the head, decodes the class-specific boxes and applies per-class
NMS. Proposals (Edge Boxes on HED edges) run outside the graph: `api.Detector` computes them with
the run's proposal settings, which MODEL_DIR/click_supervision_model.json records with the class
names and `schema_version`. Serving from another language: load the SavedModel, compute
proposals any way you like (more and better proposals, better detections) and call `serve`.
"""

import argparse
import dataclasses
import os
import sys

from click_supervision.errors import UserError

MODEL_SCHEMA_VERSION = 1
METADATA_FILE = 'click_supervision_model.json'


def _prepare(image, short_side, max_long_side, stride):
  """`features.prepare_image` in graph ops: (pixels float32 [1, H', W', 3], factors [4])."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shape = tf.shape(image)
  height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  scale = tf.constant(1.0, tf.float64)
  if short_side:
    scale = short_side / tf.minimum(height, width)
  if max_long_side:
    long_side = tf.maximum(height, width)
    scale = tf.where(scale * long_side > max_long_side, max_long_side / long_side, scale)
  pixels = tf.cast(image, tf.float32)[None]
  # Python's round() (half to even) as in `prepare_image`.
  size = tf.cast(tf.maximum(tf.round(tf.stack([height, width]) * scale), 1.0), tf.int32)
  pixels = tf.cond(
      tf.equal(scale, 1.0), lambda: pixels,
      lambda: tf.cond(scale < 1.0,
                      lambda: tf.image.resize(pixels, size, method='bilinear', antialias=True),
                      lambda: tf.image.resize(pixels, size, method='bilinear')))
  size = tf.shape(pixels)[1:3]
  factors = tf.cast(size, tf.float32) / tf.cast(tf.stack([height, width]), tf.float32)
  factors = tf.where(tf.equal(scale, 1.0), tf.ones([2]), factors)
  pad_h = -size[0] % stride
  pad_w = -size[1] % stride
  pixels = tf.concat([pixels, tf.repeat(pixels[:, -1:], pad_h, axis=1)], axis=1)
  pixels = tf.concat([pixels, tf.repeat(pixels[:, :, -1:], pad_w, axis=2)], axis=2)
  return pixels, tf.concat([factors, factors], 0)


def _decode(rois, deltas):
  """`detector.box_coding.decode` in graph ops: rois [P, 4], deltas [P, C, 4] -> [P, C, 4]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import box_coding  # pylint: disable=g-import-not-at-top
  size = tf.maximum(rois[:, 2:] - rois[:, :2], 1e-3)
  center = rois[:, :2] + size / 2
  deltas = deltas * box_coding.TARGET_STDS
  new_center = center[:, None] + deltas[..., :2] * size[:, None]
  new_size = size[:, None] * tf.exp(tf.minimum(deltas[..., 2:], box_coding.MAX_LOG_SCALE))
  return tf.concat([new_center - new_size / 2, new_center + new_size / 2], -1)


def make_detect_function(model, image_settings, detector_config):
  """The serving computation as a `tf.function` (image uint8 [H, W, 3], proposals float32
  [P, 4]) -> dict boxes, classes, scores (module docstring).

  Args:
    model: `detector.FastRcnn` with a trunk.
    image_settings: (short_side, max_long_side) of the run's trunk-map cache.
    detector_config: `config.DetectorConfig` (score_threshold, nms_iou, max_detections).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  short_side, max_long_side = image_settings
  num_classes = model.num_classes
  threshold = detector_config.score_threshold
  nms_iou, max_detections = detector_config.nms_iou, detector_config.max_detections

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name='image'),
                                tf.TensorSpec([None, 4], tf.float32, name='proposals')])
  def detect(image, proposals):
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    pixels, factors = _prepare(image, short_side, max_long_side, model.feature_stride)
    maps = model.trunk(pixels, training=False)
    pooled = model.roi_pooling(maps, proposals * factors,
                               tf.zeros([tf.shape(proposals)[0]], tf.int32))
    out = model.head(pooled, training=False)
    probabilities = tf.nn.softmax(out['class_logits'])
    decoded = _decode(proposals, out['box_deltas'])
    limits = tf.stack([height, width, height, width])
    found_boxes, found_classes, found_scores = [], [], []
    for c in range(num_classes):
      scores = probabilities[:, c + 1]
      boxes = tf.clip_by_value(decoded[:, c], 0.0, limits)
      keep = (scores >= threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
      boxes, scores = tf.boolean_mask(boxes, keep), tf.boolean_mask(scores, keep)
      selected = tf.image.non_max_suppression(boxes, scores, max_detections,
                                              iou_threshold=nms_iou)
      found_boxes.append(tf.gather(boxes, selected))
      found_scores.append(tf.gather(scores, selected))
      found_classes.append(tf.fill(tf.shape(selected), c))
    boxes, scores = tf.concat(found_boxes, 0), tf.concat(found_scores, 0)
    classes = tf.cast(tf.concat(found_classes, 0), tf.int32)
    best = tf.argsort(-scores, stable=True)[:max_detections]
    return {'boxes': tf.gather(boxes, best), 'classes': tf.gather(classes, best),
            'scores': tf.gather(scores, best)}

  return detect


def serving_model(run_dir):
  """The detector of a finished run with the trunk it runs on, and the metadata to serve it.

  Returns:
    (`detector.FastRcnn` with a trunk, metadata dict: class_names, image_settings,
    detector (the `DetectorConfig` dict), proposals (the `ProposalConfig` dict), trunk, run).
  Raises:
    UserError naming the run folder when it has no finished detector.
  """
  from click_supervision import backbones  # pylint: disable=g-import-not-at-top
  from click_supervision import results as results_lib  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import train as train_lib  # pylint: disable=g-import-not-at-top
  results = results_lib.read_results(run_dir, need=('map', 'config', 'class_names'))
  model = train_lib.load_detector(os.path.join(run_dir, 'detector'))
  if model is None:
    raise UserError(f'{run_dir}/detector: no finished detector (model.keras and done.json)')
  config = results['config']
  features = config['features']
  if features.get('context_scale'):
    raise UserError(f'{run_dir}: its detector pools a context grid too '
                    f'(--feature_context_scale={features["context_scale"]}), which the serving '
                    f'graph does not; train with --feature_context_scale=0 to export')
  if model.trunk is None:
    # Trained on cached maps: serve it on the pretrained trunk the cache came from.
    trunk = backbones.build_trunk(features['trunk'], features['weights'],
                                  cache_dir=config['data']['cache_dir'])
    served = train_lib.build_detector(
        model.num_classes, (model.feature_stride, model.feature_offset, None), model.pool_size,
        detector_config_of({'detector': config['detector']}), trunk=trunk)
    served.head.set_weights(model.head.get_weights())
    model = served
  metadata = {
      'schema_version': MODEL_SCHEMA_VERSION,
      'class_names': results['class_names'],
      'image_settings': [features['short_side'] or None, features['max_long_side']],
      'detector': config['detector'],
      'proposals': config['proposals'],
      'trunk': features['trunk'], 'weights': features['weights'],
      'run': os.path.abspath(run_dir), 'map': results['map'],
      'map_metric': results.get('map_metric'), 'supervision': results.get('supervision'),
  }
  return model, metadata


def detector_config_of(metadata):
  from click_supervision import config as config_lib  # pylint: disable=g-import-not-at-top
  names = {f.name for f in dataclasses.fields(config_lib.DetectorConfig)}
  return config_lib.DetectorConfig(**{k: v for k, v in metadata['detector'].items() if k in names})


def export(run_dir, out_dir):
  """Writes the run's detector as a SavedModel plus its metadata file into `out_dir`.

  Returns:
    the metadata dict written to `out_dir`/click_supervision_model.json.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from click_supervision import atomic  # pylint: disable=g-import-not-at-top
  model, metadata = serving_model(run_dir)
  detect = make_detect_function(model, metadata['image_settings'], detector_config_of(metadata))
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint('serve', detect)
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or (
      os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, METADATA_FILE)))):
    raise UserError(f'{out_dir}: exists and is not an exported model; choose a new folder')
  archive.write_out(out_dir, verbose=False)
  atomic.write_json(os.path.join(out_dir, METADATA_FILE), metadata)
  return metadata


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m click_supervision.export',
      description='Exports the detector of a finished run as a SavedModel.')
  parser.add_argument('--run', required=True, help='the run folder (its --workdir)')
  parser.add_argument('--out', required=True, help='the SavedModel folder to write')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  try:
    metadata = export(args.run, args.out)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 1
  print(f'exported {len(metadata["class_names"])}-class detector of {args.run} (mAP '
        f'{metadata["map"]:.3f}) to {args.out}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
