"""The Python API, SavedModel export, predict and the cost report, on real runs of the smoke set."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from click_supervision import api
from click_supervision import config as config_lib
from click_supervision import export
from click_supervision import features as features_lib
from click_supervision import mil as mil_lib
from click_supervision import precompute
from click_supervision import predict
from click_supervision import proposals as proposals_lib
from click_supervision import report
from click_supervision.datasets import images as images_lib
from click_supervision.detector import serving
from click_supervision.errors import UserError


def smoke_config(root, cache, **changes):
  """The driver's `--preset=smoke` as a `Config` built in Python."""
  config = config_lib.Config(
      data=config_lib.DataConfig(dataset='synthetic:smoke', cache_dir=str(cache)),
      proposals=proposals_lib.ProposalConfig(max_boxes=200),
      features=precompute.FeatureConfig(short_side=0),
      mil=mil_lib.MilConfig(num_folds=3, num_iterations=2),
      detector=config_lib.DetectorConfig(supervision='boxes', epochs=4, hidden_units=64),
      test_split='test', stages=('data', 'proposals', 'features', 'detector'))
  return dataclasses.replace(config, **changes)


@pytest.fixture(scope='module')
def boxes_run(tmp_path_factory, smoke_cache):
  """A detector trained on drawn boxes through `api.train`, and an exported copy."""
  root = tmp_path_factory.mktemp('serving')
  run = api.train(smoke_config(root, smoke_cache, workdir=str(root / 'boxes')))
  model_dir = str(root / 'model')
  export.export(run.workdir, model_dir)
  return root, run, model_dir


def test_train_from_python_returns_the_run(boxes_run):
  _, run, _ = boxes_run
  assert run.results['status'] == 'complete' and run.results['schema_version'] == 1
  assert 0.0 <= run.map <= 1.0 and run.corloc is None  # Drawn boxes: no localisation stage.
  assert sorted(run.class_names) == ['cross', 'disc', 'heart', 'rectangle', 'star', 'triangle']
  assert set(run.results['map_per_class']) == set(run.class_names)


