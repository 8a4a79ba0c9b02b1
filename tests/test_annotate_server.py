"""The annotation server's HTTP API on a tiny VOC folder: the workflow and every rejection."""

import http.client
import json
import os
import threading

import pytest

from click_supervision import clicks as clicks_lib
from click_supervision.annotate import app as app_lib
from click_supervision.annotate import qualification
from click_supervision.annotate import server as server_lib
from click_supervision.datasets import voc
from click_supervision.errors import UserError
import helpers

# Boxes in VOC's 1-based inclusive (xmin, ymin, xmax, ymax). Image 'a' has two dogs and a cat.
IMAGES = {
    'a': (64, 48, [('dog', (5, 5, 24, 20), False), ('dog', (35, 20, 60, 44), False),
                   ('cat', (30, 2, 40, 12), False)]),
    'b': (50, 40, [('dog', (10, 10, 40, 30), False)]),
    'c': (40, 60, [('cat', (5, 20, 30, 55), False)]),
}
NUM_PAIRS = 4  # a/dog, a/cat, b/dog, c/cat


def strict_json(data):
  """Parses JSON the way browsers' JSON.parse does: NaN and Infinity are not JSON."""
  def refuse(name):
    raise ValueError(f'{name} is not JSON')
  return json.loads(data, parse_constant=refuse)


@pytest.fixture(name='dataset')
def dataset_fixture(tmp_path):
  root = helpers.make_voc_folder(str(tmp_path / 'voc'), IMAGES)
  return voc.load_voc(root, 'trainval', log=lambda _: None)


class Client:
  """A running server on a free port, and requests to it."""

  def __init__(self, dataset, out_path, extra_hosts=(), **app_kwargs):
    self.dataset = dataset
    self.out_path = out_path
    self.app = app_lib.AnnotationApp(dataset, out_path, log=lambda _: None, **app_kwargs)
    self.server = server_lib.AnnotationServer(self.app, '127.0.0.1', 0, extra_hosts=extra_hosts)
    self.port = self.server.server_address[1]
    self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
    self.thread.start()

  def request(self, method, path, body=None, raw=None, headers=None):
    """Returns (status, parsed JSON or raw bytes, content type).

    Sends what the page sends: the page token, and JSON's content type on a POST; `headers`
    override them (None leaves one out), and a 'Host' there replaces the real one.
    """
    connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=10)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    defaults = {server_lib.TOKEN_HEADER: self.server.page_token}
    if method == 'POST':
      defaults['Content-Type'] = 'application/json'
    headers = {**defaults, **(headers or {})}
    connection.putrequest(method, path, skip_host='Host' in headers, skip_accept_encoding=True)
    if data is not None and 'Content-Length' not in headers:
      headers['Content-Length'] = str(len(data))
    for key, value in headers.items():
      if value is not None:
        connection.putheader(key, value)
    connection.endheaders()
    if data is not None:
      connection.send(data)
    response = connection.getresponse()
    payload = response.read()
    content_type = response.getheader('Content-Type', '')
    connection.close()
    if content_type.startswith('application/json') and payload:  # HEAD answers have no body.
      payload = strict_json(payload)
    return response.status, payload, content_type

  def post(self, path, body):
    return self.request('POST', path, body)[:2]

  def get(self, path):
    return self.request('GET', path)[:2]

  def summary(self):
    """The admin's summary (every annotator's row)."""
    status, payload, _ = self.request('GET', '/api/summary', headers={
        server_lib.ADMIN_TOKEN_HEADER: self.server.admin_token})
    assert status == 200, payload
    return payload

  def qualify(self, annotator):
    status, test = self.get(f'/api/qualification?annotator={annotator}')
    assert status == 200
    polygons = qualification.make_test(self.app.seed, annotator, test['attempt'],
                                       self.app.qualification_polygons)
    status, result = self.post('/api/qualification', {
        'annotator': annotator, 'attempt': test['attempt'],
        'clicks': [p['center'] for p in polygons]})
    assert status == 200 and result['passed'], result
    return result

  def click_center(self, annotator, pair, response_time_s=1.5):
    """Clicks the center of the first ground-truth box of the pair's class."""
    record = self.dataset.by_id()[pair['image_id']]
    label = self.dataset.class_names.index(pair['class'])
    ymin, xmin, ymax, xmax = record['gt_boxes'][record['gt_labels'] == label][0]
    return self.post('/api/click', {
        'annotator': annotator, 'image_id': pair['image_id'], 'class': pair['class'],
        'x': float(xmin + xmax) / 2, 'y': float(ymin + ymax) / 2,
        'response_time_s': response_time_s})

  def close(self):
    self.server.shutdown()
    self.server.server_close()
    self.app.close()


