"""The pipeline's stages, run in order by `run(config)`: what `run_mil.py` and `api.train` do.

Flags (or Python) -> one `config.Config` -> stages, read top to bottom in `run`. Every stage
writes into `config.workdir`; expensive, reusable work goes to `config.data.cache_dir`, shared
by runs with different click settings. results.json (`results` module) says `running` from the
start, `complete` at the end and `failed` (with the error) when a stage raises.
"""

import dataclasses
import os

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


def load_data(config):
  """Reads the dataset and checks every image once (the check is cached).

  Returns:
    (dataset, summary dict of `records.summarize` plus the decoding counts).
  """
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


def load_clicks(config, dataset):
  """Simulates or reads the clicks and selects those the learner uses.

  Returns:
    (selected, info): selected is dict (image_id, class_index) -> list of `clicks.Click`;
    info is a dict for results.json.
  """
  click_config = config.clicks
  pairs = records_lib.image_class_pairs(dataset)
  second, second_info = second_click_pairs(config, dataset)
  if click_config.num_clicks == 0:
    selected = clicks_lib.select_clicks(None, pairs, 0)
    info = {'click_file': None}
  else:
    if click_config.source == 'simulated':
      # Simulated clicks take the same path as real ones: written in the click format, then read.
      # The adaptive second click simulates both annotators, so a requested pair gets the very
      # click the two-click setting gives it.
      click_path = os.path.join(config.workdir, 'clicks_simulated.jsonl')
      used = click_config.num_clicks + (1 if click_config.adaptive else 0)
      simulator = {'num_annotators': max(click_config.num_annotators, used),
                   'noise': click_config.noise, 'instance': click_config.instance,
                   'seed': click_config.seed}
      rows = clicks_lib.simulate_clicks(dataset, **simulator)
      clicks_lib.write_click_file(click_path, rows, {
          'dataset': dataset.name, 'split': dataset.split, 'simulator': simulator})
    else:
      click_path = os.path.abspath(click_config.source)
    click_set = clicks_lib.read_click_file(click_path, dataset)
    selected = clicks_lib.select_clicks(click_set, pairs, click_config.num_clicks,
                                        use_flagged=click_config.use_flagged,
                                        second_click_pairs=second)
    info = {'click_file': click_path}
  info.update(clicks_lib.click_statistics(selected, dataset))
  info['clicks_per_pair'] = info['num_clicks'] / max(len(pairs), 1)
  if second_info:
    info['second_click'] = second_info
  # Hours count the clicks actually used (a requested pair pays for its second click).
  info.update(clicks_lib.annotation_hours(info['num_clicks'], len(pairs),
                                          click_config.seconds_per_click,
                                          click_config.seconds_per_box))
  return selected, info


def second_click_pairs(config, dataset):
  """The pairs that get a second click (`second_click`), from the request file or chosen from a
  finished one-click run; a chosen set is written to `<workdir>/second_click_requests.jsonl`.

  Returns:
    (set of pairs or None when the run is not adaptive, info dict for results.json).
  """
  from click_supervision import second_click  # pylint: disable=g-import-not-at-top
  click_config = config.clicks
  if click_config.second_click_requests:
    pairs, header = second_click.read_requests(click_config.second_click_requests, dataset)
    path = os.path.abspath(click_config.second_click_requests)
  elif click_config.second_click_from:
    chosen, needs, header = second_click.requests_from_run(
        click_config.second_click_from, dataset, click_config.second_click_fraction,
        click_config.second_click_choice, click_config.second_click_seed,
        click_config.second_click_size_weight)
    path = os.path.join(config.workdir, 'second_click_requests.jsonl')
    second_click.write_requests(path, chosen, needs, dataset.class_names, header)
    pairs = set(chosen)
  else:
    return None, {}
  num_pairs = len(records_lib.image_class_pairs(dataset))
  log(f'clicks: a second click on {len(pairs)} of {num_pairs} pairs ({path})')
  return pairs, dict({k: v for k, v in header.items() if k not in ('format', 'version')},
                     requests_file=path, num_requested=len(pairs),
                     fraction_requested=len(pairs) / max(num_pairs, 1))