def test_exported_model_gives_the_in_process_detections(boxes_run):
  _, run, model_dir = boxes_run
  loaded = api.Detector.load(model_dir)
  assert loaded.class_names == run.class_names
  # The reference: the serving recipe's functions called eagerly on the served model, for the
  # same image and proposals; the SavedModel runs them inside its graph.
  model, metadata = export.serving_model(run.workdir)
  image_path = first_test_image(run)
  image = images_lib.load_image(image_path)
  proposals = loaded.proposals(image)
  config = export.detector_config_of(metadata)
  assert config.test_flip  # The default: the plain and the mirrored image.
  views = []
  for mirrored in (False, True):
    pixels, factors = features_lib.prepare_image(image[:, ::-1] if mirrored else image,
                                                 *metadata['image_settings'],
                                                 model.feature_stride)
    views.append(({'images': pixels}, factors, mirrored))
  probabilities, boxes = serving.view_outputs(model, views, proposals, image.shape[1])
  eager = serving.detections(probabilities, boxes, *image.shape[:2], config.score_threshold,
                             config.nms_iou, config.max_detections)
  found = loaded.detect(image, proposals)
  assert len(eager['scores']) > 0
  np.testing.assert_allclose(found['scores'], eager['scores'], rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(found['labels'], eager['classes'].numpy())
  np.testing.assert_allclose(found['boxes'], eager['boxes'], rtol=1e-4, atol=0.01)
  # The run's in-process Detector serves the same graph.
  in_process = run.detector().detect(image, proposals)
  np.testing.assert_allclose(in_process['scores'], found['scores'], rtol=1e-4, atol=1e-6)
  # The run's own test (float16 cached maps) found the same best detection.
  image_id = first_test_record(run)['image_id']
  with open(f'{run.workdir}/detections.jsonl') as f:
    rows = [json.loads(line) for line in f]
  best = max((r for r in rows if r['image_id'] == image_id), key=lambda r: r['score'])
  assert best['class'] == found['classes'][0]
  assert best['score'] == pytest.approx(float(found['scores'][0]), rel=1e-2)


def first_test_record(run):
  from click_supervision import datasets  # pylint: disable=g-import-not-at-top
  data = run.results['config']['data']
  dataset = datasets.load_dataset('synthetic:smoke', 'test', cache_dir=data['cache_dir'])
  return dataset.records[0]


def first_test_image(run):
  return first_test_record(run)['path']


def test_predict_draws_the_boxes_it_returns(boxes_run, tmp_path, capsys):
  _, run, model_dir = boxes_run
  image_path = first_test_image(run)
  found = api.Detector.load(model_dir).predict([image_path])[0]
  top = float(found['scores'][0])
  out = tmp_path / 'drawn.png'
  # Only the best box (score >= its own) is drawn.
  assert predict.main([f'--model={model_dir}', f'--image={image_path}', f'--out={out}',
                       '--json', f'--min_score={top}']) == 0
  written = json.loads((tmp_path / 'drawn.json').read_text())
  assert len(written['detections']) == len(found['scores'])
  assert written['detections'][0]['class'] == found['classes'][0]
  np.testing.assert_allclose(written['detections'][0]['box'], found['boxes'][0], atol=0.01)
  drawn = np.asarray(Image.open(out).convert('RGB'))
  original = images_lib.load_image(image_path)
  assert drawn.shape == original.shape
  ymin, xmin, ymax, xmax = np.asarray(found['boxes'][0]).round().astype(int)
  ymax, xmax = min(ymax - 1, drawn.shape[0] - 1), min(xmax - 1, drawn.shape[1] - 1)
  for y, x in ((ymin, xmin), (ymin, xmax), (ymax, xmin), (ymax, xmax)):
    assert tuple(drawn[y, x]) == predict.DRAWN, (y, x)
  # Nothing drawn away from the box and its label.
  changed = np.argwhere((drawn != original).any(-1))
  assert changed[:, 0].min() >= ymin - 1 and changed[:, 0].max() <= max(ymax, ymin + 20) + 1
  assert 'drawn' in capsys.readouterr().out


def test_bad_inputs_are_one_line_naming_the_file(boxes_run, tmp_path, capsys):
  _, run, model_dir = boxes_run
  image_path = first_test_image(run)

  def error_of(code):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith('error: '), err
    return err[0]

  assert str(tmp_path / 'nothing') in error_of(predict.main(
      [f'--model={tmp_path / "nothing"}', f'--image={image_path}', f'--out={tmp_path / "o.png"}']))
  # A model folder written by another version.
  other = tmp_path / 'other_model'
  other.mkdir()
  (other / export.METADATA_FILE).write_text(json.dumps({'schema_version': 99}))
  assert 'schema_version 99' in error_of(predict.main(
      [f'--model={other}', f'--image={image_path}', f'--out={tmp_path / "o.png"}']))
  broken = tmp_path / 'broken.jpg'
  broken.write_bytes(b'not a jpeg')
  assert str(broken) in error_of(predict.main(
      [f'--model={model_dir}', f'--image={broken}', f'--out={tmp_path / "o.png"}']))
  assert str(tmp_path / 'no_run') in error_of(export.main(
      [f'--run={tmp_path / "no_run"}', f'--out={tmp_path / "m"}']))
  assert str(tmp_path / 'no_run') in error_of(report.main([str(tmp_path / 'no_run')]))
  old = tmp_path / 'old_run'
  old.mkdir()
  (old / 'results.json').write_text(json.dumps({'status': 'complete'}))
  assert 'no schema_version' in error_of(report.main([str(old)]))
  with pytest.raises(UserError, match='no schema_version'):
    api.Run(str(old))


def test_report_draws_runs_and_prints_hand_computed_factors(boxes_run, capsys):
  root, boxes, _ = boxes_run
  one_click = api.train(smoke_config(
      root, boxes.results['config']['data']['cache_dir'], workdir=str(root / 'one_click'),
      clicks=config_lib.ClickConfig(num_clicks=1),
      detector=config_lib.DetectorConfig(),
      stages=('data', 'clicks', 'proposals', 'features', 'mil')))
  out = root / 'report.png'
  assert report.main([boxes.workdir, one_click.workdir, f'--out={out}']) == 0
  printed = capsys.readouterr().out
  image = np.asarray(Image.open(out))
  assert image.shape[0] > 300 and image.shape[1] > 800
  # Hand-computed: one drawn box (34.5 s) against one click (1.87 s) per positive pair.
  pairs = boxes.results['num_pairs']
  assert one_click.results['click_stats']['num_clicks'] == pairs
  assert abs(boxes.results['annotation_hours'] - pairs * 34.5 / 3600) < 1e-9
  rows = {line.split('|')[1].strip(): line for line in printed.splitlines()
          if line.startswith('| ')}
  assert f'| {pairs * 1.87 / 3600:.2f} | {34.5 / 1.87:.1f} |' in rows['one click']
  assert f'| {pairs * 34.5 / 3600:.2f} | 1.0 |' in rows['boxes']
  assert f'{one_click.corloc:.3f}' in rows['one click']
