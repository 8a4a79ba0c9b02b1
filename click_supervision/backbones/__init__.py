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

`build_trunk(..., cut=True)` (EfficientNet-Lite only) gives the same trunk as two nested models,
`lower` (image -> the stride-16 stage-5 map) and `upper` (that map -> the stride-32 output), so
the detector can cache the frozen lower part's maps and train the upper part on them.
"""

from click_supervision import config as config_lib
from click_supervision.errors import UserError

TRUNKS = {
    'efficientnet_lite0': ('imagenet', 'none', 'PATH.pth'),
    'efficientnet_lite1': ('imagenet', 'none', 'PATH.pth'),
    'efficientnet_lite2': ('imagenet', 'none', 'PATH.pth'),
    'vgg16': ('imagenet', 'hed', 'none'),
    'alexnet': ('none', 'PATH.weights.h5'),
}


CUTTABLE = config_lib.CUTTABLE_TRUNKS


def build_trunk(name='efficientnet_lite0', weights='imagenet', cache_dir=None, cut=False):
  """Builds a feature trunk.

  Args:
    name: one of TRUNKS.
    weights: 'imagenet', 'hed', 'none' or a file path, as TRUNKS allows for `name`.
    cache_dir: where downloaded weights are kept (vgg16 imagenet; default keras's).
    cut: build the trunk as `lower` and `upper` nested models (module docstring; CUTTABLE
      trunks only). The composed model computes exactly what the uncut trunk does.
  Returns:
    keras.Model with `feature_stride`, `feature_offset`, `feature_channels`; with `cut` also
    `cut_stride`, `cut_offset`, `cut_channels` (the lower part's map) and the nested models
    `get_layer('lower')`, `get_layer('upper')`.
  Raises:
    UserError for an unknown trunk or a weights value the trunk does not take.
  """
  if cut:
    if name not in CUTTABLE:
      raise UserError(f'--trunk={name} cannot be cut into a cached lower and a trainable upper '
                      f'part; that needs one of {", ".join(CUTTABLE)}')
    lower = build_trunk_part(name, weights, 'lower')
    upper = build_trunk_part(name, weights, 'upper')
    return compose_trunk(lower, upper)
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


def build_trunk_part(name, weights, part):
  """The `lower` (image -> stride-16 cut map) or `upper` (cut map -> stride-32 map) part of a
  CUTTABLE trunk, with its weights; the model is named after the part."""
  from click_supervision.backbones import efficientnet_lite  # pylint: disable=g-import-not-at-top
  variant = name.removeprefix('efficientnet_')
  try:
    if part == 'lower':
      return efficientnet_lite.efficientnet_lite(
          variant, weights=None if weights == 'none' else weights, include_top=False,
          output=efficientnet_lite.CUT, name='lower')
    return efficientnet_lite.efficientnet_lite(
        variant, weights=None if weights == 'none' else weights, include_top=False,
        output='block7', start=efficientnet_lite.CUT, name='upper')
  except (FileNotFoundError, ValueError) as e:
    raise UserError(f'--trunk={name} --weights={weights}: {e}') from e


def compose_trunk(lower, upper):
  """image -> lower -> upper as one keras.Model (named `trunk`), with the geometry attributes of
  `build_trunk(..., cut=True)` taken from the parts' own (`feature_stride`, `feature_offset`):
  the upper part's output is the trunk's (`feature_*`), the lower part's the cut (`cut_*`).
  `lower` and `upper` stay nested models of those names."""
  import keras  # pylint: disable=g-import-not-at-top
  image = keras.Input(shape=(None, None, 3), dtype='float32', name='image')
  trunk = keras.Model(image, upper(lower(image)), name='trunk')
  trunk.feature_stride = int(upper.feature_stride)
  trunk.feature_offset = float(upper.feature_offset)
  trunk.feature_channels = int(upper.output.shape[-1])
  trunk.cut_stride = int(lower.feature_stride)
  trunk.cut_offset = float(lower.feature_offset)
  trunk.cut_channels = int(lower.output.shape[-1])
  return trunk
