"""Center clicks: the click file format, its reader, the click simulator and annotation time.

Click file format, version 1 (JSON Lines, UTF-8, one JSON object per line)
--------------------------------------------------------------------------
Line 1 is a header:

  {"format": "click_supervision.clicks", "version": 1, ...}

It may carry more keys describing where the clicks came from (the simulator writes its
parameters and seed under "simulator"; the annotation tool its settings). Every further line is
one click:

  {"image_id": "000005", "class": "chair", "x": 293.5, "y": 275.0, "annotator": "sim0",
   "response_time_s": 1.7, "source": "simulated"}

  image_id         str, the dataset's image id (VOC file stem; COCO integer id as a string).
  class            str, a class name of the dataset, present in the image's image-level labels.
  x, y             numbers, pixels in the library's frame: 0-based, continuous, origin at the
                   top-left corner of the image, so 0 <= x <= width and 0 <= y <= height (a click
                   on the pixel in column j, row i from a browser is x = j + 0.5, y = i + 0.5).
  annotator        str, who clicked; one click per (image, class, annotator).
  response_time_s  number >= 0 or null (optional): seconds from showing the image to the click.
  source           "human" or "simulated".
  flagged          bool (optional, default false): the annotator failed quality control; the
                   trainer skips flagged clicks unless asked otherwise.
  gt_instance      int (optional, simulated clicks only): index, among the image's ground-truth
                   boxes, of the instance the simulated annotator aimed at (a box of `class`).

Blank lines are allowed; any other problem (malformed JSON, missing or unknown key, wrong type,
unknown image or class, a class absent from the image, a click outside the image, a
`gt_instance` that is not a box of the class, a duplicate image/class/annotator) stops the reader
with the file and line of the first problem.

Inside the library a click is `(y, x)` float32 in pixels, like the boxes.
"""

import collections
import hashlib
import itertools
import json
import math
import os

import numpy as np

from click_supervision import atomic
from click_supervision import boxes as box_lib
from click_supervision.errors import ClickFileError

FORMAT_NAME = 'click_supervision.clicks'
FORMAT_VERSION = 1
SOURCES = ('human', 'simulated')
INSTANCE_CHOICES = ('uniform', 'area', 'largest')

_REQUIRED = {'image_id': str, 'class': str, 'x': (int, float), 'y': (int, float),
             'annotator': str, 'source': str}
_OPTIONAL = {'response_time_s': (int, float, type(None)), 'flagged': bool, 'gt_instance': int}

# Paper's annotation-time constants (docs/method.md, section 1): a center click takes about 1.87 s;
# drawing a box 34.5 s (25.5 s drawing + 9.0 s quality verification, Su et al.). Image-level
# labels are not charged, as in the paper.
SECONDS_PER_CLICK = 1.87
SECONDS_PER_BOX = 34.5

Click = collections.namedtuple('Click', ['y', 'x', 'annotator', 'response_time_s', 'source',
                                         'flagged', 'gt_instance'])


class ClickSet:
  """Clicks read from a file, grouped by positive (image, class) pair.

  Attributes:
    path: the file they came from.
    header: the header dict.
    clicks: dict `(image_id, class_index)` -> list of `Click`, in file order.
    class_names: the dataset's class names (class_index -> name).
  """

  def __init__(self, path, header, clicks, class_names):
    self.path = path
    self.header = header
    self.clicks = clicks
    self.class_names = list(class_names)

  @property
  def num_clicks(self):
    return sum(len(v) for v in self.clicks.values())


def _header(extra=None):
  header = {'format': FORMAT_NAME, 'version': FORMAT_VERSION}
  header.update(extra or {})
  return header


def write_click_file(path, rows, header_extra=None):
  """Writes a click file atomically (temp file, fsync, rename).

  Args:
    path: destination.
    rows: iterable of click dicts with the keys of the module docstring.
    header_extra: dict of extra header keys (e.g. simulator parameters).
  """
  atomic.write_jsonl(path, itertools.chain([_header(header_extra)], rows))


