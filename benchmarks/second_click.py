"""The adaptive second click against a random one: CorLoc against clicks per pair.

  python benchmarks/second_click.py --dataset=voc:../shared/data/voc2007-tune/VOCdevkit/VOC2007 \\
      --split=train --workdir=runs/second_click_tune_train --out=second_click.json

Every run is one `run_mil.py` process with its own workdir under --workdir and one shared
--cache_dir (`driver_runs`: a finished run is reused). Clicks are simulated (noise 0.1,
instance `area`, --seed). The runs:

  one            --clicks=1: fraction 0, and the run the need is read from
  two            --clicks=2: fraction 1 (a second click on every pair is exactly this run)
  need_F         --clicks=1 --second_click_from=one --second_click_fraction=F
  random_F_sS    the same with --second_click_choice=random --second_click_seed=S

for F in --fractions and S in --random_seeds. With --deep_mil every run also runs deep MIL and
both CorLocs are reported (deep MIL needs a few hundred images, `--deep_mil_min_images`).

Prints a Markdown table (fraction, clicks per pair, hours, adaptive CorLoc, random CorLoc mean and
standard deviation over the seeds, adaptive - random, and whether the gap exceeds the standard
deviation) and writes JSON with one entry per run.

--analyse runs only `one` and `two` and scores candidate needs without more MIL runs: a pair
asked again takes the two-click run's box, the others keep the one-click run's, and the CorLoc of
that mixture is computed for each fraction and each --size_weights value (and for a random choice
with the same seeds). It is a proxy (the mixed run's MIL also re-learns its appearance model from
the better boxes), used to choose the need's weight before the real runs check it (BUILD_NOTES).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver_runs  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
MIL_STAGES = 'data,clicks,proposals,features,mil'


def run(name, run_flags, args):
  """Runs (or reuses) one driver run; returns its results dict plus `wall_s`."""
  stages = MIL_STAGES + (',deep_mil' if args.deep_mil else '')
  flags = [f'--dataset={args.dataset}', f'--split={args.split}',
           f'--cache_dir={os.path.abspath(args.cache_dir)}', f'--stages={stages}',
           f'--seed={args.seed}', '--click_noise=0.1', '--click_instance=area']
  results = driver_runs.run_driver(name, flags + run_flags + args.extra,
                                   os.path.join(args.workdir, name))
  deep = results.get('corloc_deep_mil')
  print(f'{name}: CorLoc SVM MIL {results["corloc"]:.3f}' +
        (f', deep MIL {deep:.3f}' if deep is not None else '') +
        f', {results["clicks_per_pair"]:.2f} clicks per pair', flush=True)
  return results


def existing(run_dir):
  """The results of a finished run given by --one_run / --two_run."""
  with open(os.path.join(run_dir, 'results.json')) as f:
    results = json.load(f)
  if results.get('status') != 'complete':
    raise SystemExit(f'{run_dir}: not a complete run')
  results.setdefault('clicks_per_pair', results['click_stats']['num_clicks'] /
                     results['num_pairs'])
  return dict(results, wall_s=results['timings_s'].get('mil', 0.0), command=[])


def entry(name, fraction, choice, seed, results):
  return {'name': name, 'fraction': fraction, 'choice': choice, 'seed': seed,
          'corloc_mil': results['corloc'], 'corloc_deep_mil': results.get('corloc_deep_mil'),
          'clicks_per_pair': results['clicks_per_pair'],
          'annotation_hours': results['annotation_hours'], 'wall_s': round(results['wall_s'], 1),
          'command': results['command']}


def analyse(args, one_dir, two_dir):
  """The proxy table: CorLoc of one/two-click box mixtures chosen by each candidate need."""
  # pylint: disable=g-import-not-at-top
  from click_supervision import datasets
  from click_supervision import evaluation
  from click_supervision import localizations
  from click_supervision import second_click
  dataset = datasets.load_dataset(args.dataset, args.split, args.cache_dir, log=lambda _: None)
  one = localizations.read_localizations(os.path.join(one_dir, 'localizations.jsonl'),
                                         dataset.class_names)
  two = localizations.read_localizations(os.path.join(two_dir, 'localizations.jsonl'),
                                         dataset.class_names)
  sizes = {r['image_id']: (r['height'], r['width']) for r in dataset.records}

  def corloc(chosen):
    boxes = {p: (two[p] if p in chosen else one[p])['box'] for p in one}
    return evaluation.corloc(dataset.records, boxes, len(dataset.class_names))['corloc']

  rows = []
  for weight in args.size_weights:
    needs = second_click.needs_of_run(one, sizes, weight)
    rows.append((f'need, size weight {weight:g}', [
        corloc(set(second_click.choose_pairs(needs, f, 'need'))) for f in args.fractions]))
  area_only = {p: second_click.pair_need(1.0, 0.0, s['box'], *sizes[p[0]], 1.0)
               for p, s in one.items()}
  rows.append(('area only', [corloc(set(second_click.choose_pairs(area_only, f, 'need')))
                             for f in args.fractions]))
  randoms = np.array([[corloc(set(second_click.choose_pairs(area_only, f, 'random', s)))
                       for f in args.fractions] for s in args.random_seeds])
  print(f'\nProxy CorLoc (class mean): a pair asked again takes the two-click box; one click '
        f'{corloc(set()):.3f}, two {corloc(set(one)):.3f}')
  print('| choice | ' + ' | '.join(f'f = {f:g}' for f in args.fractions) + ' | mean |')
  print('|---|' + '---|' * (len(args.fractions) + 1))
  for name, values in rows:
    print(f'| {name} | ' + ' | '.join(f'{v:.3f}' for v in values) +
          f' | {np.mean(values):.4f} |')
  print(f'| random ({len(args.random_seeds)} seeds) | ' + ' | '.join(
      f'{m:.3f} +- {s:.3f}' for m, s in zip(randoms.mean(0), randoms.std(0))) +
        f' | {randoms.mean():.4f} |')
  return {'proxy': {name: values for name, values in rows},
          'proxy_random_mean': randoms.mean(0).tolist(), 'proxy_random_std': randoms.std(0).tolist()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True)
  parser.add_argument('--split', default='trainval')
  parser.add_argument('--seed', type=int, default=0, help='click simulation seed')
  parser.add_argument('--fractions', default='0.1,0.25,0.5,0.75')
  parser.add_argument('--random_seeds', default='0,1,2')
  parser.add_argument('--size_weights', default='0,0.25,0.5,1,2',
                      help='candidate need weights (--analyse)')
  parser.add_argument('--analyse', action='store_true', help='the proxy table only')
  parser.add_argument('--cache_dir', default=os.path.join('runs', 'second_click', 'cache'))
  parser.add_argument('--workdir', default=os.path.join('runs', 'second_click'))
  parser.add_argument('--deep_mil', action=argparse.BooleanOptionalAction, default=False)
  parser.add_argument('--one_run', default='', help='an existing one-click run to use as `one`')
  parser.add_argument('--two_run', default='', help='an existing two-click run to use as `two`')
  parser.add_argument('--out', default='')
  args, args.extra = parser.parse_known_args()
  args.fractions = [float(f) for f in args.fractions.split(',')]
  args.random_seeds = [int(s) for s in args.random_seeds.split(',')]
  args.size_weights = [float(w) for w in args.size_weights.split(',')]

  one_dir = os.path.abspath(args.one_run or os.path.join(args.workdir, 'one'))
  two_dir = os.path.abspath(args.two_run or os.path.join(args.workdir, 'two'))
  entries = [entry('one', 0.0, 'none', None, existing(one_dir) if args.one_run else
                   run('one', ['--clicks=1'], args)),
             entry('two', 1.0, 'all', None, existing(two_dir) if args.two_run else
                   run('two', ['--clicks=2'], args))]
  report = {'dataset': args.dataset, 'split': args.split, 'seed': args.seed,
            'click_noise': 0.1, 'click_instance': 'area'}
  if args.analyse:
    report.update(analyse(args, one_dir, two_dir))
  else:
    for fraction in args.fractions:
      base = ['--clicks=1', f'--second_click_from={one_dir}',
              f'--second_click_fraction={fraction}']
      name = f'need_{fraction:g}'
      entries.append(entry(name, fraction, 'need', None,
                           run(name, base + ['--second_click_choice=need'], args)))
      for seed in args.random_seeds:
        name = f'random_{fraction:g}_s{seed}'
        entries.append(entry(name, fraction, 'random', seed, run(
            name, base + ['--second_click_choice=random', f'--second_click_seed={seed}'], args)))
    print_table(entries, 'corloc_mil', 'SVM MIL')
    if args.deep_mil:
      print_table(entries, 'corloc_deep_mil', 'deep MIL')
  report['runs'] = entries
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(report, f, indent=1)


def print_table(entries, key, stage):
  print(f'\n{stage} CorLoc (class mean; simulated clicks, noise 0.1, instance area)\n'
        '| fraction | clicks per pair | hours | adaptive | random (mean +- std) | '
        'adaptive - random | beats by > std |\n|---|---|---|---|---|---|---|')
  by_fraction = {}
  for e in entries:
    by_fraction.setdefault(e['fraction'], []).append(e)
  for fraction in sorted(by_fraction):
    group = by_fraction[fraction]
    adaptive = [e for e in group if e['choice'] in ('need', 'none', 'all')][0]
    randoms = np.array([e[key] for e in group if e['choice'] == 'random'])
    line = (f'| {fraction:g} | {adaptive["clicks_per_pair"]:.2f} | '
            f'{adaptive["annotation_hours"]:.2f} | {adaptive[key]:.3f} | ')
    if len(randoms):
      gap = adaptive[key] - randoms.mean()
      line += (f'{randoms.mean():.3f} +- {randoms.std():.3f} | {gap:+.3f} | '
               f'{"yes" if gap > randoms.std() else "no"} |')
    else:
      line += '- | - | - |'
    print(line)


if __name__ == '__main__':
  main()
