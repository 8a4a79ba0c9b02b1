"""`pip install .` installs the library only: no top-level `flags` package or `run_mil` module in
site-packages, and the installed click tool runs from another folder without them."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_pip_install_puts_only_the_library_in_site_packages(tmp_path):
  venv = tmp_path / 'venv'
  # The venv sees the test machine's dependencies (no downloads); the project itself is installed
  # into the venv's own site-packages, which comes first on its path.
  subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)], check=True)
  python = str(venv / 'bin' / 'python')
  subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                  REPO], check=True, cwd=tmp_path, capture_output=True)
  site = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                        check=True, capture_output=True, text=True).stdout.strip()
  installed = set(os.listdir(site))
  assert 'click_supervision' in installed
  assert 'flags' not in installed and 'run_mil.py' not in installed
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  out = subprocess.run([python, '-m', 'click_supervision.annotate', '--helpfull'], cwd=elsewhere,
                       capture_output=True, text=True, timeout=120)
  # (absl exits with 1 after printing the help.)
  assert 'Traceback' not in out.stderr, out.stderr[-2000:]
  assert '--annotators' in out.stdout and '--allowed_hosts' in out.stdout
  where = subprocess.run([python, '-c', 'import click_supervision; print(click_supervision.__file__)'],
                         cwd=elsewhere, capture_output=True, text=True, check=True).stdout
  assert where.startswith(site)
