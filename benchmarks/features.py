"""RoI feature speed and memory: one trunk pass per image vs R-CNN-style crops.

  python benchmarks/features.py --dataset=voc:../shared/data/voc2007-dev/VOCdevkit/VOC2007 \
      --split=trainval --out=features.json

1. Proposals for every image (the proposals stage, cached in --cache_dir).
2. The features stage (trunk maps) into a fresh temporary cache, then every proposal's RoI
   feature pooled from the maps as MIL reads them: seconds per image (trunk, pooling, image
   load) and the process's peak resident memory (`ru_maxrss`) for the whole set.
3. On --rcnn_images images, the same proposals computed R-CNN style: each box cropped from the
   image, resized to 224 x 224 and passed through the trunk on its own (batches of
   --rcnn_batch crops, global average of the trunk map), timed on --rcnn_boxes boxes per image
   and scaled to the image's proposal count; speed-up = R-CNN seconds / our seconds per image.
Prints a table and writes JSON.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf

from click_supervision import backbones
from click_supervision import bags as bags_lib
from click_supervision import config as config_lib
from click_supervision import datasets
from click_supervision import precompute
from click_supervision import proposals as proposals_lib
from click_supervision.datasets import images as images_lib


def rcnn_seconds(trunk, image, boxes, batch_size):
  """Seconds to compute R-CNN-style features of `boxes` (crop, resize 224, forward each)."""
  forward = tf.function(lambda x: tf.reduce_mean(trunk(x, training=False), axis=[1, 2]),
                        input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
  pixels = tf.constant(image[None], tf.float32)
  height, width = image.shape[:2]
  normalized = boxes / np.array([height, width, height, width], np.float32)
  forward(tf.zeros([batch_size, 224, 224, 3]))  # Trace outside the timing.
  start = time.perf_counter()
  for i in range(0, len(boxes), batch_size):
    chunk = normalized[i:i + batch_size]
    crops = tf.image.crop_and_resize(pixels, chunk, tf.zeros(len(chunk), tf.int32), [224, 224])
    forward(crops).numpy()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True)
  parser.add_argument('--split', default='trainval')
  parser.add_argument('--max_images', type=int, default=0)
  parser.add_argument('--trunk', default='efficientnet_lite0')
  parser.add_argument('--weights', default='imagenet')
  parser.add_argument('--short_side', type=int, default=precompute.FeatureConfig.short_side)
  parser.add_argument('--rcnn_images', type=int, default=3)
  parser.add_argument('--rcnn_boxes', type=int, default=128,
                      help='boxes per image timed R-CNN style (time scaled to all proposals)')
  parser.add_argument('--rcnn_batch', type=int, default=32)
  parser.add_argument('--cache_dir', default=config_lib.default_cache_dir())
  parser.add_argument('--out', default='')
  args = parser.parse_args()

  dataset = datasets.load_dataset(args.dataset, args.split, cache_dir=args.cache_dir)
  if args.max_images:
    dataset.records = dataset.records[:args.max_images]
  proposals, _ = precompute.compute_proposals(dataset, proposals_lib.ProposalConfig(),
                                              args.cache_dir)
  feature_config = precompute.FeatureConfig(trunk=args.trunk, weights=args.weights,
                                            short_side=args.short_side)
  trunk = backbones.build_trunk(args.trunk, args.weights)
  with tempfile.TemporaryDirectory() as fresh:
    start = time.time()
    maps, info = precompute.compute_trunk_maps(dataset, feature_config, fresh, trunk=trunk)
    pooling_start = time.time()
    for _ in bags_lib.TrunkMapBags(dataset.records, proposals, maps,
                                   pool_size=feature_config.pool_size):
      pass
    pooling = (time.time() - pooling_start) / len(dataset.records)
    wall = time.time() - start
    feature_bytes = sum(os.path.getsize(maps.shard_path(s)) for s in range(maps.num_shards))
  peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2 ** 30
  ours = dict(info['sec_per_image'], pooling=pooling)
  ours_total = sum(ours.values())
  boxes_per_image = float(np.mean([len(p['boxes']) for _, p in proposals.iter_images()]))

  rcnn_trunk = backbones.build_trunk(args.trunk, args.weights)
  rcnn = []
  for record in dataset.records[:args.rcnn_images]:
    boxes = proposals.read_shard(proposals.shard_of(record['image_id']))[record['image_id']]['boxes']
    timed = boxes[:args.rcnn_boxes]
    seconds = rcnn_seconds(rcnn_trunk, images_lib.load_image(record['path']), timed,
                           args.rcnn_batch)
    rcnn.append({'image_id': record['image_id'], 'num_boxes': len(boxes),
                 'timed_boxes': len(timed), 'seconds_timed': seconds,
                 'seconds_all_boxes': seconds * len(boxes) / max(len(timed), 1)})
  rcnn_sec = float(np.mean([r['seconds_all_boxes'] for r in rcnn])) if rcnn else float('nan')

  result = {
      'dataset': args.dataset, 'split': args.split, 'num_images': len(dataset.records),
      'trunk': args.trunk, 'weights': args.weights, 'short_side': args.short_side,
      'mean_boxes_per_image': boxes_per_image,
      'sec_per_image': ours_total, 'sec_per_image_parts': ours, 'wall_s': wall,
      'peak_rss_gib': peak_gib, 'features_on_disk_gib': feature_bytes / 2 ** 30,
      'rcnn_sec_per_image': rcnn_sec, 'rcnn': rcnn,
      'speedup': rcnn_sec / ours_total if ours_total else float('nan'),
  }
  print(f"\n| images | boxes/img | ours s/img (trunk, pooling, load) | R-CNN s/img | speed-up | "
        f"peak RSS GiB | features on disk GiB |\n|---|---|---|---|---|---|---|\n"
        f"| {len(dataset.records)} | {boxes_per_image:.0f} | {ours_total:.3f} ("
        f"{ours.get('trunk', 0):.3f}, {ours.get('pooling', 0):.3f}, {ours.get('load', 0):.3f}) | "
        f"{rcnn_sec:.1f} | {result['speedup']:.0f}x | {peak_gib:.2f} | "
        f"{result['features_on_disk_gib']:.2f} |")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  main()
