"""The annotation server against hostile or careless clients: names, numbers, bodies, load."""

import json
import socket
import threading

import pytest

from click_supervision.annotate import app as app_lib
from click_supervision.annotate import server as server_lib
from click_supervision.annotate import store
from click_supervision.datasets import voc
from test_annotate_server import Client
from test_annotate_server import IMAGES
from test_annotate_server import strict_json
import vocfolder


@pytest.fixture(name='dataset')
def dataset_fixture(tmp_path):
  root = vocfolder.make_voc_folder(str(tmp_path / 'voc'), IMAGES)
  return voc.load_voc(root, 'trainval', log=lambda _: None)


@pytest.fixture(name='client')
def client_fixture(dataset, tmp_path):
  client = Client(dataset, str(tmp_path / 'out' / 'clicks.jsonl'), gold_fraction=0.0)
  yield client
  client.close()


def _click(annotator='alice', **changes):
  """A good click on image 'b' (one dog, 50 x 40), with `changes`."""
  return dict({'annotator': annotator, 'image_id': 'b', 'class': 'dog', 'x': 20.0, 'y': 20.0,
               'response_time_s': 1.0}, **changes)


def _lines(path):
  with open(path) as f:
    return f.read().splitlines()


# --- Annotator names (item 11) -------------------------------------------------------------------


def test_a_name_with_a_trailing_newline_is_not_a_second_annotator(client):
  for name in ['eve\n', 'eve\r\n', '\neve', 'eve\nbob']:
    status, payload = client.post('/api/login', {'annotator': name})
    assert status == 400 and 'annotator must be' in payload['error'], repr(name)
  assert client.get('/api/qualification?annotator=eve%0A')[0] == 400
  assert client.get('/api/next?annotator=eve%0A')[0] == 400
  assert client.post('/api/login', {'annotator': 'eve'})[0] == 200
  assert [a['annotator'] for a in client.summary()['annotators']] == ['eve']
  assert app_lib.ANNOTATOR_PATTERN.fullmatch('eve') and not app_lib.ANNOTATOR_PATTERN.fullmatch(
      'eve\n')


# --- Bodies the JSON parser or the number checks choke on (item 12) ------------------------------


@pytest.mark.parametrize('raw', [
    b'[' * 30000 + b']' * 30000,
    b'{"a":' * 10000 + b'1' + b'}' * 10000,
], ids=['array_30000_deep', 'object_10000_deep'])
def test_deeply_nested_json_gets_a_400(client, raw):
  assert len(raw) <= server_lib.MAX_BODY_BYTES
  status, payload, _ = client.request('POST', '/api/click', raw=raw)
  assert status == 400 and 'nested' in payload['error']
  assert client.get('/api/example')[0] == 200  # The server is still up.


@pytest.mark.parametrize('field', ['x', 'y', 'response_time_s'])
@pytest.mark.parametrize('digits', [400, 5000])  # 5000: past Python's int parsing limit too.
def test_huge_integers_get_a_400(client, field, digits):
  client.qualify('alice')
  huge = '1' + '0' * digits
  body = json.dumps(_click(**{field: 0})).replace(f'"{field}": 0', f'"{field}": {huge}')
  assert huge in body
  status, payload, _ = client.request('POST', '/api/click', raw=body.encode())
  assert status == 400 and payload['error'], payload
  assert len(_lines(client.out_path)) == 1  # Only the header.


def test_huge_integers_in_qualification_clicks_get_a_400(client):
  status, test = client.get('/api/qualification?annotator=alice')
  assert status == 200
  points = ['[1, 1]'] * (len(test['polygons']) - 1) + ['[1' + '0' * 400 + ', 1]']
  body = f'{{"annotator": "alice", "attempt": 1, "clicks": [{", ".join(points)}]}}'
  status, payload, _ = client.request('POST', '/api/qualification', raw=body.encode())
  assert status == 400 and 'finite numbers' in payload['error']


