"""AlexNet-style conv trunk (the 5 conv layers of Caffe's bvlc_alexnet), random or user weights.

The paper's detectors use AlexNet pretrained on ImageNet. No such weights ship offline, so this
trunk is either randomly initialised (seeded) or loaded from a Keras `.weights.h5` file the user
saved from this same architecture (`trunk.save_weights('x.weights.h5')`, e.g. after converting
Caffe/torch AlexNet weights: the layers have Caffe's shapes, grouped convs included).

Architecture (layer names in brackets), following bvlc_alexnet's `deploy.prototxt`:

  images RGB 0-255 -> [preprocessing] BGR minus the ImageNet mean (Caffe's input convention)
  [conv1]  96 @ 11x11 / 4, ReLU   -> [norm1] LRN (5 channels, alpha 1e-4, beta 0.75, k 1)
                                  -> [pool1] max 3x3 / 2
  [conv2] 256 @ 5x5, groups 2, ReLU -> [norm2] LRN -> [pool2] max 3x3 / 2
  [conv3] 384 @ 3x3, ReLU
  [conv4] 384 @ 3x3, groups 2, ReLU
  [conv5] 256 @ 3x3, groups 2, ReLU   (returned; pool5 and the fc layers are left out)

LRN is kept (not replaced by batch norm) so that Caffe AlexNet weights would work unchanged.

Deviation from Caffe, on purpose: every conv and pool uses keras `padding='same'` (Caffe pads
conv1 by 0, conv2 by 2, conv3-5 by 1, and its pools round up). With 'same' the output size is
exactly `ceil(H / 16) x ceil(W / 16)` for any input size (each stage computes ceil(n / stride),
and nested ceilings of divisions compose), so the stride is exactly 4 * 2 * 2 = 16 and output cell
`(i, j)` covers about the 16x16 input block starting at `(16 i, 16 j)`: its centre is within a
few pixels of `(16 i + 8, 16 j + 8)`; 'same' pads the bottom/right by at most one pixel more than
the top/left, so the offset depends slightly on H mod 16 and W mod 16.
"""

import os
import re

import keras
import tensorflow as tf

from click_supervision.backbones.vgg16 import IMAGENET_MEAN_BGR
from click_supervision.backbones.vgg16 import CaffePreprocessing
from click_supervision.errors import UserError

ALEXNET_STRIDE = 16
ALEXNET_CHANNELS = 256

# (name, filters, kernel size, stride, groups) of the conv layers; groups=2 marks Caffe's split
# over two GPUs. An LRN and a max-pool follow conv1 and conv2.
_CONVS = (
    ('conv1', 96, 11, 4, 1),
    ('conv2', 256, 5, 1, 2),
    ('conv3', 384, 3, 1, 1),
    ('conv4', 384, 3, 1, 2),
    ('conv5', 256, 3, 1, 2),
)


@keras.saving.register_keras_serializable(package='click_supervision')
class LocalResponseNormalization(keras.layers.Layer):
  """Caffe's across-channel LRN: `x / (k + alpha / n * sum of x^2 over n channels) ** beta`.

  Args:
    size: n, the number of channels summed over (odd), centred on each channel.
    alpha: Caffe's alpha (divided by `size` here, as Caffe does).
    beta: the exponent.
    k: the additive constant.

  Call args:
    x: float `[B, H, W, C]`.

  Returns:
    float `[B, H, W, C]`, same dtype.
  """

  def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
    super().__init__(**kwargs)
    if size % 2 != 1:
      raise ValueError(f'LRN size must be odd, got {size}')
    self.size = int(size)
    self.alpha = float(alpha)
    self.beta = float(beta)
    self.k = float(k)

  def call(self, x):
    # tf.nn's alpha multiplies the plain sum of squares; Caffe's multiplies the mean over `size`.
    return tf.nn.local_response_normalization(x, depth_radius=self.size // 2, bias=self.k,
                                              alpha=self.alpha / self.size, beta=self.beta)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({'size': self.size, 'alpha': self.alpha, 'beta': self.beta, 'k': self.k})
    return config


