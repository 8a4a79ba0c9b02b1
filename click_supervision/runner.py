"""The pipeline's stages, run in order by `run(config)`: what `run_mil.py` and `api.train` do.

Flags (or Python) -> one `config.Config` -> stages, read top to bottom in `run`. Every stage
writes into `config.workdir`; expensive, reusable work goes to `config.data.cache_dir`, shared
by runs with different click settings. results.json (`results` module) says `running` from the
start, `complete` at the end and `failed` (with the error) when a stage raises.
"""

import dataclasses
import os
import platform
import time

from click_supervision import area_fit
from click_supervision import atomic
from click_supervision import bags as bags_lib
from click_supervision import clicks as clicks_lib
from click_supervision import cues as cues_lib
from click_supervision import datasets
from click_supervision import localizations as localizations_lib
from click_supervision import mil as mil_lib
from click_supervision import precompute
from click_supervision import progress as progress_lib
from click_supervision import results as results_lib
from click_supervision.datasets import images as images_lib
from click_supervision.datasets import records as records_lib
from click_supervision.errors import UserError


def log(message):
  print(message, flush=True)


PROGRESS = progress_lib.factory(log)


def write_json(path, obj):
  """Writes strict JSON atomically (NaN becomes null)."""
  atomic.write_json(path, obj)


def versions():
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  found = {'python': platform.python_version()}
  for package in ('click_supervision', 'numpy', 'tensorflow', 'keras', 'opencv-contrib-python-headless'):
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = None
  return found


def stage_data(config):
  """Reads the dataset, checks every image once, writes data_summary.json."""
  data = config.data
  dataset = datasets.load_dataset(data.dataset, data.split, cache_dir=data.cache_dir,
                                  skip_bad_records=data.skip_bad_records,
                                  tfds_data_dir=data.tfds_data_dir,
                                  tfds_download=data.tfds_download, log=log)
  check = images_lib.verify_images(
      dataset, cache_path=os.path.join(data.cache_dir, 'verified_images.json'),
      skip_bad_records=data.skip_bad_records, log=log,
      progress=_iterate_with_progress)
  summary = records_lib.summarize(dataset)
  summary['images_decoded_now'] = check['num_checked']
  summary['skipped'] = dataset.skipped
  if not dataset.records:
    raise UserError(f'{data.dataset} {data.split}: no usable images')
  return dataset, summary


def stage_clicks(config, dataset):
  """Simulates or reads the clicks and selects those the learner uses.

  Returns:
    (selected, info): selected is dict (image_id, class_index) -> list of `clicks.Click`;
    info is a dict for results.json.
  """
  click_config = config.clicks
  pairs = records_lib.image_class_pairs(dataset)
  if click_config.num_clicks == 0:
    selected = clicks_lib.select_clicks(None, pairs, 0)
    info = {'click_file': None}
  else:
    if click_config.source == 'simulated':
      # Simulated clicks take the same path as real ones: written in the click format, then read.
      click_path = os.path.join(config.workdir, 'clicks_simulated.jsonl')
      simulator = {'num_annotators': max(click_config.num_annotators, click_config.num_clicks),
                   'noise': click_config.noise, 'instance': click_config.instance,
                   'seed': click_config.seed}
      rows = clicks_lib.simulate_clicks(dataset, **simulator)
      clicks_lib.write_click_file(click_path, rows, {
          'dataset': dataset.name, 'split': dataset.split, 'simulator': simulator})
    else:
      click_path = os.path.abspath(click_config.source)
    click_set = clicks_lib.read_click_file(click_path, dataset)
    selected = clicks_lib.select_clicks(click_set, pairs, click_config.num_clicks,
                                        use_flagged=click_config.use_flagged)
    info = {'click_file': click_path}
  info.update(clicks_lib.click_statistics(selected, dataset))
  info.update(clicks_lib.annotation_hours(info['num_clicks'], len(pairs),
                                          click_config.seconds_per_click,
                                          click_config.seconds_per_box))
  return selected, info


def _iterate_with_progress(iterable, total, desc, unit='img'):
  """Wraps an iterable with `PROGRESS` (rate and ETA; plain log lines when not on a terminal)."""
  with PROGRESS(total, desc, unit) as bar:
    for item in iterable:
      yield item
      bar.update(1)


