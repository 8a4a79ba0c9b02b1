"""The detector from 0, 1 and 2 simulated clicks against drawn boxes: CorLoc after SVM MIL and
after deep MIL, mAP, wall time per stage and annotation hours (the issue "The detector").

  python benchmarks/detector.py \\
      --dataset=voc:../shared/data/voc2007-tune/VOCdevkit/VOC2007 --split=train \\
      --test_split=val --cache_dir=/work/cache --workdir=runs/detector_tune

Each regime is one `run_mil.py` process with all stages (`data,clicks,proposals,features,mil,
deep_mil,detector`) and its own workdir; one shared --cache_dir. Regimes: `clicks0`,
`clicks1`, `clicks2` (simulated at noise 0.1, instance `area`, --seed) and `boxes`
(`--supervision=boxes`: one drawn box per class per image; no clicks, no MIL). Extra flags after
the known ones go to every run (e.g. `--detector_epochs=4`). A finished run (results.json
complete, same command) is reused: delete its workdir to redo it. Prints a Markdown table and
writes JSON (--out).

`--detector_seeds=0,1,2` (issue 23, item 5): the first seed runs every stage; each further seed
retrains and tests only the final detector (`--detector_seed=S`) on the first seed's
localisations (copied into `<regime>_detseed<S>`), so the spread is the detector's alone. The
table then gives each seed's mAP, mean +- standard deviation (population, as numpy's `std`) and
each regime's mean over the drawn-box mean.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver_runs  # pylint: disable=g-import-not-at-top,wrong-import-position

ALL_STAGES = 'data,clicks,proposals,features,mil,deep_mil,detector'
# A further detector seed starts from the first seed's localisations: no MIL, no deep MIL.
DETECTOR_STAGES = 'data,clicks,proposals,features,detector'
REGIMES = ('clicks0', 'clicks1', 'clicks2', 'boxes')


def regime_flags(name):
  """The driver flags that make regime `name` (`clicksN` or `boxes`)."""
  if name == 'boxes':
    return {'supervision': 'boxes'}
  return {'clicks': int(name[-1]), 'click_noise': 0.1, 'click_instance': 'area'}


def seed_summary(entries):
  """mAP over detector seeds per regime, and each regime's mean over the drawn-box mean.

  Args:
    entries: dicts with `name` (regime) and `maps` (list of float, one per detector seed).
  Returns:
    {regime: {'maps', 'mean', 'std', 'of_boxes'}}; `of_boxes` is None without a `boxes` entry.
  """
  summary = {e['name']: {'maps': list(e['maps']), 'mean': float(np.mean(e['maps'])),
                         'std': float(np.std(e['maps']))} for e in entries}
  boxes = summary.get('boxes', {}).get('mean')
  for row in summary.values():
    row['of_boxes'] = row['mean'] / boxes if boxes else None
  return summary


def run_one(name, run_flags, args, stages=ALL_STAGES):
  """Runs (or reuses) one driver run; returns its results dict plus `wall_s` and `command`."""
  flags = [f'--dataset={args.dataset}', f'--split={args.split}',
           f'--test_split={args.test_split}', f'--cache_dir={os.path.abspath(args.cache_dir)}',
           f'--seed={args.seed}', f'--stages={stages}']
  if args.test_dataset:
    flags.append(f'--test_dataset={args.test_dataset}')
  results = driver_runs.run_driver(
      name, flags + [f'--{k}={v}' for k, v in sorted(run_flags.items())] + args.extra,
      os.path.join(args.workdir, name))
  print(f'{name}: mAP {results["map"]:.3f} in {results["wall_s"]:.0f} s', flush=True)
  return results


def _fmt(value):
  return '-' if value is None else f'{value:.3f}'


def main():
  # No abbreviations: --detector_seed=S among the driver's flags must not read as --detector_seeds.
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], allow_abbrev=False)
  parser.add_argument('--dataset', required=True)
  parser.add_argument('--split', default='train')
  parser.add_argument('--test_dataset', default='')
  parser.add_argument('--test_split', default='val')
  parser.add_argument('--regimes', default=','.join(REGIMES))
  parser.add_argument('--seed', type=int, default=0, help='click simulation seed')
  parser.add_argument('--cache_dir', default=os.path.join('runs', 'detector_benchmark', 'cache'))
  parser.add_argument('--workdir', default=os.path.join('runs', 'detector_benchmark'))
  parser.add_argument('--out', default='')
  parser.add_argument('--detector_seeds', default='',
                      help='comma-separated detector seeds (empty: the driver\'s default seed '
                      'only); the first runs every stage, the others the final detector only')
  args, args.extra = parser.parse_known_args()
  detector_seeds = [int(s) for s in args.detector_seeds.split(',') if s.strip()]
  if any(a.startswith('--detector_seed=') for a in args.extra) and detector_seeds:
    parser.error('give the seeds with --detector_seeds, not --detector_seed')
  regimes = [r.strip() for r in args.regimes.split(',') if r.strip()]
  unknown = sorted(set(regimes) - set(REGIMES))
  if unknown:
    parser.error(f'unknown regime {unknown[0]!r}; regimes are {",".join(REGIMES)}')

  entries = []
  for name in regimes:
    run_flags = regime_flags(name)
    if detector_seeds:
      run_flags['detector_seed'] = detector_seeds[0]
    results = run_one(name, run_flags, args)
    maps = [results['map']]
    for seed in detector_seeds[1:]:
      seed_run = f'{name}_detseed{seed}'
      os.makedirs(os.path.join(args.workdir, seed_run), exist_ok=True)
      if name != 'boxes':  # the detector retrains on the first seed's localisations
        shutil.copyfile(os.path.join(args.workdir, name, 'localizations.jsonl'),
                        os.path.join(args.workdir, seed_run, 'localizations.jsonl'))
      maps.append(run_one(seed_run, dict(run_flags, detector_seed=seed), args,
                          DETECTOR_STAGES)['map'])
    entries.append({
        'maps': maps, 'detector_seeds': detector_seeds or None,
        'evaluation': results.get('evaluation'),
        'name': name, 'flags': run_flags, 'command': results['command'],
        'corloc_mil': results.get('corloc'), 'corloc_deep_mil': results.get('corloc_deep_mil'),
        'corloc_deep_mil_per_iteration': results.get('corloc_deep_mil_per_iteration'),
        'map': results['map'], 'map_per_class': results['map_per_class'],
        'annotation_hours': results['annotation_hours'], 'timings_s': results['timings_s'],
        'wall_s': results['wall_s']})

  print(f'\n{args.dataset} {args.split} -> {args.test_dataset or args.dataset} '
        f'{args.test_split}; clicks simulated at noise 0.1, instance area, seed {args.seed}\n')
  print('| regime | CorLoc after MIL | after deep MIL | mAP | annotation h | mil s | deep_mil s '
        '| detector s | wall s |')
  print('|---|---|---|---|---|---|---|---|---|')
  for e in entries:
    t = e['timings_s']
    print(f'| {e["name"]} | {_fmt(e["corloc_mil"])} | {_fmt(e["corloc_deep_mil"])} | '
          f'{e["map"]:.3f} | {e["annotation_hours"]:.2f} | {t.get("mil", 0):.0f} | '
          f'{t.get("deep_mil", 0):.0f} | {t.get("detector", 0):.0f} | {e["wall_s"]:.0f} |')
  summary = seed_summary(entries)
  if len(detector_seeds) > 1:
    print(f'\nmAP over detector seeds {",".join(map(str, detector_seeds))} (population std)\n')
    print('| regime | mAP per seed | mean +- std | of drawn boxes |')
    print('|---|---|---|---|')
    for name, row in summary.items():
      ratio = '-' if row['of_boxes'] is None else f'{row["of_boxes"]:.3f}'
      print(f'| {name} | {" / ".join(f"{m:.3f}" for m in row["maps"])} | '
            f'{row["mean"]:.3f} +- {row["std"]:.3f} | {ratio} |')
  if entries and entries[0]['evaluation']:
    print(f'\nevaluation: {json.dumps(entries[0]["evaluation"], sort_keys=True)}')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'dataset': args.dataset, 'split': args.split, 'test_split': args.test_split,
                 'entries': entries, 'seed_summary': summary}, f, indent=1)


if __name__ == '__main__':
  main()
