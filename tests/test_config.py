"""The settings: one declaration per setting gives its flag, its default and its checks; the
driver and `api.train` refuse the same configurations with the same message; presets are
constructors; the stage table; results.json keys are all documented."""

import dataclasses
import os
import subprocess
import sys

import pytest

from click_supervision import api
from click_supervision import config as config_lib
from click_supervision import results as results_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_setting_has_one_flag_and_every_flag_one_setting():
  sys.path.insert(0, REPO)
  from flags import mil_flags  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  paths = [p for p, _, _ in config_lib.settings() if p not in config_lib.SECTIONS]
  assert sorted(mil_flags.FLAG_OF) == sorted(paths)
  names = list(mil_flags.FLAG_OF.values())
  assert len(set(names)) == len(names)  # No two settings share a flag.
  defined = {name for name, flag in flags.FLAGS._flags().items()  # pylint: disable=protected-access
             if flag.name == name and getattr(flags.FLAGS[name], 'module_name', '') != 'absl'}
  assert set(names) <= defined
  # Defaults agree (the flag's default is the setting's own; computed ones are left unset).
  for path, section, field in config_lib.settings():
    if path in config_lib.SECTIONS or field.default is dataclasses.MISSING:
      continue
    flag_default = flags.FLAGS[mil_flags.FLAG_OF[path]].default
    if isinstance(field.default, tuple):
      assert flag_default == [str(v) for v in field.default], path
    elif field.metadata['choices'] is not None:
      assert flag_default == str(field.default), path
    else:
      assert flag_default == field.default, path


def test_flag_names_follow_the_section_prefix_or_the_table():
  assert config_lib.flag_name('detector', 'epochs') == 'detector_epochs'
  assert config_lib.flag_name('features', 'short_side') == 'feature_short_side'
  assert config_lib.flag_name('clicks', 'noise') == 'click_noise'
  assert config_lib.flag_name('clicks', 'num_clicks') == 'clicks'
  assert config_lib.flag_name('', 'stages') == 'stages'
  assert config_lib.flag_name('proposals', 'alpha') == 'edge_boxes_alpha'


def test_presets_are_constructors_and_settings_go_by_path():
  smoke = config_lib.Config.smoke()
  assert smoke.data.dataset == 'synthetic:smoke' and smoke.proposals.max_boxes == 200
  assert smoke.mil.num_folds == 3 and smoke.features.short_side == 0
  changed = config_lib.Config.smoke(**{'detector.epochs': 4, 'stages': ('data', 'detector')})
  assert changed.detector.epochs == 4 and changed.stages == ('data', 'detector')
  assert changed.data.dataset == 'synthetic:smoke'  # The preset stays under the change.
  assert config_lib.PRESETS['smoke']() == smoke
  with pytest.raises(config_lib.ConfigError, match="unknown setting 'detector.epoch'"):
    config_lib.Config.from_settings({'detector.epoch': 4})


def test_the_stage_table_decides_what_a_run_needs():
  assert set(config_lib.STAGE_NEEDS) == set(config_lib.STAGES)
  localise = config_lib.Config(stages=('data', 'clicks', 'proposals', 'features', 'mil'))
  assert localise.needs('maps') and localise.needs('clicks') and not localise.needs('detector')
  boxes = config_lib.Config(stages=config_lib.STAGES,
                            detector=config_lib.DetectorConfig(supervision='boxes'))
  assert boxes.skipped_stages() == ('clicks', 'mil', 'deep_mil')
  assert not boxes.needs('clicks') and boxes.runs('detector') and not boxes.runs('mil')
  assert not config_lib.Config(stages=('data',)).needs('tensorflow')


def test_resolved_fills_the_workdir_and_the_test_data():
  resolved = config_lib.Config.smoke().resolved()
  assert resolved.workdir == os.path.abspath(
      os.path.join('runs', 'synthetic-smoke_trainval_clicks2_seed0'))
  assert resolved.test_dataset == 'synthetic:smoke'
  assert resolved.detector.pool_cut  # The default trunk has a stride-16 cut ...
  uncut = config_lib.Config.from_settings({'features.trunk': 'vgg16'}).resolved()
  assert not uncut.detector.pool_cut  # ... VGG16 pools its one map.


# Each bad configuration as flags and as Python settings.
BAD = [
    (['--stages=data,bogus'], {'stages': ('data', 'bogus')}),
    (['--num_shards=2', '--shard_index=2'], {'num_shards': 2, 'shard_index': 2}),
    (['--strategy=tpu'], {'strategy': 'tpu'}),
    (['--svm_tol=0'], {'mil.svm_tol': 0.0}),
    (['--feature_context_scale=0.5'], {'features.context_scale': 0.5}),
    (['--detector_ignore_overlap=1.5'], None),  # Refused by the flag's own bound (absl).
    (['--trunk=vgg16', '--detector_finetune=upper', '--stages=data,detector'],
     {'features.trunk': 'vgg16', 'detector.finetune': 'upper', 'stages': ('data', 'detector')}),
    (['--dataset=voc:/no/such/folder'], {'data.dataset': 'voc:/no/such/folder'}),
    (['--click_source=/no/such/clicks.jsonl'], {'clicks.source': '/no/such/clicks.jsonl'}),
]


@pytest.mark.parametrize('flags,settings', BAD)
def test_the_driver_and_api_train_refuse_alike(tmp_path, flags, settings):
  common = {'data.cache_dir': str(tmp_path / 'cache'), 'workdir': str(tmp_path / 'w')}
  process = subprocess.run(
      [sys.executable, os.path.join(REPO, 'run_mil.py'), *flags,
       f'--cache_dir={tmp_path / "cache"}', f'--workdir={tmp_path / "w"}'],
      capture_output=True, text=True, timeout=300)
  lines = process.stderr.strip().splitlines()
  assert process.returncode != 0 and lines and lines[-1].startswith('error: '), process.stderr
  assert 'Traceback' not in process.stderr
  if settings is None:
    return
  with pytest.raises(Exception) as raised:
    api.train(config_lib.Config.from_settings(dict(common, **settings)))
  assert isinstance(raised.value, config_lib.UserError)
  assert lines[-1] == f'error: {raised.value}'
  assert not (tmp_path / 'w' / 'results.json').exists()  # Refused before any stage ran.


def test_undocumented_results_keys_are_refused(tmp_path):
  record = results_lib.RunRecord(str(tmp_path), {'stages': ['data']})
  with record.stage('data'):
    record.update({'num_images': 3})
  assert record['timings_s']['data'] >= 0 and record['status'] == 'running'
  with pytest.raises(ValueError, match='not documented'):
    record.update({'num_imagse': 3})
  record.set_status('complete')
  assert results_lib.read_results(str(tmp_path))['num_images'] == 3
