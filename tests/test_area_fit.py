"""Tests of where mu(d) comes from: the shipped photo model, its noise rescaling, the overlap
check."""

import math

import numpy as np
import pytest

from click_supervision import area_fit
from click_supervision import config as config_lib
from click_supervision import cues as cues_lib
from click_supervision.datasets import records as records_lib
from click_supervision.errors import UserError


def test_shipped_model_is_rescaled_to_the_click_noise():
  at_ref, shipped = area_fit.shipped_model(shipped_noise := 0.1)
  assert shipped['noise'] == shipped_noise and len(shipped['image_fingerprints']) > 100
  assert 'python -m click_supervision.area_fit' in shipped['command']
  doubled, _ = area_fit.shipped_model(0.2)
  # Twice the noise: every distance doubles, so the same area needs a0 lower by a1 log 2.
  assert doubled.a1 == at_ref.a1 and doubled.sigma == at_ref.sigma
  assert doubled.a0 == pytest.approx(at_ref.a0 - at_ref.a1 * math.log(2))
  assert doubled.log_area(20.0) == pytest.approx(at_ref.log_area(10.0))
  with pytest.raises(cues_lib.AreaFitError):
    area_fit.shipped_model(0.0)


def test_the_same_model_as_a_fit_at_the_other_noise(tmp_path):
  # The rescaling rule checked against real fits: simulate at 0.1 and 0.2 on the same boxes.
  rng = np.random.default_rng(0)
  records = []
  for i in range(60):
    path = tmp_path / f'{i}.jpg'
    path.write_bytes(b'x' * (i + 1))
    size = rng.uniform(20, 150)
    y, x = rng.uniform(0, 300, 2)
    records.append(records_lib.make_record(f'im{i}', str(path), 500, 500,
                                           [[y, x, y + size, x + size * rng.uniform(0.5, 2)]],
                                           [0]))
  data = records_lib.Dataset('boxes', 'trainval', ['thing'], records)
  low, _, _ = area_fit.fit_on_dataset(data, 0.1, 'area', 0)
  high, _, _ = area_fit.fit_on_dataset(data, 0.2, 'area', 0)
  assert high.a1 == pytest.approx(low.a1, rel=0.02)
  assert high.a0 == pytest.approx(low.a0 - low.a1 * math.log(2), abs=0.05)


def test_overlap_is_by_real_path_or_by_id_and_size(tmp_path):
  (tmp_path / 'a').mkdir()
  (tmp_path / 'bb').mkdir()
  for folder in ('a', 'bb'):
    (tmp_path / folder / '1.jpg').write_bytes(b'same photo')
    (tmp_path / folder / '2.jpg').write_bytes(b'other photo ' + folder.encode() * len(folder))
  (tmp_path / 'link').symlink_to(tmp_path / 'a')

  def records(folder, ids):
    return [records_lib.make_record(i, str(tmp_path / folder / f'{i}.jpg'), 10, 10, [], [])
            for i in ids]

  # A copy of photo 1 (same id and size) and a symlinked path are overlaps; photo 2 differs.
  assert area_fit.overlap(records('a', ['1', '2']), records('bb', ['1', '2'])) == ['1']
  assert area_fit.overlap(records('a', ['2']), records('link', ['2'])) == ['2']
  assert area_fit.overlap([], records('bb', ['2']), [('2', len(b'other photo bbbb'))]) == ['2']


def test_photos_default_to_the_shipped_model_and_refuse_its_own_images(voc_dev_root, tmp_path):
  from click_supervision import datasets  # pylint: disable=g-import-not-at-top
  dataset = datasets.load_dataset(f'voc:{voc_dev_root}', 'trainval',
                                  cache_dir=str(tmp_path))
  with pytest.raises(UserError, match='shipped mu\\(d\\).*fitted on 229 of the localised'):
    area_fit.area_model_for_run('auto', dataset, config_lib.ClickConfig(), str(tmp_path))
