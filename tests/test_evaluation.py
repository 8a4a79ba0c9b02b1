"""Tests for click_supervision.evaluation: tiny hand-checked cases."""

import math

import numpy as np
import pytest

from click_supervision import evaluation
from click_supervision.datasets.records import make_record


def _record(image_id, gt_boxes, gt_labels, difficult=None, crowd_boxes=None, crowd_labels=None):
  return make_record(image_id, f'/images/{image_id}.jpg', 100, 100, gt_boxes, gt_labels,
                     difficult=difficult, crowd_boxes=crowd_boxes, crowd_labels=crowd_labels)


def _det(image_id, label, box, score):
  return {'image_id': image_id, 'label': label, 'box': box, 'score': score}


BOX_A = [0, 0, 10, 10]
BOX_B = [50, 50, 60, 60]
FAR_AWAY = [80, 80, 90, 90]


# ---------------------------------------------------------------------------------------- CorLoc


def _two_image_records():
  # Image a: one class-0 object. Image b: one class-0 and one class-1 object.
  return [_record('a', [BOX_A], [0]), _record('b', [BOX_A, BOX_B], [0, 1])]


def test_corloc_perfect():
  records = _two_image_records()
  result = evaluation.corloc(records, {('a', 0): BOX_A, ('b', 0): BOX_A, ('b', 1): BOX_B}, 3)
  assert result['corloc'] == 1.0
  assert result['num_pairs'] == 3
  assert result['num_correct'] == 3
  assert result['num_missing'] == 0
  assert result['per_class'][:2] == [1.0, 1.0]
  assert math.isnan(result['per_class'][2])  # Class 2 has no positive pair.
  assert result['correct'] == {('a', 0): True, ('b', 0): True, ('b', 1): True}


def test_corloc_half_correct():
  records = [_record('a', [BOX_A], [0]), _record('b', [BOX_A], [0])]
  result = evaluation.corloc(records, {('a', 0): BOX_A, ('b', 0): FAR_AWAY}, 1)
  assert result['corloc'] == 0.5
  assert result['num_correct'] == 1
  assert result['per_class'] == [0.5]
  assert result['correct'] == {('a', 0): True, ('b', 0): False}


def test_corloc_missing_pair_counts_as_wrong():
  records = _two_image_records()
  result = evaluation.corloc(records, {('a', 0): BOX_A, ('b', 0): BOX_A}, 2)
  assert result['num_missing'] == 1
  assert result['corloc_pooled'] == pytest.approx(2 / 3)
  assert result['corloc'] == 0.5  # Class 0: 2 of 2, class 1: 0 of 1; mean (1 + 0) / 2.
  assert result['per_class'] == [1.0, 0.0]
  assert result['correct'][('b', 1)] is False


def test_corloc_iou_exactly_at_threshold_is_correct():
  records = [_record('a', [BOX_A], [0])]
  # [0, 0, 10, 5] inside the 10x10 box: IoU = 50 / 100 = 0.5 exactly.
  assert evaluation.corloc(records, {('a', 0): [0, 0, 10, 5]}, 1)['corloc'] == 1.0
  # [0, 0, 10, 4.9]: IoU = 49 / 100 < 0.5.
  assert evaluation.corloc(records, {('a', 0): [0, 0, 10, 4.9]}, 1)['corloc'] == 0.0


def test_corloc_difficult_only_pair_excluded_from_non_difficult():
  # Image b's only class-1 object is difficult: the pair counts in `corloc` (and a box on the
  # difficult object is correct) but not in `corloc_non_difficult`.
  records = [_record('a', [BOX_A], [0]),
             _record('b', [BOX_A, BOX_B], [0, 1], difficult=[False, True])]
  result = evaluation.corloc(records, {('a', 0): FAR_AWAY, ('b', 0): BOX_A, ('b', 1): BOX_B}, 2)
  assert result['num_pairs'] == 3
  assert result['num_pairs_non_difficult'] == 2
  assert result['corloc_pooled'] == pytest.approx(2 / 3)  # b/0 and b/1 correct, a/0 wrong.
  assert result['corloc'] == 0.75  # Class 0: 1 of 2, class 1: 1 of 1.
  assert result['corloc_pooled_non_difficult'] == 0.5  # b/0 correct, a/0 wrong.
  assert result['corloc_non_difficult'] == 0.5  # Class 1 has no non-difficult pair: left out.
  assert math.isnan(result['per_class_non_difficult'][1])
  assert result['correct'][('b', 1)] is True


def test_corloc_localization_for_non_positive_pair_raises():
  records = _two_image_records()
  with pytest.raises(ValueError, match=r"\('a', 1\)"):
    evaluation.corloc(records, {('a', 0): BOX_A, ('a', 1): BOX_B}, 2)


