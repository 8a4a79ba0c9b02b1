"""Progress of long stages, with rate and ETA: a tqdm bar on a terminal, plain log lines in a log.

A bar redrawn with carriage returns turns a log file into one unreadable line, so when stderr is
not a terminal (CI, `nohup`, a batch scheduler) progress is a log line at most every
`interval_s` seconds and one when the stage ends:

  features: 250/1000 img, 4.1 img/s, ETA 3 min 03 s
  features: 1000/1000 img in 4 min 02 s, 4.1 img/s
"""

import sys
import time

import tqdm


def _duration(seconds):
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


class LogProgress:
  """Progress as log lines (see the module docstring).

  Args:
    total: units of work, or None when not known yet (`update` can set it).
    description: what is counted, e.g. `features`.
    unit: name of one unit.
    log: callable taking one str.
    interval_s: least seconds between two lines.
  """

  def __init__(self, total, description, unit='img', log=print, interval_s=30.0):
    self.total, self.description, self.unit = total, description, unit
    self.log, self.interval_s = log, interval_s
    self.done = 0
    self.start = self.last = time.monotonic()

  def update(self, count=1, total=None):
    if total is not None:
      self.total = total
    self.done += count
    now = time.monotonic()
    if now - self.last >= self.interval_s and self.done < (self.total or float('inf')):
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      eta = (f', ETA {_duration((self.total - self.done) / rate)}' if self.total and rate > 0
             else '')
      self.log(f'{self.description}: {self.done}/{self.total or "?"} {self.unit}, '
               f'{rate:.2f} {self.unit}/s{eta}')

  def close(self):
    elapsed = time.monotonic() - self.start
    if elapsed >= 2.0:  # Stages of a few seconds say nothing extra.
      self.log(f'{self.description}: {self.done}/{self.total or self.done} {self.unit} in '
               f'{_duration(elapsed)}, {self.done / max(elapsed, 1e-9):.2f} {self.unit}/s')

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class BarProgress:
  """The same interface over a tqdm bar (for terminals)."""

  def __init__(self, total, description, unit='img'):
    self.bar = tqdm.tqdm(total=total, desc=description, unit=unit, mininterval=1.0)

  def update(self, count=1, total=None):
    if total is not None and self.bar.total != total:
      self.bar.total = total
      self.bar.refresh()
    self.bar.update(count)

  def close(self):
    self.bar.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def factory(log=print, interval_s=30.0, stream=None):
  """A `(total, description, unit='img') -> progress` callable suited to where output goes."""
  stream = stream or sys.stderr
  interactive = hasattr(stream, 'isatty') and stream.isatty()

  def make(total, description, unit='img'):
    if interactive:
      return BarProgress(total, description, unit)
    return LogProgress(total, description, unit, log=log, interval_s=interval_s)

  return make