def test_an_unexpected_error_is_a_json_500_not_a_dropped_connection(client, monkeypatch):
  def broken():
    raise RuntimeError('disk on fire')
  monkeypatch.setattr(client.app, 'example', broken)
  status, payload, content_type = client.request('GET', '/api/example')
  assert status == 500 and 'internal error' in payload['error']
  assert content_type.startswith('application/json')


# --- Response times and strict JSON out (item 10) ------------------------------------------------


def test_response_time_is_bounded_and_the_summary_stays_strict_json(client):
  client.qualify('alice')
  for bad in [1.7e308, 3600.5, -0.001]:
    status, payload = client.post('/api/click', _click(response_time_s=bad))
    assert status == 400 and 'response_time_s' in payload['error'], bad
  for literal in [b'1e400', b'Infinity', b'-Infinity', b'NaN']:
    raw = json.dumps(_click(response_time_s=0)).encode().replace(
        b'"response_time_s": 0', b'"response_time_s": ' + literal)
    status, payload, _ = client.request('POST', '/api/click', raw=raw)
    assert status == 400 and payload['error'], literal
  assert len(_lines(client.out_path)) == 1
  assert client.post('/api/click', _click(response_time_s=3600))[0] == 200
  summary = client.summary()  # Parsed strictly: no Infinity or NaN.
  assert summary['annotation_hours'] == 1.0 and summary['median_response_time_s'] == 3600.0


def test_the_server_never_writes_nan_or_infinity(client, monkeypatch):
  monkeypatch.setattr(client.app, 'example', lambda: {'ratio': float('nan')})
  status, payload, _ = client.request('GET', '/api/example')  # Parses strictly.
  assert status == 500 and payload['error']


def test_the_store_refuses_nan_and_keeps_the_file_whole(tmp_path):
  path = tmp_path / 'log.jsonl'
  log = store.JsonLinesLog(str(path), {'format': 'x'}, lambda p, h: None)
  log.append({'a': 1})
  with pytest.raises(ValueError):
    log.append({'a': float('inf')})
  with pytest.raises(ValueError):
    log.replace_rows([{'a': float('nan')}])
  log.append({'a': 2})  # Still open and appending after the refusals.
  log.close()
  assert [strict_json(line) for line in _lines(path)] == [{'format': 'x'}, {'a': 1}, {'a': 2}]


# --- Many clients at once (item 13) --------------------------------------------------------------


def test_fifty_connections_opened_at_once_are_all_answered(dataset, tmp_path):
  app = app_lib.AnnotationApp(dataset, str(tmp_path / 'clicks.jsonl'), gold_fraction=0.0,
                              log=lambda _: None)
  server = server_lib.AnnotationServer(app, '127.0.0.1', 0)
  port = server.server_address[1]
  num_clients = 50
  barrier = threading.Barrier(num_clients)
  connections, errors = [None] * num_clients, []

  def connect(index):
    barrier.wait(timeout=10)
    try:
      connections[index] = socket.create_connection(('127.0.0.1', port), timeout=2)
    except OSError as e:
      errors.append(e)

  thread = None
  try:
    threads = [threading.Thread(target=connect, args=(i,)) for i in range(num_clients)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=20)
    # The server starts accepting only now, as if busy when the burst came: every handshake waits
    # in the listen backlog, and a full backlog drops connections (SYN retries come too late).
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    assert not errors, f'{len(errors)} of {num_clients} connections failed: {errors[0]!r}'
    request = (f'GET /api/example HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n'
               f'Connection: close\r\n\r\n').encode()
    for connection in connections:
      connection.sendall(request)
    for connection in connections:
      answer = b''
      while chunk := connection.recv(65536):
        answer += chunk
      assert answer.startswith(b'HTTP/1.1 200 '), answer[:100]
      assert strict_json(answer.split(b'\r\n\r\n', 1)[1])['class'] == 'cat'
  finally:
    for connection in connections:
      if connection:
        connection.close()
    if thread:
      server.shutdown()
    server.server_close()
    app.close()

