"""Reads a VOC-format folder (a VOCdevkit year folder) into plain records.

Layout expected under `root`:
  Annotations/<id>.xml      one XML per image (`<size>`, `<object>` with `<name>`, `<difficult>`,
                            `<bndbox>`).
  JPEGImages/<id>.jpg       the image (or, without it, the file the XML's `<filename>` names
                            inside JPEGImages/: an absolute name or one with `..` is an error).
  ImageSets/Main/<split>.txt  image ids of the split, one per line (LF or CRLF).
  classes.txt (optional)    class names, one per line, fixing the class order; without it the 20
                            PASCAL classes are used when every object is one of them.
"""

import os
import xml.etree.ElementTree as ElementTree

import numpy as np

from click_supervision import boxes as box_lib
from click_supervision.datasets import class_names as class_names_lib
from click_supervision.datasets import records as records_lib
from click_supervision.errors import DataError

# A box may stick out of the image by this many pixels (annotation rounding); it is clipped and
# counted. Anything further out is an error.
BOX_OVERHANG_TOLERANCE_PX = 2.0


def read_id_list(path):
  """Reads an ImageSets file: one id per line, LF or CRLF, blank lines ignored.

  Lines may carry a second column (per-class files: `<id> <label>`); only the id is returned.
  """
  if not os.path.isfile(path):
    raise DataError(path, 'split file not found')
  with open(path, 'rb') as f:
    raw = f.read()
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise DataError(path, f'not UTF-8 text ({e.reason} at byte {e.start})') from None
  ids = []
  seen = set()
  for line_number, line in enumerate(text.splitlines(), start=1):  # splitlines eats '\r\n' too.
    fields = line.split()
    if not fields:
      continue
    image_id = fields[0]
    if image_id in seen:
      raise DataError(path, f'line {line_number}: image id {image_id!r} listed twice')
    seen.add(image_id)
    ids.append(image_id)
  return ids


def _text(element, tag, xml_path, parent_desc):
  child = element.find(tag)
  if child is None or child.text is None or not child.text.strip():
    raise DataError(xml_path, f'{parent_desc} has no <{tag}>')
  return child.text.strip()


def _number(element, tag, xml_path, parent_desc):
  text = _text(element, tag, xml_path, parent_desc)
  try:
    return float(text)
  except ValueError:
    raise DataError(xml_path, f'{parent_desc} <{tag}> is not a number: {text!r}') from None


def parse_annotation(xml_path):
  """Parses one VOC XML file.

  Returns:
    dict with `filename` (str or None), `height`, `width` (int) and `objects`: list of dicts
    `{'name': str, 'box': float32 [4] in our frame, 'difficult': bool}`.
  Raises:
    DataError naming `xml_path` for a missing file, malformed XML or a missing/malformed field.
  """
  if not os.path.isfile(xml_path):
    raise DataError(xml_path, 'annotation file not found')
  try:
    root = ElementTree.parse(xml_path).getroot()
  except ElementTree.ParseError as e:
    raise DataError(xml_path, f'malformed XML ({e})') from None
  size = root.find('size')
  if size is None:
    raise DataError(xml_path, 'no <size> element')
  width = _number(size, 'width', xml_path, '<size>')
  height = _number(size, 'height', xml_path, '<size>')
  if width <= 0 or height <= 0 or width != int(width) or height != int(height):
    raise DataError(xml_path, f'<size> must hold positive integers, got {width} x {height}')
  filename = root.findtext('filename')
  objects = []
  for index, obj in enumerate(root.findall('object'), start=1):
    desc = f'<object> #{index}'
    name = _text(obj, 'name', xml_path, desc)
    difficult_text = obj.findtext('difficult', default='0').strip() or '0'
    if difficult_text not in ('0', '1'):
      raise DataError(xml_path, f'{desc} ({name}) <difficult> must be 0 or 1, got {difficult_text!r}')
    bndbox = obj.find('bndbox')
    if bndbox is None:
      raise DataError(xml_path, f'{desc} ({name}) has no <bndbox>')
    coords = {k: _number(bndbox, k, xml_path, f'{desc} ({name}) <bndbox>')
              for k in ('xmin', 'ymin', 'xmax', 'ymax')}
    box = box_lib.from_voc_xml(coords['xmin'], coords['ymin'], coords['xmax'], coords['ymax'])
    if not (box[2] > box[0] and box[3] > box[1]):
      raise DataError(xml_path, f'{desc} ({name}) has an empty box {coords}')
    objects.append({'name': name, 'box': box, 'difficult': difficult_text == '1'})
  return {'filename': filename.strip() if filename else None, 'height': int(height),
          'width': int(width), 'objects': objects}


def _check_box_inside(box, height, width, xml_path, name):
  """Clips a slight overhang; raises DataError for a box well outside the image."""
  tolerance = BOX_OVERHANG_TOLERANCE_PX
  if (box[0] < -tolerance or box[1] < -tolerance or box[2] > height + tolerance or
      box[3] > width + tolerance):
    raise DataError(xml_path, f'box of {name} {box_lib.to_voc_xml(box)} (VOC xmin, ymin, xmax, ymax)'
                    f' lies outside the {width} x {height} image')
  return box_lib.clip_to_image(box[None], height, width)[0]


