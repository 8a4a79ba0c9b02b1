"""The `localizations.jsonl` file: one selected box per positive (image, class) pair.

JSON Lines, UTF-8, one pair per line, sorted by (image id, class index):

  {"image_id": "000005", "class": "chair", "box": [211.0, 262.0, 339.0, 324.0],
   "proposal_index": 17, "score": 0.734, "iteration": 3, "clicks_split": false}

| key | meaning |
|---|---|
| `image_id`, `class` | the pair (class by name) |
| `box` | `[ymin, xmin, ymax, xmax]` pixels, 0-based, end-exclusive (`boxes` convention) |
| `proposal_index` | the box's index among the image's candidates (proposals, then the whole-image box when it was added) |
| `score` | the combined re-localisation score S (0 for the initial selection) |
| `iteration` | the MIL iteration that chose the box (0 = initialisation) |
| `clicks_split` | two clicks judged to be on different instances (docs/method.md, section 4) |
| `rival_score` | optional: the best S of a box overlapping this one with IoU < 0.5, a different answer (0 for the initial selection); the adaptive second click reads it (`second_click`) |

The detector stage trains on these boxes; `read_localizations` gives them back as the dict the
evaluation takes.
"""

import numpy as np

from click_supervision import atomic
from click_supervision import jsonl
from click_supervision.errors import UserError

KEYS = ('image_id', 'class', 'box', 'proposal_index', 'score', 'iteration', 'clicks_split')
OPTIONAL_KEYS = ('rival_score',)


def write_localizations(path, selections, class_names):
  """Writes `selections` atomically.

  Args:
    path: destination file.
    selections: dict `(image_id, class_index)` -> dict with `box` float [4], `index`, `score`,
      `iteration`, `split`, and optionally `rival_score`.
    class_names: list of str.
  """
  rows = []
  for (image_id, c), s in sorted(selections.items()):
    row = {'image_id': image_id, 'class': class_names[c],
           'box': [round(float(v), 2) for v in s['box']], 'proposal_index': int(s['index']),
           'score': round(float(s['score']), 6), 'iteration': int(s['iteration']),
           'clicks_split': bool(s['split'])}
    if s.get('rival_score') is not None:
      row['rival_score'] = round(float(s['rival_score']), 6)
    rows.append(row)
  atomic.write_jsonl(path, rows)


def read_localizations(path, class_names):
  """Reads a localizations file.

  Args:
    path: the file.
    class_names: list of str (the dataset's classes).
  Returns:
    dict `(image_id, class_index)` -> dict with `box` float32 [4], `index`, `score`,
    `iteration`, `split`, `rival_score` (None when the file has none).
  Raises:
    UserError naming the file and line of the first problem (missing file, bad JSON, missing or
    unknown key, unknown class, a box that is not 4 finite numbers with min < max, a duplicate
    pair).
  """
  index = {name: i for i, name in enumerate(class_names)}
  result = {}
  for where, row in jsonl.rows(path, 'localizations'):
    if not set(KEYS) <= set(row) or not set(row) <= set(KEYS + OPTIONAL_KEYS):
      raise UserError(f'{where}: expected the keys {", ".join(KEYS)} (and optionally '
                      f'{", ".join(OPTIONAL_KEYS)})')
    if row['class'] not in index:
      raise UserError(f'{where}: unknown class {row["class"]!r}')
    box = np.asarray(row['box'], np.float32) if isinstance(row['box'], list) else None
    if (box is None or box.shape != (4,) or not np.all(np.isfinite(box)) or
        box[0] >= box[2] or box[1] >= box[3]):
      raise UserError(f'{where}: box must be [ymin, xmin, ymax, xmax] with min < max')
    pair = (str(row['image_id']), index[row['class']])
    if pair in result:
      raise UserError(f'{where}: a second box for {pair[0]} / {row["class"]}')
    result[pair] = {'box': box, 'index': int(row['proposal_index']),
                    'score': float(row['score']), 'iteration': int(row['iteration']),
                    'split': bool(row['clicks_split']),
                    'rival_score': (float(row['rival_score']) if 'rival_score' in row
                                    else None)}
  return result
