"""The library from Python: train a run, read it, detect objects with its detector.

  from click_supervision import api, config

  cfg = config.Config(workdir='runs/mine', stages=config.STAGES)   # every stage
  run = api.train(cfg)                          # what `python run_mil.py` does
  print(run.corloc, run.map)                    # numbers from run.results (results.json)
  detector = run.detector()                     # or api.Detector.load('exported_model')
  found = detector.predict(['photo.jpg'])       # per image: boxes, classes, scores

`train` runs `runner.run` (the same stages, files and resumption as the driver). `Detector`
serves a run's detector, in process or from a SavedModel written by `export`; either way
proposals are computed with the run's own proposal settings.
"""

import json
import os

import numpy as np

from click_supervision import results as results_lib
from click_supervision.errors import UserError


def train(config):
  """Runs the configured stages (`runner.run`); returns the `Run`.

  Args:
    config: `config.Config` (its `workdir` is the run folder; empty: the driver's default,
      `runs/<dataset>_<split>_clicks<N>_seed<S>`).
  Raises:
    UserError (bad input: the message names the file and the problem), as the driver's
    `error:` lines.
  """
  from click_supervision import runner  # pylint: disable=g-import-not-at-top
  return Run(os.path.dirname(runner.run(config)))


class Run:
  """A finished run folder.

  Args:
    workdir: the run's folder (`--workdir`).
  Raises:
    UserError when its results.json is missing, of another schema version or not complete.
  """

  def __init__(self, workdir):
    self.workdir = os.path.abspath(workdir)
    self.results = results_lib.read_results(self.workdir)

  @property
  def corloc(self):
    """CorLoc (class mean) after the last localisation stage that ran, or None."""
    return results_lib.final_corloc(self.results)

  @property
  def map(self):
    """The detector's mAP on the test split, or None when the detector stage did not run."""
    return self.results.get('map')

  @property
  def class_names(self):
    return list(self.results['class_names'])

  def localizations(self):
    """dict (image_id, class index) -> box float32 [4] pixels (localizations.jsonl)."""
    from click_supervision import localizations as localizations_lib  # pylint: disable=g-import-not-at-top
    path = os.path.join(self.workdir, 'localizations.jsonl')
    selections = localizations_lib.read_localizations(path, self.class_names)
    return {pair: np.asarray(s['box'], np.float32) for pair, s in selections.items()}

  def detector(self):
    """The run's detector (`Detector`), served in process."""
    return Detector.from_run(self.workdir)


class Detector:
  """Detects the run's classes in images.

  Build with `Detector.from_run(run_dir)` (in process) or `Detector.load(model_dir)` (a
  SavedModel written by `python -m click_supervision.export`).
  """

  def __init__(self, detect_function, metadata):
    from click_supervision import proposals as proposals_lib  # pylint: disable=g-import-not-at-top
    self._detect = detect_function
    self.metadata = metadata
    self.class_names = list(metadata['class_names'])
    self.proposal_generator = proposals_lib.ProposalGenerator(
        proposals_lib.ProposalConfig(**metadata['proposals']))
    if self.proposal_generator.precomputed is not None:
      raise UserError(f'the run read its proposals from {metadata["proposals"]["method"]}; '
                      f'a detector for new images needs computed ones (edge_boxes)')

  @classmethod
  def from_run(cls, run_dir):
    from click_supervision import export  # pylint: disable=g-import-not-at-top
    model, metadata = export.serving_model(run_dir)
    function = export.make_detect_function(model, metadata['image_settings'],
                                           export.detector_config_of(metadata))
    return cls(function, metadata)

  @classmethod
  def load(cls, model_dir):
    """A SavedModel folder of `export`; refused with one line when it is not one this version
    reads."""
    from click_supervision import export  # pylint: disable=g-import-not-at-top
    path = os.path.join(model_dir, export.METADATA_FILE)
    if not os.path.isdir(model_dir):
      raise UserError(f'{model_dir}: no such model folder')
    if not os.path.exists(path):
      raise UserError(f'{model_dir}: no {export.METADATA_FILE}; not a model exported by '
                      f'`python -m click_supervision.export`')
    try:
      with open(path) as f:
        metadata = json.load(f)
    except (OSError, ValueError) as e:
      raise UserError(f'{path}: not readable as JSON ({e})') from None
    if metadata.get('schema_version') != export.MODEL_SCHEMA_VERSION:
      raise UserError(f'{path}: model schema_version {metadata.get("schema_version")!r}; this '
                      f'click_supervision reads version {export.MODEL_SCHEMA_VERSION}: export '
                      f'the run again with this version')
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      loaded = tf.saved_model.load(model_dir)
    except (OSError, ValueError, tf.errors.OpError) as e:
      raise UserError(f'{model_dir}: not a readable SavedModel ({type(e).__name__})') from None
    detector = cls(loaded.serve, metadata)
    detector._loaded = loaded  # Keeps the SavedModel's variables alive.
    return detector

  def proposals(self, image):
    """Proposal boxes float32 [P, 4] of a uint8 [H, W, 3] image: the run's proposal settings,
    plus the whole-image box, as the run's test stage scored them (`bags.with_whole_image`)."""
    from click_supervision import bags as bags_lib  # pylint: disable=g-import-not-at-top
    boxes, scores, _ = self.proposal_generator(image)
    boxes, _ = bags_lib.with_whole_image(boxes, scores, *np.asarray(image).shape[:2])
    return boxes

  def detect(self, image, proposals=None):
    """Detections of one uint8 [H, W, 3] RGB image.

    Returns:
      dict: boxes float32 [D, 4] (`[ymin, xmin, ymax, xmax]` pixels), labels int32 [D],
      classes list of D class names, scores float32 [D] (descending).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
      raise ValueError(f'image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}')
    if proposals is None:
      proposals = self.proposals(image)
    out = self._detect(tf.constant(image), tf.constant(np.asarray(proposals, np.float32)))
    labels = out['classes'].numpy().astype(np.int32)
    return {'boxes': out['boxes'].numpy(), 'labels': labels,
            'classes': [self.class_names[i] for i in labels], 'scores': out['scores'].numpy()}

  def predict(self, images):
    """Detections of several images: image files (paths) or uint8 [H, W, 3] arrays.

    Returns:
      list of `detect` dicts, one per image. A path that cannot be read raises
      `errors.DataError` naming it.
    """
    from click_supervision.datasets import images as images_lib  # pylint: disable=g-import-not-at-top
    found = []
    for image in images:
      if isinstance(image, (str, os.PathLike)):
        image = images_lib.load_image(os.fspath(image))
      found.append(self.detect(image))
    return found
