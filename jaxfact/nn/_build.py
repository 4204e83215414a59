"""Factors of a trained embedding table for ``FactorizedEmbed.from_table`` / ``from_factors``.

Shared by the NNX and Linen shells. Each method returns ``(A, B, bias)`` with ``A @ B (+ bias)``
the approximation of the table:

* ``"svd"``: ``U S^(1/2), S^(1/2) V^T`` of the rank-k truncated SVD, the best rank-k approximation
  in Frobenius and spectral norm (Eckart & Young);
* ``"pca"``: the same for the centred table ``T - 1 mu^T``, with ``bias = mu`` the column mean: the
  best rank-k approximation plus a free offset row;
* ``"nmf"``: non-negative ``W, H`` from :func:`jaxfact.nmf` (parts-based, Lee & Seung 1999).

The singular values are split evenly between the factors (``A = U S^(1/2)``, ``B = S^(1/2) V^T``)
and the NMF factors are rescaled so each component has equal norm in W and H: the product is
unchanged and both factors get comparable scales, which keeps later fine-tuning well conditioned.
"""

from __future__ import annotations

import difflib
import inspect
import numbers
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import _checks
from jaxfact import rank as _rank
from jaxfact import svd as _svd
from jaxfact.nn import _math

__all__ = []

METHODS = ("svd", "pca", "nmf")
KERNEL_METHODS = ("svd", "nmf")   # a kernel's mean row is not a bias: no "pca"


class Factored(NamedTuple):
    """Factors ``A @ B (+ bias)`` of a table T, with what a rank sweep needs to slice them."""

    A: jax.Array                # (m, k)
    B: jax.Array                # (k, n)
    bias: jax.Array | None      # (n,) or None
    S: jax.Array | None         # (k,) singular values behind A, B ("svd", "pca"): nested factors
    residual: jax.Array         # ||T - A B - bias||_F^2, a float scalar
    norm: jax.Array             # ||T||_F


def factors_from_table(fn: str, table: Any, rank: Any, method: str, key: Any,
                       nmf_options: Any) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """``(A, B, bias)`` of a rank-``rank`` approximation of ``table`` (see the module docstring)."""
    f = factorize(fn, table, rank, method, key, nmf_options)
    return f.A, f.B, f.bias


def factorize(fn: str, table: Any, rank: Any, method: str, key: Any, nmf_options: Any, *,
              where: str = "", name: str = "table", methods: tuple[str, ...] = METHODS,
              ) -> Factored:
    """Validates the arguments and factors ``table`` at ``rank`` (an int, a float in (0, 1) for
    the energy rule, or "gavish-donoho"). ``where`` (e.g. " (layer 'embed')") ends messages that
    concern the table, so that a model-wide call names the layer at fault."""
    table = _checks.as_float_array(fn, name, table)
    if jnp.finfo(table.dtype).bits < 32:
        # LAPACK has no half-precision SVD; factor in float32, the caller stores its param_dtype.
        table = table.astype(jnp.float32)
    method = _checks.check_choice(fn, "method", method, methods)
    rank = check_rank_rule(fn, rank)
    check_finite_at(fn, name, table, where)
    if method == "nmf":
        _check_nonnegative_table(fn, name, table, where)
    if key is not None:
        key = _checks.check_key(fn, key)
    nmf_options = check_nmf_options(fn, nmf_options)
    if nmf_options and method != "nmf":
        raise ValueError(f"{fn}: `nmf_options` only applies to method='nmf'; got method={method!r}")
    if method == "pca" and table.shape[0] < 2:
        raise ValueError(f"{fn}: method='pca' needs a {name} with at least 2 rows; got shape "
                         f"{table.shape}{where}")
    k = choose_rank(fn, rank, table, method, where)

    if method == "svd":
        if key is None:
            U, S, Vt = _svd.truncated_svd(table, k)
        else:
            U, S, Vt = _svd.randomized_svd(table, k, key=key)
        A, B = _balanced(U, S, Vt)
        bias = None
    elif method == "pca":
        res = _svd.pca(table, k, key=key)
        A, B = _pca_factors(table, res.components, res.singular_values, res.mean)
        S, bias = res.singular_values, res.mean
    else:
        from jaxfact.nonnegative import nmf
        res = nmf(table, k, key=key, **nmf_options)
        A, B = _balance_nmf(res.W, res.H)
        S = bias = None
    residual, norm = _residual(table, A, B, bias)
    return Factored(A, B, bias, S, residual, norm)


