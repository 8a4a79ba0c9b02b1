"""Tests of the torch-free legacy PyTorch reader on small files written here, byte by byte."""

import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from click_supervision.backbones import torch_pickle


# A tiny protocol-2 pickle writer for the main object. Python's pickler cannot emit the globals
# `torch.FloatStorage` or `torch._utils._rebuild_tensor_v2` without torch importable, so the
# opcodes are written directly (names as in pickletools).
class Global:

  def __init__(self, module, name):
    self.module, self.name = module, name


class Call:
  """`func(*args)` pickled as GLOBAL + args tuple + REDUCE."""

  def __init__(self, func, args):
    self.func, self.args = func, args


class PersistentId:

  def __init__(self, pid):
    self.pid = pid


def _emit(value):
  if isinstance(value, Global):
    return b'c' + f'{value.module}\n{value.name}\n'.encode()  # GLOBAL
  if isinstance(value, Call):
    return _emit(value.func) + _emit(tuple(value.args)) + b'R'  # REDUCE
  if isinstance(value, PersistentId):
    return _emit(value.pid) + b'Q'  # BINPERSID
  if value is None:
    return b'N'
  if value is True or value is False:
    return b'\x88' if value else b'\x89'  # NEWTRUE / NEWFALSE
  if isinstance(value, int):
    return b'J' + struct.pack('<i', value)  # BININT
  if isinstance(value, str):
    data = value.encode()
    return b'X' + struct.pack('<I', len(data)) + data  # BINUNICODE
  if isinstance(value, tuple):
    return b'(' + b''.join(_emit(v) for v in value) + b't'  # MARK ... TUPLE
  if isinstance(value, list):
    return b']' + (b'(' + b''.join(_emit(v) for v in value) + b'e' if value else b'')  # APPENDS
  if isinstance(value, dict):
    # An OrderedDict as the state dicts are: OrderedDict() then SETITEMS.
    items = b''.join(_emit(k) + _emit(v) for k, v in value.items())
    return _emit(Call(Global('collections', 'OrderedDict'), ())) + b'(' + items + b'u'
  raise TypeError(value)


def _pickle_body(value):
  return b'\x80\x02' + _emit(value) + b'.'  # PROTO 2 ... STOP


def _tensor(storage_type, key, numel, offset, size, stride):
  storage = PersistentId(('storage', Global('torch', storage_type), key, 'cpu', numel, None))
  hooks = Call(Global('collections', 'OrderedDict'), ())
  return Call(Global('torch._utils', '_rebuild_tensor_v2'),
              (storage, offset, tuple(size), tuple(stride), False, hooks))


def _write_legacy(path, obj, storages, main_pickle=None):
  """Writes a legacy file. `storages`: list of (key, numpy array) in data order."""
  with open(path, 'wb') as f:
    f.write(pickle.dumps(torch_pickle.MAGIC_NUMBER, protocol=2))
    f.write(pickle.dumps(torch_pickle.PROTOCOL_VERSION, protocol=2))
    f.write(pickle.dumps({'protocol_version': 1001, 'little_endian': True,
                          'type_sizes': {'short': 2, 'int': 4, 'long': 4}}, protocol=2))
    f.write(main_pickle if main_pickle is not None else _pickle_body(obj))
    f.write(pickle.dumps([key for key, _ in storages], protocol=2))
    for _, array in storages:
      f.write(struct.pack('<q', array.size))
      f.write(array.astype(array.dtype.newbyteorder('<')).tobytes())