@pytest.fixture(name='client')
def client_fixture(dataset, tmp_path):
  client = Client(dataset, str(tmp_path / 'out' / 'clicks.jsonl'), gold_fraction=0.0)
  yield client
  client.close()


def test_login_validates_names_and_reports_state(client):
  assert client.post('/api/login', {'annotator': '../etc'})[0] == 400
  assert client.post('/api/login', {'annotator': ''})[0] == 400
  assert client.post('/api/login', {'annotator': 'x' * 65})[0] == 400
  assert client.post('/api/login', {'annotator': 7})[0] == 400
  status, state = client.post('/api/login', {'annotator': 'ann.1@lab'})
  assert status == 200
  assert state['qualified'] is False and state['progress']['pairs_total'] == NUM_PAIRS


def test_work_needs_qualification(client):
  assert client.get('/api/next?annotator=alice')[0] == 403
  status, payload = client.post('/api/click', {'annotator': 'alice', 'image_id': 'b',
                                               'class': 'dog', 'x': 20, 'y': 20})
  assert status == 403 and 'qualification' in payload['error']
  assert client.post('/api/undo', {'annotator': 'alice'})[0] == 403
  assert client.post('/api/skip', {'annotator': 'alice', 'image_id': 'b', 'class': 'dog'})[0] == 403


def test_qualification_feedback_retry_and_rejections(client):
  status, test = client.get('/api/qualification?annotator=alice')
  assert status == 200 and test['attempt'] == 1 and len(test['polygons']) == 5
  assert 'box' not in test['polygons'][0]  # The answers stay on the server.
  polygons = qualification.make_test(0, 'alice', 1)
  far = [[p['box'][0], p['box'][1]] for p in polygons]  # Box corners: far from the centers.
  assert client.post('/api/qualification', {'annotator': 'alice', 'attempt': 1,
                                            'clicks': far[:4]})[0] == 400
  assert client.post('/api/qualification', {'annotator': 'alice', 'attempt': 1,
                                            'clicks': far[:4] + [[500, 10]]})[0] == 400
  assert client.post('/api/qualification', {'annotator': 'alice', 'attempt': 1,
                                            'clicks': far[:4] + [['a', 1]]})[0] == 400
  assert client.post('/api/qualification', {'annotator': 'alice', 'attempt': 2,
                                            'clicks': far})[0] == 409
  status, feedback = client.post('/api/qualification', {'annotator': 'alice', 'attempt': 1,
                                                        'clicks': far})
  assert status == 200 and feedback['passed'] is False
  assert [r['center'] for r in feedback['results']] == [p['center'] for p in polygons]
  assert not any(r['ok'] for r in feedback['results'])
  assert client.get('/api/next?annotator=alice')[0] == 403
  # The retry gets new polygons; the old attempt is closed.
  assert client.post('/api/qualification', {'annotator': 'alice', 'attempt': 1,
                                            'clicks': far})[0] == 409
  result = client.qualify('alice')
  assert result['attempt'] == 2
  assert client.post('/api/login', {'annotator': 'alice'})[1]['qualified'] is True


