"""Tests of the VOC-folder reader on the real sample and on tiny hand-made folders."""

import os
import shutil

import numpy as np
import pytest

from click_supervision.datasets import records as records_lib
from click_supervision.datasets import voc
from click_supervision.errors import DataError
from helpers import make_voc_folder, write_xml


def test_real_sample_counts(voc_dev_root):
  dataset = voc.load_voc(voc_dev_root, 'trainval')
  summary = records_lib.summarize(dataset)
  assert summary['num_images'] == 229
  assert summary['num_objects'] == 843
  assert summary['num_difficult'] == 173
  assert summary['num_image_class_pairs'] == 434
  assert summary['num_image_class_pairs_non_difficult'] == 386
  assert summary['num_crowd'] == 0
  assert sum(c['objects'] for c in summary['classes'].values()) == 843


def test_real_sample_000005(voc_dev_root):
  record = voc.load_voc(voc_dev_root, 'val').by_id()['000005']
  assert (record['height'], record['width']) == (375, 500)
  chair = voc.load_voc(voc_dev_root, 'val').class_index('chair')
  assert list(record['image_labels']) == [chair]
  # VOC (xmin, ymin, xmax, ymax) = (263, 211, 324, 339), 1-based inclusive -> ours
  # [ymin - 1, xmin - 1, ymax, xmax] = [210, 262, 339, 324].
  np.testing.assert_array_equal(record['gt_boxes'][0], [210, 262, 339, 324])
  np.testing.assert_array_equal(record['difficult'], [False, False, True, False, True])


def test_real_sample_image_labels_agree_with_per_class_imagesets(voc_dev_root):
  dataset = voc.load_voc(voc_dev_root, 'trainval')
  records = dataset.by_id()
  for label, name in enumerate(dataset.class_names):
    path = os.path.join(voc_dev_root, 'ImageSets', 'Main', f'{name}_trainval.txt')
    with open(path) as f:
      official = dict(line.split() for line in f if line.strip())
    for image_id, value in official.items():
      record = records[image_id]
      of_class = record['gt_labels'] == label
      expected = '1' if np.any(of_class & ~record['difficult']) else (
          '0' if np.any(of_class) else '-1')
      assert value == expected, (image_id, name)
      assert (label in record['image_labels']) == (value != '-1')


def test_crlf_imagesets_give_the_same_records(voc_dev_root, tmp_path):
  copy = tmp_path / 'VOC2007'
  os.makedirs(copy / 'ImageSets' / 'Main')
  for sub in ('Annotations', 'JPEGImages'):
    os.symlink(os.path.join(voc_dev_root, sub), copy / sub)
  with open(os.path.join(voc_dev_root, 'ImageSets', 'Main', 'trainval.txt'), 'rb') as f:
    lf = f.read()
  crlf = lf.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')
  assert b'\r\n' in crlf
  (copy / 'ImageSets' / 'Main' / 'trainval.txt').write_bytes(crlf)
  original = voc.load_voc(voc_dev_root, 'trainval')
  with_crlf = voc.load_voc(str(copy), 'trainval')
  assert records_lib.summarize(with_crlf)['num_objects'] == 843
  assert [r['image_id'] for r in with_crlf.records] == [r['image_id'] for r in original.records]


TWO_IMAGES = {
    'a': (40, 30, [('dog', (1, 1, 10, 10), False), ('cat', (5, 6, 40, 30), True)]),
    'b': (20, 20, [('dog', (2, 3, 4, 5), False)]),
}


def test_tiny_folder_boxes_and_labels(tmp_path):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES, newline='\r\n')
  dataset = voc.load_voc(root, 'trainval')
  assert dataset.class_names[7] == 'cat' and dataset.class_names[11] == 'dog'
  a = dataset.by_id()['a']
  # (1, 1, 10, 10) covers the first ten pixels: [0, 0, 10, 10]; the cat box reaches the border.
  np.testing.assert_array_equal(a['gt_boxes'], [[0, 0, 10, 10], [5, 4, 30, 40]])
  np.testing.assert_array_equal(a['gt_labels'], [11, 7])
  np.testing.assert_array_equal(a['image_labels'], [7, 11])
  np.testing.assert_array_equal(a['difficult'], [False, True])


