"""RoI features: one trunk forward pass per image, then RoI pooling of every proposal.

The same `RoiPooling` layer serves the detector later. Coordinates: boxes arrive in image pixels
(`click_supervision.boxes` convention). Feature cell `i` of a trunk with stride `s` is centered on
image pixel coordinate `(i + 0.5) * s + offset`, where the trunk declares `feature_offset`: TF
'same' padding of a stride-2 convolution on an even-sized input puts the extra padding row at the
bottom, which moves the receptive field center by +0.5 input pixel, so EfficientNet's five
stride-2 layers give offset 0.5 * (1 + 2 + 4 + 8 + 16) = 15.5 px, while VGG's 2x2 max pools give
0. That holds when every layer sees an even size, so `FeatureExtractor` pads each image at the
bottom/right to a multiple of the stride (replicating the border) before the trunk.
"""

import time

import keras
import numpy as np
import tensorflow as tf



@keras.saving.register_keras_serializable(package='click_supervision')
class RoiPooling(keras.layers.Layer):
  """Pools a feature map inside boxes into fixed-size grids (RoIAlign-style, average of samples).

  Each box is cut into `pool_size x pool_size` bins; each bin is the average of
  `samples_per_bin x samples_per_bin` bilinear samples placed at the centers of a regular
  sub-grid of the bin (`tf.image.crop_and_resize` does the sampling; its normalized coordinates
  are converted here). Samples between the outer cell centers and the image border take the
  border cell's value; samples further outside the feature map are 0.

  Args:
    stride: int, image pixels per feature cell.
    offset: float, pixels; feature cell `i` is centered on pixel `(i + 0.5) * stride + offset`
      (module docstring).
    pool_size: output grid side.
    samples_per_bin: bilinear samples per bin side.

  Call args:
    feature_maps: float [B, h, w, C], the trunk output.
    boxes: float32 [N, 4], `[ymin, xmin, ymax, xmax]` in pixels of the image the trunk saw.
    box_indices: int32 [N], which image of the batch each box belongs to.
  Returns:
    float32 [N, pool_size, pool_size, C].
  """

  def __init__(self, stride, offset=0.0, pool_size=2, samples_per_bin=2, **kwargs):
    super().__init__(**kwargs)
    self.stride = int(stride)
    self.offset = float(offset)
    self.pool_size = int(pool_size)
    self.samples_per_bin = int(samples_per_bin)

  def call(self, feature_maps, boxes, box_indices):
    # Replicate the border cells once: samples within half a cell of the image border (between
    # the outer cell centers and the image edge) then take the border value instead of
    # crop_and_resize's zero extrapolation, so boxes touching the border are not dimmed.
    feature_maps = tf.pad(tf.cast(feature_maps, tf.float32), [[0, 0], [1, 1], [1, 1], [0, 0]],
                          mode='SYMMETRIC')
    height = tf.cast(tf.shape(feature_maps)[1], tf.float32)
    width = tf.cast(tf.shape(feature_maps)[2], tf.float32)
    samples = self.pool_size * self.samples_per_bin
    # Pixel -> feature coordinate (cells from the first cell's center), +1 for the padding.
    cells = (tf.cast(boxes, tf.float32) - self.offset) / self.stride - 0.5 + 1.0
    # Sample at sub-bin centers: the first and last samples sit half a step inside the box.
    step_y = (cells[:, 2] - cells[:, 0]) / samples
    step_x = (cells[:, 3] - cells[:, 1]) / samples
    first_y, last_y = cells[:, 0] + step_y / 2, cells[:, 2] - step_y / 2
    first_x, last_x = cells[:, 1] + step_x / 2, cells[:, 3] - step_x / 2
    # crop_and_resize maps normalized 0 -> first row center, 1 -> last row center.
    norm_y = tf.maximum(height - 1.0, 1.0)
    norm_x = tf.maximum(width - 1.0, 1.0)
    normalized = tf.stack([first_y / norm_y, first_x / norm_x, last_y / norm_y, last_x / norm_x],
                          axis=1)
    crops = tf.image.crop_and_resize(feature_maps, normalized, tf.cast(box_indices, tf.int32),
                                     [samples, samples], method='bilinear',
                                     extrapolation_value=0.0)
    return tf.nn.avg_pool2d(crops, self.samples_per_bin, self.samples_per_bin, 'VALID')

  def get_config(self):
    config = super().get_config()
    config.update({'stride': self.stride, 'offset': self.offset, 'pool_size': self.pool_size,
                   'samples_per_bin': self.samples_per_bin})
    return config


def rescale_factor(height, width, short_side, max_long_side):
  """Scale that brings the short side to `short_side` without the long side passing
  `max_long_side` (Fast R-CNN's rule).

  The cap holds at native size too: one large photo would otherwise run the trunk on all its
  pixels (a 50-megapixel image, the decode limit, is 600 MB as float32 before the first layer).

  Args:
    height, width: the image size in pixels.
    short_side: target short side in pixels; 0 or None keeps the native size (scale 1.0) unless
      the long side passes `max_long_side`.
    max_long_side: cap on the scaled long side in pixels; 0 or None: no cap.
  Returns:
    float scale factor (1.0 for a native-size image within the cap).
  """
  scale = short_side / min(height, width) if short_side else 1.0
  if max_long_side and scale * max(height, width) > max_long_side:
    scale = max_long_side / max(height, width)
  return scale


