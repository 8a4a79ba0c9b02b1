"""Atomic, durable file writes: the one way results and caches are written.

A write goes to a temporary file in the target's folder, is flushed and fsync'ed, renamed over the
target (atomic on POSIX), and then the folder itself is fsync'ed so the rename survives a power
loss. A reader therefore sees the old file or the new one, never a mix, and a kill at any moment
leaves at most a temporary file behind, which `remove_stale_temp_files` clears on the next start.

Temporary names are `.<target name>.<random>.tmp`: hidden, and recognisable as ours.
"""

import contextlib
import json
import math
import os
import tempfile
import time

import numpy as np

TEMP_SUFFIX = '.tmp'


def _fsync_folder(folder):
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:
    return  # Some filesystems do not open folders; the rename is still atomic.
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def _replacing(path, suffix=TEMP_SUFFIX):
  """Yields a temporary file name beside `path`; on a clean exit that file is fsync'ed and
  renamed over `path` (then the folder fsync'ed), on an exception removed."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(path)}.', suffix=suffix)
  os.close(fd)
  try:
    yield tmp
    fd = os.open(tmp, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  _fsync_folder(folder)


@contextlib.contextmanager
def open_atomic(path, mode='wb'):
  """Context manager yielding a file object whose content replaces `path` on a clean exit.

  On an exception the temporary file is removed and `path` is untouched.

  Args:
    path: the target file.
    mode: 'wb' or 'w' (text, UTF-8).
  """
  with _replacing(path) as tmp:
    with open(tmp, mode, **({} if 'b' in mode else {'encoding': 'utf-8'})) as f:
      yield f


def write_bytes(path, data):
  """Writes `data` (bytes) to `path` atomically."""
  with open_atomic(path, 'wb') as f:
    f.write(data)


def strict_json_value(value):
  """`value` with numpy scalars and arrays turned into Python ones and non-finite floats into None.

  JSON has no NaN or Infinity; Python's `json` writes them as bare `NaN` / `Infinity`, which
  strict parsers (browsers, jq, other languages) reject. A metric that is undefined (e.g. CorLoc
  of a class without pairs) is `null`.
  """
  if isinstance(value, dict):
    return {k: strict_json_value(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json_value(v) for v in value]
  if isinstance(value, np.ndarray):
    return strict_json_value(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def dumps_strict(obj, **kwargs):
  """`json.dumps` of `strict_json_value(obj)`; raises ValueError if a NaN slips through."""
  return json.dumps(strict_json_value(obj), allow_nan=False, **kwargs)


def write_json(path, obj, indent=2):
  """Writes `obj` as strict JSON (sorted keys, trailing newline) atomically."""
  write_bytes(path, (dumps_strict(obj, indent=indent, sort_keys=True) + '\n').encode())


def write_jsonl(path, rows):
  """Writes an iterable of JSON-able rows as strict JSON Lines atomically."""
  with open_atomic(path, 'w') as f:
    for row in rows:
      f.write(dumps_strict(row) + '\n')


def save_keras_model(model, path):
  """`model.save(path)` atomically: Keras writes a temporary `.keras` file beside `path` (it
  wants the extension), which is fsync'ed and renamed over `path`."""
  with _replacing(path, suffix=TEMP_SUFFIX + '.keras') as tmp:
    model.save(tmp)


def is_temp_file(name):
  """True for a temporary file name this module (or the `mkstemp` writers before it) makes."""
  return (name.endswith(TEMP_SUFFIX) or name.endswith(TEMP_SUFFIX + '.keras')) and (
      name.startswith('.') or name.startswith('tmp'))


def remove_stale_temp_files(folder, min_age_s=0.0, recursive=False, log=None):
  """Removes temporary files a killed writer left in `folder`.

  Args:
    folder: the folder to clean (missing: nothing to do).
    min_age_s: only files not modified for this many seconds; use a few minutes for folders that
      other live processes write to (cache shards of parallel workers), 0 for a run's own workdir.
    recursive: also clean subfolders.
    log: optional callable taking one str, told how many files were removed.
  Returns:
    int, files removed.
  """
  if not os.path.isdir(folder):
    return 0
  now = time.time()
  removed = 0
  for root, dirs, files in os.walk(folder):
    for name in files:
      if not is_temp_file(name):
        continue
      path = os.path.join(root, name)
      try:
        if now - os.path.getmtime(path) >= min_age_s:
          os.remove(path)
          removed += 1
      except OSError:
        pass  # Renamed or removed by its writer meanwhile.
    if not recursive:
      break
  if removed and log:
    log(f'removed {removed} temporary file(s) left by an interrupted run in {folder}')
  return removed