def _check_row(row, path, line_number):
  if not isinstance(row, dict):
    raise ClickFileError(path, line_number, 'a click line must be a JSON object')
  for key, kinds in _REQUIRED.items():
    if key not in row:
      raise ClickFileError(path, line_number, f'missing key "{key}"')
    if not isinstance(row[key], kinds) or isinstance(row[key], bool):
      raise ClickFileError(path, line_number, f'"{key}" has the wrong type: {row[key]!r}')
  for key, kinds in _OPTIONAL.items():
    # bool is a subclass of int in Python: only "flagged" may be a bool.
    if key in row and (not isinstance(row[key], kinds) or
                       (isinstance(row[key], bool) and key != 'flagged')):
      raise ClickFileError(path, line_number, f'"{key}" has the wrong type: {row[key]!r}')
  unknown = sorted(set(row) - set(_REQUIRED) - set(_OPTIONAL))
  if unknown:
    raise ClickFileError(path, line_number, f'unknown key "{unknown[0]}" (format version '
                         f'{FORMAT_VERSION} knows {sorted(_REQUIRED) + sorted(_OPTIONAL)})')
  if row['source'] not in SOURCES:
    raise ClickFileError(path, line_number, f'"source" must be one of {SOURCES}, got '
                         f'{row["source"]!r}')
  if not (math.isfinite(row['x']) and math.isfinite(row['y'])):
    raise ClickFileError(path, line_number, 'x and y must be finite numbers')
  response_time = row.get('response_time_s')
  if response_time is not None and not (math.isfinite(response_time) and response_time >= 0):
    raise ClickFileError(path, line_number, f'"response_time_s" must be >= 0, got {response_time}')
  if not row['annotator']:
    raise ClickFileError(path, line_number, '"annotator" is empty')


def read_click_file(path, dataset):
  """Reads and validates a click file against `dataset`.

  Args:
    path: the click file.
    dataset: `records.Dataset` the clicks refer to.
  Returns:
    `ClickSet`.
  Raises:
    ClickFileError naming the file and line of the first problem.
  """
  if not os.path.isfile(path):
    raise ClickFileError(path, 0, 'click file not found')
  records = dataset.by_id()
  class_index = {n: i for i, n in enumerate(dataset.class_names)}
  clicks = collections.defaultdict(list)
  seen = set()
  header = None
  with open(path, 'rb') as f:
    for line_number, raw in enumerate(f, start=1):
      try:
        text = raw.decode('utf-8').strip()
      except UnicodeDecodeError:
        raise ClickFileError(path, line_number, 'not UTF-8 text') from None
      if not text:
        continue
      try:
        row = json.loads(text)
      except json.JSONDecodeError as e:
        raise ClickFileError(path, line_number, f'malformed JSON ({e.msg} at column {e.colno})'
                             ) from None
      if header is None:
        if not isinstance(row, dict) or row.get('format') != FORMAT_NAME:
          raise ClickFileError(path, line_number, f'the first line must be the header '
                               f'{{"format": "{FORMAT_NAME}", "version": {FORMAT_VERSION}}}')
        # bool is a subclass of int in Python: `true == 1`, so reject it explicitly.
        if row.get('version') != FORMAT_VERSION or isinstance(row.get('version'), bool):
          raise ClickFileError(path, line_number, f'click file version {row.get("version")!r} is '
                               f'not supported (this library reads version {FORMAT_VERSION})')
        header = row
        continue
      _check_row(row, path, line_number)
      image_id, class_name = row['image_id'], row['class']
      record = records.get(image_id)
      if record is None:
        raise ClickFileError(path, line_number, f'unknown image {image_id!r} (not in '
                             f'{dataset.name} {dataset.split})')
      if class_name not in class_index:
        raise ClickFileError(path, line_number, f'unknown class {class_name!r}')
      label = class_index[class_name]
      if label not in record['image_labels']:
        raise ClickFileError(path, line_number, f'image {image_id} has no {class_name!r} in its '
                             f'image-level labels')
      x, y = float(row['x']), float(row['y'])
      if not (0 <= x <= record['width'] and 0 <= y <= record['height']):
        raise ClickFileError(path, line_number, f'click (x={x}, y={y}) lies outside the '
                             f'{record["width"]} x {record["height"]} image {image_id}')
      instance = row.get('gt_instance')
      if instance is not None and not (0 <= instance < len(record['gt_labels']) and
                                       record['gt_labels'][instance] == label):
        raise ClickFileError(path, line_number, f'"gt_instance" {instance} is not the index of a '
                             f'ground-truth box of {class_name!r} in image {image_id}')
      key = (image_id, class_name, row['annotator'])
      if key in seen:
        raise ClickFileError(path, line_number, f'duplicate click: image {image_id}, class '
                             f'{class_name}, annotator {row["annotator"]}')
      seen.add(key)
      clicks[(image_id, label)].append(Click(
          y=y, x=x, annotator=row['annotator'], response_time_s=row.get('response_time_s'),
          source=row['source'], flagged=row.get('flagged', False),
          gt_instance=row.get('gt_instance')))
  if header is None:
    raise ClickFileError(path, 0, 'empty click file (no header line)')
  return ClickSet(path, header, dict(clicks), dataset.class_names)


