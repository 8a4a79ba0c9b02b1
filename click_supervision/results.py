"""`results.json`, the record of one run: its version, its keys, and the one reader of it.

Every run folder holds one `results.json` (strict JSON, written atomically by `runner`). Readers
outside the run (`report`, `export`, `api.Run`) go through `read_results`, which refuses a file
it cannot read with one line that says why. `schema_version` changes when a key below changes
meaning or is removed (adding keys does not change it).

Keys of schema_version 1 (always present unless marked; numbers are floats unless marked):
  schema_version   int, 1
  status           `running`, `complete`, `failed` (then `error`: str), or `waiting for other
                   workers: ...` (a `--num_shards` worker that finished its shards)
  stages           list of the stages asked for (`config.STAGES`)
  config           the whole `config.Config` as a dict (dataclasses.asdict)
  dataset, split   the training data (`--dataset`, `--split`)
  clicks           int, clicks per image-class pair (0, 1, 2)
  click_source     `simulated` or the click file
  click_noise, click_instance   the simulator's settings (null for real clicks)
  seed, mil_seed   int: the click simulation seed and MIL's
  timings_s        dict stage -> wall seconds
  versions         dict package -> version of the software that wrote it
  num_images, num_pairs        int (after the data stage)
  class_names      list of str, the class of label index i at position i
  annotation_hours             (clicks or detector stage) hours of the run's supervision
                               (`clicks.annotation_hours`; for `--supervision=boxes`/`boxes_all`,
                               the boxes' drawing time)
  click_stats      (clicks stage) click counts and the full-supervision hours
                   (`annotation_hours_full_supervision`)
  corloc           (mil) CorLoc, mean over classes of the per-class CorLoc, after SVM MIL
  corloc_pooled, corloc_non_difficult, corloc_per_class, corloc_per_iteration,
  corloc_cue_only, changes_per_iteration     (mil) as named
  corloc_deep_mil, corloc_deep_mil_pooled, corloc_deep_mil_non_difficult,
  corloc_deep_mil_per_class, corloc_deep_mil_per_iteration, changes_per_iteration_deep_mil
                   (deep_mil) the same after deep MIL
  map              (detector) mAP on `test_dataset` / `test_split` (`map_metric` says which:
                   VOC 11-point AP at IoU 0.5, or COCO AP@[.5:.95] with `map50` beside it)
  map_per_class, num_test_images, num_detections, supervision, detector_config   (detector)
"""

import json
import os

from click_supervision.errors import UserError

SCHEMA_VERSION = 1
FILE = 'results.json'


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
