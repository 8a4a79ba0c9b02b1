"""A sharded, atomic, resumable on-disk cache of per-image arrays (proposals, RoI features).

Layout: `<root>/<name>/<key>/` holds `params.json` (what the key covers, for people) and one file
per shard, `shard-00003-of-00012.npz`, each holding the arrays of a fixed, consecutive run of
images. The key is a hash of everything that changes the result: the stage's parameters, and the
ordered list of (image id, image path, file size) the shards are cut from, so runs that differ
only in things the stage does not depend on (e.g. the number of clicks) share the cache.

Guarantees:
  * atomic: a shard is written to a temp file, flushed and fsync'ed, then renamed into place, so
    a kill never leaves a half-written shard under the final name;
  * resumable: finished shards are skipped on a rerun;
  * checked: a shard is accepted only if it opens, every array reads back (zip CRCs are verified
    on read) and its image ids are the expected ones; anything else is recomputed;
  * splittable: `shards_for_job(num_jobs, job_index)` gives job `k` of `n` every n-th
    shard, for several machines or a batch scheduler's array jobs writing to one shared folder.
"""

import hashlib
import json
import os
import shutil
import zipfile

import numpy as np

from click_supervision import atomic

_IDS_KEY = '__image_ids__'


def default_cache_dir():
  """`$CLICKSUP_CACHE_DIR`, else `~/.cache/click_supervision`."""
  return os.environ.get('CLICKSUP_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'click_supervision')


def fingerprint(value, length=16, arrays=()):
  """The one hash of the package: hex digits of SHA-256 over `value` as canonical JSON (sorted
  keys; what JSON cannot encode enters as `str`) and then the raw bytes of `arrays`. Cache keys,
  bag-source keys, the synthetic set's folder and the resume checks of MIL and the detector are
  all made here, so two things are "the same work" by one rule.

  Args:
    value: JSON-serialisable (mostly) description of the work.
    length: hex digits kept (None: all 64).
    arrays: numpy arrays (or bytes) hashed after `value`, in order.
  """
  digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode())
  for array in arrays:
    digest.update(array if isinstance(array, bytes) else np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:length]


def resumable_folder(folder, key, log=print):
  """Prepares the folder of one resumable piece of work (a detector's training) for `key`: kept
  when its `fingerprint.json` holds the same key (the work resumes or is reused), emptied when it
  was made for other work, created when missing.

  Returns:
    True when the folder was kept.
  """
  path = os.path.join(folder, FINGERPRINT_FILE)
  kept = False
  if os.path.isdir(folder):
    try:
      with open(path) as f:
        kept = json.load(f).get('fingerprint') == key
    except (OSError, ValueError):
      kept = False
    if not kept:
      log(f'{folder}: made for other settings or inputs; starting again')
      shutil.rmtree(folder)
  os.makedirs(folder, exist_ok=True)
  atomic.write_json(path, {'fingerprint': key})
  return kept


FINGERPRINT_FILE = 'fingerprint.json'


def cache_key(params, image_files):
  """A 16-hex-digit key of `params` (JSON-serialisable dict) and `image_files`.

  Args:
    params: dict of every parameter that changes the stage's result.
    image_files: list of `(image_id, path)`; the file size is added so a replaced image changes
      the key. Paths count by their real path, so a folder of symbolic links to the same photos
      (a subset view) shares the cache of the photos themselves.
  """
  files = [(image_id, os.path.realpath(path), os.path.getsize(path))
           for image_id, path in image_files]
  return fingerprint({'params': params, 'files': files})