def _confined_image_path(root, filename, xml_path):
  """`JPEGImages/<filename>`, refusing a `<filename>` that would lead out of `JPEGImages/`.

  The check is on the name, not on resolved links: a JPEGImages/ that is itself a symbolic link
  (a common way to share images between dataset copies) stays readable.

  Raises:
    DataError naming `xml_path` and the filename when it is absolute or has a `..` component.
  """
  # Backslashes count as separators too: '..\\x' is a plain name here but not on Windows, and no
  # honest annotation needs one.
  parts = filename.replace('\\', '/').split('/')
  if os.path.isabs(filename) or not parts[0] or '..' in parts:
    raise DataError(xml_path, f'<filename> {filename!r} must name a file inside JPEGImages/ (no '
                    f'absolute path, no "..")')
  return os.path.join(root, 'JPEGImages', filename)


def _find_image(root, image_id, filename, xml_path):
  """The image file of `image_id`: `JPEGImages/<id>.jpg`, else the XML's `<filename>`.

  `<filename>` is only read when `<id>.jpg` is missing, so a folder whose XML files carry some
  other path there (written by a labelling tool) keeps working as long as `<id>.jpg` exists.

  Returns:
    The path (str), or None when neither file exists.
  Raises:
    DataError naming `xml_path` when `<filename>` would lead out of `JPEGImages/`.
  """
  candidate = os.path.join(root, 'JPEGImages', image_id + '.jpg')
  if os.path.isfile(candidate):
    return candidate
  if filename:
    candidate = _confined_image_path(root, filename, xml_path)
    if os.path.isfile(candidate):
      return candidate
  return None


def read_class_names(root, names_seen):
  """Class order: `classes.txt` if present, else the 20 VOC classes if they cover every name."""
  classes_file = os.path.join(root, 'classes.txt')
  if os.path.isfile(classes_file):
    names = read_id_list(classes_file)
    if not names:
      raise DataError(classes_file, 'no class names')
    return names
  if set(names_seen) <= set(class_names_lib.VOC_CLASSES):
    return list(class_names_lib.VOC_CLASSES)
  unknown = sorted(set(names_seen) - set(class_names_lib.VOC_CLASSES))
  raise DataError(root, f'objects of non-VOC classes {unknown[:5]}: write the class names, one per '
                  f'line, to {classes_file} to fix their order')


def load_voc(root, split, name=None, skip_bad_records=False, log=print):
  """Reads one split of a VOC-format folder.

  Args:
    root: the year folder (holding Annotations/, JPEGImages/, ImageSets/Main/).
    split: name of a file `ImageSets/Main/<split>.txt`.
    name: dataset name recorded in the result (default `voc:<root>`).
    skip_bad_records: when True, an image with a bad annotation or no image file is skipped,
      counted in `Dataset.skipped` and logged, instead of raising.
    log: callable taking one str, for skip messages.
  Returns:
    `records.Dataset` with records sorted by image id.
  Raises:
    DataError naming the file and the problem.
  """
  root = os.path.abspath(root)
  for sub in ('Annotations', 'JPEGImages', os.path.join('ImageSets', 'Main')):
    if not os.path.isdir(os.path.join(root, sub)):
      raise DataError(root, f'not a VOC folder: no {sub}/ (point --dataset=voc:PATH at a VOCdevkit '
                      f'year folder such as VOCdevkit/VOC2007)')
  split_file = os.path.join(root, 'ImageSets', 'Main', split + '.txt')
  if not os.path.isfile(split_file):
    available = sorted(f[:-4] for f in os.listdir(os.path.dirname(split_file))
                       if f.endswith('.txt') and '_' not in f)
    raise DataError(split_file, f'split {split!r} not found; available splits: {available}')
  image_ids = read_id_list(split_file)
  if not image_ids:
    raise DataError(split_file, 'the split lists no images')

  parsed, skipped = [], []
  for image_id in image_ids:
    xml_path = os.path.join(root, 'Annotations', image_id + '.xml')
    try:
      if not os.path.isfile(xml_path):
        raise DataError(xml_path, f'image id {image_id!r} of {os.path.basename(split_file)} has no '
                        f'annotation file')
      annotation = parse_annotation(xml_path)
      image_path = _find_image(root, image_id, annotation['filename'], xml_path)
      if image_path is None:
        raise DataError(os.path.join(root, 'JPEGImages', image_id + '.jpg'),
                        f'image id {image_id!r} has no image file')
      for obj in annotation['objects']:
        obj['box'] = _check_box_inside(obj['box'], annotation['height'], annotation['width'],
                                       xml_path, obj['name'])
    except DataError as e:
      if not skip_bad_records:
        raise
      skipped.append({'path': e.path, 'problem': e.problem})
      log(f'skipped {e}')
      continue
    parsed.append((image_id, image_path, xml_path, annotation))

  class_names = read_class_names(root, {o['name'] for *_, a in parsed for o in a['objects']})
  index = {n: i for i, n in enumerate(class_names)}
  records = []
  for image_id, image_path, xml_path, annotation in parsed:
    unknown = [o['name'] for o in annotation['objects'] if o['name'] not in index]
    if unknown:
      error = DataError(xml_path, f'unknown class {unknown[0]!r} (classes: {class_names})')
      if not skip_bad_records:
        raise error
      skipped.append({'path': error.path, 'problem': error.problem})
      log(f'skipped {error}')
      continue
    objects = annotation['objects']
    records.append(records_lib.make_record(
        image_id=image_id, path=image_path, height=annotation['height'],
        width=annotation['width'],
        gt_boxes=np.array([o['box'] for o in objects], np.float32).reshape(-1, 4),
        gt_labels=[index[o['name']] for o in objects],
        difficult=[o['difficult'] for o in objects]))
  records.sort(key=lambda r: r['image_id'])
  return records_lib.Dataset(name=name or f'voc:{root}', split=split, class_names=class_names,
                             records=records, skipped=skipped)
