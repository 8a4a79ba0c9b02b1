"""The plain image record every data source yields, and the dataset that holds them.

A record is a plain dict (detectron2 style), one per image:

  image_id:     str, unique within the dataset (VOC file stem, COCO image id as a string).
  path:         str, absolute path of the image file (JPEG or PNG) on disk.
  height:       int, image height in pixels (checked against the decoded image).
  width:        int, image width in pixels.
  image_labels: int32 [L], sorted class indices present in the image (classes with at least one
                non-crowd instance, difficult instances included, as VOC's image-level labels).
  gt_boxes:     float32 [N, 4], `[ymin, xmin, ymax, xmax]` in pixels (see `click_supervision.boxes`).
  gt_labels:    int32 [N], class index of each box, in `[0, num_classes)`.
  difficult:    bool [N], VOC's `difficult` flag (always False for COCO).
  crowd_boxes:  float32 [M, 4], COCO `iscrowd` regions: neither positives nor misses.
  crowd_labels: int32 [M].

Ground truth (`gt_*`, `difficult`, `crowd_*`) is used only to evaluate and to simulate clicks,
never by the learner; `image_labels` is the weak supervision the learner sees.
"""

import dataclasses

import numpy as np


def make_record(image_id, path, height, width, gt_boxes, gt_labels, difficult=None,
                crowd_boxes=None, crowd_labels=None):
  """Builds a record with the documented dtypes and derives `image_labels` from the boxes."""
  gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
  gt_labels = np.asarray(gt_labels, np.int32).reshape(-1)
  if difficult is None:
    difficult = np.zeros(len(gt_labels), bool)
  difficult = np.asarray(difficult, bool).reshape(-1)
  crowd_boxes = np.zeros((0, 4), np.float32) if crowd_boxes is None else (
      np.asarray(crowd_boxes, np.float32).reshape(-1, 4))
  crowd_labels = np.zeros(0, np.int32) if crowd_labels is None else (
      np.asarray(crowd_labels, np.int32).reshape(-1))
  if not len(gt_boxes) == len(gt_labels) == len(difficult):
    raise ValueError(f'{image_id}: {len(gt_boxes)} boxes, {len(gt_labels)} labels and '
                     f'{len(difficult)} difficult flags')
  if len(crowd_boxes) != len(crowd_labels):
    raise ValueError(f'{image_id}: {len(crowd_boxes)} crowd boxes, {len(crowd_labels)} labels')
  return {
      'image_id': str(image_id),
      'path': str(path),
      'height': int(height),
      'width': int(width),
      'image_labels': np.unique(gt_labels).astype(np.int32),
      'gt_boxes': gt_boxes,
      'gt_labels': gt_labels,
      'difficult': difficult,
      'crowd_boxes': crowd_boxes,
      'crowd_labels': crowd_labels,
  }


@dataclasses.dataclass
class Dataset:
  """One split of one data source.

  Attributes:
    name: the `--dataset` value it came from, e.g. `voc:/data/VOC2007` or `synthetic`.
    split: the split name, e.g. `trainval`.
    class_names: list of str; class index i is `class_names[i]`.
    records: list of record dicts (module docstring), sorted by `image_id`.
    skipped: list of `{'path', 'problem'}` dicts for inputs skipped under `skip_bad_records`.
  """
  name: str
  split: str
  class_names: list
  records: list
  skipped: list = dataclasses.field(default_factory=list)

  @property
  def num_classes(self):
    return len(self.class_names)

  def class_index(self, class_name):
    """Index of `class_name`, or -1 when the dataset has no such class."""
    try:
      return self.class_names.index(class_name)
    except ValueError:
      return -1

  def by_id(self):
    """Dict image_id -> record."""
    return {r['image_id']: r for r in self.records}


def image_class_pairs(dataset):
  """All positive (image, class) pairs: list of `(image_id, class_index)`, in record order."""
  return [(r['image_id'], int(c)) for r in dataset.records for c in r['image_labels']]


def summarize(dataset):
  """Counts for `data_summary.json`.

  Returns a dict with `num_images`, `num_objects` (non-crowd, difficult included), `num_crowd`,
  `num_difficult`, `num_image_class_pairs` (non-crowd), `num_image_class_pairs_non_difficult`
  (pairs with at least one non-difficult instance), `num_skipped`, and `classes`: per class name
  `{'images': positive images, 'objects': non-crowd instances, 'difficult': difficult instances}`.
  """
  per_class = {name: {'images': 0, 'objects': 0, 'difficult': 0} for name in dataset.class_names}
  num_pairs_non_difficult = 0
  for record in dataset.records:
    for label in record['image_labels']:
      per_class[dataset.class_names[label]]['images'] += 1
      of_class = record['gt_labels'] == label
      num_pairs_non_difficult += bool(np.any(of_class & ~record['difficult']))
    for label, difficult in zip(record['gt_labels'], record['difficult']):
      per_class[dataset.class_names[label]]['objects'] += 1
      per_class[dataset.class_names[label]]['difficult'] += int(difficult)
  return {
      'dataset': dataset.name,
      'split': dataset.split,
      'num_classes': dataset.num_classes,
      'num_images': len(dataset.records),
      'num_objects': int(sum(len(r['gt_labels']) for r in dataset.records)),
      'num_crowd': int(sum(len(r['crowd_labels']) for r in dataset.records)),
      'num_difficult': int(sum(int(r['difficult'].sum()) for r in dataset.records)),
      'num_image_class_pairs': int(sum(len(r['image_labels']) for r in dataset.records)),
      'num_image_class_pairs_non_difficult': num_pairs_non_difficult,
      'num_skipped': len(dataset.skipped),
      'classes': per_class,
  }