def prepare_image(image, short_side, max_long_side, stride):
  """The trunk's input for `image`: resized by `rescale_factor`, padded at the bottom/right to a
  multiple of `stride` by repeating the last row/column (module docstring). Every path into a
  trunk (the map cache, the detector trained end to end, the served model) prepares images with
  `prepare_image_tf`; this is its eager form with NumPy factors.

  Args:
    image: uint8 [H, W, 3] RGB.
    short_side, max_long_side: `rescale_factor`'s.
    stride: the trunk's feature stride in pixels.
  Returns:
    (pixels float32 tensor [1, H', W', 3] 0-255, factors float32 numpy [4] multiplying `[ymin,
    xmin, ymax, xmax]` image pixels into the resized image; padding does not move boxes).
  """
  pixels, factors = prepare_image_tf(tf.convert_to_tensor(image), short_side, max_long_side,
                                     stride)
  return pixels, factors.numpy()


def prepare_image_tf(image, short_side, max_long_side, stride):
  """`prepare_image` in TensorFlow ops, eager or inside a `tf.function` (the served model).

  The scale follows `rescale_factor` in float64 and the size is rounded half to even (Python's
  `round`), so every path gives the same pixels and factors.

  Args:
    image: uint8 tensor [H, W, 3] (any size).
    short_side, max_long_side: Python numbers or None (`rescale_factor`).
    stride: Python int.
  Returns:
    (pixels float32 [1, H', W', 3], factors float32 [4]).
  """
  shape = tf.shape(image)
  height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  scale = tf.constant(1.0, tf.float64)
  if short_side:
    scale = short_side / tf.minimum(height, width)
  if max_long_side:
    long_side = tf.maximum(height, width)
    scale = tf.where(scale * long_side > max_long_side, max_long_side / long_side, scale)
  pixels = tf.cast(image, tf.float32)[None]
  size = tf.cast(tf.maximum(tf.round(tf.stack([height, width]) * scale), 1.0), tf.int32)
  pixels = tf.cond(
      tf.equal(scale, 1.0), lambda: pixels,
      lambda: tf.cond(scale < 1.0,
                      lambda: tf.image.resize(pixels, size, method='bilinear', antialias=True),
                      lambda: tf.image.resize(pixels, size, method='bilinear')))
  # Exact per-axis factors (in float64, then float32), so boxes land where the resized pixels are.
  factors = tf.cast(tf.cast(tf.shape(pixels)[1:3], tf.float64) / tf.stack([height, width]),
                    tf.float32)
  factors = tf.where(tf.equal(scale, 1.0), tf.ones([2]), factors)
  size = tf.shape(pixels)[1:3]
  pixels = _pad_replicate(pixels, -size[0] % stride, -size[1] % stride)
  return pixels, tf.concat([factors, factors], 0)


class FeatureExtractor:
  """Computes fixed-length RoI features for the proposals of one image at a time.

  Args:
    trunk: keras.Model mapping float32 [B, H, W, 3] RGB 0-255 to a feature map, with attributes
      `feature_stride` (int pixels per feature cell) and `feature_offset` (float pixels, module
      docstring), as `backbones.build_trunk` gives.
    pool_size: RoI grid side; the feature length is `pool_size**2 * channels`.
    context_scale: 0 (off), or the factor by which each box is also enlarged about its center
      and pooled the same way; the two grids are concatenated (feature length doubles). The
      enlarged box shows what surrounds the proposal, which tells a box cut around a whole
      object from one around a part or one with too much background.
    short_side: the image is resized so its short side has this many pixels before the trunk
      (None: native size); boxes are scaled the same way.
    max_long_side: cap on the resized long side.
    max_rois_per_call: RoIs pooled per call (bounds memory for many proposals).
    pad_stride: images are padded to a multiple of this (default: the trunk's stride); the lower
      part of a cut trunk pads to the whole trunk's stride (`precompute.compute_trunk_maps`).
  """

  def __init__(self, trunk, pool_size=2, short_side=600, max_long_side=1000,
               max_rois_per_call=4096, context_scale=0.0, pad_stride=None):
    if context_scale and context_scale <= 1.0:
      raise ValueError(f'context_scale must be 0 (off) or above 1, got {context_scale}')
    self.trunk = trunk
    self.context_scale = float(context_scale)
    self.short_side = short_side
    self.max_long_side = max_long_side
    self.stride = pad_stride or trunk.feature_stride
    self.pooler = MapPooler(trunk.feature_stride, trunk.feature_offset, pool_size=pool_size,
                            context_scale=context_scale, max_rois_per_call=max_rois_per_call)
    self.roi_pooling = self.pooler.roi_pooling
    # One trace for every image size: spatial dimensions are dynamic.
    self._forward = tf.function(
        lambda images: trunk(images, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])

  def __call__(self, image, boxes):
    """RoI features of `boxes` in `image`.

    Args:
      image: uint8 [H, W, 3] RGB.
      boxes: float32 [P, 4] pixels of `image`.
    Returns:
      (features float32 [P, D], timings dict with `trunk` and `pooling` seconds).
    """
    feature_map, factors, timings = self.trunk_map(image)
    start = time.perf_counter()
    features = self.pool(feature_map, np.asarray(boxes, np.float32).reshape(-1, 4) * factors)
    timings['pooling'] = time.perf_counter() - start
    return features, timings

  def trunk_map(self, image):
    """The trunk's feature map of `image`: what the trunk-map cache stores.

    Args:
      image: uint8 [H, W, 3] RGB.
    Returns:
      (feature_map float32 [h, w, C], factors float32 [4] multiplying `[ymin, xmin, ymax, xmax]`
      image pixels into the resized image the map was computed on, timings dict with `trunk`
      seconds).
    """
    pixels, factors = prepare_image(image, self.short_side, self.max_long_side, self.stride)
    start = time.perf_counter()
    feature_map = self._forward(pixels).numpy()[0]
    return feature_map, factors, {'trunk': time.perf_counter() - start}

  def pool(self, feature_map, scaled_boxes):
    """`MapPooler.__call__`: RoI features of boxes in the resized image's pixels."""
    return self.pooler(feature_map, scaled_boxes)

  def feature_dim(self):
    return self.pooler.feature_dim(int(self.trunk.output_shape[-1]))



