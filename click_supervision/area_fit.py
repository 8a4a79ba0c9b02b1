"""Where mu(d) of the box-area cue comes from (docs/method.md, section 4): the policy, in one place.

mu(d) predicts an object's log area from the distance between its two clicks. It is fitted on
boxes the learner never localises:

  real clicks         the hidden gold pairs of the click collection tool (boxes the user has);
  simulated clicks    `area_fit_data`:
    `auto` (default)    the synthetic set of another seed for the synthetic dataset; for photos
                        the model shipped with the package (`data/area_model_photos.json`),
                        fitted on real photos and rescaled to the run's click noise;
    `synthetic`         the synthetic set of another seed (it does not transfer to photos:
                        BUILD_NOTES);
    `shipped`           the shipped photo model;
    a --dataset value   held-back data with boxes, fitted at the run's noise and instance choice.

The shipped model was fitted with simulated clicks at noise 0.1. Simulated click errors scale
with the noise, so d scales with it too: fitting log A = a0 + a1 log d at noise s instead of s0
shifts every log d by log(s / s0) and leaves slope and residuals alone, hence
a0(s) = a0(s0) - a1 log(s / s0). Refit the file with

  python -m click_supervision.area_fit --dataset=voc:PATH/VOC2007 --split=trainval \\
      --out=click_supervision/data/area_model_photos.json

An overlap check refuses a fit whose images are among the localised ones (same real path, or
same image id and file size).
"""

import importlib.resources
import json
import math
import os

from absl import flags
import numpy as np

from click_supervision import atomic
from click_supervision import clicks as clicks_lib
from click_supervision import command_line
from click_supervision import cues as cues_lib
from click_supervision import errors
from click_supervision.errors import UserError

SHIPPED = 'area_model_photos.json'
CHOICES_HELP = ('"auto" (synthetic set for synthetic data, the shipped photo model for photos), '
                '"synthetic", "shipped", or a --dataset value of held-back data with boxes')


def fit_on_dataset(fit_data, noise, instance, seed):
  """mu(d) from clicks simulated on `fit_data` (two annotators, same-instance pairs).

  Returns:
    (cues.AreaModel, distances float64 [N], areas float64 [N]).
  Raises:
    cues.AreaFitError with fewer than 3 usable pairs (e.g. noise 0: every d is 0).
  """
  rows = clicks_lib.simulate_clicks(fit_data, num_annotators=2, noise=noise, instance=instance,
                                    seed=seed)
  distances, areas = cues_lib.same_instance_pairs(fit_data, rows)
  model = cues_lib.AreaModel.fit(distances, areas, source=(
      f'{fit_data.name} {fit_data.split}: clicks simulated with noise {noise}, instance '
      f'{instance}, seed {seed}; same-instance pairs'))
  return model, distances, areas


def image_fingerprints(records):
  """[(image_id, file size)] of records: what identifies a photo across copies."""
  return [(r['image_id'], os.path.getsize(r['path'])) for r in records]


def overlap(fit_records, records, fit_fingerprints=()):
  """Image ids of `records` that mu(d)'s data also holds: the same real path, or the same image
  id and file size (a copy of the same photo). `fit_fingerprints` adds (id, size) pairs of data
  no longer at hand (the shipped model's)."""
  paths = {os.path.realpath(r['path']) for r in fit_records}
  prints = set(image_fingerprints(fit_records)) | {tuple(p) for p in fit_fingerprints}
  found = []
  for r in records:
    if (os.path.realpath(r['path']) in paths or
        (r['image_id'], os.path.getsize(r['path'])) in prints):
      found.append(r['image_id'])
  return found


def shipped_model(noise):
  """The photo model shipped with the package, rescaled to click noise `noise`.

  Returns:
    (cues.AreaModel, provenance dict with `image_fingerprints`, `noise`, `command`, ...).
  Raises:
    cues.AreaFitError for noise 0 (noise-free clicks coincide: d says nothing).
  """
  text = importlib.resources.files('click_supervision').joinpath('data', SHIPPED).read_text()
  shipped = json.loads(text)
  if noise <= 0:
    raise cues_lib.AreaFitError('noise-free simulated clicks coincide, so their distance says '
                                'nothing about size')
  model = shipped['model']
  a0 = model['a0'] - model['a1'] * math.log(noise / shipped['noise'])
  return cues_lib.AreaModel(
      a0=a0, a1=model['a1'], sigma=model['sigma'], min_distance=model['min_distance'],
      num_pairs=model['num_pairs'],
      source=f'shipped {SHIPPED} ({model["source"]}), rescaled from noise {shipped["noise"]} '
             f'to {noise}'), shipped