def test_click_rejections(client):
  client.qualify('alice')
  status, next_pair = client.get('/api/next?annotator=alice')
  pair = next_pair['pair']
  base = {'annotator': 'alice', 'image_id': pair['image_id'], 'class': pair['class'],
          'x': 1.0, 'y': 1.0, 'response_time_s': 1.0}
  width, height = pair['width'], pair['height']
  for bad, expected in [
      ({'x': -0.5}, 400), ({'x': width + 0.5}, 400), ({'y': height + 1}, 400),
      ({'x': 'left'}, 400), ({'x': None}, 400), ({'x': True}, 400),
      ({'response_time_s': -1}, 400), ({'response_time_s': 'fast'}, 400),
      ({'image_id': 'nope'}, 404), ({'class': 'horse'}, 404),
      ({'image_id': 'c', 'class': 'dog'}, 404), ({'class': 3}, 400),
  ]:
    status, payload = client.post('/api/click', dict(base, **bad))
    assert status == expected, (bad, payload)
    assert payload['error']
  status, payload, _ = client.request('POST', '/api/click', raw=b'{"annotator": "alice",')
  assert status == 400 and 'not JSON' in payload['error']
  assert client.request('POST', '/api/click', raw=b'[1, 2]')[0] == 400
  assert client.request('POST', '/api/click', raw=b'\xff\xfe')[0] == 400
  assert client.request('POST', '/api/click', raw=b'x' * (server_lib.MAX_BODY_BYTES + 1))[0] == 413
  assert client.request('POST', '/api/click', raw=b'{}',
                        headers={'Content-Length': str(10 ** 9)})[0] == 413
  assert client.request('POST', '/api/click', raw=b'{}',
                        headers={'Content-Length': 'many'})[0] == 400
  assert client.request('POST', '/api/click')[0] == 411
  assert client.request('POST', '/api/nothing', body={})[0] == 404
  assert client.request('PUT', '/api/click', body={})[0] == 405
  assert client.request('DELETE', '/')[0] == 405
  assert client.request('HEAD', '/api/next?annotator=alice')[0] == 405  # Would reserve a pair.
  # None of the rejected clicks reached the file; the good one does, once.
  assert client.post('/api/click', base)[0] == 200
  status, payload = client.post('/api/click', base)
  assert status == 409 and 'already clicked' in payload['error']
  with open(client.out_path) as f:
    assert len(f.read().splitlines()) == 2  # Header and one click.


def test_only_app_files_and_dataset_images_are_served(client, dataset):
  status, body, content_type = client.request('GET', '/')
  assert status == 200 and b'Center clicks' in body and content_type.startswith('text/html')
  assert client.request('GET', '/summary')[0] == 200
  status, body, content_type = client.request('GET', '/static/app.js')
  assert status == 200 and 'javascript' in content_type
  status, body, content_type = client.request('GET', '/images/b')
  assert status == 200 and content_type == 'image/jpeg'
  with open(dataset.by_id()['b']['path'], 'rb') as f:
    assert body == f.read()
  secret = os.path.join(os.path.dirname(client.out_path), 'secret.txt')
  with open(secret, 'w') as f:
    f.write('not for the web')
  for path in ['/static/../app.py', '/static/..%2Fapp.py', '/static/%2e%2e/server.py',
               '/static/../../../../etc/passwd', '/static//etc/passwd', '/static/',
               '/images/../JPEGImages/b.jpg', '/images/..%2F..%2Fetc%2Fpasswd',
               '/images/%2Fetc%2Fpasswd', '/images/' + secret, '/../../etc/passwd',
               '/%2e%2e/%2e%2e/etc/passwd', '/static/app.js%00.png', '/out/clicks.jsonl',
               '/images/b.jpg']:
    status, payload, _ = client.request('GET', path)
    assert status == 404, path
    assert 'error' in payload


def test_each_pair_gets_distinct_annotators_and_the_file_trains(client, dataset):
  annotators = ['alice', 'bob', 'carol']
  for annotator in annotators:
    client.qualify(annotator)
  served = {a: [] for a in annotators}
  for _ in range(NUM_PAIRS):
    for annotator in annotators[:2]:
      status, payload = client.get(f'/api/next?annotator={annotator}')
      pair = payload['pair']
      served[annotator].append((pair['image_id'], pair['class']))
      assert client.click_center(annotator, pair)[0] == 200
  for annotator in annotators[:2]:
    assert len(set(served[annotator])) == NUM_PAIRS  # Never the same pair twice.
    assert client.get(f'/api/next?annotator={annotator}')[1]['pair'] is None
  # Every pair has its two annotators: carol gets nothing, and a third click is refused.
  status, payload = client.get('/api/next?annotator=carol')
  assert status == 200 and payload['pair'] is None
  assert payload['progress']['pairs_complete'] == NUM_PAIRS
  status, payload = client.post('/api/click', {'annotator': 'carol', 'image_id': 'b',
                                               'class': 'dog', 'x': 20, 'y': 20})
  assert status == 409 and 'already has' in payload['error']

  click_set = clicks_lib.read_click_file(client.out_path, dataset)
  assert click_set.header['annotation_tool']['dataset'] == dataset.name
  pairs = [(r['image_id'], int(c)) for r in dataset.records for c in r['image_labels']]
  selected = clicks_lib.select_clicks(click_set, pairs, 2)
  for pair in pairs:
    assert sorted(c.annotator for c in selected[pair]) == ['alice', 'bob']
    assert all(c.source == 'human' and c.response_time_s == 1.5 for c in selected[pair])

  summary = client.summary()
  assert summary['pairs_complete'] == NUM_PAIRS and summary['clicks_total'] == 2 * NUM_PAIRS
  assert summary['pairs_by_clicks'] == {'2': NUM_PAIRS}
  assert summary['median_response_time_s'] == 1.5
  assert summary['annotation_hours'] == pytest.approx(2 * NUM_PAIRS * 1.5 / 3600)
  # Both annotators click the first box center of the class: they agree exactly.
  assert summary['agreement'] == {'pairs': NUM_PAIRS, 'median_distance_rel': 0.0,
                                  'mean_distance_rel': 0.0}


