"""Proof that no ground-truth box reaches training: with clicks (1, 2) or image labels alone (0),
the ground-truth boxes of the training images are read by the click simulator and by evaluation
only.

Each regime runs twice on the smoke set, in process: once as usual, and once with every
ground-truth box of the training records replaced by random boxes (count, places, sizes, class
labels among the image's own labels, difficult flags; crowd regions too) right after the clicks
are made (`runner.stage_clicks`: the simulator legitimately aims its clicks at the true boxes).
Evaluation, and evaluation alone, is given the true boxes back: `evaluation.corloc` (MIL's and
deep MIL's CorLoc, through `mil.Problem.corloc`) and `evaluation.detection_metrics` (mAP; the
test split's records are not training records and are never replaced), so the numbers of the two
runs stay comparable. Everything the learner writes (localisations of MIL and of every deep MIL
iteration, the final localisations, the detections) must then be byte-identical, and so must
CorLoc and mAP. Reports drawn for TensorBoard are not restored: they are not evaluation, and they
only draw.

The negative control trains the detector on drawn boxes (`supervision='boxes'`), which does read
them: there the same replacement must change the detections, so the replacement reaches a learner
that reads boxes.
"""

import contextlib
import dataclasses
import glob
import json
import os

import numpy as np
import pytest

from click_supervision import area_fit
from click_supervision import config as config_lib
from click_supervision import evaluation
from click_supervision import localizations as localizations_lib
from click_supervision import runner
from click_supervision.datasets import synthetic

# The fields of a record that hold ground-truth boxes and what belongs to them.
TRUTH_FIELDS = ('gt_boxes', 'gt_labels', 'difficult', 'crowd_boxes', 'crowd_labels')
# What the learner writes, compared byte for byte (deep MIL's iterations are globbed).
LEARNER_OUTPUTS = ('localizations_mil.jsonl', 'localizations.jsonl', 'detections.jsonl')


@pytest.fixture(scope='module')
def cache_dir(smoke_cache):
  """The session's smoke-set cache (proposals and trunk maps are deterministic)."""
  return str(smoke_cache)


def smoke_config(cache_dir, workdir, **changes):
  """The smoke preset with every stage, the detectors shrunk, TensorFlow op determinism on (and
  a looser SVM stopping tolerance: the same code reads the same data, 40 % faster)."""
  settings = {
      'data.cache_dir': cache_dir, 'workdir': str(workdir), 'stages': config_lib.STAGES,
      'test_split': 'test', 'detector.supervision': 'mil', 'detector.epochs': 1,
      'detector.deep_mil_epochs': 1, 'detector.deep_mil_iterations': 1,
      'detector.hidden_units': 32, 'mil.num_iterations': 2, 'mil.svm_tol': 1e-2,
      'detector.deterministic': True}
  settings.update(changes)
  return config_lib.Config.smoke(**settings)


# --- the replacement ------------------------------------------------------------------------------


@dataclasses.dataclass
class Replacement:
  """What one replaced run did: the true ground truth kept aside (by image id), the arrays put in
  its place, and how often evaluation was handed the truth back."""
  truth: dict = dataclasses.field(default_factory=dict)   # image_id -> {field: true copy}
  fakes: dict = dataclasses.field(default_factory=dict)   # image_id -> the fake gt_boxes array
  fake_records: list = dataclasses.field(default_factory=list)  # the records as replaced
  training_paths: set = dataclasses.field(default_factory=set)
  evaluations: list = dataclasses.field(default_factory=list)  # (function, restored, records)
  area_fit_paths: list = dataclasses.field(default_factory=list)


def random_boxes(rng, count, height, width):
  """`count` random boxes float32 [count, 4] inside a height x width image."""
  sizes = rng.uniform(0.1, 0.6, (count, 2)) * [height, width]
  y0 = rng.uniform(0, height - sizes[:, 0])
  x0 = rng.uniform(0, width - sizes[:, 1])
  return np.stack([y0, x0, y0 + sizes[:, 0], x0 + sizes[:, 1]], axis=1).astype(np.float32)