_NEED_FEATURES = ('features', 'mil', 'deep_mil', 'detector')


def stage_precompute(config, dataset, results, mirrored=None):
  """Proposals and trunk maps, cached in --cache_dir and shared by runs, split over workers;
  with `mirrored` (default: when the detector trains with flips) also the mirrored images' maps.

  Returns:
    a bag source for MIL, or None while other workers (--num_shards) still owe shards.
  """
  workers = dict(num_workers=config.num_workers, worker_index=config.worker_index, log=log)
  start = time.time()
  proposals, info = precompute.compute_proposals(dataset, config.proposals,
                                                 config.data.cache_dir, **workers)
  results['timings_s']['proposals'] = round(time.time() - start, 3)
  results['proposals'] = dict(info, cache=proposals.dir, method=config.proposals.method)
  if not (set(_NEED_FEATURES) & set(config.stages)) or not _all_shards_done(
      proposals, config, results, 'proposals'):
    return None
  start = time.time()
  if config.features.store == 'maps':
    features, info = precompute.compute_trunk_maps(dataset, config.features,
                                                   config.data.cache_dir, **workers)
  else:
    features, info = precompute.compute_features(dataset, config.features, proposals,
                                                 config.data.cache_dir, **workers)
  results['timings_s']['features'] = round(time.time() - start, 3)
  results['features'] = dict(info, cache=features.dir, store=config.features.store)
  if not _all_shards_done(features, config, results, 'features'):
    return None
  if config.features.store == 'maps':
    detector = bool({'deep_mil', 'detector'} & set(config.stages))
    if mirrored is None:
      mirrored = config.detector.flip and detector
    caches = {}
    wanted = [('mirrored_maps', True, None)] if mirrored else []
    if detector and (config.detector.finetune == 'upper' or config.detector.pool_cut):
      wanted.append(('cut_maps', False, 'lower'))
      if mirrored:
        wanted.append(('mirrored_cut_maps', True, 'lower'))
    for name, flipped, part in wanted:
      start = time.time()
      caches[name], info = precompute.compute_trunk_maps(
          dataset, config.features, config.data.cache_dir, mirrored=flipped, part=part,
          **workers)
      results['timings_s']['features_' + name] = round(time.time() - start, 3)
      if not _all_shards_done(caches[name], config, results, f'features ({name})'):
        return None
    return bags_lib.TrunkMapBags(dataset.records, proposals, features,
                                 pool_size=config.features.pool_size,
                                 context_scale=config.features.context_scale, **caches)
  return bags_lib.RoiFeatureBags(dataset.records, proposals, features)


def run(config):
  """Runs the configured stages; returns the path of results.json.

  results.json says `running` from the start, `complete` at the end and `failed` (with the
  error) when a stage raises, so a reader never mistakes an old or broken run for a finished one.
  """
  if not config.test_dataset:  # Empty: the detector is tested on the training dataset.
    config = dataclasses.replace(config, test_dataset=config.data.dataset)
  if config.strategy != 'default' and {'deep_mil', 'detector'} & set(config.stages):
    # Made first: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    from click_supervision import distribute  # pylint: disable=g-import-not-at-top
    strategy = strategy_of(config)
    if not distribute.is_chief(strategy):
      config = dataclasses.replace(config, workdir=os.path.join(
          config.workdir, f'worker_{distribute.worker_index(strategy)}'))
  os.makedirs(config.workdir, exist_ok=True)
  atomic.remove_stale_temp_files(config.workdir, recursive=True, log=log)
  # Parallel workers share the cache: only their temp files older than 10 minutes are stale.
  atomic.remove_stale_temp_files(config.data.cache_dir, min_age_s=600, recursive=True, log=log)
  simulated = config.clicks.source == 'simulated'
  results = {
      'schema_version': results_lib.SCHEMA_VERSION,
      'status': 'running',
      'stages': list(config.stages),
      'config': config.to_dict(),
      'dataset': config.data.dataset,
      'split': config.data.split,
      'clicks': config.clicks.num_clicks,
      'click_source': config.clicks.source,
      # Simulation settings only mean something for simulated clicks.
      'click_noise': config.clicks.noise if simulated else None,
      'click_instance': config.clicks.instance if simulated else None,
      'seed': config.clicks.seed,
      'mil_seed': config.mil.seed,
      'timings_s': {},
      'versions': versions(),
  }
  results_path = os.path.join(config.workdir, results_lib.FILE)
  write_json(results_path, results)
  log(f'workdir: {config.workdir}')
  if set(config.stages) & {'features', 'mil', 'deep_mil', 'detector'}:  # Stages that load TF.
    from click_supervision import summaries  # pylint: disable=g-import-not-at-top (imports TF)
    summaries.write_hparams(os.path.join(config.workdir, 'tensorboard'), config)
  try:
    _run_stages(config, results, simulated)
  except BaseException as e:
    results['status'] = 'failed'
    results['error'] = f'{type(e).__name__}: {e}'
    write_json(results_path, results)
    raise
  if results['status'] == 'running':
    results['status'] = 'complete'
  write_json(results_path, results)
  return results_path


