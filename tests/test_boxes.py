"""Tests for click_supervision.boxes: tiny hand-checked values.

Boxes are `[ymin, xmin, ymax, xmax]` in pixels, 0-based, end-exclusive.
"""

import os
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from click_supervision import boxes

BOX = [0, 0, 10, 10]  # 10 x 10 at the origin, area 100.


# ------------------------------------------------------------------------------------------- IoU


@pytest.mark.parametrize('box_b, expected', [
    # Offset by 5 on both axes: intersection 5 x 5 = 25, union 100 + 100 - 25 = 175 -> 1/7.
    ([5, 5, 15, 15], 1 / 7),
    # Offset by 5 on one axis: intersection 5 x 10 = 50, union 150 -> 1/3.
    ([5, 0, 15, 10], 1 / 3),
    # 2 x 2 inside the 10 x 10: intersection 4, union 100 -> 4/100 = 0.04 = 1/25.
    ([4, 4, 6, 6], 0.04),
    # Disjoint.
    ([20, 20, 30, 30], 0.0),
    # Sharing the edge x = 10 (end-exclusive): intersection width 10 - 10 = 0.
    ([0, 10, 10, 20], 0.0),
    # Sharing only the corner (10, 10).
    ([10, 10, 20, 20], 0.0),
    # Identical.
    ([0, 0, 10, 10], 1.0),
    # Degenerate (zero height, lying inside BOX): area 0 and intersection 0 -> 0.
    ([5, 2, 5, 8], 0.0),
    # Inverted (ymax < ymin): area 0 -> 0, never negative.
    ([8, 8, 2, 2], 0.0),
])
def test_pairwise_iou_hand_values(box_b, expected):
  iou = boxes.pairwise_iou([BOX], [box_b])
  assert iou.shape == (1, 1)
  assert iou.dtype == np.float32
  np.testing.assert_allclose(iou[0, 0], expected, rtol=1e-6, atol=0)
  # IoU is symmetric.
  np.testing.assert_allclose(boxes.pairwise_iou([box_b], [BOX])[0, 0], expected, rtol=1e-6)


def test_pairwise_iou_matrix_and_fractional_coordinates():
  a = [[0, 0, 10, 10], [0, 0, 2, 2]]
  b = [[5, 5, 15, 15], [0, 0, 10, 10], [0.5, 0.5, 1.5, 1.5]]
  # Row 0: 1/7 (above), 1, and the 1 x 1 box inside: 1/100.
  # Row 1 ([0,0,2,2], area 4): with [5,5,15,15] disjoint 0; inside BOX 4/100;
  #   with [0.5,0.5,1.5,1.5] (area 1, inside) 1/4.
  expected = [[1 / 7, 1.0, 0.01], [0.0, 0.04, 0.25]]
  np.testing.assert_allclose(boxes.pairwise_iou(a, b), expected, rtol=1e-6)


def test_pairwise_iou_two_degenerate_boxes_is_zero_not_nan():
  # Union 0 + 0 - 0 = 0: defined as 0, no NaN and no warning.
  iou = boxes.pairwise_iou([[3, 3, 3, 3]], [[3, 3, 3, 3]])
  assert iou[0, 0] == 0.0


def test_pairwise_iou_empty_inputs():
  two = [[0, 0, 1, 1], [0, 0, 2, 2]]
  assert boxes.pairwise_iou([], two).shape == (0, 2)
  assert boxes.pairwise_iou(np.zeros((0, 4)), two).shape == (0, 2)
  assert boxes.pairwise_iou(two, []).shape == (2, 0)
  assert boxes.pairwise_iou([], []).shape == (0, 0)
  assert boxes.pairwise_iou([], two).dtype == np.float32


def test_as_boxes_rejects_wrong_last_dimension():
  with pytest.raises(ValueError, match='last dimension of 4'):
    boxes.as_boxes([[0, 0, 1]])
  assert boxes.as_boxes([]).shape == (0, 4)


# ------------------------------------------------------------------------------ area and centers


def test_area():
  # 10 x 10 = 100; [2, 3, 5, 11]: (5 - 2) x (11 - 3) = 3 x 8 = 24; zero height and inverted: 0.
  values = boxes.area([[0, 0, 10, 10], [2, 3, 5, 11], [5, 0, 5, 10], [8, 8, 2, 2]])
  np.testing.assert_array_equal(values, [100, 24, 0, 0])
  assert values.dtype == np.float32
  # Any leading shape: [2, 1, 4] -> [2, 1].
  np.testing.assert_array_equal(boxes.area([[[0, 0, 1, 2]], [[1, 1, 4, 5]]]), [[2], [12]])
  # A single box -> a scalar: 1.5 x 2 = 3.
  assert boxes.area([0, 0, 1.5, 2]) == 3.0


def test_centers():
  # [0,0,10,10] -> (5, 5); [2,3,5,11] -> ((2+5)/2, (3+11)/2) = (3.5, 7).
  np.testing.assert_array_equal(boxes.centers([[0, 0, 10, 10], [2, 3, 5, 11]]),
                                [[5, 5], [3.5, 7]])
  # The first chair of VOC 000005, ours [210, 262, 339, 324]: ((210+339)/2, (262+324)/2).
  np.testing.assert_array_equal(boxes.centers([210, 262, 339, 324]), [274.5, 293])


# ------------------------------------------------------------------------ clipping and validity


def test_clip_to_image():
  # Image 40 high, 100 wide: y to [0, 40], x to [0, 100].
  clipped = boxes.clip_to_image([[-5, -3, 50, 120], [10, 20, 30, 40], [50, 110, 60, 120]], 40, 100)
  np.testing.assert_array_equal(clipped, [[0, 0, 40, 100],   # overhanging on all sides
                                          [10, 20, 30, 40],  # inside: unchanged
                                          [40, 100, 40, 100]])  # fully outside: collapses
  assert clipped.dtype == np.float32
  np.testing.assert_array_equal(boxes.is_valid(clipped), [True, True, False])