def _iterate_with_progress(iterable, total, desc, unit='img'):
  """Wraps an iterable with `PROGRESS` (rate and ETA; plain log lines when not on a terminal)."""
  with PROGRESS(total, desc, unit) as bar:
    for item in iterable:
      yield item
      bar.update(1)


def stage_precompute(config, dataset, record, mirrored=None, test=False):
  """Proposals and trunk maps, cached in --cache_dir and shared by runs, split over precompute
  jobs (--num_shards); for the detector also the maps it needs besides MIL's (the mirrored
  images' with flips, the trunk's cut with --detector_finetune=upper or --detector_pool_cut).

  Args:
    mirrored: also the mirrored images' maps (default: `--detector_flip`).
    test: the detector's test images: their scales are `--detector_test_scales`, timings go to
      `test_<stage>`, the caches' infos are not recorded.
  Returns:
    a bag source, or None while other jobs (--num_shards) still owe shards.
  """
  jobs = dict(num_jobs=config.num_shards, job_index=config.shard_index, log=log)
  prefix = 'test_' if test else ''
  with record.stage(prefix + 'proposals'):
    proposals, info = precompute.compute_proposals(dataset, config.proposals,
                                                   config.data.cache_dir, **jobs)
    if not test:
      record.update({'proposals': dict(info, cache=proposals.dir,
                                       method=config.proposals.method)})
  if not config.needs('maps') or not _all_shards_done(proposals, config, record, 'proposals'):
    return None
  with record.stage(prefix + 'features'):
    features, info = precompute.compute_trunk_maps(dataset, config.features,
                                                   config.data.cache_dir, **jobs)
    if not test:
      record.update({'features': dict(info, cache=features.dir),
                     'trunk': config.features.trunk, 'weights': config.features.weights})
  if not _all_shards_done(features, config, record, 'features'):
    return None
  if not config.needs('detector'):
    return bags_lib.TrunkMapBags(dataset.records, proposals, features,
                                 pool_size=config.features.pool_size,
                                 context_scale=config.features.context_scale)
  # The detector's own maps: mirrored images (flips), the trunk's cut (--detector_finetune=upper,
  # --detector_pool_cut), and other image scales (--detector_train_scales / test_scales).
  detector = config.detector
  if mirrored is None:  # Flips in training; deep MIL scores the training images as the test.
    mirrored = detector.flip or (detector.test_flip and config.runs('deep_mil'))
  scales = detector.test_scales if test else (
      detector.train_scales + (detector.test_scales if config.runs('deep_mil') else ()))
  base = config.features.short_side
  by_scale = {}
  for scale in dict.fromkeys([base, *scales]):  # In order, once each.
    feature_config = dataclasses.replace(config.features, short_side=scale)
    wanted = [('maps', False, None)] + ([('mirrored_maps', True, None)] if mirrored else [])
    if detector.finetune == 'upper' or detector.pool_cut:
      wanted += [('cut_maps', False, 'lower')] + (
          [('mirrored_cut_maps', True, 'lower')] if mirrored else [])
    caches = {}
    for name, flipped, part in wanted:
      if (name, scale) == ('maps', base):
        caches[name] = features
        continue
      label = f'features_{name}' + (f'_{scale}' if scale != base else '')
      with record.stage(prefix + label):
        caches[name], _ = precompute.compute_trunk_maps(
            dataset, feature_config, config.data.cache_dir, mirrored=flipped, part=part, **jobs)
      if not _all_shards_done(caches[name], config, record, label):
        return None
    by_scale[scale] = bags_lib.TrunkMapBags(
        dataset.records, proposals, caches.pop('maps'), pool_size=config.features.pool_size,
        context_scale=config.features.context_scale, **caches)
  bags = by_scale.pop(base)
  bags.scales = by_scale
  return bags


