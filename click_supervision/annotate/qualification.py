"""The qualification test: synthetic black polygons on grey, click the center of each one's box.

docs/method.md, section 1: before the main task an annotator clicks the center of the tight
box around each of a few irregular, often non-convex polygons, gets feedback (the true box and
its center drawn next to the click) and may retry until they pass. Non-convex shapes put the box
center off the shape, which trains annotators out of clicking the center of mass.

Polygons live in a `CANVAS_WIDTH x CANVAS_HEIGHT` pixel canvas (x right, y down, the same
continuous-pixel frame as clicks on images). A test is a pure function of
`(seed, annotator, attempt)`, so the server never needs to store one: a restarted server scores
a test it handed out before the restart.

Scoring: a click's error is its distance to the box center relative to the box's size,
`||click - center|| / sqrt(w * h)` (the scale the click simulator uses for its noise). A polygon
is passed when the error is at most `tolerance`; the test is passed when at least `min_passed`
of the polygons are.
"""

import math

import numpy as np

from click_supervision import clicks as clicks_lib

CANVAS_WIDTH = 400
CANVAS_HEIGHT = 300
# Not given by the paper (docs/method.md, section 1); 0.1 is the click simulator's default
# noise level, the error of a typical careful annotator, and a center-of-mass click on a
# crescent misses the box center by more than that.
DEFAULT_TOLERANCE = 0.1
DEFAULT_NUM_POLYGONS = 5
DEFAULT_MIN_PASSED = 4


def _star(rng):
  """A radial polygon with random radii: irregular and non-convex, unit size."""
  num_vertices = int(rng.integers(7, 13))
  angles = np.sort(rng.uniform(0, 2 * np.pi, num_vertices))
  radii = rng.uniform(0.35, 1.0, num_vertices)
  return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _crescent(rng):
  """A thick arc (C shape) with a ragged outline: its box center usually lies off the shape."""
  start = rng.uniform(0, 2 * np.pi)
  span = rng.uniform(np.radians(200), np.radians(290))
  num = int(rng.integers(6, 10))
  angles = start + np.linspace(0, span, num)
  outer = rng.uniform(0.85, 1.0, num)
  inner = rng.uniform(0.45, 0.65, num)
  outline = np.concatenate([
      np.stack([outer * np.cos(angles), outer * np.sin(angles)], axis=1),
      np.stack([inner * np.cos(angles[::-1]), inner * np.sin(angles[::-1])], axis=1)])
  return outline


def make_test(seed, annotator, attempt, num_polygons=DEFAULT_NUM_POLYGONS):
  """The polygons of one qualification attempt.

  Args:
    seed: the tool's seed.
    annotator: annotator id (str).
    attempt: 1-based attempt number; each retry gets new polygons.
    num_polygons: polygons in the test.
  Returns:
    list of dicts `{'vertices': [[x, y], ...], 'box': [xmin, ymin, xmax, ymax],
    'center': [x, y]}`, pixels in the canvas frame, one polygon per canvas.
  """
  rng = np.random.default_rng(clicks_lib._stable_seed(  # pylint: disable=protected-access
      'qualification', seed, annotator, attempt))
  polygons = []
  for index in range(num_polygons):
    unit = _crescent(rng) if index % 2 == 0 else _star(rng)
    rotation = rng.uniform(0, 2 * np.pi)
    cos, sin = math.cos(rotation), math.sin(rotation)
    unit = unit @ np.array([[cos, sin], [-sin, cos]])
    # Anisotropic scale, then a size and position that keep the whole box inside the canvas.
    unit = unit * rng.uniform(0.6, 1.0, size=2)
    unit = unit - unit.min(axis=0)
    unit = unit / unit.max()
    size = rng.uniform(90, 0.85 * CANVAS_HEIGHT)
    shape = unit * size
    extent = shape.max(axis=0)
    offset = rng.uniform([10, 10], [CANVAS_WIDTH - 10 - extent[0], CANVAS_HEIGHT - 10 - extent[1]])
    vertices = np.round(shape + offset, 1)
    xmin, ymin = vertices.min(axis=0)
    xmax, ymax = vertices.max(axis=0)
    polygons.append({
        'vertices': vertices.tolist(),
        'box': [float(xmin), float(ymin), float(xmax), float(ymax)],
        'center': [float((xmin + xmax) / 2), float((ymin + ymax) / 2)],
    })
  return polygons


def score_test(polygons, clicks, tolerance=DEFAULT_TOLERANCE, min_passed=DEFAULT_MIN_PASSED):
  """Scores the clicks of one attempt.

  Args:
    polygons: the output of `make_test`.
    clicks: list of `(x, y)` pixels in the canvas frame, one per polygon, in order.
    tolerance: largest passing error relative to the box size (see module docstring).
    min_passed: polygons that must pass.
  Returns:
    `(passed, results)`: bool, and per polygon a dict with `box`, `center`, `click`, `error`
    (relative, rounded to 3 decimals) and `ok`.
  """
  if len(clicks) != len(polygons):
    raise ValueError(f'{len(clicks)} clicks for {len(polygons)} polygons')
  results = []
  for polygon, (x, y) in zip(polygons, clicks):
    xmin, ymin, xmax, ymax = polygon['box']
    size = math.sqrt((xmax - xmin) * (ymax - ymin))
    error = math.hypot(x - polygon['center'][0], y - polygon['center'][1]) / size
    results.append({'box': polygon['box'], 'center': polygon['center'], 'click': [x, y],
                    'error': round(error, 3), 'ok': error <= tolerance})
  passed = sum(r['ok'] for r in results) >= min_passed
  return passed, results