def area_model_for_run(area_fit_data, dataset, click_config, cache_dir, log=print):
  """mu(d) for a run with simulated clicks, by the policy of the module docstring.

  Args:
    area_fit_data: `auto`, `synthetic`, `shipped` or a --dataset value.
    dataset: the localised `records.Dataset`.
    click_config: `config.ClickConfig` (noise, instance, seed of the simulation).
    cache_dir: where the synthetic set of another seed is generated.
    log: callable taking one str.
  Returns:
    (cues.AreaModel, distances float64 [N] or None, areas float64 [N] or None).
  Raises:
    UserError when the fit data shares images with `dataset`; cues.AreaFitError when no model
    can be fitted (noise 0).
  """
  # pylint: disable=g-import-not-at-top
  from click_supervision import datasets
  from click_supervision.datasets import synthetic
  from click_supervision.datasets import voc
  choice = area_fit_data
  if choice == 'auto':
    choice = 'synthetic' if dataset.name.startswith('synthetic') else 'shipped'
  if choice == 'shipped':
    model, shipped = shipped_model(click_config.noise)
    found = overlap([], dataset.records, shipped['image_fingerprints'])
    if found:
      raise UserError(f'the shipped mu(d) ({SHIPPED}) was fitted on {len(found)} of the '
                      f'localised images (e.g. {found[0]}): pass --area_fit_data=<other photos '
                      f'with boxes>')
    return model, None, None
  if choice == 'synthetic':
    other = synthetic.SyntheticConfig(seed=synthetic.SyntheticConfig.seed + 1)
    root = synthetic.ensure_synthetic(cache_dir, log=log, config=other)
    fit_data = voc.load_voc(root, 'trainval', name=f'synthetic (seed {other.seed})', log=log)
  else:
    fit_data = datasets.load_dataset(choice, dataset.split, cache_dir=cache_dir, log=log)
  found = overlap(fit_data.records, dataset.records)
  if found:
    raise UserError(f'--area_fit_data shares {len(found)} images with the localised data '
                    f'(e.g. {found[0]}): fit mu(d) on other images')
  return fit_on_dataset(fit_data, click_config.noise, click_config.instance, click_config.seed)


def write_shipped(path, fit_data, noise=0.1, instance='area', seed=0, command=''):
  """Fits mu(d) on `fit_data` and writes the shipped-model JSON (with its provenance)."""
  model, distances, _ = fit_on_dataset(fit_data, noise, instance, seed)
  atomic.write_json(path, {
      'model': model.to_dict(), 'noise': noise, 'instance': instance, 'seed': seed,
      'dataset': fit_data.name, 'split': fit_data.split, 'num_images': len(fit_data.records),
      'median_distance_px': float(np.median(distances)),
      'image_fingerprints': image_fingerprints(fit_data.records), 'command': command})
  return model


# The command line of `python -m click_supervision.area_fit` (read by `main` only).
USAGE = ('python -m click_supervision.area_fit --dataset=DATASET [--split=trainval] --out=FILE '
         '[--cache_dir=DIR]')
FLAGS = command_line.new_flag_values()
_DATASET = flags.DEFINE_string('dataset', None, 'a --dataset value of photos with boxes',
                               flag_values=FLAGS)
_SPLIT = flags.DEFINE_string('split', 'trainval', 'the split of --dataset to fit on',
                             flag_values=FLAGS)
_OUT = flags.DEFINE_string('out', None, 'the model file (JSON) to write', flag_values=FLAGS)
_CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'cache folder (default $CLICKSUP_CACHE_DIR '
                                 'or ~/.cache/click_supervision)', flag_values=FLAGS)


def main(argv=None):
  """The command (module docstring); argv: its arguments, without the program name (default
  `sys.argv[1:]`)."""
  from click_supervision import datasets  # pylint: disable=g-import-not-at-top
  from click_supervision import tf_logs  # pylint: disable=g-import-not-at-top
  command_line.parse(FLAGS, argv, USAGE, 'Refit the shipped mu(d) of the box-area cue.',
                     required=('dataset', 'out'))
  dataset, split, out = _DATASET.value, _SPLIT.value, _OUT.value
  tf_logs.quiet()  # The TFDS sources import TensorFlow.
  from click_supervision import cache as cache_lib  # pylint: disable=g-import-not-at-top
  try:
    fit_data = datasets.load_dataset(dataset, split,
                                     cache_dir=_CACHE_DIR.value or cache_lib.default_cache_dir())
    command = (f'python -m click_supervision.area_fit --dataset={dataset} --split={split} '
               f'--out={out}')
    model = write_shipped(out, fit_data, command=command)
  except (UserError, cues_lib.AreaFitError) as e:
    errors.fail(e)
  print(f'mu(d) = {model.a0:.3f} + {model.a1:.3f} log d, sigma {model.sigma:.3f}, '
        f'{model.num_pairs} pairs; written to {out}')


if __name__ == '__main__':
  main()
