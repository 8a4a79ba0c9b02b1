"""Reading the project's JSON Lines files (localisations, second-click requests) with errors that
name the file and the line. (Writes go through `atomic.write_jsonl`.)"""

import json

from click_supervision.errors import UserError


def rows(path, what):
  """Yields `(where, row)` for every non-blank line of a JSON Lines file, `where` being
  `path:line` for the caller's own messages.

  Args:
    path: the file.
    what: what the file holds, for the message when it cannot be read (e.g. `localizations`).
  Raises:
    UserError naming the file (and line): unreadable, a line that is not JSON or not an object.
  """
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise UserError(f'{path}: cannot read {what} ({e.strerror})') from None
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    where = f'{path}:{number}'
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f'{where}: not JSON ({e.msg})') from None
    if not isinstance(row, dict):
      raise UserError(f'{where}: expected a JSON object')
    yield where, row
