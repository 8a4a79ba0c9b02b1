"""The annotation workflow without HTTP: annotators, qualification, assignment, quality control.

`AnnotationApp` holds the state of one collection run over one dataset split and is what the
HTTP server (`server.py`) calls; every public method takes and returns plain dicts and raises
`ApiError(status, message)` for a request it refuses. State lives in two durable files:

  --out (e.g. clicks.jsonl)          the clicks, in the project's click format (`clicks.py`);
                                      its header records the tool's settings under
                                      "annotation_tool".
  <out stem>.annotation_log.jsonl    qualification attempts and skipped pairs.

A restarted server reads both and carries on: each annotator keeps their qualification, their
clicks and their skips, and gets the next pair they have not clicked.

Workflow (docs/method.md, section 1): instructions -> qualification (retry until passed) ->
main task, one click per (image, class) pair from the image-level labels. Each pair gets
`num_annotators` distinct annotators; an annotator never gets the same pair twice. A pair handed
to an annotator is reserved for them for `lease_s` seconds so that two annotators working at
once do not both add the last click a pair needs.

Second pass (the adaptive second click, `second_click`): given the pairs of a request file
(`second_click_requests`), a run resumed on the first pass's click file hands out those pairs and
only those until each has `num_annotators` usable clicks; an annotator who clicked a pair in the
first pass never gets it again. Every other rule holds: qualification, the gold pairs (those
among the requests), leases, the durable files.

Quality control: a seeded `gold_fraction` of the pairs are hidden gold pairs, scored against
their ground-truth boxes. An annotator with at least `gold_min_clicks` gold clicks of which more
than `gold_max_miss_rate` fall outside every box of the class is flagged: they get no more pairs,
their clicks are marked `"flagged": true` in the click file (the trainer skips them unless run
with `--use_flagged_clicks`), and they do not count toward a pair's annotators.
"""

import collections
import math
import os
import re
import statistics
import threading
import time

import numpy as np

from click_supervision import clicks as clicks_lib
from click_supervision.annotate import qualification
from click_supervision.annotate import store
from click_supervision.errors import UserError

LOG_FORMAT_NAME = 'click_supervision.annotation_log'
LOG_FORMAT_VERSION = 1
# Letters, digits and `_ . @ -`, starting with a letter or digit: safe in file names and logs.
# Always used with fullmatch: `$` also matches before a final newline, so `match` took 'eve\n'
# for a name (a second annotator beside 'eve').
ANNOTATOR_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}')
# A click's measured time: longer than an hour is no click, and an unbounded one (1e308) made
# the summary's sums infinite.
MAX_RESPONSE_TIME_S = 3600.0


class ApiError(Exception):
  """A refused request: an HTTP status (4xx), a message for the annotator or client, and
  optionally a short machine-readable `code` the page acts on (e.g. `bad_token`)."""

  def __init__(self, status, message, code=None):
    super().__init__(message)
    self.status = status
    self.message = message
    self.code = code


def log_path_for(out_path):
  """The annotation log beside the click file: `clicks.jsonl` -> `clicks.annotation_log.jsonl`."""
  return os.path.splitext(out_path)[0] + '.annotation_log.jsonl'


def _box_center_size(box):
  """`[ymin, xmin, ymax, xmax]` pixels -> ((x, y) center, sqrt(area))."""
  ymin, xmin, ymax, xmax = (float(v) for v in box)
  return ((xmin + xmax) / 2, (ymin + ymax) / 2), math.sqrt(max(xmax - xmin, 0) *
                                                           max(ymax - ymin, 0))


