"""The command line of every `python -m click_supervision.X` tool, with the driver's conventions.

absl flags, as `run_mil.py`. A tool defines its flags in a `flags.FlagValues` of its own
(`new_flag_values`, then `flag_values=` in every `flags.DEFINE_*`), so tools imported into one
process (the tests, a notebook) never collide with each other or with the driver's global
`flags.FLAGS`; its `main(argv=None)` reads the command line with `parse`:

  - `--help` (`-?`), `--helpshort` (`-h`), `--helpfull`: the usage line, the tool's description
    and its flags on stdout, exit code 0;
  - an unknown flag, a bad value, a missing required flag or an unexpected argument: one
    `error: <what>` line on stderr and exit code 2 (`errors.fail`), as the driver;
  - absl's syntax: `--flag=value` or `--flag value`, booleans `--flag` / `--noflag`,
    `--flagfile=FILE` for flags kept in a file.

A tool run by `absl.app` on the global `flags.FLAGS` (the click tool) passes `app_flags_parser`
as `flags_parser`: its flag errors are then the same one line and exit code 2.
"""

import sys

from absl import flags

from click_supervision import errors

# The flags defined below (`new_flag_values`) belong to the tool that asks for them: they are
# listed with its own flags.
flags.disclaim_key_flags()

HELP_FLAGS = ('help', 'helpshort', 'helpfull')


def new_flag_values():
  """A tool's own `flags.FlagValues`, holding only its help flags (`--help`, `-?`,
  `--helpshort`, `-h`, `--helpfull`) so far."""
  flag_values = flags.FlagValues()
  flags.DEFINE_boolean('help', False, 'Show this help and exit.', flag_values=flag_values,
                       short_name='?')
  flags.DEFINE_boolean('helpshort', False, 'Same as --help.', flag_values=flag_values,
                       short_name='h')
  flags.DEFINE_boolean('helpfull', False, 'Same as --help.', flag_values=flag_values)
  return flag_values


def help_text(flag_values, usage, description):
  """`usage: <usage>`, the description and every flag of `flag_values` with its help text and
  default (absl's rendering, without its per-module headings)."""
  listed = [line for line in flag_values.get_help(include_special_flags=False).splitlines()
            if line.startswith(' ')]
  return '\n'.join([f'usage: {usage}', '', description, '', 'flags:', *listed]) + '\n'


def _names(names):
  """`--a`, `--a and --b`, `--a, --b and --c`."""
  shown = [f'--{name}' for name in names]
  return shown[0] if len(shown) == 1 else f'{", ".join(shown[:-1])} and {shown[-1]}'


def parse(flag_values, argv, usage, description, required=(), positional=False,
          pass_unknown=False):
  """Parses a tool's command line into `flag_values` (module docstring for what it prints).

  Every call starts from the flags' defaults, so that `main` can run more than once in one
  process.

  Args:
    flag_values: the tool's `flags.FlagValues` (`new_flag_values`).
    argv: the arguments after the program name; None for `sys.argv[1:]`.
    usage: the usage line of `--help`, e.g. `python -m click_supervision.export --run=RUN_DIR`.
    description: the sentence or two under it.
    required: names of flags without a default that must be given a non-empty value.
    positional: whether arguments other than flags are the tool's (else they are an error).
    pass_unknown: whether flags this tool does not define are the caller's (for another
      library's options, e.g. Beam's): they are returned with any other argument, in order.

  Returns:
    the arguments not parsed as this tool's flags, in order: [] unless `positional` or
    `pass_unknown`.
  """
  args = sys.argv[1:] if argv is None else list(argv)
  program = sys.argv[0] if sys.argv and sys.argv[0] else 'python'
  flag_values.unparse_flags()
  try:
    rest = flag_values([program, *args], known_only=pass_unknown)[1:]
  except flags.Error as e:
    errors.fail(e, code=2)
  if any(flag_values[name].value for name in HELP_FLAGS):
    sys.stdout.write(help_text(flag_values, usage, description))
    sys.stdout.flush()
    sys.exit(0)
  if rest and not (positional or pass_unknown):
    errors.fail(f'unexpected arguments {rest}', code=2)
  missing = [name for name in required if flag_values[name].value in (None, '')]
  if missing:
    errors.fail(f'{_names(missing)} {"is" if len(missing) == 1 else "are"} required', code=2)
  return rest


def app_flags_parser(argv):
  """`flags_parser` for `absl.app.run`: absl's parsing of the global `flags.FLAGS` (its help
  flags included), with a bad flag or value reported as one `error:` line, exit code 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    errors.fail(e, code=2)
