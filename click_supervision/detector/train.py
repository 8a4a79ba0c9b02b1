"""The detector's training loop: the step and the loop, nothing else.

The model is `fast_rcnn.build_detector`'s, the batches are `batches.make_batch`'s, delivered by
the tf.data pipeline `pipeline.make_training_dataset` (built in parallel threads and prefetched
while the step runs) and distributed with `strategy.distribute_datasets_from_function`: each
replica gets its own images of the step. The step calls the model on the batch's maps or images
and RoIs, so every mode (`DetectorConfig.finetune`: `none`, `upper`, `top`, `all`) trains
through the same code. Model and optimizer are built under `strategy.scope()`; each replica's
loss is divided by the global number of RoIs, so another strategy changes no training code.

Resuming: `tf.train.CheckpointManager` keeps the head, the trainable trunk and the optimizer (its
step counter drives the schedule) every `checkpoint_every` steps. The batch of step s is a pure
function of (seed, s) (`batches`), and so are the dropout masks, so a resumed run sees exactly
the batches an uninterrupted one would (with `deterministic`, TensorFlow's op determinism makes
the arithmetic repeat too).

Training boxes: dict image_id -> (boxes float32 [G, 4] pixels, labels int [G] class indices);
images of the input source without an entry give background RoIs only.
"""

import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from click_supervision import atomic
from click_supervision import cache as cache_lib
from click_supervision import pipeline
from click_supervision.detector import batches as batches_lib
from click_supervision.detector import fast_rcnn as fast_rcnn_lib
from click_supervision.errors import UserError

MODEL_FILE = 'model.keras'
_DONE_FILE = 'done.json'
TOP_FRACTION = 1 / 3


@keras.saving.register_keras_serializable(package='click_supervision')
class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
  """The detector's learning rate at a step: `step` (x0.1 after `drop_at` of the steps, as Fast
  R-CNN) or `cosine` (down to 0 at `total_steps`), after an optional linear warm-up."""

  def __init__(self, base, total_steps, schedule='step', drop_at=0.75, warmup_steps=0):
    self.base = float(base)
    self.total_steps = int(total_steps)
    self.schedule = schedule
    self.drop_at = float(drop_at)
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    if self.schedule == 'cosine':
      done = tf.minimum(step, self.total_steps) / max(1, self.total_steps)
      rate = self.base * 0.5 * (1.0 + tf.cos(math.pi * done))
    else:
      boundary = float(max(1, int(self.drop_at * self.total_steps)))
      rate = tf.where(step <= boundary, self.base, self.base / 10)
    if self.warmup_steps:
      rate *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
    return rate

  def get_config(self):
    return {'base': self.base, 'total_steps': self.total_steps, 'schedule': self.schedule,
            'drop_at': self.drop_at, 'warmup_steps': self.warmup_steps}


