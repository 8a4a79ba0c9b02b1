"""Evaluation metrics: CorLoc, PASCAL VOC AP and COCO AP, in numpy.

All boxes are float `[ymin, xmin, ymax, xmax]` in pixels, 0-based and end-exclusive (see
`click_supervision.boxes`); ground truth comes from the records of
`click_supervision.datasets.records`.

Detections (for `voc_ap` and `coco_ap`) have one canonical form, a list of dicts, one per box:

  image_id: str, the `image_id` of a record.
  label:    int, class index in `[0, num_classes)`.
  box:      float [4], `[ymin, xmin, ymax, xmax]` in pixels.
  score:    float, higher is more confident.

`detection_dicts` builds that list from the per-image arrays a detector returns.
"""

import contextlib
import io

import numpy as np

from click_supervision import boxes as box_lib


def detection_dicts(image_id, boxes, labels, scores):
  """Per-image detector output -> the canonical detection list (module docstring).

  Args:
    image_id: str, the record's `image_id`.
    boxes: float [D, 4] `[ymin, xmin, ymax, xmax]` in pixels.
    labels: int [D] class indices.
    scores: float [D].
  Returns:
    list of D dicts `{'image_id', 'label', 'box', 'score'}`.
  """
  boxes = box_lib.as_boxes(boxes)
  labels = np.asarray(labels).reshape(-1)
  scores = np.asarray(scores, np.float64).reshape(-1)
  if not len(boxes) == len(labels) == len(scores):
    raise ValueError(f'{image_id}: {len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores')
  return [{'image_id': str(image_id), 'label': int(label), 'box': box, 'score': float(score)}
          for box, label, score in zip(boxes, labels, scores)]


def _gt_of_class(record, class_index):
  """Ground truth of one class in one image: (boxes float32 [G, 4], difficult bool [G])."""
  of_class = record['gt_labels'] == class_index
  return record['gt_boxes'][of_class], record['difficult'][of_class]


def _nan_mean(values):
  """Mean of the non-NaN values; NaN (without numpy's warning) when there are none."""
  values = np.asarray(values, np.float64)
  values = values[~np.isnan(values)]
  return float(values.mean()) if len(values) else float('nan')


def corloc(records, localizations, num_classes, iou_threshold=0.5):
  """Correct Localization, as the WSOD literature and the paper count it: per class, then the mean.

  A positive pair is `(image_id, c)` for every class `c` in the record's `image_labels` (the weak
  labels the learner sees). It is correct when its selected box has IoU >= `iou_threshold` with any
  ground-truth box of class `c` in that image, difficult instances included: a box on a difficult
  object does localize the class. A pair without a localization counts as wrong (and in
  `num_missing`), so a learner cannot raise its CorLoc by skipping hard pairs. Crowd regions are
  not ground-truth boxes here (records only derive `image_labels` from non-crowd boxes).

  `corloc` is the mean over classes of each class's fraction of correct pairs, classes without
  pairs left out of the mean (not counted as zero); `corloc_pooled` is the fraction over all
  pairs, which weighs frequent classes (VOC's person) more.

  Args:
    records: list of record dicts (`click_supervision.datasets.records`).
    localizations: dict `(image_id: str, class_index: int) -> box` float [4] `[ymin, xmin, ymax,
      xmax]` in pixels; one selected box per positive pair.
    num_classes: int, length of `per_class`.
    iou_threshold: float, inclusive IoU threshold (0.5 in the paper).
  Returns:
    dict with
      corloc: float, mean over classes with pairs of the per-class CorLoc (NaN without pairs).
      corloc_pooled: float, correct / all positive pairs.
      corloc_non_difficult, corloc_pooled_non_difficult: the same over the pairs with at least
        one non-difficult instance of the class (the same correctness rule: any instance,
        difficult or not, counts).
      num_pairs, num_pairs_non_difficult, num_correct, num_missing: int.
      per_class, per_class_non_difficult: lists of `num_classes` floats (NaN for a class with no
        such pair).
      correct: dict `(image_id, class_index) -> bool` for every positive pair, for error analysis.
  Raises:
    ValueError: a key of `localizations` is not a positive pair (names the first such key).
  """
  positive_pairs = [(r['image_id'], int(c)) for r in records for c in r['image_labels']]
  positive_set = set(positive_pairs)
  for key in localizations:
    image_id, class_index = key
    if (str(image_id), int(class_index)) not in positive_set:
      raise ValueError(f'localization for {key!r}, which is not a positive (image, class) pair')
  # Keys normalized once, so numpy integer class indices look up the same as Python ints.
  selected = {(str(i), int(c)): box for (i, c), box in localizations.items()}

  correct = {}
  non_difficult = {}
  for record in records:
    for c in record['image_labels']:
      pair = (record['image_id'], int(c))
      gt_boxes, difficult = _gt_of_class(record, c)
      non_difficult[pair] = bool(np.any(~difficult))
      box = selected.get(pair)
      if box is None:
        correct[pair] = False
        continue
      iou = box_lib.pairwise_iou(np.reshape(np.asarray(box, np.float32), (1, 4)), gt_boxes)
      correct[pair] = bool(np.any(iou >= iou_threshold))

  def fraction(pairs):
    return float(np.mean([correct[p] for p in pairs])) if pairs else float('nan')

  pairs_non_difficult = [p for p in positive_pairs if non_difficult[p]]
  per_class = [fraction([p for p in positive_pairs if p[1] == c]) for c in range(num_classes)]
  per_class_non_difficult = [fraction([p for p in pairs_non_difficult if p[1] == c])
                             for c in range(num_classes)]
  return {
      'corloc': _nan_mean(per_class),
      'corloc_pooled': fraction(positive_pairs),
      'corloc_non_difficult': _nan_mean(per_class_non_difficult),
      'corloc_pooled_non_difficult': fraction(pairs_non_difficult),
      'num_pairs': len(positive_pairs),
      'num_pairs_non_difficult': len(pairs_non_difficult),
      'num_correct': int(sum(correct.values())),
      'num_missing': sum(p not in selected for p in positive_pairs),
      'per_class': per_class,
      'per_class_non_difficult': per_class_non_difficult,
      'correct': correct,
  }


