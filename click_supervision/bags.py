"""Images as MIL bags: proposals with their objectness and RoI features, one image at a time.

The learner (`mil`) and, later, the detector read images only through a bag source, so where
features come from is decided here:

  TrunkMapBags     pools every proposal's feature from the cached trunk map on demand
                   (`precompute.compute_trunk_maps`); nothing per proposal is stored.

A source can keep the bags of one whole pass in memory (`remember`) when they fit a budget:
MIL visits every image once per iteration, and pooling the features again each time is a third
of its time on the embedded default; the remembered bags are the same arrays, so the results are.

Other sources (the tests' toy sources) subclass `_BagSource`. Bags come in cache order, with the
whole-image box added when the proposals lack it: the paper's initialisation starts from it, and an image without any proposal
(a blank photo) is still a bag with one member instead of a crash.
"""

import dataclasses

import numpy as np

from click_supervision import cache as cache_lib


@dataclasses.dataclass
class Bag:
  """One image's candidates.

  Attributes:
    image_id: str.
    boxes: float32 [P, 4] `[ymin, xmin, ymax, xmax]` pixels, P >= 1.
    objectness: float32 [P] raw objectness O (the proposal method's score).
    features: float32 [P, D] RoI features, L2-normalised per row.
  """
  image_id: str
  boxes: np.ndarray
  objectness: np.ndarray
  features: np.ndarray


def with_whole_image(boxes, scores, height, width):
  """Appends the whole-image box `[0, 0, height, width]` unless it is already a proposal.

  Its objectness is the image's lowest (0 when there is no other box), so it never wins on O
  and per-image min-max normalisation of O is unchanged.

  Returns:
    (boxes float32 [P', 4], scores float32 [P']).
  """
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  scores = np.asarray(scores, np.float32).reshape(-1)
  whole = np.array([0, 0, height, width], np.float32)
  if len(boxes) and np.any(np.all(np.abs(boxes - whole) < 1e-3, axis=1)):
    return boxes, scores
  low = scores.min() if len(scores) else 0.0
  return (np.concatenate([boxes, whole[None]]),
          np.concatenate([scores, np.array([low], np.float32)]))


def mirror_boxes(boxes, width):
  """Boxes float [N, 4] of an image `width` px wide, in the horizontally mirrored image:
  x -> width - x, so [ymin, xmin, ymax, xmax] -> [ymin, width - xmax, ymax, width - xmin]
  (end-exclusive pixel edges map onto each other exactly)."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  return np.stack([boxes[:, 0], width - boxes[:, 3], boxes[:, 2], width - boxes[:, 1]], axis=1)


def l2_normalize(features):
  """Rows of float [P, D] scaled to unit L2 norm (all-zero rows stay zero): float32 [P, D]."""
  features = np.asarray(features, np.float32)
  return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


class _BagSource:
  """Shared reading logic: the proposals shard in memory follows the feature shard's images."""

  def __init__(self, records, proposals, features):
    self._sizes = {r['image_id']: (r['height'], r['width']) for r in records}
    self._paths = {r['image_id']: r['path'] for r in records}
    self.proposals = proposals
    self.features = features
    self.image_ids = [i for i in features.image_ids if i in self._sizes]
    self.memory_budget = 0
    self._remembered = None   # The bags of the last whole pass, when they fit.
    self._too_large = False   # A whole pass did not fit: do not try again.

  def remember(self, budget_bytes):
    """Keeps the bags of the next whole pass (`iter()` without `image_ids`) in memory if they
    fit in `budget_bytes`, and serves later whole passes from there; 0 forgets them. The kept
    arrays are made read-only, so a reader that would change them fails loudly instead of
    changing what the next pass sees."""
    self.memory_budget = int(budget_bytes)
    if not self.memory_budget:
      self._remembered, self._too_large = None, False

  def _bag(self, image_id, proposal_data, feature_data):
    raise NotImplementedError

  def __iter__(self):
    return self.iter()

  def proposals_of(self, image_id):
    """(boxes float32 [P, 4] with the whole-image box, objectness float32 [P]) of one image,
    read through a one-shard memo like `TrunkMapBags.image`."""
    proposal_data = self._read_memo('_proposals_memo', self.proposals, image_id)
    return self._boxes(image_id, proposal_data[image_id])

  def _read_memo(self, attribute, cache, image_id):
    shard = cache.shard_of(image_id)
    memo = getattr(self, attribute, None)
    if memo is None or memo[0] != shard:
      per_image = cache.read_shard(shard)
      if per_image is None:
        raise RuntimeError(f'{cache.shard_path(shard)} is missing or corrupt')
      memo = (shard, per_image)
      setattr(self, attribute, memo)
    return memo[1]

  def size(self, image_id):
    """(height, width) of an image in pixels."""
    return self._sizes[image_id]

  def path(self, image_id):
    """The image file."""
    return self._paths[image_id]

  def subset(self, image_ids):
    """The same source over only `image_ids` (kept in cache order)."""
    import copy  # pylint: disable=g-import-not-at-top
    wanted = set(image_ids)
    view = copy.copy(self)
    view.image_ids = [i for i in self.image_ids if i in wanted]
    # pylint: disable=protected-access
    view.memory_budget, view._remembered, view._too_large = 0, None, False
    view.key = _key(self.key, view.image_ids)
    return view

  def iter(self, image_ids=None):
    """Yields `Bag`s in cache order, one feature shard and one proposals shard in memory.

    Args:
      image_ids: optional set; other images are skipped without reading their shards.
    Raises:
      RuntimeError naming a shard that is missing or corrupt (run the stage first).
    """
    if image_ids is None and self._remembered is not None:
      yield from self._remembered
      return
    keep = image_ids is None and self.memory_budget > 0 and not self._too_large
    kept, size = [], 0
    for bag in self._read(image_ids):
      if keep:
        size += bag.boxes.nbytes + bag.objectness.nbytes + bag.features.nbytes
        if size > self.memory_budget:
          keep, kept, self._too_large = False, [], True
        else:
          for array in (bag.boxes, bag.objectness, bag.features):
            array.setflags(write=False)
          kept.append(bag)
      yield bag
    if keep:
      self._remembered = kept

  def _read(self, image_ids):
    wanted = set(self.image_ids) if image_ids is None else set(image_ids) & set(self.image_ids)
    proposal_shard, proposal_data = None, None
    for shard in range(self.features.num_shards):
      ids = [i for i in self.features.shard_image_ids(shard) if i in wanted]
      if not ids:
        continue
      per_image = self.features.read_shard(shard)
      if per_image is None:
        raise RuntimeError(f'{self.features.shard_path(shard)} is missing or corrupt')
      for image_id in ids:
        if self.proposals.shard_of(image_id) != proposal_shard:
          proposal_shard = self.proposals.shard_of(image_id)
          proposal_data = self.proposals.read_shard(proposal_shard)
          if proposal_data is None:
            raise RuntimeError(f'{self.proposals.shard_path(proposal_shard)} is missing or '
                               f'corrupt')
        yield self._bag(image_id, proposal_data[image_id], per_image[image_id])

  def _boxes(self, image_id, proposal_data):
    height, width = self._sizes[image_id]
    return with_whole_image(proposal_data['boxes'], proposal_data['scores'], height, width)


