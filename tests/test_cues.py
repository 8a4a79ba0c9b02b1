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
