"""Run by tests/test_distribute.py in its own process (logical devices must be set before
TensorFlow starts): three training steps of the detector on one device and under
MirroredStrategy over 2 logical CPU devices, from the same initial weights and the same global
batches; prints JSON {mode: {strategy: {losses, weights}}}."""

import dataclasses
import json
import pathlib
import sys
import tempfile

import tensorflow as tf

cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position

from click_supervision import distribute  # pylint: disable=wrong-import-position
from click_supervision.detector import batches as batches_lib  # pylint: disable=wrong-import-position
from click_supervision.detector import fast_rcnn  # pylint: disable=wrong-import-position
from click_supervision.detector import train as train_lib  # pylint: disable=wrong-import-position
from tests.test_detector import FAST, toy_maps  # pylint: disable=wrong-import-position


def tiny_trunk():
  keras.utils.set_random_seed(3)
  inputs = keras.Input([None, None, 3])
  x = keras.layers.Conv2D(4, 3, padding='same', name='c1')(inputs)
  x = keras.layers.Conv2D(4, 8, strides=8, padding='same', name='c2')(x)
  trunk = keras.Model(inputs, x)
  trunk.feature_stride, trunk.feature_offset, trunk.feature_channels = 8, 0.0, 4
  return trunk


def run(strategy, source, truth, config, trunk):
  replicas = strategy.num_replicas_in_sync
  with strategy.scope():
    own = train_lib.copy_trunk(trunk) if trunk is not None else None
    model = fast_rcnn.build_detector(2, config, source.geometry(own), trunk=own)
    if own is not None:
      train_lib.set_trunk_trainable(model.trunk, config.finetune)
    optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    optimizer.build(model.trainable_variables)
  step = train_lib.make_train_step(model, optimizer, strategy, config)
  # The driver's input: one tf.data pipeline, each replica its share of the step's images.
  batches = iter(train_lib.distributed_batches(source, truth, 2, config, strategy, 0, 3))
  losses = [float(step(next(batches))['loss']) for _ in range(3)]
  return {'replicas': replicas, 'losses': losses,
          'weights': [w.tolist() for w in model.get_weights()]}


def main():
  with tempfile.TemporaryDirectory() as tmp:
    records, _, bags = toy_maps(pathlib.Path(tmp), num_images=8, seed=2, real_images=True)
    truth = batches_lib.training_boxes_from_ground_truth(records, 'boxes')
    # No dropout: each replica draws its own masks, so with dropout the runs agree only in
    # expectation.
    config = dataclasses.replace(FAST, dropout=0.0, images_per_batch=4)  # 2 per replica.
    out = {}
    modes = (('head', None), ('finetune', tiny_trunk()))
    for mode, trunk in [m for m in modes if m[0] in (sys.argv[1:] or ['head', 'finetune'])]:
      if trunk is None:
        source, mode_config = batches_lib.InputSource(bags), config
      else:
        source = batches_lib.InputSource(bags, 'all', image_settings=(None, None, 8))
        mode_config = dataclasses.replace(config, finetune='all')
      out[mode] = {name: run(distribute.make_strategy(name), source, truth, mode_config, trunk)
                   for name in ('default', 'mirrored')}
  json.dump(out, sys.stdout)


if __name__ == '__main__':
  main()