@pytest.fixture
def small_file(tmp_path):
  """A state dict with a non-contiguous kernel, a shared storage with an offset, int64 scalar."""
  # Kernel [O=2, I=3, H=2, W=2] stored HWIO: memory index = ((h * 2 + w) * 3 + i) * 2 + o.
  hwio = np.arange(24, dtype=np.float32).reshape(2, 2, 3, 2) * 0.5 - 3
  shared = np.array([10, 11, 12, 13, 14, 15, 16], np.float32)
  counter = np.array([7], np.int64)
  obj = {
      'conv.weight': _tensor('FloatStorage', '100', 24, 0, (2, 3, 2, 2), (1, 2, 12, 6)),
      'bn.weight': _tensor('FloatStorage', '200', 7, 0, (3,), (1,)),
      'bn.bias': _tensor('FloatStorage', '200', 7, 3, (2, 2), (2, 1)),
      'bn.num_batches_tracked': _tensor('LongStorage', '300', 1, 0, (), ()),
  }
  path = tmp_path / 'small.pth'
  _write_legacy(path, obj, [('100', hwio), ('200', shared), ('300', counter)])
  expected = {
      'conv.weight': hwio.transpose(3, 2, 0, 1),
      'bn.weight': shared[:3],
      'bn.bias': shared[3:7].reshape(2, 2),
      'bn.num_batches_tracked': np.array(7, np.int64),
  }
  return path, expected


def test_reads_small_file_exactly(small_file):
  path, expected = small_file
  state = torch_pickle.load_legacy_state_dict(path)
  assert list(state) == list(expected)
  for name, want in expected.items():
    got = state[name]
    assert got.dtype == want.dtype, name
    assert got.shape == want.shape, name
    assert got.flags['C_CONTIGUOUS'], name
    np.testing.assert_array_equal(got, want, err_msg=name)
  # Hand check of one strided element: O=1, I=2, H=1, W=0 is memory ((1*2+0)*3+2)*2+1 = 17.
  assert state['conv.weight'][1, 2, 1, 0] == 17 * 0.5 - 3


def test_arrays_are_independent_copies(small_file):
  path, _ = small_file
  state = torch_pickle.load_legacy_state_dict(path)
  state['bn.weight'][:] = 0
  # Shared storage, but copies: the other tensor keeps its values.
  np.testing.assert_array_equal(state['bn.bias'], [[13, 14], [15, 16]])


def test_zip_format_is_refused_with_file_name(tmp_path):
  path = tmp_path / 'new_style.pth'
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', b'\x80\x02}q\x00.')
  with pytest.raises(ValueError, match='zip-format') as info:
    torch_pickle.load_legacy_state_dict(path)
  assert 'new_style.pth' in str(info.value)


@pytest.mark.parametrize('content', [b'', b'not a pickle at all', pickle.dumps(12345, protocol=2)])
def test_malformed_file_is_refused(tmp_path, content):
  path = tmp_path / 'bad.pth'
  path.write_bytes(content)
  with pytest.raises(ValueError, match='bad.pth'):
    torch_pickle.load_legacy_state_dict(path)


def test_truncated_data_is_refused(small_file, tmp_path):
  path, _ = small_file
  cut = tmp_path / 'cut.pth'
  cut.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(ValueError, match='cut.pth.*truncated'):
    torch_pickle.load_legacy_state_dict(cut)


def test_out_of_bounds_strides_are_refused(tmp_path):
  # A stride that would read past the 4-element storage must not reach as_strided.
  obj = {'w': _tensor('FloatStorage', '1', 4, 0, (2, 2), (100, 1))}
  path = tmp_path / 'oob.pth'
  _write_legacy(path, obj, [('1', np.zeros(4, np.float32))])
  with pytest.raises(ValueError, match='oob.pth.*past the end'):
    torch_pickle.load_legacy_state_dict(path)


@pytest.mark.parametrize('module,name', [('os', 'system'), ('posix', 'system'),
                                         ('builtins', 'eval'), ('torch', 'load')])
def test_unexpected_global_is_refused_not_run(tmp_path, module, name):
  marker = tmp_path / 'pwned'
  # The main object is `module.name('touch <marker>')`: running it would create the marker file.
  payload = _pickle_body(Call(Global(module, name), (f'touch {marker}',)))
  path = tmp_path / 'evil.pth'
  _write_legacy(path, None, [], main_pickle=payload)
  with pytest.raises(ValueError, match=f'evil.pth.*refusing.*{module}.{name}'):
    torch_pickle.load_legacy_state_dict(path)
  assert not os.path.exists(marker)


