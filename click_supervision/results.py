"""`results.json`, the record of one run: its keys, its one writer and its one reader.

Every run folder holds one `results.json` (strict JSON, written atomically after every change).
`RunRecord` writes it: the run's start, one timed context per stage (`with record.stage('mil'):`)
that records the stage's keys and its wall time, and the status changes. It refuses a key that
`KEYS` does not document, so the schema below is the whole truth. Readers outside the run
(`report`, `export`, `api.Run`) go through `read_results`, which refuses a file it cannot read
with one line that says why. `SCHEMA_VERSION` changes when a key changes meaning or is removed
(adding keys does not change it).
"""

import contextlib
import json
import os
import platform
import time

from click_supervision import atomic
from click_supervision.errors import UserError

SCHEMA_VERSION = 1
FILE = 'results.json'

# Every key a results.json may hold (schema_version 1), with its meaning. Numbers are floats
# unless marked; "(stage)" keys are written by that stage only.
KEYS = {
    # The run.
    'schema_version': 'int, 1',
    'status': '`running`, `complete`, `failed` (then `error`), or `waiting for other precompute '
              'jobs: ...` (a `--num_shards` job that finished its shards)',
    'error': 'str: the exception that failed the run',
    'stages': 'list of the stages asked for (`config.STAGES`)',
    'config': 'the whole `config.Config` as a dict (dataclasses.asdict)',
    'dataset': 'the training data source (`--dataset`)',
    'split': 'its split (`--split`)',
    'clicks': 'int, clicks per image-class pair (0, 1, 2)',
    'click_source': '`simulated` or the click file',
    'click_noise': 'the simulator\'s noise (null for real clicks)',
    'click_instance': 'the simulator\'s instance choice (null for real clicks)',
    'seed': 'int, the click simulation seed',
    'mil_seed': 'int, MIL\'s seed',
    'timings_s': 'dict stage -> wall seconds (also `features_<cache>` for the detector\'s '
                 'extra trunk-map caches)',
    'versions': 'dict package -> version of the software that wrote it',
    # data
    'num_images': 'int (data) images of the split',
    'num_pairs': 'int (data) positive image-class pairs',
    'class_names': '(data) list of str, the class of label index i at position i',
    # clicks
    'click_stats': '(clicks) click counts, mean click error, response times and the '
                   'full-supervision hours (`clicks.click_statistics`, `annotation_hours`)',
    'clicks_per_pair': '(clicks) clicks used per image-class pair (1.5 when half the pairs of a '
                       'one-click run get a second click)',
    'second_click': '(clicks) the adaptive second click (`second_click`): the request file '
                    '(`requests_file`; chosen pairs), `num_requested`, `fraction_requested`, '
                    'and how they were chosen (`source_run`, `fraction`, `choice`, `seed`, '
                    '`size_weight`) or the request file\'s header',
    'annotation_hours': '(clicks or detector) hours of the run\'s supervision '
                        '(`clicks.annotation_hours`; for `--supervision=boxes`/`boxes_all`, '
                        'the boxes\' drawing time)',
    # proposals and features
    'proposals': '(proposals) dict: cache folder, method, images computed, seconds per image',
    'features': '(features) dict: cache folder, images computed, seconds and bytes per image',
    'trunk': '(features) the trunk (`--trunk`)',
    'weights': '(features) its weights (`--weights`)',
    # mil
    'corloc': '(mil) CorLoc after SVM MIL: mean over classes of the per-class CorLoc',
    'corloc_pooled': '(mil) CorLoc over all pairs',
    'corloc_non_difficult': '(mil) class-mean CorLoc on pairs with a non-difficult box',
    'corloc_pooled_non_difficult': '(mil) pooled CorLoc on those pairs',
    'corloc_per_class': '(mil) dict class -> CorLoc',
    'corloc_per_iteration': '(mil) list: class-mean CorLoc after each iteration (0 = init)',
    'corloc_pooled_per_iteration': '(mil) list: pooled CorLoc per iteration',
    'changes_per_iteration': '(mil) list of int: selections changed per iteration',
    'corloc_cue_only': '(mil) class-mean CorLoc of the cue-only choice (O x click cues)',
    'corloc_cue_only_pooled': '(mil) its pooled CorLoc',
    'corloc_cue_only_non_difficult': '(mil) its CorLoc on non-difficult pairs',
    'num_iterations': '(mil) int: iterations run',
    'num_split_pairs': '(mil) int: two-click pairs judged to be on two instances',
    'classes_without_negatives': '(mil) list of classes whose models had no negative image',
    'area_model': '(mil, deep_mil; two clicks) mu(d) of the box-area cue (`cues.AreaModel`)',
    'box_area_cue_off': '(mil, deep_mil; two clicks) why the box-area cue was switched off',
    'mil_timings_s': '(mil) dict part -> seconds',
    'mil_config': '(mil) the `MilConfig` as a dict',
    # deep_mil
    'corloc_deep_mil': '(deep_mil) class-mean CorLoc after deep MIL',
    'corloc_deep_mil_pooled': '(deep_mil) its pooled CorLoc',
    'corloc_deep_mil_non_difficult': '(deep_mil) its CorLoc on non-difficult pairs',
    'corloc_deep_mil_per_class': '(deep_mil) dict class -> CorLoc',
    'corloc_deep_mil_per_iteration': '(deep_mil) list: class-mean CorLoc per iteration (0 = '
                                     'SVM MIL)',
    'corloc_deep_mil_pooled_per_iteration': '(deep_mil) list: pooled CorLoc per iteration',
    'changes_per_iteration_deep_mil': '(deep_mil) list of int: selections changed',
    'deep_mil_folds': '(deep_mil) int: detectors per iteration',
    'deep_mil_skipped': '(deep_mil) str, present when deep MIL kept SVM MIL\'s localisations '
                        'because its detectors would train on too few images '
                        '(--deep_mil_min_images)',
    'deep_mil_timings_s': '(deep_mil) dict part -> seconds',
    # detector
    'map': '(detector) mAP on `test_dataset` / `test_split` (`map_metric` says which: VOC '
           '11-point AP at IoU 0.5, or COCO AP@[.5:.95] with `map50` beside it)',
    'map_metric': '(detector) str: what `map` is',
    'map50': '(detector; COCO data) AP at IoU 0.5',
    'map_coco': '(detector; COCO data) dict: every pycocotools number',
    'map_per_class': '(detector) dict class -> VOC-style AP at IoU 0.5',
    'evaluation': '(detector) dict: the test\'s settings (nms_iou, max_detections, '
                  'score_threshold, iou_threshold of a true positive, scales, flips)',
    'test_dataset': '(detector) the data source of the test',
    'test_split': '(detector) its split',
    'num_test_images': '(detector) int',
    'num_detections': '(detector) int, over all test images',
    'supervision': '(detector) `mil`, `boxes` or `boxes_all`',
    'detector_config': '(detector) the `DetectorConfig` as a dict',
}


