"""Tests of the embedded synthetic dataset (click_supervision/datasets/synthetic.py)."""

import collections
import os
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image

from click_supervision.datasets import synthetic
from click_supervision.datasets import voc

SMALL = synthetic.SyntheticConfig(num_train=6, num_val=2, num_test=4, min_side=120, max_side=180)


def _generate(cache_dir, config=SMALL):
  messages = []
  path = synthetic.ensure_synthetic(str(cache_dir), log=messages.append, config=config)
  return path, messages


@pytest.fixture(scope='module')
def small(tmp_path_factory):
  return _generate(tmp_path_factory.mktemp('small'))[0]


@pytest.fixture(scope='module')
def default(tmp_path_factory):
  """The default dataset (generates in a few seconds)."""
  return synthetic.ensure_synthetic(str(tmp_path_factory.mktemp('default')), log=lambda _: None)


def _files(root):
  """Relative path -> bytes of every file under `root`."""
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def _solid(color):
  return {'kind': 'solid', 'colors': [color, color]}


def _rect(x0, y0, x1, y1, name='rectangle', color=(200, 30, 30)):
  points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
  return {'name': name, 'points': points, 'stroke': 0, 'texture': _solid(list(color))}


def _scene(layers, height=64, width=80):
  return {'height': height, 'width': width, 'background': _solid([128, 128, 128]),
          'layers': layers}


# --- The folder --------------------------------------------------------------------------------


def test_every_split_loads_with_the_voc_reader_and_has_the_configured_size(small):
  sizes = {'train': SMALL.num_train, 'val': SMALL.num_val, 'test': SMALL.num_test,
           'trainval': SMALL.num_train + SMALL.num_val}
  ids = {}
  for split, size in sizes.items():
    dataset = voc.load_voc(small, split)
    assert len(dataset.records) == size
    assert dataset.class_names == list(SMALL.classes)
    assert all(len(r['gt_labels']) >= 1 for r in dataset.records)
    ids[split] = {r['image_id'] for r in dataset.records}
  assert ids['trainval'] == ids['train'] | ids['val']
  assert not ids['train'] & ids['val'] and not ids['trainval'] & ids['test']


def test_folder_is_named_by_version_and_parameters(small, tmp_path):
  assert os.path.basename(small) == f'v{synthetic.GENERATOR_VERSION}_{SMALL.fingerprint()}'
  assert SMALL.fingerprint() != synthetic.SyntheticConfig(
      num_train=6, num_val=2, num_test=4, min_side=120, max_side=180, seed=1).fingerprint()
  assert synthetic.dataset_dir(tmp_path, SMALL) == os.path.join(
      str(tmp_path), 'synthetic', os.path.basename(small))


def test_generation_is_deterministic(small, tmp_path):
  again, _ = _generate(tmp_path)
  assert os.path.basename(again) == os.path.basename(small)
  first, second = _files(small), _files(again)
  assert sorted(first) == sorted(second)
  assert any(name.endswith('.jpg') for name in first)
  different = [name for name in first if first[name] != second[name]]
  assert not different


def test_second_call_reuses_the_folder(tmp_path):
  path, messages = _generate(tmp_path)
  assert len(messages) == 1 and 'generated 12 images' in messages[0]
  marker = os.path.join(path, 'Annotations', '000001.xml')
  mtime = os.stat(marker).st_mtime_ns
  again, messages = _generate(tmp_path)
  assert again == path and not messages
  assert os.stat(marker).st_mtime_ns == mtime
  # No temporary folders are left next to it.
  assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def test_losing_the_race_keeps_the_winners_folder(tmp_path, monkeypatch):
  final = synthetic.dataset_dir(tmp_path, SMALL)
  write = synthetic._write_dataset

  def write_while_another_process_finishes(root, config):
    stats = write(root, config)
    os.makedirs(final)
    with open(os.path.join(final, 'winner'), 'w') as f:
      f.write('the other process')
    return stats

  monkeypatch.setattr(synthetic, '_write_dataset', write_while_another_process_finishes)
  path, _ = _generate(tmp_path)
  assert path == final
  assert os.listdir(final) == ['winner']
  assert os.listdir(os.path.dirname(final)) == [os.path.basename(final)]


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
  def fail(root, config):
    raise RuntimeError('disk full')

  monkeypatch.setattr(synthetic, '_write_dataset', fail)
  with pytest.raises(RuntimeError):
    _generate(tmp_path)
  assert os.listdir(os.path.join(tmp_path, 'synthetic')) == []


