"""Tests of the atomic writer: content, strict JSON, no temp file left, stale temp cleanup."""

import json
import os
import time

import numpy as np
import pytest

from click_supervision import atomic


def test_writes_bytes_json_and_json_lines(tmp_path):
  atomic.write_bytes(str(tmp_path / 'a.bin'), b'\x00\x01')
  assert (tmp_path / 'a.bin').read_bytes() == b'\x00\x01'
  atomic.write_json(str(tmp_path / 'r.json'), {'b': np.float32(0.5), 'a': np.arange(2),
                                               'nan': float('nan'), 'inf': np.float64('inf')})
  text = (tmp_path / 'r.json').read_text()
  assert json.loads(text) == {'a': [0, 1], 'b': 0.5, 'inf': None, 'nan': None}
  assert 'NaN' not in text and 'Infinity' not in text
  atomic.write_jsonl(str(tmp_path / 'rows.jsonl'), [{'x': 1}, {'y': [np.int64(2)]}])
  assert (tmp_path / 'rows.jsonl').read_text() == '{"x": 1}\n{"y": [2]}\n'
  assert sorted(os.listdir(tmp_path)) == ['a.bin', 'r.json', 'rows.jsonl']


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
  path = str(tmp_path / 'r.json')
  atomic.write_json(path, {'status': 'complete'})
  with pytest.raises(RuntimeError):
    with atomic.open_atomic(path, 'w') as f:
      f.write('{"status": "half')
      raise RuntimeError('killed')
  assert json.loads(open(path).read()) == {'status': 'complete'}
  assert os.listdir(tmp_path) == ['r.json']


def test_stale_temp_files_are_removed(tmp_path):
  (tmp_path / 'sub').mkdir()
  stale = [tmp_path / '.results.json.abc123.tmp', tmp_path / 'tmpx9.tmp',
           tmp_path / 'sub' / '.shard-00001-of-00002.npz.q.tmp']
  for path in stale:
    path.write_bytes(b'x' * 10)
  keep = [tmp_path / 'results.json', tmp_path / 'notes.tmp.txt', tmp_path / 'user.tmp']
  for path in keep:
    path.write_bytes(b'y')
  # A fresh temp file of a live writer survives a cleanup with an age limit.
  assert atomic.remove_stale_temp_files(str(tmp_path), min_age_s=600, recursive=True) == 0
  old = time.time() - 3600
  for path in stale:
    os.utime(path, (old, old))
  messages = []
  assert atomic.remove_stale_temp_files(str(tmp_path), min_age_s=600, recursive=True,
                                        log=messages.append) == 3
  assert all(not p.exists() for p in stale) and all(p.exists() for p in keep)
  assert 'removed 3 temporary file(s)' in messages[0]
