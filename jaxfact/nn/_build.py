"""Factors of a trained table or kernel, for the ``from_table`` / ``from_kernel`` /
``from_factors`` constructors, :func:`jaxfact.nn.compress` and :func:`jaxfact.nn.rank_sweep`.

Shared by the NNX and Linen shells. Each method returns ``A @ B (+ bias)``, the approximation of
the table:

* ``"svd"``: ``U S^(1/2), S^(1/2) V^T`` of the rank-k truncated SVD, the best rank-k approximation
  in Frobenius and spectral norm (Eckart & Young);
* ``"pca"``: the same for the centred table ``T - 1 mu^T``, with ``bias = mu`` the column mean: the
  best rank-k approximation plus a free offset row;
* ``"nmf"``: non-negative ``W, H`` from :func:`jaxfact.nmf` (parts-based, Lee & Seung 1999).

The singular values are split evenly between the factors (``A = U S^(1/2)``, ``B = S^(1/2) V^T``)
and the NMF factors are rescaled so each component has equal norm in W and H: the product is
unchanged and both factors get comparable scales, which keeps later fine-tuning well conditioned.

``key=None`` always means the deterministic computation (exact SVD / PCA, NMF from its
deterministic default initialization); a key selects the randomized SVD (or is handed to NMF).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import numbers
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

import jaxfact
from jaxfact import _checks
from jaxfact import _sharding
from jaxfact.nn import _math

__all__ = []

METHODS = ("svd", "pca", "nmf")
KERNEL_METHODS = ("svd", "nmf")   # a kernel's mean row is not a bias: no "pca"
EMBED_NAMES = (_math.EMBED_PARAMS, ("num_embeddings", "features"))
LINEAR_NAMES = (_math.LINEAR_PARAMS, ("in_features", "out_features"))


class Factored(NamedTuple):
    """Factors ``A @ B (+ bias)`` of a table T, with what a rank sweep needs to slice them."""

    A: jax.Array                # (m, k)
    B: jax.Array                # (k, n)
    bias: jax.Array | None      # (n,) or None
    S: jax.Array | None         # (k,) singular values behind A, B ("svd", "pca"): nested factors
    residual: jax.Array         # ||T - A B - bias||_F^2, a float scalar
    norm: jax.Array             # ||T||_F


def factorize(fn: str, table: Any, rank: Any, method: str, key: Any, nmf_options: Any, *,
              where: str = "", name: str = "table", methods: tuple[str, ...] = METHODS,
              checks: bool = False) -> Factored:
    """Validates the arguments and factors ``table`` at ``rank`` (an int, a float in (0, 1) for
    the energy rule, or "gavish-donoho"). ``where`` (e.g. " (layer 'embed')") ends messages that
    concern the table, so that a model-wide call names the layer at fault."""
    table = _checks.as_float_array(fn, name, table)
    if jnp.finfo(table.dtype).bits < 32:
        # LAPACK has no half-precision SVD; factor in float32, the caller stores its param_dtype.
        table = table.astype(jnp.float32)
    method = _checks.check_choice(fn, "method", method, methods)
    rank = check_rank_rule(fn, rank)
    check_values(fn, name, table, where, nonnegative=method == "nmf", checks=checks)
    if key is not None:
        key = _checks.check_key(fn, key)
    nmf_options = check_nmf_options(fn, nmf_options)
    if nmf_options and method != "nmf":
        raise ValueError(f"{fn}: `nmf_options` only applies to method='nmf'; got method={method!r}")
    if method == "pca" and table.shape[0] < 2:
        raise ValueError(f"{fn}: method='pca' needs a {name} with at least 2 rows; got shape "
                         f"{table.shape}{where}")
    k = choose_rank(fn, rank, table, method, where)

    S = bias = None
    if method == "svd":
        if key is None:
            U, S, Vt = jaxfact.truncated_svd(table, k)
        else:
            U, S, Vt = jaxfact.randomized_svd(table, k, key=key)
        A, B = balance_svd(U, S, Vt)
    elif method == "pca":
        res = jaxfact.pca(table, k, key=key)
        A, B = _pca_factors(table, res.components, res.singular_values, res.mean)
        S, bias = res.singular_values, res.mean
    else:
        res = jaxfact.nmf(table, k, key=key, **nmf_options)
        A, B = balance_nmf(res.W, res.H)
    residual_, norm = residual(table, A, B, bias)
    return Factored(A, B, bias, S, residual_, norm)


def factor_params(fn: str, A: Any, B: Any, bias: Any, param_dtype: Any,
                  names: tuple = EMBED_NAMES) -> tuple[tuple[int, int, int], dict, dict]:
    """Checks factors ``A @ B (+ bias)`` and returns what both shells build a module from:
    ``((rows, cols, rank), {"use_bias", "param_dtype"}, params)``, the parameters stored in
    ``param_dtype`` (default: ``A``'s dtype) under ``names`` (``EMBED_NAMES``/``LINEAR_NAMES``)."""
    (a_name, b_name), dims = names
    A, B, bias = check_factors(fn, A, B, bias, dims)
    param_dtype = A.dtype if param_dtype is None else param_dtype
    params = {a_name: jnp.asarray(A, param_dtype), b_name: jnp.asarray(B, param_dtype)}
    if bias is not None:
        params["bias"] = jnp.asarray(bias, param_dtype)
    args = (A.shape[0], B.shape[1], A.shape[1])
    return args, {"use_bias": bias is not None, "param_dtype": param_dtype}, params


def table_params(fn: str, table: Any, rank: Any, *, method: str, key: Any, nmf_options: Any,
                 param_dtype: Any, checks: bool, bias: Any = None,
                 names: tuple = EMBED_NAMES) -> tuple[tuple[int, int, int], dict, dict]:
    """:func:`factorize` then :func:`factor_params`, for ``from_table`` / ``from_kernel``:
    ``param_dtype`` defaults to the table's dtype; with ``LINEAR_NAMES`` the layer's own ``bias``
    is kept."""
    linear = names is LINEAR_NAMES
    f = factorize(fn, table, rank, method, key, nmf_options, name="kernel" if linear else "table",
                  methods=KERNEL_METHODS if linear else METHODS, checks=checks)
    if param_dtype is None:
        param_dtype = jnp.asarray(table).dtype
    A = f.A if linear else _math.split_rows_like(f.A, table)
    return factor_params(fn, A, f.B, bias if linear else f.bias, param_dtype, names)


def check_factors(fn: str, A: Any, B: Any, bias: Any,
                  names: tuple[str, str] = EMBED_NAMES[1]) -> tuple:
    rows, cols = names
    A = _checks.as_float_array(fn, "A", A)
    B = _checks.as_float_array(fn, "B", B)
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"{fn}: `A` ({rows}, rank) and `B` (rank, {cols}) must share "
                         f"the rank; got shapes {A.shape} and {B.shape}")
    _checks.check_rank(fn, A.shape[1], (A.shape[0], B.shape[1]))
    _checks.check_finite(fn, "A", A)
    _checks.check_finite(fn, "B", B)
    if bias is not None:
        bias = _checks.as_float_array(fn, "bias", bias, ndim=1)
        if bias.shape[0] != B.shape[1]:
            raise ValueError(f"{fn}: `bias` must have shape ({B.shape[1]},) ({cols}); got shape "
                             f"{bias.shape}")
        _checks.check_finite(fn, "bias", bias)
    return A, B, bias


