"""One `run_mil.py` process per benchmark run, reused when it already finished.

Shared by the benchmark scripts: each run has its own workdir; its live output goes to
`driver_output.txt` there (`tail -f` it for progress); `benchmark_run.json` records the command
and wall time, so a finished run (results.json complete, same command) is not run again.
"""

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_driver(name, flags, workdir):
  """Runs (or reuses) `python run_mil.py FLAGS --workdir=WORKDIR`.

  Args:
    name: the run's name in messages.
    flags: list of `--flag=value` strings.
    workdir: the run's folder.
  Returns:
    the run's results dict plus `wall_s` and `command` (the arguments after the interpreter).
  Raises:
    SystemExit naming the run and the last line of its output when the driver fails.
  """
  workdir = os.path.abspath(workdir)
  command = [sys.executable, os.path.join(REPO, 'run_mil.py'), *flags, f'--workdir={workdir}']
  results_path = os.path.join(workdir, 'results.json')
  marker = os.path.join(workdir, 'benchmark_run.json')
  if os.path.exists(results_path) and os.path.exists(marker):
    with open(marker) as f:
      previous = json.load(f)
    with open(results_path) as f:
      results = json.load(f)
    if previous['command'] == command[1:] and results.get('status') == 'complete':
      print(f'{name}: reusing {results_path}', flush=True)
      return dict(results, wall_s=previous['wall_s'], command=previous['command'])
  print(f'{name}: {" ".join(command[1:])}', flush=True)
  os.makedirs(workdir, exist_ok=True)
  output_path = os.path.join(workdir, 'driver_output.txt')
  start = time.time()
  with open(output_path, 'w') as output:
    process = subprocess.run(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
  wall = time.time() - start
  if process.returncode != 0:
    with open(output_path) as f:
      tail = f.read().strip().splitlines()[-1:]
    raise SystemExit(f'{name} failed (exit {process.returncode}): {tail}; see {output_path}')
  with open(results_path) as f:
    results = json.load(f)
  with open(marker, 'w') as f:
    json.dump({'command': command[1:], 'wall_s': wall}, f)
  return dict(results, wall_s=wall, command=command[1:])
