"""Box math in numpy.

Convention used everywhere inside the library (decided here, converted at the edges):
  * boxes are float32 arrays of shape [..., 4] ordered `[ymin, xmin, ymax, xmax]`;
  * units are **pixels** in a continuous frame whose origin is the top-left corner of the image;
  * 0-based and end-exclusive: pixel column j (0-based) covers x in [j, j + 1), so a box covering
    pixel columns 0..9 has xmin = 0, xmax = 10 and width xmax - xmin = 10.
  * a click `(y, x)` lives in the same frame.

Each external format is converted in exactly one function of this module:
  * VOC XML: 1-based inclusive integer pixel indices (xmin, ymin, xmax, ymax) -> `from_voc_xml`.
  * COCO JSON: `[x, y, w, h]` in the same continuous pixel frame as ours -> `from_coco_xywh`.
  * TFDS `BBoxFeature`: normalized `[ymin, xmin, ymax, xmax]` in [0, 1] -> `from_normalized`.
"""

import numpy as np


def as_boxes(boxes):
  """Returns `boxes` as a float32 array of shape [N, 4] (an empty list gives [0, 4])."""
  boxes = np.asarray(boxes, dtype=np.float32)
  if boxes.size == 0:
    return np.zeros((0, 4), np.float32)
  if boxes.shape[-1] != 4:
    raise ValueError(f'boxes must have a last dimension of 4, got shape {boxes.shape}')
  return boxes


def area(boxes):
  """Areas in square pixels.

  Args:
    boxes: float [..., 4] `[ymin, xmin, ymax, xmax]`.
  Returns:
    float32 [...]; degenerate boxes (max < min) have area 0.
  """
  boxes = np.asarray(boxes, np.float32)
  heights = np.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
  widths = np.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
  return heights * widths


def centers(boxes):
  """Box centers `(y, x)` in pixels: float32 [..., 2]."""
  boxes = np.asarray(boxes, np.float32)
  return np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2],
                  axis=-1)


def pairwise_iou(boxes_a, boxes_b):
  """Intersection over union of every box in `boxes_a` with every box in `boxes_b`.

  Args:
    boxes_a: float [N, 4].
    boxes_b: float [M, 4].
  Returns:
    float32 [N, M]; 0 where the union is empty.
  """
  boxes_a, boxes_b = as_boxes(boxes_a), as_boxes(boxes_b)
  ymin = np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
  xmin = np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
  ymax = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
  xmax = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
  intersection = np.maximum(ymax - ymin, 0.0) * np.maximum(xmax - xmin, 0.0)
  union = area(boxes_a)[:, None] + area(boxes_b)[None, :] - intersection
  with np.errstate(divide='ignore', invalid='ignore'):
    iou = np.where(union > 0, intersection / union, 0.0)
  return iou.astype(np.float32)


def clip_to_image(boxes, height, width):
  """Clips boxes to the image `[0, height] x [0, width]`; returns float32 [N, 4]."""
  boxes = as_boxes(boxes).copy()
  boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0.0, height)
  boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0.0, width)
  return boxes


def is_valid(boxes):
  """True for boxes with positive height and width: bool [N]."""
  boxes = as_boxes(boxes)
  return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def from_voc_xml(xmin, ymin, xmax, ymax):
  """Converts one VOC XML `<bndbox>` to our frame.

  VOC stores 1-based, inclusive pixel indices: a box covering the first ten pixel columns has
  xmin = 1, xmax = 10. Pixel index i (1-based) covers [i - 1, i) in our 0-based continuous frame,
  so the box starts at xmin - 1 and ends (exclusive) at xmax:
      ours = [ymin - 1, xmin - 1, ymax, xmax]    e.g. VOC (1, 1, 10, 10) -> [0, 0, 10, 10].
  This is the only place in the library that does this arithmetic.

  Returns:
    float32 [4] `[ymin, xmin, ymax, xmax]`.
  """
  return np.array([ymin - 1.0, xmin - 1.0, ymax, xmax], np.float32)


def to_voc_xml(box):
  """Inverse of `from_voc_xml`: returns integer `(xmin, ymin, xmax, ymax)`, 1-based inclusive."""
  ymin, xmin, ymax, xmax = (float(v) for v in box)
  return (int(round(xmin)) + 1, int(round(ymin)) + 1, int(round(xmax)), int(round(ymax)))


def from_coco_xywh(boxes_xywh):
  """COCO `[x, y, w, h]` (pixels, same continuous frame) -> float32 [N, 4] `[ymin, xmin, ymax, xmax]`."""
  xywh = np.asarray(boxes_xywh, np.float32).reshape(-1, 4)
  x, y, w, h = xywh[:, 0], xywh[:, 1], xywh[:, 2], xywh[:, 3]
  return np.stack([y, x, y + h, x + w], axis=1)


def to_coco_xywh(boxes):
  """`[ymin, xmin, ymax, xmax]` -> COCO `[x, y, w, h]`, float32 [N, 4]."""
  boxes = as_boxes(boxes)
  return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]],
                  axis=1)


def from_normalized(boxes, height, width):
  """TFDS normalized `[ymin, xmin, ymax, xmax]` in [0, 1] -> pixels, float32 [N, 4]."""
  boxes = as_boxes(boxes)
  return boxes * np.array([height, width, height, width], np.float32)
