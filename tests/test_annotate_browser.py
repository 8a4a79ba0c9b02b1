"""End to end: two annotators in headless Chromium, a killed and restarted server, then training.

Drives the real pages with Selenium and Debian's chromium + chromium-driver. Skips when they are
missing, unless CLICKSUP_REQUIRE_BROWSER=1 (set by .ci/run, which installs them), where a
missing browser fails. Set CLICKSUP_SCREENSHOT_DIR to keep the screenshots (README's come from
here: `CLICKSUP_SCREENSHOT_DIR=docs/screenshots python -m pytest tests/test_annotate_browser.py`).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from click_supervision import clicks as clicks_lib
from click_supervision import datasets
from click_supervision.annotate import qualification

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
REQUIRE_BROWSER = os.environ.get('CLICKSUP_REQUIRE_BROWSER') == '1'

try:
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.actions.action_builder import ActionBuilder  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  _MISSING = None if CHROMIUM and CHROMEDRIVER else (
      'needs Debian chromium and chromium-driver (apt-get install chromium chromium-driver)')
except ImportError:
  _MISSING = 'needs selenium (pip install -e ".[test]")'

if _MISSING and REQUIRE_BROWSER:
  raise RuntimeError(f'CLICKSUP_REQUIRE_BROWSER=1 but the browser test {_MISSING}')
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f'browser test {_MISSING}')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Server:
  """`python -m click_supervision.annotate` as a child process that can be killed."""

  def __init__(self, args, port):
    self.args, self.port = args, port
    self.process = None
    self.output = []
    self.admin_url = None  # The summary's admin view, printed at each start.

  def start(self):
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'click_supervision.annotate', f'--port={self.port}'] + self.args,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    for line in self.process.stdout:
      self.output.append(line)
      if line.startswith('admin summary '):
        self.admin_url = line.split()[-1]
      if line.startswith('serving on '):
        return line.split()[2]
    raise AssertionError('the server did not start:\n' + ''.join(self.output))

  def kill(self):
    self.process.send_signal(signal.SIGKILL)  # No chance to flush or clean up anything.
    self.process.wait(timeout=30)
    self.output.extend(self.process.stdout.read().splitlines(keepends=True))


def _browser():
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for argument in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                   '--window-size=1100,900', '--force-device-scale-factor=1'):
    options.add_argument(argument)
  driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                            options=options)
  driver.set_page_load_timeout(30)
  return driver


class Annotator:
  """One annotator's browser and what they did."""

  def __init__(self, name, url, dataset, nudge):
    self.name, self.url, self.dataset, self.nudge = name, url, dataset, nudge
    self.driver = _browser()
    self.clicked = []  # Acknowledged (image_id, class, x, y) in image pixels.

  def wait(self, condition, timeout=20):
    return WebDriverWait(self.driver, timeout).until(lambda d: condition())

  def view(self):
    return self.driver.execute_script('return document.body.dataset.view || null')

  def click_at(self, element_id, x, y, width, height):
    """Clicks frame pixel (x, y) of a canvas or image shown at any size, in viewport pixels."""
    # Bring the point into view: the page, then the zoomed image's scrolling frame. The page
    # maps clientWidth/Height (no border) back to frame pixels; mirror that here.
    viewport_x, viewport_y = self.driver.execute_script("""
        const [e, fx, fy] = [document.getElementById(arguments[0]), arguments[1], arguments[2]];
        const frame = e.parentElement;
        frame.scrollIntoView({block: 'center', inline: 'center'});
        const point = () => {
          const r = e.getBoundingClientRect();
          return [r.left + e.clientLeft + fx * e.clientWidth,
                  r.top + e.clientTop + fy * e.clientHeight];
        };
        const [px, py] = point();
        const f = frame.getBoundingClientRect();
        frame.scrollLeft += px - (f.left + frame.clientLeft + frame.clientWidth / 2);
        frame.scrollTop += py - (f.top + frame.clientTop + frame.clientHeight / 2);
        return point();""", element_id, x / width, y / height)
    actions = ActionBuilder(self.driver)
    actions.pointer_action.move_to_location(round(viewport_x), round(viewport_y)).click()
    actions.perform()

  def login(self):
    self.driver.get(self.url)
    self.wait(lambda: self.view() == 'login-view')
    self.driver.find_element('id', 'annotator-name').send_keys(self.name)
    self.driver.find_element('id', 'login-button').click()
    self.wait(lambda: self.view() == 'instructions-view')
    # The example photo is drawn once it loads.
    self.wait(lambda: self.driver.execute_script(
        'return document.getElementById("example-canvas").width !== 480'))

  def take_qualification(self, attempt, num_correct):
    """Clicks the first `num_correct` box centers right and the rest clearly wrong."""
    self.driver.find_element('id', 'retry-button' if attempt > 1 else
                             'start-qualification').click()
    self.wait(lambda: self.view() == 'qualification-view' and
              f'Attempt {attempt},' in self.driver.find_element('id', 'qual-counter').text)
    polygons = qualification.make_test(0, self.name, attempt)
    for index, polygon in enumerate(polygons):
      self.wait(lambda i=index: f'shape {i + 1} of' in
                self.driver.find_element('id', 'qual-counter').text)
      x, y = polygon['center']
      if index >= num_correct:  # Halfway to the box's corner: 0.35 of its size off, a miss.
        x, y = (x + polygon['box'][2]) / 2, (y + polygon['box'][3]) / 2
      self.click_at('qual-canvas', x, y, qualification.CANVAS_WIDTH, qualification.CANVAS_HEIGHT)
    self.wait(lambda: self.view() == 'feedback-view')
    return self.driver.find_element('id', 'feedback-message').text

  def current_pair(self):
    image = self.driver.find_element('id', 'task-image')
    return image.get_attribute('data-image-id'), image.get_attribute('data-class')

  def wait_for_pair(self, previous=None):
    """Waits for a shown, loaded pair different from `previous`, or the done view."""
    self.wait(lambda: self.view() == 'done-view' or (
        self.view() == 'task-view' and
        self.driver.find_element('id', 'task-image').get_attribute('data-ready') == 'true' and
        self.current_pair() != previous))
    return None if self.view() == 'done-view' else self.current_pair()

  def target(self, pair):
    """The center of the first box of the pair's class, nudged by this annotator's habit."""
    record = self.dataset.by_id()[pair[0]]
    label = self.dataset.class_names.index(pair[1])
    ymin, xmin, ymax, xmax = record['gt_boxes'][record['gt_labels'] == label][0]
    return (float(xmin + xmax) / 2 + self.nudge, float(ymin + ymax) / 2 + self.nudge,
            record['width'], record['height'])

  def click_pair(self, pair):
    x, y, width, height = self.target(pair)
    self.click_at('task-image', x, y, width, height)
    self.clicked.append((pair[0], pair[1], x, y))
    return self.wait_for_pair(previous=pair)

  def press(self, key):
    ActionChains(self.driver).send_keys(key).perform()

  def screenshot(self, folder, name):
    self.driver.save_screenshot(os.path.join(folder, name))

  def quit(self):
    self.driver.quit()


