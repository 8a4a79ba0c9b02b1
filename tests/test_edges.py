"""Tests for click_supervision.edges: thinning on synthetic ridges, HED output, SED model errors."""

import gzip

import cv2
import numpy as np
import pytest

from click_supervision import edges
from click_supervision.errors import UserError


def _blurred_vertical_ridge(height=40, width=48, column=20, sigma=2.0):
  """The edge map of a vertical step at `column`: a ridge, blurred over several columns."""
  ridge = np.zeros((height, width), np.float32)
  ridge[:, column] = 1.0
  ridge = cv2.GaussianBlur(ridge, (0, 0), sigma)
  return ridge / ridge.max()


# -------------------------------------------------------------------------------------- thinning


def test_thinning_vertical_step_gives_one_pixel_ridge_at_the_step_column():
  edge_map = _blurred_vertical_ridge(column=20)
  assert (edge_map[20] > 0.1).sum() >= 5  # Several pixels wide before thinning.
  thinned, orientation = edges.thin_edges(edge_map)
  assert thinned.shape == edge_map.shape and thinned.dtype == np.float32
  for row in thinned:
    assert np.count_nonzero(row) == 1  # One pixel wide, every row.
    assert np.argmax(row) == 20
    assert row[20] == pytest.approx(1.0)  # Survivors keep their value.
  # A vertical edge has a horizontal normal: orientation 0 (mod pi).
  angle = orientation[20, 20] % np.pi
  assert min(angle, np.pi - angle) < 0.05


def test_thinning_diagonal_line_gives_one_pixel_ridge_on_the_diagonal():
  size = 48
  line = np.zeros((size, size), np.float32)
  line[np.arange(size), np.arange(size)] = 1.0
  edge_map = cv2.GaussianBlur(line, (0, 0), 1.5)
  edge_map /= edge_map.max()
  thinned, orientation = edges.thin_edges(edge_map)
  inner = slice(4, size - 4)  # Away from the line's ends at the image corners.
  rows, cols = np.nonzero(thinned[inner, inner])
  assert len(rows) == size - 8  # Exactly one pixel per row...
  np.testing.assert_array_equal(rows, cols)  # ...on the diagonal.
  # The normal of the line y = x points along (1, -1) or (-1, 1): 45 or 135 degrees.
  angle = orientation[24, 24]
  assert min(abs(angle - np.pi / 4), abs(angle - 3 * np.pi / 4)) < 0.1


def test_thinning_suppresses_nothing_on_a_thin_map_and_rejects_3d():
  edge_map = np.zeros((30, 30), np.float32)
  edge_map[:, 10] = 0.5
  thinned, _ = edges.thin_edges(edge_map)
  np.testing.assert_array_equal(thinned[2:-2, 10], 0.5)
  with pytest.raises(ValueError):
    edges.thin_edges(np.zeros((5, 5, 3), np.float32))


# ------------------------------------------------------------------------------------------- HED


@pytest.fixture(scope='module')
def hed():
  return edges.shared_hed_detector()


def test_hed_output_shape_range_and_contours(hed):
  image = np.full((45, 61, 3), 30, np.uint8)  # Sizes not multiples of the padding.
  image[10:35, 15:45] = (230, 200, 40)
  edge_map = hed(image)
  assert edge_map.shape == (45, 61) and edge_map.dtype == np.float32
  assert edge_map.min() >= 0.0 and edge_map.max() <= 1.0
  # The rectangle's outline is an edge; its flat interior and the flat background are not.
  assert edge_map[10:35, 14:16].mean() > 0.3
  assert edge_map[18:27, 25:35].max() < 0.2
  assert edge_map[40:, :].max() < 0.2


def test_hed_traces_once_for_several_sizes(hed):
  for size in [(33, 47), (64, 64), (50, 21)]:
    assert hed(np.zeros(size + (3,), np.uint8)).shape == size
  assert hed._forward.experimental_get_tracing_count() == 1


def test_hed_rejects_non_rgb_uint8(hed):
  with pytest.raises(ValueError, match='uint8'):
    hed(np.zeros((10, 10, 3), np.float32))
  with pytest.raises(ValueError, match='uint8'):
    hed(np.zeros((10, 10), np.uint8))


def test_make_edge_detector_shares_hed():
  assert edges.make_edge_detector('hed') is edges.shared_hed_detector()


# ------------------------------------------------------------------- Structured Edge Detection


def test_sed_missing_model_file_names_it(tmp_path):
  path = str(tmp_path / 'model.yml.gz')
  with pytest.raises(UserError, match='model.yml.gz: .*not found'):
    edges.make_edge_detector(path)


def test_sed_model_without_trees_is_refused_before_opencv_crashes(tmp_path):
  # OpenCV divides by options.numberOfTrees: without the check this file would kill the process.
  path = tmp_path / 'empty.yml.gz'
  path.write_bytes(gzip.compress(b'%YAML:1.0\nfoo: 1\n'))
  with pytest.raises(UserError, match='empty.yml.gz: not a Structured Edge Detection model'):
    edges.StructuredEdgeDetector(str(path))


def test_sed_unparsable_file_names_it(tmp_path):
  path = tmp_path / 'garbage.yml.gz'
  path.write_bytes(b'not yaml at all')
  with pytest.raises(UserError, match='garbage.yml.gz: not a readable OpenCV model file'):
    edges.StructuredEdgeDetector(str(path))
