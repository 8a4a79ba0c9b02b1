"""The detector as MIL's appearance scorer A (deep MIL, docs/method.md, section 5)."""

import numpy as np
import tensorflow as tf

from click_supervision.detector import inference
from click_supervision.detector import serving


class DetectorScorer:
  """`scores(bag, fold, classes)` like `appearance.LinearModels`: A(p) = the detector's class
  probability of each proposal, from `serving.model_outputs` (the test's own computation).

  Args:
    models: list of `detector.FastRcnn`, one per fold: fold k's detector was trained without
      the images of fold k (one model: every image is scored by it).
    source: `batches.InputSource` over every image to score, in the models' training mode.
  """

  def __init__(self, models, source):
    self.source = source
    self.score_functions = [serving.make_score_function(m) for m in models]
    self._last = None  # (image id, fold) -> the head's outputs, reused by `refined_box`.

  def _outputs(self, bag, fold):
    key = (bag.image_id, fold)
    if self._last is None or self._last[0] != key:
      k = fold if len(self.score_functions) > 1 else 0
      inputs, factors, _ = inference.model_inputs(self.source, bag.image_id)
      probabilities, deltas = self.score_functions[k](
          inputs, tf.constant(np.asarray(bag.boxes, np.float32)), factors)
      self._last = (key, (probabilities.numpy(), deltas.numpy()))
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
    box = box_coding.decode(bag.boxes[index:index + 1],
                            deltas[index:index + 1, class_index]).numpy()
    box = box_lib.clip_to_image(box, height, width)
    return box[0] if box_lib.is_valid(box)[0] else bag.boxes[index]
