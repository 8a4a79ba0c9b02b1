"""The Beam precompute pipeline (DirectRunner, 2 worker processes) writes the driver's cache."""

import numpy as np
import pytest

from click_supervision import beam_precompute
from click_supervision import datasets
from click_supervision import precompute
from click_supervision import proposals as proposals_lib
from test_run_mil import run_driver

pytest.importorskip('apache_beam', reason='Apache Beam is not installed: pip install ".[beam]"')

SMOKE = ['--dataset=synthetic:smoke', '--split=trainval']


def shards_of(cache):
  """dict image_id -> entry over every shard of a `ShardedCache`."""
  entries = {}
  for shard in range(cache.num_shards):
    entries.update(cache.read_shard(shard))
  return entries


@pytest.mark.slow(seconds=34)
def test_direct_runner_writes_the_cache_the_driver_writes_and_reads(tmp_path):
  driver_cache, beam_cache = tmp_path / 'driver', tmp_path / 'beam'
  code, lines = run_driver('--preset=smoke', '--stages=data,proposals,features',
                           f'--workdir={tmp_path / "run"}', cache_dir=driver_cache)
  assert code == 0, lines
  code = beam_precompute.main([*SMOKE, f'--cache_dir={beam_cache}', '--max_proposals=200',
                               '--feature_short_side=0', '--runner=DirectRunner',
                               '--direct_num_workers=2', '--direct_running_mode=multi_processing'])
  assert code == 0
  # Same arrays image by image (each cache folder holds its own copy of the generated set).
  proposal_config = proposals_lib.ProposalConfig(max_boxes=200)
  feature_config = precompute.FeatureConfig(short_side=0)
  caches = []
  for root in (driver_cache, beam_cache):
    dataset = datasets.load_dataset('synthetic:smoke', 'trainval', cache_dir=str(root),
                                    log=lambda m: None)
    caches.append((precompute.proposals_cache(dataset, proposal_config, str(root)),
                   precompute.trunk_maps_cache(dataset, feature_config, str(root))))
  for index in (0, 1):
    driver_entries, beam_entries = shards_of(caches[0][index]), shards_of(caches[1][index])
    assert sorted(driver_entries) == sorted(beam_entries) and len(beam_entries) == 12
    for image_id, entry in driver_entries.items():
      for key, value in entry.items():
        np.testing.assert_allclose(np.asarray(beam_entries[image_id][key], np.float32),
                                   np.asarray(value, np.float32), rtol=1e-3, atol=1e-3,
                                   err_msg=f'{image_id} {key}')
  # The driver on Beam's cache computes nothing.
  code, lines = run_driver('--preset=smoke', '--stages=data,proposals,features',
                           f'--workdir={tmp_path / "run2"}', cache_dir=beam_cache)
  assert code == 0, lines
  assert any(l.startswith('proposals: all shards of this job cached') for l in lines), lines
  assert not any('shards to compute' in l for l in lines), lines
  # Nothing left: a second pipeline run has no work.
  work, _ = beam_precompute.missing_shards('synthetic:smoke', 'trainval', str(beam_cache),
                                           proposal_config, feature_config)
  assert work == []


def test_bad_stage_is_one_line(tmp_path, capsys):
  assert beam_precompute.main([*SMOKE, f'--cache_dir={tmp_path}', '--stages=edges']) == 1
  assert capsys.readouterr().err.strip() == (
      "error: --stages: unknown stage 'edges'; stages are proposals,features")
