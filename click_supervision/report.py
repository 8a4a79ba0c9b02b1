"""Accuracy per annotation hour: CorLoc and mAP of several runs against their annotation time.

  python -m click_supervision.report RUN_DIR... --out=report.png

Reads each run's results.json (`results.read_results`) and draws, like the paper's figure, CorLoc
(left) and mAP (right) against annotation hours on a log axis, one point per regime: image labels
only, one click, two clicks, drawn boxes. Runs with the adaptive second click (`second_click`)
are drawn as a curve from the one-click point through them to the two-click point (the same
images), and second clicks on a random choice of pairs as crosses beside it. Image-level labels
are charged to no regime (as in the paper), so the labels-only point sits at the axis' left
edge, marked 0 h. Prints a Markdown table with each run's hours and the time-saving factor
against drawn boxes for the same images: the hours of a boxes run on the same images (dataset,
split, image count) when one is given, else each click run's own count of one box per positive
(image, class) pair (`annotation_hours_full_supervision`), at the same seconds per box.
"""

import math
import sys

from absl import flags

from click_supervision import atomic
from click_supervision import command_line
from click_supervision import errors
from click_supervision import results as results_lib
from click_supervision import tf_logs

ADAPTIVE, RANDOM = 'adaptive second click', 'random second click'
REGIME_ORDER = ('image labels only', 'one click', ADAPTIVE, RANDOM, 'two clicks', 'boxes',
                'all boxes')
COLORS = {'image labels only': '#7f7f7f', 'one click': '#1f77b4', 'two clicks': '#d62728',
          'boxes': '#2ca02c', 'all boxes': '#9467bd', ADAPTIVE: '#ff7f0e', RANDOM: '#8c564b'}

USAGE = 'python -m click_supervision.report RUN_DIR... [--out=report.png]'
FLAGS = command_line.new_flag_values()
_OUT = flags.DEFINE_string('out', 'report.png', 'the PNG to write', flag_values=FLAGS)


def regime_of(results):
  """The run's supervision regime, one of REGIME_ORDER."""
  supervision = results.get('supervision') or results['config']['detector']['supervision']
  if supervision == 'boxes':
    return 'boxes'
  if supervision == 'boxes_all':
    return 'all boxes'
  second = results.get('second_click')
  if second:
    return RANDOM if second.get('choice') == 'random' else ADAPTIVE
  return ('image labels only', 'one click', 'two clicks')[int(results['clicks'])]


def box_hours_of(results):
  """Hours of one drawn box per positive pair of the run's images, or None."""
  stats = results.get('click_stats') or {}
  if 'annotation_hours_full_supervision' in stats:
    return stats['annotation_hours_full_supervision']
  if regime_of(results) == 'boxes':
    return results['annotation_hours']
  return None


def same_images(results):
  """What identifies a run's training images: dataset, split and image count."""
  return results.get('dataset'), results.get('split'), results.get('num_images')


def same_images_of_row(row):
  return row['dataset'], row['split'], row['images']


def rows_of(run_dirs):
  """One dict per run: run, regime, hours, corloc, map, factor (x less time than boxes)."""
  runs = [(d, results_lib.read_results(d, need=('annotation_hours',))) for d in run_dirs]
  # A boxes run is the comparator of the runs on the same images.
  boxes = {same_images(r): r for _, r in runs if regime_of(r) == 'boxes'}
  rows = []
  for run_dir, results in runs:
    regime = regime_of(results)
    hours = float(results['annotation_hours'])
    box_hours = (boxes[same_images(results)]['annotation_hours']
                 if same_images(results) in boxes else box_hours_of(results))
    factor = box_hours / hours if box_hours and hours > 0 else None
    rows.append({'run': run_dir, 'regime': regime, 'hours': hours,
                 'corloc': results_lib.final_corloc(results), 'map': results.get('map'),
                 'box_hours': box_hours, 'factor': factor,
                 'images': results.get('num_images'), 'dataset': results.get('dataset'),
                 'split': results.get('split'), 'clicks_per_pair': results.get('clicks_per_pair')})
  rows.sort(key=lambda r: (REGIME_ORDER.index(r['regime']), r['hours']))
  return rows


def table(rows):
  """The Markdown table `main` prints."""
  lines = ['| regime | clicks per pair | hours | x less time than boxes | CorLoc | mAP | images | '
           'run |', '|---|---|---|---|---|---|---|---|']
  for r in rows:
    fmt = lambda v: '-' if v is None else f'{v:.3f}'  # pylint: disable=unnecessary-lambda-assignment
    factor = ('1.0' if r['regime'] == 'boxes' else '-' if r['factor'] is None
              else f'{r["factor"]:.1f}')
    per_pair = '-' if r['clicks_per_pair'] is None else f'{r["clicks_per_pair"]:.2f}'
    lines.append(f'| {r["regime"]} | {per_pair} | {r["hours"]:.2f} | {factor} | '
                 f'{fmt(r["corloc"])} | '
                 f'{fmt(r["map"])} | {r["images"]} | {r["run"]} |')
  return '\n'.join(lines)


