"""Appearance models of the MIL learner: the trainers (SVM, LDA), the models they give, and the
bounded negative pools they train against.

One interface, so re-localisation does not care what scores the boxes:

  trainer.fit(positives, negatives, iteration) -> scorer
  scorer.scores(bag, fold, classes)            -> float32 [P, len(classes)] raw scores

`LinearModels` is the scorer of both trainers (one linear model per (fold, class)); the detector
of the deep stage is one more scorer with the same `scores` method.

Negatives are keyed by `(image number, proposal index)`, so a proposal enters a class's pool at
most once however often it is mined, and every pool holds at most `capacity` rows: memory is
bounded by the pools, not by the number of images.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class LinearModels:
  """One linear model per (fold, class): score = features @ w + b.

  Attributes:
    weights: float32 [K, C, D].
    biases: float32 [K, C].
  """
  weights: np.ndarray
  biases: np.ndarray

  def scores(self, bag, fold, classes):
    """Raw scores of every proposal of `bag` under fold `fold`'s models of `classes`.

    Args:
      bag: `bags.Bag` (uses `features` float32 [P, D]).
      fold: int, the fold whose models score (0 for `mean()`).
      classes: int sequence.
    Returns:
      float32 [P, len(classes)].
    """
    classes = np.asarray(classes, np.int64)
    return bag.features @ self.weights[fold, classes].T + self.biases[fold, classes]

  def blend(self, previous, momentum):
    """beta x `previous` + (1 - beta) x self (`MilConfig.model_momentum`); self when previous
    is None or beta is 0."""
    if previous is None or not momentum:
      return self
    return LinearModels(momentum * previous.weights + (1 - momentum) * self.weights,
                        momentum * previous.biases + (1 - momentum) * self.biases)

  def mean(self):
    """The average of the folds' models (K = 1): the model that mines hard negatives."""
    return LinearModels(self.weights.mean(axis=0, keepdims=True),
                        self.biases.mean(axis=0, keepdims=True))


class KeyedPool:
  """A bounded set of feature rows with unique keys, kept by score (highest first).

  Args:
    dim: feature length D.
    capacity: most rows kept.
  """

  def __init__(self, dim, capacity):
    self.capacity = int(capacity)
    self.features = np.zeros((0, dim), np.float32)
    self.keys = np.zeros((0, 2), np.int64)
    self.scores = np.zeros(0, np.float64)
    self._pending = []
    self._pending_rows = 0

  def __len__(self):
    self._flush()
    return len(self.keys)

  def add(self, features, keys, scores):
    """Offers rows; the pool keeps the `capacity` best-scoring distinct keys.

    Args:
      features: float32 [n, D].
      keys: int64 [n, 2] `(image number, proposal index)`.
      scores: float [n]; ties are broken by key, so the result does not depend on the order in
        which images are offered.
    """
    if not len(keys):
      return
    self._pending.append((np.asarray(features, np.float32), np.asarray(keys, np.int64),
                          np.asarray(scores, np.float64)))
    self._pending_rows += len(keys)
    if self._pending_rows > self.capacity:  # Compact in batches: memory stays O(capacity).
      self._flush()

  def _flush(self):
    if not self._pending:
      return
    features = np.concatenate([self.features] + [p[0] for p in self._pending])
    keys = np.concatenate([self.keys] + [p[1] for p in self._pending])
    scores = np.concatenate([self.scores] + [p[2] for p in self._pending])
    self._pending, self._pending_rows = [], 0
    # Best score first, then by key; keep the first row of each key.
    order = np.lexsort((keys[:, 1], keys[:, 0], -scores))
    _, first = np.unique(keys[order], axis=0, return_index=True)
    keep = order[np.sort(first)][:self.capacity]
    self.features, self.keys, self.scores = features[keep], keys[keep], scores[keep]

  def rows(self):
    """(features float32 [M, D], keys int64 [M, 2], scores float64 [M]), best first."""
    self._flush()
    return self.features, self.keys, self.scores

  def rescore(self, scores):
    """Replaces the scores of the rows (in `rows()` order) and re-sorts."""
    self._flush()
    self.scores = np.asarray(scores, np.float64)
    order = np.lexsort((self.keys[:, 1], self.keys[:, 0], -self.scores))
    self.features, self.keys, self.scores = (self.features[order], self.keys[order],
                                             self.scores[order])

  def truncate(self, count):
    self._flush()
    self.features, self.keys, self.scores = (self.features[:count], self.keys[:count],
                                             self.scores[:count])

  def state(self):
    self._flush()
    return {'features': self.features, 'keys': self.keys, 'scores': self.scores}

  @classmethod
  def from_state(cls, state, capacity):
    pool = cls(state['features'].shape[1], capacity)
    pool.features = state['features'].astype(np.float32)
    pool.keys = state['keys'].astype(np.int64)
    pool.scores = state['scores'].astype(np.float64)
    return pool