def test_lease_keeps_two_annotators_off_a_pair_that_needs_one(dataset, tmp_path):
  client = Client(dataset, str(tmp_path / 'clicks.jsonl'), num_annotators=1, gold_fraction=0.0)
  try:
    client.qualify('alice')
    client.qualify('bob')
    first = client.get('/api/next?annotator=alice')[1]['pair']
    again = client.get('/api/next?annotator=alice')[1]['pair']
    assert again == first  # A reloaded page gets the same pair back.
    other = client.get('/api/next?annotator=bob')[1]['pair']
    assert (other['image_id'], other['class']) != (first['image_id'], first['class'])
  finally:
    client.close()


def test_agreement_is_relative_to_the_box_size(client):
  client.qualify('alice')
  client.qualify('bob')
  # Image 'b': one dog, VOC (10, 10, 40, 30) -> pixels x 9..40, y 9..30: 31 x 21 box.
  assert client.post('/api/click', {'annotator': 'alice', 'image_id': 'b', 'class': 'dog',
                                    'x': 20.0, 'y': 20.0, 'response_time_s': 1.0})[0] == 200
  assert client.post('/api/click', {'annotator': 'bob', 'image_id': 'b', 'class': 'dog',
                                    'x': 26.0, 'y': 28.0, 'response_time_s': 3.0})[0] == 200
  summary = client.summary()
  assert summary['agreement']['pairs'] == 1
  assert summary['agreement']['median_distance_rel'] == pytest.approx(10.0 / (31 * 21) ** 0.5)
  assert summary['median_response_time_s'] == 2.0
  by_name = {a['annotator']: a for a in summary['annotators']}
  assert by_name['bob']['median_response_time_s'] == 3.0
  assert by_name['bob']['qualification_attempts'] == 1 and by_name['bob']['qualified']


def test_undo_and_skip(client, dataset):
  client.qualify('alice')
  pair = client.get('/api/next?annotator=alice')[1]['pair']
  assert client.post('/api/undo', {'annotator': 'alice'})[0] == 409  # Nothing to undo yet.
  assert client.click_center('alice', pair)[0] == 200
  status, payload = client.post('/api/undo', {'annotator': 'alice'})
  assert status == 200 and payload['undone']['image_id'] == pair['image_id']
  assert clicks_lib.read_click_file(client.out_path, dataset).num_clicks == 0
  assert client.get('/api/next?annotator=alice')[1]['pair'] == pair  # Back to the undone pair.
  # Skip it: never served to alice again, still served to bob.
  assert client.post('/api/skip', {'annotator': 'alice', 'image_id': pair['image_id'],
                                   'class': pair['class']})[0] == 200
  assert client.post('/api/skip', {'annotator': 'alice', 'image_id': pair['image_id'],
                                   'class': pair['class']})[0] == 409
  assert client.post('/api/skip', {'annotator': 'alice', 'image_id': 'z',
                                   'class': 'dog'})[0] == 404
  seen = []
  while True:
    next_pair = client.get('/api/next?annotator=alice')[1]['pair']
    if next_pair is None:
      break
    seen.append(next_pair)
    assert client.click_center('alice', next_pair)[0] == 200
  assert len(seen) == NUM_PAIRS - 1 and pair not in seen
  client.qualify('bob')
  assert client.get('/api/next?annotator=bob')[1]['pair'] == pair


