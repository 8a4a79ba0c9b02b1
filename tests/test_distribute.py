"""tf.distribute: a MirroredStrategy step over 2 logical CPU devices equals the one-device step on
the same global batch, and bad strategy settings are one clear error."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from click_supervision import distribute
from click_supervision.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mirrored_over_two_cpus_matches_one_device_losses_and_weights():
  # Its own process: the two logical CPU devices must exist before TensorFlow starts.
  process = subprocess.run(
      [sys.executable, os.path.join('tests', 'scripts', 'strategy_equivalence.py')], cwd=REPO,
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO))
  assert process.returncode == 0, process.stderr[-3000:]
  runs = json.loads(process.stdout.strip().splitlines()[-1])
  for mode in ('head', 'finetune'):
    one, mirrored = runs[mode]['default'], runs[mode]['mirrored']
    assert (one['replicas'], mirrored['replicas']) == (1, 2)
    assert all(np.isfinite(one['losses']))
    np.testing.assert_allclose(mirrored['losses'], one['losses'], rtol=1e-4, atol=1e-5)
    # Three updates moved the weights, and both runs moved them alike.
    assert len(one['losses']) == 3 and one['losses'][0] != one['losses'][2]
    for a, b in zip(one['weights'], mirrored['weights']):
      np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-3, atol=1e-5)


def test_strategy_errors_are_one_line():
  with pytest.raises(UserError, match='--tpu=ADDRESS'):
    distribute.make_strategy('tpu')
  with pytest.raises(UserError, match='strategies are default, mirrored'):
    distribute.make_strategy('pods')


def test_multi_worker_needs_tf_config(monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  with pytest.raises(UserError, match='TF_CONFIG'):
    distribute.make_strategy('multi_worker')
  monkeypatch.setenv('TF_CONFIG', '{"task": {}}')
  with pytest.raises(UserError, match='cluster.worker'):
    distribute.make_strategy('multi_worker')


def test_the_chief_is_the_chief_task_else_worker_zero():
  assert distribute.is_chief(distribute.make_strategy('default'))
  assert distribute.chief_task(None, None, False)
  assert distribute.chief_task('chief', 0, True)
  assert distribute.chief_task('worker', 0, False)
  assert not distribute.chief_task('worker', 0, True)  # The cluster has its own chief.
  assert not distribute.chief_task('worker', 1, False)
  assert not distribute.chief_task('evaluator', 0, False)