def check_nmf_options(fn: str, nmf_options: Any) -> dict:
    """``nmf_options`` as a dict of keyword arguments :func:`jaxfact.nmf` accepts; a mistyped
    key, or one the caller sets itself (``X``, ``rank``, ``key``), raises naming it."""
    if nmf_options is None:
        return {}
    if not isinstance(nmf_options, Mapping):
        raise TypeError(f"{fn}: `nmf_options` must be a dict of keyword arguments for "
                        f"jaxfact.nmf; got {type(nmf_options).__name__}")
    allowed = _nmf_keywords()
    for name in nmf_options:
        if name in _NMF_SET_HERE:
            raise ValueError(f"{fn}: `nmf_options` must not contain {name!r}: "
                             f"{_NMF_SET_HERE[name]}. Allowed keys: {', '.join(allowed)}")
        if name not in allowed:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{fn}: `nmf_options` has an unknown key {name!r}{hint}; allowed "
                            f"keys: {', '.join(allowed)}")
    return dict(nmf_options)


_NMF_SET_HERE = {"X": "the table is the matrix factorized",
                 "rank": "pass the rank as the `rank` argument",
                 "key": "pass it as the `key` argument"}


def _nmf_keywords() -> tuple[str, ...]:
    from jaxfact.nonnegative import nmf
    params = inspect.signature(nmf).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
                 and p.name not in _NMF_SET_HERE)


def check_rank_rule(fn: str, rank: Any) -> int | float | str:
    """``rank`` as an int, a float in (0, 1) (energy rule) or "gavish-donoho"; types and the
    float's range only (the int's range depends on the table)."""
    if isinstance(rank, str):
        if rank != "gavish-donoho":
            raise ValueError(f"{fn}: `rank` must be an int, a float in (0, 1) (the share of "
                             f"energy to keep) or 'gavish-donoho'; got {rank!r}")
        return rank
    if isinstance(rank, (jax.Array, np.ndarray, np.generic)) and np.ndim(rank) == 0 and \
            _checks.is_concrete(rank):
        rank = rank.item()     # a concrete NumPy/JAX scalar counts as the Python number it holds
    if isinstance(rank, numbers.Integral) and not isinstance(rank, bool):
        return _checks.check_int(fn, "rank", rank, low=1)
    if isinstance(rank, numbers.Real) and not isinstance(rank, bool):
        if not 0.0 < float(rank) < 1.0:
            raise ValueError(f"{fn}: `rank` as a float is the share of energy to keep and must "
                             f"lie in (0, 1) (an integer rank is an int); got {rank!r}")
        return float(rank)
    raise TypeError(f"{fn}: `rank` must be an int, a float in (0, 1) or 'gavish-donoho'; got "
                    f"{type(rank).__name__} {rank!r}")


def choose_rank(fn: str, rank: int | float | str, table: jax.Array, method: str,
                where: str = "", S_all: Any = None) -> int:
    """The integer rank for ``table``: ``rank`` itself, or the energy / Gavish-Donoho rule applied
    to all singular values of the table (of the centred table for "pca", as scikit-learn's
    ``PCA(n_components=0.9)``). ``S_all`` may pass those singular values when already known."""
    small = min(table.shape)
    if not isinstance(rank, int) and not _checks.is_concrete(table):
        raise ValueError(f"{fn}: rank={rank!r} reads all singular values of the table on the "
                         f"host, which a traced table (inside jit) does not allow{where}; pass an "
                         f"integer `rank`, or call outside jit")
    if isinstance(rank, int):
        if rank > small:
            raise ValueError(f"{fn}: `rank` must be an integer in [1, {small}] (min of the shape "
                             f"{tuple(table.shape)}){where}; got {rank}")
        return rank
    if S_all is None:
        S_all = _singular_values(table, centred=method == "pca")
    if isinstance(rank, float):
        return int(_rank.energy_rank(S_all, rank))
    k = int(_rank.optimal_hard_threshold(S_all, tuple(table.shape)))
    if k == 0:
        raise ValueError(f"{fn}: rank='gavish-donoho' keeps no component{where}: no singular value "
                         f"of the table lies above the noise threshold (the table looks like "
                         f"noise); pass an integer `rank`")
    return k


@partial(jax.jit, static_argnames=("centred",))
def _singular_values(table, centred):
    if centred:
        table = table - jnp.mean(table, axis=0)
    return jnp.linalg.svd(table, compute_uv=False)


def check_finite_at(fn, name, table, where=""):
    try:
        _checks.check_finite(fn, name, table)
    except ValueError as e:
        raise ValueError(f"{e}{where}") from None


def _check_nonnegative_table(fn, name, table, where):
    if not (_checks.is_concrete(table) and table.size):
        return
    with _checks.eager():  # also when the table is closed over by a jitted function
        low = float(jnp.min(table))
    if low < 0:
        raise ValueError(f"{fn}: `{name}` must be non-negative for method='nmf'{where}; got "
                         f"minimum {low:.4g}. Use method='svd' or 'pca' for a "
                         f"signed {name}")