def _average_precision(recall, precision, use_11_point):
  """AP of one precision/recall curve (float64 [D] each, in detection rank order)."""
  if use_11_point:
    # VOC2007: mean over t in {0, 0.1, ..., 1} of the best precision at recall >= t. The
    # thresholds are k / 10, the correctly rounded decimals, so a recall of exactly 3/10 reaches
    # t = 0.3 (the Python devkit's `np.arange(0., 1.1, 0.1)` gives 0.30000000000000004 instead).
    # Averaged as a sum / 11 (not by adding p / 11 eleven times) so a perfect curve gives 1.0.
    best = [precision[recall >= t].max() if np.any(recall >= t) else 0.0
            for t in np.arange(11) / 10.0]
    return float(np.sum(best) / 11.0)
  # VOC2010+: area under the precision envelope (precision made non-increasing in recall).
  recall = np.concatenate([[0.0], recall, [1.0]])
  precision = np.concatenate([[0.0], precision, [0.0]])
  precision = np.maximum.accumulate(precision[::-1])[::-1]
  steps = np.flatnonzero(recall[1:] != recall[:-1])
  return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def voc_ap(detections, records, num_classes, iou_threshold=0.5, use_11_point=True):
  """PASCAL VOC average precision per class and its mean (mAP), following the VOC devkit.

  Per class, detections are sorted by descending score (a stable sort: ties keep input order).
  Each detection is compared with every ground-truth box of its class in its image, difficult and
  already-matched ones included, and takes the one with the highest IoU. If that IoU is >=
  `iou_threshold` (inclusive, as the MATLAB devkit's `ovmax >= minoverlap`): on a difficult box the
  detection is ignored (neither true nor false positive); on a not yet matched box it is a true
  positive and marks the box matched; on an already matched box it is a false positive (a
  duplicate), even when another, unmatched box also overlaps enough, as in the devkit. Below the
  threshold, or in an image without boxes of its class, it is a false positive. The number of
  positives is the number of non-difficult boxes.

  Differences from the devkit: IoU uses our continuous end-exclusive boxes (area = height * width,
  without the devkit's +1 pixel of its inclusive integer boxes); the 11-point thresholds are
  exactly k / 10 (see `_average_precision`). Crowd regions (`crowd_boxes`, COCO only) are ignored:
  a detection on a crowd region is a false positive, as VOC has no such regions.

  Args:
    detections: list of detection dicts (module docstring).
    records: list of record dicts; every detection's `image_id` must be one of them.
    num_classes: int.
    iou_threshold: float, 0.5 for PASCAL.
    use_11_point: True for the VOC2007 11-point interpolated AP, False for the VOC2010+ area
      under the monotone precision envelope.
  Returns:
    dict with
      map: float, mean of the defined (non-NaN) per-class APs; NaN when none is defined.
      ap_per_class: list of `num_classes` floats; NaN for a class without non-difficult boxes.
        A class with positives and no detections has AP 0.
      num_positives: list of `num_classes` ints, non-difficult boxes per class.
  Raises:
    ValueError: a detection names an unknown image or a label outside `[0, num_classes)`.
  """
  by_id = {r['image_id']: r for r in records}
  per_class = [[] for _ in range(num_classes)]
  for detection in detections:
    image_id, label = str(detection['image_id']), int(detection['label'])
    if image_id not in by_id:
      raise ValueError(f'detection on unknown image {image_id!r}')
    if not 0 <= label < num_classes:
      raise ValueError(f'detection label {label} outside [0, {num_classes})')
    per_class[label].append(detection)

  ap_per_class, num_positives = [], []
  for c in range(num_classes):
    gt = {r['image_id']: _gt_of_class(r, c) for r in records}
    matched = {image_id: np.zeros(len(d), bool) for image_id, (_, d) in gt.items()}
    npos = int(sum(np.sum(~d) for _, d in gt.values()))
    num_positives.append(npos)
    if npos == 0:
      ap_per_class.append(float('nan'))
      continue

    scores = np.array([d['score'] for d in per_class[c]], np.float64)
    is_tp = []  # One bool per detection that is not ignored, in rank order.
    for index in np.argsort(-scores, kind='stable'):
      detection = per_class[c][index]
      gt_boxes, difficult = gt[str(detection['image_id'])]
      box = np.reshape(np.asarray(detection['box'], np.float32), (1, 4))
      iou = box_lib.pairwise_iou(box, gt_boxes)[0]
      if len(iou) == 0 or iou.max() < iou_threshold:
        is_tp.append(False)
        continue
      best = int(np.argmax(iou))
      if difficult[best]:
        continue  # Ignored: the devkit's tp = fp = 0 adds no new point to the curve.
      was_matched = matched[str(detection['image_id'])][best]
      matched[str(detection['image_id'])][best] = True
      is_tp.append(not was_matched)

    is_tp = np.array(is_tp, bool)
    true_positives = np.cumsum(is_tp)
    recall = true_positives / npos
    precision = true_positives / np.arange(1, len(is_tp) + 1)
    ap_per_class.append(float(_average_precision(recall, precision, use_11_point)))

  return {'map': _nan_mean(ap_per_class), 'ap_per_class': ap_per_class,
          'num_positives': num_positives}


