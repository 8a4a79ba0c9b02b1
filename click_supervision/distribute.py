"""`tf.distribute` strategies for the detector's training (the `deep_mil` and `detector` stages).

  --strategy=default       one device (the GPU when there is one, else the CPU)
  --strategy=mirrored      every local GPU (or every logical CPU device) in sync
  --strategy=tpu           a Cloud TPU: --tpu=ADDRESS (a name, `grpc://host:port`, or `local`)
  --strategy=multi_worker  several machines, each running the same command; each reads its
                           role from the `TF_CONFIG` environment variable

How a step is split (`detector.train`): every worker builds the same global batch (a pure
function of the seed and the step), cut into one block of whole images per replica; each
replica's loss is its summed RoI losses over the global RoI count, so the replicas' summed
gradients are the one-device gradient of the same batch. `images_per_batch` must be a multiple of
the replica count. On a TPU every array has a fixed shape: RoIs are padded to
`images_per_batch x rois_per_image` rows (always), and with `--detector_finetune=top|all` images
are padded to a square of the cache's `max_long_side` pixels.

Under `multi_worker` the chief (the `chief` task of `TF_CONFIG`, else worker 0) writes the run
folder; every other worker writes the same files into `<workdir>/worker_<index>/` (`runner`),
its checkpoints included: all workers save at the same steps, so each resumes from its own. The
strategy is made at the start of `runner.run`, before TensorFlow runs anything, as
`MultiWorkerMirroredStrategy` requires. Not run here: a TPU, several machines.
"""

import json
import os

import tensorflow as tf

from click_supervision.errors import UserError

STRATEGIES = ('default', 'mirrored', 'tpu', 'multi_worker')


def make_strategy(name, tpu=''):
  """The `tf.distribute.Strategy` called `name` (one of STRATEGIES), made once per process.

  One instance per (name, tpu) and process: two MirroredStrategy instances in one process
  number their collective operations alike, and a step of one then waits on the other's
  (TensorFlow aborts with "Shape mismatch in the collective instance").

  Raises:
    UserError: an unknown name, `tpu` without an address, a TPU that cannot be reached, or
      `multi_worker` without a readable `TF_CONFIG`.
  """
  if name == 'default':
    return tf.distribute.get_strategy()
  if (name, tpu) not in _MADE:
    _MADE[(name, tpu)] = _make(name, tpu)
  return _MADE[(name, tpu)]


_MADE = {}  # (name, tpu) -> the strategy made in this process.


def _make(name, tpu):
  if name == 'mirrored':
    devices = [d.name for d in tf.config.list_logical_devices('GPU')]
    # Without GPUs, every logical CPU device (one unless configured otherwise).
    return tf.distribute.MirroredStrategy(
        devices or [d.name for d in tf.config.list_logical_devices('CPU')])
  if name == 'tpu':
    if not tpu:
      raise UserError('--strategy=tpu needs --tpu=ADDRESS (the TPU name, grpc://host:port, or '
                      'local)')
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
          tpu='' if tpu == 'local' else tpu)
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
      raise UserError(f'--tpu={tpu}: cannot connect to the TPU ({type(e).__name__}: '
                      f'{str(e).splitlines()[0] if str(e) else ""})') from None
    return tf.distribute.TPUStrategy(resolver)
  if name == 'multi_worker':
    raw = os.environ.get('TF_CONFIG')
    if not raw:
      raise UserError('--strategy=multi_worker reads the cluster from the TF_CONFIG environment '
                      'variable, which is not set')
    try:
      json.loads(raw)['cluster']['worker']
    except (ValueError, KeyError, TypeError):
      raise UserError('TF_CONFIG is not JSON with a cluster.worker list (see the '
                      'tf.distribute.MultiWorkerMirroredStrategy documentation)') from None
    try:
      return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:  # "Collective ops must be configured at program startup".
      raise UserError(f'--strategy=multi_worker: {str(e).splitlines()[0]}; make the strategy '
                      f'before TensorFlow runs anything (runner.run does)') from None
  raise UserError(f'--strategy={name}: strategies are {", ".join(STRATEGIES)}')


def is_chief(strategy):
  """True on the worker that writes the run folder (always, outside multi_worker)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  return chief_task(resolver.task_type, resolver.task_id,
                    'chief' in resolver.cluster_spec().as_dict())


def chief_task(task_type, task_id, cluster_has_chief):
  """Whether the task (`TF_CONFIG`'s task type and index) is the chief: the `chief` task, or
  worker 0 of a cluster without one."""
  if task_type is None or task_type == 'chief':
    return True
  return task_type == 'worker' and task_id == 0 and not cluster_has_chief


def worker_index(strategy):
  """This worker's task index under multi_worker (0 otherwise)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 0
  return int(strategy.cluster_resolver.task_id or 0)
