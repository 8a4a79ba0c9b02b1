"""Shared test fixtures: where the real sample data lives, and small helpers."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data_dir():
  """`$CLICKSUP_SHARED_DATA`, else `../shared/data` beside the repository."""
  return os.environ.get('CLICKSUP_SHARED_DATA') or os.path.join(REPO, '..', 'shared', 'data')


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """Longest first: tests marked `slow` run before the others, the longest (its `seconds`)
  first. README runs the suite on two workers (`-n 2 --dist worksteal`: an idle worker takes
  tests queued on the busy one); with the 3-minute default run started last, one worker ran it
  alone at the end. Run one at a time, only the order changes."""
  def longest_first(item):
    marker = item.get_closest_marker('slow')
    return (marker is None, -(marker.kwargs.get('seconds', 0) if marker else 0))
  items.sort(key=longest_first)  # Stable: the rest keep their order.


@pytest.fixture(scope='session')
def voc_dev_root():
  """The real VOC2007 sample (VOCdevkit/VOC2007 layout); skips when it is absent."""
  root = os.path.join(shared_data_dir(), 'voc2007-dev', 'VOCdevkit', 'VOC2007')
  if not os.path.isdir(root):
    pytest.skip(f'real VOC sample not found at {root} (set CLICKSUP_SHARED_DATA)')
  return os.path.abspath(root)


@pytest.fixture(scope='session')
def tinycoco_dir():
  """The real tiny COCO sample; skips when it is absent."""
  root = os.path.join(shared_data_dir(), 'tinycoco')
  if not os.path.isdir(root):
    pytest.skip(f'real COCO sample not found at {root} (set CLICKSUP_SHARED_DATA)')
  return os.path.abspath(root)


@pytest.fixture(scope='session')
def smoke_cache(tmp_path_factory):
  """One cache folder for the tests that run the smoke set through the driver and only read its
  caches (the generated images, proposals and trunk maps are deterministic): the first such test
  fills it, the others reuse it. Tests about how caches are made, counted or damaged keep their
  own folder."""
  return tmp_path_factory.mktemp('smoke_cache')
