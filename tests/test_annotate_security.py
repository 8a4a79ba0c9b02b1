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
import helpers


@pytest.fixture(name='dataset')
def dataset_fixture(tmp_path):
  root = helpers.make_voc_folder(str(tmp_path / 'voc'), IMAGES)
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



# --- Other sites' pages in the annotator's browser (item 9) --------------------------------------


def _state_changes(client):
  """Every state-changing request of the API, well formed."""
  return [('POST', '/api/login', {'annotator': 'mallory'}),
          ('POST', '/api/qualification', {'annotator': 'alice', 'attempt': 2,
                                          'clicks': [[1, 1]] * 5}),
          ('POST', '/api/click', _click()),
          ('POST', '/api/undo', {'annotator': 'alice'}),
          ('POST', '/api/skip', {'annotator': 'alice', 'image_id': 'b', 'class': 'dog'}),
          ('GET', '/api/next?annotator=alice', None)]  # Reserves a pair for alice.


def _unchanged(client, clicks_before, log_before):
  log_path = app_lib.log_path_for(client.out_path)
  assert _lines(client.out_path) == clicks_before and _lines(log_path) == log_before
  assert not any(client.app._leases.values())  # pylint: disable=protected-access
  assert 'mallory' not in [a['annotator'] for a in client.summary()['annotators']]


def test_state_changes_need_the_page_token(client):
  client.qualify('alice')
  before = _lines(client.out_path), _lines(app_lib.log_path_for(client.out_path))
  token = client.server.page_token
  for bad in [None, '', 'guess', token + 'x', token[:-1], 'é' * 43]:
    for method, path, body in _state_changes(client):
      status, payload, _ = client.request(method, path, body,
                                          headers={server_lib.TOKEN_HEADER: bad})
      assert status == 403 and payload['code'] == 'bad_token', (bad, path, payload)
  _unchanged(client, *before)
  # The page reads the token from GET /api/token (only pages of this origin can read answers).
  status, payload, _ = client.request('GET', '/api/token',
                                      headers={server_lib.TOKEN_HEADER: None})
  assert status == 200 and payload == {'token': token}
  # Reads change nothing and need no token.
  for path in ['/api/example', '/api/summary', '/api/qualification?annotator=alice', '/',
               '/static/app.js', '/images/b']:
    assert client.request('GET', path, headers={server_lib.TOKEN_HEADER: None})[0] == 200, path
  # Each server start has its own token.
  other = server_lib.AnnotationServer(client.app, '127.0.0.1', 0)
  try:
    assert other.page_token != token and len(token) >= 32
  finally:
    other.server_close()


@pytest.mark.parametrize('content_type', [
    None, 'text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x', 'application/jsonx', 'application/json-patch+json'])
def test_posts_need_a_json_content_type(client, content_type):
  client.qualify('alice')
  before = _lines(client.out_path), _lines(app_lib.log_path_for(client.out_path))
  for method, path, body in _state_changes(client)[:-1]:
    status, payload, _ = client.request(method, path, body,
                                        headers={'Content-Type': content_type})
    assert status == 415 and 'application/json' in payload['error'], (path, payload)
  # The form an HTML page can post, with the right token even: still no.
  form = b'annotator=alice&image_id=b&class=dog&x=20&y=20'
  assert client.request('POST', '/api/click', raw=form, headers={
      'Content-Type': 'application/x-www-form-urlencoded'})[0] == 415
  _unchanged(client, *before)
  status, _ = client.request('POST', '/api/click', _click(), headers={
      'Content-Type': 'Application/JSON; charset=utf-8'})[:2]
  assert status == 200


def test_a_foreign_origin_is_refused(client):
  client.qualify('alice')
  port = client.port
  before = _lines(client.out_path), _lines(app_lib.log_path_for(client.out_path))
  for origin in ['http://evil.example', 'null', f'http://localhost:{port}',
                 f'https://127.0.0.1:{port}', f'http://127.0.0.1:{port + 1}',
                 f'http://127.0.0.1:{port}.evil.example', 'http://127.0.0.1']:
    for method, path, body in _state_changes(client) + [('GET', '/api/token', None),
                                                         ('GET', '/api/summary', None)]:
      status, payload, _ = client.request(method, path, body, headers={'Origin': origin})
      assert status == 403 and 'cross-origin' in payload['error'], (origin, path, payload)
  _unchanged(client, *before)
  own = {'Origin': f'http://127.0.0.1:{port}'}
  assert client.request('POST', '/api/click', _click(), headers=own)[0] == 200
  # Through localhost, the page's origin is http://localhost:PORT.
  assert client.request('POST', '/api/undo', {'annotator': 'alice'}, headers={
      'Host': f'localhost:{port}', 'Origin': f'http://localhost:{port}'})[0] == 200


