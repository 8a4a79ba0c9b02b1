"""Fast R-CNN box-regression targets, in the library's `[ymin, xmin, ymax, xmax]` pixel boxes.

For a RoI with center (cy, cx) and size (h, w) and a target box with (gy, gx, gh, gw), the
deltas are `((gy - cy) / h, (gx - cx) / w, log(gh / h), log(gw / w))`, divided by
`TARGET_STDS`: Fast R-CNN's normalisation (means 0, standard deviations 0.1 for the center and
0.2 for the size), which makes the four numbers of similar scale for the smooth-L1 loss. The
order is (y, x, h, w), matching the box convention.
"""

import numpy as np
import tensorflow as tf

TARGET_STDS = np.array([0.1, 0.1, 0.2, 0.2], np.float32)
# exp() of a delta larger than this would grow a box by more than 1000/16 ~ 62x: clamp, as
# Detectron does, so one wild prediction cannot overflow.
MAX_LOG_SCALE = float(np.log(1000.0 / 16.0))


def _center_size(boxes):
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  size = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-3)
  return boxes[:, :2] + size / 2, size


def encode(rois, targets):
  """Normalised deltas that move `rois` onto `targets`.

  Args:
    rois, targets: float [N, 4] pixel boxes, row i of one matched to row i of the other.
  Returns:
    float32 [N, 4] deltas (ty, tx, th, tw) / TARGET_STDS.
  """
  center, size = _center_size(rois)
  target_center, target_size = _center_size(targets)
  deltas = np.concatenate([(target_center - center) / size, np.log(target_size / size)], axis=1)
  return (deltas / TARGET_STDS).astype(np.float32)


def decode(rois, deltas):
  """The boxes `deltas` (as `encode` gives them) make of `rois`, in TensorFlow ops (eager or in a
  `tf.function`; the serving recipe, `detector.serving`, decodes with it).

  Args:
    rois: float [N, 4] pixel boxes.
    deltas: float [N, 4] or [N, K, 4] normalised deltas (K boxes per RoI, e.g. one per class).
  Returns:
    float32 tensor of boxes of the shape of `deltas`.
  """
  rois = tf.convert_to_tensor(rois, tf.float32)
  deltas = tf.convert_to_tensor(deltas, tf.float32)
  squeeze = deltas.shape.rank == 2
  if squeeze:
    deltas = deltas[:, None]
  size = tf.maximum(rois[:, 2:] - rois[:, :2], 1e-3)
  center = rois[:, :2] + size / 2
  deltas = deltas * TARGET_STDS
  new_center = center[:, None] + deltas[..., :2] * size[:, None]
  new_size = size[:, None] * tf.exp(tf.minimum(deltas[..., 2:], MAX_LOG_SCALE))
  boxes = tf.concat([new_center - new_size / 2, new_center + new_size / 2], axis=-1)
  return boxes[:, 0] if squeeze else boxes
