"""Deep MIL (docs/method.md, section 5): more MIL iterations whose appearance model is the detector.

Each iteration trains the detector on the current localisations (`detector.train`) and
re-localises every positive pair with the same combined score as SVM MIL (`mil.relocalize_image`:
S = S_ap(A, O) x the click cues), A now being the detector's class probability
(`detector.scorer`). With `folds` K > 1 the images are split into K folds and each fold is
re-localised by a detector trained on the other folds' localisations only, as multi-fold MIL does
for the SVMs, so a detector never re-selects boxes it was trained on; K = 2 costs as many
training steps as one detector on all images (each trains on half the images for the same
number of epochs).

Resuming: each iteration's localisations are written to `deep_mil/iteration_<t>.jsonl`; a
detector's training resumes from its checkpoints (`detector.train`).
"""

import dataclasses
import os
import time

import numpy as np

from click_supervision import localizations as localizations_lib
from click_supervision import mil as mil_lib
from click_supervision.detector import batches as batches_lib
from click_supervision.detector import inference
from click_supervision.detector import scorer as scorer_lib
from click_supervision.detector import train as train_lib


def run_deep_mil(records, class_names, bags, source, selected_clicks, mil_selections,
                 mil_config, config, workdir, area_model=None, folds=1, log=print,
                 progress=None, summary_writer=None, on_iteration=None, trunk=None,
                 strategy=None):
  """Runs `config.deep_mil_iterations` iterations after SVM MIL (none with too few images).

  Args:
    records, class_names, bags, selected_clicks, area_model: as `mil.run_mil` (the bags give
      the proposals and objectness the cues are computed on).
    source: `detector.batches.InputSource` over the same images, in the detector's mode.
    mil_selections: `mil.run_mil`'s `selections` (pair -> dict with `box`, `index`, `score`,
      `iteration`, `split`): where deep MIL starts.
    mil_config: the `MilConfig` of the MIL run (cues, fusion, normalisation).
    config: `config.DetectorConfig`.
    workdir: the run's folder (deep MIL writes under `workdir/deep_mil`).
    folds: K detectors per iteration (module docstring).
    log, progress, summary_writer: as `detector.train.train_detector`.
    on_iteration: optional callable(iteration, info dict with `corloc` and `changes`).
    trunk: for `config.finetune` other than `none` (`train.train_detector`).
    strategy: the `tf.distribute.Strategy` the detectors train under (default: the default one).
  Returns:
    dict with `selections` (as `mil_selections`, after the last iteration),
    `corloc_deep_mil` (class mean), `corloc_deep_mil_pooled`, `corloc_deep_mil_per_iteration`
    (index 0 = the SVM MIL result), `changes_per_iteration_deep_mil`, `timings_s`, and
    `deep_mil_skipped` (why) when too few images kept SVM MIL's localisations
    (`config.deep_mil_min_images`).
  """
  problem = mil_lib.Problem.build(records, class_names, selected_clicks, mil_config)
  folder = os.path.join(workdir, 'deep_mil')
  os.makedirs(folder, exist_ok=True)
  image_folds = mil_lib.assign_folds([r['image_id'] for r in records], folds, config.seed)
  selections = {p: dict(mil_selections[p]) for p in problem.pairs}
  per_iteration = [problem.corloc(_boxes(problem, selections))]
  changes, timings = [], {'train': 0.0, 'relocalize': 0.0}
  train_config = (dataclasses.replace(config, epochs=config.deep_mil_epochs)
                  if config.deep_mil_epochs else config)
  iterations = config.deep_mil_iterations
  fewest = min(sum(folds == 1 or image_folds[i] != fold for i in bags.image_ids)
               for fold in range(folds))
  skipped = None
  if iterations and fewest < config.deep_mil_min_images:
    # Trained on a few dozen images, the detectors are worse appearance models than the SVMs
    # they would replace (config.DEEP_MIL_MIN_IMAGES).
    skipped = (f'each detector would train on {fewest} images, fewer than '
               f'--deep_mil_min_images={config.deep_mil_min_images}: SVM MIL\'s localisations '
               f'are kept')
    log(f'deep mil: {skipped}')
    iterations = 0
  for iteration in range(1, iterations + 1):
    path = os.path.join(folder, f'iteration_{iteration}.jsonl')
    if os.path.exists(path):
      new = localizations_lib.read_localizations(path, class_names)
      log(f'deep mil: iteration {iteration} read from {path}')
    else:
      start = time.time()
      training_boxes = batches_lib.training_boxes_from_selections(selections)
      models = []
      for fold in range(folds):
        train_ids = [i for i in bags.image_ids if folds == 1 or image_folds[i] != fold]
        models.append(train_lib.train_detector(
            source.subset(train_ids), {i: training_boxes[i] for i in train_ids
                                       if i in training_boxes},
            len(class_names), train_config,
            os.path.join(folder, f'detector_{iteration}_{fold}'),
            strategy=strategy, log=log, progress=progress, summary_writer=summary_writer,
            trunk=trunk))
      timings['train'] += time.time() - start
      start = time.time()
      scorer = scorer_lib.DetectorScorer(models, source, inference.test_views(config))
      new = _relocalize(problem, bags, scorer, image_folds if folds >
                        1 else None, area_model, mil_config, iteration, progress,
                        refine=config.deep_mil_refine)
      timings['relocalize'] += time.time() - start
      for pair, selection in new.items():  # An unchanged box keeps the iteration that chose it.
        if selection['index'] == selections[pair]['index']:
          selection['iteration'] = selections[pair]['iteration']
      localizations_lib.write_localizations(path, new, class_names)
    changed = sum(int(new[p]['index'] != selections[p]['index']) for p in problem.pairs)
    selections = new
    changes.append(changed)
    per_iteration.append(problem.corloc(_boxes(problem, selections)))
    log(f'deep mil: iteration {iteration}: CorLoc {per_iteration[-1]["corloc"]:.3f} (pooled '
        f'{per_iteration[-1]["corloc_pooled"]:.3f}), {changed} of {len(problem.pairs)} '
        f'selections changed')
    if on_iteration is not None:
      on_iteration(iteration, {'corloc': per_iteration[-1]['corloc'], 'changes': changed})
  final = per_iteration[-1]
  return {'selections': selections, 'corloc_deep_mil': final['corloc'],
          'corloc_deep_mil_pooled': final['corloc_pooled'],
          'corloc_deep_mil_non_difficult': final['corloc_non_difficult'],
          'corloc_deep_mil_per_class': dict(zip(class_names, final['per_class'])),
          'corloc_deep_mil_per_iteration': [r['corloc'] for r in per_iteration],
          'corloc_deep_mil_pooled_per_iteration': [r['corloc_pooled'] for r in per_iteration],
          'changes_per_iteration_deep_mil': changes, 'deep_mil_folds': folds,
          **({'deep_mil_skipped': skipped} if skipped else {}), 'timings_s': timings}