def test_corloc_no_pairs_is_nan():
  result = evaluation.corloc([_record('empty', [], [])], {}, 2)
  assert result['num_pairs'] == 0
  assert math.isnan(result['corloc'])
  assert math.isnan(result['corloc_pooled'])
  assert math.isnan(result['corloc_non_difficult'])


def test_corloc_is_the_mean_over_classes_not_over_pairs():
  # Class 0 ("person"): 4 pairs, 3 correct. Class 1: 1 pair, wrong. Class 2: no pairs.
  # Pooled over pairs: 3 / 5 = 0.6. Mean over the classes with pairs: (3/4 + 0/1) / 2 = 0.375;
  # class 2 is left out of the mean, not counted as zero (which would give 0.25).
  records = [_record(f'p{i}', [BOX_A], [0]) for i in range(4)] + [_record('q', [BOX_B], [1])]
  localizations = {('p0', 0): BOX_A, ('p1', 0): BOX_A, ('p2', 0): BOX_A, ('p3', 0): FAR_AWAY,
                   ('q', 1): FAR_AWAY}
  result = evaluation.corloc(records, localizations, 3)
  assert result['corloc_pooled'] == pytest.approx(0.6)
  assert result['corloc'] == pytest.approx(0.375)
  assert result['per_class'][:2] == [0.75, 0.0]
  assert math.isnan(result['per_class'][2])


# ---------------------------------------------------------------------------------------- VOC AP


def _both_aps(detections, records, num_classes):
  return (evaluation.voc_ap(detections, records, num_classes, use_11_point=True),
          evaluation.voc_ap(detections, records, num_classes, use_11_point=False))


def test_voc_ap_single_perfect_detection():
  records = [_record('a', [BOX_A], [0])]
  for result in _both_aps([_det('a', 0, BOX_A, 0.9)], records, 1):
    assert result['ap_per_class'] == [1.0]
    assert result['map'] == 1.0
    assert result['num_positives'] == [1]


def test_voc_ap_no_detections_is_zero():
  records = [_record('a', [BOX_A], [0])]
  for result in _both_aps([], records, 1):
    assert result['ap_per_class'] == [0.0]
    assert result['map'] == 0.0


def test_voc_ap_duplicate_detection_is_false_positive():
  # Two objects; the second detection of object A is a duplicate, ranked before the hit on B.
  # Rank order: TP, FP, TP with 2 positives -> recall [.5, .5, 1], precision [1, .5, 2/3].
  # 11-point: t = 0 .. 0.5 (6 thresholds) reach precision 1, t = 0.6 .. 1 (5) reach 2/3:
  #   (6 * 1 + 5 * 2/3) / 11 = 28/33.
  # Area: envelope is 1 on recall (0, .5] and 2/3 on (.5, 1]: .5 * 1 + .5 * 2/3 = 5/6.
  records = [_record('a', [BOX_A, BOX_B], [0, 0])]
  detections = [_det('a', 0, BOX_A, 0.9), _det('a', 0, BOX_A, 0.8), _det('a', 0, BOX_B, 0.7)]
  eleven, area = _both_aps(detections, records, 1)
  assert eleven['map'] == pytest.approx(28 / 33)
  assert area['map'] == pytest.approx(5 / 6)


def test_voc_ap_best_overlap_already_matched_is_false_positive():
  # As in the devkit, a detection takes the box with the highest IoU among all boxes of the class
  # and is a duplicate if that box is matched, even if another unmatched box overlaps >= 0.5.
  # Second detection [0, .5, 10, 10.5]: IoU 9.5/10.5 = .90 with A (matched), 8.5/11.5 = .74 with B.
  # TP, FP with 2 positives -> recall [.5, .5], precision [1, .5].
  # 11-point: t = 0 .. 0.5 reach 1, t = 0.6 .. 1 reach nothing: 6/11. Area: .5 * 1 = .5.
  records = [_record('a', [BOX_A, [0, 2, 10, 12]], [0, 0])]
  detections = [_det('a', 0, BOX_A, 0.9), _det('a', 0, [0, 0.5, 10, 10.5], 0.8)]
  eleven, area = _both_aps(detections, records, 1)
  assert eleven['map'] == pytest.approx(6 / 11)
  assert area['map'] == pytest.approx(0.5)


def test_voc_ap_detection_on_difficult_is_ignored():
  records = [_record('a', [BOX_A, BOX_B], [0, 0], difficult=[False, True])]
  with_difficult_hit = [_det('a', 0, BOX_B, 0.9), _det('a', 0, BOX_A, 0.8)]
  without = [_det('a', 0, BOX_A, 0.8)]
  # Were the top-ranked hit on the difficult box a FP, AP would be 0.5, not 1.
  for result in _both_aps(with_difficult_hit, records, 1) + _both_aps(without, records, 1):
    assert result['map'] == 1.0
  assert evaluation.voc_ap(without, records, 1)['num_positives'] == [1]