def test_gold_pairs_flag_an_annotator_who_clicks_off_the_objects(dataset, tmp_path):
  out = str(tmp_path / 'clicks.jsonl')
  client = Client(dataset, out, gold_fraction=1.0, gold_min_clicks=2, gold_max_miss_rate=0.3)
  try:
    assert len(client.app.gold) == NUM_PAIRS
    client.qualify('mallory')
    client.qualify('alice')
    for _ in range(2):
      pair = client.get('/api/next?annotator=mallory')[1]['pair']
      # The image's bottom-right corner lies outside every box of these images.
      status, payload = client.post('/api/click', {
          'annotator': 'mallory', 'image_id': pair['image_id'], 'class': pair['class'],
          'x': float(pair['width']), 'y': float(pair['height']), 'response_time_s': 0.5})
      assert status == 200
    assert payload['flagged'] is True
    status, payload = client.get('/api/next?annotator=mallory')
    assert status == 403 and 'quality control' in payload['error']
    assert client.post('/api/login', {'annotator': 'mallory'})[1]['flagged'] is True
    pair = client.get('/api/next?annotator=alice')[1]['pair']
    assert client.click_center('alice', pair)[0] == 200
    click_set = clicks_lib.read_click_file(out, dataset)
    flags = {c.annotator: c.flagged for clicks in click_set.clicks.values() for c in clicks}
    assert flags == {'mallory': True, 'alice': False}
    # Flagged clicks do not count: pairs mallory clicked still need two good annotators.
    summary = client.summary()
    assert summary['clicks_flagged'] == 2 and summary['pairs_complete'] == 0
    by_name = {a['annotator']: a for a in summary['annotators']}
    assert by_name['mallory']['gold_missed'] == 2 and by_name['mallory']['flagged']
    assert by_name['alice']['gold_missed'] == 0 and not by_name['alice']['flagged']
  finally:
    client.close()


def test_restart_resumes_and_drops_only_an_unacknowledged_partial_line(dataset, tmp_path):
  out = str(tmp_path / 'clicks.jsonl')
  client = Client(dataset, out, gold_fraction=0.0)
  client.qualify('alice')
  first = client.get('/api/next?annotator=alice')[1]['pair']
  assert client.click_center('alice', first)[0] == 200
  second = client.get('/api/next?annotator=alice')[1]['pair']
  assert client.post('/api/skip', {'annotator': 'alice', 'image_id': second['image_id'],
                                   'class': second['class']})[0] == 200
  client.close()
  with open(out, 'a') as f:
    f.write('{"image_id": "b", "cla')  # A write cut by a kill: never acknowledged.
  logged = []
  app = app_lib.AnnotationApp(dataset, out, gold_fraction=0.0, log=logged.append)
  try:
    assert any('partial last line' in line for line in logged)
    state = app.state('alice')
    assert state['qualified'] and state['num_clicks'] == 1
    third = app.next_pair('alice')['pair']
    assert (third['image_id'], third['class']) not in {
        (first['image_id'], first['class']), (second['image_id'], second['class'])}
  finally:
    app.close()
  assert clicks_lib.read_click_file(out, dataset).num_clicks == 1


def test_restart_with_other_settings_is_refused(dataset, tmp_path):
  out = str(tmp_path / 'clicks.jsonl')
  app_lib.AnnotationApp(dataset, out, seed=0, log=lambda _: None).close()
  with pytest.raises(UserError, match='seed=0.*seed=1'):
    app_lib.AnnotationApp(dataset, out, seed=1, log=lambda _: None)
  with open(out, 'w') as f:
    f.write('{"format": "something else"}\n')
  with pytest.raises(UserError, match='clicks.jsonl: not a version 1'):
    app_lib.AnnotationApp(dataset, out, log=lambda _: None)


def test_example_is_a_single_instance_pair_with_its_box(client):
  example = client.get('/api/example')[1]
  # Only b/dog and c/cat have one instance; c/cat's box is the larger relative to its image.
  assert (example['image_id'], example['class']) == ('c', 'cat')
  assert example['box'] == [4.0, 19.0, 30.0, 55.0]
  assert example['center'] == [17.0, 37.0]