class ShardedCache:
  """Per-image arrays cut into shards of `images_per_shard` consecutive images.

  Args:
    root: the cache folder (`--cache_dir`).
    name: the stage's folder name, e.g. `proposals`.
    params: dict of every parameter that changes the result (JSON-serialisable).
    image_files: ordered list of `(image_id, path)` the cache covers.
    images_per_shard: shard size; part of the key.
  """

  def __init__(self, root, name, params, image_files, images_per_shard=32):
    if images_per_shard < 1:
      raise ValueError(f'images_per_shard must be >= 1, got {images_per_shard}')
    self.image_ids = [image_id for image_id, _ in image_files]
    if len(set(self.image_ids)) != len(self.image_ids):
      raise ValueError('image ids must be unique')
    self.images_per_shard = images_per_shard
    self.key = cache_key(dict(params, images_per_shard=images_per_shard), image_files)
    self.dir = os.path.join(root, name, self.key)
    self.num_shards = max(1, -(-len(self.image_ids) // images_per_shard))
    self._shard_of = {image_id: i // images_per_shard for i, image_id in enumerate(self.image_ids)}
    os.makedirs(self.dir, exist_ok=True)
    params_path = os.path.join(self.dir, 'params.json')
    if not os.path.exists(params_path):
      atomic.write_bytes(params_path, json.dumps(
          {'name': name, 'params': params, 'images_per_shard': images_per_shard,
           'num_images': len(self.image_ids)}, indent=2, sort_keys=True).encode())

  def shard_path(self, shard):
    return os.path.join(self.dir, f'shard-{shard:05d}-of-{self.num_shards:05d}.npz')

  def shard_image_ids(self, shard):
    start = shard * self.images_per_shard
    return self.image_ids[start:start + self.images_per_shard]

  def shard_of(self, image_id):
    return self._shard_of[image_id]

  def shards_for_job(self, num_jobs=1, job_index=0):
    """Shard indices precompute job `job_index` of `num_jobs` is responsible for (`--num_shards`
    processes split the shards; a job is not a tf.distribute worker)."""
    if not 0 <= job_index < num_jobs:
      raise ValueError(f'shard_index must be in [0, {num_jobs}), got {job_index}')
    return list(range(job_index, self.num_shards, num_jobs))

  def read_shard(self, shard):
    """Reads a shard.

    Returns:
      dict image_id -> dict of numpy arrays, or None when the shard is missing, partial or
      corrupt (it is then recomputed by the caller).
    """
    path = self.shard_path(shard)
    if not os.path.exists(path):
      return None
    try:
      with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}  # Reads every member: CRCs checked.
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError):
      return None
    ids = arrays.pop(_IDS_KEY, None)
    if ids is None or list(ids) != self.shard_image_ids(shard):
      return None
    per_image = {image_id: {} for image_id in ids}
    for key, value in arrays.items():
      index, field = key.split('/', 1)
      per_image[ids[int(index)]][field] = value
    return per_image

  def is_done(self, shard):
    return self.read_shard(shard) is not None

  def write_shard(self, shard, per_image):
    """Writes a shard atomically.

    Args:
      shard: shard index.
      per_image: dict image_id -> dict field name -> numpy array, for exactly the shard's images.
    """
    expected = self.shard_image_ids(shard)
    if sorted(per_image) != sorted(expected):
      raise ValueError(f'shard {shard} expects images {expected[:3]}..., got '
                       f'{sorted(per_image)[:3]}...')
    arrays = {_IDS_KEY: np.array(expected)}
    for index, image_id in enumerate(expected):
      for field, value in per_image[image_id].items():
        if '/' in field:
          raise ValueError(f'field names may not contain "/": {field!r}')
        arrays[f'{index}/{field}'] = np.asarray(value)
    with atomic.open_atomic(self.shard_path(shard)) as f:
      np.savez(f, **arrays)

  def missing_shards(self, num_jobs=1, job_index=0):
    """This job's shards that are not done yet (missing, partial or corrupt)."""
    return [s for s in self.shards_for_job(num_jobs, job_index) if not self.is_done(s)]

  def size_bytes(self):
    """Bytes of the finished shard files on disk."""
    return sum(os.path.getsize(self.shard_path(s)) for s in range(self.num_shards)
               if os.path.exists(self.shard_path(s)))

  def iter_images(self):
    """Yields `(image_id, dict of arrays)` in cache order, one shard in memory at a time.

    Raises:
      RuntimeError naming the shard when one is not done (run the stage first).
    """
    for shard in range(self.num_shards):
      per_image = self.read_shard(shard)
      if per_image is None:
        raise RuntimeError(f'{self.shard_path(shard)} is missing or corrupt')
      for image_id in self.shard_image_ids(shard):
        yield image_id, per_image[image_id]

