"""Durable append-only JSON Lines files for the annotation server.

Every accepted record is written, flushed and fsync'ed before the server answers, so a killed
server loses nothing it acknowledged. A server killed in the middle of a write can leave a
partial last line (never acknowledged); reopening drops it, says so, and truncates the file to
its last complete line. Rare whole-file changes (an undo, quality-control flags) write a new file
next to the old one, fsync it and rename it over the old one, so a kill leaves either file whole.
"""

import json
import os
import tempfile

from click_supervision.errors import UserError


def _fsync_folder(folder):
  """Makes a create or rename in `folder` durable (the file's own fsync does not cover it)."""
  fd = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


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
    if os.path.exists(self.path):
      self.header, self.rows = self._read(check_header, log)
    else:
      self.header, self.rows = header, []
      self._rewrite_file()
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
    self._file.write(json.dumps(row) + '\n')
    self._file.flush()
    os.fsync(self._file.fileno())
    self.rows.append(row)

  def replace_rows(self, rows):
    """Atomically replaces every row (header kept): temp file, fsync, rename, fsync folder."""
    self._file.close()
    self.rows = list(rows)
    self._rewrite_file()
    self._file = open(self.path, 'a', encoding='utf-8')

  def _rewrite_file(self):
    folder = os.path.dirname(self.path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(self.path), suffix='.tmp')
    try:
      with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(json.dumps(self.header) + '\n')
        for row in self.rows:
          f.write(json.dumps(row) + '\n')
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    _fsync_folder(folder)

  def close(self):
    self._file.close()
