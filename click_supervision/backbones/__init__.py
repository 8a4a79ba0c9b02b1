"""Keras conv trunks and the sources of their pretrained weights.

`build_trunk(name, weights)` is the one entry point the stages use. Every trunk takes float32
[B, H, W, 3] RGB in [0, 255] (preprocessing is inside the model) and carries `feature_stride`,
`feature_offset` and `feature_channels` (see `click_supervision.features`).

| trunk | weights | notes |
|---|---|---|
| efficientnet_lite0 (default) | imagenet (default, offline), none, PATH.pth | stride 32, 320 ch |
| efficientnet_lite1, _lite2 | imagenet (offline, package `.[trunks]`), none, PATH.pth | 320 / 352 ch |
| vgg16 | imagenet (needs a network once), hed (offline, weak), none | stride 16, 512 ch |
| alexnet | none (random, seeded), PATH.weights.h5 | stride 16, 256 ch |
"""

from click_supervision.errors import UserError

TRUNKS = {
    'efficientnet_lite0': ('imagenet', 'none', 'PATH.pth'),
    'efficientnet_lite1': ('imagenet', 'none', 'PATH.pth'),
    'efficientnet_lite2': ('imagenet', 'none', 'PATH.pth'),
    'vgg16': ('imagenet', 'hed', 'none'),
    'alexnet': ('none', 'PATH.weights.h5'),
}


def build_trunk(name='efficientnet_lite0', weights='imagenet', cache_dir=None):
  """Builds a feature trunk.

  Args:
    name: one of TRUNKS.
    weights: 'imagenet', 'hed', 'none' or a file path, as TRUNKS allows for `name`.
    cache_dir: where downloaded weights are kept (vgg16 imagenet; default keras's).
  Returns:
    keras.Model with `feature_stride`, `feature_offset`, `feature_channels`.
  Raises:
    UserError for an unknown trunk or a weights value the trunk does not take.
  """
  # pylint: disable=g-import-not-at-top
  if name not in TRUNKS:
    raise UserError(f'--trunk={name!r}: choose one of {sorted(TRUNKS)}')
  named = weights in ('imagenet', 'hed', 'none')
  if named and weights not in TRUNKS[name]:
    raise UserError(f'--trunk={name} takes --weights={"|".join(TRUNKS[name])}, not {weights!r}')
  if name.startswith('efficientnet_lite'):
    from click_supervision.backbones import efficientnet_lite
    try:
      return efficientnet_lite.efficientnet_lite_trunk(
          name.removeprefix('efficientnet_'), weights=None if weights == 'none' else weights)
    except (FileNotFoundError, ValueError) as e:  # No weights package or file; a wrong file.
      raise UserError(f'--trunk={name} --weights={weights}: {e}') from e
  if name == 'vgg16':
    if not named:
      raise UserError(f'--trunk=vgg16 takes --weights=imagenet|hed|none, not a file ({weights})')
    from click_supervision.backbones import vgg16
    return vgg16.vgg16_trunk(weights=None if weights == 'none' else weights, cache_dir=cache_dir)
  from click_supervision.backbones import alexnet
  return alexnet.alexnet_trunk(weights=None if weights == 'none' else weights)
