"""Tests for click_supervision.clicks: the click file format, selection, simulator, accounting."""

import collections
import json
import math

import numpy as np
import pytest

from click_supervision import boxes as box_lib
from click_supervision import clicks
from click_supervision.datasets import records as records_lib
from click_supervision.datasets import voc
from click_supervision.errors import ClickFileError

HEADER = json.dumps({'format': 'click_supervision.clicks', 'version': 1})
CAT, DOG = 0, 1


def _tiny_dataset():
  """Three images, classes cat (0) and dog (1); boxes [ymin, xmin, ymax, xmax] with square areas.

  a: 50 high x 100 wide; cat [10, 20, 30, 40] (20 x 20, center (20, 30)),
     dog [0, 50, 50, 100] (50 x 50, center (25, 75)).
  b: 80 high x 60 wide; cats [0, 0, 20, 20] (20 x 20, center (10, 10)) and
     [40, 20, 80, 60] (40 x 40, center (60, 40)).
  c: 30 high x 30 wide; dog [5, 5, 25, 25] (20 x 20, center (15, 15)).
  """
  records = [
      records_lib.make_record('a', '/images/a.jpg', 50, 100,
                              [[10, 20, 30, 40], [0, 50, 50, 100]], [CAT, DOG]),
      records_lib.make_record('b', '/images/b.jpg', 80, 60,
                              [[0, 0, 20, 20], [40, 20, 80, 60]], [CAT, CAT]),
      records_lib.make_record('c', '/images/c.jpg', 30, 30, [[5, 5, 25, 25]], [DOG]),
  ]
  return records_lib.Dataset(name='tiny', split='trainval', class_names=['cat', 'dog'],
                             records=records)


def _row(image_id='a', class_name='cat', x=30.0, y=20.0, annotator='h0', **extra):
  row = {'image_id': image_id, 'class': class_name, 'x': x, 'y': y, 'annotator': annotator,
         'response_time_s': 1.5, 'source': 'human'}
  row.update(extra)
  return row


def _write_lines(tmp_path, lines, name='clicks.jsonl'):
  path = tmp_path / name
  path.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')
  return str(path)


def _click(y, x, annotator, gt_instance=None, response_time_s=None, flagged=False):
  return clicks.Click(y=y, x=x, annotator=annotator, response_time_s=response_time_s,
                      source='simulated', flagged=flagged, gt_instance=gt_instance)


# ------------------------------------------------------------------------------ reader: valid files


def test_write_then_read_round_trip(tmp_path):
  dataset = _tiny_dataset()
  rows = [
      _row('a', 'cat', x=30, y=20, annotator='h0'),
      _row('a', 'cat', x=31.5, y=19.25, annotator='h1', flagged=True),
      _row('a', 'dog', x=75.0, y=25.0, annotator='h0', response_time_s=None),
      _row('b', 'cat', x=10, y=10, annotator='sim0', source='simulated', gt_instance=0),
      _row('c', 'dog', x=0, y=0, annotator='h0', response_time_s=0),
  ]
  path = str(tmp_path / 'sub' / 'clicks.jsonl')  # The writer creates the folder.
  clicks.write_click_file(path, rows, header_extra={'simulator': {'seed': 7}})
  click_set = clicks.read_click_file(path, dataset)
  assert click_set.path == path
  assert click_set.header == {'format': 'click_supervision.clicks', 'version': 1,
                              'simulator': {'seed': 7}}
  assert click_set.num_clicks == 5
  assert set(click_set.clicks) == {('a', CAT), ('a', DOG), ('b', CAT), ('c', DOG)}
  # File order within a pair; (y, x) and every field as written.
  assert click_set.clicks[('a', CAT)] == [
      clicks.Click(y=20.0, x=30.0, annotator='h0', response_time_s=1.5, source='human',
                   flagged=False, gt_instance=None),
      clicks.Click(y=19.25, x=31.5, annotator='h1', response_time_s=1.5, source='human',
                   flagged=True, gt_instance=None)]
  assert click_set.clicks[('a', DOG)][0].response_time_s is None
  assert click_set.clicks[('b', CAT)][0].gt_instance == 0
  assert click_set.clicks[('b', CAT)][0].source == 'simulated'
  assert click_set.clicks[('c', DOG)][0][:2] == (0.0, 0.0)
  # Integer coordinates come back as floats.
  assert type(click_set.clicks[('a', CAT)][0].x) is float


