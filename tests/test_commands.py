"""What every command shares: its one `error:` line and exit code (`errors`), and a stderr free
of TensorFlow's C++ start-up lines (`tf_logs`)."""

import os
import subprocess
import sys

import pytest

from absl import flags

from click_supervision import area_fit
from click_supervision import beam_precompute
from click_supervision import command_line
from click_supervision import errors
from click_supervision import export
from click_supervision import predict
from click_supervision import report
from click_supervision import second_click
from click_supervision import tf_logs
from click_supervision.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_WORDS = ('cuinit', 'onednn', 'cuda', 'cpu_feature_guard', 'absl::initializelog')


@pytest.fixture(autouse=True)
def quiet_left_behind(monkeypatch):
  """Undoes what `tf_logs.quiet()` (called by the commands run here in process) changes in this
  process: its import finder and TensorFlow's log level, for the tests that follow."""
  monkeypatch.setattr(sys, 'meta_path', list(sys.meta_path))
  level = os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)
  yield
  os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)
  if level is not None:
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = level


def run_python(args):
  """Runs `python ARGS` from the repository as a user would, with TensorFlow's log settings
  cleared; returns (exit code, stdout, stderr)."""
  environ = {k: v for k, v in os.environ.items()
             if k not in ('TF_CPP_MIN_LOG_LEVEL', tf_logs.ENV)}
  done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                        env=environ, timeout=300, check=False)
  return done.returncode, done.stdout, done.stderr


def test_run_command_maps_each_ending_to_its_code_and_one_line(capsys):
  def raises(error):
    def body():
      raise error
    return body

  assert errors.run_command(lambda: None) == 0
  assert errors.run_command(lambda: 3) == 3
  cases = [(raises(UserError('clicks.jsonl:3: bad row')), {}, 1, 'error: clicks.jsonl:3: bad row'),
           (raises(KeyboardInterrupt()), {}, 130, 'error: interrupted'),
           (raises(KeyboardInterrupt()), {'interrupted': errors.INTERRUPTED_RESUMABLE}, 130,
            'error: interrupted; rerun the same command to resume')]
  for body, options, code, line in cases:
    assert errors.run_command(body, **options) == code
    assert capsys.readouterr().err.splitlines() == [line]
  with pytest.raises(ZeroDivisionError):  # A bug keeps its traceback.
    errors.run_command(lambda: 1 / 0)


def test_fail_prints_after_stdout_and_exits_with_the_code(capfd):
  print('progress so far', end='')  # Still buffered: `fail` flushes it first.
  with pytest.raises(SystemExit) as stopped:
    errors.fail('--out: not a folder', code=2)
  assert stopped.value.code == 2
  out, err = capfd.readouterr()
  assert out == 'progress so far' and err == 'error: --out: not a folder\n'


def test_commands_keep_their_error_lines_and_codes(tmp_path, capsys):
  assert report.main([str(tmp_path / 'no_run')]) == 1
  assert capsys.readouterr().err.startswith(f'error: {tmp_path / "no_run"}')
  assert predict.main(['--model=m', f'--image={tmp_path / "none.jpg"}', '--out=o.png']) == 1
  assert capsys.readouterr().err == (
      f'error: {tmp_path / "none.jpg"}: no such image file or folder\n')
  with pytest.raises(SystemExit) as stopped:
    area_fit.main([f'--dataset=voc:{tmp_path / "no_voc"}', f'--out={tmp_path / "m.json"}'])
  assert stopped.value.code == 1
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith(f'error: {tmp_path / "no_voc"}: '), err
  code, _, err = run_python(['-m', 'click_supervision.annotate', 'extra'])
  assert (code, err) == (2, "error: unexpected arguments ['extra']\n")


def test_a_command_that_loads_tensorflow_prints_only_its_error_line(tmp_path):
  # export imports Keras (so TensorFlow) before it finds that the run has no detector.
  code, out, err = run_python(['-m', 'click_supervision.export', f'--run={tmp_path / "no_run"}',
                               f'--out={tmp_path / "model"}'])
  assert code == 1 and out == '', (out, err)
  assert len(err.splitlines()) == 1 and err.startswith(f'error: {tmp_path / "no_run"}'), err
  assert not any(word in err.lower() for word in TF_WORDS), err


