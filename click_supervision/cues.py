"""Click cues: box-center score, box-area score, click initialisation (docs/method.md, 3-4).

All boxes are float32 [P, 4] `[ymin, xmin, ymax, xmax]` pixels and clicks `(y, x)` pixels
(`click_supervision.boxes`).

  box center (3):    s_bc(p) = exp(-||c_p - c||^2 / (2 sigma_p^2)), with sigma_p = sigma_bc (a
                     fixed number of pixels) or sigma_bc * sqrt(area(p)) (`relative=True`: the
                     tolerance grows with the proposal, like the annotators' error).
  box size:          z(p) = (min_q area(q) / area(p))^lambda over the image's proposals q: the
                     normaliser of the click's Gaussian likelihood. With relative sigma the
                     density of a click is exp(...) / (2 pi sigma_bc^2 area(p)): without the
                     1 / area(p) factor s_bc gives every box centered on the click the same score
                     whatever its size, so the product with objectness drifts to boxes too big
                     around the object (the commonest error). lambda = 1 is the exact likelihood,
                     0 the paper's s_bc; `MilConfig.size_exponent` tempers it (BUILD_NOTES).
  box area (4):      s_ba(p) = exp(-(log area(p) - mu(d))^2 / (2 sigma_ba^2)), where d is the
                     distance between the two clicks and mu(d) estimates the log object area
                     (`AreaModel`, fitted on clicks paired with boxes the evaluation does not use).
  initialisation (3): the largest window centered on the click that fits in the image.
"""

import dataclasses
import math

import numpy as np

from click_supervision import boxes as box_lib


def box_center_score(boxes, click, sigma, relative=False):
  """Box-center score of every box for one click.

  Args:
    boxes: float [P, 4] pixels.
    click: `(y, x)` pixels.
    sigma: sigma_bc: pixels, or a fraction of sqrt(box area) when `relative`.
    relative: scale sigma with each box's size.
  Returns:
    float32 [P] in (0, 1].
  """
  boxes = box_lib.as_boxes(boxes)
  centers = box_lib.centers(boxes)
  squared = ((centers - np.asarray(click, np.float32)[None]) ** 2).sum(axis=1)
  sigmas = sigma * np.sqrt(np.maximum(box_lib.area(boxes), 1.0)) if relative else np.full(
      len(boxes), float(sigma), np.float32)
  return np.exp(-squared / (2.0 * sigmas ** 2)).astype(np.float32)


def box_size_score(boxes, exponent):
  """Size factor of the box-center likelihood: `(min area / area(p)) ** exponent`.

  Args:
    boxes: float [P, 4] pixels, all proposals of one image (the smallest one scores 1; the
      factor is a per-image constant away from `area(p) ** -exponent`, so argmaxes do not
      depend on the scaling).
    exponent: lambda >= 0 (0: all ones).
  Returns:
    float32 [P] in (0, 1].
  """
  areas = np.maximum(box_lib.area(box_lib.as_boxes(boxes)), 1.0).astype(np.float64)
  if not exponent or not len(areas):
    return np.ones(len(areas), np.float32)
  return ((areas.min() / areas) ** float(exponent)).astype(np.float32)


def box_area_score(boxes, log_area, sigma_ba):
  """Box-area score: a Gaussian on the log-ratio of each box's area to the estimated area.

  Args:
    boxes: float [P, 4] pixels.
    log_area: mu, the estimated log object area (natural log of square pixels).
    sigma_ba: std of the Gaussian, in natural-log units.
  Returns:
    float32 [P] in (0, 1].
  """
  log_areas = np.log(np.maximum(box_lib.area(boxes), 1.0))
  return np.exp(-(log_areas - log_area) ** 2 / (2.0 * sigma_ba ** 2)).astype(np.float32)


def largest_centered_window(click, height, width):
  """The largest box centered on `click` that fits in the image (docs/method.md, section 3).

  Args:
    click: `(y, x)` pixels, inside the image.
    height, width: image size in pixels.
  Returns:
    float32 [4] `[ymin, xmin, ymax, xmax]`; at least 1 pixel wide and high (a click on the border
    would otherwise give an empty window).
  """
  y, x = float(click[0]), float(click[1])
  half_h = max(min(y, height - y), 0.5)
  half_w = max(min(x, width - x), 0.5)
  box = np.array([y - half_h, x - half_w, y + half_h, x + half_w], np.float32)
  return box_lib.clip_to_image(box[None], height, width)[0]


class AreaFitError(ValueError):
  """The (distance, area) pairs cannot determine mu(d)."""


