"""Reads a COCO instances JSON (and its image folder) into plain records.

`--dataset=coco:ANNOTATIONS_JSON[:IMAGES_DIR]`. Without IMAGES_DIR the images are looked for where
the official archives put them: for `.../annotations/instances_train2017.json`, in
`.../train2017/` or `.../images/train2017/`.

Conventions decided here:
  * official category ids (1-90 with gaps for COCO-2017) map to contiguous class indices in
    increasing id order; `class_names` are the categories' names in that order;
  * `iscrowd` annotations go to `crowd_boxes` / `crowd_labels`: they are neither positives (no
    image-level label from them alone, no clicks on them) nor misses in evaluation;
  * images without annotations are kept: they are negatives for every class;
  * COCO `bbox` is `[x, y, w, h]` in the same continuous pixel frame as ours (converted by
    `boxes.from_coco_xywh`). Boxes with no area (w or h <= 0) cannot be localised: they are
    dropped, counted in `Dataset.skipped` and logged.
"""

import json
import os

import numpy as np

from click_supervision import boxes as box_lib
from click_supervision.datasets import records as records_lib
from click_supervision.errors import DataError

# A box may stick out of the image by this many pixels (float rounding in COCO); it is clipped.
BOX_OVERHANG_TOLERANCE_PX = 2.0


def parse_spec(spec):
  """Splits `ANNOTATIONS_JSON[:IMAGES_DIR]` (the part after `coco:`) into its two paths."""
  marker = '.json:'
  if marker in spec:
    json_path, images_dir = spec.split(marker, 1)
    return json_path + '.json', images_dir or None
  return spec, None


def default_images_dir(json_path):
  """Candidate image folders for an official-layout annotations file."""
  stem = os.path.splitext(os.path.basename(json_path))[0]  # instances_train2017
  split_name = stem.split('_', 1)[1] if '_' in stem else stem
  top = os.path.dirname(os.path.dirname(os.path.abspath(json_path)))
  return [os.path.join(top, split_name), os.path.join(top, 'images', split_name)]


def _require(entry, key, kinds, json_path, what):
  if key not in entry:
    raise DataError(json_path, f'{what} has no "{key}" field')
  value = entry[key]
  if not isinstance(value, kinds) or isinstance(value, bool):
    raise DataError(json_path, f'{what} field "{key}" has the wrong type: {value!r}')
  return value