def test_blank_lines_are_allowed(tmp_path):
  path = _write_lines(tmp_path, ['', '   ', HEADER, '', json.dumps(_row()), '\t', ''])
  click_set = clicks.read_click_file(path, _tiny_dataset())
  assert click_set.num_clicks == 1


def test_header_only_file_has_no_clicks(tmp_path):
  click_set = clicks.read_click_file(_write_lines(tmp_path, [HEADER]), _tiny_dataset())
  assert click_set.clicks == {}
  assert click_set.num_clicks == 0


@pytest.mark.parametrize('x, y', [
    (100, 50),  # exactly on the right and bottom borders (image a is 100 wide, 50 high)
    (0, 0),  # the top-left corner
    (99.999, 49.999),
])
def test_click_on_the_border_is_accepted(tmp_path, x, y):
  path = _write_lines(tmp_path, [HEADER, json.dumps(_row(x=x, y=y))])
  click = clicks.read_click_file(path, _tiny_dataset()).clicks[('a', CAT)][0]
  assert (click.y, click.x) == (y, x)


def test_same_pair_different_annotators_is_not_a_duplicate(tmp_path):
  path = _write_lines(tmp_path, [HEADER, json.dumps(_row(annotator='h0')),
                                 json.dumps(_row(annotator='h1')),
                                 json.dumps(_row(class_name='dog', x=70, annotator='h0'))])
  click_set = clicks.read_click_file(path, _tiny_dataset())
  assert [c.annotator for c in click_set.clicks[('a', CAT)]] == ['h0', 'h1']
  assert len(click_set.clicks[('a', DOG)]) == 1


# --------------------------------------------------------------------------- reader: rejections


def _bad(**changes):
  """A click row (image a, class cat, annotator h0) with some values changed, as a JSON line."""
  row = _row()
  row.update(changes)
  return json.dumps(row)


def _without(key):
  row = _row()
  del row[key]
  return json.dumps(row)


VALID = json.dumps(_row(annotator='ok'))

# (lines after the header, 1-based line of the problem, words the message must contain).
# The header is line 1, a valid click line 2, a blank line 3, so the bad line is line 4: this also
# checks that blank lines are counted.
ROW_PROBLEMS = {
    'malformed_json': ('{"image_id": "a", "class":', 'malformed JSON'),
    'not_an_object': ('[1, 2]', 'must be a JSON object'),
    'missing_key': (_without('annotator'), 'missing key "annotator"'),
    'missing_x': (_without('x'), 'missing key "x"'),
    'unknown_key': (_bad(colour='red'), 'unknown key "colour"'),
    'string_x': (_bad(x='30'), '"x" has the wrong type'),
    'bool_x': (_bad(x=True), '"x" has the wrong type'),
    'null_y': (_bad(y=None), '"y" has the wrong type'),
    'int_annotator': (_bad(annotator=3), '"annotator" has the wrong type'),
    'string_flagged': (_bad(flagged='yes'), '"flagged" has the wrong type'),
    'bool_gt_instance': (_bad(gt_instance=True), '"gt_instance" has the wrong type'),
    'float_gt_instance': (_bad(gt_instance=0.0), '"gt_instance" has the wrong type'),
    'string_response_time': (_bad(response_time_s='1.5'), '"response_time_s" has the wrong type'),
    'bool_response_time': (_bad(response_time_s=False), '"response_time_s" has the wrong type'),
    'bad_source': (_bad(source='robot'), '"source" must be one of'),
    'negative_response_time': (_bad(response_time_s=-0.5), '"response_time_s" must be >= 0'),
    'nan_x': ('{"image_id": "a", "class": "cat", "x": NaN, "y": 1, "annotator": "h0", '
              '"source": "human"}', 'finite'),
    'empty_annotator': (_bad(annotator=''), '"annotator" is empty'),
    'unknown_image': (_bad(image_id='zzz'), "unknown image 'zzz'"),
    'unknown_class': (_bad(**{'class': 'bird'}), "unknown class 'bird'"),
    # Image c has only a dog.
    'class_not_in_image': (_bad(image_id='c', x=15, y=15), "image c has no 'cat'"),
    # Image a is 100 wide, 50 high.
    'x_right_of_image': (_bad(x=100.1), 'outside'),
    'y_above_image': (_bad(y=-0.1), 'outside'),
    'x_left_of_image': (_bad(x=-0.1), 'outside'),
    'y_below_image': (_bad(y=50.1), 'outside'),
    # Image a: box 0 is the cat, box 1 the dog; there is no box 2.
    'gt_instance_of_another_class': (_bad(gt_instance=1), '"gt_instance" 1 is not'),
    'gt_instance_out_of_range': (_bad(gt_instance=2), '"gt_instance" 2 is not'),
    'gt_instance_negative': (_bad(gt_instance=-1), '"gt_instance" -1 is not'),
    'duplicate': (_bad(annotator='ok', x=31), 'duplicate click: image a, class cat, annotator ok'),
}