def test_annotations_match_images_and_boxes_lie_inside(small):
  for split in ('trainval', 'test'):
    for record in voc.load_voc(small, split).records:
      with Image.open(record['path']) as image:
        assert image.size == (record['width'], record['height']) and image.mode == 'RGB'
      assert SMALL.min_side <= record['height'] <= SMALL.max_side
      assert SMALL.min_side <= record['width'] <= SMALL.max_side
      boxes = record['gt_boxes']
      assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
      assert np.all(boxes >= 0)
      assert np.all(boxes[:, 2] <= record['height']) and np.all(boxes[:, 3] <= record['width'])


def test_xml_holds_the_voc_fields(small):
  root = ElementTree.parse(os.path.join(small, 'Annotations', '000001.xml')).getroot()
  assert root.findtext('filename') == '000001.jpg'
  assert root.findtext('size/depth') == '3'
  for obj in root.findall('object'):
    assert obj.findtext('name') in SMALL.classes
    assert obj.findtext('truncated') in ('0', '1')
    assert obj.findtext('difficult') in ('0', '1')
    for tag in ('xmin', 'ymin', 'xmax', 'ymax'):
      assert int(obj.findtext(f'bndbox/{tag}')) >= 1  # 1-based.


def test_per_class_image_sets_agree_with_the_annotations(small):
  main = os.path.join(small, 'ImageSets', 'Main')
  for split in synthetic.SPLITS:
    dataset = voc.load_voc(small, split)
    for class_index, name in enumerate(dataset.class_names):
      with open(os.path.join(main, f'{name}_{split}.txt')) as f:
        rows = [line.split() for line in f if line.strip()]
      assert [r[0] for r in rows] == voc.read_id_list(os.path.join(main, f'{split}.txt'))
      labels = {image_id: int(label) for image_id, label in rows}
      for record in dataset.records:
        of_class = record['gt_labels'] == class_index
        expected = (1 if np.any(of_class & ~record['difficult']) else
                    0 if np.any(of_class) else -1)
        assert labels[record['image_id']] == expected, (split, name, record['image_id'])


# --- The default dataset ------------------------------------------------------------------------


def test_default_dataset_statistics(default):
  config = synthetic.SyntheticConfig()
  trainval, test = voc.load_voc(default, 'trainval'), voc.load_voc(default, 'test')
  assert len(trainval.records) == config.num_train + config.num_val
  assert len(test.records) == config.num_test
  records = trainval.records + test.records
  for dataset in (trainval, test):
    present = {int(c) for r in dataset.records for c in r['image_labels']}
    assert present == set(range(len(config.classes)))
  num_objects = [len(r['gt_labels']) for r in records]
  assert min(num_objects) >= 1 and max(num_objects) <= config.max_objects
  assert 2.0 <= np.mean(num_objects) <= 4.0
  several_of_a_class = sum(max(collections.Counter(r['gt_labels'].tolist()).values()) >= 2
                           for r in records)
  several_classes = sum(len(r['image_labels']) >= 2 for r in records)
  assert several_of_a_class >= 0.2 * len(records)
  assert several_classes >= 0.2 * len(records)
  difficult = sum(int(r['difficult'].sum()) for r in records)
  assert 0.03 * sum(num_objects) <= difficult <= 0.3 * sum(num_objects)
  sides = np.concatenate([np.minimum(r['gt_boxes'][:, 2] - r['gt_boxes'][:, 0],
                                     r['gt_boxes'][:, 3] - r['gt_boxes'][:, 1]) for r in records])
  assert sides.max() >= 100 and np.mean(sides < 30) >= 0.1  # Both large and small objects.


def test_default_dataset_marks_truncated_objects(default):
  truncated = 0
  for name in os.listdir(os.path.join(default, 'Annotations')):
    root = ElementTree.parse(os.path.join(default, 'Annotations', name)).getroot()
    truncated += sum(o.findtext('truncated') == '1' for o in root.findall('object'))
  assert truncated >= 20


# --- Rendering and ground truth on hand-built scenes --------------------------------------------


def test_box_of_a_rendered_rectangle_is_tight():
  # Continuous x in [10, 50), y in [20, 40): pixel columns 10..49, rows 20..39.
  image, objects = synthetic.render_scene(_scene([_rect(10, 20, 50, 40)]))
  assert image.shape == (64, 80, 3) and image.dtype == np.uint8
  assert len(objects) == 1 and objects[0]['name'] == 'rectangle'
  np.testing.assert_allclose(objects[0]['box'], [20, 10, 40, 50], atol=1)
  assert not objects[0]['difficult'] and not objects[0]['truncated']
  assert objects[0]['visible_frac'] == pytest.approx(1.0, abs=0.1)
  # The painted pixels are where the box says.
  assert tuple(image[30, 30]) == (200, 30, 30) and tuple(image[10, 30]) == (128, 128, 128)


