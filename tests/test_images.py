"""Tests of image decoding and the data stage's image check."""

import io
import os
import shutil
import struct

import numpy as np
import pytest
from PIL import Image

import helpers
from click_supervision.datasets import images
from click_supervision.datasets import records as records_lib
from click_supervision.errors import DataError


def _dataset(tmp_path, sizes):
  """A Dataset of real JPEG files with the given (height, width) per image."""
  return helpers.image_dataset(tmp_path, sizes)


def _truncate(path):
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])


def test_load_image_rgb_uint8(tmp_path):
  path = str(tmp_path / 'grey.png')
  Image.new('L', (5, 3), color=7).save(path)
  pixels = images.load_image(path)
  assert pixels.shape == (3, 5, 3) and pixels.dtype == np.uint8 and np.all(pixels == 7)


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path):
  dataset = _dataset(tmp_path, [(30, 40), (32, 32)])
  _truncate(dataset.records[1]['path'])
  with pytest.raises(DataError, match='truncated') as info:
    images.verify_images(dataset)
  assert info.value.path == dataset.records[1]['path']


def test_real_truncated_jpeg(voc_dev_root, tmp_path):
  path = str(tmp_path / '000005.jpg')
  shutil.copy(os.path.join(voc_dev_root, 'JPEGImages', '000005.jpg'), path)
  _truncate(path)
  with pytest.raises(DataError, match='unreadable or truncated'):
    images.check_image(path, 375, 500)


def test_not_an_image_and_size_mismatch(tmp_path):
  path = tmp_path / 'text.jpg'
  path.write_text('hello')
  with pytest.raises(DataError, match='unreadable'):
    images.check_image(str(path), 1, 1)
  dataset = _dataset(tmp_path, [(30, 40)])
  with pytest.raises(DataError, match='image is 40 x 30 pixels but its annotation says 41 x 30'):
    images.check_image(dataset.records[0]['path'], 30, 41)


def test_cache_skips_decoded_images_and_rechecks_changed_files(tmp_path):
  dataset = _dataset(tmp_path, [(30, 40), (32, 32)])
  cache = str(tmp_path / 'cache' / 'verified.json')
  assert images.verify_images(dataset, cache) == {'num_checked': 2, 'num_cached': 0}
  assert images.verify_images(dataset, cache) == {'num_checked': 0, 'num_cached': 2}
  _truncate(dataset.records[0]['path'])  # Changes size and mtime: checked again, and fails.
  with pytest.raises(DataError):
    images.verify_images(dataset, cache)
  # The good image stays in the cache after the failure.
  assert images.VerifiedImageCache(cache).is_verified(dataset.records[1])


def test_skip_bad_records_drops_counts_and_logs(tmp_path):
  dataset = _dataset(tmp_path, [(30, 40), (32, 32), (20, 20)])
  _truncate(dataset.records[1]['path'])
  messages = []
  result = images.verify_images(dataset, skip_bad_records=True, log=messages.append)
  assert result == {'num_checked': 3, 'num_cached': 0}
  assert [r['image_id'] for r in dataset.records] == ['0', '2']
  assert len(dataset.skipped) == 1 and dataset.skipped[0]['path'].endswith('1.jpg')
  assert len(messages) == 1 and 'truncated' in messages[0]


def _jpeg_claiming(path, width, height):
  """Writes a tiny JPEG whose header says `width` x `height` (at most 65535 each).

  `Image.open` reads only the header, so this stands for a huge image without building one.
  """
  buffer = io.BytesIO()
  Image.new('RGB', (8, 8), (90, 20, 200)).save(buffer, 'JPEG')
  data = bytearray(buffer.getvalue())
  sof = data.index(b'\xff\xc0')  # Baseline start of frame: length, precision, height, width.
  data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
  path.write_bytes(bytes(data))
  return str(path)


@pytest.mark.parametrize('width, height', [
    (15000, 15000),  # Above twice the limit: Pillow's DecompressionBombError.
    (8000, 8000),  # 64 megapixels: between the limit and twice it (Pillow's warning).
    (65535, 1000),
])
def test_image_above_the_pixel_limit_is_a_skippable_data_error(tmp_path, width, height):
  dataset = _dataset(tmp_path, [(30, 40), (20, 20)])
  huge = _jpeg_claiming(tmp_path / 'huge.jpg', width, height)
  dataset.records.append(records_lib.make_record('huge', huge, height, width, [[0, 0, 2, 2]], [0]))
  with pytest.raises(DataError, match='more than the limit of 50 megapixels') as info:
    images.verify_images(dataset)
  assert info.value.path == huge
  with pytest.raises(DataError, match='more than the limit of 50 megapixels'):
    images.load_image(huge)  # What the proposals and features stages read through.
  messages = []
  result = images.verify_images(dataset, skip_bad_records=True, log=messages.append)
  assert result == {'num_checked': 3, 'num_cached': 0}
  assert [r['image_id'] for r in dataset.records] == ['0', '1']
  assert dataset.skipped == [{'path': huge, 'problem': info.value.problem}]
  assert len(messages) == 1 and 'huge.jpg' in messages[0] and 'megapixels' in messages[0]
  assert Image.MAX_IMAGE_PIXELS == images.MAX_IMAGE_PIXELS == 50_000_000  # Set in one place.


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
  monkeypatch.setattr(images, 'MAX_IMAGE_PIXELS', 1000)
  dataset = _dataset(tmp_path, [(30, 40), (20, 20)])  # 1200 and 400 pixels.
  with pytest.raises(DataError, match=r'image is 40 x 30 pixels, 0.0 megapixels, more than the '
                     r'limit of 0.001 megapixels \(images.MAX_IMAGE_PIXELS\)'):
    images.check_image(dataset.records[0]['path'], 30, 40)
  images.check_image(dataset.records[1]['path'], 20, 20)
  assert images.load_image(dataset.records[1]['path']).shape == (20, 20, 3)
  # A header claiming too many pixels is refused even though its data would not decode.
  with pytest.raises(DataError, match='more than the limit'):
    images.check_image(_jpeg_claiming(tmp_path / 'claim.jpg', 100, 100), 100, 100)


def test_image_cached_under_a_higher_limit_is_checked_again(tmp_path, monkeypatch):
  dataset = _dataset(tmp_path, [(30, 40), (20, 20)])  # 1200 and 400 pixels.
  cache = str(tmp_path / 'cache' / 'verified.json')
  monkeypatch.setattr(images, 'MAX_IMAGE_PIXELS', 2000)
  assert images.verify_images(dataset, cache) == {'num_checked': 2, 'num_cached': 0}
  monkeypatch.setattr(images, 'MAX_IMAGE_PIXELS', 1000)
  messages = []
  result = images.verify_images(dataset, cache, skip_bad_records=True, log=messages.append)
  assert result == {'num_checked': 1, 'num_cached': 1}
  assert [r['image_id'] for r in dataset.records] == ['1']
  assert len(messages) == 1 and 'more than the limit' in messages[0]
