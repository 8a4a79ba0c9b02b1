"""Tests of the TensorBoard drawings: boxes land where they should, low scores are left out."""

import numpy as np
from PIL import Image

from click_supervision import summaries
from click_supervision.datasets import records as records_lib


def gray_record(tmp_path, height=60, width=80):
  path = tmp_path / 'gray.png'
  Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)
  return records_lib.make_record('g', str(path), height, width,
                                 np.array([[10, 10, 30, 40]], np.float32), [0])


def test_detections_are_drawn_only_above_the_score_floor(tmp_path):
  record = gray_record(tmp_path)
  drawing = summaries.draw_detections(record, [[20, 45, 50, 75], [5, 5, 15, 15]], [1, 0],
                                      [0.9, 0.1], ['cat', 'dog'], min_score=0.3)
  assert drawing.shape == (60, 80, 3) and drawing.dtype == np.uint8
  selected = np.all(drawing == summaries.SELECTED, axis=-1)
  # The confident box's left edge (x = 45) is drawn, the unconfident box's (x = 5) is not.
  assert selected[30:45, 45].all() and not selected[6:14, 5].any()
  truth = np.all(drawing == summaries.GROUND_TRUTH, axis=-1)
  assert truth[15:25, 10].all()


def test_localisations_scale_with_the_drawing(tmp_path):
  record = gray_record(tmp_path, 120, 160)
  drawing = summaries.draw_localizations(record, {0: [20, 20, 60, 80]}, {0: [[40, 50]]},
                                         ['cat'], max_side=80)
  assert drawing.shape == (60, 80, 3)
  selected = np.all(drawing == summaries.SELECTED, axis=-1)
  assert selected[15:25, 10].all()  # x = 20 px at half scale.
  assert np.all(drawing[20, 25] == summaries.CLICK)  # The click (40, 50) at (20, 25).


def test_run_settings_go_to_the_hparams_plugin(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  from click_supervision import config as config_lib  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(config_lib.Config(), workdir=str(tmp_path / 'run7'))
  flat = summaries.flat_hparams(config)
  assert flat['clicks.num_clicks'] == 2 and flat['detector.learning_rate'] == 0.01
  assert flat['stages'] == str(config_lib.DEFAULT_STAGES)  # Tuples as text.
  summaries.write_hparams(str(tmp_path / 'tb'), config)
  found = {}
  for path in (tmp_path / 'tb').iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == 'hparams':
          data = plugin_data_pb2.HParamsPluginData.FromString(
              value.metadata.plugin_data.content)
          if data.HasField('session_start_info'):
            found = data.session_start_info
  assert found.hparams['clicks.num_clicks'].number_value == 2
  assert found.hparams['data.dataset'].string_value == 'synthetic'