def select_clicks(click_set, pairs, num_clicks, use_flagged=False, second_click_pairs=None):
  """Picks the clicks the learner uses: the first `num_clicks` annotators of each pair.

  Args:
    click_set: `ClickSet`.
    pairs: list of positive `(image_id, class_index)` pairs that need clicks.
    num_clicks: 0, 1 or 2 (annotators per pair).
    use_flagged: also use clicks of annotators flagged by quality control.
    second_click_pairs: optional set of pairs that use one click more than `num_clicks` (the
      adaptive second click, `second_click`).
  Returns:
    dict pair -> list of `Click` (length `num_clicks`, or one more for the
    `second_click_pairs`), in file order.
  Raises:
    ClickFileError when a pair has fewer usable clicks than it needs.
  """
  selected = {}
  second = second_click_pairs or set()
  if num_clicks == 0 and not second:
    return {pair: [] for pair in pairs}
  for pair in pairs:
    wanted = num_clicks + (pair in second)
    usable = [c for c in click_set.clicks.get(pair, []) if use_flagged or not c.flagged]
    if len(usable) < wanted:
      why = (f'--clicks={num_clicks} and a second-click request need {wanted}' if pair in second
             else f'--clicks={num_clicks} needs {num_clicks}')
      raise ClickFileError(click_set.path, 0, f'image {pair[0]} class '
                           f'{click_set.class_names[pair[1]]!r} has '
                           f'{len(usable)} usable clicks but {why}')
    selected[pair] = usable[:wanted]
  return selected


def clicks_as_array(clicks):
  """List of `Click` -> float32 [C, 2] array of `(y, x)` pixels."""
  return np.array([[c.y, c.x] for c in clicks], np.float32).reshape(-1, 2)


def _stable_seed(*parts):
  """A 64-bit seed from strings and ints, independent of Python's hash randomisation."""
  digest = hashlib.sha256('\x1f'.join(str(p) for p in parts).encode()).digest()
  return int.from_bytes(digest[:8], 'little')