def test_edited_files_stop_with_file_and_line(dataset, tmp_path):
  out = tmp_path / 'clicks.jsonl'
  app = app_lib.AnnotationApp(dataset, str(out), gold_fraction=0.0, log=lambda _: None)
  app.submit_qualification('alice', 1, [p['center'] for p in qualification.make_test(0, 'alice', 1)])
  app.submit_click('alice', 'b', 'dog', 20.0, 20.0, 1.0)
  app.close()
  good = out.read_text()
  out.write_text(good + '{"image_id": "b", "class": "dog", "x": 999.0, "y": 1.0, "annotator": '
                 '"bob", "source": "human"}\n')
  with pytest.raises(UserError, match=r'clicks.jsonl:3: click .* lies outside'):
    app_lib.AnnotationApp(dataset, str(out), gold_fraction=0.0, log=lambda _: None)
  out.write_text(good)
  log = tmp_path / 'clicks.annotation_log.jsonl'
  log.write_text(log.read_text() + '{"event": "skip", "annotator": "bob"}\n')
  with pytest.raises(UserError, match=r'annotation_log.jsonl:3: not a qualification or skip'):
    app_lib.AnnotationApp(dataset, str(out), gold_fraction=0.0, log=lambda _: None)


def test_the_click_tool_starts_without_the_learner():
  # config.py holds every stage's settings without importing the stages, so the click tool
  # (which reads the dataset flags) does not pull in scikit-learn, TensorFlow or OpenCV.
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys, click_supervision.annotate.__main__; '
          'print(sorted(m for m in ("sklearn", "tensorflow", "cv2", "click_supervision.mil") '
          'if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]'


def test_second_pass_serves_only_the_requested_pairs_to_another_annotator(dataset, tmp_path):
  """The adaptive second click with real annotators: a first pass of one click per pair, a
  request file, and a second pass on the same click file that the driver reads."""
  from click_supervision import second_click  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'clicks.jsonl')
  first = Client(dataset, out, num_annotators=1, gold_fraction=0.0)
  try:
    first.qualify('alice')
    for _ in range(NUM_PAIRS):
      pair = first.get('/api/next?annotator=alice')[1]['pair']
      assert first.click_center('alice', pair)[0] == 200
    assert first.get('/api/next?annotator=alice')[1]['pair'] is None
  finally:
    first.close()
  dog = dataset.class_names.index('dog')
  requests = tmp_path / 'requests.jsonl'
  second_click.write_requests(str(requests), [('a', dog)], None, dataset.class_names, {})
  requested, _ = second_click.read_requests(str(requests), dataset)
  second = Client(dataset, out, num_annotators=2, gold_fraction=0.0,
                  second_click_requests={(i, dataset.class_names[c]) for i, c in requested})
  try:
    second.qualify('bob')
    # alice clicked every pair in the first pass: nothing for her, and her click is refused.
    assert second.get('/api/next?annotator=alice')[1]['pair'] is None
    status, payload = second.post('/api/click', {'annotator': 'alice', 'image_id': 'a',
                                                 'class': 'dog', 'x': 10, 'y': 10})
    assert status == 409 and 'already clicked' in payload['error']
    # bob gets the requested pair and nothing else; a click outside the requests is refused.
    pair = second.get('/api/next?annotator=bob')[1]['pair']
    assert (pair['image_id'], pair['class']) == ('a', 'dog')
    status, payload = second.post('/api/click', {'annotator': 'bob', 'image_id': 'b',
                                                 'class': 'dog', 'x': 20, 'y': 20})
    assert status == 404 and 'not requested' in payload['error']
    assert second.click_center('bob', pair)[0] == 200
    status, payload = second.get('/api/next?annotator=bob')
    assert payload['pair'] is None and payload['progress']['pairs_total'] == 1
    assert payload['progress']['pairs_complete'] == 1
  finally:
    second.close()
  # The click file feeds the driver's selection: two clicks on the requested pair, one elsewhere.
  click_set = clicks_lib.read_click_file(out, dataset)
  pairs = [(r['image_id'], int(c)) for r in dataset.records for c in r['image_labels']]
  selected = clicks_lib.select_clicks(click_set, pairs, 1, second_click_pairs=requested)
  assert [c.annotator for c in selected[('a', dog)]] == ['alice', 'bob']
  assert all(len(selected[p]) == 1 for p in pairs if p != ('a', dog))