@pytest.mark.parametrize('name', sorted(ROW_PROBLEMS))
def test_bad_row_names_file_line_and_problem(tmp_path, name):
  bad_line, words = ROW_PROBLEMS[name]
  path = _write_lines(tmp_path, [HEADER, VALID, '', bad_line, VALID.replace('ok', 'later')])
  with pytest.raises(ClickFileError) as info:
    clicks.read_click_file(path, _tiny_dataset())
  error = info.value
  assert error.path == path
  assert error.line == 4  # header 1, valid 2, blank 3, bad 4
  assert words in error.problem
  assert str(error).startswith(f'{path}:4: ')


@pytest.mark.parametrize('first_line, words', [
    (json.dumps(_row()), 'the first line must be the header'),  # no header: a click first
    (json.dumps({'format': 'other', 'version': 1}), 'the first line must be the header'),
    (json.dumps({'version': 1}), 'the first line must be the header'),
    ('[1]', 'the first line must be the header'),
    (json.dumps({'format': 'click_supervision.clicks', 'version': 2}),
     'version 2 is not supported'),
    (json.dumps({'format': 'click_supervision.clicks', 'version': '1'}),
     "version '1' is not supported"),
    (json.dumps({'format': 'click_supervision.clicks', 'version': True}),
     'version True is not supported'),
    (json.dumps({'format': 'click_supervision.clicks'}), 'version None is not supported'),
    ('{"format": ', 'malformed JSON'),
])
def test_bad_header(tmp_path, first_line, words):
  # Two blank lines first: the header is line 3.
  path = _write_lines(tmp_path, ['', '', first_line, VALID])
  with pytest.raises(ClickFileError) as info:
    clicks.read_click_file(path, _tiny_dataset())
  assert info.value.line == 3
  assert words in info.value.problem
  assert str(info.value).startswith(f'{path}:3: ')


@pytest.mark.parametrize('content', ['', '\n\n  \n'])
def test_empty_file(tmp_path, content):
  path = tmp_path / 'empty.jsonl'
  path.write_text(content)
  with pytest.raises(ClickFileError) as info:
    clicks.read_click_file(str(path), _tiny_dataset())
  assert info.value.line == 0  # Not tied to a line: the message is `path: problem`.
  assert 'empty click file' in info.value.problem
  assert str(info.value) == f'{path}: empty click file (no header line)'


def test_missing_file(tmp_path):
  path = str(tmp_path / 'nope.jsonl')
  with pytest.raises(ClickFileError) as info:
    clicks.read_click_file(path, _tiny_dataset())
  assert (info.value.line, info.value.problem) == (0, 'click file not found')


def test_not_utf8(tmp_path):
  path = tmp_path / 'latin1.jsonl'
  path.write_bytes((HEADER + '\n').encode() + b'{"image_id": "\xe9"}\n')
  with pytest.raises(ClickFileError) as info:
    clicks.read_click_file(str(path), _tiny_dataset())
  assert (info.value.line, info.value.problem) == (2, 'not UTF-8 text')


def test_first_problem_wins(tmp_path):
  # Two bad lines: the error names the first (line 2), not the second (line 3).
  path = _write_lines(tmp_path, [HEADER, _bad(x='1'), _bad(image_id='zzz')])
  with pytest.raises(ClickFileError) as info:
    clicks.read_click_file(path, _tiny_dataset())
  assert info.value.line == 2


# ---------------------------------------------------------------------------------- select_clicks


