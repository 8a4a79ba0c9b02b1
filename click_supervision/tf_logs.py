"""Keeps TensorFlow's C++ start-up log lines off a command's stderr.

Importing TensorFlow prints lines such as the oneDNN notice, "Could not find cuda drivers",
"failed call to cuInit" and cpu_feature_guard's instruction list, in the log format of its C++
code (`I0000 00:00:... port.cc:153] ...`). Users read them as failures of the command. Every
command calls `quiet()` before anything imports TensorFlow; `CLICKSUP_TF_LOGS=1` in the
environment shows the lines again (e.g. to see whether a GPU was found).

Two mechanisms, because TensorFlow logs through two paths:
  - `TF_CPP_MIN_LOG_LEVEL=3` (unless already set) hides what TensorFlow logs after its logging
    is set up: info, warnings and errors such as cuInit's (level 2 leaves the errors);
  - what the C++ libraries print while they load, before that set-up ("All log messages before
    absl::InitializeLog() is called are written to STDERR", then the oneDNN and CUDA notices),
    ignores that variable at every level: the first `import tensorflow` runs with the process's
    stderr (file descriptor 2) captured, and the captured text is written back without its info
    and warning lines. Anything else printed meanwhile (an error, a Python warning) still shows,
    only after the import.
The oneDNN notice is dropped as text: `TF_ENABLE_ONEDNN_OPTS`, which would also silence it,
changes the numerics and is left to the user.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

ENV = 'CLICKSUP_TF_LOGS'

# A C++ log line of severity I (info) or W (warning), e.g.
# `I0000 00:00:1796635090.468728   10925 port.cc:153] oneDNN custom operations are on. ...`.
_CPP_INFO_OR_WARNING = re.compile(r'[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.\-/]+:\d+\] ')
_LOAD_TIME_NOTICES = ('WARNING: All log messages before absl::InitializeLog() is called',
                      # The second line of cpu_feature_guard's notice.
                      'To enable the following instructions:')


def wanted():
  """Whether the user asked to see TensorFlow's log lines (`CLICKSUP_TF_LOGS` set, not 0)."""
  return os.environ.get(ENV, '').strip() not in ('', '0')


def is_load_notice(line):
  """Whether `line` is one of TensorFlow's load-time info or warning lines (dropped)."""
  return bool(_CPP_INFO_OR_WARNING.match(line)) or line.startswith(_LOAD_TIME_NOTICES)


def quiet():
  """Hides TensorFlow's C++ log lines in this process, unless `wanted()` (module docstring).

  Call before anything imports TensorFlow; it imports nothing itself (a command that never needs
  TensorFlow does not pay for it). Harmless when called again; after TensorFlow was imported it
  changes only the environment that subprocesses inherit (TensorFlow read it at import).
  """
  if wanted():
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  if 'tensorflow' not in sys.modules and not any(
      isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())


@contextlib.contextmanager
def load_notices_dropped():
  """Captures file descriptor 2 (what C++ code prints too) for the block, then writes the
  captured text to `sys.stderr` without `is_load_notice` lines."""
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # No stderr to capture (closed): nothing to drop either.
    yield
    return
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode('utf-8', errors='replace')
      kept = [line for line in text.splitlines(keepends=True) if not is_load_notice(line)]
      if kept:
        sys.stderr.write(''.join(kept))
        sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` as the other finders do, with its loading under `load_notices_dropped`.

  Only the loader's `exec_module` is wrapped (the spec and module are the usual ones), so the
  import happens wherever and whenever the code first asks for TensorFlow, as without it.
  """

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name != 'tensorflow':
      return None
    if self in sys.meta_path:  # Once: TensorFlow's own imports go the usual way.
      sys.meta_path.remove(self)
    spec = importlib.util.find_spec(name)
    if spec is None or not hasattr(spec.loader, 'exec_module'):
      return spec
    exec_module = spec.loader.exec_module

    def exec_module_quietly(module):
      try:
        with load_notices_dropped():
          exec_module(module)
      finally:
        del spec.loader.exec_module  # The loader's own method again.

    spec.loader.exec_module = exec_module_quietly
    return spec