def versions():
  """dict package -> version of the software writing a record."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  found = {'python': platform.python_version()}
  for package in ('click_supervision', 'numpy', 'tensorflow', 'keras',
                  'opencv-contrib-python-headless'):
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = None
  return found


class RunRecord:
  """The writer of one run's results.json.

  Args:
    workdir: the run folder.
    start: dict of the keys known at the start (written at once with `status` `running`,
      `schema_version`, `timings_s` and `versions`).
  """

  def __init__(self, workdir, start):
    self.path = os.path.join(workdir, FILE)
    self.results = {'schema_version': SCHEMA_VERSION, 'status': 'running', 'timings_s': {},
                    'versions': versions()}
    self.update(start)

  def update(self, keys):
    """Records keys (each documented in `KEYS`) and writes the file."""
    undocumented = sorted(set(keys) - set(KEYS))
    if undocumented:
      raise ValueError(f'results.json keys {undocumented} are not documented in results.KEYS')
    self.results.update(keys)
    atomic.write_json(self.path, self.results)

  def __getitem__(self, key):
    return self.results[key]

  def get(self, key, default=None):
    return self.results.get(key, default)

  @contextlib.contextmanager
  def stage(self, name):
    """Times one stage: its wall seconds go to `timings_s[name]` when it ends (also when it
    raises), and the file is written."""
    start = time.time()
    try:
      yield self
    finally:
      self.results['timings_s'][name] = round(time.time() - start, 3)
      atomic.write_json(self.path, self.results)

  def set_status(self, status, error=None):
    """`complete`, `failed` (with the error's text) or `waiting for other ...`."""
    self.update({'status': status, **({'error': error} if error else {})})


def read_results(run_dir, need=(), complete=True):
  """The results dict of a run folder.

  Args:
    run_dir: the run's folder (its `--workdir`), or the path of its results.json.
    need: keys the caller needs; a run without one of them is refused.
    complete: refuse runs whose status is not `complete`.
  Raises:
    UserError naming the folder and the problem: missing, unreadable, of another schema
    version, unfinished, or without a needed key.
  """
  path = run_dir if run_dir.endswith('.json') else os.path.join(run_dir, FILE)
  if not os.path.isdir(os.path.dirname(path) or '.'):
    raise UserError(f'{os.path.dirname(path)}: no such run folder')
  if not os.path.exists(path):
    raise UserError(f'{path}: no such file (is {os.path.dirname(path)} a run folder?)')
  try:
    with open(path) as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'{path}: not readable as JSON ({e})') from None
  if not isinstance(results, dict):
    raise UserError(f'{path}: not a results object')
  version = results.get('schema_version')
  if version != SCHEMA_VERSION:
    written = ('has no schema_version (written before it existed)' if version is None else
               f'has schema_version {version!r}')
    raise UserError(f'{path} {written}; this click_supervision reads version {SCHEMA_VERSION}: '
                    f'rerun the run\'s command with this version (finished stages are reused)')
  if complete and results.get('status') != 'complete':
    raise UserError(f'{path}: the run is not complete (status {results.get("status")!r})')
  missing = [k for k in need if k not in results]
  if missing:
    stages = ','.join(results.get('stages', []))
    raise UserError(f'{path}: no {missing[0]!r} (stages run: {stages})')
  return results


def final_corloc(results):
  """The run's final CorLoc (after deep MIL when it ran), or None."""
  return results.get('corloc_deep_mil', results.get('corloc'))  # Strict JSON: NaN is null.