def test_tensorflow_imported_after_quiet_is_whole_and_silent():
  # The wrapped import leaves TensorFlow's module as the usual import does, and it works.
  check = ('from click_supervision import tf_logs; tf_logs.quiet(); import os, sys; '
           'print("kept", file=sys.stderr); import tensorflow as tf; '
           'assert "exec_module" not in vars(tf.__loader__); '
           'assert tf.__spec__.origin.endswith("__init__.py"); '
           'print(int(tf.reduce_sum(tf.constant([1, 2]))), os.environ["TF_CPP_MIN_LOG_LEVEL"])')
  code, out, err = run_python(['-c', check])
  assert (code, out, err) == (0, '3 3\n', 'kept\n'), err


def test_quiet_respects_the_opt_out_and_the_users_level(monkeypatch):
  monkeypatch.delitem(sys.modules, 'tensorflow', raising=False)
  finders = len(sys.meta_path)
  monkeypatch.setenv(tf_logs.ENV, '1')
  tf_logs.quiet()
  assert 'TF_CPP_MIN_LOG_LEVEL' not in os.environ and len(sys.meta_path) == finders
  monkeypatch.setenv(tf_logs.ENV, '0')
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '1')
  tf_logs.quiet()
  tf_logs.quiet()  # Twice: one finder.
  assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '1' and len(sys.meta_path) == finders + 1


def test_load_notices_are_dropped_and_the_rest_kept(capfd):
  notices = [
      'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
      'I0000 00:00:1796635090.468728   10925 port.cc:153] oneDNN custom operations are on.',
      'I0000 00:00:1796635090.469044   10925 cudart_stub.cc:31] Could not find cuda drivers',
      'W0000 00:00:1796635090.517096   10925 cpu_feature_guard.cc:227] This TensorFlow binary',
      'To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild']
  kept = ['E0000 00:00:1796635094.903087   10925 some_op.cc:52] a real failure',
          'a Python warning printed while loading']
  assert not any(tf_logs.is_load_notice(line) for line in kept)
  with tf_logs.load_notices_dropped():
    os.write(2, '\n'.join([notices[0], kept[0], *notices[1:], kept[1], '']).encode())
  assert capfd.readouterr().err.splitlines() == kept


# Every `python -m click_supervision.X` tool with flags of its own, and one flag each defines.
TOOLS = {'export': (export, '--run'), 'predict': (predict, '--min_score'),
         'report': (report, '--out'), 'area_fit': (area_fit, '--dataset'),
         'beam_precompute': (beam_precompute, '--max_proposals'),
         'second_click': (second_click, '--fraction')}


def test_tools_print_their_help_and_exit_0(capsys):
  for name, (tool, flag) in TOOLS.items():
    for asked in ('--help', '-?', '--helpshort', '-h', '--helpfull'):
      with pytest.raises(SystemExit) as stopped:
        tool.main([asked])
      out, err = capsys.readouterr()
      assert stopped.value.code == 0 and err == '', (name, asked, err)
      assert out.startswith(f'usage: python -m click_supervision.{name} '), out
      assert f'\n  {flag}: ' in out and '--[no]help' in out, out