def mine_hard_negatives(pools, mean_models, hard_margin, begin, keep_easy=False):
  """Hard-negative mining of one iteration over the classes' pools.

  Call with `begin=True` before offering the iteration's candidates (the pools' rows are
  rescored under the new mean model and compete with the candidates), then offer candidates
  with `KeyedPool.add` (scores under the same model), then call with `begin=False`: each pool
  keeps its rows scoring above `hard_margin`, but at least 10 % of its capacity (the hardest);
  with `keep_easy`, every row while the pool has room (the hardest first when it has not).

  Args:
    pools: list over classes of `KeyedPool`.
    mean_models: `LinearModels` with K = 1.
    hard_margin: float.
    begin: see above.
  """
  for c, pool in enumerate(pools):
    features, _, _ = pool.rows()
    if begin:
      pool.rescore(features @ mean_models.weights[0, c] + mean_models.biases[0, c])
    elif not keep_easy:
      _, _, scores = pool.rows()
      hard = int((scores > hard_margin).sum())
      pool.truncate(min(max(hard, pool.capacity // 10), pool.capacity))


def hardest_per_image(scores, hard_margin, limit=50):
  """Indices of one image's proposals scoring above `hard_margin` under a class's mean model,
  the hardest first, at most `limit` (so one cluttered image does not fill the pool): int [n]."""
  hard = np.flatnonzero(scores > hard_margin)
  if len(hard) > limit:
    hard = hard[np.argsort(-scores[hard], kind='stable')[:limit]]
  return hard


def outside_fold(folds, fold, num_folds):
  """bool [N]: the rows a fold's model trains on (all rows with one fold)."""
  folds = np.asarray(folds)
  return folds != fold if num_folds > 1 else np.ones(len(folds), bool)


@dataclasses.dataclass
class Positives:
  """The current selections' features, by class.

  Attributes:
    features: list over classes of float32 [N_c, D].
    folds: list over classes of int [N_c], each positive's fold.
    near_misses: optional list over classes of (features float32 [M, D], folds int [M]): extra
      negatives from the positive images (`MilConfig.near_miss_negatives`), held out of their
      own fold's model like the positives.
  """
  features: list
  folds: list
  near_misses: list | None = None


def fit_svms(features, labels, masks, c=1.0, tol=1e-3, max_newton=50, max_cg=200):
  """Several linear SVMs on rows of one matrix, solved together: one per column of `masks`.

  Each model k minimises the objective liblinear's L2-regularised squared-hinge solver does, with
  sklearn's `class_weight='balanced'` over its own rows and the bias as an extra, regularised
  feature of value 1 (`intercept_scaling=1`):

    0.5 |[w, b]|^2 + c sum_i weight_i max(0, 1 - y_i (w . x_i + b))^2,

  by Newton's method with conjugate gradients and a backtracking line search. The K fold models
  of a class share almost all their rows (the negatives), so every Hessian-vector product of all
  K models is two matrix products with the shared matrix, not K passes over it; and there is no
  random coordinate order (liblinear's dual solver draws one from C's process-wide `rand()`,
  which SVMs fitted in parallel threads reseed and consume at once: identical runs differed by up
  to 2e-5 in score). Measured against liblinear on MIL's problems: BUILD_NOTES.

  Args:
    features: float32 [N, D].
    labels: float [N], +1 or -1.
    masks: bool [N, K], the rows model k trains on.
    c: SVM C.
    tol: stop when every model's gradient norm is below `tol` times its initial one.
    max_newton, max_cg: iteration caps.
  Returns:
    (weights float32 [K, D], biases float32 [K]); a model without positive or negative rows is
    zero.
  """
  features = np.asarray(features, np.float32)
  n, dim = features.shape
  x = np.concatenate([features, np.ones((n, 1), np.float32)], axis=1)
  y = np.asarray(labels, np.float32)[:, None]
  masks = np.asarray(masks, bool)
  positive, negative = masks & (y > 0), masks & (y < 0)
  num_positive, num_negative = positive.sum(axis=0), negative.sum(axis=0)
  valid = (num_positive > 0) & (num_negative > 0)
  total = num_positive + num_negative
  with np.errstate(divide='ignore', invalid='ignore'):
    weight = (np.where(positive, total / (2.0 * num_positive), 0.0) +
              np.where(negative, total / (2.0 * num_negative), 0.0))
  weight = np.where(valid, c * weight, 0.0).astype(np.float32)  # [N, K]

  def objective(w):
    margin = np.maximum(1.0 - y * (x @ w), 0.0) * (weight > 0)
    loss = 0.5 * np.einsum('dk,dk->k', w, w) + np.einsum('nk,nk,nk->k', weight, margin, margin)
    gradient = w - 2.0 * (x.T @ (weight * margin * y))
    return loss, gradient, margin > 0

  w = np.zeros((dim + 1, masks.shape[1]), np.float32)
  loss, gradient, active = objective(w)
  initial = np.linalg.norm(gradient, axis=0)
  for _ in range(max_newton):
    norm = np.linalg.norm(gradient, axis=0)
    done = (norm <= tol * initial) | ~valid
    if done.all():
      break
    # Conjugate gradients on H s = -g, H = I + 2 X_a^T diag(weight) X_a over the active rows.
    curvature = weight * active
    step = np.zeros_like(w)
    residual = np.where(done, 0.0, -gradient).astype(np.float32)
    direction = residual.copy()
    rr = np.einsum('dk,dk->k', residual, residual)
    for _ in range(max_cg):
      product = direction + 2.0 * (x.T @ (curvature * (x @ direction)))
      alpha = rr / np.maximum(np.einsum('dk,dk->k', direction, product), 1e-30)
      step += alpha * direction
      residual -= alpha * product
      rr_next = np.einsum('dk,dk->k', residual, residual)
      if np.all(np.sqrt(rr_next) <= 0.1 * norm):  # Inexact Newton: a tenth of |g| suffices.
        break
      direction = residual + (rr_next / np.maximum(rr, 1e-30)) * direction
      rr = rr_next
    # Backtracking (Armijo) per model.
    length = np.ones(w.shape[1], np.float32)
    slope = np.einsum('dk,dk->k', gradient, step)
    for _ in range(30):
      trial_loss, _, _ = objective(w + length * step)
      accepted = (trial_loss <= loss + 0.01 * length * slope) | done
      if accepted.all():
        break
      length = np.where(accepted, length, length / 2)
    w = w + np.where(done, 0.0, length) * step
    loss, gradient, active = objective(w)
  w = np.where(valid, w, 0.0)
  return w[:-1].T.copy(), w[-1].copy()


class SvmTrainer:
  """A linear SVM per (fold, class) against the class's pool of (hard) negatives (the paper).

  Args:
    num_folds: K.
    num_classes: C.
    c: SVM C (features are L2-normalised).
    tol: solver tolerance (`fit_svms`).
  """
  uses_mined_negatives = True

  def __init__(self, num_folds, num_classes, c=1.0, tol=1e-3):
    self.num_folds, self.num_classes = num_folds, num_classes
    self.c, self.tol = c, tol

  def fit(self, positives, negatives, progress=None):
    """Trains every (fold, class) model, a class's K fold models together (`fit_svms`).

    Model (k, c) trains on class c's positives outside fold k (all of them with one fold)
    against class c's negative pool (plus its near misses outside fold k).

    Args:
      positives: `Positives`.
      negatives: list over classes of `KeyedPool`.
      progress: optional callable(done, total) after each class.
    Returns:
      `LinearModels`; a (fold, class) without positives or negatives gets a zero model.
    """
    k = self.num_folds
    dim = positives.features[0].shape[1]
    weights = np.zeros((k, self.num_classes, dim), np.float32)
    biases = np.zeros((k, self.num_classes), np.float32)
    for c in range(self.num_classes):
      parts = [(positives.features[c], np.ones(len(positives.folds[c])),
                np.stack([outside_fold(positives.folds[c], f, k) for f in range(k)], axis=1))]
      pool = negatives[c].rows()[0]
      parts.append((pool, -np.ones(len(pool)), np.ones((len(pool), k), bool)))
      if positives.near_misses is not None and len(positives.near_misses[c][0]):
        near, near_folds = positives.near_misses[c]
        parts.append((near, -np.ones(len(near)),
                      np.stack([outside_fold(near_folds, f, k) for f in range(k)], axis=1)))
      weights[:, c], biases[:, c] = fit_svms(
          np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
          np.concatenate([p[2] for p in parts]), c=self.c, tol=self.tol)
      if progress:
        progress(c + 1, self.num_classes)
    return LinearModels(weights, biases)


def background_statistics(samples):
  """The shared background model of the LDA trainer.

  Args:
    samples: float32 [N, D] random proposals of all images.
  Returns:
    precision float64 [D, D]: the inverse of the Ledoit-Wolf shrunk covariance (shrinkage chosen
    by the Ledoit-Wolf formula; with N of a few thousand and D in the thousands the raw
    covariance is singular or nearly so).
  """
  from sklearn.covariance import LedoitWolf  # pylint: disable=g-import-not-at-top
  return LedoitWolf().fit(samples.astype(np.float64)).precision_


class LdaTrainer:
  """Per-(fold, class) LDA in closed form with one shared background covariance (Hariharan et
  al., ECCV 2012): w = P (mu_pos - mu_neg), b = -w . (mu_pos + mu_neg) / 2, P the background
  precision and mu_neg the mean of the class's random negatives (averaged with the mean of its
  near misses outside the fold, when there are any). No mining.

  Args:
    num_folds, num_classes: K and C.
    precision: float64 [D, D] (`background_statistics`).
    negative_means: float64 [C, D].
  """
  uses_mined_negatives = False

  def __init__(self, num_folds, num_classes, precision, negative_means):
    self.num_folds, self.num_classes = num_folds, num_classes
    self.precision, self.negative_means = precision, negative_means

  def fit(self, positives, negatives=None, progress=None):
    """Same arguments and return as `SvmTrainer.fit` (`negatives` unused)."""
    del negatives
    k = self.num_folds
    dim = positives.features[0].shape[1]
    weights = np.zeros((k, self.num_classes, dim), np.float32)
    biases = np.zeros((k, self.num_classes), np.float32)
    for c in range(self.num_classes):
      for fold in range(k):
        train = outside_fold(positives.folds[c], fold, k)
        if not train.any():
          continue
        mu_pos = positives.features[c][train].mean(axis=0).astype(np.float64)
        mu_neg = self.negative_means[c]
        if positives.near_misses is not None:
          near_features, near_folds = positives.near_misses[c]
          near = outside_fold(near_folds, fold, k)
          if near.any():
            mu_neg = (mu_neg + near_features[near].mean(axis=0)) / 2
        w = self.precision @ (mu_pos - mu_neg)
        weights[fold, c] = w
        biases[fold, c] = -w @ (mu_pos + mu_neg) / 2
      if progress:
        progress(c + 1, self.num_classes)
    return LinearModels(weights, biases)