def test_only_the_servers_own_host_names_are_answered(client):
  port = client.port
  for host in ['evil.example', f'evil.example:{port}', f'127.0.0.1:{port + 1}', '127.0.0.1',
               'localhost', f'localhost.evil.example:{port}', f'0.0.0.0:{port}', '',
               f'127.0.0.1:{port}@evil.example']:
    for method, path, body in [('GET', '/api/summary', None), ('GET', '/', None),
                               ('GET', '/api/token', None), ('GET', '/images/b', None),
                               ('POST', '/api/login', {'annotator': 'mallory'})]:
      status, payload, content_type = client.request(method, path, body, headers={'Host': host})
      assert status == 421 and 'allowed_hosts' in payload['error'], (host, path, payload)
      assert content_type.startswith('application/json')
  for host in [f'127.0.0.1:{port}', f'localhost:{port}', f'LocalHost:{port}']:
    assert client.request('GET', '/api/summary', headers={'Host': host})[0] == 200, host
  assert 'mallory' not in [a['annotator'] for a in client.summary()['annotators']]


def test_allowed_hosts_add_names(dataset, tmp_path):
  client = Client(dataset, str(tmp_path / 'clicks.jsonl'),
                  extra_hosts=['Annotate.Lab', 'proxy.lab:8443'])
  try:
    port = client.port
    for host, status in [(f'annotate.lab:{port}', 200), ('proxy.lab:8443', 200),
                         ('annotate.lab', 421), (f'proxy.lab:{port}', 421)]:
      assert client.request('GET', '/api/summary', headers={'Host': host})[0] == status, host
    assert client.request('POST', '/api/login', {'annotator': 'eve'}, headers={
        'Host': 'proxy.lab:8443', 'Origin': 'http://proxy.lab:8443'})[0] == 200
  finally:
    client.close()


def test_allowed_host_names():
  assert server_lib.allowed_hosts('127.0.0.1', 8000) == {'127.0.0.1:8000', 'localhost:8000'}
  assert server_lib.allowed_hosts('0.0.0.0', 8000, ['Lab-PC', 'fe80::1', '[::1]', 'x:1', '']) == {
      '127.0.0.1:8000', 'localhost:8000', '0.0.0.0:8000', 'lab-pc:8000', '[fe80::1]:8000',
      '[::1]:8000', 'x:1'}
  # Browsers leave port 80 out of Host.
  assert server_lib.allowed_hosts('::1', 80) == {'127.0.0.1:80', 'localhost:80', '[::1]:80',
                                                 '127.0.0.1', 'localhost', '[::1]'}


# --- Gold results only for the admin (item 14) ---------------------------------------------------


def test_the_summary_shows_an_annotator_only_their_own_row_without_gold(dataset, tmp_path):
  client = Client(dataset, str(tmp_path / 'clicks.jsonl'), gold_fraction=1.0)
  try:
    client.qualify('alice')
    client.qualify('bob')
    assert client.post('/api/click', _click('alice'))[0] == 200
    assert client.post('/api/click', _click('bob', x=49.0, y=39.0))[0] == 200  # Off the dog.
    anonymous = client.get('/api/summary')[1]
    text = json.dumps(anonymous)
    assert 'alice' not in text and 'bob' not in text and 'gold_missed' not in text
    assert anonymous['view'] == 'annotator' and anonymous['annotators'] == []
    assert anonymous['clicks_total'] == 2 and anonymous['pairs_total'] == 4  # Totals stay.
    status, mine = client.get('/api/summary?annotator=alice')
    assert status == 200 and mine['view'] == 'annotator'
    assert mine['annotators'] == [{
        'annotator': 'alice', 'clicks': 1, 'qualification_attempts': 1, 'qualified': True,
        'flagged': False, 'skips': 0, 'median_response_time_s': 1.0}]
    assert 'bob' not in json.dumps(mine)
    assert all(set(p) == {'image_id', 'class', 'clicks'} for p in mine['per_pair'])
    assert client.get('/api/summary?annotator=nobody')[1]['annotators'] == []
    assert client.get('/api/summary?annotator=eve%0A')[0] == 400
    # A wrong admin token is refused, also the page token; the right one shows everything.
    server = client.server
    for bad in ['', 'guess', server.admin_token + 'x', server.page_token]:
      status, payload, _ = client.request('GET', '/api/summary?annotator=alice', headers={
          server_lib.ADMIN_TOKEN_HEADER: bad})
      assert status == 403 and payload['code'] == 'bad_admin_token', bad
    full = client.summary()
    assert full['view'] == 'admin'
    by_name = {a['annotator']: a for a in full['annotators']}
    assert (by_name['alice']['gold_clicks'], by_name['alice']['gold_missed']) == (1, 0)
    assert (by_name['bob']['gold_clicks'], by_name['bob']['gold_missed']) == (1, 1)
    assert {tuple(p['annotators']) for p in full['per_pair']} == {(), ('alice', 'bob')}
    # The admin's page: the summary with the token the server printed.
    assert server.admin_url == f'{server.url}/summary?token={server.admin_token}'
    assert client.request('GET', server.admin_url[len(server.url):])[0] == 200
    other = server_lib.AnnotationServer(client.app, '127.0.0.1', 0)  # A restart: a new token.
    other.server_close()
    assert other.admin_token != server.admin_token and len(server.admin_token) >= 32
  finally:
    client.close()