def test_non_dict_object_is_not_a_state_dict(tmp_path):
  path = tmp_path / 'list.pth'
  _write_legacy(path, [1, 2], [])
  with pytest.raises(ValueError, match='not a state dict'):
    torch_pickle.load_legacy_state_dict(path)
  assert torch_pickle.load_legacy(path) == [1, 2]


def _big_int_file(path, offset, size, stride):
  """A one-tensor file whose ints may pass BININT's 32 bits (the `_emit` writer's only int).

  The tensor is written with distinct small placeholders, whose BININT opcodes are then replaced
  by LONG1 opcodes carrying the real values.
  """
  values = [offset, *size, *stride]
  placeholders = [987650 + i for i in range(len(values))]
  offset_p, *rest = placeholders
  size_p, stride_p = tuple(rest[:len(size)]), tuple(rest[len(size):])
  body = _pickle_body({'w': _tensor('FloatStorage', '1', 4, offset_p, size_p, stride_p)})
  for placeholder, value in zip(placeholders, values):
    data = value.to_bytes((value.bit_length() + 8) // 8, 'little', signed=True)
    old = b'J' + struct.pack('<i', placeholder)
    assert body.count(old) == 1
    body = body.replace(old, b'\x8a' + bytes([len(data)]) + data)  # LONG1
  _write_legacy(path, None, [('1', np.arange(4, dtype=np.float32))], main_pickle=body)


@pytest.mark.parametrize('size, stride', [
    ((2 ** 31, 2 ** 31), (0, 0)),  # 16 EiB of float32 from 4 stored elements.
    ((2 ** 30, 4), (0, 1)),  # 16 GiB: one row repeated.
    ((2, 3), (1, 1)),  # Overlapping rows, in bounds, but more elements than the storage.
])
def test_overlapping_views_are_refused_before_allocating(tmp_path, size, stride):
  path = tmp_path / 'stride0.pth'
  _big_int_file(path, 0, size, stride)
  with pytest.raises(ValueError, match=r'stride0.pth.*elements but its storage .* holds 4'):
    torch_pickle.load_legacy_state_dict(path)


@pytest.mark.parametrize('offset, size, stride, match', [
    (2 ** 62, (1,), (1,), 'past the end'),  # Offset far past the storage.
    (3, (2,), (1,), 'past the end'),  # Runs one element past the end.
    (0, (0, 2 ** 63), (1, 1), 'not a valid array shape'),  # No elements, but no array either.
])
def test_offsets_and_sizes_past_the_storage_are_refused(tmp_path, offset, size, stride, match):
  path = tmp_path / 'far.pth'
  _big_int_file(path, offset, size, stride)
  with pytest.raises(ValueError, match=f'far.pth.*{match}'):
    torch_pickle.load_legacy_state_dict(path)


def test_stride_of_a_size_one_dimension_is_ignored(tmp_path):
  # PyTorch may leave any stride on a dimension of size 1; a huge one must neither fail nor matter.
  path = tmp_path / 'unit.pth'
  _big_int_file(path, 1, (1, 3), (2 ** 70, 1))
  np.testing.assert_array_equal(torch_pickle.load_legacy_state_dict(path)['w'], [[1, 2, 3]])


def test_many_tensors_over_one_storage_are_refused(tmp_path):
  # Each view is in bounds, but together they would multiply the stored bytes.
  obj = {f'w{i}': _tensor('FloatStorage', '1', 4, 0, (4,), (1,)) for i in range(5)}
  path = tmp_path / 'many.pth'
  _write_legacy(path, obj, [('1', np.zeros(4, np.float32))])
  with pytest.raises(ValueError, match='many.pth.*more than 4 times the 16 bytes'):
    torch_pickle.load_legacy_state_dict(path)
  # Tied weights (two tensors over one storage) stay readable.
  obj = {'embedding': _tensor('FloatStorage', '1', 4, 0, (2, 2), (2, 1)),
         'head': _tensor('FloatStorage', '1', 4, 0, (2, 2), (1, 2))}
  _write_legacy(path, obj, [('1', np.arange(4, dtype=np.float32))])
  state = torch_pickle.load_legacy_state_dict(path)
  np.testing.assert_array_equal(state['head'], state['embedding'].T)
