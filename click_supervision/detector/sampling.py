"""RoI sampling for detector training: which proposals of an image are foreground, which are
background, and what each foreground RoI regresses to (Fast R-CNN's recipe).

The training boxes of an image are the MIL localisations (one per positive class) or drawn
boxes (`--supervision=boxes|boxes_all`); they are added to the candidate RoIs, as Fast R-CNN adds
its ground truth, so every class present has at least one exact foreground RoI.
"""

import numpy as np

from click_supervision import boxes as box_lib
from click_supervision.detector import box_coding


def sample_rois(proposals, boxes, labels, num_rois, rng, foreground_fraction=0.25,
                foreground_iou=0.5, background_iou_low=0.1):
  """Samples one image's training RoIs.

  A candidate is foreground when its best IoU with a training box is >= `foreground_iou` (label:
  that box's class + 1), background when it is in [background_iou_low, foreground_iou) (label 0).
  At most `foreground_fraction` of `num_rois` are foreground; background fills the rest. When
  the background in that IoU range is short, background below `background_iou_low` tops it up
  (an image covered by one big object has little else).

  Args:
    proposals: float32 [P, 4] pixel boxes.
    boxes: float32 [G, 4] training boxes (G may be 0: the image gives background only).
    labels: int [G] class indices of `boxes`, in [0, C).
    num_rois: RoIs to return at most.
    rng: numpy Generator.
    foreground_fraction, foreground_iou, background_iou_low: the recipe above.
  Returns:
    dict with `rois` float32 [R, 4], `labels` int32 [R] (0 background, c + 1 class c),
    `targets` float32 [R, 4] normalised box deltas (zeros for background); R <= num_rois.
  """
  proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  labels = np.asarray(labels, np.int64).reshape(-1)
  candidates = np.concatenate([proposals, boxes])
  candidates = candidates[box_lib.is_valid(candidates)]
  if len(boxes):
    iou = box_lib.pairwise_iou(candidates, boxes)
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(len(candidates)), best]
  else:
    best = np.zeros(len(candidates), np.int64)
    best_iou = np.zeros(len(candidates), np.float32)

  foreground = np.flatnonzero(best_iou >= foreground_iou)
  num_foreground = min(len(foreground), int(round(foreground_fraction * num_rois)))
  foreground = rng.choice(foreground, num_foreground, replace=False)
  background = np.flatnonzero((best_iou < foreground_iou) & (best_iou >= background_iou_low))
  num_background = num_rois - num_foreground
  if len(background) < num_background:
    low = np.flatnonzero(best_iou < background_iou_low)
    extra = rng.choice(low, min(len(low), num_background - len(background)), replace=False)
    background = np.concatenate([background, extra])
  else:
    background = rng.choice(background, num_background, replace=False)

  keep = np.concatenate([foreground, background]).astype(np.int64)
  rois = candidates[keep]
  roi_labels = np.zeros(len(keep), np.int32)
  targets = np.zeros((len(keep), 4), np.float32)
  if num_foreground:
    roi_labels[:num_foreground] = labels[best[foreground]] + 1
    targets[:num_foreground] = box_coding.encode(rois[:num_foreground], boxes[best[foreground]])
  return {'rois': rois, 'labels': roi_labels, 'targets': targets}


def other_instance_candidates(rois, boxes, labels, num_classes, max_overlap=0.5):
  """Which classes each RoI could be another, unboxed instance of (`DetectorConfig.ignore_rule`).

  The training boxes of an image say where one instance of each present class is, not that the
  rest of the image is background. A RoI that lies mostly outside every training box of a
  present class c (less than `max_overlap` of its area inside one) is neither that instance nor
  a part of it, and could be another instance of c; the training step ignores such a background
  RoI when the detector already scores it high for c. (A part of the boxed object lies inside
  its box and stays a background example.)

  Args:
    rois: float32 [R, 4] pixel boxes.
    boxes: float32 [G, 4] the image's training boxes.
    labels: int [G] their class indices (the present classes).
    num_classes: C.
    max_overlap: fraction of a RoI's area inside a box below which it lies outside it.
  Returns:
    float32 [R, C]: 1 where class c is present and the RoI lies outside all of c's boxes.
  """
  rois = np.asarray(rois, np.float32).reshape(-1, 4)
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  labels = np.asarray(labels, np.int64).reshape(-1)
  out = np.zeros((len(rois), num_classes), np.float32)
  if not len(boxes) or not len(rois):
    return out
  top_left = np.maximum(rois[:, None, :2], boxes[None, :, :2])
  bottom_right = np.minimum(rois[:, None, 2:], boxes[None, :, 2:])
  inside = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)  # [R, G]
  area = np.prod(np.clip(rois[:, 2:] - rois[:, :2], 0, None), axis=1)
  inside = inside / np.maximum(area, 1e-6)[:, None]
  for c in np.unique(labels):
    out[:, c] = inside[:, labels == c].max(axis=1) < max_overlap
  return out