def copy_trunk(trunk):
  """A copy of a trunk with its weights and geometry, so fine-tuning leaves the given one as it
  was (deep MIL starts each fold's detector from the same pretrained trunk)."""
  from click_supervision import backbones  # pylint: disable=g-import-not-at-top

  def clone(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name in ('feature_stride', 'feature_offset', 'feature_channels'):
      if hasattr(model, name):
        setattr(copy, name, getattr(model, name))
    return copy

  if hasattr(trunk, 'cut_stride'):
    return backbones.compose_trunk(clone(trunk.get_layer('lower')),
                                   clone(trunk.get_layer('upper')))
  return clone(trunk)


def _leaf_layers(model):
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _leaf_layers(layer)
    else:
      yield layer


def set_trunk_trainable(trunk, finetune):
  """Which trunk layers train: none; `upper`, every layer of the part above the cut; `top`, the
  last third of the layers with weights (BatchNorm not counted); `all`, every one. BatchNorm
  layers never train (nor update their statistics: the trunk runs in inference mode)."""
  weighted = [layer for layer in _leaf_layers(trunk)
              if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
  if finetune == 'none':
    chosen = []
  elif finetune == 'upper':
    upper = {id(layer) for layer in _leaf_layers(trunk.get_layer('upper'))}
    chosen = [layer for layer in weighted if id(layer) in upper]
  elif finetune == 'top':
    chosen = weighted[len(weighted) - max(1, round(len(weighted) * TOP_FRACTION)):]
  else:
    chosen = weighted
  chosen = {id(layer) for layer in chosen}
  for layer in _leaf_layers(trunk):
    layer.trainable = id(layer) in chosen
  for part in (l for l in trunk.layers if isinstance(l, keras.Model)):
    part.trainable = any(id(layer) in chosen for layer in _leaf_layers(part))
  trunk.trainable = bool(chosen)
  # Keras' trainable setter on a model sets every sublayer: restore the leaves' choice.
  for layer in _leaf_layers(trunk):
    layer.trainable = id(layer) in chosen


def num_steps(num_images, config):
  return max(1, math.ceil(config.epochs * num_images / config.images_per_batch))


# Settings that do not change a trained detector (a head on cached maps has no trunk rate).
# (The test's settings are not the trained detector's: a run that changes only them tests the
# same model again.)
_NOT_FINGERPRINTED = ('checkpoint_every', 'deterministic', 'nms_iou', 'max_detections',
                      'score_threshold', 'test_scales', 'test_flip')


def fingerprint(source, training_boxes, num_classes, config):
  """What a trained detector depends on (`cache.fingerprint`); a folder trained for another
  fingerprint is emptied (`cache.resumable_folder`)."""
  ignored = _NOT_FINGERPRINTED + (('trunk_learning_rate_factor',) if config.finetune == 'none'
                                  else ())
  arrays = []
  for image_id in sorted(training_boxes):
    boxes, labels = training_boxes[image_id]
    arrays += [image_id.encode(), np.asarray(boxes, np.float32).round(2),
               np.asarray(labels, np.int64)]
  return cache_lib.fingerprint({
      'bags': source.bags.key, 'num_classes': num_classes, 'images': list(source.image_ids),
      'cut_maps': source.cut_maps.key if source.cut_maps is not None else None,
      'config': {k: v for k, v in vars(config).items() if k not in ignored}}, arrays=arrays)


def load_detector(folder):
  """The finished detector of a training folder, or None."""
  path = os.path.join(folder, MODEL_FILE)
  if not os.path.exists(os.path.join(folder, _DONE_FILE)) or not os.path.exists(path):
    return None
  return keras.saving.load_model(path)


MODEL_INPUTS = ('feature_maps', 'cut_maps', 'images', 'sizes', 'boxes', 'box_indices')


def make_train_step(model, optimizer, strategy, config):
  """The training step of `train_detector`, for any `tf.distribute` strategy.

  Each replica's loss is its summed RoI losses over the global RoI count (an all-reduce of the
  replicas' valid rows), so the summed gradients of R replicas equal the one-device gradient of
  the same global batch when the head has no dropout; with dropout each replica draws its own
  masks (the one-device masks folded with the replica id), so the update equals the one-device
  one in distribution, not bit for bit.

  Losses (Fast R-CNN): softmax cross-entropy over C + 1 classes on every RoI, plus smooth L1 on
  the true class's deltas of foreground RoIs, both summed and divided by the RoI count. With an
  ignore rule, a background RoI the model scores above `ignore_score` for a class it could be
  another instance of (`other_classes`) has weight 0 in the classification loss.

  Args:
    model: a `FastRcnn` built under `strategy.scope()`.
    optimizer: a keras optimizer built under the same scope on `model.trainable_variables`.
    strategy: the `tf.distribute.Strategy`.
    config: `DetectorConfig` (seed, trunk_learning_rate_factor, ignore rule).
  Returns:
    step(distributed batch) -> dict of float tensors (loss, class_loss, box_loss, accuracy,
    ignored): one update from one element per replica of the training dataset.
  """
  variables = model.trainable_variables
  factor = config.trunk_learning_rate_factor
  trunk_variables = ({id(v) for v in model.trunk.trainable_variables}
                     if model.trunk is not None and factor != 1.0 else set())
  ignore = config.ignore_rule != 'none'

  def replica_step(batch):
    context = tf.distribute.get_replica_context()
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    dropout_seed = tf.stack([tf.constant(config.seed, tf.int32), tf.cast(batch['step'], tf.int32)])
    # Replica 0 draws the one-device run's masks, replica r > 0 the seed with r folded in.
    dropout_seed = tf.cond(
        replica > 0,
        lambda: tf.random.experimental.stateless_fold_in(dropout_seed, replica),
        lambda: dropout_seed)
    valid = batch['valid']
    global_rois = tf.maximum(
        context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(valid)), 1.0)
    labels = tf.cast(batch['labels'], tf.int32)
    with tf.GradientTape() as tape:
      out = model({k: batch[k] for k in MODEL_INPUTS if k in batch}, training=True,
                  dropout_seed=dropout_seed)
      weights = valid
      ignored = tf.zeros_like(valid)
      if ignore:
        probabilities = tf.stop_gradient(tf.nn.softmax(out['class_logits']))[:, 1:]
        confident = tf.cast(probabilities > config.ignore_score, tf.float32)
        ignored = (tf.reduce_max(batch['other_classes'] * confident, axis=1) *
                   tf.cast(labels == 0, tf.float32) * valid)
        weights = valid - ignored
      class_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, out['class_logits'])
      foreground = tf.cast(labels > 0, tf.float32) * valid
      chosen = tf.gather(out['box_deltas'], tf.maximum(labels - 1, 0), batch_dims=1)
      box_loss = tf.reduce_sum(
          keras.losses.huber(batch['targets'][..., None], chosen[..., None], delta=1.0), -1)
      class_loss = tf.reduce_sum(class_loss * weights) / global_rois
      box_loss = tf.reduce_sum(box_loss * foreground) / global_rois
      loss = class_loss + box_loss
    gradients = tape.gradient(loss, variables)
    gradients = [g * factor if id(v) in trunk_variables else g
                 for g, v in zip(gradients, variables)]
    optimizer.apply_gradients(zip(gradients, variables))
    correct = tf.cast(tf.argmax(out['class_logits'], -1, output_type=tf.int32) == labels,
                      tf.float32)
    return {'loss': loss, 'class_loss': class_loss, 'box_loss': box_loss,
            'accuracy': tf.reduce_sum(correct * valid) / global_rois,
            'ignored': tf.reduce_sum(ignored) / global_rois}

  # Maps and images change size from step to step. No AutoGraph (the step has no tensor-dependent
  # Python control flow): its source parsing would run while the input threads parse .npy
  # headers, and CPython 3.11's AST constructor is not thread-safe (`batches._READ_LOCK`).
  @tf.function(reduce_retracing=True, autograph=False)
  def step(batch):
    per_replica = strategy.run(replica_step, args=(batch,))
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()}

  return step


