"""Factors of a trained embedding table for ``FactorizedEmbed.from_table`` / ``from_factors``.

Shared by the NNX and Linen shells. Each method returns ``(A, B, bias)`` with ``A @ B (+ bias)``
the approximation of the table:

* ``"svd"``: ``U S^(1/2), S^(1/2) V^T`` of the rank-k truncated SVD, the best rank-k approximation
  in Frobenius and spectral norm (Eckart & Young);
* ``"pca"``: the same for the centred table ``T - 1 mu^T``, with ``bias = mu`` the column mean: the
  best rank-k approximation plus a free offset row;
* ``"nmf"``: non-negative ``W, H`` from :func:`jaxfact.nmf.nmf` (parts-based, Lee & Seung 1999).

The singular values are split evenly between the factors (``A = U S^(1/2)``, ``B = S^(1/2) V^T``)
and the NMF factors are rescaled so each component has equal norm in W and H: the product is
unchanged and both factors get comparable scales, which keeps later fine-tuning well conditioned.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxfact import _checks
from jaxfact import svd as _svd

__all__ = []

METHODS = ("svd", "pca", "nmf")


def factors_from_table(fn: str, table: Any, rank: Any, method: str, key: Any,
                       nmf_options: dict | None) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    table = _checks.as_float_array(fn, "table", table)
    method = _checks.check_choice(fn, "method", method, METHODS)
    rank = _checks.check_int(fn, "rank", rank, low=1, high=min(table.shape))
    _checks.check_finite(fn, "table", table)
    if method == "nmf":
        _checks.check_nonnegative(fn, "table", table)
    if key is not None:
        key = _checks.check_key(fn, key)
    if nmf_options is not None and method != "nmf":
        raise ValueError(f"{fn}: `nmf_options` only applies to method='nmf'; got method={method!r}")

    if method == "svd":
        if key is None:
            U, S, Vt = _svd.truncated_svd(table, rank)
        else:
            U, S, Vt = _svd.randomized_svd(table, rank, key=key)
        A, B = _balanced(U, S, Vt)
        return A, B, None
    if method == "pca":
        if table.shape[0] < 2:
            raise ValueError(f"{fn}: method='pca' needs a table with at least 2 rows; got shape "
                             f"{table.shape}")
        res = _svd.pca(table, rank, key=key)
        coords = (table - res.mean) @ res.components.T        # = U S
        S = res.singular_values
        # coords / sqrt(S) = U sqrt(S) / ... guarded: a zero singular value has zero coordinates.
        safe = jnp.where(S > 0, S, 1)
        scale = jnp.where(S > 0, jax.lax.rsqrt(safe), 0)
        A = coords * scale
        B = res.components * jnp.sqrt(S)[:, None]
        return A, B, res.mean
    # method == "nmf"
    try:
        from jaxfact.nmf import nmf
    except ImportError as e:  # pragma: no cover - only without the nmf module
        raise NotImplementedError(f"{fn}: method='nmf' needs jaxfact.nmf, which this install "
                                  f"lacks; use method='svd' or 'pca'") from e
    res = nmf(table, rank, key=key, **(nmf_options or {}))
    A, B = _balance_nmf(res.W, res.H)
    return A, B, None


def check_factors(fn: str, A: Any, B: Any, bias: Any) -> tuple:
    A = _checks.as_float_array(fn, "A", A)
    B = _checks.as_float_array(fn, "B", B)
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"{fn}: `A` (num_embeddings, rank) and `B` (rank, features) must share "
                         f"the rank; got shapes {A.shape} and {B.shape}")
    _checks.check_int(fn, "rank", A.shape[1], low=1, high=min(A.shape[0], B.shape[1]))
    _checks.check_finite(fn, "A", A)
    _checks.check_finite(fn, "B", B)
    if bias is not None:
        bias = _checks.as_float_array(fn, "bias", bias, ndim=1)
        if bias.shape[0] != B.shape[1]:
            raise ValueError(f"{fn}: `bias` must have shape ({B.shape[1]},) (features); got shape "
                             f"{bias.shape}")
        _checks.check_finite(fn, "bias", bias)
    return A, B, bias


def _balanced(U, S, Vt):
    root = jnp.sqrt(S)
    return U * root, root[:, None] * Vt


def _balance_nmf(W, H):
    nw = jnp.linalg.norm(W, axis=0)
    nh = jnp.linalg.norm(H, axis=1)
    ok = (nw > 0) & (nh > 0)   # an unused component (all-zero column or row) is left alone
    d = jnp.where(ok, jnp.sqrt(jnp.where(ok, nh, 1) / jnp.where(ok, nw, 1)), 1)
    return W * d, H / d[:, None]