def _selection_file(tmp_path):
  # Pair (b, cat): h0 (flagged), h1, h2 in this order. Pair (a, cat): h0, h1. Pair (a, dog): h0.
  rows = [_row('b', 'cat', x=10, y=10, annotator='h0', flagged=True),
          _row('a', 'cat', x=30, y=20, annotator='h0'),
          _row('b', 'cat', x=11, y=11, annotator='h1'),
          _row('a', 'dog', x=75, y=25, annotator='h0'),
          _row('b', 'cat', x=12, y=12, annotator='h2', flagged=False),
          _row('a', 'cat', x=31, y=21, annotator='h1')]
  path = str(tmp_path / 'clicks.jsonl')
  clicks.write_click_file(path, rows)
  return clicks.read_click_file(path, _tiny_dataset())


def test_select_first_annotators_in_file_order_skipping_flagged(tmp_path):
  click_set = _selection_file(tmp_path)
  selected = clicks.select_clicks(click_set, [('b', CAT), ('a', CAT)], 2)
  assert list(selected) == [('b', CAT), ('a', CAT)]
  assert [c.annotator for c in selected[('b', CAT)]] == ['h1', 'h2']  # h0 is flagged
  assert [c.annotator for c in selected[('a', CAT)]] == ['h0', 'h1']
  one = clicks.select_clicks(click_set, [('b', CAT), ('a', DOG)], 1)
  assert [c.annotator for c in one[('b', CAT)]] == ['h1']
  assert [(c.y, c.x) for c in one[('a', DOG)]] == [(25.0, 75.0)]


def test_select_with_flagged(tmp_path):
  selected = clicks.select_clicks(_selection_file(tmp_path), [('b', CAT)], 2, use_flagged=True)
  assert [c.annotator for c in selected[('b', CAT)]] == ['h0', 'h1']
  assert selected[('b', CAT)][0].flagged is True


@pytest.mark.parametrize('pair, num_clicks, use_flagged, usable', [
    (('a', DOG), 2, False, 1),  # only h0 clicked the dog of a
    (('b', CAT), 3, False, 2),  # h1, h2 (h0 flagged)
    (('c', DOG), 1, False, 0),  # nobody clicked c
])
def test_select_too_few_clicks_names_the_pair(tmp_path, pair, num_clicks, use_flagged, usable):
  click_set = _selection_file(tmp_path)
  with pytest.raises(ClickFileError) as info:
    clicks.select_clicks(click_set, [pair], num_clicks, use_flagged=use_flagged)
  assert info.value.path == click_set.path
  class_name = ('cat', 'dog')[pair[1]]
  assert f'image {pair[0]} class {class_name!r} has {usable} usable clicks' in info.value.problem
  assert f'--clicks={num_clicks}' in info.value.problem


def test_select_three_with_flagged_is_enough(tmp_path):
  selected = clicks.select_clicks(_selection_file(tmp_path), [('b', CAT)], 3, use_flagged=True)
  assert [c.annotator for c in selected[('b', CAT)]] == ['h0', 'h1', 'h2']


def test_select_zero_clicks_gives_empty_lists(tmp_path):
  pairs = [('a', CAT), ('c', DOG)]  # (c, dog) has no click at all: fine with 0 clicks.
  assert clicks.select_clicks(_selection_file(tmp_path), pairs, 0) == {('a', CAT): [],
                                                                        ('c', DOG): []}


def test_clicks_as_array():
  array = clicks.clicks_as_array([_click(1.5, 2.5, 'a'), _click(3, 4, 'b')])
  np.testing.assert_array_equal(array, [[1.5, 2.5], [3, 4]])  # (y, x) rows
  assert array.dtype == np.float32
  assert clicks.clicks_as_array([]).shape == (0, 2)


# -------------------------------------------------------------------------------------- simulator


def _pairs_of(rows):
  grouped = collections.defaultdict(list)
  for row in rows:
    grouped[(row['image_id'], row['class'])].append(row)
  return grouped


def _single_image_dataset(height, width, gt_boxes, gt_labels, image_id='x', **kwargs):
  record = records_lib.make_record(image_id, f'/images/{image_id}.jpg', height, width, gt_boxes,
                                   gt_labels, **kwargs)
  return records_lib.Dataset(name='one', split='s', class_names=['cat', 'dog'], records=[record])