def hour_ticks(left, right, zero_at=None, max_labels=6):
  """Labelled ticks of the log hours axis from `left` to `right`: (positions, labels).

  The densest of 1-2-5, 1-3 and 1 per decade, then 1 every 2, 3, ... decades, that gives at most
  `max_labels` labels. Ticks are then at least a factor 2 apart, so at this figure's size no two
  labels overlap, however few decades the runs span (matplotlib's own log labels crowd the minor
  ticks when the axis spans about a decade). `zero_at`: where the labels-only point sits, labelled
  `0 h` and kept as far from the next label as two ticks are.
  """
  # (mantissas, one decade in `every`, the smallest ratio of two neighbouring ticks).
  ladders = ([((1, 2, 5), 1, 2.0), ((1, 3), 1, 3.0), ((1,), 1, 10.0)] +
             [((1,), every, 10.0 ** every) for every in range(2, 100)])
  first, last = math.floor(math.log10(left)), math.ceil(math.log10(right))
  for mantissas, every, ratio in ladders:
    start = max(left, zero_at * ratio) if zero_at is not None else left
    ticks = [m * 10.0 ** e for e in range(first, last + 1) if e % every == 0 for m in mantissas]
    ticks = [t for t in ticks if start <= t <= right]
    if len(ticks) + (zero_at is not None) <= max_labels:
      break
  positions = ([zero_at] if zero_at is not None else []) + ticks
  labels = (['0 h'] if zero_at is not None else []) + [f'{t:g}' for t in ticks]
  return positions, labels


def figure_of(rows):
  """The two-panel figure, CorLoc and mAP against hours (log x), as a matplotlib `Figure`.

  Drawn on its own Agg canvas, not through pyplot: no global backend or open-figure state.
  """
  from matplotlib import figure as figure_lib  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  positive = [r['hours'] for r in rows if r['hours'] > 0]
  low = min(positive) / 4 if positive else 0.1  # Where the labels-only point sits.
  high = max(positive) * 2 if positive else 10.0
  zero_at = low if any(r['hours'] <= 0 for r in rows) else None
  figure = figure_lib.Figure(figsize=(10, 4))
  backend_agg.FigureCanvasAgg(figure)
  axes = figure.subplots(1, 2)
  for ax, key, name in ((axes[0], 'corloc', 'CorLoc (training images)'),
                        (axes[1], 'map', 'mAP (test images)')):
    # The adaptive curve: one click, the adaptive runs, two clicks, by hours, per image set.
    for images in {same_images_of_row(r) for r in rows if r['regime'] == ADAPTIVE}:
      curve = sorted((r['hours'], r[key]) for r in rows
                     if same_images_of_row(r) == images and r[key] is not None and
                     r['regime'] in ('one click', ADAPTIVE, 'two clicks'))
      if len(curve) > 1:
        ax.plot([h for h, _ in curve], [v for _, v in curve], color=COLORS[ADAPTIVE], zorder=2)
    for r in rows:
      if r[key] is None:
        continue
      x = r['hours'] if r['hours'] > 0 else low
      ax.scatter([x], [r[key]], s=60, color=COLORS[r['regime']], label=r['regime'], zorder=3,
                 marker='x' if r['regime'] == RANDOM else 'o')
      ax.annotate(f'{r[key]:.3f}', (x, r[key]), textcoords='offset points', xytext=(6, -12),
                  fontsize=8)
    ax.set_xscale('log')
    ax.set_xlim(low / 1.5, high)
    ax.set_xlabel('annotation time (hours, log scale; image labels not charged)')
    ax.set_ylabel(name)
    ax.grid(True, which='both', alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
      ax.legend(unique.values(), unique.keys(), fontsize=8, loc='lower right')
    ax.set_xticks(*hour_ticks(low / 1.5, high, zero_at))
    # The minor ticks stay for the grid, unlabelled: their labels are what overlapped.
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  figure.suptitle('Accuracy against annotation time')
  figure.tight_layout()
  return figure


def draw(rows, out):
  """Writes `figure_of(rows)` to `out` (PNG)."""
  figure = figure_of(rows)
  with atomic.open_atomic(out) as f:
    figure.savefig(f, dpi=120, format='png')


def main(argv=None):
  """The command (module docstring); argv: its arguments, without the program name (default
  `sys.argv[1:]`): run folders (their --workdir) and flags, in any order. Returns the exit
  code."""
  runs = command_line.parse(
      FLAGS, argv, USAGE,
      __doc__.split('\n')[0] + '\nRUN_DIR...: run folders (their --workdir), one or more.',
      positional=True)
  if not runs:
    errors.fail('no run folders: give one or more (their --workdir)', code=2)
  tf_logs.quiet()
  out = _OUT.value

  def body():
    rows = rows_of(runs)
    draw(rows, out)
    print(table(rows))
    print(f'wrote {out}', flush=True)

  return errors.run_command(body)


if __name__ == '__main__':
  sys.exit(main())
