"""Proposal recall and speed: the fraction of ground-truth boxes covered by the top-k proposals.

For every image of the split, runs `proposals.ProposalGenerator` and records, per ground-truth box
(non-crowd; difficult ones included in `recall_*`, excluded in `recall_*_non_difficult`), the best
IoU reached by the top-k proposals (k = 100, 500, 1000, 2000; proposals sorted by descending
objectness). Recall at IoU t = fraction of ground-truth boxes whose best IoU >= t. Prints a table
and writes JSON:

  recall_iou{50,70}_top{100,500,1000,2000}[ _non_difficult]
  recall_iou50_top1000_by_area   recall of objects < 1000, 1000-3000, 3000-10000, >= 10000 px^2
  mean_boxes_per_image
  sec_per_image                  edges + thinning + boxes, wall clock, mean over images
  sec_edges, sec_thinning, sec_boxes
  cpu_sec_per_image              process CPU time (all threads) per image, same parts
  load_average_start / _end      1-minute load average (timings are only meaningful when low)
  config, num_images, num_objects, num_objects_non_difficult, command

The first image's work includes building HED and tracing its `tf.function`; a warm-up call on a
small blank image happens before timing starts.

  python benchmarks/proposals.py \\
      --dataset=voc:../shared/data/voc2007-dev/VOCdevkit/VOC2007 --split=trainval \\
      --out=proposals_trainval.json
"""

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tqdm

from click_supervision import boxes as box_lib
from click_supervision import config as config_lib
from click_supervision import datasets
from click_supervision import proposals as proposals_lib
from click_supervision.datasets import images as images_lib

TOP_K = (100, 500, 1000, 2000)
IOU_THRESHOLDS = (0.5, 0.7)
AREA_BINS = (0, 1000, 3000, 10000, float('inf'))


def _add_config_flags(parser):
  """One flag per `ProposalConfig` field, defaulting to the library's default."""
  for field in dataclasses.fields(proposals_lib.ProposalConfig):
    default = field.default
    if field.name == 'hed_scales':
      parser.add_argument('--hed_scales', default=','.join(str(s) for s in default),
                          help='comma-separated multiples of the image size, averaged')
    else:
      parser.add_argument(f'--{field.name}', type=type(default), default=default,
                          help=f'ProposalConfig.{field.name} (default {default})')


def _config_from_args(args):
  values = {}
  for field in dataclasses.fields(proposals_lib.ProposalConfig):
    value = getattr(args, field.name)
    if field.name == 'hed_scales':
      value = tuple(float(s) for s in value.split(','))
    values[field.name] = value
  return proposals_lib.ProposalConfig(**values)


def best_ious(gt_boxes, boxes):
  """Best IoU of each ground-truth box over the top-k boxes, per k: dict k -> float [G]."""
  iou = box_lib.pairwise_iou(gt_boxes, boxes)
  out = {}
  for k in TOP_K:
    top = iou[:, :k]
    out[k] = top.max(axis=1) if top.shape[1] else np.zeros(len(gt_boxes), np.float32)
  return out


