"""Does the detector's training step wait for its input? Steps per second and the input's share of
the time, with the batches built in the loop (the input before the tf.data pipeline: each step
builds its batch, then runs) and with `pipeline.make_training_dataset` (batches built in parallel
threads and prefetched while the step runs), on the same images, settings and steps.

  python benchmarks/input_pipeline.py --dataset=voc:../shared/data/voc2007-dev/VOCdevkit/VOC2007 \\
      --split=trainval --finetune=all --steps=60 --cache_dir=/work/cache

Drawn boxes as training boxes (`--supervision=boxes`); the first `--warmup` steps of each mode
(tracing) are not timed. Prints a Markdown table; `--out` writes JSON.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from click_supervision import tf_logs  # pylint: disable=g-import-not-at-top,wrong-import-position

tf_logs.quiet()

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from click_supervision import config as config_lib  # pylint: disable=wrong-import-position
from click_supervision import results as results_lib  # pylint: disable=wrong-import-position
from click_supervision import runner  # pylint: disable=wrong-import-position
from click_supervision.detector import batches as batches_lib  # pylint: disable=wrong-import-position
from click_supervision.detector import fast_rcnn  # pylint: disable=wrong-import-position
from click_supervision.detector import train as train_lib  # pylint: disable=wrong-import-position


def time_steps(step, next_batch, warmup, steps):
  """Runs warmup + steps updates; returns (seconds of the timed steps, seconds of them spent
  waiting for the input)."""
  waited = 0.0
  for i in range(warmup + steps):
    if i == warmup:
      waited, start = 0.0, time.perf_counter()
    before = time.perf_counter()
    batch = next_batch(i)
    waited += time.perf_counter() - before
    float(step(batch)['loss'])  # Waits for the step to finish.
  return time.perf_counter() - start, waited


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True)
  parser.add_argument('--split', default='trainval')
  parser.add_argument('--finetune', default='all', choices=config_lib.DETECTOR_FINETUNES)
  parser.add_argument('--pool_size', type=int, default=3)
  parser.add_argument('--steps', type=int, default=60)
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--cache_dir', default=config_lib.default_cache_dir())
  parser.add_argument('--out', default='')
  args = parser.parse_args()

  config = config_lib.Config.from_settings({
      'data.dataset': args.dataset, 'data.split': args.split, 'data.cache_dir': args.cache_dir,
      'stages': ('data', 'proposals', 'features', 'detector'),
      'detector.supervision': 'boxes', 'detector.finetune': args.finetune,
      'detector.pool_size': args.pool_size, 'workdir': '/tmp/input_pipeline_benchmark'}
  ).resolved()
  os.makedirs(config.workdir, exist_ok=True)
  record = results_lib.RunRecord(config.workdir, {})
  dataset, _ = runner.load_data(config)
  bags = runner.stage_precompute(config, dataset, record)
  trunk = runner.detector_trunk(config)
  source = runner.detector_source(config, bags, trunk)
  truth = batches_lib.training_boxes_from_ground_truth(dataset.records, 'boxes')
  num_classes = len(dataset.class_names)
  strategy = tf.distribute.get_strategy()
  total = args.warmup + args.steps
  rows = {}
  for mode in ('in the loop', 'tf.data pipeline'):
    own = train_lib.copy_trunk(trunk) if trunk is not None else None
    model = fast_rcnn.build_detector(num_classes, config.detector, source.geometry(own), own)
    if own is not None:
      train_lib.set_trunk_trainable(model.trunk, config.detector.finetune)
    optimizer = keras.optimizers.SGD(0.001, momentum=0.9)
    optimizer.build(model.trainable_variables)
    step = train_lib.make_train_step(model, optimizer, strategy, config.detector)
    if mode == 'in the loop':
      def next_batch(i):
        ids = batches_lib.images_of_step(bags, 0, i, config.detector.images_per_batch)
        batch = batches_lib.make_batch(source, ids, truth, config.detector, 0, i,
                                       num_classes=num_classes)
        return dict({k: tf.constant(v) for k, v in batch.items()},
                    step=tf.constant(i, tf.int64))
    else:
      iterator = iter(train_lib.distributed_batches(source, truth, num_classes, config.detector,
                                                    strategy, 0, total))
      next_batch = lambda i: next(iterator)  # pylint: disable=cell-var-from-loop
    seconds, waited = time_steps(step, next_batch, args.warmup, args.steps)
    rows[mode] = {'steps_per_s': args.steps / seconds, 'input_share': waited / seconds}
  print(f'\n{args.dataset} {args.split}, finetune {args.finetune}, {args.steps} steps of '
        f'{config.detector.images_per_batch} images x {config.detector.rois_per_image} RoIs\n\n'
        '| input | steps/s | share of the time waiting for the input |\n|---|---|---|')
  for mode, row in rows.items():
    print(f'| {mode} | {row["steps_per_s"]:.2f} | {100 * row["input_share"]:.0f} % |')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'args': vars(args), 'rows': rows,
                 'detector': dataclasses.asdict(config.detector)}, f, indent=2)


if __name__ == '__main__':
  main()