def test_simulator_rows_have_the_file_format(tmp_path):
  dataset = _tiny_dataset()
  rows = clicks.simulate_clicks(dataset, num_annotators=2, noise=0.1, seed=0)
  # Pairs (a, cat), (a, dog), (b, cat), (c, dog), 2 annotators each -> 8 rows, in record order.
  assert len(rows) == 8
  assert [(r['image_id'], r['class'], r['annotator']) for r in rows] == [
      ('a', 'cat', 'sim0'), ('a', 'cat', 'sim1'), ('a', 'dog', 'sim0'), ('a', 'dog', 'sim1'),
      ('b', 'cat', 'sim0'), ('b', 'cat', 'sim1'), ('c', 'dog', 'sim0'), ('c', 'dog', 'sim1')]
  assert all(r['source'] == 'simulated' and r['response_time_s'] is None for r in rows)
  path = str(tmp_path / 'sim.jsonl')
  clicks.write_click_file(path, rows)
  assert clicks.read_click_file(path, dataset).num_clicks == 8


def test_simulator_is_deterministic_per_seed():
  dataset = _tiny_dataset()
  first = clicks.simulate_clicks(dataset, seed=3)
  assert clicks.simulate_clicks(dataset, seed=3) == first
  other = clicks.simulate_clicks(dataset, seed=4)
  # Continuous Gaussian errors: every coordinate moves with another seed.
  assert all((a['x'], a['y']) != (b['x'], b['y']) for a, b in zip(first, other, strict=True))


def test_simulator_validates_arguments():
  with pytest.raises(ValueError, match='instance must be one of'):
    clicks.simulate_clicks(_tiny_dataset(), instance='smallest')
  with pytest.raises(ValueError, match='noise must be >= 0'):
    clicks.simulate_clicks(_tiny_dataset(), noise=-0.1)


def test_simulator_largest_always_picks_the_largest():
  # Three cats: 10 x 10 = 100, 20 x 20 = 400 and 50 x 50 = 2500 (index 2), plus a dog.
  dataset = _single_image_dataset(
      200, 200, [[0, 0, 10, 10], [20, 20, 40, 40], [100, 100, 150, 150], [0, 100, 90, 190]],
      [CAT, CAT, CAT, DOG])
  for seed in range(20):
    rows = clicks.simulate_clicks(dataset, num_annotators=3, instance='largest', noise=0.0,
                                  seed=seed)
    cat_rows = [r for r in rows if r['class'] == 'cat']
    assert [r['gt_instance'] for r in cat_rows] == [2, 2, 2]
    # Noise 0: exactly the center of [100, 100, 150, 150], (125, 125).
    assert all((r['y'], r['x']) == (125.0, 125.0) for r in cat_rows)
    assert [r['gt_instance'] for r in rows if r['class'] == 'dog'] == [3, 3, 3]


def _instance_frequencies(dataset, instance, num_seeds, num_annotators):
  counts = collections.Counter()
  for seed in range(num_seeds):
    for row in clicks.simulate_clicks(dataset, num_annotators=num_annotators, instance=instance,
                                      noise=0.0, seed=seed):
      counts[row['gt_instance']] += 1
  total = sum(counts.values())
  return {k: v / total for k, v in counts.items()}, total


def test_simulator_area_choice_is_proportional_to_area():
  # Cats of 10 x 10 = 100, 10 x 20 = 200 and 10 x 50 = 500 square pixels: probabilities
  # 100/800 = 0.125, 200/800 = 0.25, 500/800 = 0.625.
  dataset = _single_image_dataset(100, 100, [[0, 0, 10, 10], [20, 0, 30, 20], [40, 0, 50, 50]],
                                  [CAT, CAT, CAT])
  frequencies, total = _instance_frequencies(dataset, 'area', num_seeds=400, num_annotators=4)
  assert total == 1600
  # Binomial std with 1600 draws is at most sqrt(0.25 / 1600) = 0.0125; allow 0.05 (4 std).
  for index, expected in [(0, 0.125), (1, 0.25), (2, 0.625)]:
    assert abs(frequencies[index] - expected) < 0.05, (index, frequencies)


