"""Durable JSON Lines files: append, atomic replace, reopen, partial last line."""

import json

import pytest

from click_supervision.annotate import store
from click_supervision.errors import UserError


def _no_check(path, header):
  del path, header


def test_append_replace_and_reopen(tmp_path):
  path = str(tmp_path / 'sub' / 'log.jsonl')
  log = store.JsonLinesLog(path, {'format': 'x'}, _no_check)
  log.append({'a': 1})
  log.append({'a': 2})
  log.replace_rows([{'a': 2}])
  log.append({'a': 3})
  log.close()
  with open(path) as f:
    assert [json.loads(line) for line in f] == [{'format': 'x'}, {'a': 2}, {'a': 3}]
  assert list(tmp_path.joinpath('sub').iterdir()) == [tmp_path / 'sub' / 'log.jsonl']
  headers = []
  reopened = store.JsonLinesLog(path, {'format': 'ignored'},
                                lambda p, h: headers.append((p, h)))
  assert reopened.header == {'format': 'x'} and reopened.rows == [{'a': 2}, {'a': 3}]
  assert headers == [(path, {'format': 'x'})]
  reopened.close()


def test_partial_last_line_is_dropped_and_truncated(tmp_path):
  path = tmp_path / 'log.jsonl'
  path.write_text('{"format": "x"}\n{"a": 1}\n{"a": ')
  messages = []
  log = store.JsonLinesLog(str(path), {}, _no_check, log=messages.append)
  assert log.rows == [{'a': 1}]
  assert 'partial last line (6 bytes)' in messages[0]
  log.append({'a': 2})
  log.close()
  assert path.read_text() == '{"format": "x"}\n{"a": 1}\n{"a": 2}\n'


def test_a_bad_complete_line_stops_with_file_and_line(tmp_path):
  path = tmp_path / 'log.jsonl'
  path.write_text('{"format": "x"}\nnot json\n{"a": 1}\n')
  with pytest.raises(UserError, match=r'log.jsonl:2: not a JSON line'):
    store.JsonLinesLog(str(path), {}, _no_check)
  path.write_text('\n')
  with pytest.raises(UserError, match='no header line'):
    store.JsonLinesLog(str(path), {}, _no_check)


def test_a_temp_file_of_an_interrupted_rewrite_is_removed_on_open(tmp_path):
  path = tmp_path / 'clicks.jsonl'
  log = store.JsonLinesLog(str(path), {'format': 'x'}, _no_check)
  log.append({'a': 1})
  log.close()
  leftover = tmp_path / '.clicks.jsonl.k3x9.tmp'  # What a SIGKILL during replace_rows leaves.
  leftover.write_text('{"format": "x"}\n')
  other = tmp_path / '.other.jsonl.aaaa.tmp'
  other.write_text('not ours')
  messages = []
  reopened = store.JsonLinesLog(str(path), {}, _no_check, log=messages.append)
  assert reopened.rows == [{'a': 1}]
  assert not leftover.exists() and other.exists()
  assert 'left by an interrupted rewrite' in messages[0]
  reopened.close()