def check_values(fn: str, name: str, table: Any, where: str = "", *, nonnegative: bool = False,
                 checks: bool = False) -> None:
    """The library's finite (and, for NMF, non-negative) checks of a table, with ``where``
    naming the layer at the end of the message; staged with checkify under ``checks``."""
    try:
        _checks.check_finite(fn, name, table, checks)
        if nonnegative:
            _checks.check_nonnegative(fn, name, table, checks)
    except ValueError as e:
        raise ValueError(f"{e}{where}") from None


# ------------------------------------------------------------------------------------------------
# Options


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
                 "key": "pass it as the `key` argument",
                 "checks": "pass it as the `checks` argument"}


def _nmf_keywords() -> tuple[str, ...]:
    params = inspect.signature(jaxfact.nmf).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
                 and p.name not in _NMF_SET_HERE)


def linear_method_message(fn: str, path: str, method: str, *, arg: str = "include",
                          layer: str = "nnx.Linear") -> str:
    """Why ``method`` ("pca" or "adaptive") cannot replace the linear layer at ``path``."""
    why = ("a kernel's mean row would be multiplied by sum(x), which no bias represents"
           if method == "pca" else "adaptive bands are an embedding layout")
    return (f"{fn}: method={method!r} applies to embeddings only ({why}), but `{arg}` selects "
            f"the {layer} at {path!r}; use method='svd' or leave that layer out of `{arg}`")


# ------------------------------------------------------------------------------------------------
# Rank rules


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


