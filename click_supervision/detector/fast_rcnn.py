"""`FastRcnn`: a trunk (whole, cut in two, or left out), RoI pooling on one or two levels, and
`FastRcnnHead`; and `build_detector`, which makes one for a training run or a served model.

Where the model starts depends on what the caller has (the training modes of `detector.train`):

  images        float32 [B, H, W, 3] RGB 0-255, prepared by `detector.serving.prepare_image`:
                the whole trunk runs (serving; `finetune` `top` / `all`).
  cut_maps      float [B, h, w, C_cut], the cached stride-16 map of the trunk's lower part: the
                upper part runs (`finetune` `upper`).
  feature_maps  float [B, h, w, C], the cached stride-32 map of the whole trunk (plus
                `cut_maps` when the cut level is pooled too): no trunk runs (`finetune` `none`).

Each proposal is pooled from the stride-32 map into a `pool_size x pool_size` grid and, with
`pool_cut`, also from the stride-16 map; each level's grid is flattened and L2-normalised on its
own before the levels are concatenated, so a level's weight in the head's input does not depend
on its channel count or activation scale. With one level this is the head's own normalisation
(`FastRcnnHead`), so a head on cached maps gives the same numbers as the model on the image.

Batches of images of different sizes are zero-padded to one size; `sizes` (int32 [B, 2], the
prepared images' height and width in pixels, multiples of the trunk's stride) lets the model run
each image alone on its own pixels, so a padded batch gives exactly what each image gives on its
own (the test runs one image at a time). Without `sizes` the batch runs as one tensor (fixed
shapes, for TPUs).
"""

import keras
import tensorflow as tf

from click_supervision import features as features_lib
from click_supervision.detector import head as head_lib


