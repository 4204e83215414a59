"""Reading a factored result: one protocol for every result that holds a low-rank matrix.

Every factorization of jaxfact returns its matrix in factored form, and the same two functions read
any of them:

* :func:`reconstruct` (the dense matrix, O(m n k)) and
* :func:`predict` (entries at given positions, O(len(rows) k), never forming the matrix),

for these results (matched by their fields, so a NamedTuple of your own with the same fields works):

* ``SVDResult``, ``CompletionResult`` or a plain ``(U, S, Vt)`` triple: ``U @ diag(S) @ Vt``
  (leading batch axes allowed, e.g. the result of :func:`jaxfact.soft_impute_path`);
* ``NMFResult``: ``W @ H``;
* ``BiasedMFResult``: ``mu + b_u + b_i + p_u . q_i`` (fields ``mu``, ``user_bias``, ``item_bias``,
  ``user_factors``, ``item_factors``);
* ``ImplicitALSResult``: ``user_factors @ item_factors.T`` (preference scores).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import _checks
from jaxfact import _linalg
from jaxfact import _sharding

__all__ = ["reconstruct", "predict"]


def reconstruct(result: Any) -> jax.Array:
    """The dense matrix a factored result represents (see the module docstring), O(m n k).

    Example:

      >>> X = jnp.arange(48.0).reshape(8, 6)
      >>> res = jaxfact.truncated_svd(X, 2)    # X has rank 2
      >>> print(float(jnp.max(jnp.abs(jaxfact.reconstruct(res) - X))) < 1e-3)
      True
    """
    kind, parts = _parts("reconstruct", result)
    if kind == "svd":
        U, S, Vt = parts
        return (U * S[..., None, :]) @ Vt
    if kind == "nmf":
        W, H = parts
        return W @ H
    if kind == "biased":
        mu, bu, bi, P, Q = parts
        return mu + bu[:, None] + bi[None, :] + P @ Q.T
    X, Y = parts
    return X @ Y.T


def predict(result: Any, rows: Any, cols: Any, *, clip: tuple[float, float] | None = None
            ) -> jax.Array:
    """Entries ``(rows[j], cols[j])`` of the matrix a factored result represents, O(len(rows) k).

    Args:
      result: any factored result (see the module docstring); a ``(U, S, Vt)`` result may have
        leading batch axes, which are kept.
      rows, cols: integer index arrays of the same shape.
      clip: ``(low, high)`` to clip the predictions to, e.g. a rating scale (Surprise clips to
        it), or None.

    Example:

      >>> X = jnp.arange(48.0).reshape(8, 6)
      >>> res = jaxfact.truncated_svd(X, 2)
      >>> x = jaxfact.predict(res, jnp.array([0, 3]), jnp.array([2, 2]))   # X[0, 2], X[3, 2]
      >>> [round(float(v), 2) for v in x]
      [2.0, 20.0]
    """
    fn = "predict"
    kind, parts = _parts(fn, result)
    if kind == "svd":
        m, n = parts[0].shape[-2], parts[2].shape[-1]
    elif kind == "nmf":
        m, n = parts[0].shape[0], parts[1].shape[1]
    else:
        m, n = parts[-2].shape[0], parts[-1].shape[0]
    r, c = _indices(fn, rows, cols, (m, n))
    if clip is not None and not (isinstance(clip, (tuple, list)) and len(clip) == 2
                                 and clip[0] <= clip[1]):
        raise ValueError(f"{fn}: `clip` must be a pair (low, high) with low <= high; got {clip!r}")
    # Factors whose rows are split over devices are read with _sharding.take: only the rows
    # asked for cross devices.
    take = _sharding.take
    if kind == "svd":
        U, S, Vt = parts
        if U.ndim == 2 and any(_sharding.layout_of(fn, "result", a) != (None, None)
                               for a in (U, Vt)):
            out = jnp.sum(take(U, r) * S.reshape((1,) * r.ndim + S.shape) * take(Vt.T, c), axis=-1)
        else:
            out = _linalg.gather(U, S, Vt, r, c)
    elif kind == "nmf":
        W, H = parts
        out = jnp.sum(take(W, r) * take(H.T, c), axis=-1)
    elif kind == "biased":
        mu, bu, bi, P, Q = parts
        out = mu + take(bu, r) + take(bi, c) + jnp.sum(take(P, r) * take(Q, c), axis=-1)
    else:
        X, Y = parts
        out = jnp.sum(take(X, r) * take(Y, c), axis=-1)
    return out if clip is None else jnp.clip(out, clip[0], clip[1])


def _parts(fn: str, result: Any) -> tuple[str, tuple]:
    """The kind of a factored result and its arrays, validated."""
    if hasattr(result, "user_factors") and hasattr(result, "item_factors"):
        X, Y = _checks.check_user_item_factors(fn, result.user_factors, result.item_factors,
                                               prefix="result.", checks=None)
        if hasattr(result, "user_bias") and hasattr(result, "mu"):
            return "biased", (jnp.asarray(result.mu), jnp.asarray(result.user_bias),
                              jnp.asarray(result.item_bias), X, Y)
        return "implicit", (X, Y)
    if hasattr(result, "W") and hasattr(result, "H"):
        W = _checks.as_float_array(fn, "result.W", result.W)
        H = _checks.as_float_array(fn, "result.H", result.H)
        if W.shape[1] != H.shape[0]:
            raise ValueError(f"{fn}: `result.W` (m, k) and `result.H` (k, n) must share k; got "
                             f"{W.shape} and {H.shape}")
        return "nmf", (W, H)
    U, S, Vt = _checks.check_svd_result(fn, "result", result, batched=True)
    return "svd", (jnp.asarray(U), jnp.asarray(S), jnp.asarray(Vt))


def _indices(fn: str, rows: Any, cols: Any, shape: tuple[int, int]
             ) -> tuple[jax.Array, jax.Array]:
    idx = []
    for name, a, size in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
        if not hasattr(a, "dtype"):
            a = np.asarray(a)
        if not jnp.issubdtype(a.dtype, jnp.integer):
            raise TypeError(f"{fn}: `{name}` must hold integer indices; got dtype {a.dtype}")
        _checks.check_index_range(fn, name, a, size)
        idx.append(jnp.asarray(a))
    if idx[0].shape != idx[1].shape:
        raise ValueError(f"{fn}: `rows` and `cols` must have the same shape; got "
                         f"{idx[0].shape} and {idx[1].shape}")
    return idx[0], idx[1]