def load_coco(json_path, images_dir=None, name=None, split=None, skip_bad_records=False,
              log=print):
  """Reads a COCO instances JSON.

  Args:
    json_path: the annotations file.
    images_dir: folder of the images (default: `default_images_dir`).
    name: dataset name recorded in the result (default `coco:<json_path>`).
    split: split name recorded in the result (default: derived from the file name, e.g.
      `train2017`); the JSON itself defines which images belong to it.
    skip_bad_records: when True, an image whose file is missing is skipped, counted in
      `Dataset.skipped` and logged, instead of raising.
    log: callable taking one str.
  Returns:
    `records.Dataset`, records sorted by image id (as a string of the integer id).
  Raises:
    DataError naming the file and the problem.
  """
  json_path = os.path.abspath(json_path)
  if not os.path.isfile(json_path):
    raise DataError(json_path, 'COCO annotation file not found')
  try:
    with open(json_path, 'rb') as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(json_path, f'not valid JSON ({e})') from None
  if not isinstance(data, dict):
    raise DataError(json_path, 'top level is not a JSON object')
  for key in ('images', 'annotations', 'categories'):
    if not isinstance(data.get(key), list):
      raise DataError(json_path, f'no "{key}" list (is this an instances_*.json file?)')

  if images_dir is None:
    candidates = default_images_dir(json_path)
    images_dir = next((c for c in candidates if os.path.isdir(c)), None)
    if images_dir is None:
      raise DataError(json_path, f'no image folder found at {candidates}; pass it as '
                      f'--dataset=coco:{json_path}:IMAGES_DIR')
  images_dir = os.path.abspath(images_dir)
  if not os.path.isdir(images_dir):
    raise DataError(images_dir, 'image folder not found')

  categories = []
  for i, category in enumerate(data['categories']):
    what = f'categories[{i}]'
    categories.append((_require(category, 'id', int, json_path, what),
                       _require(category, 'name', str, json_path, what)))
  categories.sort()
  if len({c for c, _ in categories}) != len(categories):
    raise DataError(json_path, 'duplicate category ids')
  class_index = {category_id: i for i, (category_id, _) in enumerate(categories)}
  class_names = [n for _, n in categories]

  images = {}
  for i, image in enumerate(data['images']):
    what = f'images[{i}]'
    image_id = _require(image, 'id', int, json_path, what)
    if image_id in images:
      raise DataError(json_path, f'{what}: image id {image_id} listed twice')
    images[image_id] = {
        'file_name': _require(image, 'file_name', str, json_path, what),
        'height': _require(image, 'height', int, json_path, what),
        'width': _require(image, 'width', int, json_path, what),
        'boxes': [], 'labels': [], 'crowd_boxes': [], 'crowd_labels': []}

  skipped = []
  for i, annotation in enumerate(data['annotations']):
    what = f'annotations[{i}] (id {annotation.get("id")})'
    image_id = _require(annotation, 'image_id', int, json_path, what)
    category_id = _require(annotation, 'category_id', int, json_path, what)
    bbox = _require(annotation, 'bbox', list, json_path, what)
    iscrowd = annotation.get('iscrowd', 0)
    if iscrowd not in (0, 1):
      raise DataError(json_path, f'{what}: iscrowd must be 0 or 1, got {iscrowd!r}')
    if image_id not in images:
      raise DataError(json_path, f'{what}: unknown image_id {image_id}')
    if category_id not in class_index:
      raise DataError(json_path, f'{what}: unknown category_id {category_id}')
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 for v in bbox):
      raise DataError(json_path, f'{what}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}')
    image = images[image_id]
    box = box_lib.from_coco_xywh(bbox)[0]
    tol = BOX_OVERHANG_TOLERANCE_PX
    if box[0] < -tol or box[1] < -tol or box[2] > image['height'] + tol or (
        box[3] > image['width'] + tol):
      raise DataError(json_path, f'{what}: bbox {bbox} lies outside the '
                      f'{image["width"]} x {image["height"]} image {image_id}')
    box = box_lib.clip_to_image(box[None], image['height'], image['width'])[0]
    if not box_lib.is_valid(box[None])[0]:
      skipped.append({'path': json_path, 'problem': f'{what}: empty bbox {bbox} dropped'})
      log(f'skipped {json_path}: {what}: empty bbox {bbox}')
      continue
    if iscrowd:
      image['crowd_boxes'].append(box)
      image['crowd_labels'].append(class_index[category_id])
    else:
      image['boxes'].append(box)
      image['labels'].append(class_index[category_id])

  records = []
  for image_id, image in images.items():
    path = os.path.join(images_dir, image['file_name'])
    if not os.path.isfile(path):
      error = DataError(path, f'image id {image_id} of {os.path.basename(json_path)} has no image '
                        f'file')
      if not skip_bad_records:
        raise error
      skipped.append({'path': error.path, 'problem': error.problem})
      log(f'skipped {error}')
      continue
    records.append(records_lib.make_record(
        image_id=str(image_id), path=path, height=image['height'], width=image['width'],
        gt_boxes=np.array(image['boxes'], np.float32).reshape(-1, 4), gt_labels=image['labels'],
        crowd_boxes=np.array(image['crowd_boxes'], np.float32).reshape(-1, 4),
        crowd_labels=image['crowd_labels']))
  records.sort(key=lambda r: r['image_id'])
  if split is None:
    stem = os.path.splitext(os.path.basename(json_path))[0]
    split = stem.split('_', 1)[1] if '_' in stem else stem
  return records_lib.Dataset(name=name or f'coco:{json_path}', split=split,
                             class_names=class_names, records=records, skipped=skipped)