@keras.saving.register_keras_serializable(package='click_supervision')
class FastRcnn(keras.Model):
  """Fast R-CNN style detector over externally given proposals.

  Args:
    num_classes: C.
    feature_stride: int, image pixels per cell of the stride-32 (top) map.
    feature_offset: float, pixels (`features` module docstring).
    pool_size: RoI grid side (on every pooled level).
    hidden_units, dropout, seed: the head's (`FastRcnnHead`).
    trunk: optional keras.Model, float32 [B, H, W, 3] RGB 0-255 -> the top map. A trunk from
      `backbones.build_trunk(cut=True)` has nested models `lower` and `upper` and takes
      `cut_maps` too.
    cut_stride, cut_offset: geometry of the cut (stride-16) map; 0 when there is none.
    pool_cut: pool the cut map too (needs `cut_stride`).

  Call args:
    inputs: dict (module docstring) with `boxes` float32 [N, 4] `[ymin, xmin, ymax, xmax]` in
      pixels of the prepared image, `box_indices` int32 [N] (which image of the batch), one of
      `images` / `cut_maps` / `feature_maps` (+ `cut_maps`), and optionally `sizes`.
    training: dropout in the head (the trunk always runs in inference mode: BatchNorm frozen,
      batches being 1-2 images).
    dropout_seed: optional int32 [2] (`FastRcnnHead`).
  Returns:
    the head's dict: `class_logits` float32 [N, C + 1], `box_deltas` float32 [N, C, 4].
  """

  def __init__(self, num_classes, feature_stride, feature_offset=0.0, pool_size=3,
               hidden_units=1024, dropout=0.5, seed=None, trunk=None, cut_stride=0,
               cut_offset=0.0, pool_cut=False, **kwargs):
    super().__init__(**kwargs)
    if pool_cut and not cut_stride:
      raise ValueError('pool_cut needs the cut map\'s geometry (cut_stride)')
    self.num_classes = int(num_classes)
    self.feature_stride = int(feature_stride)
    self.feature_offset = float(feature_offset)
    self.pool_size = int(pool_size)
    self.cut_stride = int(cut_stride)
    self.cut_offset = float(cut_offset)
    self.pool_cut = bool(pool_cut)
    self.trunk = trunk
    self.roi_pooling = features_lib.RoiPooling(stride=self.feature_stride,
                                               offset=self.feature_offset,
                                               pool_size=self.pool_size)
    self.cut_pooling = (features_lib.RoiPooling(stride=self.cut_stride, offset=self.cut_offset,
                                                pool_size=self.pool_size, name='cut_pooling')
                        if self.pool_cut else None)
    self.head = head_lib.FastRcnnHead(num_classes, hidden_units=hidden_units, dropout=dropout,
                                      seed=seed)

  @property
  def is_cut(self):
    """Whether the trunk is the composition of a `lower` and an `upper` model."""
    return self.trunk is not None and any(l.name == 'upper' for l in self.trunk.layers)

  def part(self, name):
    """The trunk's nested `lower` or `upper` model."""
    return self.trunk.get_layer(name)

  def call(self, inputs, training=False, dropout_seed=None):
    return self.head(self.roi_features(inputs), training=training, dropout_seed=dropout_seed)

  def roi_features(self, inputs):
    """The head's input: float32 [N, D], each pooled level flattened and L2-normalised."""
    boxes = tf.cast(inputs['boxes'], tf.float32)
    box_indices = tf.cast(inputs['box_indices'], tf.int32)
    first = next(inputs[k] for k in ('images', 'cut_maps', 'feature_maps') if k in inputs)
    if 'sizes' not in inputs or first.shape[0] is None:  # (Unknown batch: a symbolic build.)
      return self._pool(self._maps(inputs, None, None), boxes, box_indices)
    # One image at a time on its own pixels (module docstring); rows are stitched back in order.
    rows, parts = [], []
    for i in range(first.shape[0]):
      chosen = tf.cast(tf.where(tf.equal(box_indices, i))[:, 0], tf.int32)
      maps = self._maps(inputs, i, tf.cast(inputs['sizes'][i], tf.int32))
      parts.append(self._pool(maps, tf.gather(boxes, chosen), tf.zeros_like(chosen)))
      rows.append(chosen)
    return tf.dynamic_stitch(rows, parts)

  def _maps(self, inputs, i, size):
    """{'top': [b, h, w, C], 'cut': [b, h', w', C'] when pooled} for image i (all when None)."""

    def crop(name, stride):
      x = inputs[name]
      if i is None:
        return tf.cast(x, tf.float32)
      return tf.cast(x[i:i + 1, :size[0] // stride, :size[1] // stride], tf.float32)

    maps = {}
    if 'images' in inputs:
      if self.trunk is None:
        raise ValueError('this FastRcnn has no trunk: give it feature maps, not `images`')
      pixels = crop('images', 1)
      if self.is_cut:
        maps['cut'] = self.part('lower')(pixels, training=False)
        maps['top'] = self.part('upper')(maps['cut'], training=False)
      else:
        maps['top'] = self.trunk(pixels, training=False)
    elif 'feature_maps' in inputs:
      maps['top'] = crop('feature_maps', self.feature_stride)
      if self.pool_cut:
        maps['cut'] = crop('cut_maps', self.cut_stride)
    else:
      if not self.is_cut:
        raise ValueError('`cut_maps` need a trunk cut into `lower` and `upper` parts')
      maps['cut'] = crop('cut_maps', self.cut_stride)
      maps['top'] = self.part('upper')(maps['cut'], training=False)
    return maps

  def _pool(self, maps, boxes, box_indices):
    levels = [(self.roi_pooling, maps['top'])]
    if self.pool_cut:
      levels.append((self.cut_pooling, maps['cut']))
    flat = []
    for pooling, feature_map in levels:
      pooled = pooling(feature_map, boxes, box_indices)
      flat.append(tf.math.l2_normalize(tf.reshape(pooled, [tf.shape(boxes)[0], -1]), axis=1))
    return flat[0] if len(flat) == 1 else tf.concat(flat, axis=1)

  def feature_dim(self, channels, cut_channels=0):
    """Length of `roi_features` rows for maps of `channels` (and `cut_channels`)."""
    return self.pool_size ** 2 * (int(channels) + (int(cut_channels) if self.pool_cut else 0))

  def get_config(self):
    config = super().get_config()
    config.update({
        'num_classes': self.num_classes, 'feature_stride': self.feature_stride,
        'feature_offset': self.feature_offset, 'pool_size': self.pool_size,
        'hidden_units': self.head.hidden_units, 'dropout': self.head.dropout,
        'seed': self.head.seed, 'cut_stride': self.cut_stride, 'cut_offset': self.cut_offset,
        'pool_cut': self.pool_cut,
        'trunk': keras.saving.serialize_keras_object(self.trunk) if self.trunk else None})
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    if config.get('trunk') is not None:
      trunk = keras.saving.deserialize_keras_object(config['trunk'])
      # Plain attributes of the trunk (`backbones.build_trunk`) are not part of a Keras config.
      trunk.feature_stride = config['feature_stride']
      trunk.feature_offset = config['feature_offset']
      if config.get('cut_stride'):
        trunk.cut_stride, trunk.cut_offset = config['cut_stride'], config['cut_offset']
      config['trunk'] = trunk
    return cls(**config)


def build_detector(num_classes, config, geometry, trunk=None):
  """A built `FastRcnn` for `config.DetectorConfig`.

  Args:
    num_classes: C.
    config: `DetectorConfig` (pool_size, pool_cut, hidden_units, dropout, seed).
    geometry: dict with `stride`, `offset`, `channels` of the top map and, for a cut trunk or
      cut maps, `cut_stride`, `cut_offset`, `cut_channels`.
    trunk: optional trunk (module docstring); without one the model runs on cached maps.
  Returns:
    the model, called once on a dummy batch (its weights exist).
  """
  cut_stride = int(geometry.get('cut_stride') or 0)
  model = FastRcnn(num_classes, int(geometry['stride']), float(geometry['offset']),
                   pool_size=config.pool_size, hidden_units=config.hidden_units,
                   dropout=config.dropout, seed=config.seed, trunk=trunk, cut_stride=cut_stride,
                   cut_offset=float(geometry.get('cut_offset') or 0.0),
                   pool_cut=config.pool_cut)
  stride = int(geometry['stride'])
  inputs = {'boxes': tf.zeros([1, 4]), 'box_indices': tf.zeros([1], tf.int32)}
  if trunk is not None:
    inputs['images'] = tf.zeros([1, 2 * stride, 2 * stride, 3])
  else:
    inputs['feature_maps'] = tf.zeros([1, 2, 2, int(geometry['channels'])])
    if config.pool_cut:
      inputs['cut_maps'] = tf.zeros([1, 4, 4, int(geometry['cut_channels'])])
  model(inputs)
  return model