class TrunkMapBags(_BagSource):
  """Bags whose features are pooled from the trunk-map cache on demand.

  Args:
    records: the dataset's records (image sizes for the whole-image box).
    proposals: filled proposals `cache.ShardedCache`.
    trunk_maps: filled trunk-map `cache.ShardedCache` (`precompute.trunk_maps_cache`).
    pool_size: RoI grid side.
    context_scale: 0 or the context grid's enlargement (`features.MapPooler`).
    mirrored_maps: optional cache of the mirrored images' maps (the detector's flips).
    cut_maps, mirrored_cut_maps: optional caches of the maps where the trunk is cut
      (`precompute.trunk_maps_cache(part='lower')`), which the detector trains from.
    scales: optional dict short side -> `TrunkMapBags` of the same images with maps of the
      images prepared at that short side (the detector's multi-scale training and test).
  """

  def __init__(self, records, proposals, trunk_maps, pool_size=3, context_scale=0.0,
               mirrored_maps=None, cut_maps=None, mirrored_cut_maps=None, scales=None):
    super().__init__(records, proposals, trunk_maps)
    self.pool_size = pool_size
    self.context_scale = context_scale
    self.mirrored_maps = mirrored_maps
    self.cut_maps = cut_maps
    self.mirrored_cut_maps = mirrored_cut_maps
    self.scales = dict(scales or {})
    self._poolers = {}
    self.key = _key('maps', proposals.key, trunk_maps.key, pool_size, context_scale)

  def _pooler(self, geometry):
    from click_supervision import features as features_lib  # pylint: disable=g-import-not-at-top
    stride, offset = (float(v) for v in geometry)
    if (stride, offset) not in self._poolers:
      self._poolers[(stride, offset)] = features_lib.MapPooler(
          int(stride), offset, pool_size=self.pool_size, context_scale=self.context_scale)
    return self._poolers[(stride, offset)]

  def _bag(self, image_id, proposal_data, feature_data):
    boxes, scores = self._boxes(image_id, proposal_data)
    return Bag(image_id, boxes, scores, self.pool(feature_data, boxes))

  def pool(self, feature_data, boxes):
    """L2-normalised RoI features float32 [N, D] of any boxes float [N, 4] (image pixels) from
    one image's trunk-map entry (`map`, `factors`, `geometry`)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    pooled = self._pooler(feature_data['geometry'])(feature_data['map'],
                                                    boxes * feature_data['factors'])
    return l2_normalize(pooled)

  def image(self, image_id, mirrored=False):
    """One image's proposals and trunk-map entry, for readers that visit images out of cache
    order (the detector's shuffled batches): the last shard of each cache stays in memory, so
    images of one shard visited together cost one read.

    Args:
      image_id: str.
      mirrored: the horizontally mirrored image: mirrored proposals and the map of the mirrored
        image (needs `mirrored_maps`).
    Returns:
      (boxes float32 [P, 4] with the whole-image box, objectness float32 [P], the trunk-map
      entry: dict with `map`, `factors`, `geometry`).
    Raises:
      RuntimeError naming a shard that is missing or corrupt.
    """
    if mirrored and self.mirrored_maps is None:
      raise ValueError('this bag source has no mirrored trunk maps')
    maps = (self._read_memo('_mirrored_memo', self.mirrored_maps, image_id) if mirrored else
            self._read_memo('_maps_memo', self.features, image_id))
    proposal_data = self._read_memo('_proposals_memo', self.proposals, image_id)
    boxes, scores = self._boxes(image_id, proposal_data[image_id])
    if mirrored:
      boxes = mirror_boxes(boxes, self._sizes[image_id][1])
    return boxes, scores, maps[image_id]


def _key(*parts):
  return cache_lib.fingerprint(list(parts))
