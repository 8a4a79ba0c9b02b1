"""Serves the click collection web app over a dataset split.

  python -m click_supervision.annotate --dataset=voc:PATH --split=trainval --out=clicks.jsonl

Open the printed address in a browser; each annotator enters a name or token, reads the
instructions, passes the qualification test and clicks object centers. Ctrl-C stops the server;
rerunning the same command resumes (every accepted click is already on disk). The summary page is
at /summary (an annotator sees the totals and their own row); its admin view, with every
annotator's gold-pair results, is the `/summary?token=...` link printed at start. The output
trains directly:
`python run_mil.py --dataset=... --clicks=2 --click_source=clicks.jsonl`.
"""

from absl import app as absl_app
from absl import flags

from click_supervision import cache as cache_lib
from click_supervision import command_line
from click_supervision import datasets
from click_supervision import errors
from click_supervision import tf_logs
from click_supervision.annotate import app as app_lib
from click_supervision.annotate import qualification
from click_supervision.annotate import server as server_lib
from click_supervision.errors import UserError

_DATASET = flags.DEFINE_string('dataset', 'synthetic', f'Data source: {datasets.DATASET_HELP}.')
_SPLIT = flags.DEFINE_string('split', 'trainval', 'Split whose (image, class) pairs get clicks.')
_OUT = flags.DEFINE_string('out', 'clicks.jsonl', 'Click file to write (click format, version '
                           '1); an existing one from the same settings is resumed.')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to bind; 0.0.0.0 serves other machines '
                            '(only on a network you trust: there is no login beyond names).')
_ALLOWED_HOSTS = flags.DEFINE_list('allowed_hosts', [], 'More host names (or addresses) the '
                                   'annotators\' browsers use to reach the server, e.g. this '
                                   'machine\'s name with --host=0.0.0.0; requests naming any '
                                   'other host than 127.0.0.1, localhost and --host get 421 '
                                   '(against DNS rebinding). NAME:PORT for another port.')
_PORT = flags.DEFINE_integer('port', 8000, 'Port (0 picks a free one; the address is printed).')
_ANNOTATORS = flags.DEFINE_integer('annotators', 2, 'Distinct annotators per (image, class) '
                                   'pair (the paper: 2).')
_GOLD_FRACTION = flags.DEFINE_float('gold_fraction', 0.1, 'Fraction of pairs used as hidden gold '
                                    'pairs for quality control (their ground-truth boxes are '
                                    'known).')
_GOLD_MIN_CLICKS = flags.DEFINE_integer('gold_min_clicks', 3, 'Gold clicks an annotator makes '
                                        'before quality control can flag them.')
_GOLD_MAX_MISS_RATE = flags.DEFINE_float('gold_max_miss_rate', 0.3, 'Flag an annotator when more '
                                         'than this fraction of their gold clicks fall outside '
                                         'every box of the class.')
_QUAL_POLYGONS = flags.DEFINE_integer('qualification_polygons', qualification.DEFAULT_NUM_POLYGONS,
                                      'Polygons in the qualification test.')
_QUAL_MIN_PASSED = flags.DEFINE_integer('qualification_min_passed',
                                        qualification.DEFAULT_MIN_PASSED,
                                        'Polygons that must be passed to qualify.')
_QUAL_TOLERANCE = flags.DEFINE_float('qualification_tolerance', qualification.DEFAULT_TOLERANCE,
                                     'Largest passing click error, relative to sqrt(box area).')
_LEASE_S = flags.DEFINE_float('lease_s', 300.0, 'Seconds a pair handed to an annotator stays '
                              'reserved for them.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the pair order, the gold pairs and the '
                             'qualification polygons.')
_SECOND_CLICK_REQUESTS = flags.DEFINE_string(
    'second_click_requests', None, 'A second pass: the request file of the pairs to ask again '
    '(python -m click_supervision.second_click); run on the first pass\'s --out with '
    '--annotators=2. Only those pairs are served, never to their first annotator.')
_CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'Cache folder (synthetic data; default '
                                 '$CLICKSUP_CACHE_DIR or ~/.cache/click_supervision).')


def main(argv):
  tf_logs.quiet()  # The TFDS sources import TensorFlow.
  if len(argv) > 1:
    errors.fail(f'unexpected arguments {argv[1:]}', code=2)
  try:
    dataset = datasets.load_dataset(_DATASET.value, _SPLIT.value,
                                    cache_dir=_CACHE_DIR.value or cache_lib.default_cache_dir())
    requests = None
    if _SECOND_CLICK_REQUESTS.value:
      from click_supervision import second_click  # pylint: disable=g-import-not-at-top
      requested, _ = second_click.read_requests(_SECOND_CLICK_REQUESTS.value, dataset)
      requests = {(image_id, dataset.class_names[c]) for image_id, c in requested}
    annotation_app = app_lib.AnnotationApp(
        dataset, _OUT.value, num_annotators=_ANNOTATORS.value, second_click_requests=requests,
        gold_fraction=_GOLD_FRACTION.value, gold_min_clicks=_GOLD_MIN_CLICKS.value,
        gold_max_miss_rate=_GOLD_MAX_MISS_RATE.value,
        qualification_polygons=_QUAL_POLYGONS.value,
        qualification_min_passed=_QUAL_MIN_PASSED.value,
        qualification_tolerance=_QUAL_TOLERANCE.value, lease_s=_LEASE_S.value, seed=_SEED.value)
    try:
      server = server_lib.AnnotationServer(annotation_app, _HOST.value, _PORT.value,
                                           extra_hosts=_ALLOWED_HOSTS.value)
    except OSError as e:
      raise UserError(f'cannot listen on {_HOST.value}:{_PORT.value} ({e.strerror}); choose '
                      f'another --port') from None
  except UserError as e:
    errors.fail(e)
  except OSError as e:  # E.g. --out in a folder that cannot be created or written.
    errors.fail(f'{e.filename or _OUT.value}: {e.strerror}')
  print(f'{dataset.name} {dataset.split}: {len(annotation_app.pairs)} (image, class) pairs x '
        f'{_ANNOTATORS.value} annotators' +
        (' (second pass: the requested pairs only)' if requests is not None else '') +
        f'; clicks go to {_OUT.value}', flush=True)
  if _HOST.value in ('0.0.0.0', '::') and not _ALLOWED_HOSTS.value:
    print('note: other machines must use a name given with --allowed_hosts (this machine\'s name '
          'or address); requests naming another host get 421', flush=True)
  # Only this link shows every annotator's gold-pair results (a new one at each start): keep it
  # from the annotators, who would learn which pairs are gold.
  print(f'admin summary (every annotator; keep it private): {server.admin_url}', flush=True)
  print(f'serving on {server.url}  (summary: {server.url}/summary; Ctrl-C stops, rerun resumes)',
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    print('stopped; every accepted click is in the click file', flush=True)
  finally:
    server.server_close()
    annotation_app.close()


if __name__ == '__main__':
  # A bad flag or value: one `error:` line and exit code 2, as the driver.
  absl_app.run(main, flags_parser=command_line.app_flags_parser)
