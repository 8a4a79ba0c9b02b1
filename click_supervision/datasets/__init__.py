"""Data sources, all yielding the plain records of `records.py`.

`load_dataset` reads the `--dataset` value:
  synthetic                              the embedded default (generated into the cache folder)
  synthetic:smoke                        a 20-image version for tests (`--preset=smoke`)
  voc:PATH                               a VOCdevkit year folder (Annotations/, JPEGImages/, ...)
  coco:ANNOTATIONS_JSON[:IMAGES_DIR]     a COCO instances JSON and its image folder
  voc2007, coco2017                      the TFDS builders `voc/2007` and `coco/2017`
"""

import os

from click_supervision.datasets import records
from click_supervision.errors import DataError
from click_supervision.errors import UserError

DATASET_HELP = ('synthetic | synthetic:smoke | voc:PATH | coco:ANNOTATIONS_JSON[:IMAGES_DIR] | '
                'voc2007 | coco2017')


def load_dataset(spec, split, cache_dir, skip_bad_records=False, tfds_data_dir=None,
                 tfds_download=False, log=print):
  """Loads one split of the data source named by `spec` (see module docstring).

  Args:
    spec: the `--dataset` value.
    split: split name (`trainval`, `train`, `val`, `test`; ignored by `coco:`, whose JSON is the
      split).
    cache_dir: folder for generated or exported data (synthetic images, TFDS image files).
    skip_bad_records: count and log bad inputs instead of stopping at the first one.
    tfds_data_dir: TFDS data folder (default: TFDS's own default).
    tfds_download: allow TFDS to download and prepare the data.
    log: callable taking one str.
  Returns:
    `records.Dataset`.
  Raises:
    UserError (DataError for a bad file) with a message that says what to do.
  """
  if spec in ('synthetic', 'synthetic:smoke'):
    # pylint: disable=g-import-not-at-top
    from click_supervision.datasets import synthetic
    from click_supervision.datasets import voc
    config = synthetic.SyntheticConfig.smoke() if spec.endswith(':smoke') else None
    root = synthetic.ensure_synthetic(cache_dir, log=log, config=config)
    return voc.load_voc(root, split, name=spec, skip_bad_records=skip_bad_records, log=log)
  if spec.startswith('voc:'):
    from click_supervision.datasets import voc  # pylint: disable=g-import-not-at-top
    return voc.load_voc(os.path.expanduser(spec[len('voc:'):]), split,
                        skip_bad_records=skip_bad_records, log=log)
  if spec.startswith('coco:'):
    from click_supervision.datasets import coco  # pylint: disable=g-import-not-at-top
    json_path, images_dir = coco.parse_spec(os.path.expanduser(spec[len('coco:'):]))
    return coco.load_coco(json_path, images_dir, skip_bad_records=skip_bad_records, log=log)
  if spec in ('voc2007', 'coco2017'):
    from click_supervision.datasets import tfds_sources  # pylint: disable=g-import-not-at-top
    loader = tfds_sources.load_voc2007 if spec == 'voc2007' else tfds_sources.load_coco2017
    return loader(split, cache_dir=cache_dir, data_dir=tfds_data_dir, download=tfds_download,
                  log=log)
  raise UserError(f'--dataset={spec!r} is not a data source; use one of: {DATASET_HELP}')


def check_spec(spec, flag='--dataset'):
  """Raises UserError unless `spec` names a data source (checked before any stage runs: a typo
  should not surface after an hour of proposals). Paths of `voc:` / `coco:` must exist."""
  if spec in ('synthetic', 'synthetic:smoke', 'voc2007', 'coco2017'):
    return
  for kind in ('voc:', 'coco:'):
    if spec.startswith(kind):
      path = os.path.expanduser(spec[len(kind):].split('.json:', 1)[0] +
                                ('.json' if '.json:' in spec else ''))
      if not os.path.exists(path):
        raise UserError(f'{flag}={spec}: {path} does not exist')
      return
  raise UserError(f'{flag}={spec!r} is not a data source; use one of: {DATASET_HELP}')


def check_split(spec, split, cache_dir=None, flag='--split'):
  """Raises DataError naming the missing split file when a `voc:` folder lacks
  `ImageSets/Main/<split>.txt`, UserError for a split the synthetic set does not have (checked
  before any stage runs). `coco:` JSON files are their own split; TFDS checks its own."""
  del cache_dir  # The synthetic set's splits are fixed; its folder may not exist yet.
  if spec in ('synthetic', 'synthetic:smoke'):
    from click_supervision.datasets import synthetic  # pylint: disable=g-import-not-at-top
    if split not in synthetic.SPLITS:
      raise UserError(f'{flag}={split}: the synthetic set has the splits '
                      f'{", ".join(synthetic.SPLITS)}')
  elif spec.startswith('voc:'):
    split_file = os.path.join(os.path.expanduser(spec[len('voc:'):]), 'ImageSets', 'Main',
                              f'{split}.txt')
    if not os.path.isfile(split_file):
      raise DataError(split_file, f'{flag}={split}: split file not found')


def dataset_slug(spec):
  """A short file-name-safe name for a `--dataset` value (used in default folder names)."""
  if ':' in spec:
    kind, rest = spec.split(':', 1)
    rest = rest.split('.json:', 1)[0]
    base = os.path.basename(os.path.normpath(rest))
    base = os.path.splitext(base)[0]
    spec = f'{kind}-{base}'
  return ''.join(c if c.isalnum() or c in '-_' else '_' for c in spec)