def test_box_of_a_rendered_disc_is_tight():
  center, radius = np.array([40.0, 30.0]), 17.0
  t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
  points = center + radius * np.stack([np.cos(t), np.sin(t)], axis=1)
  layer = {'name': 'disc', 'points': points, 'stroke': 0, 'texture': _solid([0, 0, 255])}
  _, objects = synthetic.render_scene(_scene([layer]))
  np.testing.assert_allclose(objects[0]['box'], [30 - 17, 40 - 17, 30 + 17, 40 + 17], atol=1)


def test_box_covers_only_the_visible_part_after_occlusion():
  scene = _scene([_rect(10, 20, 50, 40), _rect(30, 10, 70, 50, name='star')])
  _, objects = synthetic.render_scene(scene)
  assert [o['name'] for o in objects] == ['rectangle', 'star']
  np.testing.assert_allclose(objects[0]['box'], [20, 10, 40, 30], atol=1)
  assert objects[0]['visible_frac'] == pytest.approx(0.5, abs=0.1)
  assert not objects[0]['difficult']
  np.testing.assert_allclose(objects[1]['box'], [10, 30, 50, 70], atol=1)


def test_hidden_objects_are_dropped_and_mostly_hidden_ones_are_difficult():
  scene = _scene([_rect(20, 20, 30, 30, name='disc'),       # Fully covered below.
                  _rect(40, 10, 60, 50, name='triangle'),   # 80 % covered: difficult.
                  _rect(10, 10, 56, 54),
                  _rect(70, 5, 78, 13, name='cross')])      # 8 px on a side: difficult.
  _, objects = synthetic.render_scene(scene)
  by_name = {o['name']: o for o in objects}
  assert sorted(by_name) == ['cross', 'rectangle', 'triangle']
  assert by_name['triangle']['difficult'] and by_name['cross']['difficult']
  assert not by_name['rectangle']['difficult']
  np.testing.assert_allclose(by_name['triangle']['box'], [10, 56, 50, 60], atol=1)


def test_clutter_is_not_annotated_but_occludes():
  line = {'name': None, 'points': np.array([[0.0, 30.0], [80.0, 30.0]]), 'stroke': 4,
          'texture': _solid([0, 0, 0])}
  _, objects = synthetic.render_scene(_scene([_rect(10, 20, 50, 40), line]))
  assert len(objects) == 1
  np.testing.assert_allclose(objects[0]['box'], [20, 10, 40, 50], atol=1)
  assert objects[0]['visible_frac'] < 0.9


def test_objects_cut_by_the_border_are_truncated_with_a_clipped_box():
  _, objects = synthetic.render_scene(_scene([_rect(-20, 10, 30, 30)]))
  assert objects[0]['truncated']
  np.testing.assert_allclose(objects[0]['box'], [10, 0, 30, 30], atol=1)
  assert objects[0]['visible_frac'] == pytest.approx(0.6, abs=0.1)


def test_sampled_scenes_annotate_every_drawn_object():
  config = synthetic.SyntheticConfig()
  for index in range(10):
    scene = synthetic.sample_scene(np.random.default_rng(index), config, first_class='heart')
    _, objects = synthetic.render_scene(scene, config)
    drawn = [layer['name'] for layer in scene['layers'] if layer['name'] is not None]
    assert [o['name'] for o in objects] == drawn
    assert 'heart' in drawn
    assert all(o['visible_frac'] >= config.min_visible_frac - 0.05 for o in objects)


def test_config_rejects_unknown_classes():
  with pytest.raises(ValueError):
    synthetic.SyntheticConfig(classes=('disc', 'dog'))
  with pytest.raises(ValueError):
    synthetic.SyntheticConfig(num_test=0)


def test_a_stale_build_folder_of_a_killed_run_is_removed(tmp_path):
  parent = os.path.dirname(synthetic.dataset_dir(tmp_path, SMALL))
  stale = os.path.join(parent, '.tmp_v1_killed_abc')
  fresh = os.path.join(parent, '.tmp_v1_running_def')
  for folder in (stale, fresh):
    os.makedirs(os.path.join(folder, 'JPEGImages'))
  os.utime(stale, (0, 0))  # Untouched for decades; `fresh` may be another live process's.
  path, messages = _generate(tmp_path)
  assert not os.path.exists(stale) and os.path.isdir(fresh)
  assert any('left by an interrupted generation' in m for m in messages)
  assert sorted(os.listdir(parent)) == sorted([os.path.basename(path), '.tmp_v1_running_def'])
