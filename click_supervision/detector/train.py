"""The detector's training loop: RoI batches from the trunk-map cache -> SGD on the head.

`--detector_finetune=none` (the CPU default) trains the head on RoI features pooled from the
cached trunk maps; the trunk is frozen, so pooling in the input pipeline and pooling inside the
model give the same numbers (`FastRcnn` docstring). The step is written for `tf.distribute`:
model and optimizer are built under `strategy.scope()`, each replica's loss is divided by the
global number of RoIs, so another strategy changes no training code.

Resuming: `tf.train.CheckpointManager` keeps the head, the optimizer (its step counter drives the
schedule) every `checkpoint_every` steps. The batch of step s is a pure function of (seed, s): the
image order of each epoch, the sampled RoIs and the dropout masks are all drawn from it, so a
resumed run sees exactly the batches an uninterrupted one would (with `deterministic`, TensorFlow's
op determinism makes the arithmetic repeat too).

`top` and `all` (for accelerators) put the trunk in the step: images are read, resized and
padded exactly as for the trunk-map cache (`features.prepare_image`), padded to one size per
batch, and the trunk runs in inference mode (BatchNorm statistics and parameters frozen, batches
being 1-2 images); `all` trains every other trunk layer, `top` the last third of them.

Training boxes: dict image_id -> (boxes float32 [G, 4] pixels, labels int [G] class indices);
images of the bag source without an entry give background RoIs only.
"""

import hashlib
import json
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from click_supervision import atomic
from click_supervision import bags as bags_lib
from click_supervision.detector import fast_rcnn as fast_rcnn_lib
from click_supervision.detector import sampling
from click_supervision.errors import UserError

MODEL_FILE = 'model.keras'
_DONE_FILE = 'done.json'
_FINGERPRINT_FILE = 'fingerprint.json'


def training_boxes_from_selections(selections):
  """MIL localisations -> training boxes: one box per positive (image, class) pair.

  Args:
    selections: dict (image_id, class_index) -> dict with `box` float [4] (`mil.run_mil`), or
      -> float [4].
  Returns:
    dict image_id -> (boxes float32 [G, 4], labels int64 [G]).
  """
  per_image = {}
  for (image_id, class_index), selection in sorted(selections.items()):
    box = selection['box'] if isinstance(selection, dict) else selection
    per_image.setdefault(image_id, ([], []))
    per_image[image_id][0].append(np.asarray(box, np.float32))
    per_image[image_id][1].append(int(class_index))
  return {i: (np.stack(b).reshape(-1, 4), np.array(l, np.int64)) for i, (b, l) in
          per_image.items()}


def training_boxes_from_ground_truth(records, supervision):
  """Drawn boxes as training boxes (the fully supervised baselines).

  `boxes`: per image and class the largest non-difficult box (the paper's "one box per class
  per image" comparison; the largest difficult one when the class has only difficult boxes).
  `boxes_all`: every non-difficult box.

  Returns:
    dict image_id -> (boxes float32 [G, 4], labels int64 [G]).
  """
  per_image = {}
  for record in records:
    gt_boxes = np.asarray(record['gt_boxes'], np.float32).reshape(-1, 4)
    gt_labels = np.asarray(record['gt_labels'], np.int64)
    difficult = np.asarray(record['difficult'], bool)
    boxes, labels = [], []
    if supervision == 'boxes_all':
      boxes, labels = list(gt_boxes[~difficult]), list(gt_labels[~difficult])
    elif supervision == 'boxes':
      areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
      for c in np.unique(gt_labels):
        of_class = gt_labels == c
        usable = of_class & ~difficult if np.any(of_class & ~difficult) else of_class
        best = np.flatnonzero(usable)[np.argmax(areas[usable])]
        boxes.append(gt_boxes[best])
        labels.append(int(c))
    else:
      raise ValueError(f'no drawn-box supervision called {supervision!r}')
    per_image[record['image_id']] = (np.asarray(boxes, np.float32).reshape(-1, 4),
                                     np.asarray(labels, np.int64))
  return per_image


