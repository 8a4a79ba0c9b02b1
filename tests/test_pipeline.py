"""Tests for click_supervision.pipeline: make_dataset on real VOC images, and each dict -> dict op
eagerly and inside `Dataset.map`."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from click_supervision import clicks as clicks_lib
from click_supervision import pipeline
from click_supervision.datasets import images
from click_supervision.datasets import records as records_lib
from click_supervision.datasets import voc

NUM_VOC_CLASSES = 20
CHAIR, PERSON, TVMONITOR = 8, 14, 19  # indices in the 20 VOC classes (alphabetical)

# The documented element: key -> (dtype, static shape with None for variable sizes).
DOCUMENTED = {
    'image': (tf.uint8, [None, None, 3]),
    'image_id': (tf.string, []),
    'path': (tf.string, []),
    'height': (tf.int32, []),
    'width': (tf.int32, []),
    'image_labels': (tf.float32, [NUM_VOC_CLASSES]),
    'clicks': (tf.float32, [None, 2]),
    'click_labels': (tf.int32, [None]),
    'gt_boxes': (tf.float32, [None, 4]),
    'gt_labels': (tf.int32, [None]),
    'gt_difficult': (tf.bool, [None]),
}


@pytest.fixture(scope='module')
def voc_two(voc_dev_root, tmp_path_factory):
  """Records 000005 (5 chairs) and 000162 (a tvmonitor and a person), with a click selection.

  Click file (file order): 000005 chair h0 (y 275, x 293.5), h1 (y 300, x 200);
  000162 tvmonitor h0 (262.5, 342.5), h1 (260, 340); 000162 person h0 (255.5, 252),
  h1 flagged (1, 1), h2 (250, 250). Selecting 2 clicks skips the flagged one.
  """
  dataset = voc.load_voc(voc_dev_root, 'trainval')
  by_id = dataset.by_id()
  records = [by_id['000005'], by_id['000162']]
  assert dataset.class_names[CHAIR] == 'chair'
  assert dataset.class_names[PERSON] == 'person'
  assert dataset.class_names[TVMONITOR] == 'tvmonitor'

  def row(image_id, class_name, y, x, annotator, flagged=False):
    return {'image_id': image_id, 'class': class_name, 'x': x, 'y': y, 'annotator': annotator,
            'source': 'human', 'flagged': flagged}

  rows = [row('000005', 'chair', 275.0, 293.5, 'h0'), row('000005', 'chair', 300, 200, 'h1'),
          row('000162', 'tvmonitor', 262.5, 342.5, 'h0'),
          row('000162', 'tvmonitor', 260, 340, 'h1'),
          row('000162', 'person', 255.5, 252, 'h0'),
          row('000162', 'person', 1, 1, 'h1', flagged=True),
          row('000162', 'person', 250, 250, 'h2')]
  path = str(tmp_path_factory.mktemp('clicks') / 'clicks.jsonl')
  clicks_lib.write_click_file(path, rows)
  click_set = clicks_lib.read_click_file(path, dataset)
  pairs = [p for p in records_lib.image_class_pairs(dataset) if p[0] in ('000005', '000162')]
  selected = clicks_lib.select_clicks(click_set, pairs, 2)
  return records, selected


def _elements(dataset):
  return list(dataset.as_numpy_iterator())


def test_element_spec_is_the_documented_one(voc_two):
  records, selected = voc_two
  dataset = pipeline.make_dataset(records, NUM_VOC_CLASSES, selected)
  spec = dataset.element_spec
  assert set(spec) == set(DOCUMENTED)
  for key, (dtype, shape) in DOCUMENTED.items():
    assert spec[key].dtype == dtype, key
    assert spec[key].shape.as_list() == shape, key


def test_make_dataset_values_on_real_voc(voc_two):
  records, selected = voc_two
  elements = _elements(pipeline.make_dataset(records, NUM_VOC_CLASSES, selected))
  assert [e['image_id'] for e in elements] == [b'000005', b'000162']  # record order
  for element, record in zip(elements, records, strict=True):
    assert set(element) == set(DOCUMENTED)
    assert element['path'] == record['path'].encode()
    # Both images are 375 high, 500 wide (from their XML).
    assert (element['height'], element['width']) == (375, 500) == (record['height'],
                                                                   record['width'])
    assert element['image'].shape == (record['height'], record['width'], 3)
    assert element['image'].dtype == np.uint8
    # The same pixels as every other stage sees.
    np.testing.assert_array_equal(element['image'], images.load_image(record['path']))
    np.testing.assert_array_equal(element['gt_boxes'], record['gt_boxes'])
    np.testing.assert_array_equal(element['gt_labels'], record['gt_labels'])
    np.testing.assert_array_equal(element['gt_difficult'], record['difficult'])
    for key, (dtype, _) in DOCUMENTED.items():
      if dtype == tf.string:
        assert isinstance(element[key], bytes), key  # as_numpy_iterator gives strings as bytes
      else:
        assert element[key].dtype == dtype.as_numpy_dtype, key

  first, second = elements
  # 000005: one chair label; the first chair is VOC (263, 211, 324, 339) -> [210, 262, 339, 324];
  # chairs 3 and 5 are difficult.
  np.testing.assert_array_equal(first['gt_boxes'][0], [210, 262, 339, 324])
  np.testing.assert_array_equal(first['gt_difficult'], [False, False, True, False, True])
  expected = np.zeros(NUM_VOC_CLASSES, np.float32)
  expected[CHAIR] = 1
  np.testing.assert_array_equal(first['image_labels'], expected)
  # Both chair clicks, (y, x), in file order.
  np.testing.assert_array_equal(first['clicks'], [[275.0, 293.5], [300, 200]])
  np.testing.assert_array_equal(first['click_labels'], [CHAIR, CHAIR])

  # 000162: person (14) and tvmonitor (19). Clicks are grouped by class index in increasing order
  # (person before tvmonitor, although the file lists the tvmonitor first), the flagged person
  # click (1, 1) is skipped: C = 2 labels x 2 clicks = 4.
  expected = np.zeros(NUM_VOC_CLASSES, np.float32)
  expected[[PERSON, TVMONITOR]] = 1
  np.testing.assert_array_equal(second['image_labels'], expected)
  np.testing.assert_array_equal(second['clicks'],
                                [[255.5, 252], [250, 250], [262.5, 342.5], [260, 340]])
  np.testing.assert_array_equal(second['click_labels'], [PERSON, PERSON, TVMONITOR, TVMONITOR])
  # The XML lists the tvmonitor first: gt_labels keep the file order.
  np.testing.assert_array_equal(second['gt_labels'], [TVMONITOR, PERSON])


def test_clicks_match_the_selection(voc_two):
  records, selected = voc_two
  for element, record in zip(_elements(pipeline.make_dataset(records, NUM_VOC_CLASSES, selected,
                                                             decode=False)), records):
    expected = [(c.y, c.x) for label in record['image_labels']
                for c in selected[(record['image_id'], int(label))]]
    np.testing.assert_array_equal(element['clicks'], np.array(expected, np.float32).reshape(-1, 2))


def test_decode_false_gives_no_image(voc_two):
  records, selected = voc_two
  dataset = pipeline.make_dataset(records, NUM_VOC_CLASSES, selected, decode=False)
  assert set(dataset.element_spec) == set(DOCUMENTED) - {'image'}
  elements = _elements(dataset)
  assert [e['image_id'] for e in elements] == [b'000005', b'000162']
  assert all('image' not in e for e in elements)
  np.testing.assert_array_equal(elements[0]['clicks'], [[275.0, 293.5], [300, 200]])


def test_no_clicks(voc_two):
  records, _ = voc_two
  for element in _elements(pipeline.make_dataset(records, NUM_VOC_CLASSES, None, decode=False)):
    assert element['clicks'].shape == (0, 2) and element['clicks'].dtype == np.float32
    assert element['click_labels'].shape == (0,) and element['click_labels'].dtype == np.int32
    assert element['image_labels'].sum() >= 1  # labels do not depend on clicks


def test_make_dataset_follows_the_given_record_order(voc_two):
  records, selected = voc_two
  elements = _elements(pipeline.make_dataset(records[::-1], NUM_VOC_CLASSES, selected))
  assert [e['image_id'] for e in elements] == [b'000162', b'000005']


# ------------------------------------------------------------------------ small synthetic images


@pytest.fixture(scope='module')
def image_files(tmp_path_factory):
  """Tiny image files of several kinds (7 high, 5 wide), keyed by name."""
  folder = tmp_path_factory.mktemp('images')
  pixels = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
  variants = {
      'rgb.jpg': Image.fromarray(pixels),
      'gray.jpg': Image.fromarray(pixels[..., 0]),
      'rgb.png': Image.fromarray(pixels),
      'gray.png': Image.fromarray(pixels[..., 0]),
      'palette.png': Image.fromarray(pixels).convert('P'),
      'rgba.png': Image.fromarray(np.concatenate([pixels, pixels[..., :1]], axis=-1)),
  }
  paths = {}
  for name, image in variants.items():
    paths[name] = str(folder / name)
    image.save(paths[name])
  return paths


def test_record_without_objects_or_clicks(image_files):
  # An image with no objects: no labels (all zeros), no boxes, no clicks.
  record = records_lib.make_record('empty', image_files['rgb.png'], 7, 5, [], [])
  (element,) = _elements(pipeline.make_dataset([record], 3))
  np.testing.assert_array_equal(element['image_labels'], [0, 0, 0])
  assert element['gt_boxes'].shape == (0, 4)
  assert element['gt_labels'].shape == (0,)
  assert element['gt_difficult'].shape == (0,)
  assert element['clicks'].shape == (0, 2)
  np.testing.assert_array_equal(element['image'], images.load_image(image_files['rgb.png']))


def test_raw_examples_orders_clicks_by_label_and_ignores_other_pairs():
  record = records_lib.make_record('r', '/images/r.jpg', 10, 10, [[0, 0, 5, 5], [5, 5, 10, 10]],
                                   [2, 0])
  click = lambda y, x: clicks_lib.Click(y, x, 'h', None, 'human', False, None)
  selected = {('r', 2): [click(7, 8)], ('r', 0): [click(1, 2), click(3, 4)],
              ('r', 1): [click(9, 9)],  # class 1 is not in the image: not used
              ('other', 0): [click(5, 5)]}  # another image
  (example,) = list(pipeline.raw_examples([record], selected))
  np.testing.assert_array_equal(example['label_indices'], [0, 2])
  # Class 0 first (sorted image_labels), then class 2.
  np.testing.assert_array_equal(example['clicks'], [[1, 2], [3, 4], [7, 8]])
  np.testing.assert_array_equal(example['click_labels'], [0, 0, 2])
  assert example['clicks'].dtype == np.float32


# ------------------------------------------------------------------------------ op: decode_image


@pytest.mark.parametrize('name', ['rgb.jpg', 'gray.jpg', 'rgb.png', 'gray.png', 'palette.png',
                                  'rgba.png'])
def test_decode_image_eager(image_files, name):
  features = {'path': tf.constant(image_files[name]), 'image_id': tf.constant('x')}
  out = pipeline.decode_image(features)
  assert 'image' not in features  # the input dict is not modified
  assert out['image_id'].numpy() == b'x'  # other keys pass through
  assert out['image'].dtype == tf.uint8
  assert out['image'].shape == (7, 5, 3)  # gray, palette and RGBA all give 3 channels
  np.testing.assert_array_equal(out['image'].numpy(), images.load_image(image_files[name]))


def test_decode_image_eager_on_real_voc(voc_two):
  records, _ = voc_two
  out = pipeline.decode_image({'path': tf.constant(records[0]['path'])})
  # A lossy JPEG: TF must use the same DCT as PIL to give identical pixels.
  np.testing.assert_array_equal(out['image'].numpy(), images.load_image(records[0]['path']))


def test_decode_image_in_dataset_map(image_files):
  names = ['rgb.jpg', 'gray.png', 'palette.png']
  dataset = tf.data.Dataset.from_tensor_slices({'path': [image_files[n] for n in names],
                                                'index': [0, 1, 2]}).map(pipeline.decode_image)
  assert dataset.element_spec['image'].shape.as_list() == [None, None, 3]
  elements = _elements(dataset)
  assert [e['index'] for e in elements] == [0, 1, 2]
  for element, name in zip(elements, names, strict=True):
    np.testing.assert_array_equal(element['image'], images.load_image(image_files[name]))


# -------------------------------------------------------------------------- op: multi_hot_labels


def test_multi_hot_labels_eager():
  op = pipeline.multi_hot_labels(4)
  features = {'label_indices': tf.constant([0, 2, 2], tf.int32), 'keep': tf.constant(7)}
  out = op(features)
  # Indices 0 and 2 (2 twice: scatter adds 1 + 1 = 2, clipped to 1) -> [1, 0, 1, 0].
  np.testing.assert_array_equal(out['image_labels'].numpy(), [1, 0, 1, 0])
  assert out['image_labels'].dtype == tf.float32
  assert 'label_indices' not in out  # replaced
  assert 'label_indices' in features  # the input dict is not modified
  assert out['keep'].numpy() == 7
  # No labels: all zeros.
  empty = op({'label_indices': tf.zeros([0], tf.int32)})
  np.testing.assert_array_equal(empty['image_labels'].numpy(), [0, 0, 0, 0])
  # Every class, in any order.
  np.testing.assert_array_equal(op({'label_indices': tf.constant([3, 1, 0, 2])})[
      'image_labels'].numpy(), [1, 1, 1, 1])


def test_multi_hot_labels_in_dataset_map():
  def generate():
    yield {'label_indices': np.array([3, 1, 3, 3], np.int32)}  # duplicates -> still 1.0
    yield {'label_indices': np.zeros(0, np.int32)}
    yield {'label_indices': np.array([0], np.int32)}

  dataset = tf.data.Dataset.from_generator(
      generate, output_signature={'label_indices': tf.TensorSpec([None], tf.int32)})
  dataset = dataset.map(pipeline.multi_hot_labels(4))
  assert dataset.element_spec['image_labels'].shape.as_list() == [4]
  assert set(dataset.element_spec) == {'image_labels'}
  labels = [e['image_labels'] for e in _elements(dataset)]
  np.testing.assert_array_equal(labels, [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]])


def test_proposals_and_objectness_keys_come_from_a_bag_source(tmp_path):
  from test_detector import toy_maps  # pylint: disable=g-import-not-at-top
  records, names, bags = toy_maps(tmp_path, num_images=3, seed=0)
  dataset = pipeline.make_dataset(records, len(names), decode=False, proposals=bags)
  for element, record in zip(_elements(dataset), records):
    boxes, objectness = bags.proposals_of(record['image_id'])
    np.testing.assert_array_equal(element['proposals'], boxes)
    np.testing.assert_array_equal(element['objectness'], objectness)
    # The whole-image box is among them, as MIL and the detector see it.
    assert np.any(np.all(element['proposals'] == [0, 0, 64, 64], axis=1))