def test_voc_ap_all_difficult_class_is_nan_and_excluded_from_map():
  records = [_record('a', [BOX_A, BOX_B], [0, 1], difficult=[False, True])]
  detections = [_det('a', 0, BOX_A, 0.9), _det('a', 1, FAR_AWAY, 0.9)]
  result = evaluation.voc_ap(detections, records, 2)
  assert result['num_positives'] == [1, 0]
  assert result['ap_per_class'][0] == 1.0
  assert math.isnan(result['ap_per_class'][1])
  assert result['map'] == 1.0


def test_voc_ap_false_positive_rank_matters():
  records = [_record('a', [BOX_A], [0])]
  # FP after the TP: recall [1, 1], precision [1, .5] -> every threshold reaches precision 1: AP 1.
  fp_after = [_det('a', 0, BOX_A, 0.9), _det('a', 0, FAR_AWAY, 0.1)]
  # FP before the TP: recall [0, 1], precision [0, .5] -> 11-point: all 11 thresholds reach .5;
  # area: envelope .5 over recall (0, 1]: AP .5 both ways.
  fp_before = [_det('a', 0, BOX_A, 0.9), _det('a', 0, FAR_AWAY, 0.95)]
  for result in _both_aps(fp_after, records, 1):
    assert result['map'] == 1.0
  for result in _both_aps(fp_before, records, 1):
    assert result['map'] == pytest.approx(0.5)


def test_voc_ap_score_ties_keep_input_order():
  # Equal scores: a stable sort keeps the listed order, so the TP listed first ranks first.
  records = [_record('a', [BOX_A], [0])]
  tp_first = [_det('a', 0, BOX_A, 0.5), _det('a', 0, FAR_AWAY, 0.5)]
  assert evaluation.voc_ap(tp_first, records, 1)['map'] == 1.0
  assert evaluation.voc_ap(tp_first[::-1], records, 1)['map'] == pytest.approx(0.5)


def test_voc_ap_11_point_and_area_differ():
  # 10 objects, 3 found with precision 1: recall [.1, .2, .3].
  # 11-point: t = 0, .1, .2, .3 reach precision 1 (recall exactly .3 reaches t = .3): 4/11.
  # Area: .3 * 1 = .3.
  gt = [[10 * i, 0, 10 * i + 5, 5] for i in range(10)]
  records = [_record('a', gt, [0] * 10)]
  detections = [_det('a', 0, gt[i], 0.9 - 0.1 * i) for i in range(3)]
  eleven, area = _both_aps(detections, records, 1)
  assert eleven['map'] == pytest.approx(4 / 11)
  assert area['map'] == pytest.approx(0.3)


def test_voc_ap_detection_in_image_without_class_is_false_positive():
  records = [_record('a', [BOX_A], [0]), _record('b', [BOX_B], [1])]
  # FP in image b (no class-0 object) ranked first: precision [0, .5] -> AP .5.
  detections = [_det('b', 0, BOX_B, 0.9), _det('a', 0, BOX_A, 0.5)]
  assert evaluation.voc_ap(detections, records, 2)['ap_per_class'][0] == pytest.approx(0.5)


def test_voc_ap_rejects_unknown_image_and_label():
  records = [_record('a', [BOX_A], [0])]
  with pytest.raises(ValueError, match='unknown image'):
    evaluation.voc_ap([_det('zzz', 0, BOX_A, 1.0)], records, 1)
  with pytest.raises(ValueError, match='label 3'):
    evaluation.voc_ap([_det('a', 3, BOX_A, 1.0)], records, 1)


def test_detection_dicts_round_trip():
  detections = evaluation.detection_dicts('a', [BOX_A, BOX_B], np.array([0, 1]), [0.9, 0.1])
  assert [d['label'] for d in detections] == [0, 1]
  assert detections[1]['score'] == pytest.approx(0.1)
  records = [_record('a', [BOX_A, BOX_B], [0, 1])]
  assert evaluation.voc_ap(detections, records, 2)['map'] == 1.0


# --------------------------------------------------------------------------------------- COCO AP


CLASS_NAMES = ['cat', 'dog']