def run(config):
  """Runs the configured stages; returns the path of results.json.

  results.json says `running` from the start, `complete` at the end and `failed` (with the
  error) when a stage raises, so a reader never mistakes an old or broken run for a finished one.

  Raises:
    UserError (with `config.ConfigError` for settings) before any stage runs when the settings
    name missing data or files; the driver prints it as its `error:` line.
  """
  config = config.resolved()
  config.check_inputs()
  if config.strategy != 'default' and config.needs('detector'):
    # Made first: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    from click_supervision import distribute  # pylint: disable=g-import-not-at-top
    strategy = strategy_of(config)
    if not distribute.is_chief(strategy):
      config = dataclasses.replace(config, workdir=os.path.join(
          config.workdir, f'worker_{distribute.worker_index(strategy)}'))
  os.makedirs(config.workdir, exist_ok=True)
  atomic.remove_stale_temp_files(config.workdir, recursive=True, log=log)
  # Parallel jobs share the cache: only their temp files older than 10 minutes are stale.
  atomic.remove_stale_temp_files(config.data.cache_dir, min_age_s=600, recursive=True, log=log)
  simulated = config.clicks.source == 'simulated'
  record = results_lib.RunRecord(config.workdir, {
      'stages': list(config.stages), 'config': config.to_dict(),
      'dataset': config.data.dataset, 'split': config.data.split,
      'clicks': config.clicks.num_clicks, 'click_source': config.clicks.source,
      # Simulation settings only mean something for simulated clicks.
      'click_noise': config.clicks.noise if simulated else None,
      'click_instance': config.clicks.instance if simulated else None,
      'seed': config.clicks.seed, 'mil_seed': config.mil.seed})
  log(f'workdir: {config.workdir}')
  if config.needs('tensorflow'):
    from click_supervision import summaries  # pylint: disable=g-import-not-at-top (imports TF)
    summaries.write_hparams(os.path.join(config.workdir, 'tensorboard'), config)
  try:
    run_stages(config, record)
  except BaseException as e:
    record.set_status('failed', f'{type(e).__name__}: {e}')
    raise
  if record['status'] == 'running':
    record.set_status('complete')
  return record.path


def run_stages(config, record):
  """The stages, in order; each decides from `config` whether it runs."""
  dataset = stage_data(config, record)
  selected = stage_clicks(config, dataset, record)
  bags = stage_precompute(config, dataset, record) if config.needs('proposals') else None
  if bags is None:
    return
  stage_mil(config, dataset, selected, bags, record)
  stage_deep_mil(config, dataset, selected, bags, record)
  stage_detector(config, dataset, bags, record)


def stage_data(config, record):
  """Always runs when a stage needs the records; writes data_summary.json for `data`."""
  with record.stage('data'):
    dataset, summary = load_data(config)
    record.update({'class_names': list(dataset.class_names),
                   'num_images': summary['num_images'],
                   'num_pairs': summary['num_image_class_pairs']})
  if 'data' in config.stages:
    atomic.write_json(os.path.join(config.workdir, 'data_summary.json'), summary)
    log(f'data: {summary["num_images"]} images, {summary["num_objects"]} objects '
        f'({summary["num_difficult"]} difficult, {summary["num_crowd"]} crowd), '
        f'{summary["num_image_class_pairs"]} image-class pairs, {summary["num_skipped"]} skipped')
  return dataset


