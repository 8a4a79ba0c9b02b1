"""Errors a user can act on, and the one way every command reports them.

Every problem caused by input (a dataset file, a click file, a flag value) is raised as a
`UserError` whose message names the file and the problem. A command catches `UserError`, prints
one `error: <message>` line on stderr and exits non-zero (`fail`, `run_command`); anything else
is a bug and keeps its traceback. Exit codes: 1 for the input, 2 for the command line, 130 when
interrupted (Ctrl-C), as a shell reports a process stopped by SIGINT.
"""

import sys

INTERRUPTED = 'interrupted'
# For the commands whose finished work is on disk (cached shards, stage outputs).
INTERRUPTED_RESUMABLE = 'interrupted; rerun the same command to resume'


class UserError(Exception):
  """A problem with the user's input or setup, reported as one line, without a traceback."""


class DataError(UserError):
  """A dataset file is missing, unreadable or inconsistent with its annotation.

  Attributes:
    path: the file (or folder) at fault, as a string.
    problem: what is wrong with it, in words.
  """

  def __init__(self, path, problem):
    self.path = str(path)
    self.problem = problem
    super().__init__(f'{self.path}: {problem}')


class ClickFileError(UserError):
  """A click file row is malformed or inconsistent with the dataset.

  Attributes:
    path: the click file.
    line: 1-based line number of the first problem (0 when the problem is not tied to a line).
    problem: what is wrong, in words.
  """

  def __init__(self, path, line, problem):
    self.path = str(path)
    self.line = line
    self.problem = problem
    where = f'{self.path}:{line}' if line else self.path
    super().__init__(f'{where}: {problem}')


def print_error(message):
  """Prints `error: <message>` on stderr, after whatever the command already wrote on stdout
  (flushed first, so that the error line comes last when both go to one terminal or log)."""
  sys.stdout.flush()
  print(f'error: {message}', file=sys.stderr, flush=True)


def fail(message, code=1):
  """Prints `error: <message>` (`print_error`) and exits with `code`."""
  print_error(message)
  sys.exit(code)


def run_command(body, interrupted=INTERRUPTED):
  """Runs a command's work and returns its exit code, for `sys.exit` or a `main` that returns.

  Args:
    body: the work, called with no arguments; returns an exit code, or None for 0.
    interrupted: the words after `error: ` when Ctrl-C stops it (`INTERRUPTED_RESUMABLE` where a
      rerun resumes).

  Returns:
    body's code; 1 after a `UserError`, 130 after Ctrl-C, each with its one `error:` line.
  """
  try:
    code = body()
  except UserError as e:
    print_error(e)
    return 1
  except KeyboardInterrupt:
    print_error(interrupted)
    return 130
  return 0 if code is None else code