def test_coco_ap_perfect_detections():
  records = [_record('a', [BOX_A, BOX_B], [0, 1]), _record('b', [BOX_B], [0])]
  detections = [_det('a', 0, BOX_A, 0.9), _det('a', 1, BOX_B, 0.8), _det('b', 0, BOX_B, 0.7)]
  result = evaluation.coco_ap(detections, records, CLASS_NAMES)
  assert result['ap'] == pytest.approx(1.0)
  assert result['ap50'] == pytest.approx(1.0)
  assert result['ap75'] == pytest.approx(1.0)
  assert result['ap_small'] == pytest.approx(1.0)  # 10 x 10 = 100 px^2 < 32^2: all boxes small.
  assert math.isnan(result['ap_medium'])  # No medium or large ground truth: -1 becomes NaN.
  assert math.isnan(result['ap_large'])


def test_coco_ground_truth_has_the_keys_older_pycocotools_need():
  # pycocotools 2.0.9 and 2.0.10 (allowed by setup.py) copy `info` in loadRes.
  truth = evaluation.coco_ground_truth([{'id': 1, 'height': 5, 'width': 5}], [], [])
  assert isinstance(truth['info'], dict) and truth['licenses'] == []
  assert set(truth) == {'info', 'licenses', 'images', 'categories', 'annotations'}


def test_coco_ap_no_detections():
  records = [_record('a', [BOX_A], [0])]
  result = evaluation.coco_ap([], records, CLASS_NAMES)
  assert result['ap'] == 0.0
  assert result['ap50'] == 0.0
  assert math.isnan(result['ap_large'])


def test_coco_ap_detection_on_crowd_is_not_false_positive():
  records = [_record('a', [BOX_A], [0], crowd_boxes=[BOX_B], crowd_labels=[0])]
  on_object = [_det('a', 0, BOX_A, 0.5)]
  also_on_crowd = on_object + [_det('a', 0, BOX_B, 0.9)]
  also_far_away = on_object + [_det('a', 0, FAR_AWAY, 0.9)]
  assert evaluation.coco_ap(on_object, records, CLASS_NAMES)['ap'] == pytest.approx(1.0)
  assert evaluation.coco_ap(also_on_crowd, records, CLASS_NAMES)['ap'] == pytest.approx(1.0)
  # The same top-ranked detection away from the crowd region is a FP and lowers AP.
  assert evaluation.coco_ap(also_far_away, records, CLASS_NAMES)['ap'] < 0.6


def test_coco_ap_detection_on_difficult_is_ignored():
  records = [_record('a', [BOX_A, BOX_B], [0, 0], difficult=[False, True])]
  detections = [_det('a', 0, BOX_B, 0.9), _det('a', 0, BOX_A, 0.5)]
  assert evaluation.coco_ap(detections, records, CLASS_NAMES)['ap'] == pytest.approx(1.0)
  # The difficult box is not a miss either: finding only A gives full recall.
  only_a = evaluation.coco_ap([_det('a', 0, BOX_A, 0.5)], records, CLASS_NAMES)
  assert only_a['ap'] == pytest.approx(1.0)


def test_coco_ap_iou_0_6_counts_for_ap50_not_ap75():
  records = [_record('a', [BOX_A], [0])]
  # [0, 0, 10, 6] inside the 10x10 box: IoU = 60 / 100 = 0.6.
  result = evaluation.coco_ap([_det('a', 0, [0, 0, 10, 6], 0.9)], records, CLASS_NAMES)
  assert result['ap50'] == pytest.approx(1.0)
  assert result['ap75'] == 0.0
  assert 0.0 < result['ap'] < 1.0


def test_coco_ap_rejects_unknown_image():
  with pytest.raises(ValueError, match='unknown image'):
    evaluation.coco_ap([_det('zzz', 0, BOX_A, 1.0)], [_record('a', [BOX_A], [0])], CLASS_NAMES)


def test_detection_metrics_for_voc_and_coco_data():
  records = [_record('a', [[0, 0, 10, 10]], [0]), _record('b', [[0, 0, 20, 20]], [1])]
  detections = [_det('a', 0, [0, 0, 10, 10], 0.9),   # A hit of class 0.
                _det('b', 1, [0, 0, 10, 10], 0.8)]   # IoU 0.25: a miss of class 1.
  voc = evaluation.detection_metrics(detections, records, ['cat', 'dog'])
  assert voc['map_metric'] == 'VOC2007 11-point AP@0.5' and 'map50' not in voc
  assert voc['map_per_class'] == {'cat': 1.0, 'dog': 0.0} and voc['map'] == 0.5
  coco = evaluation.detection_metrics(detections, records, ['cat', 'dog'], coco=True)
  assert coco['map_metric'] == 'COCO AP@[.5:.95]'
  # The class-0 hit is exact (AP 1 at every IoU threshold), the class-1 box never matches.
  assert coco['map'] == pytest.approx(0.5, abs=1e-6)
  assert coco['map50'] == pytest.approx(0.5, abs=1e-6)
  assert coco['map_per_class'] == {'cat': 1.0, 'dog': 0.0}
