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

The graph resizes and pads the image as the run's trunk-map cache did
(`features.prepare_image_tf`), runs the trunk (the detector's own when it was fine-tuned, else the
pretrained one the cache came from), pools each proposal, runs the head, decodes the
class-specific boxes and applies per-class NMS (`detector.serving`: the same functions as the
in-process test). Proposals (Edge Boxes on HED edges) run outside the graph: `api.Detector` computes them with
the run's proposal settings, which MODEL_DIR/click_supervision_model.json records with the class
names and `schema_version`. Serving from another language: load the SavedModel, compute
proposals any way you like (more and better proposals, better detections) and call `serve`.
"""

import dataclasses
import os
import sys

from absl import flags

from click_supervision import command_line
from click_supervision import errors
from click_supervision import tf_logs
from click_supervision.errors import UserError

MODEL_SCHEMA_VERSION = 1
METADATA_FILE = 'click_supervision_model.json'

USAGE = 'python -m click_supervision.export --run=RUN_DIR --out=MODEL_DIR'
FLAGS = command_line.new_flag_values()
_RUN = flags.DEFINE_string('run', None, 'the run folder (its --workdir)', flag_values=FLAGS)
_OUT = flags.DEFINE_string('out', None, 'the SavedModel folder to write', flag_values=FLAGS)


def make_detect_function(model, image_settings, detector_config):
  """The serving computation as a `tf.function` (image uint8 [H, W, 3], proposals float32
  [P, 4]) -> dict boxes, classes, scores (module docstring): `features.prepare_image_tf`, then
  `detector.serving`'s recipe, the same functions the in-process test uses.

  Args:
    model: `detector.FastRcnn` with a trunk.
    image_settings: (short_side, max_long_side) of the run's trunk-map cache.
    detector_config: `config.DetectorConfig` (score_threshold, nms_iou, max_detections, and the
      test views: test_scales, test_flip).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from click_supervision import features  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import inference  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import serving  # pylint: disable=g-import-not-at-top
  short_side, max_long_side = image_settings
  views = inference.test_views(detector_config)

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name='image'),
                                tf.TensorSpec([None, 4], tf.float32, name='proposals')])
  def detect(image, proposals):
    image_views = []
    for scale, mirrored in views:  # The test's views, prepared in the graph.
      pixels, factors = features.prepare_image_tf(
          tf.reverse(image, [1]) if mirrored else image,
          short_side if scale is None else scale, max_long_side, model.feature_stride)
      image_views.append(({'images': pixels}, factors, mirrored))
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    probabilities, boxes = serving.view_outputs(model, image_views, proposals, width)
    return serving.detections(probabilities, boxes, height, width,
                              detector_config.score_threshold, detector_config.nms_iou,
                              detector_config.max_detections)

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
  from click_supervision.detector import batches  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import fast_rcnn  # pylint: disable=g-import-not-at-top
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
    # Trained on cached maps: serve it on the pretrained trunk the caches came from (cut in two
    # when the detector pools the cut's map too).
    trunk = backbones.build_trunk(features['trunk'], features['weights'],
                                  cache_dir=config['data']['cache_dir'], cut=model.pool_cut)
    served = fast_rcnn.build_detector(
        model.num_classes, detector_config_of({'detector': config['detector']}),
        batches.trunk_geometry(trunk), trunk=trunk)
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


# Settings whose default changed: a run recorded before they existed used the old value.
SETTINGS_BEFORE_RECORDED = {'pool_cut': False, 'test_flip': False}


def detector_config_of(metadata):
  from click_supervision import config as config_lib  # pylint: disable=g-import-not-at-top
  names = {f.name for f in dataclasses.fields(config_lib.DetectorConfig)}
  recorded = dict(SETTINGS_BEFORE_RECORDED, **metadata['detector'])
  return config_lib.DetectorConfig(**{k: v for k, v in recorded.items() if k in names})


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
  """The command (module docstring); argv: its arguments, without the program name (default
  `sys.argv[1:]`). Returns the exit code."""
  command_line.parse(FLAGS, argv, USAGE,
                     'Exports the detector of a finished run as a SavedModel.',
                     required=('run', 'out'))
  tf_logs.quiet()
  run_dir, out_dir = _RUN.value, _OUT.value

  def body():
    metadata = export(run_dir, out_dir)
    print(f'exported {len(metadata["class_names"])}-class detector of {run_dir} (mAP '
          f'{metadata["map"]:.3f}) to {out_dir}', flush=True)

  return errors.run_command(body)


if __name__ == '__main__':
  sys.exit(main())
