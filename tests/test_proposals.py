"""Tests for click_supervision.proposals: Edge Boxes, Selective Search, the proposals file format.

Boxes are `[ymin, xmin, ymax, xmax]` in pixels, 0-based, end-exclusive.
"""

import json

import cv2
import numpy as np
import pytest

from click_supervision import boxes as box_lib
from click_supervision import proposals
from click_supervision.errors import DataError
from click_supervision.errors import UserError

HEIGHT, WIDTH = 96, 128
# The bright rectangle: rows 20..59, columns 30..89 -> [20, 30, 60, 90].
BRIGHT_BOX = [20, 30, 60, 90]


def _synthetic_image():
  """A dark image with a bright rectangle and two smaller, dimmer ones."""
  image = np.full((HEIGHT, WIDTH, 3), 25, np.uint8)
  image[20:60, 30:90] = (240, 230, 60)
  image[65:88, 8:30] = (90, 140, 200)
  image[70:90, 100:120] = (150, 60, 60)
  return image


def _check_output(boxes, scores, timings, max_boxes, height=HEIGHT, width=WIDTH):
  assert boxes.dtype == np.float32 and scores.dtype == np.float32
  assert boxes.ndim == 2 and boxes.shape[1] == 4 and scores.shape == (len(boxes),)
  assert 0 < len(boxes) <= max_boxes
  assert np.all(np.diff(scores) <= 0)  # Descending.
  assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 1] >= 0)
  assert np.all(boxes[:, 2] <= height) and np.all(boxes[:, 3] <= width)
  assert np.all(box_lib.is_valid(boxes))
  assert set(timings) == {'edges', 'thinning', 'boxes'}
  assert all(t >= 0 for t in timings.values())


# ------------------------------------------------------------------------------- conversions


def test_opencv_edge_boxes_rects_are_one_based_inclusive():
  # (x, y, w, h) = (1, 1, W - 1, H - 1) is the whole image in OpenCV's Edge Boxes output.
  np.testing.assert_array_equal(
      proposals.from_opencv_edge_boxes([[1, 1, WIDTH - 1, HEIGHT - 1]]), [[0, 0, HEIGHT, WIDTH]])
  # First pixel column 30 (reported as 31), last 89 (w = 89 - 30 = 59): [.., 30, .., 90].
  np.testing.assert_array_equal(proposals.from_opencv_edge_boxes([[31, 21, 59, 39]]),
                                [BRIGHT_BOX])


def test_opencv_rects_are_end_exclusive():
  np.testing.assert_array_equal(proposals.from_opencv_rects([[30, 20, 60, 40]]), [BRIGHT_BOX])


def test_rank_scores():
  np.testing.assert_allclose(proposals.rank_scores(4), [1.0, 0.75, 0.5, 0.25])
  assert proposals.rank_scores(0).shape == (0,)


def test_config_validation_and_cache_params(tmp_path):
  with pytest.raises(UserError, match='beta'):
    proposals.ProposalConfig(beta=0)
  with pytest.raises(UserError, match='max_boxes'):
    proposals.ProposalConfig(max_boxes=0)
  config = proposals.ProposalConfig()
  assert json.dumps(config.cache_params())  # JSON-serialisable.
  assert config.cache_params() != proposals.ProposalConfig(alpha=0.7).cache_params()
  # Edge Boxes parameters do not change Selective Search proposals, hence not its cache key.
  assert (proposals.ProposalConfig(method='selective_search').cache_params() ==
          proposals.ProposalConfig(method='selective_search', alpha=0.7).cache_params())


# -------------------------------------------------------------------------------- Edge Boxes


@pytest.fixture(scope='module')
def edge_boxes_output():
  generator = proposals.ProposalGenerator(proposals.ProposalConfig(max_boxes=300))
  return generator(_synthetic_image())


def test_edge_boxes_outputs(edge_boxes_output):
  boxes, scores, timings = edge_boxes_output
  _check_output(boxes, scores, timings, max_boxes=300)
  assert timings['edges'] > 0 and timings['boxes'] > 0


def test_edge_boxes_finds_the_bright_rectangle(edge_boxes_output):
  boxes, _, _ = edge_boxes_output
  iou = box_lib.pairwise_iou([BRIGHT_BOX], boxes[:10])[0]
  assert iou.max() > 0.7, (iou.max(), boxes[:10])


