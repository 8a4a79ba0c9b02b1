"""The CorLoc benchmark's run plan covers the click, noise, instance and ablation matrix with
valid driver flags."""

from click_supervision import mil
from flags import mil_flags

import helpers


def _load():
  return helpers.load_benchmark('corloc')


def test_plan_covers_clicks_noise_instances_and_ablations():
  corloc = _load()
  runs = corloc.planned_runs(corloc.GROUPS)
  names = [name for name, _, _ in runs]
  assert len(names) == len(set(names)) == 22
  main = {f['clicks'] for _, group, f in runs if group == 'main'}
  assert main == {0, 1, 2}
  noise = {(f['clicks'], f['click_noise']) for _, _, f in runs if f['click_instance'] == 'area'
           and 'cues' not in f and 'folds' not in f}
  assert noise == {(0, 0.1)} | {(c, n) for c in (1, 2) for n in (0.0, 0.05, 0.1, 0.2)}
  instances = {(f['clicks'], f['click_instance']) for _, _, f in runs}
  assert {(c, i) for c in (1, 2) for i in ('uniform', 'area', 'largest')} <= instances
  for _, _, run_flags in runs:
    # Every flag the plan passes exists in the driver, and every cue list is valid.
    assert all(name in mil_flags.flags.FLAGS for name in run_flags)
    if 'cues' in run_flags:
      cues = run_flags['cues'].split(',')
      assert set(cues) < set(mil.CUES) and len(cues) == len(mil.CUES) - 1


def test_targets_are_the_class_mean_targets_of_mil_at_scale():
  corloc = _load()
  assert corloc.TARGETS == {0: 0.42, 1: 0.67, 2: 0.72}
