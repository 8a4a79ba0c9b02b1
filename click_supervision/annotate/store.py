"""Durable append-only JSON Lines files for the annotation server.

Every accepted record is written, flushed and fsync'ed before the server answers, so a killed
server loses nothing it acknowledged. A server killed in the middle of a write can leave a
partial last line (never acknowledged); reopening drops it, says so, and truncates the file to
its last complete line. Rare whole-file changes (an undo, quality-control flags) write a new file
next to the old one, fsync it and rename it over the old one, so a kill leaves either file whole.
Lines are strict JSON: a NaN or infinite number raises ValueError before anything is written.
"""

import json
import os

from click_supervision import atomic
from click_supervision.errors import UserError


def _line(row):
  """One JSON line; ValueError for NaN or infinity, which other JSON readers refuse."""
  return json.dumps(row, allow_nan=False) + '\n'


def _remove_own_temp_files(path, log):
  """Removes the temp files an interrupted rewrite of `path` left (`atomic`'s names)."""
  folder, name = os.path.split(path)
  for other in os.listdir(folder):
    if other.startswith(f'.{name}.') and atomic.is_temp_file(other):
      os.remove(os.path.join(folder, other))
      log(f'{path}: removed {other}, left by an interrupted rewrite')


class JsonLinesLog:
  """A JSON Lines file whose first line is a header dict.

  Attributes:
    path: the file.
    header: the header dict.
    rows: list of the dicts after the header, in file order.
  """

  def __init__(self, path, header, check_header, log=print):
    """Opens `path`, creating it with `header` when absent.

    Args:
      path: the file.
      header: dict written as line 1 of a new file.
      check_header: callable(path, existing_header) -> None, raising UserError when an existing file
        belongs to other settings (another dataset, another format version).
      log: callable taking one str.
    Raises:
      UserError naming the file and line of a line that is not JSON (other than a partial last
      line).
    """
    self.path = os.path.abspath(path)
    folder = os.path.dirname(self.path)
    os.makedirs(folder, exist_ok=True)
    # A server killed during a rewrite leaves its temp file: no other process writes this file.
    _remove_own_temp_files(self.path, log)
    if os.path.exists(self.path):
      self.header, self.rows = self._read(check_header, log)
    else:
      self.header, self.rows = header, []
      self._rewrite_file([_line(header)])
    self._file = open(self.path, 'a', encoding='utf-8')

  def _read(self, check_header, log):
    with open(self.path, 'rb') as f:
      data = f.read()
    complete_end = data.rfind(b'\n') + 1
    if complete_end < len(data):
      # Only the last write can be partial: every earlier one ended with a fsync'ed newline.
      log(f'{self.path}: dropping a partial last line ({len(data) - complete_end} bytes) left by '
          f'an interrupted write; it was never acknowledged')
      with open(self.path, 'r+b') as f:
        f.truncate(complete_end)
        f.flush()
        os.fsync(f.fileno())
    rows = []
    for line_number, raw in enumerate(data[:complete_end].split(b'\n'), start=1):
      if not raw.strip():
        continue
      try:
        rows.append(json.loads(raw.decode('utf-8')))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f'{self.path}:{line_number}: not a JSON line ({e}); move the file away '
                        f'or repair it') from None
    if not rows or not isinstance(rows[0], dict):
      raise UserError(f'{self.path}: no header line; move the file away or repair it')
    check_header(self.path, rows[0])
    return rows[0], rows[1:]

  def append(self, row):
    """Appends one dict and makes it durable before returning."""
    self._file.write(_line(row))
    self._file.flush()
    os.fsync(self._file.fileno())
    self.rows.append(row)

  def replace_rows(self, rows):
    """Atomically replaces every row (header kept): temp file, fsync, rename, fsync folder."""
    rows = list(rows)
    # Serialised first: a row that is not JSON leaves the file, rows and handle as they were.
    lines = [_line(self.header)] + [_line(row) for row in rows]
    self._file.close()
    try:
      self._rewrite_file(lines)
      self.rows = rows
    finally:
      self._file = open(self.path, 'a', encoding='utf-8')

  def _rewrite_file(self, lines):
    with atomic.open_atomic(self.path, 'w') as f:
      f.writelines(lines)

  def close(self):
    self._file.close()
