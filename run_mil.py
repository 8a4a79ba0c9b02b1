"""Trains object localisation from image-level labels plus 0, 1 or 2 center clicks per class.

  python run_mil.py                                   # embedded synthetic default
  python run_mil.py --dataset=voc:VOCdevkit/VOC2007 --split=trainval --clicks=2

Flags -> one `Config` -> the stages of `click_supervision.runner` (also reachable from Python:
`click_supervision.api.train`). Every stage writes into --workdir; expensive, reusable work goes
to --cache_dir, shared by runs with different click settings. The last line of output is
`results: <path>` on success, or `error: <what went wrong>`.
"""

from click_supervision import tf_logs

tf_logs.quiet()  # Before anything imports TensorFlow: its C++ start-up lines stay out.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging as absl_logging

from click_supervision import command_line
from click_supervision import config as config_lib
from click_supervision import errors
from click_supervision import runner
from flags import mil_flags

# `--helpshort` lists the settings' flags, which live in `flags.mil_flags`.
flags.adopt_module_key_flags(mil_flags)


def config_from_flags():
  """Reads the absl flags once into a `Config` (the only place flags are read): the `--preset`'s
  Config (or the defaults), changed by every flag given on the command line. The Config checks
  itself (`config.ConfigError`, one line naming the flag); what it names on disk is checked by
  `runner.run` before any stage runs."""
  given = {path: flags.FLAGS[name].value for path, name in mil_flags.FLAG_OF.items()
           if flags.FLAGS[name].present}
  base = config_lib.PRESETS[mil_flags.PRESET.value]() if mil_flags.PRESET.value else None
  return config_lib.Config.from_settings(given, base=base)


def main(argv):
  if len(argv) > 1:
    errors.fail(f'unexpected arguments {argv[1:]}', code=2)
  # TensorFlow's checkpointing logs a line per save through absl at INFO; progress is ours.
  absl_logging.set_verbosity(absl_logging.WARNING)

  def train():
    print(f'results: {runner.run(config_from_flags())}', flush=True)

  # Every finished stage and cached shard is on disk: a rerun resumes.
  return errors.run_command(train, interrupted=errors.INTERRUPTED_RESUMABLE)


if __name__ == '__main__':
  app.run(main, flags_parser=command_line.app_flags_parser)
