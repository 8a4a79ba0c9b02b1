"""Builds tiny VOC-format folders for tests (real JPEG files, hand-written XML)."""

import os

import numpy as np
from PIL import Image


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