def test_edge_boxes_span_the_whole_image_frame():
  """Boxes reach x = 0 and x = W exactly: the OpenCV corner convention is right in this build."""
  config = proposals.ProposalConfig(max_boxes=5000, beta=0.99, min_score=0.0, min_box_area=100)
  rng = np.random.default_rng(0)
  noise = (rng.random((HEIGHT, WIDTH)) > 0.9).astype(np.float32)
  generator = proposals.ProposalGenerator(config, edge_detector=lambda image: noise)
  boxes, _, _ = generator(_synthetic_image())
  assert boxes[:, 0].min() == 0 and boxes[:, 1].min() == 0
  assert boxes[:, 2].max() == HEIGHT and boxes[:, 3].max() == WIDTH


def test_edge_boxes_with_short_side_return_original_pixels():
  config = proposals.ProposalConfig(max_boxes=200, short_side=192)
  generator = proposals.ProposalGenerator(config)
  assert generator.working_size(HEIGHT, WIDTH) == (192, 256)
  boxes, scores, timings = generator(_synthetic_image())
  _check_output(boxes, scores, timings, max_boxes=200)
  # Found at twice the size and halved: coordinates are multiples of 0.5 in the original image.
  np.testing.assert_array_equal(boxes * 2, np.round(boxes * 2))
  assert np.any(boxes * 2 % 2 == 1)
  assert box_lib.pairwise_iou([BRIGHT_BOX], boxes[:10]).max() > 0.7


def test_working_size_caps_the_long_side():
  assert proposals.MAX_WORKING_LONG_SIDE == 1000
  default = proposals.ProposalGenerator()
  assert default.working_size(375, 500) == (375, 500)  # VOC photos: untouched.
  assert default.working_size(1000, 640) == (1000, 640)
  assert default.working_size(8000, 8000) == (1000, 1000)
  assert default.working_size(3000, 4000) == (750, 1000)
  # short_side 600 would make 100 x 500 into 600 x 3000: the cap wins, 200 x 1000.
  with_short_side = proposals.ProposalGenerator(proposals.ProposalConfig(short_side=600))
  assert with_short_side.working_size(100, 500) == (200, 1000)
  assert with_short_side.working_size(375, 500) == (600, 800)


def test_large_image_runs_the_edge_detector_at_the_capped_size():
  seen = []

  def detector(image):
    seen.append(image.shape[:2])
    return np.zeros(image.shape[:2], np.float32)

  generator = proposals.ProposalGenerator(edge_detector=detector)
  boxes, scores, _ = generator(np.zeros((3000, 4000, 3), np.uint8))
  # One HED pass at 0.7 of the 750 x 1000 working image, not of 3000 x 4000.
  assert seen == [(525, 700)]
  assert boxes.shape == (0, 4) and scores.shape == (0,)  # No edges, no boxes.


