"""Draws a detector's detections on images.

  python -m click_supervision.predict --model=MODEL_DIR --image=in.jpg --out=out.png
  python -m click_supervision.predict --model=MODEL_DIR --image=photos/ --out=drawn/ --json

MODEL_DIR is a SavedModel of `python -m click_supervision.export` (or, with --run, a finished
run folder served in process). --image is one image file or a folder of them (.jpg, .jpeg,
.png, .bmp, .webp); --out is then a file or a folder of PNGs named after the images. Boxes scoring
at least --min_score are drawn with their class name and score. --json also writes each image's
detections (all of them, above the model's score threshold) beside its drawing as
`<name>.json`: {"image": path, "detections": [{"class", "box" [ymin, xmin, ymax, xmax] pixels,
"score"}]}.
"""

import os
import sys

from absl import flags

from click_supervision import command_line
from click_supervision import errors
from click_supervision import tf_logs
from click_supervision.errors import UserError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
DRAWN = (255, 140, 0)  # orange, as the TensorBoard detection images

USAGE = ('python -m click_supervision.predict (--model=MODEL_DIR | --run=RUN_DIR) --image=PATH '
         '--out=PATH [--json] [--min_score=S]')
FLAGS = command_line.new_flag_values()
_MODEL = flags.DEFINE_string('model', None, 'a SavedModel folder written by '
                             'click_supervision.export', flag_values=FLAGS)
_RUN = flags.DEFINE_string('run', None, 'a finished run folder (its detector, served in process)',
                           flag_values=FLAGS)
_IMAGE = flags.DEFINE_string('image', None, 'an image file or a folder of images',
                             flag_values=FLAGS)
_OUT = flags.DEFINE_string('out', None, 'the PNG to write (a folder for a folder)',
                           flag_values=FLAGS)
_JSON = flags.DEFINE_boolean('json', False, 'also write <name>.json detections', flag_values=FLAGS)
_MIN_SCORE = flags.DEFINE_float('min_score', 0.5, 'draw boxes scoring >= this', flag_values=FLAGS)


def draw(image, detections, min_score):
  """uint8 [H, W, 3] RGB copy of `image` with the detections scoring >= min_score drawn."""
  import cv2  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  canvas = np.array(image)
  thickness = max(1, round(max(canvas.shape[:2]) / 250))
  for box, name, score in zip(detections['boxes'], detections['classes'], detections['scores']):
    if score < min_score:
      continue
    ymin, xmin, ymax, xmax = np.asarray(box).round().astype(int)
    cv2.rectangle(canvas, (xmin, ymin), (max(xmax - 1, xmin), max(ymax - 1, ymin)), DRAWN,
                  thickness)
    cv2.putText(canvas, f'{name} {score:.2f}', (xmin + 2, max(ymin + 14, 14)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, DRAWN, 1, cv2.LINE_AA)
  return canvas


def image_jobs(image, out):
  """(input path, output PNG path) pairs of --image and --out."""
  if os.path.isdir(image):
    names = sorted(n for n in os.listdir(image) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
      raise UserError(f'{image}: no images ({", ".join(IMAGE_EXTENSIONS)}) in this folder')
    if os.path.splitext(out)[1]:
      raise UserError(f'--out={out}: with a folder of images, --out is a folder')
    return [(os.path.join(image, n), os.path.join(out, os.path.splitext(n)[0] + '.png'))
            for n in names]
  if not os.path.exists(image):
    raise UserError(f'{image}: no such image file or folder')
  if os.path.isdir(out) or not os.path.splitext(out)[1]:
    out = os.path.join(out, os.path.splitext(os.path.basename(image))[0] + '.png')
  return [(image, out)]


def main(argv=None):
  """The command (module docstring); argv: its arguments, without the program name (default
  `sys.argv[1:]`). Returns the exit code."""
  command_line.parse(FLAGS, argv, USAGE, __doc__.split('\n')[0], required=('image', 'out'))
  if bool(_MODEL.value) == bool(_RUN.value):
    errors.fail('give one of --model and --run' if not _MODEL.value else
                '--model and --run exclude each other: give one', code=2)
  tf_logs.quiet()
  return errors.run_command(lambda: _predict(
      _MODEL.value, _RUN.value, _IMAGE.value, _OUT.value, _JSON.value, _MIN_SCORE.value))


def _predict(model_dir, run_dir, image_flag, out_flag, write_json, min_score):
  """Draws (and with --json lists) the detections of every --image into --out, with the
  detector of --model (`model_dir`) or else --run (`run_dir`)."""
  jobs = image_jobs(image_flag, out_flag)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from click_supervision import api  # pylint: disable=g-import-not-at-top
  from click_supervision import atomic  # pylint: disable=g-import-not-at-top
  from click_supervision.datasets import images as images_lib  # pylint: disable=g-import-not-at-top
  detector = api.Detector.load(model_dir) if model_dir else api.Detector.from_run(run_dir)
  for path, out in jobs:
    image = images_lib.load_image(path)
    found = detector.detect(image)
    with atomic.open_atomic(out) as f:
      Image.fromarray(draw(image, found, min_score)).save(f, format='PNG')
    if write_json:
      atomic.write_json(os.path.splitext(out)[0] + '.json', {'image': path, 'detections': [
          {'class': name, 'box': [round(float(v), 2) for v in box],
           'score': round(float(score), 6)}
          for box, name, score in zip(found['boxes'], found['classes'], found['scores'])]})
    shown = int((found['scores'] >= min_score).sum())
    print(f'{path}: {len(found["scores"])} detections, {shown} drawn -> {out}', flush=True)


if __name__ == '__main__':
  sys.exit(main())