class MapPooler:
  """RoI features from a trunk's feature map: the half of `FeatureExtractor` that runs on cached
  maps (the MIL learner and the detector head pool from the trunk-map cache with it).

  Args:
    stride, offset: the trunk's `feature_stride` (int px) and `feature_offset` (float px).
    pool_size: RoI grid side.
    context_scale: 0 (off) or the enlargement factor of a second, context grid.
    max_rois_per_call: RoIs pooled per call (bounds memory for many proposals).
  """

  def __init__(self, stride, offset, pool_size=3, context_scale=0.0, max_rois_per_call=4096):
    self.context_scale = float(context_scale)
    self.max_rois_per_call = max_rois_per_call
    self.roi_pooling = RoiPooling(stride=stride, offset=offset, pool_size=pool_size)
    self._pool = tf.function(
        lambda maps, boxes: tf.reshape(
            self.roi_pooling(maps, boxes, tf.zeros(tf.shape(boxes)[:1], tf.int32)),
            [tf.shape(boxes)[0], -1]),
        input_signature=[tf.TensorSpec([1, None, None, None], tf.float32),
                         tf.TensorSpec([None, 4], tf.float32)])

  def __call__(self, feature_map, scaled_boxes):
    """RoI features of boxes given in the pixels of the image the map was computed on.

    Args:
      feature_map: float [h, w, C] (float16 from the cache is fine: pooling runs in float32).
      scaled_boxes: float32 [P, 4] `[ymin, xmin, ymax, xmax]` pixels of the resized image
        (`boxes * factors`).
    Returns:
      float32 [P, D], D = pool_size**2 x C (twice that with the context grid).
    """
    maps = tf.convert_to_tensor(np.asarray(feature_map, np.float32)[None])
    scaled = np.asarray(scaled_boxes, np.float32).reshape(-1, 4)
    if self.context_scale:
      scaled = np.concatenate([scaled, enlarge_boxes(scaled, self.context_scale)])
    chunks = [self._pool(maps, scaled[i:i + self.max_rois_per_call]).numpy()
              for i in range(0, len(scaled), self.max_rois_per_call)]
    if not chunks:
      return np.zeros((0, self.feature_dim(feature_map.shape[-1])), np.float32)
    features = np.concatenate(chunks)
    if self.context_scale:  # [2P, D] -> [P, 2D]: the box's grid, then its context's.
      features = np.concatenate(np.split(features, 2), axis=1)
    return features

  def feature_dim(self, channels):
    return self.roi_pooling.pool_size ** 2 * int(channels) * (2 if self.context_scale else 1)


def enlarge_boxes(boxes, factor):
  """Scales float [N, 4] `[ymin, xmin, ymax, xmax]` boxes by `factor` about their centers (no
  clipping: RoiPooling handles samples outside the map)."""
  boxes = np.asarray(boxes, np.float32)
  center = (boxes[:, :2] + boxes[:, 2:]) / 2
  half = (boxes[:, 2:] - boxes[:, :2]) * (factor / 2)
  return np.concatenate([center - half, center + half], axis=1)


def _pad_replicate(images, pad_h, pad_w):
  """Pads [B, H, W, C] at the bottom/right by repeating the last row/column (pad sizes may be
  tensors; a zero pad repeats nothing)."""
  images = tf.concat([images, tf.repeat(images[:, -1:], pad_h, axis=1)], axis=1)
  return tf.concat([images, tf.repeat(images[:, :, -1:], pad_w, axis=2)], axis=2)
