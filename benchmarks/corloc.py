"""CorLoc of MIL with 0, 1 and 2 simulated clicks: click noise, instance choice and cue ablations.

  python benchmarks/corloc.py --dataset=voc:../shared/data/voc2007-dev/VOCdevkit/VOC2007 \\
      --split=trainval --out=corloc.json

Every run is one `run_mil.py` process (the real driver, so its wall time includes start-up, data
and click stages) with its own workdir under --workdir and one shared --cache_dir: the first run
pays for proposals and features, the others read them. Runs, all with simulated clicks
(`--seed`, default 0):

  main       clicks 0, 1, 2 at noise 0.1, instance `area` (the targets of "MIL at scale", on the
             tuning set)
  noise      clicks 1, 2 at noise 0, 0.05, 0.2 (instance `area`; 0 clicks does not depend on it)
  instance   clicks 1, 2 with instance `uniform` and `largest` (noise 0.1)
  ablations  at noise 0.1 / `area`, one cue switched off at a time: objectness (0 clicks),
             box_center and click_init (1 click), box_center, box_area and split_instances
             (2 clicks), and multi-folding (--folds=1) for 0, 1 and 2 clicks

With --deep_mil (the default) every run also runs the `deep_mil` stage (the detector as MIL's
appearance model, as the paper does) and its CorLoc is the run's result; the SVM MIL CorLoc it
starts from is printed beside it. --nodeep_mil runs SVM MIL alone.

CorLoc is the mean over classes of the per-class CorLoc (as papers report it); the pooled
fraction of pairs is printed beside it. mu(d) of the box-area cue comes from --area_fit_data,
by default the driver's `auto` (the model shipped for photos, fitted on the 229-photo VOC sample;
for that sample itself pass other photos, e.g. tinycoco: `--area_fit_data=coco:...`).

A finished run (results.json complete, same command) is not rerun: delete its workdir to redo it.
Prints a Markdown table and writes JSON with one entry per run (flags, corloc (the final one:
after deep MIL when it ran), corloc_mil, corloc_deep_mil, corloc_non_difficult, corloc_cue_only,
corloc_per_iteration, timings_s, wall_s).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver_runs  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ('main', 'noise', 'instance', 'ablations')
# Class-mean CorLoc targets of "MIL at scale" on the tuning set, at noise 0.1 / `area`.
TARGETS = {0: 0.42, 1: 0.67, 2: 0.72}
MIL_STAGES = 'data,clicks,proposals,features,mil'


def all_cues_but(cue):
  sys.path.insert(0, REPO)
  from click_supervision import mil  # pylint: disable=g-import-not-at-top
  return ','.join(c for c in mil.CUES if c != cue)


def planned_runs(groups):
  """(name, group, flags dict) of every run of the chosen groups."""
  runs = []
  base = {'click_noise': 0.1, 'click_instance': 'area'}
  if 'main' in groups:
    for clicks in (0, 1, 2):
      runs.append((f'clicks{clicks}', 'main', dict(base, clicks=clicks)))
  if 'noise' in groups:
    for noise in (0.0, 0.05, 0.2):
      for clicks in (1, 2):
        runs.append((f'clicks{clicks}_noise{noise}', 'noise',
                     dict(base, clicks=clicks, click_noise=noise)))
  if 'instance' in groups:
    for instance in ('uniform', 'largest'):
      for clicks in (1, 2):
        runs.append((f'clicks{clicks}_{instance}', 'instance',
                     dict(base, clicks=clicks, click_instance=instance)))
  if 'ablations' in groups:
    for clicks, cue in ((0, 'objectness'), (1, 'box_center'), (1, 'click_init'),
                        (2, 'box_center'), (2, 'box_area'), (2, 'split_instances')):
      runs.append((f'clicks{clicks}_no_{cue}', 'ablations',
                   dict(base, clicks=clicks, cues=all_cues_but(cue))))
    for clicks in (0, 1, 2):
      runs.append((f'clicks{clicks}_one_fold', 'ablations', dict(base, clicks=clicks, folds=1)))
  return runs


def run_one(name, run_flags, args):
  """Runs (or reuses) one driver run; returns its results dict plus `wall_s` and `command`."""
  stages = MIL_STAGES + (',deep_mil' if args.deep_mil else '')
  flags = [f'--dataset={args.dataset}', f'--split={args.split}',
           f'--cache_dir={os.path.abspath(args.cache_dir)}', f'--stages={stages}']
  results = driver_runs.run_driver(
      name, flags + [f'--seed={args.seed}', f'--area_fit_data={args.area_fit_data}'] +
      [f'--{k}={v}' for k, v in sorted(run_flags.items())] + args.extra,
      os.path.join(args.workdir, name))
  deep = (f'deep MIL {results["corloc_deep_mil"]:.3f}, ' if 'corloc_deep_mil' in results else '')
  print(f'{name}: CorLoc {deep}SVM MIL {results["corloc"]:.3f} (cue-only '
        f'{results["corloc_cue_only"]:.3f}) in {results["wall_s"]:.0f} s', flush=True)
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True)
  parser.add_argument('--split', default='trainval')
  parser.add_argument('--groups', default=','.join(GROUPS),
                      help=f'comma-separated subset of {",".join(GROUPS)}')
  parser.add_argument('--seed', type=int, default=0, help='click simulation seed')
  parser.add_argument('--cache_dir', default=os.path.join('runs', 'corloc_benchmark', 'cache'))
  parser.add_argument('--workdir', default=os.path.join('runs', 'corloc_benchmark'))
  parser.add_argument('--area_fit_data', default='auto')
  parser.add_argument('--deep_mil', action=argparse.BooleanOptionalAction, default=True,
                      help='also run the deep_mil stage and report its CorLoc (default: yes)')
  parser.add_argument('--out', default='')
  args, args.extra = parser.parse_known_args()
  groups = [g.strip() for g in args.groups.split(',') if g.strip()]
  unknown = sorted(set(groups) - set(GROUPS))
  if unknown:
    parser.error(f'unknown group {unknown[0]!r}; groups are {",".join(GROUPS)}')

  entries = []
  for name, group, run_flags in planned_runs(groups):
    results = run_one(name, run_flags, args)
    entries.append({
        'name': name, 'group': group, 'flags': run_flags, 'command': results['command'],
        'corloc': results.get('corloc_deep_mil', results['corloc']),
        'corloc_mil': results['corloc'], 'corloc_deep_mil': results.get('corloc_deep_mil'),
        'corloc_deep_mil_per_iteration': results.get('corloc_deep_mil_per_iteration'),
        'changes_per_iteration_deep_mil': results.get('changes_per_iteration_deep_mil'),
        'corloc_non_difficult': results['corloc_non_difficult'],
        'corloc_pooled': results['corloc_pooled'], 'corloc_cue_only': results['corloc_cue_only'],
        'corloc_per_iteration': results['corloc_per_iteration'],
        'changes_per_iteration': results['changes_per_iteration'],
        'num_pairs': results['num_pairs'], 'num_split_pairs': results.get('num_split_pairs'),
        'trunk': results['trunk'], 'weights': results['weights'],
        'timings_s': results['timings_s'], 'wall_s': round(results['wall_s'], 1)})

  print('\n| run | clicks | noise | instance | CorLoc (class mean) | SVM MIL | SVM MIL pooled | '
        'SVM MIL non-difficult | cue-only | SVM MIL per iteration | changes per iteration | '
        'wall s (proposals, features, mil, deep_mil) |'
        '\n|---|---|---|---|---|---|---|---|---|---|---|---|')
  for e in entries:
    f, t = e['flags'], e['timings_s']
    print(f"| {e['name']} | {f['clicks']} | {f['click_noise']} | {f['click_instance']} | "
          f"{e['corloc']:.3f} | {e['corloc_mil']:.3f} | {e['corloc_pooled']:.3f} | "
          f"{e['corloc_non_difficult']:.3f} | {e['corloc_cue_only']:.3f} | "
          f"{' '.join(f'{c:.3f}' for c in e['corloc_per_iteration'])} | "
          f"{' '.join(str(c) for c in e['changes_per_iteration'][1:])} | {e['wall_s']:.0f} ("
          f"{t.get('proposals', 0):.0f}, {t.get('features', 0):.0f}, {t.get('mil', 0):.0f}, "
          f"{t.get('deep_mil', 0):.0f}) |")
  main_runs = {e['flags']['clicks']: e for e in entries if e['group'] == 'main'}
  if len(main_runs) == 3:
    corlocs = [main_runs[c]['corloc'] for c in (0, 1, 2)]
    checks = [f"clicks {c}: {main_runs[c]['corloc']:.3f} >= {TARGETS[c]} "
              f"{'yes' if main_runs[c]['corloc'] >= TARGETS[c] else 'NO'}, above cue-only "
              f"{'yes' if main_runs[c]['corloc'] > main_runs[c]['corloc_cue_only'] else 'NO'}"
              for c in (0, 1, 2)]
    increasing = corlocs[0] < corlocs[1] and corlocs[1] + 0.03 <= corlocs[2]
    print('\ntargets (noise 0.1, area): ' + '; '.join(checks) +
          f"; increasing (+3 points from 1 to 2 clicks) {'yes' if increasing else 'NO'}; three runs "
          f"{sum(main_runs[c]['wall_s'] for c in (0, 1, 2)) / 60:.1f} min")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'dataset': args.dataset, 'split': args.split, 'seed': args.seed,
                 'deep_mil': args.deep_mil,
                 'area_fit_data': args.area_fit_data,
                 'clicks_simulated': True, 'extra_flags': args.extra, 'runs': entries}, f,
                indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