def stage_clicks(config, dataset, record):
  """The clicks the learner uses (none with drawn-box supervision, which skips the stages that
  need clicks). Returns dict (image_id, class_index) -> list of `clicks.Click`."""
  skipped = config.skipped_stages()
  if skipped:
    log(f'--supervision={config.detector.supervision}: skipping {", ".join(skipped)}')
  if not config.needs('clicks'):
    return {}
  with record.stage('clicks'):
    selected, info = load_clicks(config, dataset)
    record.update({'click_stats': info, 'annotation_hours': info['annotation_hours'],
                   'clicks_per_pair': info['clicks_per_pair']})
    if 'second_click' in info:
      record.update({'second_click': info['second_click']})
  log(f'clicks: {info["num_clicks"]} clicks on {info["num_pairs"]} pairs '
      f'({config.clicks.source}); annotation time {info["annotation_hours"]:.3f} h '
      f'(boxes would take {info["annotation_hours_full_supervision"]:.3f} h)')
  return selected


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
  if not config.clicks.uses_two_clicks or not config.mil.uses('box_area'):
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
  atomic.write_json(os.path.join(config.workdir, 'area_model.json'),
                    dict(model.to_dict(), **fitted_on))
  log(f'mil: mu(d) = {model.a0:.2f} + {model.a1:.2f} log d, sigma {model.sigma:.2f}, from '
      f'{model.num_pairs} pairs of {model.source}')
  return model, {'area_model': model.to_dict()}


def stage_mil(config, dataset, selected, bags, record):
  """MIL; writes localizations.jsonl, area_model.json and TensorBoard summaries."""
  if not config.runs('mil'):
    return
  with record.stage('mil'):
    record.update(_mil(config, dataset, selected, bags))
  simulated = config.clicks.source == 'simulated'
  log(f'CorLoc: {record["corloc"]:.4f} (mean over classes; {record["num_pairs"]} pairs, '
      f'pooled {record["corloc_pooled"]:.4f}; non-difficult '
      f'{record["corloc_non_difficult"]:.4f}; cue-only {record["corloc_cue_only"]:.4f}; '
      f'{config.clicks.num_clicks} clicks' +
      (' and adaptive second clicks' if config.clicks.adaptive else '') +
      (f', simulated, noise {config.clicks.noise}, seed {config.clicks.seed})'
       if simulated else f' from {config.clicks.source})'))


def feature_memory_budget(gib):
  """Bytes MIL may keep pooled features in: `gib` GiB, at most a quarter of physical memory (so
  the default cannot push a small machine into swap)."""
  try:
    physical = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (ValueError, OSError, AttributeError):  # No sysconf (Windows): trust the setting.
    physical = float('inf')
  return int(min(gib * 2**30, physical / 4))


def _mil(config, dataset, selected, bags):
  from click_supervision import summaries  # pylint: disable=g-import-not-at-top (imports TF)
  clicks = {pair: clicks_lib.clicks_as_array(c) for pair, c in selected.items()}
  area_model, info = stage_area_model(config, dataset)
  summary_writer = summaries.writer(os.path.join(config.workdir, 'tensorboard'))
  bags.remember(feature_memory_budget(config.feature_memory_gib))
  try:
    result = mil_lib.run_mil(
        dataset.records, dataset.class_names, bags, clicks, config.mil, workdir=config.workdir,
        area_model=area_model, log=log, progress=PROGRESS,
        on_iteration=lambda iteration, i: summaries.write_iteration(summary_writer, iteration, i))
  finally:
    bags.remember(0)  # Deep MIL and the detector train next: give the memory back.
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


def stage_deep_mil(config, dataset, selected, bags, record):
  """Deep MIL from the SVM MIL localisations; rewrites localizations.jsonl with its boxes."""
  if not config.runs('deep_mil'):
    return
  with record.stage('deep_mil'):
    record.update(_deep_mil(config, dataset, selected, bags))
  log(f'CorLoc after deep MIL: {record["corloc_deep_mil"]:.4f} (mean over classes; pooled '
      f'{record["corloc_deep_mil_pooled"]:.4f}; per iteration '
      + ' '.join(f'{v:.3f}' for v in record['corloc_deep_mil_per_iteration']) + ')')


def _deep_mil(config, dataset, selected, bags):
  from click_supervision import summaries  # pylint: disable=g-import-not-at-top (imports TF)
  from click_supervision.detector import deep_mil  # pylint: disable=g-import-not-at-top
  # (`Config.check_inputs` refused a run whose deep_mil would find no start.)
  start_path = os.path.join(config.workdir, 'localizations_mil.jsonl')
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
                             max_long_side=config.features.max_long_side, scales=bags.scales,
                             base_scale=config.features.short_side)


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
  path = os.path.join(config.workdir, 'localizations.jsonl')  # (`Config.check_inputs`)
  return batches.training_boxes_from_selections(
      localizations_lib.read_localizations(path, dataset.class_names))


