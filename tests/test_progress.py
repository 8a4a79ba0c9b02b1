"""Tests of the progress reporting: log lines with rate and ETA when not on a terminal."""

import io

from click_supervision import progress


def test_log_progress_prints_rate_and_eta_lines(monkeypatch):
  clock = [0.0]
  monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
  lines = []
  bar = progress.LogProgress(100, 'features', log=lines.append, interval_s=10)
  for _ in range(100):
    clock[0] += 0.5
    bar.update()
  bar.close()
  # One line per 10 s of a 50 s stage (the last one at the end), then the summary.
  assert len(lines) == 5
  assert lines[0] == 'features: 20/100 img, 2.00 img/s, ETA 40 s'
  assert lines[-1] == 'features: 100/100 img in 50 s, 2.00 img/s'


def test_factory_uses_log_lines_when_not_on_a_terminal():
  lines = []
  make = progress.factory(log=lines.append, stream=io.StringIO())
  bar = make(None, 'mil training', 'model')
  assert isinstance(bar, progress.LogProgress)
  bar.update(1, total=4)
  assert bar.total == 4