def distributed_batches(source, training_boxes, num_classes, config, strategy, start_step,
                        total_steps, fixed_size=None):
  """The training batches of steps [start_step, total_steps) as a distributed dataset: one
  tf.data pipeline per worker (`pipeline.make_training_dataset`), each replica given its own
  images of every step (`batches.make_batch` of its share of `images_of_step`).

  Returns:
    a `tf.distribute.DistributedDataset`; iterating it gives each step's per-replica batches.
  """
  num_replicas = strategy.num_replicas_in_sync
  per_replica = config.images_per_batch // num_replicas

  def make_element(step, replica):
    ids = batches_lib.images_of_step(source.bags, config.seed, step, config.images_per_batch)
    return batches_lib.make_batch(
        source, ids[replica * per_replica:(replica + 1) * per_replica], training_boxes, config,
        config.seed, step, fixed_size=fixed_size, num_classes=num_classes,
        first_image=replica * per_replica)

  return strategy.distribute_datasets_from_function(
      lambda context: pipeline.make_training_dataset(
          make_element, start_step, total_steps,
          num_replicas // context.num_input_pipelines, context.input_pipeline_id))


def _check_strategy(config, strategy, trunk):
  if config.images_per_batch % strategy.num_replicas_in_sync:
    raise UserError(f'--detector_images_per_batch={config.images_per_batch} cannot be split '
                    f'over {strategy.num_replicas_in_sync} replicas: use a multiple of the '
                    f'replica count')
  if config.finetune != 'none' and trunk is None:
    raise ValueError(f'finetune={config.finetune} needs the trunk')
  if config.finetune == 'upper' and not hasattr(trunk, 'cut_stride'):
    raise ValueError('finetune=upper needs a cut trunk (backbones.build_trunk(cut=True))')


def train_detector(source, training_boxes, num_classes, config, folder, strategy=None,
                   log=print, progress=None, summary_writer=None, trunk=None):
  """Trains (or resumes training) the detector; returns the trained `FastRcnn`.

  Args:
    source: `batches.InputSource` over the training images, in the mode of `config.finetune`.
    training_boxes: dict image_id -> (boxes float32 [G, 4], labels int [G]) (module docstring).
    num_classes: C.
    config: `config.DetectorConfig`.
    folder: where checkpoints and the finished model (`model.keras`) go; a folder holding
      another training's files (other boxes or settings) is emptied first.
    strategy: a `tf.distribute.Strategy` (default: the default strategy).
    log: callable taking one str.
    progress: optional progress factory `(total, description, unit) -> bar`.
    summary_writer: optional `tf.summary` writer for losses and the learning rate.
    trunk: with `config.finetune` other than `none`: the pretrained trunk to fine-tune (a copy
      is trained), cut (`backbones.build_trunk(cut=True)`) for `upper`.
  Returns:
    the trained `detector.FastRcnn`: without trunk for `none` (it runs on cached maps), with the
    fine-tuned trunk otherwise.
  """
  strategy = strategy or tf.distribute.get_strategy()
  _check_strategy(config, strategy, trunk)
  tpu = isinstance(strategy, tf.distribute.TPUStrategy)
  if tpu and not source.max_long_side:
    raise UserError('--strategy=tpu pads every image and map to the cache\'s max_long_side, '
                    'which is 0 (no cap): set one')
  cache_lib.resumable_folder(folder, fingerprint(source, training_boxes, num_classes, config),
                             log=log)
  finished = load_detector(folder)
  if finished is not None:
    log(f'detector: trained model found in {folder}')
    return finished

  # --- model, optimizer and checkpoint, built under the strategy. ---
  finetune = config.finetune != 'none'
  total_steps = num_steps(len(source.image_ids), config)
  with strategy.scope():
    own_trunk = copy_trunk(trunk) if finetune else None
    model = fast_rcnn_lib.build_detector(
        num_classes, config, source.geometry(own_trunk), trunk=own_trunk)
    if finetune:
      set_trunk_trainable(model.trunk, config.finetune)
    schedule = LearningRate(config.learning_rate, total_steps, config.lr_schedule,
                            config.lr_drop_at, config.warmup_steps)
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum,
                                     weight_decay=config.weight_decay)
    optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(head=model.head, optimizer=optimizer,
                                   **({'trunk': model.trunk} if finetune else {}))
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(folder, 'checkpoints'),
                                       max_to_keep=2)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
  start_step = int(optimizer.iterations.numpy())
  if start_step:
    log(f'detector: resumed at step {start_step} of {total_steps} from '
        f'{manager.latest_checkpoint}')
  train_step = make_train_step(model, optimizer, strategy, config)

  # --- the input: one tf.data pipeline per worker, each replica's images of every step. ---
  fixed_size = None
  if tpu:  # One program per shape: everything padded to the long-side cap, rounded to 32.
    side = -(-int(source.max_long_side) // 32) * 32
    fixed_size = (side, side)
  batches = iter(distributed_batches(source, training_boxes, num_classes, config, strategy,
                                     start_step, total_steps, fixed_size))
  num_replicas = strategy.num_replicas_in_sync

  # --- the loop ---
  log(f'detector: training {total_steps} steps ({config.epochs:g} epochs of '
      f'{len(source.image_ids)} images, {config.images_per_batch} images x '
      f'{config.rois_per_image} RoIs per step, finetune {config.finetune}' +
      (f', {num_replicas} replicas' if num_replicas > 1 else '') + f') in {folder}')
  bar = progress(total_steps, 'detector training', 'step') if progress else None
  if bar and start_step:
    bar.update(start_step)
  started, window, waited = time.time(), [], 0.0
  for step in range(start_step, total_steps):
    before = time.perf_counter()
    batch = next(batches)
    waited += time.perf_counter() - before  # Time the step waited for its input.
    metrics = {k: float(v) for k, v in train_step(batch).items()}
    if not math.isfinite(metrics['loss']):
      raise FloatingPointError(f'detector: loss is {metrics["loss"]} at step {step}; lower '
                               f'--detector_learning_rate')
    window.append(metrics)
    # Saved before the progress line, so a process killed after printing step s resumes at s.
    if (step + 1) % config.checkpoint_every == 0 and step + 1 < total_steps:
      manager.save(checkpoint_number=step + 1)
    if summary_writer is not None and (step + 1) % 20 == 0:
      with summary_writer.as_default(step=step + 1):
        for name in metrics:
          tf.summary.scalar(f'detector/{name}', np.mean([m[name] for m in window]))
        tf.summary.scalar('detector/learning_rate', float(schedule(step)))
    if (step + 1) % 100 == 0 or step + 1 == total_steps:
      mean = {k: np.mean([m[k] for m in window]) for k in metrics}
      elapsed = time.time() - started
      log(f'detector: step {step + 1}/{total_steps}: loss {mean["loss"]:.3f} (class '
          f'{mean["class_loss"]:.3f}, box {mean["box_loss"]:.3f}), RoI accuracy '
          f'{mean["accuracy"]:.3f}' +
          (f', ignored {mean["ignored"]:.3f}' if config.ignore_rule != 'none' else '') +
          f', lr {float(schedule(step)):g}, {(step + 1 - start_step) / elapsed:.1f} steps/s, '
          f'input wait {100 * waited / elapsed:.0f} %')
      window = []
    if bar:
      bar.update(1)
  if bar:
    bar.close()

  # --- the finished model: written atomically, then marked done. ---
  atomic.save_keras_model(model, os.path.join(folder, MODEL_FILE))
  atomic.write_json(os.path.join(folder, _DONE_FILE), {'steps': total_steps})
  shutil.rmtree(os.path.join(folder, 'checkpoints'), ignore_errors=True)
  return model