def test_tools_report_command_line_errors_as_one_line_with_code_2(capsys):
  cases = [
      (export.main, [], 'error: --run and --out are required'),
      (export.main, ['--run=r'], 'error: --out is required'),
      (export.main, ['--run=r', '--out=m', 'extra'], "error: unexpected arguments ['extra']"),
      (export.main, ['--run=r', '--out=m', '--outt=n'], "error: Unknown command line flag 'outt'"),
      (predict.main, ['--image=i.jpg', '--out=o.png'], 'error: give one of --model and --run'),
      (predict.main, ['--model=m', '--run=r', '--image=i.jpg', '--out=o.png'],
       'error: --model and --run exclude each other: give one'),
      (predict.main, ['--model=m', '--image=i.jpg'], 'error: --out is required'),
      # absl's words after the flag.
      (predict.main, ['--model=m', '--image=i.jpg', '--out=o.png', '--min_score=high'],
       'error: flag --min_score=high: '),
      (predict.main, ['--model=m', '--image=i.jpg', '--out=o.png', '--json=maybe'],
       'error: flag --json=maybe: '),
      (report.main, ['--out=r.png'], 'error: no run folders: give one or more (their --workdir)'),
      (area_fit.main, ['--out=m.json'], 'error: --dataset is required'),
      (beam_precompute.main, ['--dataset=synthetic', '--runner=DirectRunner'],
       'error: --cache_dir is required'),
      (beam_precompute.main, ['--dataset=synthetic', '--cache_dir=c', '--max_proposals=many'],
       'error: flag --max_proposals=many: ')]
  for main, argv, line in cases:
    with pytest.raises(SystemExit) as stopped:
      main(argv)
    assert stopped.value.code == 2, (argv, stopped.value.code)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(line), (argv, err)
  # The click tool (absl.app on the global flags) the same way.
  code, _, err = run_python(['-m', 'click_supervision.annotate', '--port=eighty'])
  assert code == 2 and err.startswith('error: flag --port=eighty: ') and err.count('\n') == 1, err


def test_each_main_starts_from_the_defaults(tmp_path, capsys, monkeypatch):
  # Flags given to one call (or to another tool in the process) do not leak into the next.
  seen = []
  monkeypatch.setattr(predict, '_predict', lambda *args: seen.append(args))
  assert predict.main(['--run=r', '--image=i.jpg', '--out=o.png', '--json',
                       '--min_score=0.9']) == 0
  assert predict.main(['--model', 'm', '--image', 'i.jpg', '--out', 'o.png']) == 0
  assert seen == [(None, 'r', 'i.jpg', 'o.png', True, 0.9),
                  ('m', None, 'i.jpg', 'o.png', False, 0.5)]
  assert report.main([str(tmp_path / 'no_run'), '--out', 'elsewhere.png']) == 1
  capsys.readouterr()
  assert report.FLAGS['out'].value == 'elsewhere.png' != export.FLAGS['out'].value


def test_beam_precompute_passes_what_it_does_not_define_to_beam(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(beam_precompute, 'run', lambda *args: calls.append(args))
  beam_flags = ['--runner', 'DirectRunner', '--direct_num_workers=2', '--save_main_session']
  assert beam_precompute.main([beam_flags[0], '--dataset=synthetic:smoke', *beam_flags[1:3],
                               f'--cache_dir={tmp_path}', '--max_proposals=200',
                               beam_flags[3], '--stages=proposals']) == 0
  spec, split, cache_dir, proposal_config, feature_config, beam_args, stages = calls[0]
  assert (spec, split, cache_dir, stages) == ('synthetic:smoke', 'trainval', str(tmp_path),
                                              ('proposals',))
  assert proposal_config.max_boxes == 200 and feature_config.short_side == 600
  assert beam_args == beam_flags


def test_parse_reads_a_tool_flag_values_of_its_own(capsys):
  tool_flags = command_line.new_flag_values()
  name = flags.DEFINE_string('name', None, 'a name', flag_values=tool_flags)
  count = flags.DEFINE_integer('count', 1, 'a count', flag_values=tool_flags)
  assert command_line.parse(tool_flags, ['a', '--name=x', 'b'], 'tool', 'Does.',
                            positional=True) == ['a', 'b']
  assert (name.value, count.value) == ('x', 1)
  assert command_line.parse(tool_flags, ['--other=1', '--count', '3', '--name='], 'tool',
                            'Does.', pass_unknown=True) == ['--other=1']
  assert (name.value, count.value) == ('', 3)
  with pytest.raises(SystemExit) as stopped:
    command_line.parse(tool_flags, ['--name='], 'tool', 'Does.', required=('name',))
  assert stopped.value.code == 2
  assert capsys.readouterr().err == 'error: --name is required\n'
  assert 'name' not in flags.FLAGS and 'count' not in flags.FLAGS