def supervision_hours(config, dataset, record):
  """Annotation hours of the run's regime (clicks, or the drawn boxes it trains on)."""
  click_config = config.clicks
  if config.detector.supervision == 'mil':
    return record['annotation_hours']
  if config.detector.supervision == 'boxes':
    count = len(records_lib.image_class_pairs(dataset))
  else:
    count = sum(int((~r['difficult']).sum()) for r in dataset.records)
  return count * click_config.seconds_per_box / 3600.0


def stage_detector(config, dataset, bags, record):
  """The detector, trained on the final localisations (or drawn boxes) and tested for mAP."""
  if not config.runs('detector'):
    return
  with record.stage('detector'):
    record.update(_detector(config, dataset, bags, record))
  log(f'mAP: {record["map"]:.4f} on {record["test_dataset"]} {record["test_split"]} '
      f'({record["num_test_images"]} images; {record["map_metric"]}); supervision '
      f'{config.detector.supervision}, annotation time {record["annotation_hours"]:.3f} h')


def _detector(config, dataset, bags, record):
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

  # --- the test split: its own proposals and trunk maps (cached like the training ones), with
  # the maps of the test's views (scales, mirrored images). ---
  test_config = dataclasses.replace(config, num_shards=1, shard_index=0, data=dataclasses.replace(
      config.data, dataset=config.test_dataset, split=config.test_split))
  if (config.test_dataset, config.test_split) == (config.data.dataset, config.data.split):
    test_dataset = dataset
  else:
    test_dataset, _ = load_data(test_config)
    if test_dataset.class_names != dataset.class_names:
      raise UserError(f'--test_dataset={config.test_dataset}: its classes differ from '
                      f'--dataset\'s ({len(test_dataset.class_names)} against '
                      f'{len(dataset.class_names)})')
  test_bags = stage_precompute(test_config, test_dataset, record,
                               mirrored=config.detector.test_flip, test=True)
  detections = inference.detect_all(model, detector_source(config, test_bags, trunk),
                                    config.detector, progress=PROGRESS)
  inference.write_detections(os.path.join(config.workdir, 'detections.jsonl'), detections,
                             dataset.class_names)
  info = {'test_dataset': config.test_dataset, 'test_split': config.test_split,
          'num_test_images': len(test_dataset.records), 'num_detections': len(detections),
          'supervision': config.detector.supervision,
          'detector_config': dataclasses.asdict(config.detector),
          'annotation_hours': supervision_hours(config, dataset, record),
          'evaluation': {'nms_iou': config.detector.nms_iou,
                         'max_detections': config.detector.max_detections,
                         'score_threshold': config.detector.score_threshold,
                         'iou_threshold': 0.5,
                         'scales': list(config.detector.test_scales or
                                        [config.features.short_side]),
                         'flips': config.detector.test_flip}}
  info.update(evaluation.detection_metrics(detections, test_dataset.records, dataset.class_names,
                                           coco=config.test_dataset.startswith('coco')))
  with summary_writer.as_default():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.summary.scalar('detector/map', info['map'], step=0)
  summaries.write_detection_images(summary_writer, test_dataset.records, detections,
                                   dataset.class_names, step=0)
  return info


def _all_shards_done(cache, config, record, stage):
  """True when every shard of `cache` is done; else notes in the record that other precompute
  jobs (--num_shards) still owe shards, so later stages wait for them."""
  missing = cache.missing_shards()
  if not missing:
    return True
  record.set_status(f'waiting for other precompute jobs: {len(missing)} {stage} shards missing')
  log(f'{stage}: job {config.shard_index} of {config.num_shards} is done; '
      f'{len(missing)} shards are left to the other jobs (rerun without --num_shards '
      f'afterwards to continue)')
  return False
