"""Tests of the AlexNet-style trunk: geometry, seeding, preprocessing, LRN, user weights."""

import keras
import numpy as np
import pytest

from helpers import random_images
from click_supervision.backbones import alexnet
from click_supervision.errors import UserError


@pytest.fixture(scope='module')
def trunk():
  return alexnet.alexnet_trunk(seed=0)


@pytest.mark.parametrize('height, width', [(64, 96), (65, 97), (17, 33), (16, 16), (500, 375)])
def test_conv5_shape_is_ceil_of_sixteenth(trunk, height, width):
  features = trunk(random_images((1, height, width, 3)))
  assert features.shape == (1, -(-height // 16), -(-width // 16), 256)
  assert features.dtype == 'float32'
  assert np.all(np.asarray(features) >= 0)  # Post-ReLU.
  assert (trunk.feature_stride, trunk.feature_channels) == (16, 256)


def test_caffe_layer_shapes(trunk):
  # bvlc_alexnet's conv parameter shapes (grouped conv2, conv4, conv5): 2,334,080 parameters.
  kernels = {name: trunk.get_layer(name).kernel.shape for name in
             ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')}
  assert kernels == {'conv1': (11, 11, 3, 96), 'conv2': (5, 5, 48, 256),
                     'conv3': (3, 3, 256, 384), 'conv4': (3, 3, 192, 384),
                     'conv5': (3, 3, 192, 256)}
  assert trunk.count_params() == 2334080
  assert alexnet.alexnet_trunk(groups=1).get_layer('conv2').kernel.shape == (5, 5, 96, 256)


def test_seeded_initialization(trunk):
  images = random_images((1, 64, 96, 3))
  same = alexnet.alexnet_trunk(seed=0)
  other = alexnet.alexnet_trunk(seed=1)
  np.testing.assert_array_equal(trunk(images), same(images))
  assert not np.allclose(trunk(images), other(images))


def test_preprocessing_inside_the_model():
  model = alexnet.alexnet_trunk(seed=3)
  for layer in ('conv1', 'conv2', 'conv5'):  # Non-zero biases so a zero input is not trivial.
    kernel, bias = model.get_layer(layer).get_weights()
    model.get_layer(layer).set_weights([kernel, np.full_like(bias, 0.5)])

  def conv_stack(x):
    for layer in model.layers[2:]:  # Everything after `images` and `preprocessing`.
      x = layer(x)
    return np.asarray(x)

  mean_bgr = np.array(alexnet.IMAGENET_MEAN_BGR, np.float32)
  mean_image = np.broadcast_to(mean_bgr[::-1], (1, 32, 48, 3)).copy()  # RGB mean colour.
  np.testing.assert_allclose(model(mean_image), conv_stack(np.zeros_like(mean_image)),
                             rtol=1e-5, atol=1e-5)
  images = random_images((1, 32, 48, 3))
  np.testing.assert_allclose(model(images), conv_stack(images[..., ::-1] - mean_bgr),
                             rtol=1e-5, atol=1e-4)


def test_lrn_matches_caffe_formula():
  x = np.random.default_rng(0).uniform(0, 50, (1, 2, 3, 7)).astype(np.float32)
  size, alpha, beta, k = 5, 1e-3, 0.75, 2.0
  lrn = alexnet.LocalResponseNormalization(size=size, alpha=alpha, beta=beta, k=k)
  expected = np.empty_like(x)
  for c in range(7):
    window = x[..., max(0, c - 2):c + 3]
    expected[..., c] = x[..., c] / (k + alpha / size * np.sum(window**2, axis=-1))**beta
  np.testing.assert_allclose(lrn(x), expected, rtol=1e-5)
  clone = alexnet.LocalResponseNormalization.from_config(lrn.get_config())
  assert (clone.size, clone.alpha, clone.beta, clone.k) == (size, alpha, beta, k)


def test_model_config_round_trip(trunk):
  clone = keras.Model.from_config(trunk.get_config())
  clone.set_weights(trunk.get_weights())
  images = random_images((1, 48, 64, 3))
  np.testing.assert_allclose(clone(images), trunk(images), rtol=1e-6)


def test_user_weights_round_trip(trunk, tmp_path):
  path = tmp_path / 'alexnet.weights.h5'
  trunk.save_weights(str(path))
  loaded = alexnet.alexnet_trunk(weights=str(path), seed=7)  # Seed is overwritten by the file.
  images = random_images((2, 64, 96, 3))
  np.testing.assert_array_equal(loaded(images), trunk(images))


@pytest.mark.filterwarnings('ignore:Skipping nested container')  # Keras, on the mismatch.
def test_user_weights_errors_name_the_file(tmp_path):
  missing = tmp_path / 'missing.weights.h5'
  with pytest.raises(UserError, match='missing.weights.h5: AlexNet trunk weights file not found'):
    alexnet.alexnet_trunk(weights=str(missing))

  not_keras = tmp_path / 'alexnet.caffemodel'
  not_keras.write_bytes(b'\0' * 16)
  with pytest.raises(UserError, match=r'alexnet.caffemodel: .*\.weights\.h5'):
    alexnet.alexnet_trunk(weights=str(not_keras))

  dense = tmp_path / 'dense.weights.h5'
  alexnet.alexnet_trunk(groups=1).save_weights(str(dense))
  with pytest.raises(UserError) as raised:
    alexnet.alexnet_trunk(weights=str(dense), groups=2)
  message = str(raised.value)
  assert str(dense) in message and 'conv2' in message
  assert '\n' not in message  # One line, not keras's dump of the variable values.
