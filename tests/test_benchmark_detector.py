"""The detector benchmark's seed plan: further detector seeds retrain only the final detector,
on the first seed's localisations, and the table's mean, spread and ratio are the hand values."""

import json
import os
import sys

import pytest

import helpers


def _load():
  return helpers.load_benchmark('detector')


def test_seed_summary_hand_values():
  bench = _load()
  summary = bench.seed_summary([{'name': 'clicks2', 'maps': [0.4, 0.5, 0.6]},
                                {'name': 'boxes', 'maps': [0.5, 0.5]}])
  assert summary['clicks2']['mean'] == pytest.approx(0.5)
  assert summary['clicks2']['std'] == pytest.approx((2 * 0.01 / 3) ** 0.5)
  assert summary['clicks2']['of_boxes'] == pytest.approx(1.0)
  assert summary['boxes']['std'] == 0.0
  assert bench.seed_summary([{'name': 'clicks1', 'maps': [0.3]}])['clicks1']['of_boxes'] is None


def test_further_seeds_retrain_only_the_detector_on_the_first_localisations(
    tmp_path, monkeypatch, capsys):
  bench = _load()
  calls = []

  def fake_run_driver(name, flags, workdir):
    calls.append((name, flags, workdir))
    os.makedirs(workdir, exist_ok=True)
    if '--stages=' + bench.ALL_STAGES in flags and '--supervision=boxes' not in flags:
      with open(os.path.join(workdir, 'localizations.jsonl'), 'w') as f:
        f.write(json.dumps({'name': name}) + '\n')
    seed = int(next(f for f in flags if f.startswith('--detector_seed=')).split('=')[1])
    return {'map': 0.4 + 0.01 * seed + (0.1 if name.startswith('boxes') else 0.0),
            'timings_s': {}, 'annotation_hours': 1.0, 'map_per_class': {},
            'evaluation': {'nms_iou': 0.3}, 'wall_s': 1.0, 'command': flags}

  monkeypatch.setattr(bench.driver_runs, 'run_driver', fake_run_driver)
  out = tmp_path / 'table.json'
  monkeypatch.setattr(sys, 'argv', [
      'detector.py', '--dataset=synthetic', f'--workdir={tmp_path}', '--regimes=clicks2,boxes',
      '--detector_seeds=0,1,2', f'--out={out}', '--detector_epochs=2'])
  bench.main()

  assert [c[0] for c in calls] == ['clicks2', 'clicks2_detseed1', 'clicks2_detseed2', 'boxes',
                                   'boxes_detseed1', 'boxes_detseed2']
  for name, flags, workdir in calls:
    first = '_detseed' not in name
    stages = bench.ALL_STAGES if first else bench.DETECTOR_STAGES
    assert f'--stages={stages}' in flags and '--detector_epochs=2' in flags
    assert f'--detector_seed={0 if first else int(name[-1])}' in flags
    if not first and name.startswith('clicks2'):
      with open(os.path.join(workdir, 'localizations.jsonl')) as f:
        assert json.loads(f.readline()) == {'name': 'clicks2'}  # the first seed's file
  table = json.loads(out.read_text())['seed_summary']
  assert table['clicks2']['maps'] == pytest.approx([0.40, 0.41, 0.42])
  assert table['clicks2']['of_boxes'] == pytest.approx(0.41 / 0.51)
  printed = capsys.readouterr().out
  assert '| clicks2 | 0.400 / 0.410 / 0.420 | 0.410 +- 0.008 | 0.804 |' in printed
  assert 'evaluation: {"nms_iou": 0.3}' in printed


def test_detector_seed_in_the_extra_flags_is_refused_with_seeds(tmp_path, monkeypatch):
  bench = _load()

  def no_run(*args):
    raise AssertionError(f'no run may start: {args}')

  monkeypatch.setattr(bench.driver_runs, 'run_driver', no_run)
  monkeypatch.setattr(sys, 'argv', ['detector.py', '--dataset=synthetic', f'--workdir={tmp_path}',
                                    '--detector_seeds=0,1', '--detector_seed=3'])
  with pytest.raises(SystemExit):  # --detector_seed is not read as an abbreviated --detector_seeds
    bench.main()