def summarize(per_image, config, num_images, command, load_start, load_end):
  """Recall and timing summary from per-image results (see module docstring for the keys)."""
  difficult = np.concatenate([r['difficult'] for r in per_image])
  areas = np.concatenate([r['areas'] for r in per_image])
  result = {}
  for t in IOU_THRESHOLDS:
    for k in TOP_K:
      best = np.concatenate([r['best'][k] for r in per_image])
      name = f'recall_iou{round(t * 100)}_top{k}'
      result[name] = float(np.mean(best >= t)) if len(best) else float('nan')
      result[name + '_non_difficult'] = (float(np.mean(best[~difficult] >= t))
                                         if (~difficult).any() else float('nan'))
  best = np.concatenate([r['best'][1000] for r in per_image])
  by_area = {}
  for low, high in zip(AREA_BINS[:-1], AREA_BINS[1:]):
    in_bin = (areas >= low) & (areas < high)
    label = f'{low:g}-{high:g}' if np.isfinite(high) else f'>={low:g}'
    by_area[label] = {'recall': float(np.mean(best[in_bin] >= 0.5)) if in_bin.any() else None,
                      'objects': int(in_bin.sum())}
  result['recall_iou50_top1000_by_area'] = by_area
  result['mean_boxes_per_image'] = float(np.mean([r['num_boxes'] for r in per_image]))
  for part in ('edges', 'thinning', 'boxes'):
    result[f'sec_{part}'] = float(np.mean([r['timings'][part] for r in per_image]))
  result['sec_per_image'] = result['sec_edges'] + result['sec_thinning'] + result['sec_boxes']
  result['cpu_sec_per_image'] = float(np.mean([r['cpu'] for r in per_image]))
  result['load_average_start'] = load_start
  result['load_average_end'] = load_end
  result['num_images'] = num_images
  result['num_objects'] = int(len(difficult))
  result['num_objects_non_difficult'] = int((~difficult).sum())
  result['config'] = dataclasses.asdict(config)
  result['command'] = command
  return result


def print_table(result):
  print(f"\n{'recall':28s}" + ''.join(f'{"top " + str(k):>10s}' for k in TOP_K))
  for suffix, label in (('', 'all'), ('_non_difficult', 'non-difficult')):
    for t in IOU_THRESHOLDS:
      row = f'IoU >= {t:.1f}, {label:17s}'
      row += ''.join(f'{result[f"recall_iou{round(t * 100)}_top{k}{suffix}"]:10.3f}' for k in TOP_K)
      print(row)
  print('R@0.5 top 1000 by area: ' + ', '.join(
      f'{k} px2: {v["recall"]:.3f} ({v["objects"]})' for k, v in
      result['recall_iou50_top1000_by_area'].items() if v['recall'] is not None))
  print(f"{result['num_images']} images, {result['num_objects']} objects "
        f"({result['num_objects_non_difficult']} non-difficult), "
        f"{result['mean_boxes_per_image']:.0f} boxes/image")
  print(f"s/image {result['sec_per_image']:.3f} (edges {result['sec_edges']:.3f}, thinning "
        f"{result['sec_thinning']:.3f}, boxes {result['sec_boxes']:.3f}); CPU s/image "
        f"{result['cpu_sec_per_image']:.3f}; load average {result['load_average_start']:.2f} -> "
        f"{result['load_average_end']:.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True, help=datasets.DATASET_HELP)
  parser.add_argument('--split', default='trainval')
  parser.add_argument('--max_images', type=int, default=0, help='first N images (0 = all)')
  parser.add_argument('--cache_dir', default=config_lib.default_cache_dir())
  parser.add_argument('--out', default='', help='JSON output file')
  _add_config_flags(parser)
  args = parser.parse_args()
  config = _config_from_args(args)

  dataset = datasets.load_dataset(args.dataset, args.split, cache_dir=args.cache_dir)
  records = dataset.records[:args.max_images] if args.max_images else dataset.records
  generator = proposals_lib.ProposalGenerator(config)
  if generator.precomputed is not None:
    generator.precomputed.check_records(records)
  else:  # Warm-up: builds HED and traces its tf.function outside the timed region.
    generator(np.full((64, 64, 3), 128, np.uint8))

  load_start = os.getloadavg()[0]
  per_image = []
  for record in tqdm.tqdm(records, desc='proposals', unit='img', mininterval=2.0):
    image = images_lib.load_image(record['path'])
    cpu_start = time.process_time()
    boxes, _, timings = generator(image, record['image_id'])
    cpu = time.process_time() - cpu_start
    per_image.append({'best': best_ious(record['gt_boxes'], boxes),
                      'difficult': record['difficult'], 'areas': box_lib.area(record['gt_boxes']),
                      'num_boxes': len(boxes), 'timings': timings, 'cpu': cpu})
  result = summarize(per_image, config, len(records), ' '.join(sys.argv), load_start,
                     os.getloadavg()[0])
  print_table(result)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
