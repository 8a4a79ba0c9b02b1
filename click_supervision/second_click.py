"""The adaptive second click: a second annotator only where the first click leaves doubt.

The paper gives every (image, class) pair two clicks from two annotators. Most pairs do not need
the second: a small, single object is found from one click. After a one-click run, each pair
gets a *need* score from what the run knows without ground truth (docs/method.md, section 8):

    need = doubt + size_weight x area,
    doubt = rival_score / score,

where `score` is the combined re-localisation score S of the chosen box and `rival_score` the
best S of a box overlapping it with IoU < 0.5 (`mil.relocalize_image`): a near-tie between two
different answers is doubt (an unsure size, or another instance of the class), and `area` is
the chosen box's share of the image (the click error grows with the object, and the box-area
cue needs two clicks). The pairs with the highest need get the second click.

The request file (JSON Lines, UTF-8) names the pairs to ask again. Its first line is a header,
every other line one pair:

  {"format": "click_supervision/second_click_requests", "version": 1, "source_run": "...",
   "fraction": 0.5, "choice": "need", "seed": 0, "size_weight": 0.0, "num_pairs": 418}
  {"image_id": "000005", "class": "chair", "need": 1.12}

`python -m click_supervision.second_click --run=RUN --fraction=0.5 --output=requests.jsonl`
writes it from a finished one-click run; `run_mil.py --clicks=1 --second_click_requests=FILE`
(with a click file that has the second annotator's clicks on those pairs: the click tool's second
pass, `python -m click_supervision.annotate --second_click_requests=FILE`, collects them) or,
with simulated clicks, `--second_click_from=RUN --second_click_fraction=f`, learns from two
clicks on those pairs and one elsewhere.
"""

import os
import sys

from absl import flags
import numpy as np

from click_supervision import atomic
from click_supervision import command_line
from click_supervision import config as config_lib
from click_supervision import errors
from click_supervision import jsonl
from click_supervision.errors import UserError

FORMAT = 'click_supervision/second_click_requests'
VERSION = 1
CHOICES = config_lib.SECOND_CLICK_CHOICES
# Where a finished run keeps the boxes the need is read from (deep MIL's when it ran).
LOCALIZATIONS = 'localizations.jsonl'


def pair_need(score, rival_score, box, height, width, size_weight):
  """The need for a second click of one pair (higher: ask first).

  Args:
    score: S of the chosen box (>= 0).
    rival_score: S of the best different box (<= score; None or 0 when there is none).
    box: `[ymin, xmin, ymax, xmax]` pixels of the chosen box.
    height, width: the image's size in pixels.
    size_weight: the weight of the box's share of the image.
  Returns:
    float.
  """
  rival = float(rival_score or 0.0)
  # An unscored selection (a run without re-localisation) is all doubt.
  doubt = min(rival / score, 1.0) if score > 0 else 1.0
  area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0) / float(height * width)
  return doubt + size_weight * min(area, 1.0)


def needs_of_run(selections, sizes, size_weight):
  """dict pair -> need, from a run's localisations (`localizations.read_localizations`) and the
  images' (height, width) by id."""
  return {pair: pair_need(s['score'], s['rival_score'], s['box'], *sizes[pair[0]], size_weight)
          for pair, s in selections.items()}


def choose_pairs(needs, fraction, choice='need', seed=0):
  """The pairs that get a second click.

  Args:
    needs: dict pair -> need (`needs_of_run`).
    fraction: in [0, 1]; round(fraction x pairs) are chosen.
    choice: `need` (the highest need first; ties by pair) or `random` (a seeded uniform sample,
      the baseline of the same size).
    seed: the random choice's seed.
  Returns:
    list of pairs, sorted.
  """
  if choice not in CHOICES:
    raise ValueError(f'unknown choice {choice!r}; choose one of {", ".join(CHOICES)}')
  pairs = sorted(needs)
  count = int(round(fraction * len(pairs)))
  if choice == 'need':
    ranked = sorted(pairs, key=lambda p: (-needs[p], p))
  else:
    ranked = [pairs[i] for i in np.random.default_rng([seed, len(pairs)]).permutation(len(pairs))]
  return sorted(ranked[:count])


def write_requests(path, pairs, needs, class_names, header):
  """Writes a request file atomically: `header` (dict, merged into the format line), then one line
  per pair with its need."""
  rows = [dict({'format': FORMAT, 'version': VERSION}, **header)]
  rows += [{'image_id': image_id, 'class': class_names[c],
            'need': None if needs is None else round(float(needs[(image_id, c)]), 6)}
           for image_id, c in pairs]
  atomic.write_jsonl(path, rows)


def read_requests(path, dataset):
  """The pairs a request file names.

  Args:
    path: the file.
    dataset: `records.Dataset` the pairs must belong to.
  Returns:
    (set of `(image_id, class_index)`, header dict).
  Raises:
    UserError naming the file and line of the first problem: an unreadable file, a missing or
    foreign header, bad JSON, an unknown image or class, a class the image is not labelled
    with, a pair named twice.
  """
  records = dataset.by_id()
  index = {name: i for i, name in enumerate(dataset.class_names)}
  header, pairs = None, set()
  for where, row in jsonl.rows(path, 'second-click requests'):
    if header is None:
      if row.get('format') != FORMAT or row.get('version') != VERSION:
        raise UserError(f'{where}: not a second-click request file (the first line must be the '
                        f'header {{"format": "{FORMAT}", "version": {VERSION}, ...}})')
      header = row
      continue
    image_id, name = str(row.get('image_id')), row.get('class')
    if image_id not in records:
      raise UserError(f'{where}: image {image_id!r} is not in {dataset.name} {dataset.split}')
    if name not in index:
      raise UserError(f'{where}: unknown class {name!r}')
    if index[name] not in set(int(c) for c in records[image_id]['image_labels']):
      raise UserError(f'{where}: image {image_id} is not labelled {name!r}')
    if (image_id, index[name]) in pairs:
      raise UserError(f'{where}: {image_id} / {name} is requested twice')
    pairs.add((image_id, index[name]))
  if header is None:
    raise UserError(f'{path}: empty second-click request file (no header line)')
  return pairs, header