def _run_stages(config, results, simulated):
  # --- data: always loaded when a stage needs it; the image check is cached. ---
  start = time.time()
  dataset, summary = stage_data(config)
  results['timings_s']['data'] = round(time.time() - start, 3)
  results['class_names'] = list(dataset.class_names)
  results['num_images'] = summary['num_images']
  results['num_pairs'] = summary['num_image_class_pairs']
  if 'data' in config.stages:
    write_json(os.path.join(config.workdir, 'data_summary.json'), summary)
    log(f'data: {summary["num_images"]} images, {summary["num_objects"]} objects '
        f'({summary["num_difficult"]} difficult, {summary["num_crowd"]} crowd), '
        f'{summary["num_image_class_pairs"]} image-class pairs, {summary["num_skipped"]} skipped')

  # --- clicks (drawn-box supervision has none: it skips clicks, mil and deep_mil) ---
  boxes_only = config.detector.supervision != 'mil'
  skipped = [s for s in ('clicks', 'mil', 'deep_mil') if s in config.stages] if boxes_only else []
  if skipped:
    log(f'--supervision={config.detector.supervision}: skipping {", ".join(skipped)}')
  selected = {}
  if not boxes_only and {'clicks', 'mil', 'deep_mil'} & set(config.stages):
    start = time.time()
    selected, click_info = stage_clicks(config, dataset)
    results['timings_s']['clicks'] = round(time.time() - start, 3)
    results['click_stats'] = click_info
    results['annotation_hours'] = click_info['annotation_hours']
    log(f'clicks: {click_info["num_clicks"]} clicks on {click_info["num_pairs"]} pairs '
        f'({config.clicks.source}); annotation time {click_info["annotation_hours"]:.3f} h '
        f'(boxes would take {click_info["annotation_hours_full_supervision"]:.3f} h)')

  # --- proposals and features ---
  bags = None
  if {'proposals', *_NEED_FEATURES} & set(config.stages):
    bags = stage_precompute(config, dataset, results)
  results['trunk'] = config.features.trunk
  results['weights'] = config.features.weights

  # --- mil: localise every positive pair; resumes from its last finished iteration. ---
  if 'mil' in config.stages and bags is not None and not boxes_only:
    start = time.time()
    results.update(stage_mil(config, dataset, selected, bags))
    results['timings_s']['mil'] = round(time.time() - start, 3)
    log(f'CorLoc: {results["corloc"]:.4f} (mean over classes; {results["num_pairs"]} pairs, '
        f'pooled {results["corloc_pooled"]:.4f}; non-difficult '
        f'{results["corloc_non_difficult"]:.4f}; cue-only {results["corloc_cue_only"]:.4f}; '
        f'{config.clicks.num_clicks} clicks' +
        (f', simulated, noise {config.clicks.noise}, seed {config.clicks.seed})'
         if simulated else f' from {config.clicks.source})'))

  # --- deep_mil: the detector as the appearance model, starting from MIL's localisations. ---
  if 'deep_mil' in config.stages and bags is not None and not boxes_only:
    start = time.time()
    results.update(stage_deep_mil(config, dataset, selected, bags))
    results['timings_s']['deep_mil'] = round(time.time() - start, 3)
    log(f'CorLoc after deep MIL: {results["corloc_deep_mil"]:.4f} (mean over classes; pooled '
        f'{results["corloc_deep_mil_pooled"]:.4f}; per iteration '
        + ' '.join(f'{v:.3f}' for v in results['corloc_deep_mil_per_iteration']) + ')')

  # --- detector: trained on the final localisations (or drawn boxes), tested for mAP. ---
  if 'detector' in config.stages and bags is not None:
    start = time.time()
    results.update(stage_detector(config, dataset, bags, results))
    results['timings_s']['detector'] = round(time.time() - start, 3)
    log(f'mAP: {results["map"]:.4f} on {results["test_dataset"]} {results["test_split"]} '
        f'({results["num_test_images"]} images; {results["map_metric"]}); supervision '
        f'{config.detector.supervision}, annotation time {results["annotation_hours"]:.3f} h')


