"""The detector's inputs: training boxes, the per-image input of each training mode, and the
batch of a training step as a pure function of (seed, step).

Where a detector's per-image input comes from (`InputSource`, by `DetectorConfig.finetune`):

  none   `feature_maps`: the cached stride-32 trunk map (float16), plus the cached stride-16
         map of the cut (`cut_maps`) when the cut level is pooled too (`pool_cut`).
  upper  `cut_maps`: the cached stride-16 map below the trunk's cut; the step runs the upper part.
  top, all  `images`: the image file, prepared as the cache's maps were (`prepare_image_tf`).

Each image of a step is mirrored with probability 1/2 when `flip` is on, and prepared at a short
side drawn from `train_scales` when given (each scale has its own cached maps).

A training batch is a dict of numpy arrays (the contract of `make_batch`):

  feature_maps / cut_maps / images  [B, H, W, C], each image's array at the top left, zeros
                 around (float16 maps, float32 pixels)
  sizes          int32 [B, 2], each prepared image's height and width in pixels (absent with
                 `fixed_size`, where the model then runs the padded batch as one tensor)
  boxes          float32 [N, 4], the sampled RoIs in prepared-image pixels
  box_indices    int32 [N], the RoI's image in the batch (in its replica's block)
  labels         int32 [N], 0 background, c + 1 class c
  targets        float32 [N, 4], box-regression targets (`box_coding.encode`)
  valid          float32 [N], 0 for padding rows
  other_classes  float32 [N, C] (with an ignore rule): 1 where the RoI could be another instance
                 of class c (`sampling.other_instance_candidates`)

N = images x rois_per_image (padded). Under a `tf.distribute` strategy each replica builds the
batch of its own share of the step's images (`train.distributed_batches`). Everything random in a batch (the epoch's image
order, each image's flip and RoIs) is drawn from (seed, epoch) or (seed, step, image), so a
resumed run, and every worker of a distributed one, builds the same batches.
"""

import collections
import threading

import numpy as np

from click_supervision import bags as bags_lib
from click_supervision.detector import sampling

# The per-image input key of each `DetectorConfig.finetune` mode.
INPUT_OF_MODE = {'none': 'feature_maps', 'upper': 'cut_maps', 'top': 'images', 'all': 'images'}
MAP_KEYS = ('feature_maps', 'cut_maps', 'images')


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


_ORDERS = collections.OrderedDict()  # (bag source key, seed, epoch) -> that epoch's order.
_ORDERS_LOCK = threading.Lock()


def images_of_step(bags, seed, step, images_per_batch):
  """The image ids of batch `step` (epochs concatenated; the last batch of an epoch may take
  images of the next one)."""
  count = len(bags.image_ids)
  ids = []
  for position in range(step * images_per_batch, (step + 1) * images_per_batch):
    epoch, index = divmod(position, count)
    key = (bags.key, seed, epoch)
    with _ORDERS_LOCK:  # Drawn once per epoch, not at every step (input threads share it).
      if key not in _ORDERS:
        if len(_ORDERS) >= 4:
          _ORDERS.popitem(last=False)
        _ORDERS[key] = epoch_image_order(bags, seed, epoch)
      order = _ORDERS[key]
    ids.append(order[index])
  return ids


# NumPy parses an .npy header with `ast.literal_eval`, and CPython 3.11's AST constructor keeps a
# process-wide recursion counter that two threads using it at once corrupt ("SystemError: AST
# constructor recursion depth mismatch", seen with two input threads reading shards): shards are
# read one at a time.
_READ_LOCK = threading.Lock()


class _ShardMemo:
  """The last few shards read from each cache, shared by the input pipeline's threads."""

  def __init__(self, shards_per_cache=3):
    self._shards = collections.OrderedDict()
    self._size = shards_per_cache
    self._lock = threading.Lock()

  def entry(self, cache, image_id):
    shard = cache.shard_of(image_id)
    key = (cache.dir, shard)
    with self._lock:
      if key in self._shards:
        self._shards.move_to_end(key)
        return self._shards[key][image_id]
    with _READ_LOCK:  # Not the memo's lock: threads whose shards are in memory keep going.
      per_image = cache.read_shard(shard)
    if per_image is None:
      raise RuntimeError(f'{cache.shard_path(shard)} is missing or corrupt')
    with self._lock:
      self._shards[key] = per_image
      same_cache = [k for k in self._shards if k[0] == cache.dir]
      for old in same_cache[:-self._size]:
        del self._shards[old]
    return per_image[image_id]


