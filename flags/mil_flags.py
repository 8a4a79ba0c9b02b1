"""absl flag definitions of `run_mil.py`: one flag per setting of `click_supervision.config`.

Definitions only. Each setting's flag name, default, help text, bounds and choices are declared
with the setting itself (`config.setting`), so this module defines them in one loop; the driver
reads them back into a `Config` in one loop too (`run_mil.config_from_flags`).
"""

import dataclasses
import types

from absl import flags

from click_supervision import config as config_lib

PRESET = flags.DEFINE_enum('preset', None, sorted(config_lib.PRESETS), 'Start from a preset: '
                           '"smoke" shrinks every stage (tiny synthetic set, few proposals, native '
                           'image size) so the whole driver runs in seconds; explicit flags win.')


def _define(path, section, field):
  """Defines the flag of one setting; returns its name."""
  name = config_lib.flag_name(section, field.name)
  meta = field.metadata
  if field.default is not dataclasses.MISSING:
    default = field.default
  else:
    default = None  # Computed (the cache folder): the setting's own default applies.
  kind = field.type
  if isinstance(kind, types.UnionType):  # `float | None`: a float flag that may stay unset.
    kind = next(k for k in kind.__args__ if k is not type(None))
  help_text = f'{meta["help"]} [{path}]'
  bounds = {}
  if meta['lower'] is not None:
    bounds['lower_bound'] = meta['lower']
  if meta['upper'] is not None:
    bounds['upper_bound'] = meta['upper']
  if meta['choices'] is not None:
    flags.DEFINE_enum(name, None if default is None else str(default),
                      [str(c) for c in meta['choices']], help_text)
  elif kind is bool:
    flags.DEFINE_bool(name, default, help_text)
  elif kind is int:
    flags.DEFINE_integer(name, default, help_text, **bounds)
  elif kind is float:
    flags.DEFINE_float(name, default, help_text, **bounds)
  elif kind is tuple:
    flags.DEFINE_list(name, [str(v) for v in default], help_text)
  else:
    flags.DEFINE_string(name, default, help_text)
  return name


# Setting path -> flag name, for every setting (the sections themselves are not flags).
FLAG_OF = {path: _define(path, section, field) for path, section, field in config_lib.settings()
           if path not in config_lib.SECTIONS}