def coco_ground_truth(images, categories, annotations):
  """The COCO-format dict pycocotools evaluates against. `info` is required by pycocotools
  2.0.9 and 2.0.10 (`loadRes` copies it; 2.0.11 no longer needs it), both allowed by setup.py."""
  return {'info': {'description': 'click_supervision ground truth'}, 'licenses': [],
          'images': images, 'categories': categories, 'annotations': annotations}


def coco_ap(detections, records, class_names):
  """COCO box AP computed by pycocotools from in-memory ground truth.

  The ground truth is built from the records: image ids become 1, 2, ... in record order, class
  index c becomes category id c + 1 (annotation ids start at 1 too: pycocotools reads a matched
  ground-truth id of 0 as "unmatched"). Boxes go through `boxes.to_coco_xywh`; an annotation's
  `area`, which picks the small / medium / large range, is its box area in square pixels (records
  carry no masks).

  Ignored regions: `crowd_boxes` become `iscrowd=1` annotations, which pycocotools neither counts as
  positives nor as misses, and a detection on one is ignored rather than a false positive.
  Difficult boxes (VOC only) get the same `iscrowd=1` treatment: it is the closest match to VOC's
  "neither a positive nor a miss, and a detection on it is ignored". One difference remains:
  pycocotools measures overlap with a crowd box as intersection / detection area (not IoU), and
  tries crowd boxes only after no regular box matched, so slightly more detections near a difficult
  box are ignored than under `voc_ap`.

  pycocotools keeps at most 100 detections per image (by score) for these numbers; its printed
  output is swallowed. With no detections pycocotools' `loadRes` fails, so an empty result set is
  built directly: AP is then 0 where ground truth exists.

  Args:
    detections: list of detection dicts (module docstring).
    records: list of record dicts; every detection's `image_id` must be one of them.
    class_names: list of str; its length is the number of classes.
  Returns:
    dict of floats `ap` (AP averaged over IoU 0.50:0.05:0.95), `ap50`, `ap75`, `ap_small`,
    `ap_medium`, `ap_large`; NaN where pycocotools reports -1 (no ground truth in that range).
  Raises:
    ValueError: a detection names an unknown image or a label outside `[0, len(class_names))`.
  """
  # Imported here so that the rest of the library does not need pycocotools.
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  coco_image_id = {r['image_id']: i for i, r in enumerate(records, start=1)}
  images = [{'id': coco_image_id[r['image_id']], 'height': r['height'], 'width': r['width'],
             'file_name': r.get('path', '')} for r in records]
  categories = [{'id': c + 1, 'name': name} for c, name in enumerate(class_names)]
  annotations = []
  for record in records:
    regions = [(record['gt_boxes'], record['gt_labels'], record['difficult']),
               (record['crowd_boxes'], record['crowd_labels'],
                np.ones(len(record['crowd_labels']), bool))]
    for boxes, labels, ignored in regions:
      for xywh, label, is_ignored in zip(box_lib.to_coco_xywh(boxes), labels, ignored):
        annotations.append({
            'id': len(annotations) + 1,
            'image_id': coco_image_id[record['image_id']],
            'category_id': int(label) + 1,
            'bbox': [float(v) for v in xywh],
            'area': float(xywh[2] * xywh[3]),
            'iscrowd': int(is_ignored),
        })

  results = []
  for detection in detections:
    image_id, label = str(detection['image_id']), int(detection['label'])
    if image_id not in coco_image_id:
      raise ValueError(f'detection on unknown image {image_id!r}')
    if not 0 <= label < len(class_names):
      raise ValueError(f'detection label {label} outside [0, {len(class_names)})')
    xywh = box_lib.to_coco_xywh(np.reshape(np.asarray(detection['box'], np.float32), (1, 4)))[0]
    results.append({'image_id': coco_image_id[image_id], 'category_id': label + 1,
                    'bbox': [float(v) for v in xywh], 'score': float(detection['score'])})

  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = coco_ground_truth(images, categories, annotations)
    coco_gt.createIndex()
    if results:
      coco_dt = coco_gt.loadRes(results)
    else:
      coco_dt = COCO()
      coco_dt.dataset = coco_ground_truth(images, categories, [])
      coco_dt.createIndex()
    coco_eval = COCOeval(coco_gt, coco_dt, iouType='bbox')
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()

  names = ['ap', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large']
  return {name: float('nan') if value < 0 else float(value)
          for name, value in zip(names, coco_eval.stats[:6])}


def detection_metrics(detections, records, class_names, coco=False):
  """The detector stage's mAP numbers for results.json.

  Args:
    detections: list of detection dicts (module docstring).
    records: the test records.
    class_names: list of str.
    coco: COCO data: `map` is pycocotools' AP@[.5:.95] and `map50` its AP@0.5; otherwise `map`
      is the VOC2007 11-point AP at IoU 0.5.
  Returns:
    dict with `map`, `map_metric` (in words), `map_per_class` (class name -> VOC-style AP at IoU
    0.5, 11-point for VOC data, area under the envelope for COCO data; NaN for a class without
    positives), and for COCO `map50` and `map_coco` (every pycocotools number).
  """
  voc = voc_ap(detections, records, len(class_names), use_11_point=not coco)
  result = {'map_per_class': dict(zip(class_names, voc['ap_per_class']))}
  if coco:
    numbers = coco_ap(detections, records, class_names)
    result.update(map=numbers['ap'], map50=numbers['ap50'], map_metric='COCO AP@[.5:.95]',
                  map_coco=numbers)
  else:
    result.update(map=voc['map'], map_metric='VOC2007 11-point AP@0.5')
  return result