class AnnotationApp:
  """State and rules of one click collection run (see module docstring).

  Attributes:
    dataset: the `records.Dataset` being annotated.
    pairs: list of `(image_id, class_name)` in the order they are handed out (seeded shuffle).
    gold: set of the hidden gold pairs.
  """

  def __init__(self, dataset, out_path, num_annotators=2, gold_fraction=0.1, gold_min_clicks=3,
               gold_max_miss_rate=0.3, qualification_polygons=qualification.DEFAULT_NUM_POLYGONS,
               qualification_min_passed=qualification.DEFAULT_MIN_PASSED,
               qualification_tolerance=qualification.DEFAULT_TOLERANCE, lease_s=300.0, seed=0,
               second_click_requests=None, clock=time.monotonic, log=print):
    if num_annotators < 1:
      raise UserError(f'--annotators must be >= 1, got {num_annotators}')
    if not 0 <= gold_fraction <= 1:
      raise UserError(f'--gold_fraction must be in [0, 1], got {gold_fraction}')
    if not 1 <= qualification_min_passed <= qualification_polygons:
      raise UserError(f'--qualification_min_passed must be in [1, {qualification_polygons}], '
                      f'got {qualification_min_passed}')
    self.dataset = dataset
    self.num_annotators = num_annotators
    self.gold_min_clicks = gold_min_clicks
    self.gold_max_miss_rate = gold_max_miss_rate
    self.qualification_polygons = qualification_polygons
    self.qualification_min_passed = qualification_min_passed
    self.qualification_tolerance = qualification_tolerance
    self.lease_s = lease_s
    self.seed = seed
    self._clock = clock
    self._log = log
    self._lock = threading.RLock()
    self._records = dataset.by_id()
    self._class_index = {n: i for i, n in enumerate(dataset.class_names)}

    all_pairs = [(r['image_id'], dataset.class_names[int(c)]) for r in dataset.records
                 for c in r['image_labels']]
    if not all_pairs:
      raise UserError(f'{dataset.name} {dataset.split}: no (image, class) pairs to annotate')
    rng = np.random.default_rng(clicks_lib._stable_seed(  # pylint: disable=protected-access
        'annotate', seed))
    self.pairs = [all_pairs[i] for i in rng.permutation(len(all_pairs))]
    # Every pair of the split (the files may name any); `_pair_set`: the pairs handed out.
    self._all_pair_set = set(self.pairs)
    num_gold = min(len(self.pairs), max(1, round(gold_fraction * len(self.pairs)))) if (
        gold_fraction > 0) else 0
    self.gold = {self.pairs[i] for i in rng.choice(len(self.pairs), num_gold, replace=False)}
    if second_click_requests is not None:
      # Same order and gold pairs as the first pass (the same seed), only the requested pairs.
      requested = set(second_click_requests)
      unknown = sorted(requested - self._all_pair_set)
      if unknown:
        raise UserError(f'second-click request {unknown[0][0]} / {unknown[0][1]} is not a pair '
                        f'of {dataset.name} {dataset.split}')
      self.pairs = [p for p in self.pairs if p in requested]
    self._pair_set = set(self.pairs)

    self._settings = {'dataset': dataset.name, 'split': dataset.split, 'seed': seed,
                      'gold_fraction': gold_fraction}
    self._clicks = store.JsonLinesLog(
        out_path, {'format': clicks_lib.FORMAT_NAME, 'version': clicks_lib.FORMAT_VERSION,
                   # The gold pairs also fit mu(d) of the box-area cue for these clicks
                   # (`cues.gold_pair_distances`); the header is never shown to annotators.
                   'annotation_tool': dict(self._settings, num_annotators=num_annotators,
                                           gold_pairs=sorted(list(p) for p in self.gold))},
        self._check_click_header, log=log)
    self._events = store.JsonLinesLog(
        log_path_for(out_path), {'format': LOG_FORMAT_NAME, 'version': LOG_FORMAT_VERSION,
                                 'annotation_tool': self._settings},
        self._check_log_header, log=log)
    if self._clicks.rows:
      # A resumed file may have been edited by hand: the trainer's reader names the file and line
      # of the first bad row (wrong keys, unknown pair, click outside the image, duplicate).
      clicks_lib.read_click_file(self._clicks.path, dataset)
    for line_number, event in enumerate(self._events.rows, start=2):
      if not (isinstance(event, dict) and isinstance(event.get('annotator'), str) and (
          (event.get('event') == 'qualification' and isinstance(event.get('attempt'), int) and
           isinstance(event.get('passed'), bool)) or
          (event.get('event') == 'skip' and (event.get('image_id'), event.get('class')) in
           self._all_pair_set))):
        raise UserError(f'{self._events.path}:{line_number}: not a qualification or skip event of '
                        f'this run; move the file away or repair it')
    self._leases = collections.defaultdict(dict)  # pair -> {annotator: expiry}
    self._rebuild_indexes()
    if self._clicks.rows:
      self._log(f'resuming: {len(self._clicks.rows)} clicks from {self._clicks.path}, '
                f'{len(self._attempts)} annotators seen')

  # --- Files and indexes -----------------------------------------------------------------------

  def _check_settings(self, path, header, expected_format, expected_version):
    if header.get('format') != expected_format or header.get('version') != expected_version:
      raise UserError(f'{path}: not a version {expected_version} {expected_format} file; choose '
                      f'another --out')
    tool = header.get('annotation_tool') or {}
    for key, value in self._settings.items():
      if tool.get(key) != value:
        raise UserError(f'{path}: collected with {key}={tool.get(key)!r}, but this run has '
                        f'{key}={value!r}; rerun with the same settings or choose another --out')

  def _check_click_header(self, path, header):
    self._check_settings(path, header, clicks_lib.FORMAT_NAME, clicks_lib.FORMAT_VERSION)

  def _check_log_header(self, path, header):
    self._check_settings(path, header, LOG_FORMAT_NAME, LOG_FORMAT_VERSION)

  def _rebuild_indexes(self):
    """Derives every index from the two files' rows (at start, after an undo)."""
    self._by_pair = collections.defaultdict(list)
    self._by_annotator = collections.defaultdict(list)
    for row in self._clicks.rows:
      pair = (row['image_id'], row['class'])
      self._by_pair[pair].append(row)
      self._by_annotator[row['annotator']].append(row)
    self._attempts = collections.Counter()
    self._qualified = set()
    self._skips = collections.defaultdict(set)
    for event in self._events.rows:
      annotator = event.get('annotator')
      if event.get('event') == 'qualification':
        self._attempts[annotator] = max(self._attempts[annotator], event['attempt'])
        if event['passed']:
          self._qualified.add(annotator)
      elif event.get('event') == 'skip':
        self._skips[annotator].add((event['image_id'], event['class']))
    for annotator in self._by_annotator:
      self._attempts.setdefault(annotator, 0)
    self._flagged = set()
    self._update_flags()

  def _gold_record(self, annotator):
    """(gold clicks, gold clicks outside every box of their class) of one annotator."""
    num_gold = num_missed = 0
    for row in self._by_annotator.get(annotator, []):
      pair = (row['image_id'], row['class'])
      if pair not in self.gold:
        continue
      record = self._records[row['image_id']]
      boxes = record['gt_boxes'][record['gt_labels'] == self._class_index[row['class']]]
      inside = any(b[1] <= row['x'] <= b[3] and b[0] <= row['y'] <= b[2] for b in boxes)
      num_gold += 1
      num_missed += not inside
    return num_gold, num_missed

  def _is_flagged_by_gold(self, annotator):
    num_gold, num_missed = self._gold_record(annotator)
    return num_gold >= self.gold_min_clicks and num_missed > self.gold_max_miss_rate * num_gold

  def _update_flags(self, annotators=None):
    """Recomputes quality control (of `annotators`, default all); rewrites the click file when a
    flag changes."""
    for annotator in self._by_annotator if annotators is None else annotators:
      if self._is_flagged_by_gold(annotator):
        self._flagged.add(annotator)
      else:
        self._flagged.discard(annotator)
    stale = [row for row in self._clicks.rows
             if row.get('flagged', False) != (row['annotator'] in self._flagged)]
    if stale:
      for row in self._clicks.rows:
        row['flagged'] = row['annotator'] in self._flagged
      self._clicks.replace_rows(self._clicks.rows)
      self._log(f'quality control: flagged annotators now {sorted(self._flagged) or "none"}')

  # --- Requests --------------------------------------------------------------------------------

  @staticmethod
  def _check_annotator(annotator):
    if not isinstance(annotator, str) or not ANNOTATOR_PATTERN.fullmatch(annotator):
      raise ApiError(400, 'annotator must be 1-64 letters, digits or "_.@-", starting with a '
                     'letter or digit')
    return annotator

  def _pair(self, image_id, class_name):
    if not isinstance(image_id, str) or not isinstance(class_name, str):
      raise ApiError(400, 'image_id and class must be strings')
    pair = (image_id, class_name)
    if pair not in self._all_pair_set:
      raise ApiError(404, f'unknown pair: image {image_id!r} has no class {class_name!r} in '
                     f'{self.dataset.name} {self.dataset.split}')
    if pair not in self._pair_set:
      raise ApiError(404, f'image {image_id} {class_name!r} is not requested in this second '
                     f'pass')
    return pair

  def _require_worker(self, annotator):
    """The annotator may annotate: qualified and not flagged."""
    if annotator not in self._qualified:
      raise ApiError(403, f'annotator {annotator} has not passed the qualification test')
    if annotator in self._flagged:
      raise ApiError(403, f'annotator {annotator} did not pass quality control: too many clicks '
                     f'outside the objects; no more pairs for this annotator')

  def state(self, annotator):
    """Where an annotator stands; also registers a new name."""
    annotator = self._check_annotator(annotator)
    with self._lock:
      self._attempts.setdefault(annotator, 0)
      return {
          'annotator': annotator,
          'qualified': annotator in self._qualified,
          'qualification_attempts': self._attempts[annotator],
          'flagged': annotator in self._flagged,
          'num_clicks': len(self._by_annotator.get(annotator, [])),
          'progress': self._progress(annotator),
      }

  def _usable(self, pair):
    return [row for row in self._by_pair.get(pair, []) if row['annotator'] not in self._flagged]

  def _progress(self, annotator):
    complete = sum(len(self._usable(p)) >= self.num_annotators for p in self.pairs)
    return {'your_clicks': len(self._by_annotator.get(annotator, [])),
            'pairs_complete': complete, 'pairs_total': len(self.pairs)}

  def qualification_test(self, annotator):
    """The polygons of the annotator's next attempt (vertices only; the boxes stay here)."""
    annotator = self._check_annotator(annotator)
    with self._lock:
      attempt = self._attempts[annotator] + 1
    polygons = qualification.make_test(self.seed, annotator, attempt, self.qualification_polygons)
    return {'attempt': attempt, 'width': qualification.CANVAS_WIDTH,
            'height': qualification.CANVAS_HEIGHT,
            'polygons': [{'vertices': p['vertices']} for p in polygons],
            'tolerance': self.qualification_tolerance, 'min_passed': self.qualification_min_passed}

  def submit_qualification(self, annotator, attempt, clicks):
    """Scores an attempt, records it durably and returns the feedback."""
    annotator = self._check_annotator(annotator)
    if not isinstance(attempt, int) or isinstance(attempt, bool):
      raise ApiError(400, 'attempt must be an integer')
    if not isinstance(clicks, list) or len(clicks) != self.qualification_polygons:
      raise ApiError(400, f'clicks must be a list of {self.qualification_polygons} [x, y] points')
    points = []
    for point in clicks:
      if not (isinstance(point, list) and len(point) == 2 and
              all(_is_number(v) for v in point)):
        raise ApiError(400, 'each click must be [x, y] with finite numbers')
      x, y = float(point[0]), float(point[1])
      if not (0 <= x <= qualification.CANVAS_WIDTH and 0 <= y <= qualification.CANVAS_HEIGHT):
        raise ApiError(400, f'click ({x}, {y}) lies outside the {qualification.CANVAS_WIDTH} x '
                       f'{qualification.CANVAS_HEIGHT} canvas')
      points.append((x, y))
    with self._lock:
      expected = self._attempts[annotator] + 1
      if attempt != expected:
        raise ApiError(409, f'attempt {attempt} is not the open attempt ({expected}); reload '
                       f'the test')
      polygons = qualification.make_test(self.seed, annotator, attempt,
                                         self.qualification_polygons)
      passed, results = qualification.score_test(polygons, points, self.qualification_tolerance,
                                                 self.qualification_min_passed)
      self._events.append({'event': 'qualification', 'annotator': annotator, 'attempt': attempt,
                           'passed': passed, 'errors': [r['error'] for r in results],
                           'time': time.time()})
      self._attempts[annotator] = attempt
      if passed:
        self._qualified.add(annotator)
    return {'attempt': attempt, 'passed': passed, 'results': results,
            'polygons': [{'vertices': p['vertices']} for p in polygons]}

  def _pair_payload(self, pair):
    record = self._records[pair[0]]
    return {'image_id': pair[0], 'class': pair[1], 'width': record['width'],
            'height': record['height']}

  def next_pair(self, annotator):
    """The annotator's next pair: `{'pair': ..., 'progress': ...}`, or `{'pair': None, ...}`."""
    annotator = self._check_annotator(annotator)
    with self._lock:
      self._require_worker(annotator)
      now = self._clock()
      # A pair already reserved for this annotator comes back (a reloaded page resumes there).
      for pair, holders in self._leases.items():
        if holders.get(annotator, -1) > now:
          return {'pair': self._pair_payload(pair), 'progress': self._progress(annotator)}
      for pair in self.pairs:
        if self._annotator_done_with(annotator, pair):
          continue
        holders = self._leases[pair]
        active = sum(1 for a, expiry in holders.items() if expiry > now and a != annotator)
        if len(self._usable(pair)) + active >= self.num_annotators:
          continue
        holders[annotator] = now + self.lease_s
        return {'pair': self._pair_payload(pair), 'progress': self._progress(annotator)}
      return {'pair': None, 'progress': self._progress(annotator)}

  def _annotator_done_with(self, annotator, pair):
    return (pair in self._skips.get(annotator, ()) or
            any(r['annotator'] == annotator for r in self._by_pair.get(pair, [])))

  def submit_click(self, annotator, image_id, class_name, x, y, response_time_s):
    """Validates one click and appends it durably; returns the annotator's progress."""
    annotator = self._check_annotator(annotator)
    pair = self._pair(image_id, class_name)
    record = self._records[image_id]
    if not (_is_number(x) and _is_number(y)):
      raise ApiError(400, 'x and y must be finite numbers')
    if not (0 <= x <= record['width'] and 0 <= y <= record['height']):
      raise ApiError(400, f'click (x={x}, y={y}) lies outside the {record["width"]} x '
                     f'{record["height"]} image {image_id}')
    if response_time_s is not None and not (_is_number(response_time_s) and
                                            0 <= response_time_s <= MAX_RESPONSE_TIME_S):
      raise ApiError(400, f'response_time_s must be a number of seconds from 0 to '
                     f'{MAX_RESPONSE_TIME_S:g}, or null')
    with self._lock:
      self._require_worker(annotator)
      if any(r['annotator'] == annotator for r in self._by_pair.get(pair, [])):
        raise ApiError(409, f'annotator {annotator} already clicked image {image_id} '
                       f'{class_name!r}')
      if len(self._usable(pair)) >= self.num_annotators:
        raise ApiError(409, f'image {image_id} {class_name!r} already has its '
                       f'{self.num_annotators} clicks')
      row = {'image_id': image_id, 'class': class_name, 'x': float(x), 'y': float(y),
             'annotator': annotator,
             'response_time_s': None if response_time_s is None else float(response_time_s),
             'source': 'human', 'flagged': False}
      self._clicks.append(row)
      self._by_pair[pair].append(row)
      self._by_annotator[annotator].append(row)
      self._leases[pair].pop(annotator, None)
      if pair in self.gold:
        self._update_flags([annotator])
      return {'accepted': True, 'flagged': annotator in self._flagged,
              'progress': self._progress(annotator)}

  def undo(self, annotator):
    """Removes the annotator's last click; the pair is reserved for them again."""
    annotator = self._check_annotator(annotator)
    with self._lock:
      self._require_worker(annotator)
      mine = self._by_annotator.get(annotator)
      if not mine:
        raise ApiError(409, f'annotator {annotator} has no click to undo')
      last = mine[-1]
      if (last['image_id'], last['class']) not in self._pair_set:
        raise ApiError(409, f'the last click of {annotator} belongs to the first pass; only '
                       f'clicks of this second pass can be undone here')
      self._clicks.replace_rows([row for row in self._clicks.rows if row is not last])
      self._rebuild_indexes()
      pair = (last['image_id'], last['class'])
      for holders in self._leases.values():
        holders.pop(annotator, None)
      self._leases[pair][annotator] = self._clock() + self.lease_s
      return {'undone': self._pair_payload(pair), 'progress': self._progress(annotator)}

  def skip(self, annotator, image_id, class_name):
    """The annotator passes on a pair (cannot find the object); others will get it."""
    annotator = self._check_annotator(annotator)
    pair = self._pair(image_id, class_name)
    with self._lock:
      self._require_worker(annotator)
      if self._annotator_done_with(annotator, pair):
        raise ApiError(409, f'annotator {annotator} already clicked or skipped image {image_id} '
                       f'{class_name!r}')
      self._events.append({'event': 'skip', 'annotator': annotator, 'image_id': image_id,
                           'class': class_name, 'time': time.time()})
      self._skips[annotator].add(pair)
      self._leases[pair].pop(annotator, None)
      return {'skipped': True, 'progress': self._progress(annotator)}

  def image_path(self, image_id):
    """The file of a dataset image, or ApiError 404: only dataset images are ever served."""
    record = self._records.get(image_id)
    if record is None:
      raise ApiError(404, f'unknown image {image_id!r}')
    return record['path']

  def example(self):
    """An example for the instructions: a one-instance, non-gold pair with its box and center.

    Returns a dict with `image_id`, `class`, `width`, `height`, `box` `[xmin, ymin, xmax,
    ymax]` and `center` `[x, y]` (pixels), or `{'image_id': None}` when no pair qualifies.
    """
    best, best_size = None, 0.0
    for record in self.dataset.records:
      for label in record['image_labels']:
        pair = (record['image_id'], self.dataset.class_names[int(label)])
        instances = record['gt_boxes'][record['gt_labels'] == label]
        if pair in self.gold or len(instances) != 1:
          continue
        size = _box_center_size(instances[0])[1] / math.sqrt(record['width'] * record['height'])
        # A mid-sized object shows the box best: not a sliver, not the whole image.
        if 0.2 <= size <= 0.7 and size > best_size:
          best, best_size = (pair, instances[0]), size
    if best is None:
      return {'image_id': None}
    (image_id, class_name), box = best
    (cx, cy), _ = _box_center_size(box)
    payload = self._pair_payload((image_id, class_name))
    payload.update({'box': [float(box[1]), float(box[0]), float(box[3]), float(box[2])],
                    'center': [cx, cy]})
    return payload

  def summary(self, annotator=None, admin=False):
    """Counts for the summary page (see README, click collection).

    Args:
      annotator: in the annotators' view, the one whose own row is shown (None: no row).
      admin: the full view: every annotator's row with their gold-pair results, and who clicked
        each pair. Without it, gold results are left out even of the annotator's own row: their
        count going up after a click would tell which pairs are gold, and an annotator who
        knows could be careful only there.
    Returns:
      dict of totals, `annotators` (rows) and `per_pair`; `view` is 'admin' or 'annotator'.
    """
    if annotator is not None:
      annotator = self._check_annotator(annotator)
    with self._lock:
      per_pair = []
      histogram = collections.Counter()
      distances = []
      for pair in self.pairs:
        usable = self._usable(pair)
        histogram[len(usable)] += 1
        per_pair.append({'image_id': pair[0], 'class': pair[1], 'clicks': len(usable),
                         'annotators': [r['annotator'] for r in usable]})
        if len(usable) >= 2:
          record = self._records[pair[0]]
          boxes = record['gt_boxes'][record['gt_labels'] == self._class_index[pair[1]]]
          if len(boxes):
            a, b = usable[0], usable[1]
            middle = ((a['x'] + b['x']) / 2, (a['y'] + b['y']) / 2)
            # The box the two clicks aim at: the one whose center is nearest their midpoint.
            centers_sizes = [_box_center_size(box) for box in boxes]
            _, size = min(centers_sizes, key=lambda cs: math.hypot(cs[0][0] - middle[0],
                                                                   cs[0][1] - middle[1]))
            if size > 0:
              distances.append(math.hypot(a['x'] - b['x'], a['y'] - b['y']) / size)
      times = [r['response_time_s'] for r in self._clicks.rows
               if r.get('response_time_s') is not None]
      known = set(self._attempts) | set(self._by_annotator)
      if admin:
        names = sorted(known)
      else:
        names = [annotator] if annotator in known else []
      annotators = []
      for name in names:
        mine = self._by_annotator.get(name, [])
        my_times = [r['response_time_s'] for r in mine if r.get('response_time_s') is not None]
        row = {
            'annotator': name, 'clicks': len(mine),
            'qualification_attempts': self._attempts.get(name, 0),
            'qualified': name in self._qualified, 'flagged': name in self._flagged,
            'skips': len(self._skips.get(name, ())),
            'median_response_time_s': statistics.median(my_times) if my_times else None}
        if admin:
          row['gold_clicks'], row['gold_missed'] = self._gold_record(name)
        annotators.append(row)
      if not admin:  # Who clicked what is for the admin too.
        per_pair = [{k: v for k, v in p.items() if k != 'annotators'} for p in per_pair]
      return {
          'view': 'admin' if admin else 'annotator',
          'dataset': self.dataset.name, 'split': self.dataset.split,
          'click_file': self._clicks.path, 'num_annotators_per_pair': self.num_annotators,
          'pairs_total': len(self.pairs),
          'pairs_complete': sum(n for k, n in histogram.items() if k >= self.num_annotators),
          'pairs_by_clicks': {str(k): histogram[k] for k in sorted(histogram)},
          'clicks_total': len(self._clicks.rows),
          'clicks_flagged': sum(r['annotator'] in self._flagged for r in self._clicks.rows),
          'gold_pairs': len(self.gold),
          'median_response_time_s': statistics.median(times) if times else None,
          'annotation_hours': sum(times) / 3600.0,
          'agreement': {
              'pairs': len(distances),
              'median_distance_rel': statistics.median(distances) if distances else None,
              'mean_distance_rel': statistics.fmean(distances) if distances else None},
          'annotators': annotators,
          'per_pair': per_pair,
      }

  def close(self):
    with self._lock:
      self._clicks.close()
      self._events.close()


def _is_number(value):
  """A finite int or float (not a bool) that converts to a float: JSON ints are unbounded."""
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    return False
  try:
    return math.isfinite(value)
  except OverflowError:  # An int beyond float range, e.g. 10**400.
    return False
