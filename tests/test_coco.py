"""Tests of the COCO JSON reader on the real tiny sample and on hand-made files."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from click_supervision import datasets
from click_supervision.datasets import coco
from click_supervision.datasets import records as records_lib
from click_supervision.errors import DataError


def test_real_tinycoco_train_counts(tinycoco_dir):
  json_path = os.path.join(tinycoco_dir, 'annotations', 'instances_train2017.json')
  dataset = coco.load_coco(json_path, os.path.join(tinycoco_dir, 'images', 'train2017'))
  summary = records_lib.summarize(dataset)
  assert (summary['num_images'], summary['num_objects'], summary['num_crowd'],
          summary['num_image_class_pairs']) == (32, 284, 4, 100)
  assert dataset.num_classes == 80
  assert dataset.class_names[0] == 'person' and dataset.class_names[-1] == 'toothbrush'
  assert dataset.split == 'train2017'


def test_real_tinycoco_default_image_folder(tinycoco_dir):
  # Without IMAGES_DIR the reader finds images/train2017 beside annotations/.
  spec = 'coco:' + os.path.join(tinycoco_dir, 'annotations', 'instances_val2017.json')
  dataset = datasets.load_dataset(spec, 'ignored', cache_dir=None)
  summary = records_lib.summarize(dataset)
  assert (summary['num_images'], summary['num_objects'], summary['num_crowd']) == (6, 135, 1)


def test_parse_spec():
  assert coco.parse_spec('/a/b.json') == ('/a/b.json', None)
  assert coco.parse_spec('/a/b.json:/imgs') == ('/a/b.json', '/imgs')


def _write_coco(tmp_path, annotations, images=None, categories=None):
  image_dir = tmp_path / 'imgs'
  image_dir.mkdir(exist_ok=True)
  images = images if images is not None else [
      {'id': 7, 'file_name': 'seven.jpg', 'height': 30, 'width': 40},
      {'id': 3, 'file_name': 'three.jpg', 'height': 20, 'width': 20}]
  for image in images:
    if 'file_name' in image and 'height' in image and 'width' in image:
      Image.new('RGB', (image['width'], image['height'])).save(image_dir / image['file_name'])
  data = {'images': images, 'annotations': annotations,
          'categories': categories or [{'id': 90, 'name': 'toothbrush'},
                                       {'id': 1, 'name': 'person'}]}
  path = tmp_path / 'instances_x.json'
  path.write_text(json.dumps(data))
  return str(path), str(image_dir)


def test_hand_made_file_ids_boxes_and_crowd(tmp_path):
  json_path, image_dir = _write_coco(tmp_path, [
      {'id': 1, 'image_id': 7, 'category_id': 90, 'bbox': [1.5, 2.0, 10.0, 5.0], 'iscrowd': 0},
      {'id': 2, 'image_id': 7, 'category_id': 1, 'bbox': [0, 0, 40, 30], 'iscrowd': 1},
  ])
  dataset = coco.load_coco(json_path, image_dir)
  # Category ids sorted: 1 -> 0 (person), 90 -> 1 (toothbrush).
  assert dataset.class_names == ['person', 'toothbrush']
  assert [r['image_id'] for r in dataset.records] == ['3', '7']
  three, seven = dataset.records
  # An image without annotations stays: a negative for every class.
  assert len(three['image_labels']) == 0 and len(three['gt_boxes']) == 0
  # [x, y, w, h] = [1.5, 2, 10, 5] -> [ymin, xmin, ymax, xmax] = [2, 1.5, 7, 11.5].
  np.testing.assert_allclose(seven['gt_boxes'], [[2, 1.5, 7, 11.5]])
  np.testing.assert_array_equal(seven['gt_labels'], [1])
  # The crowd region is kept apart and gives no image-level label.
  np.testing.assert_array_equal(seven['crowd_labels'], [0])
  np.testing.assert_array_equal(seven['image_labels'], [1])
  summary = records_lib.summarize(dataset)
  assert (summary['num_objects'], summary['num_crowd'], summary['num_image_class_pairs']) == (
      1, 1, 1)


def test_empty_box_is_counted_not_silently_dropped(tmp_path):
  json_path, image_dir = _write_coco(tmp_path, [
      {'id': 1, 'image_id': 7, 'category_id': 1, 'bbox': [5, 5, 0, 4], 'iscrowd': 0}])
  messages = []
  dataset = coco.load_coco(json_path, image_dir, log=messages.append)
  assert len(dataset.skipped) == 1 and 'empty bbox' in dataset.skipped[0]['problem']
  assert len(messages) == 1
  assert records_lib.summarize(dataset)['num_objects'] == 0


@pytest.mark.parametrize('annotation, match', [
    ({'id': 1, 'image_id': 7, 'category_id': 1}, 'has no "bbox" field'),
    ({'id': 1, 'image_id': 7, 'category_id': 1, 'bbox': [1, 2, 3]}, 'bbox must be 4 numbers'),
    ({'id': 1, 'image_id': 99, 'category_id': 1, 'bbox': [1, 2, 3, 4]}, 'unknown image_id 99'),
    ({'id': 1, 'image_id': 7, 'category_id': 5, 'bbox': [1, 2, 3, 4]}, 'unknown category_id 5'),
    ({'id': 1, 'image_id': 7, 'category_id': 1, 'bbox': [1, 2, 3, 4], 'iscrowd': 2},
     'iscrowd must be 0 or 1'),
    ({'id': 1, 'image_id': '7', 'category_id': 1, 'bbox': [1, 2, 3, 4]},
     'field "image_id" has the wrong type'),
    ({'id': 1, 'image_id': 7, 'category_id': 1, 'bbox': [30, 2, 30, 4]}, 'lies outside'),
])
def test_malformed_annotation(tmp_path, annotation, match):
  json_path, image_dir = _write_coco(tmp_path, [annotation])
  with pytest.raises(DataError, match=match) as info:
    coco.load_coco(json_path, image_dir)
  assert info.value.path == json_path
  assert 'annotations[0] (id 1)' in str(info.value)


def test_malformed_files(tmp_path):
  bad = tmp_path / 'bad.json'
  bad.write_text('{"images": [')
  with pytest.raises(DataError, match='not valid JSON'):
    coco.load_coco(str(bad), str(tmp_path))
  bad.write_text('{"images": []}')
  with pytest.raises(DataError, match='no "annotations" list'):
    coco.load_coco(str(bad), str(tmp_path))
  json_path, image_dir = _write_coco(tmp_path, [], images=[{'id': 1, 'file_name': 'x.jpg'}])
  with pytest.raises(DataError, match=r'images\[0\] has no "height" field'):
    coco.load_coco(json_path, image_dir)
  with pytest.raises(DataError, match='COCO annotation file not found'):
    coco.load_coco(str(tmp_path / 'missing.json'), image_dir)


def test_missing_image_file(tmp_path):
  json_path, image_dir = _write_coco(tmp_path, [])
  os.remove(os.path.join(image_dir, 'three.jpg'))
  with pytest.raises(DataError, match='image id 3 of instances_x.json has no image file') as info:
    coco.load_coco(json_path, image_dir)
  assert info.value.path.endswith('three.jpg')
  dataset = coco.load_coco(json_path, image_dir, skip_bad_records=True, log=lambda m: None)
  assert [r['image_id'] for r in dataset.records] == ['7'] and len(dataset.skipped) == 1