def fit_area_model_on_gold(config, dataset):
  """mu(d) fitted on the hidden gold pairs of a click file from the collection tool.

  Returns:
    (AreaModel, distances, areas).
  Raises:
    UserError when the click file lists no gold pairs; cues.AreaFitError when they give fewer
    than 3 usable same-instance pairs.
  """
  click_set = clicks_lib.read_click_file(os.path.abspath(config.clicks.source), dataset)
  gold_pairs = (click_set.header.get('annotation_tool') or {}).get('gold_pairs')
  if not gold_pairs:
    raise UserError(f'{config.clicks.source}: the box-area cue fits mu(d) on gold pairs (clicks on '
                    f'objects with known boxes), which this click file does not list; collect '
                    f'clicks with `python -m click_supervision.annotate` (gold_fraction > 0) or '
                    f'rerun with --cues without box_area')
  distances, areas = cues_lib.gold_pair_distances(
      dataset, click_set, gold_pairs, use_flagged=config.clicks.use_flagged)
  model = cues_lib.AreaModel.fit(distances, areas, source=(
      f'gold pairs of {config.clicks.source}: {len(distances)} of {len(gold_pairs)} with two '
      f'clicks on one instance'))
  return model, distances, areas


def stage_area_model(config, dataset):
  """mu(d) of the box-area cue (two clicks only), by `area_fit`'s policy; writes
  area_model.json. Returns (AreaModel or None, info dict for results.json)."""
  if config.clicks.num_clicks != 2 or not config.mil.uses('box_area'):
    return None, {}
  try:
    if config.clicks.source != 'simulated':
      # Real clicks: the collection tool's hidden gold pairs, whose boxes the user's annotations
      # provide; they are among the localised images by design.
      model, distances, areas = fit_area_model_on_gold(config, dataset)
    else:
      model, distances, areas = area_fit.area_model_for_run(
          config.area_fit_data, dataset, config.clicks, config.data.cache_dir, log=log)
  except cues_lib.AreaFitError as e:
    log(f'mil: box-area cue off: {e}')
    return None, {'box_area_cue_off': str(e)}
  fitted_on = {} if distances is None else {'distances': distances.round(3).tolist(),
                                            'areas': areas.round(1).tolist()}
  write_json(os.path.join(config.workdir, 'area_model.json'), dict(model.to_dict(), **fitted_on))
  log(f'mil: mu(d) = {model.a0:.2f} + {model.a1:.2f} log d, sigma {model.sigma:.2f}, from '
      f'{model.num_pairs} pairs of {model.source}')
  return model, {'area_model': model.to_dict()}