def simulate_clicks(dataset, num_annotators=2, noise=0.1, instance='area', seed=0):
  """Simulates center clicks from ground-truth boxes.

  For each positive (image, class) pair and each annotator independently: choose one
  ground-truth instance of the class (difficult ones included; crowd regions never) by
  `instance` (`uniform`; `area`: probability proportional to box area; `largest`), then click its
  box center plus Gaussian error with per-axis standard deviation `noise * sqrt(box area)`, clipped
  into the image. Each annotator's random stream is seeded from `(seed, image_id, class name,
  annotator)`, so a pair's clicks do not depend on which other images are in the dataset, and the
  first annotator's clicks are the same whether 1 or 2 annotators are simulated.

  Args:
    dataset: `records.Dataset`.
    num_annotators: clicks per pair.
    noise: `click_noise`, error std per axis in units of sqrt(box area).
    instance: one of INSTANCE_CHOICES.
    seed: int.
  Returns:
    list of click row dicts (the file format), annotators named `sim0`, `sim1`, ...
  """
  if instance not in INSTANCE_CHOICES:
    raise ValueError(f'instance must be one of {INSTANCE_CHOICES}, got {instance!r}')
  if noise < 0:
    raise ValueError(f'click noise must be >= 0, got {noise}')
  rows = []
  for record in dataset.records:
    for label in record['image_labels']:
      class_name = dataset.class_names[label]
      instances = np.flatnonzero(record['gt_labels'] == label)
      areas = box_lib.area(record['gt_boxes'][instances])
      for annotator in range(num_annotators):
        rng = np.random.default_rng(_stable_seed(seed, record['image_id'], class_name, annotator))
        if instance == 'largest':
          chosen = instances[int(np.argmax(areas))]
        elif instance == 'area':
          # Zero-area boxes never come from the readers; fall back to uniform for hand-made ones.
          weights = areas / areas.sum() if areas.sum() > 0 else None
          chosen = instances[rng.choice(len(instances), p=weights)]
        else:
          chosen = instances[rng.integers(len(instances))]
        box = record['gt_boxes'][chosen]
        center_y, center_x = box_lib.centers(box[None])[0]
        std = noise * math.sqrt(float(box_lib.area(box[None])[0]))
        error_y, error_x = rng.normal(0.0, 1.0, size=2) * std
        rows.append({
            'image_id': record['image_id'],
            'class': class_name,
            'x': round(float(np.clip(center_x + error_x, 0, record['width'])), 3),
            'y': round(float(np.clip(center_y + error_y, 0, record['height'])), 3),
            'annotator': f'sim{annotator}',
            'response_time_s': None,
            'source': 'simulated',
            'gt_instance': int(chosen),
        })
  return rows


def click_statistics(selected, dataset):
  """Counts and (for simulated clicks) how often two annotators aimed at different instances.

  Args:
    selected: dict pair -> list of `Click` (from `select_clicks`).
    dataset: `records.Dataset`.
  Returns:
    dict with `num_pairs`, `num_clicks`, `num_pairs_different_instances` (None when the clicks
    carry no `gt_instance`), `mean_error_rel` (mean click distance to the aimed box center over
    sqrt(box area), None without `gt_instance`), `response_time_s_sum` (None unless every click has
    a response time).
  """
  records = dataset.by_id()
  num_clicks = sum(len(c) for c in selected.values())
  known = all(c.gt_instance is not None for cs in selected.values() for c in cs)
  different = None
  errors = []
  if known and num_clicks:
    different = sum(len({c.gt_instance for c in cs}) > 1 for cs in selected.values())
    for (image_id, _), cs in selected.items():
      for c in cs:
        box = records[image_id]['gt_boxes'][c.gt_instance]
        center = box_lib.centers(box[None])[0]
        errors.append(math.hypot(c.y - center[0], c.x - center[1]) /
                      math.sqrt(float(box_lib.area(box[None])[0])))
  times = [c.response_time_s for cs in selected.values() for c in cs]
  return {
      'num_pairs': len(selected),
      'num_clicks': num_clicks,
      'num_pairs_different_instances': different,
      'mean_error_rel': float(np.mean(errors)) if errors else None,
      'response_time_s_sum': (float(sum(times)) if times and all(t is not None for t in times)
                              else None),
  }


def annotation_hours(num_clicks, num_pairs, seconds_per_click=SECONDS_PER_CLICK,
                     seconds_per_box=SECONDS_PER_BOX):
  """Annotation time of the click regime and of full supervision, from actual counts.

  Image-level labels are not charged (as in the paper). Full supervision is one drawn box per
  positive (image, class) pair, the paper's fair comparator.

  Args:
    num_clicks: clicks used by the learner.
    num_pairs: positive (image, class) pairs.
    seconds_per_click, seconds_per_box: cost constants in seconds.
  Returns:
    dict with `annotation_hours` (the clicks) and `annotation_hours_full_supervision`, in hours,
    and the constants used.
  """
  return {
      'annotation_hours': num_clicks * seconds_per_click / 3600.0,
      'annotation_hours_full_supervision': num_pairs * seconds_per_box / 3600.0,
      'seconds_per_click': seconds_per_click,
      'seconds_per_box': seconds_per_box,
  }