def replace_truth(record, num_classes, rng):
  """Replaces a record's ground truth in place by random, still valid, ground truth: every image
  label keeps at least one box and the box labels stay among the image's labels (so
  `image_labels`, the weak labels the learner may read, are unchanged), plus up to two more boxes;
  one random crowd region. The old arrays are overwritten too, for any holder of a reference."""
  image_labels = np.asarray(record['image_labels'])
  h, w = float(record['height']), float(record['width'])
  # The old arrays, for code that kept them from before the clicks.
  old_count = len(record['gt_boxes'])
  record['gt_boxes'][...] = random_boxes(rng, old_count, h, w)
  record['gt_labels'][...] = rng.choice(image_labels, old_count)
  record['difficult'][...] = ~record['difficult']
  # New arrays, of another length.
  labels = np.concatenate([image_labels, rng.choice(image_labels, int(rng.integers(1, 3)))])
  rng.shuffle(labels)
  record['gt_boxes'] = random_boxes(rng, len(labels), h, w)
  record['gt_labels'] = labels.astype(np.int32)
  record['difficult'] = rng.random(len(labels)) < 0.3
  record['crowd_boxes'] = random_boxes(rng, 1, h, w)
  record['crowd_labels'] = rng.integers(0, num_classes, 1).astype(np.int32)
  assert np.array_equal(np.unique(record['gt_labels']), np.unique(image_labels))


