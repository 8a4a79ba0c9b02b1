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
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver_runs  # pylint: disable=g-import-not-at-top,wrong-import-position

ALL_STAGES = 'data,clicks,proposals,features,mil,deep_mil,detector'
REGIMES = ('clicks0', 'clicks1', 'clicks2', 'boxes')


def run_one(name, run_flags, args):
  """Runs (or reuses) one driver run; returns its results dict plus `wall_s` and `command`."""
  flags = [f'--dataset={args.dataset}', f'--split={args.split}',
           f'--test_split={args.test_split}', f'--cache_dir={os.path.abspath(args.cache_dir)}',
           f'--seed={args.seed}', f'--stages={ALL_STAGES}']
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
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True)
  parser.add_argument('--split', default='train')
  parser.add_argument('--test_dataset', default='')
  parser.add_argument('--test_split', default='val')
  parser.add_argument('--regimes', default=','.join(REGIMES))
  parser.add_argument('--seed', type=int, default=0, help='click simulation seed')
  parser.add_argument('--cache_dir', default=os.path.join('runs', 'detector_benchmark', 'cache'))
  parser.add_argument('--workdir', default=os.path.join('runs', 'detector_benchmark'))
  parser.add_argument('--out', default='')
  args, args.extra = parser.parse_known_args()
  regimes = [r.strip() for r in args.regimes.split(',') if r.strip()]
  unknown = sorted(set(regimes) - set(REGIMES))
  if unknown:
    parser.error(f'unknown regime {unknown[0]!r}; regimes are {",".join(REGIMES)}')

  entries = []
  for name in regimes:
    if name == 'boxes':
      run_flags = {'supervision': 'boxes'}
    else:
      run_flags = {'clicks': int(name[-1]), 'click_noise': 0.1, 'click_instance': 'area'}
    results = run_one(name, run_flags, args)
    entries.append({
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
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'dataset': args.dataset, 'split': args.split, 'test_split': args.test_split,
                 'entries': entries}, f, indent=1)


if __name__ == '__main__':
  main()