@dataclasses.dataclass(frozen=True)
class AreaModel:
  """mu(d) = a0 + a1 * log(max(d, min_distance)): log object area from the inter-click distance.

  Attributes:
    a0, a1: coefficients (natural logs; d in pixels, area in square pixels).
    sigma: residual std of the fit (natural-log units), the default sigma_ba.
    min_distance: distances are clipped below at this many pixels (two clicks on the same pixel
      say little about size).
    num_pairs: pairs the fit used.
    source: where the pairs came from (never the images being localised).
  """
  a0: float
  a1: float
  sigma: float
  min_distance: float = 1.0
  num_pairs: int = 0
  source: str = ''

  def log_area(self, distance):
    """mu(d) for one distance or an array of distances (pixels)."""
    return self.a0 + self.a1 * np.log(np.maximum(distance, self.min_distance))

  @classmethod
  def fit(cls, distances, areas, min_distance=1.0, source=''):
    """Least squares of log(area) on log(max(d, min_distance)).

    Args:
      distances: float [N] pixels between the two clicks of each pair.
      areas: float [N] square pixels of the clicked object's box.
      min_distance: see the class docstring.
      source: description of the data, stored with the fit.
    Returns:
      AreaModel.
    Raises:
      AreaFitError with fewer than 3 pairs, or when all distances are equal (noise-free clicks).
    """
    distances = np.asarray(distances, np.float64)
    areas = np.asarray(areas, np.float64)
    if len(distances) < 3 or len(distances) != len(areas):
      raise AreaFitError(f'fitting mu(d) needs >= 3 (distance, area) pairs, got {len(distances)}')
    x = np.log(np.maximum(distances, min_distance))
    y = np.log(np.maximum(areas, 1.0))
    if np.ptp(x) < 1e-6:
      # E.g. clicks simulated without noise: every pair clicks one pixel, d = 0 says nothing
      # about size and the slope is undetermined.
      raise AreaFitError(f'fitting mu(d) needs varied inter-click distances; all {len(x)} pairs are '
                       f'{np.exp(x[0]):.1f} px apart')
    design = np.stack([np.ones_like(x), x], axis=1)
    (a0, a1), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ np.array([a0, a1])
    return cls(a0=float(a0), a1=float(a1), sigma=float(residual.std(ddof=2)),
               min_distance=float(min_distance), num_pairs=len(x), source=source)

  def to_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data):
    return cls(**data)


def click_distance(clicks):
  """Euclidean distance in pixels between the two clicks of float [2, 2] `(y, x)` clicks."""
  clicks = np.asarray(clicks, np.float64)
  return float(math.hypot(*(clicks[0] - clicks[1])))


def gold_pair_distances(dataset, click_set, gold_pairs, use_flagged=False):
  """(distance, area) of real two-click gold pairs whose clicks fall on the same instance.

  The data `AreaModel.fit` uses for real clicks: the hidden gold pairs of the click collection
  tool (`click_supervision.annotate`), whose boxes the user's annotations provide. Each click is
  assigned to the box of its class whose center is nearest; pairs whose two clicks get different
  boxes are left out (as `same_instance_pairs` leaves out simulated clicks on two instances).

  Args:
    dataset: `records.Dataset` the clicks refer to, with ground-truth boxes.
    click_set: `clicks.ClickSet`.
    gold_pairs: iterable of `(image_id, class_name)`.
    use_flagged: also use clicks of annotators flagged by quality control.
  Returns:
    (distances float64 [N] pixels, areas float64 [N] square pixels), N <= len(gold_pairs).
  """
  records = dataset.by_id()
  distances, areas = [], []
  for image_id, class_name in sorted(tuple(p) for p in gold_pairs):
    record = records.get(image_id)
    if record is None or class_name not in dataset.class_names:
      continue
    label = dataset.class_names.index(class_name)
    usable = [c for c in click_set.clicks.get((image_id, label), [])
              if use_flagged or not c.flagged][:2]
    boxes = record['gt_boxes'][record['gt_labels'] == label]
    if len(usable) < 2 or not len(boxes):
      continue
    centers = box_lib.centers(boxes)  # [B, 2] (y, x)
    nearest = [int(np.argmin(np.hypot(centers[:, 0] - c.y, centers[:, 1] - c.x)))
               for c in usable]
    if nearest[0] != nearest[1]:
      continue
    distances.append(math.hypot(usable[0].x - usable[1].x, usable[0].y - usable[1].y))
    areas.append(float(box_lib.area(boxes[nearest[0]][None])[0]))
  return np.array(distances), np.array(areas)


def same_instance_pairs(dataset, click_rows):
  """(distance, area) of every pair whose two clicks aimed at the same ground-truth instance.

  The data `AreaModel.fit` uses. Clicks on two different instances are left out: mu(d) models
  one object's size; two instances are the job of the different-instances rule.

  Args:
    dataset: `records.Dataset` WITH ground truth, never the images being localised.
    click_rows: click file rows (`clicks.simulate_clicks`) with `gt_instance`, two annotators.
  Returns:
    (distances float64 [N] pixels, areas float64 [N] square pixels).
  """
  records = dataset.by_id()
  by_pair = {}
  for row in click_rows:
    by_pair.setdefault((row['image_id'], row['class']), []).append(row)
  distances, areas = [], []
  for (image_id, _), rows in sorted(by_pair.items()):
    if len(rows) < 2 or rows[0]['gt_instance'] != rows[1]['gt_instance']:
      continue
    box = records[image_id]['gt_boxes'][rows[0]['gt_instance']]
    distances.append(math.hypot(rows[0]['x'] - rows[1]['x'], rows[0]['y'] - rows[1]['y']))
    areas.append(float(box_lib.area(box[None])[0]))
  return np.array(distances), np.array(areas)