def epoch_image_order(bags, seed, epoch):
  """The image order of one epoch: shards in a random order, the images of each shard shuffled
  (each shard is read once per epoch). A pure function of (seed, epoch).

  Returns:
    list of image ids (every image of the bag source once).
  """
  rng = np.random.default_rng([seed, epoch, 17])
  wanted = set(bags.image_ids)
  order = []
  for shard in rng.permutation(bags.features.num_shards):
    ids = [i for i in bags.features.shard_image_ids(int(shard)) if i in wanted]
    order.extend(ids[j] for j in rng.permutation(len(ids)))
  return order


def images_of_step(bags, seed, step, images_per_batch):
  """The image ids of batch `step` (epochs concatenated; the last batch of an epoch may take
  images of the next one)."""
  count = len(bags.image_ids)
  first = step * images_per_batch
  ids = []
  for position in range(first, first + images_per_batch):
    epoch, index = divmod(position, count)
    key = (bags.key, seed, epoch)
    if key not in _ORDERS:  # Drawn once per epoch, not at every step.
      if len(_ORDERS) >= 4:
        _ORDERS.pop(next(iter(_ORDERS)))
      _ORDERS[key] = epoch_image_order(bags, seed, epoch)
    ids.append(_ORDERS[key][index])
  return ids


_ORDERS = {}  # (bag source key, seed, epoch) -> that epoch's image order.


def _replica_blocks(per_image, num_replicas, rows):
  """Per-image arrays as one batch of R blocks of whole images, each block padded to `rows`.

  Args:
    per_image: dict name -> list of arrays, one per image in batch order (first axis: RoIs).
    num_replicas: R; the image count must be a multiple of it.
    rows: rows per block.
  Returns:
    dict name -> the concatenated blocks, plus `valid` float32 (0 for padding rows).
  """
  per_replica = len(next(iter(per_image.values()))) // num_replicas
  blocks = []
  for r in range(num_replicas):
    part = {k: np.concatenate(v[r * per_replica:(r + 1) * per_replica])
            for k, v in per_image.items()}
    count = len(next(iter(part.values())))
    block = {k: np.pad(v, [(0, rows - count)] + [(0, 0)] * (v.ndim - 1))
             for k, v in part.items()}
    block['valid'] = np.pad(np.ones(count, np.float32), [(0, rows - count)])
    blocks.append(block)
  return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def _check_batch(image_ids, config, num_replicas):
  if len(image_ids) != config.images_per_batch or len(image_ids) % num_replicas:
    raise ValueError(f'{len(image_ids)} images for a batch of {config.images_per_batch} over '
                     f'{num_replicas} replicas')


