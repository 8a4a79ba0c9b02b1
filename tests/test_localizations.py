"""Tests of the localizations.jsonl writer and reader."""

import numpy as np
import pytest

from click_supervision import localizations
from click_supervision.errors import UserError

CLASSES = ['cat', 'dog']


def test_round_trip(tmp_path):
  selections = {('b', 1): {'box': np.array([1, 2, 30.256, 40], np.float32), 'index': 7,
                           'score': 0.5, 'iteration': 3, 'split': True},
                ('a', 0): {'box': np.array([0, 0, 10, 10], np.float32), 'index': 0,
                           'score': 0.0, 'iteration': 0, 'split': False}}
  path = str(tmp_path / 'localizations.jsonl')
  localizations.write_localizations(path, selections, CLASSES)
  lines = open(path).read().splitlines()
  assert lines[0].startswith('{"image_id": "a", "class": "cat"')  # Sorted by pair.
  back = localizations.read_localizations(path, CLASSES)
  assert set(back) == {('a', 0), ('b', 1)}
  np.testing.assert_allclose(back[('b', 1)]['box'], [1, 2, 30.26, 40])
  assert back[('b', 1)]['index'] == 7 and back[('b', 1)]['split'] is True


@pytest.mark.parametrize('line,problem', [
    ('not json', 'not JSON'),
    ('{"image_id": "a"}', 'expected the keys'),
    ('{"image_id": "a", "class": "cow", "box": [0, 0, 1, 1], "proposal_index": 0, "score": 0, '
     '"iteration": 0, "clicks_split": false}', "unknown class 'cow'"),
    ('{"image_id": "a", "class": "cat", "box": [0, 0, 0, 1], "proposal_index": 0, "score": 0, '
     '"iteration": 0, "clicks_split": false}', 'min < max'),
])
def test_bad_lines_name_file_and_line(tmp_path, line, problem):
  path = tmp_path / 'l.jsonl'
  good = ('{"image_id": "z", "class": "dog", "box": [0, 0, 5, 5], "proposal_index": 0, '
          '"score": 0, "iteration": 0, "clicks_split": false}')
  path.write_text(good + '\n' + line + '\n')
  with pytest.raises(UserError, match=f'{path}:2: .*{problem}'):
    localizations.read_localizations(str(path), CLASSES)


def test_duplicate_pair_is_refused(tmp_path):
  path = tmp_path / 'l.jsonl'
  row = ('{"image_id": "z", "class": "dog", "box": [0, 0, 5, 5], "proposal_index": 0, '
         '"score": 0, "iteration": 0, "clicks_split": false}')
  path.write_text(row + '\n' + row + '\n')
  with pytest.raises(UserError, match='a second box for z / dog'):
    localizations.read_localizations(str(path), CLASSES)
