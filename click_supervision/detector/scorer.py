"""The detector as MIL's appearance scorer A (deep MIL, docs/method.md, section 5)."""

import numpy as np
import tensorflow as tf

from click_supervision.detector import inference
from click_supervision.detector import serving


class DetectorScorer:
  """`scores(bag, fold, classes)` like `appearance.LinearModels`: A(p) = the detector's class
  probability of each proposal, computed as the test computes it (`serving.view_outputs`, over
  the test's views: with `test_flip`, the plain and the mirrored image).

  Args:
    models: list of `detector.FastRcnn`, one per fold: fold k's detector was trained without
      the images of fold k (one model: every image is scored by it).
    source: `batches.InputSource` over every image to score, in the models' training mode, with
      the maps of every view.
    views: (scale, mirrored) pairs (`inference.test_views`); default the plain image alone.
  """

  def __init__(self, models, source, views=((None, False),)):
    self.source = source
    self.views = list(views)
    self.score_functions = [serving.make_score_function(m) for m in models]
    self._last = None  # (image id, fold) -> the outputs, reused by `refined_box`.

  def _outputs(self, bag, fold):
    key = (bag.image_id, fold)
    if self._last is None or self._last[0] != key:
      k = fold if len(self.score_functions) > 1 else 0
      views = []
      for scale, mirrored in self.views:
        inputs, factors, (_, width) = inference.model_inputs(self.source, bag.image_id,
                                                             mirrored, scale)
        views.append((inputs, factors, mirrored))
      probabilities, boxes = self.score_functions[k](
          views, tf.constant(np.asarray(bag.boxes, np.float32)), tf.constant(width))
      self._last = (key, (probabilities.numpy(), boxes.numpy()))
    return self._last[1]

  def scores(self, bag, fold, classes):
    """float32 [P, len(classes)]: softmax probability of each class for each proposal."""
    probabilities, _ = self._outputs(bag, fold)
    return probabilities[:, np.asarray(classes, np.int64) + 1]

  def refined_box(self, bag, fold, class_index, index, height, width):
    """Proposal `index` moved by the detector's box regression for `class_index`, clipped to
    the image: float32 [4] pixels."""
    from click_supervision import boxes as box_lib  # pylint: disable=g-import-not-at-top
    _, boxes = self._outputs(bag, fold)
    box = box_lib.clip_to_image(boxes[index:index + 1, class_index], height, width)
    return box[0] if box_lib.is_valid(box)[0] else bag.boxes[index]