def _boxes(problem, selections):
  return np.stack([np.asarray(selections[p]['box'], np.float32) for p in problem.pairs])


def _relocalize(problem, bags, scorer, image_folds, area_model, mil_config, iteration,
                progress, refine=False):
  """Every pair's new selection under `scorer` (fold 0 for all images when not folded); with
  `refine`, the chosen proposal moved by the detector's box regression."""
  new = {}
  sizes = {r['image_id']: (r['height'], r['width']) for r in problem.records}
  bar = (progress(len(bags.image_ids), f'deep mil iteration {iteration}: re-localisation')
         if progress else None)
  for bag in bags:
    rows = problem.rows_of(bag.image_id)
    if rows:
      cues, _, splits, cue_only = mil_lib.image_cues(bag, problem, rows, area_model, mil_config)
      fold = image_folds[bag.image_id] if image_folds else 0
      chosen = mil_lib.relocalize_image(bag, problem.labels[bag.image_id], fold, cues, scorer,
                                        mil_config, cue_only)
      for i, (index, score, rival), split in zip(rows, chosen, splits):
        box = (scorer.refined_box(bag, fold, int(problem.pair_class[i]), index,
                                  *sizes[bag.image_id]) if refine else bag.boxes[index])
        new[problem.pairs[i]] = {'box': box, 'index': int(index),
                                 'score': float(score), 'rival_score': rival,
                                 'iteration': iteration, 'split': bool(split)}
    if bar:
      bar.update(1)
  if bar:
    bar.close()
  return new
