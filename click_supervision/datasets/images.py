"""Decoding image files, and the data stage's check of every image against its annotation.

Every stage reads pixels through `load_image`, so all of them see the same orientation: EXIF
rotation is NOT applied (annotations of VOC and COCO are in the stored pixel frame; note that
`cv2.imread` would rotate such images by default).

Size limit: an image of more than `MAX_IMAGE_PIXELS` pixels is refused (a `DataError` naming the
file, which `--skip_bad_records` skips) from its header alone, before its pixels are decoded.
Below the limit, the proposals and features stages each work on a copy whose long side is at most
1000 px (`proposals.MAX_WORKING_LONG_SIDE`, `features.rescale_factor`).
"""

import concurrent.futures
import json
import os
import re
import warnings

import numpy as np
from PIL import Image
from PIL import ImageFile

from click_supervision import atomic
from click_supervision.errors import DataError

# A truncated file must fail to decode rather than come back silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Images of more pixels than this are refused before decoding. 50 megapixels holds every camera
# photo up to 8660 x 5773 (a 48 MP phone's 8000 x 6000 included) and decodes to 150 MB of RGB;
# the stages then work on a downscaled copy (module docstring). Far larger files (a 15000 x 15000
# JPEG) are mostly decompression bombs, and would need GBs per decoding thread.
MAX_IMAGE_PIXELS = 50_000_000

# Pillow's own guard, set from the same number in this one place: it warns above the limit and
# raises DecompressionBombError above twice it, inside `Image.open`, which `_open_checked` turns
# into a DataError like `_check_pixel_count`'s.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# Between 1x and 2x the limit Pillow only warns; `_check_pixel_count` refuses those images from
# the header, so the warning adds nothing. (Turning it into an error per call with
# `warnings.catch_warnings` is not thread-safe: the image check decodes in threads, and the same
# image got one message or the other by chance.)
warnings.filterwarnings('ignore', category=Image.DecompressionBombWarning)


def _check_pixel_count(path, width, height):
  """Raises DataError naming `path` when `width` x `height` passes `MAX_IMAGE_PIXELS`."""
  if width * height > MAX_IMAGE_PIXELS:
    raise DataError(path, f'image is {width} x {height} pixels, {width * height / 1e6:.1f} '
                    f'megapixels, more than the limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels '
                    f'(images.MAX_IMAGE_PIXELS)')


def _open_checked(path):
  """Opens and fully decodes an image; raises DataError naming the file on any problem.

  The size is checked from the header (`Image.open` reads no pixels) before `load` decodes.
  """
  try:
    image = Image.open(path)
    try:
      _check_pixel_count(path, *image.size)
    except DataError:
      image.close()  # The raised error's traceback keeps `image` alive: free the file now.
      raise
    image.load()  # Decodes all pixel data: this is where truncation is detected.
  except FileNotFoundError:
    raise DataError(path, 'image file not found') from None
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    # Pillow's guard fired inside Image.open, before the size was at hand; its message holds the
    # pixel count ("Image size (225000000 pixels) exceeds limit of ...").
    match = re.search(r'\((\d+) pixels\)', str(e))
    count = f'{int(match.group(1)) / 1e6:.1f} megapixels' if match else 'too many pixels'
    raise DataError(path, f'image has {count}, more than the limit of '
                    f'{MAX_IMAGE_PIXELS / 1e6:g} megapixels (images.MAX_IMAGE_PIXELS)') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(path, f'unreadable or truncated image ({e})') from None
  return image


def load_image(path):
  """Reads an image file as RGB.

  Returns:
    uint8 [H, W, 3] numpy array (no EXIF rotation).
  Raises:
    DataError naming the file when it is missing, truncated or not an image.
  """
  image = _open_checked(path)
  if image.mode != 'RGB':
    image = image.convert('RGB')
  return np.asarray(image)


def check_image(path, height, width):
  """Decodes `path` fully and checks its size against the annotation's `height` x `width`."""
  image = _open_checked(path)
  if image.size != (width, height):
    raise DataError(path, f'image is {image.size[0]} x {image.size[1]} pixels but its annotation '
                    f'says {width} x {height}')
  if image.mode not in ('RGB', 'L', 'P', 'RGBA', 'CMYK', 'YCbCr', 'LA'):
    raise DataError(path, f'unsupported image mode {image.mode}')


class VerifiedImageCache:
  """Remembers images already decoded and checked, keyed by path, file size and mtime.

  One JSON file under the cache folder; rewritten atomically. A changed file (size or mtime)
  is checked again.
  """

  def __init__(self, cache_path):
    self.cache_path = cache_path
    self.entries = {}
    if cache_path and os.path.isfile(cache_path):
      try:
        with open(cache_path) as f:
          self.entries = json.load(f)
      except (OSError, json.JSONDecodeError):
        self.entries = {}  # A damaged cache only costs a re-check.

  @staticmethod
  def _key(path):
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]

  def is_verified(self, record):
    if record['height'] * record['width'] > MAX_IMAGE_PIXELS:
      return False  # Verified under a higher limit (or before there was one): check again.
    entry = self.entries.get(record['path'])
    try:
      return entry == self._key(record['path']) + [record['height'], record['width']]
    except OSError:
      return False

  def add(self, record):
    self.entries[record['path']] = self._key(record['path']) + [record['height'], record['width']]

  def save(self):
    if not self.cache_path:
      return
    atomic.write_bytes(self.cache_path, json.dumps(self.entries).encode())


def verify_images(dataset, cache_path=None, skip_bad_records=False, num_threads=4, log=print,
                  progress=None):
  """Decodes every image of `dataset` once and checks it against its annotation.

  Images checked before (same path, size and mtime) are not decoded again.

  Args:
    dataset: `records.Dataset`; bad records are removed from it in place when skipping.
    cache_path: JSON file remembering verified images, or None for no cache.
    skip_bad_records: when True, a bad image is dropped, added to `dataset.skipped` and logged;
      otherwise the first bad image raises.
    num_threads: decoding threads (PIL releases the GIL while decoding).
    log: callable taking one str.
    progress: optional callable wrapping an iterable with a progress bar, e.g. `tqdm.tqdm`.
  Returns:
    dict with `num_checked` (decoded now) and `num_cached` (known good from the cache).
  Raises:
    DataError naming the first bad image when not skipping.
  """
  cache = VerifiedImageCache(cache_path)
  to_check = [r for r in dataset.records if not cache.is_verified(r)]
  num_cached = len(dataset.records) - len(to_check)
  bad = {}
  with concurrent.futures.ThreadPoolExecutor(max_workers=num_threads) as pool:
    futures = [pool.submit(check_image, r['path'], r['height'], r['width']) for r in to_check]
    iterator = zip(to_check, futures)
    if progress is not None:
      iterator = progress(iterator, total=len(to_check), desc='checking images', unit='img')
    try:
      for record, future in iterator:
        try:
          future.result()
          cache.add(record)
        except DataError as e:
          if not skip_bad_records:
            raise
          bad[record['image_id']] = e
    finally:
      cache.save()  # What was checked stays checked, even when we stop at an error.
  for image_id, error in bad.items():
    dataset.skipped.append({'path': error.path, 'problem': error.problem})
    log(f'skipped {error}')
  if bad:
    dataset.records = [r for r in dataset.records if r['image_id'] not in bad]
  return {'num_checked': len(to_check), 'num_cached': num_cached}