def test_simulator_uniform_choice_ignores_area():
  # Two cats, 10 x 10 = 100 and 60 x 60 = 3600: uniform picks each about half the time.
  dataset = _single_image_dataset(100, 100, [[0, 0, 10, 10], [40, 40, 100, 100]], [CAT, CAT])
  frequencies, total = _instance_frequencies(dataset, 'uniform', num_seeds=400, num_annotators=2)
  assert total == 800
  # Std sqrt(0.25 / 800) = 0.018; allow 0.07 (about 4 std).
  assert abs(frequencies[0] - 0.5) < 0.07, frequencies
  assert abs(frequencies[1] - 0.5) < 0.07, frequencies


def test_simulator_noise_zero_clicks_box_centers():
  dataset = _tiny_dataset()
  centers = {('a', 0): (20, 30), ('a', 1): (25, 75), ('b', 0): (10, 10), ('b', 1): (60, 40),
             ('c', 0): (15, 15)}  # (image, gt_instance) -> (y, x), from the docstring above
  for instance in clicks.INSTANCE_CHOICES:
    for row in clicks.simulate_clicks(dataset, noise=0.0, instance=instance, seed=1):
      assert (row['y'], row['x']) == centers[(row['image_id'], row['gt_instance'])]
  # A box with a half-pixel center: [1, 2, 4, 7] -> ((1 + 4)/2, (2 + 7)/2) = (2.5, 4.5).
  rows = clicks.simulate_clicks(_single_image_dataset(10, 10, [[1, 2, 4, 7]], [DOG]), noise=0.0)
  assert [(r['y'], r['x']) for r in rows] == [(2.5, 4.5), (2.5, 4.5)]


def test_simulator_error_std_is_noise_times_sqrt_area():
  # 500 images 1000 x 1000, one cat each, side 20..119 px centered at (500, 500): with noise 0.1
  # the std is at most 0.1 x 119 = 12 px, so nothing is clipped. 1000 clicks per axis estimate the
  # std of error / sqrt(area) to about 1 / sqrt(2 x 1000) = 2.2 %; allow 10 %.
  noise = 0.1
  records = []
  for i in range(500):
    half = (20 + i % 100) / 2
    records.append(records_lib.make_record(
        f'{i:04d}', '/images/x.jpg', 1000, 1000, [[500 - half, 500 - half, 500 + half,
                                                   500 + half]], [CAT]))
  dataset = records_lib.Dataset('many', 's', ['cat', 'dog'], records)
  by_id = dataset.by_id()
  errors = []
  for row in clicks.simulate_clicks(dataset, num_annotators=2, noise=noise, seed=0):
    box = by_id[row['image_id']]['gt_boxes'][0]
    side = math.sqrt(float(box_lib.area(box)))
    errors.append(((row['y'] - 500) / side, (row['x'] - 500) / side))
  errors = np.array(errors)
  assert errors.shape == (1000, 2)
  std = errors.std(axis=0)
  print('per-axis std of error / sqrt(area):', std)
  np.testing.assert_allclose(std, [noise, noise], rtol=0.1)
  # The mean is 0 up to 0.1 / sqrt(1000) = 0.003 per axis; allow 0.015.
  assert np.all(np.abs(errors.mean(axis=0)) < 0.015)
  # The y and x errors are independent: correlation near 0.
  assert abs(np.corrcoef(errors[:, 0], errors[:, 1])[0, 1]) < 0.15


def test_simulator_first_annotator_does_not_depend_on_num_annotators():
  dataset = _tiny_dataset()
  one = clicks.simulate_clicks(dataset, num_annotators=1, seed=5)
  two = clicks.simulate_clicks(dataset, num_annotators=2, seed=5)
  assert len(one) == 4 and len(two) == 8
  assert [r for r in two if r['annotator'] == 'sim0'] == one


def test_simulator_pair_does_not_depend_on_other_images():
  dataset = _tiny_dataset()
  full = clicks.simulate_clicks(dataset, seed=2, instance='uniform')
  without_a = records_lib.Dataset('tiny', 'trainval', dataset.class_names, dataset.records[1:])
  partial = clicks.simulate_clicks(without_a, seed=2, instance='uniform')
  assert partial == [r for r in full if r['image_id'] != 'a']
  assert len(partial) == 4  # (b, cat) and (c, dog), 2 annotators each


