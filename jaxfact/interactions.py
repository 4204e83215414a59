"""Interaction data: observed (user, item, value) triples, held-out splits and a synthetic
ratings generator.

* :class:`Ratings`: observed entries of a users x items matrix, the form every recommender of
  jaxfact takes (:func:`jaxfact.biased_mf`, :func:`jaxfact.implicit_als`).
* :func:`train_test_split`: a random split of observed entries by a ``jax.random`` key.
* :func:`synthetic_ratings`: a MovieLens-shaped rating matrix with user and item biases, popularity
  skew, a low-rank signal and noise, for examples and reproductions where no ratings data set can
  be installed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import _als
from jaxfact import _checks

__all__ = ["Ratings", "train_test_split", "synthetic_ratings"]


class Ratings(NamedTuple):
    """Observed entries of a users x items matrix."""

    rows: Any    # (nnz,) int32 user indices
    cols: Any    # (nnz,) int32 item indices
    values: Any  # (nnz,) ratings or counts


def train_test_split(rows: Any, cols: Any, values: Any, *, test_fraction: float,
                     key: Any, checks: bool = False) -> tuple[Ratings, Ratings]:
    """Splits observed entries at random into a training and a held-out part.

    ``round(test_fraction * nnz)`` entries, drawn without replacement by ``key``, go to the test
    part. Users or items may end up with no training entries; the factorizations give them zero
    factors and biases (a prediction of ``mu``). Floating ``values`` must be finite (checked when
    concrete; under an outer ``jit`` staged with ``jax.experimental.checkify`` when ``checks`` is
    true) and indices non-negative.

    Sharding: entries split along the event axis are split on replicated copies (one all-gather
    of the entries); both parts come back replicated, since their lengths need not divide into
    the shards. To fit on them sharded, pad each part to a multiple of the shard count with
    events ``(-1, -1, 0)`` (:func:`jaxfact.biased_mf` and :func:`jaxfact.implicit_als` drop
    them) and ``jax.device_put`` it split again.

    Example:

      >>> rows = jnp.array([0, 0, 1, 2, 3], jnp.int32)
      >>> cols = jnp.array([0, 1, 1, 0, 1], jnp.int32)
      >>> values = jnp.array([5.0, 3.0, 4.0, 1.0, 2.0])
      >>> train, test = train_test_split(rows, cols, values, test_fraction=0.4,
      ...                                key=jax.random.key(0))
      >>> train.rows.shape, test.rows.shape
      ((3,), (2,))
    """
    fn = "train_test_split"
    # Sharded entries are split on replicated copies: the parts' lengths need not divide into
    # the shards (explicit sharding types would reject the gathers otherwise).
    rows, cols, values = (_als.unsplit(jnp.asarray(a)) for a in (rows, cols, values))
    for name, a in (("rows", rows), ("cols", cols), ("values", values)):
        if a.ndim != 1:
            raise ValueError(f"{fn}: `{name}` must be 1-D; got shape {a.shape}")
    if not rows.shape == cols.shape == values.shape:
        raise ValueError(f"{fn}: `rows`, `cols` and `values` must have the same length; got "
                         f"{rows.shape[0]}, {cols.shape[0]} and {values.shape[0]}")
    for name, a in (("rows", rows), ("cols", cols)):
        if not jnp.issubdtype(a.dtype, jnp.integer):
            raise TypeError(f"{fn}: `{name}` must hold integer indices; got dtype {a.dtype}")
        _checks.check_nonnegative(fn, name, a, checks)
    if jnp.issubdtype(values.dtype, jnp.inexact):
        _checks.check_finite(fn, "values", values, checks)
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


def synthetic_ratings(*, n_users: int = 6040, n_items: int = 3706, n_ratings: int = 1_000_000,
                      rank: int = 20, noise: float = 0.75, key: Any = None,
                      seed: int | None = None) -> Ratings:
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

    Args:
      n_users, n_items, n_ratings, rank, noise: sizes and noise level as above.
      key: a concrete ``jax.random`` key (required). The draws are NumPy's: its generator is
        seeded with the key's data read as one integer (for the default threefry keys,
        ``key=jax.random.key(s)`` seeds it with ``s``, the same data as the former ``seed=s``).
      seed: deprecated; the NumPy seed itself (use ``key``).

    Returns:
      :class:`Ratings` with int32 indices and float32 values, in drawing order.

    Example:

      >>> data = synthetic_ratings(n_users=50, n_items=40, n_ratings=300, rank=3,
      ...                          key=jax.random.key(0))
      >>> data.rows.shape, data.values.dtype.name
      ((300,), 'float32')
    """
    fn = "synthetic_ratings"
    if seed is not None:
        if key is not None:
            raise TypeError(f"{fn}: give `key` only (`seed` is its deprecated form)")
        _checks.warn_renamed(fn, "seed", "key")
        np_seed = seed
    else:
        np_seed = _numpy_seed(fn, _checks.check_key(fn, key, why="it draws the ratings"))
    n_users = _checks.check_int(fn, "n_users", n_users, low=1)
    n_items = _checks.check_int(fn, "n_items", n_items, low=1)
    n_ratings = _checks.check_int(fn, "n_ratings", n_ratings, low=1, high=n_users * n_items // 2)
    rank = _checks.check_int(fn, "rank", rank, low=1)
    rng = np.random.default_rng(np_seed)
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


def _numpy_seed(fn: str, key: Any) -> Any:
    """NumPy's seed from a concrete key: its uint32 words as one integer, most significant first
    (a threefry ``key(s)`` holds ``(s >> 32, s & 0xffffffff)``, so this gives back ``s``)."""
    if not _checks.is_concrete(key):
        raise TypeError(f"{fn}: `key` must be concrete (the ratings are drawn with NumPy, outside "
                        f"jit and vmap)")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    seed = 0
    for word in np.asarray(key).ravel().tolist():
        seed = (seed << 32) | int(word)
    return seed
