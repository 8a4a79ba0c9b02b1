"""tf.data input pipeline: records (+ clicks) -> dicts of tensors.

`make_dataset` yields one element per image with these keys (after the default ops):

  image:          uint8 [H, W, 3], RGB, no EXIF rotation (same pixels as `images.load_image`).
  image_id:       string [].
  path:           string [], the image file.
  height, width:  int32 [], from the annotation (checked against the file by the data stage).
  image_labels:   float32 [num_classes], multi-hot image-level labels (the weak supervision).
  clicks:         float32 [C, 2], `(y, x)` in pixels, all clicks the learner uses in this image,
                  C = (number of image-level labels) x (clicks per pair); [0, 2] with no clicks.
  click_labels:   int32 [C], class index of each click.
  gt_boxes:       float32 [N, 4], `[ymin, xmin, ymax, xmax]` pixels, for evaluation only.
  gt_labels:      int32 [N].
  gt_difficult:   bool [N].
  proposals:      float32 [P, 4] pixels, objectness: float32 [P] (only with `proposals=`: the
                  cached proposals plus the whole-image box, as MIL and the detector see them).

The ops below are pure `dict -> dict` functions over such dicts (big_vision style): each works
eagerly on a dict of tensors and inside `Dataset.map`.
"""

import numpy as np
import tensorflow as tf

from click_supervision import clicks as clicks_lib


def _raw_signature():
  return {
      'image_id': tf.TensorSpec([], tf.string),
      'path': tf.TensorSpec([], tf.string),
      'height': tf.TensorSpec([], tf.int32),
      'width': tf.TensorSpec([], tf.int32),
      'label_indices': tf.TensorSpec([None], tf.int32),
      'clicks': tf.TensorSpec([None, 2], tf.float32),
      'click_labels': tf.TensorSpec([None], tf.int32),
      'gt_boxes': tf.TensorSpec([None, 4], tf.float32),
      'gt_labels': tf.TensorSpec([None], tf.int32),
      'gt_difficult': tf.TensorSpec([None], tf.bool),
  }


def raw_examples(records, selected_clicks=None, proposals=None):
  """Yields one dict of numpy values per record (the generator behind `make_dataset`).

  Args:
    records: list of record dicts (`datasets.records`).
    selected_clicks: dict `(image_id, class_index)` -> list of `clicks.Click`, or None.
    proposals: optional callable image_id -> (boxes float32 [P, 4], objectness float32 [P]).
  """
  for record in records:
    extra = {}
    if proposals is not None:
      boxes, objectness = proposals(record['image_id'])
      extra = {'proposals': np.asarray(boxes, np.float32).reshape(-1, 4),
               'objectness': np.asarray(objectness, np.float32).reshape(-1)}
    points, labels = [], []
    for label in record['image_labels']:
      for click in (selected_clicks or {}).get((record['image_id'], int(label)), []):
        points.append(click)
        labels.append(int(label))
    yield {
        'image_id': record['image_id'],
        'path': record['path'],
        'height': np.int32(record['height']),
        'width': np.int32(record['width']),
        'label_indices': np.asarray(record['image_labels'], np.int32),
        'clicks': clicks_lib.clicks_as_array(points),
        'click_labels': np.array(labels, np.int32),
        'gt_boxes': record['gt_boxes'],
        'gt_labels': record['gt_labels'],
        'gt_difficult': record['difficult'],
        **extra,
    }


def decode_image(features):
  """Op: reads `path` and adds `image` uint8 [H, W, 3]."""
  features = dict(features)
  data = tf.io.read_file(features['path'])
  # `tf.io.decode_image` decodes JPEG with libjpeg's fast integer DCT, whose pixels differ from
  # PIL's (`images.load_image`, accurate integer DCT) by up to ~20 grey levels; the accurate DCT
  # gives the same pixels, so every stage sees the same image.
  image = tf.cond(
      tf.io.is_jpeg(data),
      lambda: tf.io.decode_jpeg(data, channels=3, dct_method='INTEGER_ACCURATE'),
      lambda: tf.ensure_shape(tf.io.decode_image(data, channels=3, expand_animations=False),
                              [None, None, 3]))
  features['image'] = tf.ensure_shape(image, [None, None, 3])
  return features