def _load_user_weights(trunk, path):
  """Loads a Keras `.weights.h5` saved from `alexnet_trunk` into `trunk`; UserError otherwise."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserError(f'{path}: AlexNet trunk weights file not found')
  if not path.endswith('.weights.h5'):
    raise UserError(f'{path}: AlexNet trunk weights must be a Keras .weights.h5 file saved '
                    f'with alexnet_trunk(...).save_weights(path)')
  try:
    trunk.load_weights(path)
  except (ValueError, OSError, KeyError, TypeError) as e:
    raise UserError(f'{path}: does not hold weights of this AlexNet trunk '
                    f'({_summarize_load_error(e)}); save them with '
                    f'alexnet_trunk(groups=...).save_weights(path)') from e


def _summarize_load_error(error):
  """One line from keras's load_weights error, whose text embeds whole variable values."""
  text = str(error)
  # Keras ends a mismatch message with the list of layers it could not load.
  _, _, failed = text.partition('List of objects that could not be loaded:')
  names = re.findall(r'name=(\w+)', failed)
  shapes = re.search(r'variable\.shape=\([^)]*\), Received: value\.shape=\([^)]*\)', text)
  if names:
    summary = 'layers not loaded: ' + ', '.join(names)
    return summary + (f'; first mismatch: {shapes.group(0)}' if shapes else '')
  lines = text.strip().splitlines()
  return lines[0] if lines else type(error).__name__


def alexnet_trunk(weights=None, seed=0, groups=2, name='alexnet_trunk'):
  """Builds the AlexNet-style trunk: 0-255 RGB images -> conv5 feature map (stride 16).

  Args:
    weights: None for a seeded random initialisation, or the path of a Keras `.weights.h5` file
      saved from a trunk built with the same `groups`.
    seed: int seed of the random initialisers (He normal kernels, zero biases); the same seed
      gives the same weights.
    groups: 2 for Caffe's grouped conv2/conv4/conv5 (Caffe's weight shapes), 1 for dense convs.
    name: the model's name.

  Returns:
    A functional keras.Model mapping float32 `[B, H, W, 3]` RGB 0-255 to float32
    `[B, ceil(H / 16), ceil(W / 16), 256]` (post-ReLU conv5). Extra attributes:
    `feature_stride` (16), `feature_offset` (6.5 px), `feature_channels` (256),
    `preprocessing_mean_bgr`.

  Raises:
    UserError: `weights` is a path that does not exist or does not match this architecture.
  """
  if groups not in (1, 2):
    raise ValueError(f'groups must be 1 or 2, got {groups}')
  images = keras.Input(shape=(None, None, 3), dtype='float32', name='images')
  x = CaffePreprocessing(IMAGENET_MEAN_BGR, name='preprocessing')(images)
  for index, (conv_name, filters, size, stride, conv_groups) in enumerate(_CONVS):
    x = keras.layers.Conv2D(
        filters, size, strides=stride, padding='same', groups=groups if conv_groups > 1 else 1,
        activation='relu', name=conv_name,
        kernel_initializer=keras.initializers.HeNormal(seed=seed * 100 + index),
        bias_initializer='zeros')(x)
    if conv_name in ('conv1', 'conv2'):
      x = LocalResponseNormalization(name=conv_name.replace('conv', 'norm'))(x)
      x = keras.layers.MaxPooling2D(3, strides=2, padding='same',
                                    name=conv_name.replace('conv', 'pool'))(x)
  trunk = keras.Model(images, x, name=name)
  if weights is not None:
    _load_user_weights(trunk, weights)

  trunk.feature_stride = ALEXNET_STRIDE
  trunk.feature_channels = ALEXNET_CHANNELS
  # 'same' padding on inputs whose sides are multiples of 16 pads one more row at the bottom in
  # conv1 (11x11 / 4: +0.5 px), pool1 (3x3 / 2 over stride-4 cells: +2 px) and pool2 (+4 px), so
  # cell i is centered on pixel (i + 0.5) * 16 + 6.5 (see click_supervision.features).
  trunk.feature_offset = 6.5
  trunk.preprocessing_mean_bgr = IMAGENET_MEAN_BGR
  return trunk