def check_rank_option(fn: str, rank: Any, method: str, cutoffs: Any) -> Any:
    """``rank`` of a model-wide call (:func:`compress`, ``compress_params``): a rank rule, or a
    dict from layer-path glob patterns to rank rules; unset for ``method="adaptive"``, which
    takes ``cutoffs`` instead."""
    if method == "adaptive":
        if rank is not None:
            raise ValueError(f"{fn}: method='adaptive' takes its band widths from `cutoffs` and "
                             f"`factor`; leave `rank` unset (got {rank!r})")
        if cutoffs is None:
            raise ValueError(f"{fn}: method='adaptive' needs `cutoffs` (band ends, the last the "
                             f"vocabulary size)")
        return None
    if rank is None:
        raise ValueError(f"{fn}: `rank` is required: an int, a float in (0, 1) or "
                         f"'gavish-donoho'")
    if cutoffs is not None:
        raise ValueError(f"{fn}: `cutoffs` only applies to method='adaptive'; got "
                         f"method={method!r}")
    if isinstance(rank, Mapping):
        if not rank or not all(isinstance(p, str) for p in rank):
            raise TypeError(f"{fn}: `rank` as a dict maps layer-path glob patterns to ranks, "
                            f"e.g. {{'embed': 64, 'blocks/*': 0.9}}; got {rank!r}")
        return {p: check_rank_rule(fn, r) for p, r in rank.items()}
    return check_rank_rule(fn, rank)


def rank_for_layer(fn: str, rank: Any, paths: Any) -> Any:
    """A layer's rank: ``rank`` itself, or the first entry of a dict whose pattern matches one of
    the layer's paths (a shared layer has several)."""
    if not isinstance(rank, dict):
        return rank
    paths = (paths,) if isinstance(paths, str) else tuple(paths)
    for pattern, r in rank.items():
        if any(fnmatch.fnmatchcase(p, pattern) for p in paths):
            return r
    raise ValueError(f"{fn}: `rank` gives no rank for layer {paths[0]!r}: none of its patterns "
                     f"{list(rank)} matches that path (add one, or leave the layer out of "
                     f"`include`)")


def choose_rank(fn: str, rank: int | float | str, table: jax.Array, method: str,
                where: str = "") -> int:
    """The integer rank for ``table``: ``rank`` itself, or the energy / Gavish-Donoho rule applied
    to all singular values of the table (of the centred table for "pca", as scikit-learn's
    ``PCA(n_components=0.9)``)."""
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
    S_all = singular_values(table, centred=method == "pca")
    if isinstance(rank, float):
        return int(jaxfact.energy_rank(S_all, rank))
    k = int(jaxfact.optimal_hard_threshold(S_all, tuple(table.shape)))
    if k == 0:
        raise ValueError(f"{fn}: rank='gavish-donoho' keeps no component{where}: no singular value "
                         f"of the table lies above the noise threshold (the table looks like "
                         f"noise); pass an integer `rank`")
    return k


# ------------------------------------------------------------------------------------------------
# Adaptive bands


class AdaptiveBands(NamedTuple):
    cutoffs: tuple[int, ...]
    features: int
    factor: float
    param_dtype: Any
    params: dict                  # embedding_i (size_i, d_i), projection_i (d_i, F) if any
    errors: tuple[jax.Array, ...]  # ||T_i - E_i P_i||_F / ||T_i||_F per band, float scalars