def test_clip_to_image_does_not_modify_its_input():
  original = np.array([[-1, -1, 5, 5]], np.float32)
  boxes.clip_to_image(original, 4, 4)
  np.testing.assert_array_equal(original, [[-1, -1, 5, 5]])


def test_is_valid():
  candidates = [[0, 0, 1, 1],  # 1 x 1: valid
                [0, 0, 0, 1],  # zero height
                [0, 0, 1, 0],  # zero width
                [5, 5, 4, 6],  # ymax < ymin
                [0.0, 0.0, 0.01, 0.01]]  # tiny but positive
  np.testing.assert_array_equal(boxes.is_valid(candidates), [True, False, False, False, True])
  assert boxes.is_valid([]).shape == (0,)


# ------------------------------------------------------------------------------ VOC conversions


def test_from_voc_xml_first_ten_pixels():
  # VOC (xmin, ymin, xmax, ymax) = (1, 1, 10, 10) covers pixels 1..10 (1-based, inclusive)
  # -> ours [ymin - 1, xmin - 1, ymax, xmax] = [0, 0, 10, 10]: 10 pixels wide.
  box = boxes.from_voc_xml(1, 1, 10, 10)
  np.testing.assert_array_equal(box, [0, 0, 10, 10])
  assert box.dtype == np.float32
  assert boxes.to_voc_xml(box) == (1, 1, 10, 10)


def test_from_voc_xml_single_pixel():
  # VOC (5, 7, 5, 7): exactly the pixel x = 5, y = 7 (1-based) -> [6, 4, 7, 5], area 1.
  box = boxes.from_voc_xml(5, 7, 5, 7)
  np.testing.assert_array_equal(box, [6, 4, 7, 5])
  assert boxes.area(box) == 1.0


def test_voc_000005_first_chair(voc_dev_root):
  xml_path = os.path.join(voc_dev_root, 'Annotations', '000005.xml')
  objects = ElementTree.parse(xml_path).getroot().findall('object')
  assert [o.findtext('name') for o in objects] == ['chair'] * 5
  first = objects[0].find('bndbox')
  xmin, ymin, xmax, ymax = (int(first.findtext(k)) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
  assert (xmin, ymin, xmax, ymax) == (263, 211, 324, 339)
  box = boxes.from_voc_xml(xmin, ymin, xmax, ymax)
  # [211 - 1, 263 - 1, 339, 324] = [210, 262, 339, 324].
  np.testing.assert_array_equal(box, [210, 262, 339, 324])
  # Width: VOC columns 263..324 inclusive = 324 - 263 + 1 = 62 px = ours 324 - 262.
  assert box[3] - box[1] == 62
  # Height: rows 211..339 = 129 px.
  assert box[2] - box[0] == 129


def test_voc_round_trip_on_all_000005_boxes(voc_dev_root):
  xml_path = os.path.join(voc_dev_root, 'Annotations', '000005.xml')
  expected = [(263, 211, 324, 339), (165, 264, 253, 372), (5, 244, 67, 374), (241, 194, 295, 299),
              (277, 186, 312, 220)]  # from the data README
  for obj, voc_box in zip(ElementTree.parse(xml_path).getroot().findall('object'), expected,
                          strict=True):
    bndbox = obj.find('bndbox')
    read = tuple(int(bndbox.findtext(k)) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
    assert read == voc_box
    assert boxes.to_voc_xml(boxes.from_voc_xml(*read)) == voc_box


def test_to_voc_xml_returns_python_ints():
  result = boxes.to_voc_xml(np.array([210, 262, 339, 324], np.float32))
  assert result == (263, 211, 324, 339)
  assert all(type(v) is int for v in result)


# ---------------------------------------------------------------------- COCO and normalized boxes


def test_coco_xywh_round_trip():
  # The chair [210, 262, 339, 324] is COCO x = 262, y = 210, w = 324 - 262 = 62,
  # h = 339 - 210 = 129.
  ours = boxes.from_coco_xywh([[262, 210, 62, 129], [0.5, 1.5, 2, 3]])
  # [y, x, y + h, x + w]: [210, 262, 339, 324] and [1.5, 0.5, 4.5, 2.5].
  np.testing.assert_array_equal(ours, [[210, 262, 339, 324], [1.5, 0.5, 4.5, 2.5]])
  assert ours.dtype == np.float32
  np.testing.assert_array_equal(boxes.to_coco_xywh(ours), [[262, 210, 62, 129], [0.5, 1.5, 2, 3]])
  # A single flat box and an empty list.
  assert boxes.from_coco_xywh([262, 210, 62, 129]).shape == (1, 4)
  assert boxes.from_coco_xywh([]).shape == (0, 4)
  assert boxes.to_coco_xywh([]).shape == (0, 4)


def test_normalized_round_trip():
  # 000005 is 375 high, 500 wide: [210/375, 262/500, 339/375, 324/500]
  #                              = [0.56, 0.524, 0.904, 0.648].
  normalized = np.array([[0.56, 0.524, 0.904, 0.648]], np.float32)
  np.testing.assert_allclose(boxes.from_normalized(normalized, 375, 500),
                             [[210, 262, 339, 324]], rtol=1e-6)
  # The full image: [0, 0, 1, 1] -> [0, 0, height, width].
  np.testing.assert_array_equal(boxes.from_normalized([[0, 0, 1, 1]], 375, 500),
                                [[0, 0, 375, 500]])