class InputSource:
  """One image's detector input in a training mode (module docstring), and its proposals.

  Args:
    bags: `bags.TrunkMapBags` over the images (proposals, sizes, paths, the stride-32 maps, the
      cut maps for `upper` and `pool_cut`, and the mirrored twins of the maps for flips).
    mode: a `DetectorConfig.finetune` value.
    pool_cut: also give the cut maps in mode `none`.
    image_settings: (short_side, max_long_side, stride) of `prepare_image_tf` (`top`, `all`).
    max_long_side: the caches' cap on the prepared long side (fixed TPU shapes).
    scales: optional dict short side (pixels) -> `bags.TrunkMapBags` over the same images with
      the maps of images prepared at that short side (for multi-scale training and testing);
      `bags` holds the maps at `base_scale`.
    base_scale: the short side of `bags`' maps (`FeatureConfig.short_side`).
  """

  def __init__(self, bags, mode='none', pool_cut=False, image_settings=None,
               max_long_side=1000, scales=None, base_scale=None):
    self.scales = dict(scales or {})
    self.base_scale = base_scale
    self.bags = bags
    self.image_ids = bags.image_ids
    self.mode = mode
    self.keys = [INPUT_OF_MODE[mode]] + (['cut_maps'] if pool_cut and mode == 'none' else [])
    self.cut_maps = getattr(bags, 'cut_maps', None)
    if 'cut_maps' in self.keys and self.cut_maps is None:
      raise ValueError(f'mode {mode!r} with pool_cut={pool_cut} needs the cut maps\' cache')
    if mode in ('top', 'all') and image_settings is None:
      raise ValueError(f'mode {mode!r} needs the image settings')
    self.image_settings = image_settings
    self.max_long_side = max_long_side
    self._memo = _ShardMemo()

  def subset(self, image_ids):
    """The same source over only `image_ids`."""
    import copy  # pylint: disable=g-import-not-at-top
    view = copy.copy(self)
    view.bags = self.bags.subset(image_ids)
    view.scales = {s: b.subset(image_ids) for s, b in self.scales.items()}
    view.image_ids = view.bags.image_ids
    return view

  def proposals(self, image_id, mirrored=False):
    """(boxes float32 [P, 4] pixels with the whole-image box, objectness float32 [P])."""
    entry = self._memo.entry(self.bags.proposals, image_id)
    boxes, scores = self.bags._boxes(image_id, entry)  # pylint: disable=protected-access
    if mirrored:
      boxes = bags_lib.mirror_boxes(boxes, self.bags.size(image_id)[1])
    return boxes, scores

  def inputs(self, image_id, mirrored=False, scale=None):
    """One image's input, of the mirrored image with `mirrored`, at short side `scale` (None:
    the base scale).

    Returns:
      dict with this mode's keys (`feature_maps` / `cut_maps` float16 [h, w, C], or `images`
      float32 [H, W, 3]), `factors` float32 [4] (image pixels -> prepared pixels) and `size`
      int32 [2] (the prepared image's pixels).
    """
    out = {}
    bags = self.bags
    if scale is not None and scale != self.base_scale:
      if scale not in self.scales:
        raise ValueError(f'no maps at short side {scale} (have {self.base_scale} and '
                         f'{sorted(self.scales)})')
      bags = self.scales[scale]
    if 'feature_maps' in self.keys:
      if mirrored and bags.mirrored_maps is None:
        raise ValueError('flips need the mirrored images\' trunk maps')
      entry = self._memo.entry(bags.mirrored_maps if mirrored else bags.features, image_id)
      out['feature_maps'] = entry['map']
      out['factors'] = entry['factors']
      out['size'] = np.array(entry['map'].shape[:2], np.int32) * int(entry['geometry'][0])
    if 'cut_maps' in self.keys:
      cache = bags.mirrored_cut_maps if mirrored else bags.cut_maps
      if cache is None:
        raise ValueError('flips need the mirrored images\' cut maps')
      entry = self._memo.entry(cache, image_id)
      out['cut_maps'] = entry['map']
      out['factors'] = entry['factors']
      # The lower part's input is padded to the whole trunk's stride (twice the cut's).
      out['size'] = np.array(entry['map'].shape[:2], np.int32) * int(entry['geometry'][0])
    if 'images' in self.keys:
      from click_supervision import features as features_lib  # pylint: disable=g-import-not-at-top
      from click_supervision.datasets import images as images_lib  # pylint: disable=g-import-not-at-top
      image = images_lib.load_image(self.bags.path(image_id))
      if mirrored:
        image = np.ascontiguousarray(image[:, ::-1])
      short_side, long_side, stride = self.image_settings
      pixels, factors = features_lib.prepare_image(
          image, short_side if scale is None else scale, long_side, stride)
      out['images'] = pixels.numpy()[0]
      out['factors'] = factors
      out['size'] = np.array(out['images'].shape[:2], np.int32)
    return out

  def geometry(self, trunk=None):
    """The model's map geometry (`fast_rcnn.build_detector`) from the caches or the trunk."""
    if trunk is not None:
      return trunk_geometry(trunk)
    first = self.image_ids[0]
    entry = self._memo.entry(self.bags.features, first)
    stride, offset = (float(v) for v in entry['geometry'])
    geometry = {'stride': stride, 'offset': offset, 'channels': int(entry['map'].shape[-1])}
    if self.cut_maps is not None:
      entry = self._memo.entry(self.cut_maps, first)
      stride, offset = (float(v) for v in entry['geometry'])
      geometry.update(cut_stride=stride, cut_offset=offset,
                      cut_channels=int(entry['map'].shape[-1]))
    return geometry