def test_simulator_never_clicks_crowd_regions():
  # Cat: one small real box and a huge crowd region. Dog: only a crowd region, so the image has
  # no dog label and no dog click.
  dataset = _single_image_dataset(
      100, 100, [[0, 0, 10, 10]], [CAT],
      crowd_boxes=[[0, 0, 100, 100], [50, 50, 100, 100]], crowd_labels=[CAT, DOG])
  assert list(dataset.records[0]['image_labels']) == [CAT]
  for instance in clicks.INSTANCE_CHOICES:
    rows = clicks.simulate_clicks(dataset, num_annotators=2, noise=0.0, instance=instance)
    # Center of [0, 0, 10, 10] = (5, 5): the real instance, never the crowd region's (50, 50).
    assert [(r['class'], r['gt_instance'], r['y'], r['x']) for r in rows] == [
        ('cat', 0, 5.0, 5.0), ('cat', 0, 5.0, 5.0)]
  # Only crowd regions: no labels at all, no clicks.
  crowd_only = _single_image_dataset(100, 100, [], [], crowd_boxes=[[0, 0, 50, 50]],
                                     crowd_labels=[DOG])
  assert len(crowd_only.records[0]['image_labels']) == 0
  assert clicks.simulate_clicks(crowd_only) == []


def test_simulator_clips_into_the_image(tmp_path):
  # A 10 x 10 box in the top-left corner of a 100 x 100 image with noise 50: std 50 x 10 = 500 px,
  # so most clicks land outside and are clipped to 0 or 100.
  dataset = _single_image_dataset(100, 100, [[0, 0, 10, 10]], [CAT])
  rows = []
  for seed in range(20):
    rows += clicks.simulate_clicks(dataset, num_annotators=2, noise=50.0, seed=seed)
  values = np.array([(r['y'], r['x']) for r in rows])
  assert values.shape == (40, 2)
  assert values.min() >= 0.0 and values.max() <= 100.0
  assert (values == 0.0).any() and (values == 100.0).any()
  # Clipped clicks (including those exactly on the border) are valid file rows.
  path = str(tmp_path / 'clipped.jsonl')
  for seed in range(20):
    clicks.write_click_file(path, clicks.simulate_clicks(dataset, noise=50.0, seed=seed))
    assert clicks.read_click_file(path, dataset).num_clicks == 2


@pytest.fixture(scope='module')
def voc_trainval(voc_dev_root):
  return voc.load_voc(voc_dev_root, 'trainval')


def test_simulator_on_real_voc(voc_trainval, tmp_path):
  dataset = voc_trainval
  assert len(dataset.records) == 229
  pairs = records_lib.image_class_pairs(dataset)
  assert len(pairs) == 434  # from the data README
  rows = clicks.simulate_clicks(dataset, num_annotators=2, noise=0.1, instance='uniform', seed=0)
  assert len(rows) == 868  # 434 pairs x 2
  path = str(tmp_path / 'voc.jsonl')
  clicks.write_click_file(path, rows, header_extra={'simulator': {'seed': 0, 'noise': 0.1}})
  click_set = clicks.read_click_file(path, dataset)  # every row passes validation
  assert click_set.num_clicks == 868
  assert set(click_set.clicks) == set(pairs)
  assert all(len(v) == 2 for v in click_set.clicks.values())
  selected = clicks.select_clicks(click_set, pairs, 2)
  stats = clicks.click_statistics(selected, dataset)
  assert (stats['num_pairs'], stats['num_clicks']) == (434, 868)
  # Two annotators can only differ on pairs with 2+ instances, and uniform choice makes them
  # differ on about half of those.
  multi = sum(int(np.sum(r['gt_labels'] == c) > 1) for r in dataset.records
              for c in r['image_labels'])
  fraction = stats['num_pairs_different_instances'] / stats['num_pairs']
  print(f'uniform: annotators aim at different instances on {fraction:.3f} of the pairs '
        f'({multi} of 434 pairs have 2+ instances)')
  assert 0.1 < fraction < 0.35
  assert stats['num_pairs_different_instances'] <= multi
  # Mean |error| / sqrt(area) of a 2-D Gaussian with per-axis std 0.1 is 0.1 x sqrt(pi / 2)
  # = 0.125 (a bit less after clipping); allow 20 %.
  assert stats['mean_error_rel'] == pytest.approx(0.1 * math.sqrt(math.pi / 2), rel=0.2)
  assert stats['response_time_s_sum'] is None  # simulated clicks have no response time