def stage_mil(config, dataset, selected, bags):
  """Runs MIL; writes localizations.jsonl, area_model.json and TensorBoard summaries."""
  from click_supervision import summaries  # pylint: disable=g-import-not-at-top (imports TF)
  clicks = {pair: clicks_lib.clicks_as_array(c) for pair, c in selected.items()}
  area_model, info = stage_area_model(config, dataset)
  summary_writer = summaries.writer(os.path.join(config.workdir, 'tensorboard'))
  result = mil_lib.run_mil(
      dataset.records, dataset.class_names, bags, clicks, config.mil, workdir=config.workdir,
      area_model=area_model, log=log, progress=PROGRESS,
      on_iteration=lambda iteration, i: summaries.write_iteration(summary_writer, iteration, i))
  boxes = {p: s['box'] for p, s in result['selections'].items()}
  summaries.write_localization_images(summary_writer, dataset.records, boxes, clicks,
                                      dataset.class_names, step=result['num_iterations'])
  # localizations.jsonl holds the final boxes (deep MIL overwrites it); the SVM MIL ones stay
  # in localizations_mil.jsonl, where deep MIL starts.
  for name in ('localizations_mil.jsonl', 'localizations.jsonl'):
    localizations_lib.write_localizations(os.path.join(config.workdir, name),
                                          result['selections'], dataset.class_names)
  info.update({k: v for k, v in result.items() if k not in ('selections', 'timings_s')})
  info['mil_timings_s'] = result['timings_s']
  info['mil_config'] = dataclasses.asdict(config.mil)
  return info


def stage_deep_mil(config, dataset, selected, bags):
  """Deep MIL from the SVM MIL localisations; rewrites localizations.jsonl with its boxes."""
  from click_supervision import summaries  # pylint: disable=g-import-not-at-top (imports TF)
  from click_supervision.detector import deep_mil  # pylint: disable=g-import-not-at-top
  start_path = os.path.join(config.workdir, 'localizations_mil.jsonl')
  if not os.path.exists(start_path):
    raise UserError(f'{start_path} does not exist: deep_mil starts from the mil stage\'s '
                    f'localisations (add mil to --stages)')
  mil_selections = localizations_lib.read_localizations(start_path, dataset.class_names)
  clicks = {pair: clicks_lib.clicks_as_array(c) for pair, c in selected.items()}
  area_model, _ = stage_area_model(config, dataset)
  _enable_determinism(config)
  summary_writer = summaries.writer(os.path.join(config.workdir, 'tensorboard', 'deep_mil'))
  trunk = detector_trunk(config)
  result = deep_mil.run_deep_mil(
      dataset.records, dataset.class_names, bags, detector_source(config, bags, trunk), clicks,
      mil_selections, config.mil, config.detector, config.workdir, area_model=area_model,
      folds=config.detector.deep_mil_folds, log=log, progress=PROGRESS,
      summary_writer=summary_writer,
      on_iteration=lambda t, i: summaries.write_iteration(summary_writer, t, i, 'deep_mil'),
      strategy=strategy_of(config), trunk=trunk)
  localizations_lib.write_localizations(os.path.join(config.workdir, 'localizations.jsonl'),
                                        result['selections'], dataset.class_names)
  info = {k: v for k, v in result.items() if k not in ('selections', 'timings_s')}
  info['deep_mil_timings_s'] = result['timings_s']
  return info


def detector_trunk(config):
  """The pretrained trunk the detector fine-tunes (None for `--detector_finetune=none`): the
  one the caches' maps came from, cut in two parts when it can be (`backbones.CUTTABLE`)."""
  if config.detector.finetune == 'none':
    return None
  from click_supervision import backbones  # pylint: disable=g-import-not-at-top
  return backbones.build_trunk(config.features.trunk, config.features.weights,
                               cache_dir=config.data.cache_dir,
                               cut=config.features.trunk in backbones.CUTTABLE)


def detector_source(config, bags, trunk=None):
  """The detector's `InputSource` over a bag source's images in the mode of
  `--detector_finetune` (`trunk`: `detector_trunk`'s, for the images' stride)."""
  from click_supervision.detector import batches  # pylint: disable=g-import-not-at-top
  image_settings = None
  if trunk is not None:
    image_settings = (config.features.short_side or None, config.features.max_long_side,
                      int(trunk.feature_stride))
  return batches.InputSource(bags, config.detector.finetune, config.detector.pool_cut,
                             image_settings=image_settings,
                             max_long_side=config.features.max_long_side)


def strategy_of(config):
  """The run's `tf.distribute.Strategy` (`--strategy`, `--tpu`)."""
  from click_supervision import distribute  # pylint: disable=g-import-not-at-top (imports TF)
  return distribute.make_strategy(config.strategy, config.tpu)


def _enable_determinism(config):
  if config.detector.deterministic:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.experimental.enable_op_determinism()