def adaptive_from_table(fn: str, table: Any, cutoffs: Any, factor: Any, head_projection: bool,
                        key: Any, param_dtype: Any = None, checks: bool = False) -> AdaptiveBands:
    """Adaptive-input bands of a trained (V, F) table (``param_dtype`` defaults to its dtype).

    Band i's rows ``T_i`` get ``E_i P_i``, the best rank-``d_i`` approximation of ``T_i`` (truncated
    SVD, split as ``U S^(1/2)``, ``S^(1/2) V^T``); a band with fewer rows than ``d_i`` is exact at
    rank ``size_i`` and padded with zero columns (which stay zero under gradient descent, as
    their gradients vanish). A band without projection (the head, ``d_0 = F``) is ``T_0`` itself.
    ``errors[i] = ||T_i - E_i P_i||_F / ||T_i||_F`` (0 for an all-zero band).
    """
    table = _checks.as_float_array(fn, "table", table)
    V, F = table.shape
    cutoffs, F, factor = _math.check_adaptive_args(fn, cutoffs, F, factor, V)
    check_values(fn, "table", table, checks=checks)
    mesh, axes = _math.vocab_split(table)
    if axes:
        # Each band's rows are re-split over the same axes (a slice of a row-split array moves
        # only the rows that change device), so every band must split evenly.
        p = int(np.prod([mesh.shape[a] for a in axes]))
        for i, (lo, hi) in enumerate(zip((0,) + cutoffs[:-1], cutoffs)):
            if (hi - lo) % p:
                raise ValueError(f"{fn}: `table` is split over {p} devices by rows, but band {i} "
                                 f"has {hi - lo} rows, not a multiple of {p}; choose `cutoffs` "
                                 f"that are multiples of {p}, or pass an unsharded table")
    if key is not None:
        key = _checks.check_key(fn, key)
    work = table.astype(jnp.float32) if jnp.finfo(table.dtype).bits < 32 else table
    param_dtype = table.dtype if param_dtype is None else param_dtype
    zero = jnp.zeros((), work.dtype)
    params, errors = {}, []
    lo = 0
    for i, (hi, d) in enumerate(zip(cutoffs, _math.band_dims(cutoffs, F, factor))):
        rows = jax.lax.slice_in_dim(work, lo, hi, axis=0)   # also for a row-split table
        if not _math.band_has_projection(i, d, F, head_projection):
            E, P, err = rows, None, zero
        elif d == F:
            # A head projection of full width: the identity keeps the band exact to the bit.
            E, P, err = rows, jnp.eye(F, dtype=work.dtype), zero
        else:
            r = min(d, hi - lo)
            if key is None:
                U, S, Vt = jaxfact.truncated_svd(rows, r)
            else:
                U, S, Vt = jaxfact.randomized_svd(rows, r, key=jax.random.fold_in(key, i))
            A, B = balance_svd(U, S, Vt)
            res, norm = residual(rows, A, B, None)
            E, P = jnp.pad(A, ((0, 0), (0, d - r))), jnp.pad(B, ((0, d - r), (0, 0)))
            err = jnp.sqrt(res) / jnp.where(norm > 0, norm, 1)
        params[f"embedding_{i}"] = _math.split_rows_like(jnp.asarray(E, param_dtype), rows)
        if P is not None:
            params[f"projection_{i}"] = jnp.asarray(P, param_dtype)
        errors.append(err)
        lo = hi
    return AdaptiveBands(cutoffs, F, factor, param_dtype, params, tuple(errors))


# ------------------------------------------------------------------------------------------------
# Kernels


def singular_values(table, centred=False):
    """All singular values of ``table`` (column-centred first with ``centred``), descending.

    A table whose rows are split over mesh axes is not gathered: a TSQR of its row blocks gives
    the (F, F) factor R with the same singular values (what crosses devices: the ``p`` stacked
    (F, F) R factors and, centred, the (F,) column sums)."""
    mesh, axes = _math.vocab_split(table)
    if not axes:
        return _singular_values(table, centred)
    return _sharded_singular_values(table, centred, mesh, axes)


@partial(jax.jit, static_argnames=("centred",))
def _singular_values(table, centred):
    if centred:
        table = table - jnp.mean(table, axis=0, keepdims=True)
    return jnp.linalg.svd(table, compute_uv=False)


@partial(jax.jit, static_argnames=("centred", "mesh", "axes"))
def _sharded_singular_values(table, centred, mesh, axes):
    m = table.shape[0]

    def body(t):
        if centred:
            t = t - jax.lax.psum(jnp.sum(t, axis=0, keepdims=True), axes) / m
        _, R = _sharding.tsqr(t, axes)
        return jnp.linalg.svd(R, compute_uv=False)

    return jax.shard_map(body, mesh=mesh, in_specs=P(axes, None), out_specs=P())(table)


@jax.jit
def residual(table, A, B, bias):
    """``(||T - A B - 1 bias^T||_F^2, ||T||_F)``."""
    approx = A @ B if bias is None else A @ B + bias[None, :]
    return jnp.sum(jnp.square(table - approx)), jnp.linalg.norm(table)


def _pca_factors(table, components, S, mean):
    coords = (table - mean[None, :]) @ components.T        # = U S
    # coords / sqrt(S) = U sqrt(S), guarded: a zero singular value has zero coordinates.
    safe = jnp.where(S > 0, S, 1)
    scale = jnp.where(S > 0, jax.lax.rsqrt(safe), 0)
    return coords * scale[None, :], components * jnp.sqrt(S)[:, None]


def balance_svd(U, S, Vt):
    """``(U S^(1/2), S^(1/2) Vt)``."""
    root = jnp.sqrt(S)
    return U * root[None, :], root[:, None] * Vt


def balance_nmf(W, H):
    """``(W d, H / d)`` with ``d`` giving each component equal norm in both factors."""
    nw = jnp.linalg.norm(W, axis=0)
    nh = jnp.linalg.norm(H, axis=1)
    ok = (nw > 0) & (nh > 0)   # an unused component (all-zero column or row) is left alone
    d = jnp.where(ok, jnp.sqrt(jnp.where(ok, nh, 1) / jnp.where(ok, nw, 1)), 1)
    return W * d[None, :], H / d[:, None]
