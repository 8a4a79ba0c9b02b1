"""Shared test helpers: tiny VOC folders (real JPEG files, hand-written XML), tiny image datasets,
random images, tiny Keras trunks and a toy bag source. One place, so tests build their small worlds alike."""

import importlib.util
import os

import numpy as np
from PIL import Image

from click_supervision import bags as bags_lib
from click_supervision import boxes as boxes_lib


def write_xml(path, filename, width, height, objects, size=True):
  """objects: list of (name, (xmin, ymin, xmax, ymax) VOC 1-based inclusive, difficult)."""
  parts = ['<annotation>', f'<filename>{filename}</filename>']
  if size:
    parts.append(f'<size><width>{width}</width><height>{height}</height><depth>3</depth></size>')
  for name, (xmin, ymin, xmax, ymax), difficult in objects:
    parts.append(f'<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox>'
                 f'<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>'
                 f'</bndbox></object>')
  parts.append('</annotation>')
  with open(path, 'w') as f:
    f.write('\n'.join(parts))


def make_voc_folder(root, images, split='trainval', newline='\n', classes=None):
  """Writes a VOC folder.

  Args:
    root: folder to create.
    images: dict image_id -> (width, height, objects) with objects as in `write_xml`.
    split: name of the ImageSets/Main split file listing all images.
    newline: line ending of the split file.
    classes: optional list written to classes.txt.
  Returns:
    root.
  """
  for sub in ('Annotations', 'JPEGImages', os.path.join('ImageSets', 'Main')):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
  rng = np.random.default_rng(0)
  for image_id, (width, height, objects) in images.items():
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, 'JPEGImages', image_id + '.jpg'), quality=90)
    write_xml(os.path.join(root, 'Annotations', image_id + '.xml'), image_id + '.jpg', width,
              height, objects)
  with open(os.path.join(root, 'ImageSets', 'Main', split + '.txt'), 'w', newline='') as f:
    f.write(''.join(image_id + newline for image_id in images))
  if classes:
    with open(os.path.join(root, 'classes.txt'), 'w') as f:
      f.write('\n'.join(classes) + '\n')
  return root


def random_images(shape, seed=0):
  """float32 [B, H, W, 3] random RGB 0-255 images."""
  return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def image_dataset(folder, sizes, suffix='.jpg', box=(0, 0, 2, 2)):
  """A one-class `records.Dataset` of real random image files.

  Args:
    folder: a pathlib folder for the files.
    sizes: list of (height, width) per image; ids are `im0`, `im1`, ... when `suffix` is `.png`,
      else `0`, `1`, ...
    suffix: `.jpg` or `.png`.
    box: the one ground-truth box of class 0 in every image.
  """
  from click_supervision.datasets import records as records_lib  # pylint: disable=g-import-not-at-top
  records = []
  rng = np.random.default_rng(0)
  for i, (height, width) in enumerate(sizes):
    path = str(folder / f'{i}{suffix}')
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    image_id = f'im{i}' if suffix == '.png' else str(i)
    records.append(records_lib.make_record(image_id, path, height, width, [list(box)], [0]))
  return records_lib.Dataset('test', 'trainval', ['thing'], records)


def tiny_trunk(stride=4, channels=5):
  """One strided convolution with the attributes of a real trunk (`feature_stride`,
  `feature_offset`): a feature cell per `stride` pixels, seeded weights."""
  import keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input([None, None, 3])
  outputs = keras.layers.Conv2D(channels, stride, strides=stride, padding='same',
                                kernel_initializer=keras.initializers.GlorotUniform(seed=1))(
                                    inputs / 255.0)
  model = keras.Model(inputs, outputs)
  model.feature_stride = stride
  model.feature_offset = 0.0
  return model


def tiny_cut_trunk(seed=1):
  """A trunk cut in two like `backbones.build_trunk(cut=True)`: `lower` (stride 4, 3 channels,
  offset 0) and `upper` (a stride-2 convolution on the lower map: stride 8, 4 channels); zero
  'same' padding in both, as the real trunks."""
  import keras  # pylint: disable=g-import-not-at-top
  from click_supervision import backbones  # pylint: disable=g-import-not-at-top
  inputs = keras.Input([None, None, 3])
  # A bias, so that the map of zero padding pixels is not zero (as in real trunks).
  x = keras.layers.Conv2D(3, 4, strides=4, padding='same', name='l1', bias_initializer='ones',
                          kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(
                              inputs / 255.0)
  lower = keras.Model(inputs, x, name='lower')
  lower.feature_stride, lower.feature_offset = 4, 0.0
  cut = keras.Input([None, None, 3])
  y = keras.layers.Conv2D(4, 3, strides=2, padding='same', name='u1',
                          kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1))(cut)
  y = keras.layers.BatchNormalization(name='u_bn')(y)
  upper = keras.Model(cut, y, name='upper')
  # Its 3 x 3 stride-2 'same' convolution pads one cell at the bottom/right: cell j is centred
  # on lower cell 2j + 1, image pixel 8j + 6.
  upper.feature_stride, upper.feature_offset = 8, 2.0
  return backbones.compose_trunk(lower, upper)


class FeatureRowBags(bags_lib._BagSource):  # pylint: disable=protected-access
  """Bags read from a cache with one feature row per proposal (`features` field, float [P, D]):
  toy MIL problems give their features directly. (The library's store of one row per proposal
  was replaced by the trunk-map cache.)

  The whole-image box, when added, takes the feature of the proposal best overlapping it (the
  cache has no row for it).
  """

  def __init__(self, records, proposals, features):
    super().__init__(records, proposals, features)
    self.key = bags_lib._key('rois', proposals.key, features.key)  # pylint: disable=protected-access

  def _bag(self, image_id, proposal_data, feature_data):
    boxes, scores = self._boxes(image_id, proposal_data)
    feats = np.asarray(feature_data['features'], np.float32)
    if len(boxes) > len(feats):  # The appended whole-image box borrows its nearest row.
      if len(feats):
        nearest = int(np.argmax(boxes_lib.pairwise_iou(boxes[-1:], boxes[:-1])[0]))
        extra = feats[nearest:nearest + 1]
      else:
        extra = np.zeros((1, feats.shape[-1]), np.float32)
      feats = np.concatenate([feats.reshape(-1, extra.shape[1]), extra])
    return bags_lib.Bag(image_id, boxes, scores, bags_lib.l2_normalize(feats))


def load_benchmark(name):
  """The module of `benchmarks/<name>.py` (the scripts are not a package)."""
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                      f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'{name}_benchmark', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