def trunk_geometry(trunk):
  """`fast_rcnn.build_detector`'s geometry dict of a trunk (`backbones.build_trunk`)."""
  geometry = {'stride': trunk.feature_stride, 'offset': trunk.feature_offset,
              'channels': trunk.feature_channels}
  if hasattr(trunk, 'cut_stride'):
    geometry.update(cut_stride=trunk.cut_stride, cut_offset=trunk.cut_offset,
                    cut_channels=trunk.cut_channels)
  return geometry


def _padded_rows(per_image, rows):
  """Per-image RoI arrays concatenated and zero-padded to `rows` rows (fixed shapes).

  Args:
    per_image: dict name -> list of arrays, one per image (first axis: RoIs).
    rows: rows of the result.
  Returns:
    dict name -> [rows, ...] array, plus `valid` float32 [rows] (0 for padding rows).
  """
  out = {k: np.concatenate(v) for k, v in per_image.items()}
  count = len(next(iter(out.values())))
  out = {k: np.pad(v, [(0, rows - count)] + [(0, 0)] * (v.ndim - 1)) for k, v in out.items()}
  out['valid'] = np.pad(np.ones(count, np.float32), [(0, rows - count)])
  return out


def _stack_padded(arrays, fixed_size=None, stride=1):
  """[h, w, C] arrays -> [B, H, W, C], each at the top left with zeros around (H, W: the
  largest, or `fixed_size` pixels / stride)."""
  if fixed_size is not None:
    height, width = fixed_size[0] // stride, fixed_size[1] // stride
  else:
    height, width = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
  out = np.zeros((len(arrays), height, width, arrays[0].shape[-1]), arrays[0].dtype)
  for j, a in enumerate(arrays):
    out[j, :a.shape[0], :a.shape[1]] = a
  return out


def make_batch(source, image_ids, training_boxes, config, seed, step, fixed_size=None,
               num_classes=None, first_image=0):
  """One step's batch (the module docstring's contract).

  Args:
    source: `InputSource`.
    image_ids: the step's images (`images_of_step`), or a replica's share of them (each
      replica builds its own batch: `train.distributed_batches`).
    training_boxes: dict image_id -> (boxes float32 [G, 4], labels int [G]); images without an
      entry give background RoIs only.
    config: `DetectorConfig`.
    seed, step: what the randomness is drawn from.
    fixed_size: optional (height, width) in pixels every map or image is padded to (TPUs
      compile one program per shape); `sizes` is then left out.
    num_classes: C, needed by an ignore rule (`other_classes`).
    first_image: the position of `image_ids[0]` in the step's whole batch (a replica building
      only its share draws the same randomness as the whole batch would).
  Returns:
    dict of numpy arrays.
  """
  ignore = config.ignore_rule != 'none'
  inputs = collections.defaultdict(list)
  rows = collections.defaultdict(list)
  for j, image_id in enumerate(image_ids):
    rng = np.random.default_rng([seed, step, first_image + j])
    mirrored = bool(config.flip and rng.random() < 0.5)
    scale = int(rng.choice(config.train_scales)) if config.train_scales else None
    proposals, _ = source.proposals(image_id, mirrored)
    boxes, box_labels = training_boxes.get(
        image_id, (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
    if mirrored:
      boxes = bags_lib.mirror_boxes(boxes, source.bags.size(image_id)[1])
    sample = sampling.sample_rois(
        proposals, boxes, box_labels, config.rois_per_image, rng, config.foreground_fraction,
        config.foreground_iou, config.background_iou_low)
    image = source.inputs(image_id, mirrored, scale)
    for key in source.keys:
      inputs[key].append(image[key])
    inputs['sizes'].append(image['size'])
    rows['boxes'].append((sample['rois'] * image['factors']).astype(np.float32))
    rows['box_indices'].append(np.full(len(sample['rois']), j, np.int32))
    rows['labels'].append(sample['labels'])
    rows['targets'].append(sample['targets'])
    if ignore:
      rows['other_classes'].append(sampling.other_instance_candidates(
          sample['rois'], boxes, box_labels, num_classes, config.ignore_overlap))
  batch = _padded_rows(rows, len(image_ids) * config.rois_per_image)
  strides = {'images': 1}
  for key in source.keys:
    if key != 'images':  # Map cells per prepared pixel: from the first image's size.
      strides[key] = int(inputs['sizes'][0][0]) // inputs[key][0].shape[0]
    batch[key] = _stack_padded(inputs[key], fixed_size, strides[key])
  if fixed_size is None:
    batch['sizes'] = np.stack(inputs['sizes']).astype(np.int32)
  return batch
