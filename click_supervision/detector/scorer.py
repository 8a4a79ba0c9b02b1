"""The detector as MIL's appearance scorer A (deep MIL, PAPER.md 5)."""

import numpy as np

from click_supervision.detector import inference


class DetectorScorer:
  """`scores(bag, fold, classes)` like `appearance.LinearModels`: A(p) = the detector's class
  probability of each proposal.

  Args:
    models: list of `detector.FastRcnn`, one per fold: fold k's detector was trained without
      the images of fold k (one model: every image is scored by it).
    bags, image_settings: for models with a fine-tuned trunk: the bag source (image paths) and
      the cache's (short_side, max_long_side); their features come from their own trunks.
  """

  def __init__(self, models, bags=None, image_settings=None):
    self.runners = [inference.HeadRunner(m) for m in models]
    self.trunk_features = [inference.TrunkFeatureBags(bags, m, image_settings)
                           if m.trunk is not None else None for m in models]
    self._last = None  # (image id, fold) -> the head's outputs, reused by `refined_box`.

  def _outputs(self, bag, fold):
    key = (bag.image_id, fold)
    if self._last is None or self._last[0] != key:
      k = fold if len(self.runners) > 1 else 0
      features = (self.trunk_features[k].features(bag.image_id, bag.boxes)
                  if self.trunk_features[k] is not None else bag.features)
      self._last = (key, self.runners[k](features))
    return self._last[1]

  def scores(self, bag, fold, classes):
    """float32 [P, len(classes)]: softmax probability of each class for each proposal."""
    probabilities, _ = self._outputs(bag, fold)
    return probabilities[:, np.asarray(classes, np.int64) + 1]

  def refined_box(self, bag, fold, class_index, index, height, width):
    """Proposal `index` moved by the detector's box regression for `class_index`, clipped to
    the image: float32 [4] pixels."""
    from click_supervision import boxes as box_lib  # pylint: disable=g-import-not-at-top
    from click_supervision.detector import box_coding  # pylint: disable=g-import-not-at-top
    _, deltas = self._outputs(bag, fold)
    box = box_coding.decode(bag.boxes[index:index + 1], deltas[index:index + 1, class_index])
    box = box_lib.clip_to_image(box, height, width)
    return box[0] if box_lib.is_valid(box)[0] else bag.boxes[index]
