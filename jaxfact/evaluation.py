"""Held-out evaluation of embeddings learned from interactions, and a synthetic ratings generator.

* :func:`train_test_split`: a random split of observed entries by a ``jax.random`` key.
* :func:`rmse`, :func:`mae`: rating-prediction error (Koren et al. 2009 report RMSE).
* :func:`precision_at_k`, :func:`ndcg_at_k`: top-k ranking quality for implicit feedback, each user's
  training items excluded from the ranking, computed for a batch of users at a time.
* :func:`synthetic_ratings`: a MovieLens-shaped rating matrix with user and item biases, popularity
  skew, a low-rank signal and noise, for examples and reproductions where no ratings data set can
  be installed.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxfact import _checks

__all__ = ["Ratings", "train_test_split", "rmse", "mae", "precision_at_k", "ndcg_at_k",
           "synthetic_ratings"]


class Ratings(NamedTuple):
    """Observed entries of a users x items matrix."""

    rows: Any    # (nnz,) int32 user indices
    cols: Any    # (nnz,) int32 item indices
    values: Any  # (nnz,) ratings or counts


def train_test_split(rows: Any, cols: Any, values: Any, *, test_fraction: float,
                     key: Any) -> tuple[Ratings, Ratings]:
    """Splits observed entries at random into a training and a held-out part.

    ``round(test_fraction * nnz)`` entries, drawn without replacement by ``key``, go to the test
    part. Users or items may end up with no training entries; the factorizations give them zero
    factors and biases (a prediction of ``mu``).

    Example::

      >>> train, test = train_test_split(rows, cols, ratings, test_fraction=0.2, key=key)
      >>> res = biased_mf(*train, shape, 20, key=key)
    """
    fn = "train_test_split"
    rows, cols, values = (jnp.asarray(a) for a in (rows, cols, values))
    for name, a in (("rows", rows), ("cols", cols), ("values", values)):
        if a.ndim != 1:
            raise ValueError(f"{fn}: `{name}` must be 1-D; got shape {a.shape}")
    if not rows.shape == cols.shape == values.shape:
        raise ValueError(f"{fn}: `rows`, `cols` and `values` must have the same length; got "
                         f"{rows.shape[0]}, {cols.shape[0]} and {values.shape[0]}")
    test_fraction = _checks.check_real(fn, "test_fraction", test_fraction, low=0.0, high=1.0,
                                       low_open=True, high_open=True)
    key = _checks.check_key(fn, key, why="it draws the held-out entries")
    nnz = rows.shape[0]
    n_test = int(round(float(test_fraction) * nnz))
    if not 0 < n_test < nnz:
        raise ValueError(f"{fn}: `test_fraction` {test_fraction} of {nnz} entries leaves an empty "
                         f"part; got {n_test} test entries")
    perm = jax.random.permutation(key, nnz)
    test, train = jnp.sort(perm[:n_test]), jnp.sort(perm[n_test:])
    return (Ratings(rows[train], cols[train], values[train]),
            Ratings(rows[test], cols[test], values[test]))


def rmse(predictions: Any, targets: Any) -> jax.Array:
    """Root mean squared error ``sqrt(mean((predictions - targets)^2))``."""
    p, t = _pair("rmse", predictions, targets)
    return jnp.sqrt(jnp.mean((p - t) ** 2))


def mae(predictions: Any, targets: Any) -> jax.Array:
    """Mean absolute error ``mean(|predictions - targets|)``."""
    p, t = _pair("mae", predictions, targets)
    return jnp.mean(jnp.abs(p - t))


def precision_at_k(user_factors: Any, item_factors: Any, test: Any, *, k: int = 10,
                   exclude: Any = None, batch_size: int = 1024) -> jax.Array:
    """Mean over users with held-out items of |top-k items ∩ held-out items| / k.

    Items are scored by ``user_factors @ item_factors.T``; the ``exclude`` pairs (the training
    interactions) are never recommended. Users are scored ``batch_size`` at a time, so memory is
    O(batch_size n), never m x n.

    Args:
      user_factors: (m, d); item_factors: (n, d).
      test: ``(rows, cols)`` or :class:`Ratings` of held-out interactions (values ignored).
      k: list length.
      exclude: ``(rows, cols)`` of pairs to leave out of the rankings (usually the training set).
      batch_size: users scored per batch.

    Example::

      >>> precision_at_k(res.user_factors, res.item_factors, test, k=10, exclude=train)
    """
    hits, n_rel = _topk_hits("precision_at_k", user_factors, item_factors, test, k, exclude,
                             batch_size)
    has = n_rel > 0
    prec = jnp.sum(hits, axis=1) / k
    return jnp.sum(jnp.where(has, prec, 0)) / jnp.maximum(jnp.sum(has), 1)


def ndcg_at_k(user_factors: Any, item_factors: Any, test: Any, *, k: int = 10,
              exclude: Any = None, batch_size: int = 1024) -> jax.Array:
    """Mean over users with held-out items of the normalized discounted cumulative gain at k.

    Binary relevance: ``DCG = sum_{j < k} rel_j / log2(j + 2)`` over the top-k list and
    ``IDCG = sum_{j < min(k, |test_u|)} 1 / log2(j + 2)`` (Järvelin & Kekäläinen 2002). Arguments
    as in :func:`precision_at_k`.
    """
    hits, n_rel = _topk_hits("ndcg_at_k", user_factors, item_factors, test, k, exclude,
                             batch_size)
    disc = 1.0 / jnp.log2(jnp.arange(k, dtype=hits.dtype) + 2)
    dcg = hits @ disc
    ideal = jnp.cumsum(disc)[jnp.clip(jnp.minimum(n_rel, k) - 1, 0, k - 1)]
    has = n_rel > 0
    nd = jnp.where(has, dcg / jnp.where(has, ideal, 1), 0)  # users without test items: no term
    return jnp.sum(nd) / jnp.maximum(jnp.sum(has), 1)


def synthetic_ratings(*, n_users: int = 6040, n_items: int = 3706, n_ratings: int = 1_000_000,
                      rank: int = 20, noise: float = 0.75, seed: int = 0) -> Ratings:
    """A MovieLens-1M-shaped synthetic rating matrix (1..5 stars), generated with NumPy.

    The generator, documented so that results on it can be reproduced and judged:

    * which pairs are rated: users drawn with weights ``exp(N(0, 1))`` (a few heavy raters) and
      items with Zipf weights ``rank^-0.9`` (a popular head and a long tail), independently,
      duplicates dropped, until ``n_ratings`` distinct pairs are drawn;
    * the rating: ``round(3.58 + b_u + b_i + p_u . q_i + e)`` clipped to [1, 5], with
      ``b_u ~ N(0, 0.4^2)``, ``b_i ~ N(0, 0.45^2)``, ``p_u, q_i ~ N(0, diag(s_j^2))`` with
      ``s_j^4 = 0.36 w_j``, ``w_j = (1/j) / sum_l (1/l)`` (a decaying spectrum, as in real rating
      matrices; the interaction term has variance 0.36) and ``e ~ N(0, noise^2)``. 3.58 is
      MovieLens-1M's mean rating.

    Returns :class:`Ratings` with int32 indices and float32 values, in drawing order.
    """
    fn = "synthetic_ratings"
    n_users = _checks.check_int(fn, "n_users", n_users, low=1)
    n_items = _checks.check_int(fn, "n_items", n_items, low=1)
    n_ratings = _checks.check_int(fn, "n_ratings", n_ratings, low=1, high=n_users * n_items // 2)
    rank = _checks.check_int(fn, "rank", rank, low=1)
    rng = np.random.default_rng(seed)
    wu = np.exp(rng.normal(0.0, 1.0, n_users))
    wi = 1.0 / np.arange(1, n_items + 1) ** 0.9
    rng.shuffle(wi)
    pu, pi = wu / wu.sum(), wi / wi.sum()
    keys = np.empty(0, np.int64)
    while keys.size < n_ratings:
        draw = int((n_ratings - keys.size) * 1.3) + 1000
        new = rng.choice(n_users, draw, p=pu).astype(np.int64) * n_items + rng.choice(
            n_items, draw, p=pi)
        keys = np.concatenate([keys, new])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]
    keys = keys[:n_ratings]
    u, i = (keys // n_items).astype(np.int32), (keys % n_items).astype(np.int32)
    w = 1.0 / np.arange(1, rank + 1)
    s = (0.36 * w / w.sum()) ** 0.25
    P = rng.normal(0.0, s, (n_users, rank))
    Q = rng.normal(0.0, s, (n_items, rank))
    bu = rng.normal(0.0, 0.4, n_users)
    bi = rng.normal(0.0, 0.45, n_items)
    r = 3.58 + bu[u] + bi[i] + np.einsum("ij,ij->i", P[u], Q[i]) + rng.normal(0.0, noise, u.size)
    return Ratings(u, i, np.clip(np.round(r), 1, 5).astype(np.float32))


# ------------------------------------------------------------------------------------------------
# Helpers and kernels


def _pair(fn, predictions, targets):
    p = jnp.asarray(predictions)
    t = jnp.asarray(targets)
    if p.shape != t.shape:
        raise ValueError(f"{fn}: `predictions` and `targets` must have the same shape; got "
                         f"{p.shape} and {t.shape}")
    if p.size == 0:
        raise ValueError(f"{fn}: `predictions` is empty")
    dtype = jnp.result_type(p.dtype, t.dtype, jnp.float32)
    return p.astype(dtype), t.astype(dtype)


def _index_pair(fn, name, pairs, m, n):
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
        if _checks.is_concrete(a) and a.size:
            lo, hi = _checks.value_range(a)
            if lo < 0 or hi >= size:
                raise ValueError(f"{fn}: `{name}` {what} must be in [0, {size}); got values in "
                                 f"[{lo}, {hi}]")
    return r.astype(jnp.int32), c.astype(jnp.int32)


def _topk_hits(fn, X, Y, test, k, exclude, batch_size):
    X = _checks.as_float_array(fn, "user_factors", X)
    Y = _checks.as_float_array(fn, "item_factors", Y)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{fn}: `user_factors` and `item_factors` must have the same number of "
                         f"columns; got {X.shape} and {Y.shape}")
    m, n = X.shape[0], Y.shape[0]
    k = _checks.check_int(fn, "k", k, low=1, high=n)
    batch_size = min(_checks.check_int(fn, "batch_size", batch_size, low=1), m)
    test = _index_pair(fn, "test", test, m, n)
    exclude = _index_pair(fn, "exclude", exclude, m, n)
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