def multi_hot_labels(num_classes):
  """Op factory: replaces `label_indices` int32 [L] by `image_labels` float32 [num_classes]."""

  def op(features):
    features = dict(features)
    indices = features.pop('label_indices')
    hot = tf.scatter_nd(indices[:, None], tf.ones_like(indices, tf.float32), [num_classes])
    features['image_labels'] = tf.minimum(hot, 1.0)  # Duplicate indices still give 1.
    return features

  return op


def make_dataset(records, num_classes, selected_clicks=None, decode=True, proposals=None):
  """Builds the `tf.data.Dataset` documented in the module docstring.

  Args:
    records: list of record dicts.
    num_classes: number of classes of the dataset.
    selected_clicks: dict pair -> list of `clicks.Click` (from `clicks.select_clicks`), or None
      for no clicks.
    decode: decode the images (False leaves only `path`, e.g. for stages that read files with
      OpenCV).
    proposals: optional bag source with `proposals_of(image_id)` (`bags.TrunkMapBags`) or a
      callable image_id -> (boxes, objectness): adds the `proposals` and `objectness` keys.
  Returns:
    `tf.data.Dataset` of dicts, in record order.
  """
  records = list(records)
  signature = _raw_signature()
  if proposals is not None:
    proposals = getattr(proposals, 'proposals_of', proposals)
    signature['proposals'] = tf.TensorSpec([None, 4], tf.float32)
    signature['objectness'] = tf.TensorSpec([None], tf.float32)
  dataset = tf.data.Dataset.from_generator(
      lambda: raw_examples(records, selected_clicks, proposals), output_signature=signature)
  dataset = dataset.map(multi_hot_labels(num_classes))
  if decode:
    dataset = dataset.map(decode_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset


def make_training_dataset(make_element, start_step, total_steps, replicas_per_pipeline=1,
                          pipeline_index=0, num_parallel_calls=tf.data.AUTOTUNE,
                          prefetch=tf.data.AUTOTUNE):
  """Training steps -> per-replica batches, as a tf.data pipeline.

  Each element is one replica's batch of one step, built by `make_element(step, replica)` in
  parallel threads (`Dataset.map` over a `tf.numpy_function`, in step order: `deterministic`)
  and prefetched, so the next batches are made while the current step runs. A batch stays a pure
  function of (seed, step, replica): the pipeline starts at `start_step` when a run resumes.
  Elements come replica by replica within a step, the order in which
  `tf.distribute.Strategy.distribute_datasets_from_function` hands one element to each of a
  worker's replicas.

  Args:
    make_element: callable (step int, replica int) -> dict name -> numpy array; arrays of rank 4
      (feature maps, images) may change height and width from element to element, every other
      shape is fixed.
    start_step, total_steps: the steps [start_step, total_steps).
    replicas_per_pipeline: replicas fed by this pipeline (one pipeline per worker).
    pipeline_index: this pipeline's index: it feeds replicas [index x R, (index + 1) x R).
    num_parallel_calls, prefetch: tf.data's knobs (AUTOTUNE by default).
  Returns:
    `tf.data.Dataset` of dicts: the arrays of `make_element` plus `step` int64 [].
  """
  per_pipeline = int(replicas_per_pipeline)
  example = make_element(start_step, pipeline_index * per_pipeline)
  keys = sorted(example)
  dtypes = [tf.as_dtype(example[k].dtype) for k in keys]
  shapes = [[None, None, None, v.shape[3]] if v.ndim == 4 else list(v.shape)
            for v in (example[k] for k in keys)]

  def build(step, replica):
    element = make_element(int(step), int(replica))
    return [np.asarray(element[k], example[k].dtype) for k in keys]

  def element(index):
    step = index // per_pipeline
    replica = pipeline_index * per_pipeline + index % per_pipeline
    values = tf.numpy_function(build, [step, replica], dtypes, stateful=False)
    out = {k: tf.ensure_shape(v, shape) for k, v, shape in zip(keys, values, shapes)}
    out['step'] = step
    return out

  dataset = tf.data.Dataset.range(start_step * per_pipeline, total_steps * per_pipeline)
  dataset = dataset.map(element, num_parallel_calls=num_parallel_calls, deterministic=True)
  return dataset.prefetch(prefetch)