def test_classes_txt_fixes_custom_class_order(tmp_path):
  images = {'a': (40, 30, [('widget', (1, 1, 10, 10), False)])}
  root = make_voc_folder(str(tmp_path / 'voc'), images, classes=['gadget', 'widget'])
  dataset = voc.load_voc(root, 'trainval')
  assert dataset.class_names == ['gadget', 'widget']
  assert list(dataset.records[0]['image_labels']) == [1]


def test_custom_classes_without_classes_txt_is_an_error(tmp_path):
  images = {'a': (40, 30, [('widget', (1, 1, 10, 10), False)])}
  root = make_voc_folder(str(tmp_path / 'voc'), images)
  with pytest.raises(DataError, match='classes.txt'):
    voc.load_voc(root, 'trainval')


def _expect_error(root, match, path_end):
  with pytest.raises(DataError, match=match) as info:
    voc.load_voc(root, 'trainval')
  assert info.value.path.endswith(path_end), info.value.path
  return info.value


def test_xml_without_size(tmp_path):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  write_xml(os.path.join(root, 'Annotations', 'b.xml'), 'b.jpg', 20, 20,
            [('dog', (2, 3, 4, 5), False)], size=False)
  _expect_error(root, 'no <size>', 'b.xml')


def test_id_without_xml(tmp_path):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  os.remove(os.path.join(root, 'Annotations', 'b.xml'))
  error = _expect_error(root, "image id 'b' of trainval.txt has no annotation file", 'b.xml')
  assert 'Annotations' in error.path


def test_id_without_image(tmp_path):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  os.remove(os.path.join(root, 'JPEGImages', 'b.jpg'))
  _expect_error(root, 'has no image file', 'b.jpg')


@pytest.mark.parametrize('content, match', [
    ('<annotation><size>', 'malformed XML'),
    ('<annotation><size><width>x</width><height>20</height></size></annotation>', 'not a number'),
    ('<annotation><size><width>20</width><height>20</height></size><object><name>dog</name>'
     '</object></annotation>', 'has no <bndbox>'),
    ('<annotation><size><width>20</width><height>20</height></size><object><name>dog</name>'
     '<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object></annotation>',
     'has no <ymax>'),
    ('<annotation><size><width>20</width><height>20</height></size><object><name>dog</name>'
     '<bndbox><xmin>9</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>'
     '</annotation>', 'empty box'),
    ('<annotation><size><width>20</width><height>20</height></size><object><name>dog</name>'
     '<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>5</ymax></bndbox></object>'
     '</annotation>', 'outside the 20 x 20 image'),
    ('<annotation><size><width>20</width><height>20</height></size><object><name>dog</name>'
     '<difficult>2</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>'
     '</bndbox></object></annotation>', 'must be 0 or 1'),
])
def test_malformed_xml_fields(tmp_path, content, match):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  with open(os.path.join(root, 'Annotations', 'b.xml'), 'w') as f:
    f.write(content)
  _expect_error(root, match, 'b.xml')


def test_slight_overhang_is_clipped(tmp_path):
  images = {'a': (20, 20, [('dog', (1, 1, 21, 20), False)])}  # xmax 21 > width 20 by 1 px.
  root = make_voc_folder(str(tmp_path / 'voc'), images)
  np.testing.assert_array_equal(voc.load_voc(root, 'trainval').records[0]['gt_boxes'],
                                [[0, 0, 20, 20]])