def test_simulator_largest_on_real_voc_never_differs(voc_trainval):
  rows = clicks.simulate_clicks(voc_trainval, instance='largest', seed=0)
  for (image_id, _), pair_rows in _pairs_of(rows).items():
    assert pair_rows[0]['gt_instance'] == pair_rows[1]['gt_instance']
  # 000005 has 5 chairs; the largest is VOC (165, 264, 253, 372): 89 x 109 = 9701 px (the others:
  # 62 x 129 = 7998, 63 x 131 = 8253, 55 x 106 = 5830, 36 x 35 = 1260), index 1.
  assert [r['gt_instance'] for r in rows if r['image_id'] == '000005'] == [1, 1]


# ----------------------------------------------------------------------- statistics and hours


def test_click_statistics_hand_values():
  dataset = _tiny_dataset()
  selected = {
      # (a, cat): box [10, 20, 30, 40], center (20, 30), sqrt(area) = 20.
      #   (23, 34) is 5 px away (3-4-5) -> 5 / 20 = 0.25; (20, 30) -> 0.
      ('a', CAT): [_click(23, 34, 's0', gt_instance=0, response_time_s=1.0),
                   _click(20, 30, 's1', gt_instance=0, response_time_s=2.0)],
      # (b, cat): box 0 center (10, 10) -> 0; box 1 [40, 20, 80, 60], center (60, 40),
      #   sqrt(area) = 40: (36, 8) is sqrt(24^2 + 32^2) = 40 px away -> 1.0. Different instances.
      ('b', CAT): [_click(10, 10, 's0', gt_instance=0, response_time_s=1.5),
                   _click(36, 8, 's1', gt_instance=1, response_time_s=0.5)],
  }
  stats = clicks.click_statistics(selected, dataset)
  assert stats['num_pairs'] == 2
  assert stats['num_clicks'] == 4
  assert stats['num_pairs_different_instances'] == 1
  # (0.25 + 0 + 0 + 1.0) / 4 = 0.3125.
  assert stats['mean_error_rel'] == pytest.approx(0.3125)
  # 1.0 + 2.0 + 1.5 + 0.5 = 5.0 s.
  assert stats['response_time_s_sum'] == pytest.approx(5.0)


def test_click_statistics_without_gt_instance_or_times():
  dataset = _tiny_dataset()
  selected = {('a', CAT): [_click(20, 30, 'h0', response_time_s=1.0),
                           _click(20, 30, 'h1', response_time_s=None)],
              ('c', DOG): []}
  stats = clicks.click_statistics(selected, dataset)
  assert (stats['num_pairs'], stats['num_clicks']) == (2, 2)
  assert stats['num_pairs_different_instances'] is None
  assert stats['mean_error_rel'] is None
  assert stats['response_time_s_sum'] is None  # one click has no time
  empty = clicks.click_statistics({('a', CAT): []}, dataset)  # --clicks=0
  assert empty == {'num_pairs': 1, 'num_clicks': 0, 'num_pairs_different_instances': None,
                   'mean_error_rel': None, 'response_time_s_sum': None}


def test_annotation_hours_voc_trainval():
  hours = clicks.annotation_hours(868, 434)
  # 868 clicks x 1.87 s = 1623.16 s = 0.45088 h; 434 boxes x 34.5 s = 14973 s = 4.15917 h.
  assert hours['annotation_hours'] == pytest.approx(868 * 1.87 / 3600)
  assert hours['annotation_hours'] == pytest.approx(0.450878, abs=1e-6)
  assert hours['annotation_hours_full_supervision'] == pytest.approx(434 * 34.5 / 3600)
  assert hours['annotation_hours_full_supervision'] == pytest.approx(4.159167, abs=1e-6)
  assert (hours['seconds_per_click'], hours['seconds_per_box']) == (1.87, 34.5)


def test_annotation_hours_custom_constants_and_zero_clicks():
  # 10 clicks x 2 s = 20 s = 1/180 h; 5 boxes x 72 s = 360 s = 0.1 h.
  hours = clicks.annotation_hours(10, 5, seconds_per_click=2.0, seconds_per_box=72.0)
  assert hours['annotation_hours'] == pytest.approx(1 / 180)
  assert hours['annotation_hours_full_supervision'] == pytest.approx(0.1)
  assert clicks.annotation_hours(0, 434)['annotation_hours'] == 0.0
