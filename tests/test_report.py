"""The cost report's figure, drawn from hand-made run summaries (no runs trained)."""

import itertools

import pytest

from click_supervision import report

REGIMES = ('one click', 'two clicks', 'boxes', 'all boxes')


def rows_of_hours(hours):
  """Report rows (`report.rows_of`'s keys the figure reads) at these annotation hours."""
  return [{'run': f'run{i}', 'regime': 'image labels only' if h == 0 else REGIMES[i % 4],
           'hours': h, 'corloc': 0.4 + 0.05 * i, 'map': 0.2 + 0.05 * i}
          for i, h in enumerate(hours)]


def shown_tick_labels(ax):
  """(text, window extent) of the x tick labels drawn inside the axes, major and minor."""
  box = ax.get_window_extent()
  shown = []
  for label in ax.get_xticklabels(which='both'):
    extent = label.get_window_extent()
    middle = (extent.x0 + extent.x1) / 2
    if label.get_visible() and label.get_text() and box.x0 - 0.5 <= middle <= box.x1 + 0.5:
      shown.append((label.get_text(), extent))
  return shown


@pytest.mark.parametrize('hours', [
    [0.0, 0.02, 0.04],          # labels only, one and two clicks: less than a decade
    [0.3, 0.31],                # two runs of about the same cost
    [0.0, 0.5, 0.9],
    [0.0208, 0.0416, 0.383],    # the smoke set's clicks and boxes
    [0.0, 1.6, 14.7],           # the README's tuning runs
    [0.0005, 3.0],
    [0.0, 1e-4, 50.0, 2000.0],  # many decades
])
def test_hour_axis_labels_never_overlap(hours):
  figure = report.figure_of(rows_of_hours(hours))
  figure.canvas.draw()
  for ax in figure.axes:
    shown = shown_tick_labels(ax)
    texts = [text for text, _ in shown]
    assert len(shown) >= 2, texts
    assert ('0 h' in texts) == (0.0 in hours), texts
    overlapping = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(shown, 2)
                   if box_a.overlaps(box_b)]
    assert not overlapping, (hours, texts)


def test_hour_ticks_are_round_spread_and_few():
  for left, right in ((0.003, 0.08), (0.05, 0.62), (1e-5, 1e3), (0.2, 3.0)):
    for zero_at in (None, left * 1.5):  # As `figure_of` places the labels-only point.
      positions, labels = report.hour_ticks(left, right, zero_at)
      assert 2 <= len(labels) <= 6, (left, right, labels)
      assert (labels[0] == '0 h') == (zero_at is not None)
      # Neighbours, '0 h' included, at least a factor 2 apart on the log axis.
      assert all(b >= 2 * a * (1 - 1e-9) for a, b in zip(positions, positions[1:])), labels
      assert all(left <= p <= right for p in positions)
  assert report.hour_ticks(0.003, 0.08)[1] == ['0.005', '0.01', '0.02', '0.05']