@jax.jit
def _residual(table, A, B, bias):
    approx = A @ B if bias is None else A @ B + bias
    return jnp.sum(jnp.square(table - approx)), jnp.linalg.norm(table)


def _pca_factors(table, components, S, mean):
    coords = (table - mean) @ components.T        # = U S
    # coords / sqrt(S) = U sqrt(S), guarded: a zero singular value has zero coordinates.
    safe = jnp.where(S > 0, S, 1)
    scale = jnp.where(S > 0, jax.lax.rsqrt(safe), 0)
    return coords * scale, components * jnp.sqrt(S)[:, None]


def check_factors(fn: str, A: Any, B: Any, bias: Any,
                  names: tuple[str, str] = ("num_embeddings", "features")) -> tuple:
    rows, cols = names
    A = _checks.as_float_array(fn, "A", A)
    B = _checks.as_float_array(fn, "B", B)
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"{fn}: `A` ({rows}, rank) and `B` (rank, {cols}) must share "
                         f"the rank; got shapes {A.shape} and {B.shape}")
    _checks.check_int(fn, "rank", A.shape[1], low=1, high=min(A.shape[0], B.shape[1]))
    _checks.check_finite(fn, "A", A)
    _checks.check_finite(fn, "B", B)
    if bias is not None:
        bias = _checks.as_float_array(fn, "bias", bias, ndim=1)
        if bias.shape[0] != B.shape[1]:
            raise ValueError(f"{fn}: `bias` must have shape ({B.shape[1]},) ({cols}); got shape "
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


class AdaptiveBands(NamedTuple):
    cutoffs: tuple[int, ...]
    features: int
    factor: float
    param_dtype: Any
    E: list                       # band tables (size_i, d_i), in param_dtype
    P: list                       # projections (d_i, F) or None, in param_dtype
    errors: tuple[float, ...]     # ||T_i - E_i P_i||_F / ||T_i||_F per band


def adaptive_from_table(fn: str, table: Any, cutoffs: Any, factor: Any, head_projection: bool,
                        key: Any, param_dtype: Any = None) -> AdaptiveBands:
    """Adaptive-input bands of a trained (V, F) table (``param_dtype`` defaults to its dtype).

    Band i's rows ``T_i`` get ``E_i P_i``, the best rank-``d_i`` approximation of ``T_i`` (truncated
    SVD, split as ``U S^(1/2)``, ``S^(1/2) V^T``); a band with fewer rows than ``d_i`` is exact at
    rank ``size_i`` and padded with zero columns (which stay zero under gradient descent, as
    their gradients vanish). A band without projection (the head, ``d_0 = F``) is ``T_0`` itself.
    ``band_errors[i] = ||T_i - E_i P_i||_F / ||T_i||_F`` (0 for an all-zero band).
    """
    table = _checks.as_float_array(fn, "table", table)
    V, F = table.shape
    cutoffs, F, factor = _math.check_adaptive_args(fn, cutoffs, F, factor, V)
    _checks.check_finite(fn, "table", table)
    if key is not None:
        key = _checks.check_key(fn, key)
    work = table.astype(jnp.float32) if jnp.finfo(table.dtype).bits < 32 else table
    dims = _math.band_dims(cutoffs, F, factor)
    E, P, errors = [], [], []
    lo = 0
    for i, (hi, d) in enumerate(zip(cutoffs, dims)):
        rows = work[lo:hi]
        if not _math.band_has_projection(i, d, F, head_projection):
            E.append(rows)
            P.append(None)
            errors.append(0.0)
        elif d == F:
            # A head projection of full width: the identity keeps the band exact to the bit.
            E.append(rows)
            P.append(jnp.eye(F, dtype=work.dtype))
            errors.append(0.0)
        else:
            r = min(d, hi - lo)
            if key is None:
                U, S, Vt = _svd.truncated_svd(rows, r)
            else:
                U, S, Vt = _svd.randomized_svd(rows, r, key=jax.random.fold_in(key, i))
            A, B = _balanced(U, S, Vt)
            residual, norm = _residual(rows, A, B, None)
            E.append(jnp.pad(A, ((0, 0), (0, d - r))))
            P.append(jnp.pad(B, ((0, d - r), (0, 0))))
            errors.append(float(jnp.sqrt(residual) / jnp.where(norm > 0, norm, 1)))
        lo = hi
    param_dtype = table.dtype if param_dtype is None else param_dtype
    E = [jnp.asarray(e, param_dtype) for e in E]
    P = [None if p is None else jnp.asarray(p, param_dtype) for p in P]
    return AdaptiveBands(cutoffs, F, factor, param_dtype, E, P, tuple(errors))