@pytest.mark.slow(seconds=50)
def test_two_annotators_collect_clicks_through_a_server_kill(tmp_path):
  cache_dir = str(tmp_path / 'cache')
  dataset = datasets.load_dataset('synthetic:smoke', 'trainval', cache_dir, log=lambda _: None)
  num_pairs = sum(len(r['image_labels']) for r in dataset.records)
  screenshots = os.environ.get('CLICKSUP_SCREENSHOT_DIR') or str(tmp_path / 'screenshots')
  os.makedirs(screenshots, exist_ok=True)
  out = str(tmp_path / 'clicks.jsonl')
  server = Server(['--dataset=synthetic:smoke', '--split=trainval', f'--cache_dir={cache_dir}',
                   f'--out={out}', '--gold_fraction=0.2'], _free_port())
  url = server.start()
  alice = Annotator('alice', url, dataset, nudge=1.5)
  bob = None
  try:
    bob = Annotator('bob', url, dataset, nudge=-1.5)
    # --- Instructions, qualification with feedback and a retry. ---
    alice.login()
    alice.screenshot(screenshots, 'instructions.png')
    message = alice.take_qualification(attempt=1, num_correct=3)
    assert message.startswith('Not passed: 3 of 5')
    assert alice.driver.find_element('id', 'retry-button').is_displayed()
    alice.screenshot(screenshots, 'qualification_feedback.png')
    assert alice.take_qualification(attempt=2, num_correct=5).startswith('Passed: 5 of 5')
    alice.driver.find_element('id', 'continue-button').click()
    bob.login()
    assert bob.take_qualification(attempt=1, num_correct=4).startswith('Passed')
    bob.driver.find_element('id', 'continue-button').click()

    # --- Main task, part one: a few pairs each, zoom and undo by keyboard. ---
    pairs = {'alice': alice.wait_for_pair(), 'bob': bob.wait_for_pair()}
    alice.screenshot(screenshots, 'main_task.png')
    width_script = 'return document.getElementById("task-image").clientWidth'
    fitted_width = alice.driver.execute_script(width_script)
    alice.press('z')  # Zoomed in, the click still lands on the same image pixel.
    alice.wait(lambda: alice.driver.execute_script(width_script) >= 2 * fitted_width - 1)
    undone = pairs['alice']
    pairs['alice'] = alice.click_pair(pairs['alice'])
    alice.press('z')
    alice.press('u')  # Undo: the click leaves the file and the pair comes back.
    alice.wait(lambda: 'Undone' in alice.driver.find_element('id', 'message').text)
    assert alice.wait_for_pair(previous=pairs['alice']) == undone
    alice.clicked.pop()
    pairs['alice'] = undone
    for _ in range(5):
      for annotator in (alice, bob):
        pairs[annotator.name] = annotator.click_pair(pairs[annotator.name])

    # --- Kill the server without warning; restart it; the pages resume on reload. ---
    server.kill()
    lines = open(out).read().splitlines()
    assert len(lines) == 1 + len(alice.clicked) + len(bob.clicked)  # Header + every ack.
    server.start()
    # Bob reloads; alice's page stays open: her next click carries the old server's page token,
    # is refused, and the page fetches the new token and sends it again.
    bob.driver.refresh()
    pairs['bob'] = bob.wait_for_pair()
    pairs['alice'] = alice.click_pair(pairs['alice'])
    # Work until both are told there is nothing left for them.
    while any(pairs.values()):
      for annotator in (alice, bob):
        if pairs[annotator.name]:
          pairs[annotator.name] = annotator.click_pair(pairs[annotator.name])
    assert 'No pair needs your click' in alice.driver.find_element('id', 'done-text').text
    # An annotator's summary: the totals and their own row, no gold results, nobody else.
    alice.driver.get(url + '/summary')
    alice.wait(lambda: 'alice' in alice.driver.find_element('id', 'annotators').text)
    annotators = alice.driver.find_element('id', 'annotators').text
    assert 'bob' not in annotators and 'gold' not in annotators
    assert 'bob' not in alice.driver.find_element('id', 'pairs').text
    # The admin's: every annotator with gold results (the restart printed a new link).
    assert server.admin_url.startswith(url + '/summary?token=')
    bob.driver.get(server.admin_url)
    bob.wait(lambda: 'alice' in bob.driver.find_element('id', 'annotators').text)
    annotators = bob.driver.find_element('id', 'annotators').text
    assert 'bob' in annotators and 'gold missed' in annotators
    bob.screenshot(screenshots, 'summary.png')
  finally:
    for annotator in (alice, bob):
      if annotator:
        annotator.quit()
    if server.process.poll() is None:
      server.kill()

  # --- The file: every acknowledged click, two annotators per pair, on the objects. ---
  assert any('resuming: ' in line for line in server.output)
  click_set = clicks_lib.read_click_file(out, dataset)
  assert click_set.num_clicks == 2 * num_pairs == len(alice.clicked) + len(bob.clicked)
  for annotator in (alice, bob):
    for image_id, class_name, x, y in annotator.clicked:
      (click,) = [c for c in click_set.clicks[(image_id, dataset.class_names.index(class_name))]
                  if c.annotator == annotator.name]
      # One CSS pixel of rounding is at most about a third of an image pixel here.
      assert abs(click.x - x) < 0.5 and abs(click.y - y) < 0.5
      assert click.source == 'human' and not click.flagged
      assert 0 < click.response_time_s < 60
  for clicks in click_set.clicks.values():
    assert sorted(c.annotator for c in clicks) == ['alice', 'bob']
  summary_text = json.dumps(click_set.header)
  assert '"annotation_tool"' in summary_text

  # --- It trains with no conversion step. ---
  workdir = str(tmp_path / 'run')
  result = subprocess.run(
      [sys.executable, 'run_mil.py', '--dataset=synthetic:smoke', '--split=trainval',
       f'--cache_dir={cache_dir}', f'--workdir={workdir}', '--stages=data,clicks', '--clicks=2',
       f'--click_source={out}'], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['click_stats']['click_file'] == out
  assert results['click_stats']['num_clicks'] == 2 * num_pairs
  assert np.isfinite(results['annotation_hours'])
  # The measured time of the clicks the learner used (the test's clicks are quick, not human).
  assert 0 < results['click_stats']['response_time_s_sum'] < 2 * num_pairs * 60


def test_a_second_pass_serves_the_requested_pairs_to_a_new_annotator(tmp_path):
  """The adaptive second click in the browser: a first pass of one click per pair (made through
  the app's API), a request file, then a second server on the same click file that hands only the
  requested pairs to a new annotator and none to the first; the file trains directly."""
  # pylint: disable=g-import-not-at-top
  from click_supervision import second_click
  from click_supervision.annotate import app as app_lib
  cache_dir = str(tmp_path / 'cache')
  dataset = datasets.load_dataset('synthetic:smoke', 'trainval', cache_dir, log=lambda _: None)
  out = str(tmp_path / 'clicks.jsonl')
  first = app_lib.AnnotationApp(dataset, out, num_annotators=1, gold_fraction=0.2,
                                log=lambda _: None)
  polygons = qualification.make_test(0, 'alice', 1)
  assert first.submit_qualification('alice', 1, [p['center'] for p in polygons])['passed']
  for image_id, class_name in list(first.pairs):
    record = dataset.by_id()[image_id]
    label = dataset.class_names.index(class_name)
    ymin, xmin, ymax, xmax = record['gt_boxes'][record['gt_labels'] == label][0]
    first.submit_click('alice', image_id, class_name, float(xmin + xmax) / 2,
                       float(ymin + ymax) / 2, 1.0)
  first.close()
  all_pairs = [(r['image_id'], int(c)) for r in dataset.records for c in r['image_labels']]
  requested = sorted(all_pairs)[::4]  # Every fourth pair.
  requests = str(tmp_path / 'requests.jsonl')
  second_click.write_requests(requests, requested, None, dataset.class_names, {})

  server = Server(['--dataset=synthetic:smoke', '--split=trainval', f'--cache_dir={cache_dir}',
                   f'--out={out}', '--gold_fraction=0.2', '--annotators=2',
                   f'--second_click_requests={requests}'], _free_port())
  url = server.start()
  alice = carol = None
  try:
    carol = Annotator('carol', url, dataset, nudge=1.0)
    carol.login()
    assert carol.take_qualification(attempt=1, num_correct=5).startswith('Passed')
    carol.driver.find_element('id', 'continue-button').click()
    pair = carol.wait_for_pair()
    while pair:
      pair = carol.click_pair(pair)
    assert 'No pair needs your click' in carol.driver.find_element('id', 'done-text').text
    # alice clicked every pair in the first pass: the second pass has nothing for her.
    # Her qualification is on file from the first pass: the page goes straight to the task.
    alice = Annotator('alice', url, dataset, nudge=0.0)
    alice.driver.get(url)
    alice.wait(lambda: alice.view() == 'login-view')
    alice.driver.find_element('id', 'annotator-name').send_keys('alice')
    alice.driver.find_element('id', 'login-button').click()
    alice.wait(lambda: alice.view() == 'done-view')
    assert 'No pair needs your click' in alice.driver.find_element('id', 'done-text').text
  finally:
    for annotator in (alice, carol):
      if annotator:
        annotator.quit()
    if server.process.poll() is None:
      server.kill()

  served = sorted((i, dataset.class_names.index(c)) for i, c, _, _ in carol.clicked)
  assert served == requested
  # The driver reads the file with the request file: two clicks there, one elsewhere.
  workdir = str(tmp_path / 'run')
  result = subprocess.run(
      [sys.executable, 'run_mil.py', '--dataset=synthetic:smoke', '--split=trainval',
       f'--cache_dir={cache_dir}', f'--workdir={workdir}', '--stages=data,clicks', '--clicks=1',
       f'--click_source={out}', f'--second_click_requests={requests}'], cwd=REPO,
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['click_stats']['num_clicks'] == len(all_pairs) + len(requested)
  assert results['second_click']['num_requested'] == len(requested)
