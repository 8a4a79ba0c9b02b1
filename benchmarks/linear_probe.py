"""Linear probe of RoI features: how much do a trunk's features know about object classes?

For each trunk/weights choice: RoI features (the same `FeatureExtractor` the features stage uses)
of the non-difficult ground-truth boxes of the `train` images, split by image into two halves
(seeded); a multinomial logistic regression on L2-normalised features is fitted on one half (C
chosen by 3-fold cross-validation on that half) and tested on the other. Prints a table, writes JSON.

  python benchmarks/linear_probe.py --dataset=voc:../shared/data/voc2007-dev/VOCdevkit/VOC2007 \
      --split=train --trunks=efficientnet_lite0:imagenet,vgg16:hed,vgg16:none --out=probe.json
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
from sklearn.linear_model import LogisticRegressionCV
import tqdm

from click_supervision import backbones
from click_supervision import config as config_lib
from click_supervision import features as features_lib
from click_supervision.datasets import images as images_lib
from click_supervision import datasets


def gt_features(extractor, records):
  """RoI features and labels of every non-difficult ground-truth box: ([N, D], [N], image index)."""
  feats, labels, image_index = [], [], []
  for i, record in enumerate(tqdm.tqdm(records, desc='features', unit='img', mininterval=2)):
    keep = ~record['difficult']
    if not keep.any():
      continue
    f, _ = extractor(images_lib.load_image(record['path']), record['gt_boxes'][keep])
    feats.append(f)
    labels.append(record['gt_labels'][keep])
    image_index.append(np.full(int(keep.sum()), i))
  return np.concatenate(feats), np.concatenate(labels), np.concatenate(image_index)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True)
  parser.add_argument('--split', default='train')
  parser.add_argument('--trunks', default='efficientnet_lite0:imagenet,vgg16:hed,vgg16:none')
  parser.add_argument('--short_sides', default='600,native',
                      help='image short sides to try, comma separated ("native" = no resize)')
  parser.add_argument('--max_images', type=int, default=0)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--cache_dir', default=config_lib.default_cache_dir())
  parser.add_argument('--out', default='')
  args = parser.parse_args()

  dataset = datasets.load_dataset(args.dataset, args.split, cache_dir=args.cache_dir)
  records = dataset.records[:args.max_images] if args.max_images else dataset.records
  # Split by image, so boxes of one photo never sit on both sides.
  test_images = set(np.random.default_rng(args.seed).permutation(len(records))[:len(records) // 2])

  rows = []
  for spec in args.trunks.split(','):
    name, weights = spec.split(':')
    trunk = backbones.build_trunk(name, weights)
    for short_side in args.short_sides.split(','):
      extractor = features_lib.FeatureExtractor(
          trunk, short_side=None if short_side == 'native' else int(short_side))
      start = time.time()
      x, y, image_index = gt_features(extractor, records)
      seconds = (time.time() - start) / len(records)
      x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
      test = np.isin(image_index, list(test_images))
      classifier = LogisticRegressionCV(Cs=[0.1, 1, 10, 100], cv=3, max_iter=2000)
      classifier.fit(x[~test], y[~test])
      accuracy = float((classifier.predict(x[test]) == y[test]).mean())
      majority = float((y[test] == np.bincount(y[~test]).argmax()).mean())
      rows.append({'trunk': name, 'weights': weights, 'short_side': short_side,
                   'feature_dim': int(x.shape[1]), 'num_train': int((~test).sum()),
                   'num_test': int(test.sum()), 'accuracy': accuracy,
                   'majority_baseline': majority, 'C': float(classifier.C_[0]),
                   'sec_per_image': seconds})
      print(f'{name:>18} {weights:>8} short side {short_side:>6}: accuracy {accuracy:.3f} '
            f'(majority {majority:.3f}, {int((~test).sum())} train / {int(test.sum())} test '
            f'boxes, {x.shape[1]}-d, {seconds:.2f} s/img)', flush=True)

  print('\n| trunk | weights | short side | accuracy | majority | s/img |\n|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['trunk']} | {r['weights']} | {r['short_side']} | {r['accuracy']:.3f} | "
          f"{r['majority_baseline']:.3f} | {r['sec_per_image']:.2f} |")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'dataset': args.dataset, 'split': args.split, 'seed': args.seed, 'rows': rows}, f,
                indent=2)


if __name__ == '__main__':
  main()
