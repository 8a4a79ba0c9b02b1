"""Errors a user can act on.

Every problem caused by input (a dataset file, a click file, a flag value) is raised as a
`UserError` whose message names the file and the problem. The driver catches `UserError`, prints
one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


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
