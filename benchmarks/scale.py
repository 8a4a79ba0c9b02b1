"""How the pipeline scales with the number of images: wall time and peak memory per stage, cache
bytes per image, at 125 / 250 / 500 / 1,000 images of the tuning set, extrapolated to VOC2007
trainval (5,011 images) and COCO train2017 (118,287).

  python benchmarks/scale.py --dataset=voc:../shared/data/voc2007-tune/VOCdevkit/VOC2007 \\
      --sizes=125,250,500,1000 --workdir=runs/scale --out=scale.json

Each size is a nested subset (the first N ids of the split file) exposed as a VOC folder of
symbolic links with its own split file, run cold (its own cache, unless --cache_dir) with the
real driver in three
processes, so each stage's peak resident memory is measured on its own (GNU `time`'s maximum
RSS): `data,clicks,proposals`, then `features`, then `mil`. Clicks are simulated (two, noise 0.1,
instance `area`, seed 0) unless other driver flags are passed after `--`.
"""

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = (('proposals', 'data,clicks,proposals'), ('features', 'features'), ('mil', 'mil'))
EXTRAPOLATE = {'VOC2007 trainval': 5011, 'COCO train2017': 118287}


def subset_folder(voc_root, split, size, target):
  """A VOC folder at `target` whose split `scale<size>` is the first `size` ids of `split`."""
  with open(os.path.join(voc_root, 'ImageSets', 'Main', f'{split}.txt')) as f:
    ids = [line.split()[0] for line in f if line.strip()]
  if size > len(ids):
    raise SystemExit(f'{split} has {len(ids)} images, fewer than {size}')
  os.makedirs(os.path.join(target, 'ImageSets', 'Main'), exist_ok=True)
  for name in ('Annotations', 'JPEGImages'):
    link = os.path.join(target, name)
    if not os.path.exists(link):
      os.symlink(os.path.abspath(os.path.join(voc_root, name)), link)
  with open(os.path.join(target, 'ImageSets', 'Main', f'scale{size}.txt'), 'w') as f:
    f.write('\n'.join(ids[:size]) + '\n')
  return f'scale{size}'


def run_step(command, log_path):
  """Runs the driver under GNU time; returns peak RSS in bytes."""
  rss_path = log_path + '.rss'
  with open(log_path, 'w') as log:
    process = subprocess.run(['/usr/bin/time', '-f', '%M', '-o', rss_path] + command, cwd=REPO,
                             stdout=log, stderr=subprocess.STDOUT)
  if process.returncode != 0:
    raise SystemExit(f'failed (exit {process.returncode}); see {log_path}')
  with open(rss_path) as f:
    return int(f.read().strip().splitlines()[-1]) * 1024


def folder_bytes(path):
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True, help='voc:PATH of a VOCdevkit year folder')
  parser.add_argument('--split', default='trainval')
  parser.add_argument('--sizes', default='125,250,500,1000')
  parser.add_argument('--workdir', default=os.path.join('runs', 'scale'))
  parser.add_argument('--cache_dir', default='',
                      help='one cache for every size (default: a cold cache per size); a size '
                           'whose images are already cached reports 0 s for those stages')
  parser.add_argument('--out', default='')
  args, extra = parser.parse_known_args()
  if not args.dataset.startswith('voc:'):
    parser.error('--dataset must be voc:PATH')
  voc_root = os.path.abspath(args.dataset[len('voc:'):])
  workdir = os.path.abspath(args.workdir)
  rows = []
  for size in sorted(int(s) for s in args.sizes.split(',')):
    folder = os.path.join(workdir, f'voc{size}')
    split = subset_folder(voc_root, args.split, size, folder)
    cache = os.path.abspath(args.cache_dir) if args.cache_dir else os.path.join(workdir,
                                                                                f'cache{size}')
    run_dir = os.path.join(workdir, f'run{size}')
    row = {'images': size, 'wall_s': {}, 'peak_rss_bytes': {}}
    for stage, stages in STEPS:
      command = [sys.executable, 'run_mil.py', f'--dataset=voc:{folder}', f'--split={split}',
                 f'--cache_dir={cache}', f'--workdir={run_dir}', f'--stages={stages}'] + extra
      row['peak_rss_bytes'][stage] = run_step(command, os.path.join(workdir, f'{stage}{size}.log'))
      with open(os.path.join(run_dir, 'results.json')) as f:
        results = json.load(f)
      row['wall_s'][stage] = results['timings_s'].get(stage, 0.0)
      if stage in ('proposals', 'features'):
        row.setdefault('images_computed', {})[stage] = results[stage]['images_computed']
      print(f'{size} images, {stage}: {row["wall_s"][stage]:.0f} s, peak RSS '
            f'{row["peak_rss_bytes"][stage] / 2**30:.2f} GiB', flush=True)
    row['corloc'] = results.get('corloc')
    row['num_pairs'] = results.get('num_pairs')
    row['cache_bytes_per_image'] = {
        stage: folder_bytes(results[stage]['cache']) / size for stage in ('proposals', 'features')}
    rows.append(row)

  print('\n| images | pairs | proposals s | features s | MIL s | peak RSS proposals / features / '
        'MIL (GiB) | cache MB per image | CorLoc |\n|---|---|---|---|---|---|---|---|')
  for r in rows:
    rss = ' / '.join(f'{r["peak_rss_bytes"][s] / 2**30:.2f}' for s, _ in STEPS)
    cache_mb = sum(r['cache_bytes_per_image'].values()) / 1e6
    print(f"| {r['images']} | {r['num_pairs']} | {r['wall_s']['proposals']:.0f} | "
          f"{r['wall_s']['features']:.0f} | {r['wall_s']['mil']:.0f} | {rss} | {cache_mb:.3f} | "
          f"{r['corloc'] if r['corloc'] is None else round(r['corloc'], 3)} |")
  if len(rows) >= 2:
    small, large = rows[-2], rows[-1]
    ratio = large['peak_rss_bytes']['mil'] / small['peak_rss_bytes']['mil']
    print(f"\nMIL peak RSS at {large['images']} images / at {small['images']}: {ratio:.2f} "
          f"(target <= 1.2)")
    # Per stage, the largest size that computed it cold (a reused cache says nothing of time).
    per_image = {}
    for stage, _ in STEPS:
      cold = [r for r in rows if stage == 'mil' or
              r.get('images_computed', {}).get(stage) == r['images']]
      if cold:
        per_image[stage] = cold[-1]['wall_s'][stage] / cold[-1]['images']
    cache_per_image = sum(rows[-1]['cache_bytes_per_image'].values())
    for name, count in EXTRAPOLATE.items():
      hours = ', '.join(f'{stage} {seconds * count / 3600:.1f} h'
                        for stage, seconds in per_image.items())
      print(f'{name} ({count} images), linear in images from the largest cold run of each '
            f'stage: {hours} on this machine; cache {cache_per_image * count / 1e9:.1f} GB')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'dataset': args.dataset, 'split': args.split, 'extra_flags': extra,
                 'rows': rows}, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
