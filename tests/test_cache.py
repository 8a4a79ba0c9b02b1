"""Tests of the sharded atomic cache: round trip, resume, corruption, keys, worker split."""

import os
import shutil

import numpy as np
import pytest

from click_supervision import cache as cache_lib


def _image_files(tmp_path, n):
  files = []
  for i in range(n):
    path = tmp_path / f'img{i}.jpg'
    path.write_bytes(b'x' * (i + 1))
    files.append((f'id{i}', str(path)))
  return files


def _payload(image_id):
  seed = int(image_id[2:])
  return {'boxes': np.full((seed + 1, 4), seed, np.float32), 'scores': np.arange(seed + 1.0)}


def _fill(cache, shards=None):
  for shard in (range(cache.num_shards) if shards is None else shards):
    cache.write_shard(shard, {i: _payload(i) for i in cache.shard_image_ids(shard)})


def test_round_trip_and_order(tmp_path):
  cache = cache_lib.ShardedCache(str(tmp_path / 'c'), 'proposals', {'a': 1},
                                 _image_files(tmp_path, 7), images_per_shard=3)
  assert cache.num_shards == 3  # 7 images in shards of 3, 3, 1.
  assert cache.shard_image_ids(2) == ['id6'] and cache.shard_of('id4') == 1
  assert cache.missing_shards() == [0, 1, 2]
  _fill(cache)
  assert cache.missing_shards() == []
  items = list(cache.iter_images())
  assert [i for i, _ in items] == [f'id{i}' for i in range(7)]
  np.testing.assert_array_equal(items[4][1]['boxes'], np.full((5, 4), 4, np.float32))
  assert items[4][1]['boxes'].dtype == np.float32


def test_resume_after_kill_skips_finished_shards(tmp_path):
  files = _image_files(tmp_path, 6)
  cache = cache_lib.ShardedCache(str(tmp_path / 'c'), 'proposals', {'a': 1}, files, 2)
  _fill(cache, [0, 2])
  # A kill mid-write leaves only a temp file: never taken for a shard.
  with open(os.path.join(cache.dir, 'partial.tmp'), 'wb') as f:
    f.write(b'PK\x03\x04 half a zip')
  mtime = os.path.getmtime(cache.shard_path(0))
  again = cache_lib.ShardedCache(str(tmp_path / 'c'), 'proposals', {'a': 1}, files, 2)
  assert again.dir == cache.dir
  assert again.missing_shards() == [1]
  _fill(again, again.missing_shards())
  assert os.path.getmtime(again.shard_path(0)) == mtime  # Not rewritten.
  assert len(list(again.iter_images())) == 6


@pytest.mark.parametrize('damage', ['truncate', 'flip', 'garbage', 'wrong_ids'])
def test_corrupt_shard_is_detected(tmp_path, damage):
  files = _image_files(tmp_path, 4)
  cache = cache_lib.ShardedCache(str(tmp_path / 'c'), 'features', {}, files, 2)
  _fill(cache)
  path = cache.shard_path(1)
  data = bytearray(open(path, 'rb').read())
  if damage == 'truncate':
    data = data[:len(data) // 2]
  elif damage == 'flip':
    # Flip one byte inside the first array's data (after the zip member header).
    data[120] ^= 0xFF
  elif damage == 'garbage':
    data = bytearray(b'not a zip at all')
  if damage == 'wrong_ids':
    shutil.copy(cache.shard_path(0), path)  # Shard 0's content under shard 1's name.
  else:
    open(path, 'wb').write(bytes(data))
  assert cache.missing_shards() == [1]
  with pytest.raises(RuntimeError, match='shard-00001-of-00002.npz is missing or corrupt'):
    list(cache.iter_images())
  _fill(cache, [1])
  assert cache.missing_shards() == []


def test_key_covers_params_images_and_shard_size(tmp_path):
  files = _image_files(tmp_path, 4)
  root = str(tmp_path / 'c')
  base = cache_lib.ShardedCache(root, 'p', {'alpha': 0.65}, files, 2).dir
  assert cache_lib.ShardedCache(root, 'p', {'alpha': 0.65}, files, 2).dir == base
  assert cache_lib.ShardedCache(root, 'p', {'alpha': 0.7}, files, 2).dir != base
  assert cache_lib.ShardedCache(root, 'p', {'alpha': 0.65}, files[:3], 2).dir != base
  assert cache_lib.ShardedCache(root, 'p', {'alpha': 0.65}, files, 3).dir != base
  with open(files[0][1], 'ab') as f:
    f.write(b'more')  # The image file changed size: a different key.
  assert cache_lib.ShardedCache(root, 'p', {'alpha': 0.65}, files, 2).dir != base


def test_workers_split_the_shards(tmp_path):
  cache = cache_lib.ShardedCache(str(tmp_path / 'c'), 'p', {}, _image_files(tmp_path, 10), 2)
  assert cache.shards_for_job(3, 0) == [0, 3]
  assert cache.shards_for_job(3, 1) == [1, 4]
  assert cache.shards_for_job(3, 2) == [2]
  with pytest.raises(ValueError, match='shard_index'):
    cache.shards_for_job(3, 3)
  _fill(cache, cache.shards_for_job(2, 1))
  assert cache.missing_shards(2, 1) == [] and cache.missing_shards() == [0, 2, 4]


def test_write_checks_the_shard_images(tmp_path):
  cache = cache_lib.ShardedCache(str(tmp_path / 'c'), 'p', {}, _image_files(tmp_path, 4), 2)
  with pytest.raises(ValueError, match='shard 0 expects images'):
    cache.write_shard(0, {'id0': _payload('id0')})


def test_a_folder_of_links_to_the_same_photos_shares_the_key(tmp_path):
  (tmp_path / 'photos').mkdir()
  (tmp_path / 'photos' / 'a.jpg').write_bytes(b'abc')
  (tmp_path / 'view').symlink_to(tmp_path / 'photos')
  direct = cache_lib.cache_key({'p': 1}, [('a', str(tmp_path / 'photos' / 'a.jpg'))])
  linked = cache_lib.cache_key({'p': 1}, [('a', str(tmp_path / 'view' / 'a.jpg'))])
  assert direct == linked
