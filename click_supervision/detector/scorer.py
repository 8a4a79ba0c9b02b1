"""The detector as MIL's appearance scorer A (deep MIL, PAPER.md 5)."""

import numpy as np

from click_supervision.detector import inference


class DetectorScorer:
  """`scores(bag, fold, classes)` like `appearance.LinearModels`: A(p) = the detector's class
  probability of each proposal.

  Args:
    models: list of `detector.FastRcnn`, one per fold: fold k's detector was trained without
      the images of fold k (one model: every image is scored by it).
  """

  def __init__(self, models):
    self.runners = [inference.HeadRunner(m) for m in models]

  def scores(self, bag, fold, classes):
    """float32 [P, len(classes)]: softmax probability of each class for each proposal."""
    runner = self.runners[fold if len(self.runners) > 1 else 0]
    probabilities, _ = runner(bag.features)
    return probabilities[:, np.asarray(classes, np.int64) + 1]