def make_batch(bags, image_ids, training_boxes, config, seed, step, num_replicas=1):
  """One step's RoIs, padded to `images_per_batch x rois_per_image` rows (fixed shapes). With
  `config.flip`, each image is the mirrored one with probability 1/2 (its own trunk map, from
  the bag source's `mirrored_maps`).

  With `num_replicas` R > 1 the rows are R equal blocks, block r holding images
  [r B/R, (r + 1) B/R) and its own padding, so `split_for_replicas` hands each replica whole
  images; the RoIs sampled do not depend on R.

  Returns:
    dict of numpy arrays: `features` float32 [N, D] (L2-normalised pooled features), `labels`
    int32 [N], `targets` float32 [N, 4], `valid` float32 [N] (0 for padding rows).
  """
  _check_batch(image_ids, config, num_replicas)
  features, labels, targets = [], [], []
  for j, image_id in enumerate(image_ids):
    rng = np.random.default_rng([seed, step, j])
    mirrored = bool(config.flip and rng.random() < 0.5)
    proposals, _, entry = bags.image(image_id, mirrored=mirrored)
    boxes, box_labels = training_boxes.get(
        image_id, (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
    if mirrored:
      boxes = bags_lib.mirror_boxes(boxes, bags.size(image_id)[1])
    sample = sampling.sample_rois(
        proposals, boxes, box_labels, config.rois_per_image, rng, config.foreground_fraction,
        config.foreground_iou, config.background_iou_low)
    features.append(bags.pool(entry, sample['rois']))
    labels.append(sample['labels'])
    targets.append(sample['targets'])
  return _replica_blocks({'features': features, 'labels': labels, 'targets': targets},
                         num_replicas,
                         config.images_per_batch // num_replicas * config.rois_per_image)


def make_image_batch(bags, image_ids, training_boxes, config, seed, step, image_settings,
                     num_replicas=1, fixed_size=None):
  """`make_batch` for `top` / `all`: images for the trunk instead of pooled features.

  Args:
    image_settings: (short_side, max_long_side, stride) of `features.prepare_image`.
    num_replicas: R: the RoI rows are R blocks as in `make_batch`, and each block's
      `box_indices` count from its own first image (0 .. B/R - 1).
    fixed_size: optional (height, width) every image batch is padded to (TPUs compile one
      program per shape); by default the largest prepared image of the step.
  Returns:
    dict of numpy arrays: `images` float32 [B, H, W, 3] (each prepared image at the top left,
    zeros around), `boxes` float32 [N, 4] in the prepared images' pixels, `box_indices` int32 [N],
    `labels`, `targets`, `valid` as `make_batch` (N = images_per_batch x rois_per_image).
  """
  from click_supervision import features as features_lib  # pylint: disable=g-import-not-at-top
  from click_supervision.datasets import images as images_lib  # pylint: disable=g-import-not-at-top
  _check_batch(image_ids, config, num_replicas)
  per_replica = len(image_ids) // num_replicas
  pixels, boxes_out, indices, labels, targets = [], [], [], [], []
  for j, image_id in enumerate(image_ids):
    rng = np.random.default_rng([seed, step, j])
    mirrored = bool(config.flip and rng.random() < 0.5)
    proposals, _ = bags.proposals_of(image_id)
    image = images_lib.load_image(bags.path(image_id))
    boxes, box_labels = training_boxes.get(
        image_id, (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
    if mirrored:
      width = bags.size(image_id)[1]
      image = np.ascontiguousarray(image[:, ::-1])
      proposals = bags_lib.mirror_boxes(proposals, width)
      boxes = bags_lib.mirror_boxes(boxes, width)
    sample = sampling.sample_rois(
        proposals, boxes, box_labels, config.rois_per_image, rng, config.foreground_fraction,
        config.foreground_iou, config.background_iou_low)
    prepared, factors = features_lib.prepare_image(image, *image_settings)
    pixels.append(prepared.numpy()[0])
    boxes_out.append(sample['rois'] * factors)
    indices.append(np.full(len(sample['rois']), j % per_replica, np.int32))
    labels.append(sample['labels'])
    targets.append(sample['targets'])
  height, width = fixed_size or (max(p.shape[0] for p in pixels), max(p.shape[1] for p in pixels))
  images = np.zeros((len(pixels), height, width, 3), np.float32)
  for j, p in enumerate(pixels):
    images[j, :p.shape[0], :p.shape[1]] = p
  batch = _replica_blocks(
      {'boxes': [b.astype(np.float32) for b in boxes_out], 'box_indices': indices,
       'labels': labels, 'targets': targets},
      num_replicas, config.images_per_batch // num_replicas * config.rois_per_image)
  batch['images'] = images
  return batch


def split_for_replicas(batch, num_replicas):
  """The batch of `make_batch` / `make_image_batch` (built with the same `num_replicas`) as a
  list of R per-replica dicts: every array cut into R equal blocks along its first axis."""
  return [{k: v[r * (len(v) // num_replicas):(r + 1) * (len(v) // num_replicas)]
           for k, v in batch.items()} for r in range(num_replicas)]


TOP_FRACTION = 1 / 3


def copy_trunk(trunk):
  """A copy of a trunk with its weights and geometry, so fine-tuning leaves the given one as it
  was (deep MIL starts each fold's detector from the same pretrained trunk)."""
  copy = keras.models.clone_model(trunk)
  copy.set_weights(trunk.get_weights())
  copy.feature_stride = trunk.feature_stride
  copy.feature_offset = trunk.feature_offset
  return copy


def set_trunk_trainable(trunk, finetune):
  """Which trunk layers train: none; `top`, the last third of the layers with weights (BatchNorm
  not counted); `all`, every one. BatchNorm layers never train (nor update their statistics:
  the trunk runs in inference mode)."""
  weighted = [layer for layer in trunk.layers
              if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
  if finetune == 'none':
    chosen = []
  elif finetune == 'top':
    chosen = weighted[len(weighted) - max(1, round(len(weighted) * TOP_FRACTION)):]
  else:
    chosen = weighted
  chosen = {id(layer) for layer in chosen}
  trunk.trainable = bool(chosen)
  for layer in trunk.layers:
    layer.trainable = id(layer) in chosen


def num_steps(num_images, config):
  return max(1, math.ceil(config.epochs * num_images / config.images_per_batch))


# Settings that do not change a trained detector (a head on cached maps has no trunk rate).
_NOT_FINGERPRINTED = {'none': ('checkpoint_every', 'trunk_learning_rate_factor'),
                      'top': ('checkpoint_every',), 'all': ('checkpoint_every',)}


def fingerprint(bags, training_boxes, num_classes, config):
  """What a trained detector depends on; a folder trained for another fingerprint is wiped."""
  digest = hashlib.sha256()
  digest.update(json.dumps({'bags': bags.key, 'num_classes': num_classes,
                            'images': list(bags.image_ids),
                            'config': {k: v for k, v in vars(config).items()
                                       if k not in _NOT_FINGERPRINTED[config.finetune]}},
                           sort_keys=True, default=str).encode())
  for image_id in sorted(training_boxes):
    boxes, labels = training_boxes[image_id]
    digest.update(image_id.encode())
    digest.update(np.asarray(boxes, np.float32).round(2).tobytes())
    digest.update(np.asarray(labels, np.int64).tobytes())
  return digest.hexdigest()[:16]


def build_detector(num_classes, geometry, pool_size, config, trunk=None):
  """A `FastRcnn` built for `pool_size` grids of `channels` (geometry = (stride, offset,
  channels)); without `trunk` it runs on cached maps."""
  stride, offset, channels = geometry
  model = fast_rcnn_lib.FastRcnn(num_classes, int(stride), float(offset), pool_size=pool_size,
                                 hidden_units=config.hidden_units, dropout=config.dropout,
                                 seed=config.seed, trunk=trunk)
  inputs = {'boxes': tf.zeros([1, 4]), 'box_indices': tf.zeros([1], tf.int32)}
  if trunk is None:
    inputs['feature_maps'] = tf.zeros([1, 2, 2, int(channels)])
  else:
    inputs['images'] = tf.zeros([1, 2 * int(stride), 2 * int(stride), 3])
  model(inputs)
  return model


def _geometry(bags):
  _, _, entry = bags.image(bags.image_ids[0])
  stride, offset = (float(v) for v in entry['geometry'])
  return stride, offset, int(entry['map'].shape[-1])


def load_detector(folder):
  """The finished detector of a training folder, or None."""
  path = os.path.join(folder, MODEL_FILE)
  if not os.path.exists(os.path.join(folder, _DONE_FILE)) or not os.path.exists(path):
    return None
  return keras.saving.load_model(path)


def make_train_step(model, optimizer, strategy, finetune, trunk_learning_rate_factor=1.0):
  """The training step of `train_detector`, for any `tf.distribute` strategy.

  Each replica's loss is its summed RoI losses over the global RoI count, so the summed
  gradients of R replicas equal the one-device gradient of the same global batch (`distribute`)
  when the head has no dropout; with dropout each replica draws its own masks, so the update
  equals the one-device one in distribution, not bit for bit.

  Args:
    model: a `FastRcnn` built under `strategy.scope()` (with its trunk when `finetune`).
    optimizer: a keras optimizer built under the same scope on `model.trainable_variables`.
    strategy: the `tf.distribute.Strategy`.
    finetune: whether batches carry images for the trunk (`make_image_batch`) or pooled
      features (`make_batch`).
    trunk_learning_rate_factor: the trunk's gradients are scaled by it (with SGD, its layers
      learn at this fraction of the learning rate).
  Returns:
    step(batch, dropout_seed) -> dict of floats (loss, class_loss, box_loss, accuracy): one
    update from a global batch of `make_batch` / `make_image_batch` built with
    `num_replicas=strategy.num_replicas_in_sync`; dropout_seed is a pair of ints.
  """
  variables = model.trainable_variables
  num_replicas = strategy.num_replicas_in_sync
  trunk_variables = ({id(v) for v in model.trunk.trainable_variables}
                     if finetune and trunk_learning_rate_factor != 1.0 else set())

  def replica_step(batch, dropout_seed, global_rois):
    # Each replica draws its own dropout masks: replica 0 the one-device run's, replica r > 0
    # from the seed with r folded in.
    replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
    dropout_seed = tf.cond(
        replica > 0,
        lambda: tf.random.experimental.stateless_fold_in(dropout_seed, replica),
        lambda: dropout_seed)
    with tf.GradientTape() as tape:
      if finetune:  # The trunk in inference mode: BatchNorm frozen (module docstring).
        maps = model.trunk(batch['images'], training=False)
        features = model.roi_pooling(maps, batch['boxes'], batch['box_indices'])
      else:
        features = batch['features']
      out = model.head(features, training=True, dropout_seed=dropout_seed)
      labels = tf.cast(batch['labels'], tf.int32)
      valid = batch['valid']
      class_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, out['class_logits'])
      foreground = tf.cast(labels > 0, tf.float32) * valid
      chosen = tf.gather(out['box_deltas'], tf.maximum(labels - 1, 0), batch_dims=1)
      box_loss = tf.reduce_sum(
          tf.keras.losses.huber(batch['targets'][..., None], chosen[..., None], delta=1.0), -1)
      class_loss = tf.reduce_sum(class_loss * valid) / global_rois
      box_loss = tf.reduce_sum(box_loss * foreground) / global_rois
      loss = class_loss + box_loss
    gradients = tape.gradient(loss, variables)
    gradients = [g * trunk_learning_rate_factor if id(v) in trunk_variables else g
                 for g, v in zip(gradients, variables)]
    optimizer.apply_gradients(zip(gradients, variables))
    correct = tf.cast(tf.argmax(out['class_logits'], -1, output_type=tf.int32) == labels,
                      tf.float32)
    return {'loss': loss, 'class_loss': class_loss, 'box_loss': box_loss,
            'accuracy': tf.reduce_sum(correct * valid) / global_rois}

  @tf.function(reduce_retracing=True)  # Image batches change size from step to step.
  def distributed_step(batch, dropout_seed, global_rois):
    per_replica = strategy.run(replica_step, args=(batch, dropout_seed, global_rois))
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()}

  def step(batch, dropout_seed):
    # Every worker builds the same global batch and feeds its own replicas their blocks.
    parts = split_for_replicas(batch, num_replicas)
    if num_replicas == 1:
      inputs = {k: tf.constant(v) for k, v in parts[0].items()}
    else:
      inputs = strategy.experimental_distribute_values_from_function(
          lambda context: {k: tf.constant(v)
                           for k, v in parts[context.replica_id_in_sync_group].items()})
    global_rois = tf.constant(max(float(batch['valid'].sum()), 1.0), tf.float32)
    metrics = distributed_step(inputs, tf.constant(dropout_seed, tf.int32), global_rois)
    return {k: float(v) for k, v in metrics.items()}

  return step


def train_detector(bags, training_boxes, num_classes, config, folder, strategy=None,
                   log=print, progress=None, summary_writer=None, trunk=None,
                   image_settings=None):
  """Trains (or resumes training) the detector head; returns the trained `FastRcnn`.

  Args:
    bags: `bags.TrunkMapBags` over the training images.
    training_boxes: dict image_id -> (boxes float32 [G, 4], labels int [G]) (module docstring).
    num_classes: C.
    config: `config.DetectorConfig`.
    folder: where checkpoints and the finished model (`model.keras`) go; a folder holding
      another training's files (other boxes or settings) is emptied first.
    strategy: a `tf.distribute.Strategy` (default: the default strategy).
    log: callable taking one str.
    progress: optional progress factory `(total, description, unit) -> bar`.
    summary_writer: optional `tf.summary` writer for losses and the learning rate.
    trunk: with `config.finetune` `top` or `all`: the trunk to fine-tune (the one the cache's
      maps came from).
    image_settings: with `top` / `all`: (short_side, max_long_side) of the trunk-map cache.
  Returns:
    the trained `detector.FastRcnn`: without trunk for `none` (it runs on trunk maps), with the
    fine-tuned trunk otherwise.
  """
  finetune = config.finetune != 'none'
  if finetune and (trunk is None or image_settings is None):
    raise ValueError(f'finetune={config.finetune} needs the trunk and its image settings')
  strategy = strategy or tf.distribute.get_strategy()
  if config.images_per_batch % strategy.num_replicas_in_sync:
    raise UserError(f'--detector_images_per_batch={config.images_per_batch} cannot be split '
                    f'over {strategy.num_replicas_in_sync} replicas: use a multiple of the '
                    f'replica count')
  if finetune and isinstance(strategy, tf.distribute.TPUStrategy) and not image_settings[1]:
    raise UserError('--strategy=tpu with a trunk in the step pads images to the cache\'s '
                    'max_long_side, which is 0 (no cap): set one')
  key = fingerprint(bags, training_boxes, num_classes, config)
  fingerprint_path = os.path.join(folder, _FINGERPRINT_FILE)
  if os.path.isdir(folder):
    try:
      with open(fingerprint_path) as f:
        same = json.load(f).get('fingerprint') == key
    except (OSError, ValueError):
      same = False
    if not same:
      shutil.rmtree(folder)
  os.makedirs(folder, exist_ok=True)
  atomic.write_json(fingerprint_path, {'fingerprint': key})
  finished = load_detector(folder)
  if finished is not None:
    log(f'detector: trained model found in {folder}')
    return finished

  # --- model, optimizer and checkpoint, built under the strategy. ---
  total_steps = num_steps(len(bags.image_ids), config)
  geometry = _geometry(bags)
  with strategy.scope():
    model = build_detector(num_classes, geometry, bags.pool_size, config,
                           trunk=copy_trunk(trunk) if finetune else None)
    if finetune:
      set_trunk_trainable(model.trunk, config.finetune)
    variables = model.trainable_variables
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [max(1, int(config.lr_drop_at * total_steps))],
        [config.learning_rate, config.learning_rate / 10])
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum,
                                     weight_decay=config.weight_decay)
    optimizer.build(variables)
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

  num_replicas = strategy.num_replicas_in_sync
  train_step = make_train_step(model, optimizer, strategy, finetune,
                               config.trunk_learning_rate_factor)
  # TPUs compile one program per shape: image batches padded to one square size there (the
  # long-side cap rounded up to the trunk's stride, as `prepare_image` pads).
  fixed_size = None
  if finetune and isinstance(strategy, tf.distribute.TPUStrategy):
    side = -(-int(image_settings[1]) // int(geometry[0])) * int(geometry[0])
    fixed_size = (side, side)

  # --- the loop ---
  log(f'detector: training {total_steps} steps ({config.epochs:g} epochs of '
      f'{len(bags.image_ids)} images, {config.images_per_batch} images x '
      f'{config.rois_per_image} RoIs per step' +
      (f', {num_replicas} replicas' if num_replicas > 1 else '') + f') in {folder}')
  bar = progress(total_steps, 'detector training', 'step') if progress else None
  if bar and start_step:
    bar.update(start_step)
  started, window = time.time(), []
  for step in range(start_step, total_steps):
    ids = images_of_step(bags, config.seed, step, config.images_per_batch)
    if finetune:
      batch = make_image_batch(bags, ids, training_boxes, config, config.seed, step,
                               (*image_settings, int(geometry[0])), num_replicas=num_replicas,
                               fixed_size=fixed_size)
    else:
      batch = make_batch(bags, ids, training_boxes, config, config.seed, step,
                         num_replicas=num_replicas)
    metrics = train_step(batch, (config.seed, step))
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
      log(f'detector: step {step + 1}/{total_steps}: loss {mean["loss"]:.3f} (class '
          f'{mean["class_loss"]:.3f}, box {mean["box_loss"]:.3f}), RoI accuracy '
          f'{mean["accuracy"]:.3f}, lr {float(schedule(step)):g}, '
          f'{(step + 1 - start_step) / (time.time() - started):.1f} steps/s')
      window = []
    if bar:
      bar.update(1)
  if bar:
    bar.close()

  # --- the finished model: written atomically, then marked done. ---
  temp = os.path.join(folder, 'model.tmp.keras')
  model.save(temp)
  os.replace(temp, os.path.join(folder, MODEL_FILE))
  atomic.write_json(os.path.join(folder, _DONE_FILE), {'steps': total_steps})
  shutil.rmtree(os.path.join(folder, 'checkpoints'), ignore_errors=True)
  return model
