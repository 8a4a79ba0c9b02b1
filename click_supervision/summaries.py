"""TensorBoard summaries of a run: CorLoc and selection changes per MIL iteration, and images with
their selected boxes and clicks drawn."""

import os

import cv2
import numpy as np
import tensorflow as tf

from click_supervision.datasets import images as images_lib

# Drawing colours (RGB): selected box, ground truth, clicks.
SELECTED = (255, 64, 0)
GROUND_TRUTH = (0, 200, 0)
CLICK = (255, 230, 0)


def flat_hparams(config):
  """A `config.Config` as TensorBoard HParams: dotted names -> bool, int, float or str (tuples
  and None as text)."""
  flat = {}

  def add(prefix, value):
    if isinstance(value, dict):
      for key, inner in value.items():
        add(f'{prefix}.{key}' if prefix else key, inner)
    elif isinstance(value, (bool, int, float, str)):
      flat[prefix] = value
    else:
      flat[prefix] = str(value)

  add('', config.to_dict())
  return flat


def write_hparams(logdir, config):
  """The run's settings to the HParams plugin, so TensorBoard compares runs side by side (one
  logdir of several run folders: `tensorboard --logdir=runs`)."""
  from tensorboard.plugins.hparams import api as hparams_api  # pylint: disable=g-import-not-at-top
  with writer(logdir).as_default():
    hparams_api.hparams(flat_hparams(config), trial_id=os.path.basename(config.workdir))


def writer(logdir):
  """One TensorBoard writer per run (`tf.summary.create_file_writer`)."""
  return tf.summary.create_file_writer(logdir)


def write_iteration(summary_writer, iteration, info, prefix='mil'):
  """Scalars `<prefix>/corloc` and `<prefix>/selection_changes` at step `iteration`."""
  with summary_writer.as_default():
    tf.summary.scalar(f'{prefix}/corloc', info['corloc'], step=iteration)
    tf.summary.scalar(f'{prefix}/selection_changes', info['changes'], step=iteration)
  summary_writer.flush()


def _drawing_canvas(record, max_side):
  """The record's image scaled to at most `max_side` px (a writable copy), a function mapping a
  pixel box to OpenCV rectangle corners on it, and the scale."""
  image = images_lib.load_image(record['path'])
  scale = min(1.0, max_side / max(image.shape[:2]))
  if scale < 1.0:
    image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)
  image = np.array(image)  # A writable copy (PIL arrays are read-only).

  def corners(box):
    ymin, xmin, ymax, xmax = (np.asarray(box) * scale).round().astype(int)
    return (xmin, ymin), (max(xmax - 1, xmin), max(ymax - 1, ymin))

  return image, corners, scale


def draw_localizations(record, selections, clicks, class_names, max_side=480):
  """The image with ground truth (green), selected boxes (orange, class name) and clicks (yellow).

  Args:
    record: record dict.
    selections: dict class_index -> box float [4] pixels.
    clicks: dict class_index -> float [C, 2] `(y, x)` pixels.
    class_names: list of str.
    max_side: the drawing is scaled down to at most this many pixels.
  Returns:
    uint8 [h, w, 3] RGB.
  """
  image, corners, scale = _drawing_canvas(record, max_side)

  for box, label in zip(record['gt_boxes'], record['gt_labels']):
    if int(label) in selections:
      cv2.rectangle(image, *corners(box), GROUND_TRUTH, 1)
  for label, box in selections.items():
    top_left, bottom_right = corners(box)
    cv2.rectangle(image, top_left, bottom_right, SELECTED, 2)
    cv2.putText(image, class_names[label], (top_left[0] + 2, top_left[1] + 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, SELECTED, 1, cv2.LINE_AA)
  for points in clicks.values():
    for y, x in np.asarray(points).reshape(-1, 2):
      cv2.circle(image, (int(round(x * scale)), int(round(y * scale))), 4, CLICK, -1)
  return image


def write_localization_images(summary_writer, records, selections, clicks, class_names, step,
                              num_images=4):
  """Image summary `mil/localizations` of the first `num_images` records.

  Args:
    selections: dict `(image_id, class_index)` -> box.
    clicks: dict `(image_id, class_index)` -> float [C, 2].
  """
  with summary_writer.as_default():
    for index, record in enumerate(records[:num_images]):
      image_id = record['image_id']
      boxes = {int(c): selections[(image_id, int(c))] for c in record['image_labels']}
      points = {int(c): clicks.get((image_id, int(c)), np.zeros((0, 2)))
                for c in record['image_labels']}
      drawing = draw_localizations(record, boxes, points, class_names)
      tf.summary.image(f'mil/localizations/{index}_{image_id}', drawing[None], step=step)
  summary_writer.flush()


def draw_detections(record, boxes, labels, scores, class_names, min_score=0.3, max_side=480):
  """The image with ground truth (green) and detections scoring >= `min_score` (orange, class
  name and score).

  Args:
    record: record dict.
    boxes: float [D, 4] pixels; labels: int [D]; scores: float [D].
    class_names: list of str.
  Returns:
    uint8 [h, w, 3] RGB.
  """
  image, corners, _ = _drawing_canvas(record, max_side)

  for box in record['gt_boxes']:
    cv2.rectangle(image, *corners(box), GROUND_TRUTH, 1)
  for box, label, score in zip(boxes, labels, scores):
    if score < min_score:
      continue
    top_left, bottom_right = corners(box)
    cv2.rectangle(image, top_left, bottom_right, SELECTED, 2)
    cv2.putText(image, f'{class_names[int(label)]} {score:.2f}',
                (top_left[0] + 2, top_left[1] + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, SELECTED, 1, cv2.LINE_AA)
  return image


def write_detection_images(summary_writer, records, detections, class_names, step, num_images=4):
  """Image summary `detector/detections` of the first `num_images` test records.

  Args:
    detections: list of detection dicts (`evaluation` module docstring).
  """
  by_image = {}
  for d in detections:
    by_image.setdefault(str(d['image_id']), []).append(d)
  with summary_writer.as_default():
    for index, record in enumerate(records[:num_images]):
      found = by_image.get(record['image_id'], [])
      drawing = draw_detections(record, [d['box'] for d in found], [d['label'] for d in found],
                                [d['score'] for d in found], class_names)
      tf.summary.image(f'detector/detections/{index}_{record["image_id"]}', drawing[None],
                       step=step)
  summary_writer.flush()