def training_boxes(config, dataset):
  """The detector's training boxes: the final localisations, or drawn boxes."""
  from click_supervision.detector import batches  # pylint: disable=g-import-not-at-top
  if config.detector.supervision != 'mil':
    return batches.training_boxes_from_ground_truth(dataset.records, config.detector.supervision)
  path = os.path.join(config.workdir, 'localizations.jsonl')
  if not os.path.exists(path):
    raise UserError(f'{path} does not exist: the detector trains on the localisations of the mil '
                    f'stage (add mil to --stages, or use --supervision=boxes)')
  return batches.training_boxes_from_selections(
      localizations_lib.read_localizations(path, dataset.class_names))


def supervision_hours(config, dataset, results):
  """Annotation hours of the run's regime (clicks, or the drawn boxes it trains on)."""
  click_config = config.clicks
  if config.detector.supervision == 'mil':
    return results['annotation_hours']
  if config.detector.supervision == 'boxes':
    count = len(records_lib.image_class_pairs(dataset))
  else:
    count = sum(int((~r['difficult']).sum()) for r in dataset.records)
  return count * click_config.seconds_per_box / 3600.0


def stage_detector(config, dataset, bags, results):
  """Trains the detector, runs it on the test split; writes detections.jsonl, returns mAP info."""
  from click_supervision import evaluation  # pylint: disable=g-import-not-at-top
  from click_supervision import summaries  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import inference  # pylint: disable=g-import-not-at-top
  from click_supervision.detector import train as train_lib  # pylint: disable=g-import-not-at-top
  _enable_determinism(config)
  summary_writer = summaries.writer(os.path.join(config.workdir, 'tensorboard', 'detector'))
  trunk = detector_trunk(config)
  model = train_lib.train_detector(
      detector_source(config, bags, trunk), training_boxes(config, dataset),
      len(dataset.class_names), config.detector, os.path.join(config.workdir, 'detector'),
      strategy=strategy_of(config), log=log, progress=PROGRESS, summary_writer=summary_writer,
      trunk=trunk)

  # --- the test split: its own proposals and trunk maps (cached like the training ones). ---
  same = (config.test_dataset, config.test_split) == (config.data.dataset, config.data.split)
  if same:
    test_dataset, test_bags = dataset, bags
  else:
    test_config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, dataset=config.test_dataset, split=config.test_split))
    test_dataset, _ = stage_data(test_config)
    if test_dataset.class_names != dataset.class_names:
      raise UserError(f'--test_dataset={config.test_dataset}: its classes differ from '
                      f'--dataset\'s ({len(test_dataset.class_names)} against '
                      f'{len(dataset.class_names)})')
    test_bags = stage_precompute(dataclasses.replace(test_config, num_workers=1, worker_index=0),
                                 test_dataset, {'timings_s': {}}, mirrored=False)
  detections = inference.detect_all(model, detector_source(config, test_bags, trunk),
                                    config.detector, progress=PROGRESS)
  inference.write_detections(os.path.join(config.workdir, 'detections.jsonl'), detections,
                             dataset.class_names)
  info = {'test_dataset': config.test_dataset, 'test_split': config.test_split,
          'num_test_images': len(test_dataset.records), 'num_detections': len(detections),
          'supervision': config.detector.supervision,
          'detector_config': dataclasses.asdict(config.detector),
          'annotation_hours': supervision_hours(config, dataset, results)}
  info.update(evaluation.detection_metrics(detections, test_dataset.records, dataset.class_names,
                                           coco=config.test_dataset.startswith('coco')))
  with summary_writer.as_default():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.summary.scalar('detector/map', info['map'], step=0)
  summaries.write_detection_images(summary_writer, test_dataset.records, detections,
                                   dataset.class_names, step=0)
  return info


def _all_shards_done(cache, config, results, stage):
  """True when every shard of `cache` is done; else notes in `results` that other workers
  (--num_shards) still owe shards, so later stages wait for them."""
  missing = cache.missing_shards()
  if not missing:
    return True
  results['status'] = f'waiting for other workers: {len(missing)} {stage} shards missing'
  log(f'{stage}: worker {config.worker_index} of {config.num_workers} is done; '
      f'{len(missing)} shards are left to the other workers (rerun without --num_shards '
      f'afterwards to continue)')
  return False