def requests_from_run(run_dir, dataset, fraction, choice, seed, size_weight):
  """Chooses the pairs of a finished one-click run to ask again.

  Args:
    run_dir: the run's folder (its `localizations.jsonl`; deep MIL's boxes when it ran).
    dataset: `records.Dataset` of the run.
    fraction, choice, seed: `choose_pairs`.
    size_weight: `pair_need`.
  Returns:
    (sorted list of pairs, dict pair -> need over all pairs, header dict for the file).
  Raises:
    UserError when the run has no localisations, or they do not cover the dataset's pairs.
  """
  from click_supervision import localizations as localizations_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(run_dir, LOCALIZATIONS)
  if not os.path.isfile(path):
    raise UserError(f'--second_click_from={run_dir}: no {LOCALIZATIONS} (a finished one-click run '
                    f'of the same data is needed)')
  results_path = os.path.join(run_dir, 'results.json')
  if os.path.isfile(results_path):
    from click_supervision import results as results_lib  # pylint: disable=g-import-not-at-top
    clicks = results_lib.read_results(run_dir, complete=False).get('clicks')
    if clicks is not None and clicks != 1:
      raise UserError(f'{run_dir}: a run with --clicks={clicks}; the second click is asked after '
                      f'a one-click run')
  selections = localizations_lib.read_localizations(path, dataset.class_names)
  wanted = {(r['image_id'], int(c)) for r in dataset.records for c in r['image_labels']}
  missing = wanted - set(selections)
  if missing:
    image_id, c = sorted(missing)[0]
    raise UserError(f'{path}: no box for {image_id} / {dataset.class_names[c]} ({len(missing)} '
                    f'pairs of {dataset.name} {dataset.split} are missing: another dataset?)')
  if any(selections[p]['rival_score'] is None for p in wanted) and choice == 'need':
    raise UserError(f'{path}: written before rival scores were recorded; rerun its mil stage')
  sizes = {r['image_id']: (r['height'], r['width']) for r in dataset.records}
  needs = needs_of_run({p: selections[p] for p in wanted}, sizes, size_weight)
  pairs = choose_pairs(needs, fraction, choice, seed)
  header = {'source_run': os.path.abspath(run_dir), 'fraction': fraction, 'choice': choice,
            'seed': seed, 'size_weight': size_weight, 'num_pairs': len(wanted),
            'num_requested': len(pairs)}
  return pairs, needs, header


# --- the command ------------------------------------------------------------------------------

USAGE = ('python -m click_supervision.second_click --run=RUN_DIR --output=requests.jsonl '
         '[--fraction=0.5]')
FLAGS = command_line.new_flag_values()
_RUN = flags.DEFINE_string('run', None, 'a finished one-click run (its --workdir)',
                           flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string('output', None, 'the request file to write', flag_values=FLAGS)
_DEFAULTS = config_lib.ClickConfig()
_FRACTION = flags.DEFINE_float('fraction', _DEFAULTS.second_click_fraction,
                               'the fraction of pairs to ask again', lower_bound=0.0,
                               upper_bound=1.0, flag_values=FLAGS)
_CHOICE = flags.DEFINE_enum('choice', _DEFAULTS.second_click_choice, CHOICES,
                            'need (the most doubtful pairs) or random (a baseline)',
                            flag_values=FLAGS)
_SEED = flags.DEFINE_integer('seed', _DEFAULTS.second_click_seed, 'seed of --choice=random',
                             lower_bound=0, flag_values=FLAGS)
_SIZE_WEIGHT = flags.DEFINE_float('size_weight', _DEFAULTS.second_click_size_weight,
                                  'weight of the chosen box\'s share of the image in the need',
                                  lower_bound=0.0, flag_values=FLAGS)


def write_requests_of_run(run_dir, output, fraction, choice, seed, size_weight):
  """Writes the request file of a finished one-click run; returns (requested, all pairs)."""
  from click_supervision import datasets  # pylint: disable=g-import-not-at-top
  from click_supervision import results as results_lib  # pylint: disable=g-import-not-at-top
  results = results_lib.read_results(run_dir, need=('dataset', 'split', 'config'))
  dataset = datasets.load_dataset(results['dataset'], results['split'],
                                  results['config']['data']['cache_dir'], log=lambda _: None)
  pairs, needs, header = requests_from_run(run_dir, dataset, fraction, choice, seed, size_weight)
  write_requests(output, pairs, needs, dataset.class_names, header)
  return len(pairs), len(needs)


def main(argv=None):
  """The command (module docstring); argv: its arguments, without the program name (default
  `sys.argv[1:]`). Returns the exit code."""
  command_line.parse(FLAGS, argv, USAGE,
                     'Writes the request file of the pairs of a finished one-click run that '
                     'most need a second click (or a random sample of the same size).',
                     required=('run', 'output'))

  def body():
    requested, total = write_requests_of_run(_RUN.value, _OUTPUT.value, _FRACTION.value,
                                             _CHOICE.value, _SEED.value, _SIZE_WEIGHT.value)
    print(f'{requested} of {total} pairs to ask again ({_CHOICE.value}): {_OUTPUT.value}',
          flush=True)

  return errors.run_command(body)


if __name__ == '__main__':
  sys.exit(main())
