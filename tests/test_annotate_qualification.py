"""Qualification polygons: seeded, inside the canvas, often with the box center off the shape."""

import math

import cv2
import numpy as np

from click_supervision.annotate import qualification


def _center_on_shape(polygon):
  contour = np.array(polygon['vertices'], np.float32).reshape(-1, 1, 2)
  return cv2.pointPolygonTest(contour, tuple(polygon['center']), False) >= 0


def test_tests_are_seeded_per_annotator_and_attempt():
  first = qualification.make_test(0, 'alice', 1)
  assert first == qualification.make_test(0, 'alice', 1)
  assert first != qualification.make_test(0, 'alice', 2)
  assert first != qualification.make_test(0, 'bob', 1)
  assert first != qualification.make_test(1, 'alice', 1)
  assert len(qualification.make_test(0, 'alice', 1, num_polygons=3)) == 3


def test_polygons_fit_the_canvas_and_their_boxes_are_tight():
  for attempt in range(1, 21):
    for polygon in qualification.make_test(0, 'alice', attempt):
      vertices = np.array(polygon['vertices'])
      xmin, ymin, xmax, ymax = polygon['box']
      assert 0 <= xmin < xmax <= qualification.CANVAS_WIDTH
      assert 0 <= ymin < ymax <= qualification.CANVAS_HEIGHT
      assert (xmin, ymin) == tuple(vertices.min(axis=0))
      assert (xmax, ymax) == tuple(vertices.max(axis=0))
      assert polygon['center'] == [(xmin + xmax) / 2, (ymin + ymax) / 2]
      assert math.sqrt((xmax - xmin) * (ymax - ymin)) > 30  # Big enough to click on.


def test_polygons_are_non_convex_and_often_centered_off_the_shape():
  polygons = [p for attempt in range(1, 21) for p in qualification.make_test(0, 'alice', attempt)]
  convex = [cv2.isContourConvex(np.array(p['vertices'], np.float32).reshape(-1, 1, 2))
            for p in polygons]
  assert not any(convex)
  off_shape = sum(not _center_on_shape(p) for p in polygons)
  assert off_shape >= 0.3 * len(polygons), off_shape


def test_scoring_uses_the_error_relative_to_box_size():
  polygon = {'box': [0.0, 0.0, 100.0, 25.0], 'center': [50.0, 12.5], 'vertices': []}
  # sqrt(100 * 25) = 50: 4 pixels off is an error of 0.08, 6 pixels 0.12.
  passed, results = qualification.score_test([polygon] * 3, [(50, 12.5), (54, 12.5), (50, 18.5)],
                                             tolerance=0.1, min_passed=2)
  assert passed
  assert [r['error'] for r in results] == [0.0, 0.08, 0.12]
  assert [r['ok'] for r in results] == [True, True, False]
  passed, _ = qualification.score_test([polygon] * 3, [(50, 12.5), (54, 12.5), (50, 18.5)],
                                       tolerance=0.1, min_passed=3)
  assert not passed