def test_missing_split_and_not_a_voc_folder(tmp_path):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  with pytest.raises(DataError, match=r"split 'test' not found; available splits: \['trainval'\]"):
    voc.load_voc(root, 'test')
  shutil.rmtree(os.path.join(root, 'Annotations'))
  with pytest.raises(DataError, match='not a VOC folder: no Annotations/'):
    voc.load_voc(root, 'trainval')


def test_duplicate_id_in_split(tmp_path):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  with open(os.path.join(root, 'ImageSets', 'Main', 'trainval.txt'), 'a') as f:
    f.write('a\n')
  _expect_error(root, "line 3: image id 'a' listed twice", 'trainval.txt')


def test_skip_bad_records_counts_and_logs(tmp_path):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  write_xml(os.path.join(root, 'Annotations', 'b.xml'), 'b.jpg', 20, 20, [], size=False)
  messages = []
  dataset = voc.load_voc(root, 'trainval', skip_bad_records=True, log=messages.append)
  assert [r['image_id'] for r in dataset.records] == ['a']
  assert len(dataset.skipped) == 1 and dataset.skipped[0]['problem'] == 'no <size> element'
  assert len(messages) == 1 and 'b.xml' in messages[0]
  assert records_lib.summarize(dataset)['num_skipped'] == 1


def _outside_image(tmp_path):
  """A real JPEG beside the VOC folder (tmp_path/voc), which no <filename> may reach."""
  path = tmp_path / 'secret.jpg'
  shutil.copy(tmp_path / 'voc' / 'JPEGImages' / 'b.jpg', path)
  return str(path)


@pytest.mark.parametrize('filename', ['../../secret.jpg', 'sub/../../../secret.jpg',
                                      '..\\..\\secret.jpg', 'ABSOLUTE'])
def test_filename_leading_out_of_jpegimages_is_refused(tmp_path, filename):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  outside = _outside_image(tmp_path)
  if filename == 'ABSOLUTE':
    filename = outside
  os.remove(os.path.join(root, 'JPEGImages', 'b.jpg'))  # So that <filename> is looked up.
  write_xml(os.path.join(root, 'Annotations', 'b.xml'), filename, 20, 20,
            [('dog', (2, 3, 4, 5), False)])
  error = _expect_error(root, 'must name a file inside JPEGImages/', 'b.xml')
  assert repr(filename) in error.problem
  messages = []
  dataset = voc.load_voc(root, 'trainval', skip_bad_records=True, log=messages.append)
  assert [r['image_id'] for r in dataset.records] == ['a']
  assert len(dataset.skipped) == 1 and dataset.skipped[0]['path'].endswith('b.xml')
  assert len(messages) == 1 and repr(filename) in messages[0]


def test_filename_inside_jpegimages_is_followed(tmp_path):
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  os.makedirs(os.path.join(root, 'JPEGImages', 'sub'))
  os.rename(os.path.join(root, 'JPEGImages', 'b.jpg'), os.path.join(root, 'JPEGImages', 'sub',
                                                                    'b2.jpg'))
  write_xml(os.path.join(root, 'Annotations', 'b.xml'), 'sub/b2.jpg', 20, 20,
            [('dog', (2, 3, 4, 5), False)])
  record = voc.load_voc(root, 'trainval').records[1]
  assert record['path'] == os.path.join(root, 'JPEGImages', 'sub', 'b2.jpg')


def test_bad_filename_is_not_read_when_the_id_image_exists(tmp_path):
  # Labelling tools write other paths into <filename>; <id>.jpg wins and <filename> is unused.
  root = make_voc_folder(str(tmp_path / 'voc'), TWO_IMAGES)
  write_xml(os.path.join(root, 'Annotations', 'b.xml'), _outside_image(tmp_path), 20, 20,
            [('dog', (2, 3, 4, 5), False)])
  record = voc.load_voc(root, 'trainval').records[1]
  assert record['path'] == os.path.join(root, 'JPEGImages', 'b.jpg')
