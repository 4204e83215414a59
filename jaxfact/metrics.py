"""Held-out metrics of embeddings learned from interactions.

* :func:`rmse`, :func:`mae`: rating-prediction error (Koren et al. 2009 report RMSE).
* :func:`precision_at_k`, :func:`ndcg_at_k`: top-k ranking quality for implicit feedback, each user's
  training items excluded from the ranking, computed for a batch of users at a time.

Held-out splits come from :func:`jaxfact.train_test_split` (:mod:`jaxfact.interactions`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxfact import _checks

__all__ = ["rmse", "mae", "precision_at_k", "ndcg_at_k"]


def rmse(predictions: Any, targets: Any, *, checks: bool = False) -> jax.Array:
    """Root mean squared error ``sqrt(mean((predictions - targets)^2))``.

    ``predictions`` and ``targets`` must be finite (checked when concrete; under an outer ``jit``
    staged with ``jax.experimental.checkify`` when ``checks`` is true).

    Example:

      >>> print(round(float(rmse(jnp.array([3.0, 4.0]), jnp.array([4.0, 4.0]))), 4))
      0.7071
    """
    p, t = _pair("rmse", predictions, targets, checks)
    return jnp.sqrt(jnp.mean((p - t) ** 2))


def mae(predictions: Any, targets: Any, *, checks: bool = False) -> jax.Array:
    """Mean absolute error ``mean(|predictions - targets|)``; ``checks`` as in :func:`rmse`.

    Example:

      >>> print(round(float(mae(jnp.array([3.0, 4.0]), jnp.array([4.0, 4.0]))), 4))
      0.5
    """
    p, t = _pair("mae", predictions, targets, checks)
    return jnp.mean(jnp.abs(p - t))


def precision_at_k(user_factors: Any, item_factors: Any, test: Any, *, k: int = 10,
                   exclude: Any = None, batch_size: int = 1024, checks: bool = False
                   ) -> jax.Array:
    """Mean over users with held-out items of |top-k items ∩ held-out items| / k.

    Items are scored by ``user_factors @ item_factors.T``; the ``exclude`` pairs (the training
    interactions) are never recommended. Users are scored ``batch_size`` at a time, so memory is
    O(batch_size n), never m x n.

    Args:
      user_factors: (m, d); item_factors: (n, d).
      test: ``(rows, cols)`` or :class:`jaxfact.Ratings` of held-out interactions (values
        ignored).
      k: list length.
      exclude: ``(rows, cols)`` of pairs to leave out of the rankings (usually the training set).
      batch_size: users scored per batch.
      checks: under an outer ``jit``, also check that the factors are finite and the indices in
        range, with ``jax.experimental.checkify`` (wrap the jitted caller in
        ``checkify.checkify``). Concrete inputs are always checked.

    Example:

      >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> Y = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
      >>> test = (jnp.array([0, 1], jnp.int32), jnp.array([1, 2], jnp.int32))
      >>> train = (jnp.array([0], jnp.int32), jnp.array([0], jnp.int32))
      >>> print(float(precision_at_k(X, Y, test, k=1, exclude=train)))
      1.0
    """
    hits, n_rel = _topk_hits("precision_at_k", user_factors, item_factors, test, k, exclude,
                             batch_size, checks)
    has = n_rel > 0
    prec = jnp.sum(hits, axis=1) / k
    return jnp.sum(jnp.where(has, prec, 0)) / jnp.maximum(jnp.sum(has), 1).astype(prec.dtype)


def ndcg_at_k(user_factors: Any, item_factors: Any, test: Any, *, k: int = 10,
              exclude: Any = None, batch_size: int = 1024, checks: bool = False) -> jax.Array:
    """Mean over users with held-out items of the normalized discounted cumulative gain at k.

    Binary relevance: ``DCG = sum_{j < k} rel_j / log2(j + 2)`` over the top-k list and
    ``IDCG = sum_{j < min(k, |test_u|)} 1 / log2(j + 2)`` (Järvelin & Kekäläinen 2002). Arguments
    as in :func:`precision_at_k`.

    Example:

      >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> Y = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
      >>> test = (jnp.array([0, 1], jnp.int32), jnp.array([1, 0], jnp.int32))
      >>> print(round(float(ndcg_at_k(X, Y, test, k=2)), 4))
      0.3155
    """
    hits, n_rel = _topk_hits("ndcg_at_k", user_factors, item_factors, test, k, exclude,
                             batch_size, checks)
    disc = 1.0 / jnp.log2(jnp.arange(k, dtype=hits.dtype) + 2)
    dcg = hits @ disc
    ideal = jnp.cumsum(disc)[jnp.clip(jnp.minimum(n_rel, k) - 1, 0, k - 1)]
    has = n_rel > 0
    nd = jnp.where(has, dcg / jnp.where(has, ideal, 1), 0)  # users without test items: no term
    return jnp.sum(nd) / jnp.maximum(jnp.sum(has), 1).astype(nd.dtype)


# ------------------------------------------------------------------------------------------------
# Helpers and kernels


def _pair(fn, predictions, targets, checks):
    p = jnp.asarray(predictions)
    t = jnp.asarray(targets)
    if p.shape != t.shape:
        raise ValueError(f"{fn}: `predictions` and `targets` must have the same shape; got "
                         f"{p.shape} and {t.shape}")
    if p.size == 0:
        raise ValueError(f"{fn}: `predictions` is empty")
    _checks.check_finite(fn, "predictions", p, checks)
    _checks.check_finite(fn, "targets", t, checks)
    dtype = jnp.promote_types(jnp.promote_types(p.dtype, t.dtype), jnp.float32)
    return p.astype(dtype), t.astype(dtype)


def _index_pair(fn, name, pairs, m, n, checks):
    if pairs is None:
        return None
    if len(pairs) not in (2, 3):
        raise ValueError(f"{fn}: `{name}` must be (rows, cols) or Ratings; got {len(pairs)} arrays")
    r, c = jnp.asarray(pairs[0]), jnp.asarray(pairs[1])
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(f"{fn}: `{name}` rows and cols must be 1-D of one length; got shapes "
                         f"{r.shape} and {c.shape}")
    for what, a, size in (("rows", r, m), ("cols", c, n)):
        if not jnp.issubdtype(a.dtype, jnp.integer):
            raise TypeError(f"{fn}: `{name}` {what} must be integers; got dtype {a.dtype}")
        _checks.check_index_range(fn, f"{name}.{what}", a, size, checks)
    return r.astype(jnp.int32), c.astype(jnp.int32)


def _topk_hits(fn, X, Y, test, k, exclude, batch_size, checks):
    X, Y = _checks.check_user_item_factors(fn, X, Y, checks=checks)
    if X.dtype != Y.dtype:
        dtype = jnp.promote_types(X.dtype, Y.dtype)
        X, Y = X.astype(dtype), Y.astype(dtype)
    m, n = X.shape[0], Y.shape[0]
    k = _checks.check_int(fn, "k", k, low=1, high=n)
    batch_size = min(_checks.check_int(fn, "batch_size", batch_size, low=1), m)
    test = _index_pair(fn, "test", test, m, n, checks)
    exclude = _index_pair(fn, "exclude", exclude, m, n, checks)
    if exclude is None:
        exclude = (jnp.zeros((0,), jnp.int32), jnp.zeros((0,), jnp.int32))
    return _hits(X, Y, test, exclude, k=k, batch_size=batch_size)


@partial(jax.jit, static_argnames=("k", "batch_size"))
def _hits(X, Y, test, exclude, *, k, batch_size):
    m, n = X.shape[0], Y.shape[0]
    n_batches = -(-m // batch_size)
    Xp = jnp.zeros((n_batches * batch_size, X.shape[1]), X.dtype).at[:m].set(X)

    def one(b):
        start = b * batch_size
        scores = lax.dynamic_slice_in_dim(Xp, start, batch_size) @ Y.T        # (B, n)

        def local(r):
            # Pairs of other batches are sent to row B and dropped (a negative index would wrap).
            r = r - start
            return jnp.where((r >= 0) & (r < batch_size), r, batch_size)

        scores = scores.at[local(exclude[0]), exclude[1]].set(-jnp.inf, mode="drop")
        rel = jnp.zeros((batch_size, n), X.dtype).at[local(test[0]), test[1]].set(1, mode="drop")
        _, top = lax.top_k(scores, k)
        return jnp.take_along_axis(rel, top, axis=1), jnp.sum(rel, axis=1)

    hits, n_rel = lax.map(one, jnp.arange(n_batches))
    return hits.reshape(-1, k)[:m], n_rel.reshape(-1)[:m].astype(jnp.int32)