@contextlib.contextmanager
def boxes_replaced_after_clicks(seed=0):
  """Within: every run replaces its training records' ground truth right after its clicks stage,
  and evaluation (only) sees the true ground truth of those records again."""
  state = Replacement()
  real_stage_clicks = runner.stage_clicks
  real_corloc = evaluation.corloc
  real_detection_metrics = evaluation.detection_metrics
  real_fit_on_dataset = area_fit.fit_on_dataset

  def stage_clicks(config, dataset, record):
    selected = real_stage_clicks(config, dataset, record)  # Clicks come from the true boxes.
    rng = np.random.default_rng(seed)
    for r in dataset.records:
      state.truth[r['image_id']] = {f: np.array(r[f], copy=True) for f in TRUTH_FIELDS}
      state.training_paths.add(os.path.realpath(r['path']))
      replace_truth(r, len(dataset.class_names), rng)
      state.fakes[r['image_id']] = r['gt_boxes']
      state.fake_records.append(dict(r))
    return selected

  def with_truth(records, function):
    """`records` with the true ground truth back in the records this run replaced (recognised by
    their fake boxes, so a test record that shares an image id is left alone)."""
    restored, out = 0, []
    for r in records:
      if r['gt_boxes'] is state.fakes.get(r['image_id']):
        r = dict(r, **state.truth[r['image_id']])
        restored += 1
      out.append(r)
    state.evaluations.append((function, restored, len(out)))
    return out

  def corloc(records, *args, **kwargs):
    return real_corloc(with_truth(records, 'corloc'), *args, **kwargs)

  def detection_metrics(detections, records, *args, **kwargs):
    return real_detection_metrics(detections, with_truth(records, 'detection_metrics'), *args,
                                  **kwargs)

  def fit_on_dataset(fit_data, *args, **kwargs):
    state.area_fit_paths.extend(os.path.realpath(r['path']) for r in fit_data.records)
    return real_fit_on_dataset(fit_data, *args, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(runner, 'stage_clicks', stage_clicks)
    patch.setattr(evaluation, 'corloc', corloc)
    patch.setattr(evaluation, 'detection_metrics', detection_metrics)
    patch.setattr(area_fit, 'fit_on_dataset', fit_on_dataset)
    yield state


# --- comparing runs -------------------------------------------------------------------------------


def learner_outputs(workdir):
  """{relative path: bytes} of the files the learner writes."""
  paths = [os.path.join(workdir, name) for name in LEARNER_OUTPUTS]
  paths += sorted(glob.glob(os.path.join(workdir, 'deep_mil', 'iteration_*.jsonl')))
  if os.path.exists(os.path.join(workdir, 'area_model.json')):  # Two clicks: mu(d).
    paths.append(os.path.join(workdir, 'area_model.json'))
  outputs = {}
  for path in paths:
    with open(path, 'rb') as f:
      outputs[os.path.relpath(path, workdir)] = f.read()
  return outputs


def metrics(results):
  """CorLoc and mAP numbers (and counts) of results.json, NaN made comparable."""
  keys = [k for k in results if k.startswith(('corloc', 'map', 'num_', 'area_model'))]
  return json.loads(json.dumps({k: results[k] for k in sorted(keys)}).replace('NaN', '"nan"'))


def run(config):
  with open(runner.run(config)) as f:
    results = json.load(f)
  assert results['status'] == 'complete'
  return results


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.slow(seconds=40)
@pytest.mark.parametrize('num_clicks', [2, 1, 0])
def test_no_ground_truth_box_reaches_training(cache_dir, tmp_path, num_clicks):
  usual = run(smoke_config(cache_dir, tmp_path / 'usual', **{'clicks.num_clicks': num_clicks}))
  with boxes_replaced_after_clicks() as replaced:
    other = run(smoke_config(cache_dir, tmp_path / 'replaced',
                             **{'clicks.num_clicks': num_clicks}))

  # The replacement happened, to every training record, and evaluation got the truth back: MIL's
  # and deep MIL's CorLoc on the replaced training records, mAP on the (never replaced) test set.
  assert len(replaced.truth) == other['num_images'] == 12
  corlocs = [e for e in replaced.evaluations if e[0] == 'corloc']
  assert corlocs and all(restored == total == 12 for _, restored, total in corlocs)
  assert [e for e in replaced.evaluations if e[0] == 'detection_metrics'] == [
      ('detection_metrics', 0, other['num_test_images'])]

  # What the learner wrote is byte-identical.
  expected = learner_outputs(tmp_path / 'usual')
  found = learner_outputs(tmp_path / 'replaced')
  assert 'deep_mil/iteration_1.jsonl' in expected
  assert sorted(found) == sorted(expected)
  for name in expected:
    assert found[name] == expected[name], f'{name} changed when the training boxes were replaced'
  # CorLoc and mAP (on the true boxes) are equal.
  assert metrics(other) == metrics(usual)
  assert other['corloc_deep_mil'] == usual['corloc_deep_mil'] and other['map'] == usual['map']

  # The restoring mattered: against the fake boxes the same final localisations score another
  # CorLoc, so equal numbers mean evaluation saw the truth.
  final = localizations_lib.read_localizations(
      str(tmp_path / 'replaced' / 'localizations.jsonl'), other['class_names'])
  against_fakes = evaluation.corloc(replaced.fake_records,
                                    {pair: s['box'] for pair, s in final.items()},
                                    len(other['class_names']))
  assert against_fakes['corloc'] != other['corloc_deep_mil']

  # mu(d) of the box-area cue (two clicks) was fitted on other images than the run's.
  if num_clicks == 2:
    source = other['area_model']['source']
    assert source.startswith(f'synthetic (seed {synthetic.SyntheticConfig.seed + 1}) ')
    assert synthetic.SyntheticConfig.smoke().seed != synthetic.SyntheticConfig.seed + 1
    assert replaced.area_fit_paths
    assert not set(replaced.area_fit_paths) & replaced.training_paths
  else:
    assert 'area_model' not in other and not replaced.area_fit_paths


def test_the_replacement_reaches_a_learner_that_reads_boxes(cache_dir, tmp_path):
  """Negative control: the detector trained on drawn boxes does read them, so replacing them
  after the clicks stage must change its detections (and the run is deterministic without)."""
  changes = {'clicks.num_clicks': 2, 'detector.supervision': 'boxes'}
  run(smoke_config(cache_dir, tmp_path / 'usual', **changes))
  run(smoke_config(cache_dir, tmp_path / 'again', **changes))
  with boxes_replaced_after_clicks() as replaced:
    run(smoke_config(cache_dir, tmp_path / 'replaced', **changes))
  assert len(replaced.truth) == 12
  detections = {name: (tmp_path / name / 'detections.jsonl').read_bytes()
                for name in ('usual', 'again', 'replaced')}
  assert detections['again'] == detections['usual']
  assert detections['replaced'] != detections['usual']
