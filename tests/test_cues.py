"""Tests of the click cues against hand-computed values."""

import math

import numpy as np
import pytest

from click_supervision import cues


def test_box_center_score_fixed_sigma():
  # Centers (5, 5) and (5, 8); click (5, 5); sigma 3 px: exp(0) = 1 and exp(-9 / 18) = e^-0.5.
  boxes = np.array([[0, 0, 10, 10], [0, 3, 10, 13]], np.float32)
  np.testing.assert_allclose(cues.box_center_score(boxes, (5, 5), 3.0),
                             [1.0, math.exp(-0.5)], rtol=1e-6)


def test_box_center_score_relative_sigma():
  # Box 10x10 (area 100) centered (5, 8): sigma = 0.1 * 10 = 1 px, distance 3: exp(-9 / 2).
  # Box 20x20 (area 400) centered (10, 13): sigma = 2 px, distance^2 = 25 + 64: exp(-89 / 8).
  boxes = np.array([[0, 3, 10, 13], [0, 3, 20, 23]], np.float32)
  np.testing.assert_allclose(cues.box_center_score(boxes, (5, 5), 0.1, relative=True),
                             [math.exp(-4.5), math.exp(-89 / 8)], rtol=1e-5)


def test_box_size_score():
  # Areas 100, 400 and 25; the smallest scores 1: (25 / 100)^0.5 = 0.5, (25 / 400)^0.5 = 0.25.
  boxes = np.array([[0, 0, 10, 10], [0, 0, 20, 20], [0, 0, 5, 5]], np.float32)
  np.testing.assert_allclose(cues.box_size_score(boxes, 0.5), [0.5, 0.25, 1.0], rtol=1e-6)
  np.testing.assert_array_equal(cues.box_size_score(boxes, 0.0), [1, 1, 1])


def test_box_area_score():
  # Areas 100 and 400 vs mu = log(100), sigma 0.5: exp(0) and exp(-log(4)^2 / 0.5).
  boxes = np.array([[0, 0, 10, 10], [0, 0, 20, 20]], np.float32)
  np.testing.assert_allclose(cues.box_area_score(boxes, math.log(100), 0.5),
                             [1.0, math.exp(-math.log(4) ** 2 / 0.5)], rtol=1e-5)


@pytest.mark.parametrize('click, expected', [
    ((30, 40), [10, 0, 50, 80]),      # y: min(30, 50 - 30) = 20; x: min(40, 100 - 40) = 40
    ((45, 90), [40, 80, 50, 100]),    # 5 below and 10 right of the click fit
    ((0, 50), [0, 0, 0.5, 100]),      # a click on the border still gives a window
])
def test_largest_centered_window(click, expected):
  np.testing.assert_allclose(cues.largest_centered_window(click, 50, 100), expected)


def test_area_model_recovers_a_known_relation():
  # log area = 2 + 2 log d exactly (area = e^2 d^2): the fit finds a0 = 2, a1 = 2, sigma 0.
  distances = np.array([2.0, 5.0, 10.0, 40.0])
  model = cues.AreaModel.fit(distances, np.exp(2) * distances ** 2, source='hand')
  assert (model.a0, model.a1) == pytest.approx((2.0, 2.0))
  assert model.sigma == pytest.approx(0.0, abs=1e-9)
  assert model.log_area(10.0) == pytest.approx(2 + 2 * math.log(10))
  # Distances below min_distance are clipped: d = 0 behaves as d = 1.
  assert model.log_area(0.0) == pytest.approx(2.0)
  assert cues.AreaModel.from_dict(model.to_dict()) == model
  with pytest.raises(cues.AreaFitError, match='needs >= 3'):
    cues.AreaModel.fit([1.0, 2.0], [3.0, 4.0])
  # Noise-free clicks: every distance 0 (clipped to 1 px), so the slope is undetermined.
  with pytest.raises(cues.AreaFitError, match='varied inter-click distances'):
    cues.AreaModel.fit([0.0, 0.0, 0.5, 0.0], [30.0, 400.0, 90.0, 1000.0])


def test_click_distance():
  assert cues.click_distance([[0, 0], [3, 4]]) == 5.0


def test_gold_pair_distances_from_real_clicks():
  # pylint: disable=g-import-not-at-top
  from click_supervision import clicks as clicks_lib
  from click_supervision.datasets import records as records_lib
  # Two dogs: 20 x 10 at (y 0..10, x 0..20) and 40 x 40 at (y 50..90, x 50..90); one cat.
  record = records_lib.make_record('a', '/a.jpg', 100, 100,
                                   [[0, 0, 10, 20], [50, 50, 90, 90], [0, 50, 30, 80]], [1, 1, 0])
  other = records_lib.make_record('b', '/b.jpg', 100, 100, [[10, 10, 50, 50]], [1])
  dataset = records_lib.Dataset('tiny', 'trainval', ['cat', 'dog'], [record, other])

  def click(y, x, annotator, flagged=False):
    return clicks_lib.Click(y=y, x=x, annotator=annotator, response_time_s=1.0, source='human',
                            flagged=flagged, gt_instance=None)

  click_set = clicks_lib.ClickSet('f.jsonl', {}, {
      # Both near the big dog's center (70, 70): 3-4-5 apart.
      ('a', 1): [click(68, 69, 'p'), click(71, 73, 'q')],
      # The one cat: 6 px apart.
      ('a', 0): [click(15, 62, 'p'), click(15, 68, 'q')],
      # A flagged annotator's click comes first and is skipped: one usable click remains.
      ('b', 1): [click(30, 30, 'm', flagged=True), click(31, 30, 'p')],
  }, dataset.class_names)
  gold = [['a', 'dog'], ['a', 'cat'], ['b', 'dog'], ['z', 'dog'], ['a', 'horse']]
  distances, areas = cues.gold_pair_distances(dataset, click_set, gold)
  # Sorted by (image, class): a/cat then a/dog.
  np.testing.assert_allclose(distances, [6.0, 5.0])
  np.testing.assert_allclose(areas, [30 * 30, 40 * 40])
  distances, _ = cues.gold_pair_distances(dataset, click_set, gold, use_flagged=True)
  np.testing.assert_allclose(distances, [6.0, 5.0, 1.0])
  # Clicks nearest to two different dogs are left out.
  split = clicks_lib.ClickSet('f.jsonl', {}, {('a', 1): [click(5, 10, 'p'), click(70, 70, 'q')]},
                              dataset.class_names)
  assert len(cues.gold_pair_distances(dataset, split, [['a', 'dog']])[0]) == 0
