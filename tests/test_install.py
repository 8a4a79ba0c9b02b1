"""`pip install .` installs the library only: no top-level `flags` package or `run_mil` module in
site-packages, and the installed click tool runs from another folder without them."""

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_pip_install_puts_only_the_library_in_site_packages(tmp_path):
  # Installed into a folder of its own (what `pip install .` puts in site-packages); the
  # dependencies come from this interpreter's environment, so nothing is downloaded.
  target = tmp_path / 'site'
  command = [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', f'--target={target}']
  if importlib.util.find_spec('setuptools') is not None:
    command.append('--no-build-isolation')
  subprocess.run(command + [REPO], check=True, cwd=tmp_path, capture_output=True)
  installed = set(os.listdir(target))
  assert 'click_supervision' in installed
  assert 'flags' not in installed and 'run_mil.py' not in installed
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  env = dict(os.environ, PYTHONPATH=str(target))
  out = subprocess.run([sys.executable, '-m', 'click_supervision.annotate', '--helpfull'],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
  # (absl exits with 1 after printing the help.)
  assert 'Traceback' not in out.stderr, out.stderr[-2000:]
  assert '--annotators' in out.stdout and '--allowed_hosts' in out.stdout
  where = subprocess.run(
      [sys.executable, '-c', 'import click_supervision; print(click_supervision.__file__)'],
      cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
  assert where.startswith(str(target))