def test_shrunk_image_boxes_come_back_in_original_pixels(monkeypatch):
  monkeypatch.setattr(proposals, 'MAX_WORKING_LONG_SIDE', WIDTH // 2)
  config = proposals.ProposalConfig(max_boxes=5000, beta=0.99, min_score=0.0, min_box_area=400)
  rng = np.random.default_rng(0)
  noise = (rng.random((HEIGHT // 2, WIDTH // 2)) > 0.9).astype(np.float32)
  seen = []

  def detector(image):
    seen.append(image.shape[:2])
    return cv2.resize(noise, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)

  generator = proposals.ProposalGenerator(config, edge_detector=detector)
  assert generator.working_size(HEIGHT, WIDTH) == (HEIGHT // 2, WIDTH // 2)
  boxes, scores, timings = generator(_synthetic_image())
  assert seen == [(round(HEIGHT / 2 * 0.7), round(WIDTH / 2 * 0.7))]
  _check_output(boxes, scores, timings, max_boxes=5000)
  # Found at half the size and doubled: even coordinates spanning the whole original frame.
  np.testing.assert_array_equal(boxes % 2, 0)
  assert boxes[:, 0].min() == 0 and boxes[:, 1].min() == 0
  assert boxes[:, 2].max() == HEIGHT and boxes[:, 3].max() == WIDTH


def test_tiny_image_gives_no_boxes():
  generator = proposals.ProposalGenerator(edge_detector=lambda image: np.zeros(image.shape[:2]))
  boxes, scores, _ = generator(np.zeros((5, 7, 3), np.uint8))
  assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_generator_rejects_non_uint8_images():
  with pytest.raises(ValueError, match='uint8'):
    proposals.ProposalGenerator()(np.zeros((10, 10, 3), np.float32))


# -------------------------------------------------------------------------- Selective Search


def test_selective_search_outputs():
  generator = proposals.ProposalGenerator(
      proposals.ProposalConfig(method='selective_search', max_boxes=50))
  boxes, scores, timings = generator(_synthetic_image())
  _check_output(boxes, scores, timings, max_boxes=50)
  assert scores[0] == 1.0 and np.all(scores > 0)
  assert box_lib.pairwise_iou([BRIGHT_BOX], boxes).max() > 0.7
  # OpenCV ranks regions with C's rand(); the generator seeds it, so the order repeats.
  again, _, _ = generator(_synthetic_image())
  np.testing.assert_array_equal(boxes, again)


# ---------------------------------------------------------------------- precomputed proposals


ENTRIES = [
    ('img_a', np.array([[0, 0, 10, 20], [5.5, 6, 30, 40], [1, 2, 3, 4]], np.float32),
     np.array([0.2, 0.9, 0.5], np.float32)),
    ('42', np.array([[10, 10, 50, 60]], np.float32), np.array([1.5], np.float32)),
]


@pytest.mark.parametrize('suffix', ['.jsonl', '.npz'])
@pytest.mark.parametrize('box_format, box_origin', [('yxyx', 'zero_based_exclusive'),
                                                    ('xyxy', 'one_based_inclusive')])
def test_proposals_file_round_trip(tmp_path, suffix, box_format, box_origin):
  path = str(tmp_path / ('props' + suffix))
  proposals.write_proposals_file(path, ENTRIES, box_format=box_format, box_origin=box_origin)
  reader = proposals.PrecomputedProposals(path)
  assert sorted(reader.image_ids) == ['42', 'img_a']
  for image_id, boxes, scores in ENTRIES:
    got_boxes, got_scores = reader.get(image_id, 100, 100)
    np.testing.assert_allclose(got_boxes, boxes, atol=1e-5)
    np.testing.assert_allclose(got_scores, scores)


def test_one_based_inclusive_file_converts_like_voc(tmp_path):
  path = tmp_path / 'mat_style.jsonl'
  path.write_text(
      '{"format": "click_supervision/proposals", "version": 1, "box_format": "yxyx", '
      '"box_origin": "one_based_inclusive"}\n'
      '{"image_id": "000005", "boxes": [[1, 1, 10, 10]]}\n')
  boxes, scores = proposals.PrecomputedProposals(str(path)).get('000005', 20, 20)
  np.testing.assert_array_equal(boxes, [[0, 0, 10, 10]])  # Same as boxes.from_voc_xml.
  np.testing.assert_array_equal(scores, [1.0])  # No scores: rank-based.


def test_generator_with_a_proposals_file_sorts_truncates_and_clips(tmp_path):
  path = str(tmp_path / 'props.npz')
  entries = [('img', np.array([[0, 0, 10, 10], [-1.5, 0, 5, 5], [2, 2, 2, 8], [0, 0, 20, 30]],
                              np.float32), np.array([0.1, 0.7, 0.9, 0.3], np.float32))]
  proposals.write_proposals_file(path, entries)
  config = proposals.ProposalConfig(method=path, max_boxes=2)
  generator = proposals.ProposalGenerator(config)
  image = np.zeros((20, 30, 3), np.uint8)
  boxes, scores, timings = generator(image, image_id='img')
  # [2, 2, 2, 8] has zero height (dropped); the overhang of 1.5 px is clipped.
  np.testing.assert_array_equal(boxes, [[0, 0, 5, 5], [0, 0, 20, 30]])
  np.testing.assert_allclose(scores, [0.7, 0.3])
  assert timings == {'edges': 0.0, 'thinning': 0.0, 'boxes': 0.0}
  with pytest.raises(ValueError, match='image_id'):
    generator(image)
  generator.precomputed.check_records([{'image_id': 'img', 'height': 20, 'width': 30}])


HEADER = ('{"format": "click_supervision/proposals", "version": 1, "box_format": "yxyx", '
          '"box_origin": "zero_based_exclusive"}')


@pytest.mark.parametrize('lines, message', [
    (['{"format": "other", "version": 1}'], r'line 1: not a proposals file'),
    ([HEADER.replace('"version": 1', '"version": 2')], r'line 1: unsupported version 2'),
    ([HEADER.replace('"yxyx"', '"xywh"')], r'line 1: "box_format" must be one of'),
    ([HEADER.replace('}', ', "extra": 1}')], r'line 1: unknown header keys \[\'extra\'\]'),
    ([HEADER, '{"image_id": "a", "boxes": [[0, 0, 1]]}'], r'line 2: image \'a\': boxes must have '
     r'shape \[N, 4\]'),
    ([HEADER, '{"image_id": "a", "boxes": [[0, 0, "x", 1]]}'], r'line 2: image \'a\': boxes must'),
    ([HEADER, '{"image_id": "a", "boxes": [[0, 0, 5, 5], [0, 0, NaN, 1]]}'],
     r'line 2: image \'a\': box 1 is not finite'),
    ([HEADER, '{"image_id": "a", "boxes": [[5, 0, 1, 5]]}'], r'line 2: image \'a\': box 0 has max '
     r'< min'),
    ([HEADER, '{"image_id": "a", "boxes": [[0, 0, 5, 5]], "scores": [1, 2]}'],
     r'line 2: image \'a\': 1 boxes but scores of shape \[2\]'),
    ([HEADER, '{"image_id": "a", "boxes": [[0, 0, 5, 5]], "score": [1]}'],
     r'line 2: unknown keys \[\'score\'\]'),
    ([HEADER, '{"boxes": [[0, 0, 5, 5]]}'], r'line 2: "image_id" must be a non-empty string'),
    ([HEADER, '{"image_id": "a"}'], r'line 2: image \'a\' has no "boxes"'),
    ([HEADER, '{"image_id": "a", "boxes": []}', '', '{"image_id": "a", "boxes": []}'],
     r'line 4: image \'a\' listed twice \(first at line 2\)'),
    ([HEADER, '{"image_id": "a", "boxes": [[0, 0, 5, 5]]'], r'line 2: not a JSON object'),
    ([], r'empty proposals file'),
])
def test_proposals_jsonl_rejections_name_file_and_line(tmp_path, lines, message):
  path = tmp_path / 'bad.jsonl'
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(DataError, match='bad.jsonl: ' + message):
    proposals.PrecomputedProposals(str(path))


def test_proposals_lookup_rejections_name_file_and_place(tmp_path):
  path = tmp_path / 'props.jsonl'
  path.write_text(HEADER + '\n' + '{"image_id": "a", "boxes": [[0, 0, 10, 10], [0, 0, 25, 10]]}\n')
  reader = proposals.PrecomputedProposals(str(path))
  with pytest.raises(DataError, match=r"props.jsonl: no proposals for image 'b'"):
    reader.get('b', 20, 20)
  # 25 > 20 + 2 px tolerance on ymax.
  with pytest.raises(DataError, match=r"props.jsonl: line 2: image 'a': box 1 .* lies outside the "
                     r'20 x 20 image'):
    reader.get('a', 20, 20)
  with pytest.raises(DataError, match="no proposals for image 'b'"):
    reader.check_records([{'image_id': 'b', 'height': 20, 'width': 20}])
  boxes, _ = reader.get('a', 23, 20)  # Within tolerance: clipped.
  assert boxes[:, 2].max() == 23


def test_proposals_npz_rejections_name_file_and_key(tmp_path):
  good = dict(header=np.array(HEADER), image_ids=np.array(['a', 'b']), num_boxes=np.array([1, 2]),
              boxes=np.zeros((3, 4), np.float32) + [0, 0, 5, 5])

  def check(message, **changes):
    arrays = {k: v for k, v in dict(good, **changes).items() if v is not None}
    path = tmp_path / 'bad.npz'
    np.savez(path, **arrays)
    with pytest.raises(DataError, match='bad.npz: ' + message):
      proposals.PrecomputedProposals(str(path))

  check(r"missing keys \['num_boxes'\]", num_boxes=None)
  check(r"unknown keys \['extra'\]", extra=np.zeros(1))
  check(r"key 'header': unsupported version", header=np.array(HEADER.replace(': 1,', ': 3,')))
  check(r"key 'boxes' must have shape \[sum\(num_boxes\) = 3, 4\]", boxes=np.zeros((2, 4)))
  check(r"key 'scores' must have shape \[3\]", scores=np.zeros(2))
  check(r"key 'num_boxes' must hold one non-negative integer per image", num_boxes=np.array([1]))
  check(r"key 'boxes' rows 1-2 \(image_ids\[1\]\): image 'b': box 1 has max < min",
        boxes=np.array([[0, 0, 5, 5], [0, 0, 5, 5], [0, 9, 5, 5]], np.float32))
  check(r"key 'boxes' rows 1-2 \(image_ids\[1\]\): image 'a' listed twice",
        image_ids=np.array(['a', 'a']))


def test_missing_or_unknown_type_proposals_file(tmp_path):
  with pytest.raises(DataError, match='proposals file not found'):
    proposals.ProposalGenerator(proposals.ProposalConfig(method=str(tmp_path / 'nope.npz')))
  other = tmp_path / 'props.mat'
  other.write_bytes(b'x')
  with pytest.raises(DataError, match='props.mat: unknown proposals file type'):
    proposals.PrecomputedProposals(str(other))
