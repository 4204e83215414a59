"""Validation of the arguments of :func:`jaxfact.nmf`, :func:`jaxfact.nmf_init` and
:func:`jaxfact.nmf_transform`: X (dense, or any sparse form, laid out for the kernels), masks,
starting factors, solver options and penalties."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from jaxfact import _checks
from jaxfact import _sharding
from jaxfact import linop
from jaxfact._nmf_init import Reg

__all__ = []  # private module

SOLVERS = ("pg", "mu", "hals")
INITS = ("nndsvda", "nndsvd", "nndsvdar", "random")
BETA_LOSSES = ("frobenius", "kullback-leibler")

# float16 and bfloat16 have too little range for the products NMF forms (the objective is a sum of
# squares of X's entries): such X is factorized in float32 and the factors returned in its dtype.
_LOW_PRECISION = (jnp.float16, jnp.bfloat16)


def compute_dtype(dtype):
    return jnp.dtype(jnp.float32) if dtype in _LOW_PRECISION else jnp.dtype(dtype)


def check_solver(fn, solver, beta_loss, max_iter, tol):
    solver = _checks.check_choice(fn, "solver", solver, SOLVERS)
    beta_loss = _checks.check_choice(fn, "beta_loss", beta_loss, BETA_LOSSES)
    if beta_loss == "kullback-leibler" and solver != "mu":
        raise ValueError(f"{fn}: `beta_loss`='kullback-leibler' needs `solver`='mu' (pg and hals "
                         f"solve least-squares subproblems); got `solver`={solver!r}")
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    return solver, beta_loss, max_iter, tol


def check_values(fn, name, x, checks=False):
    """Finite and non-negative when ``x`` is concrete (also when it is an array captured by a
    function under ``jax.jit``: the shared checks evaluate eagerly there); staged with checkify
    under a trace when ``checks``."""
    _checks.check_finite(fn, name, x, checks)
    _checks.check_nonnegative(fn, name, x, checks)


def _as_bcoo(fn, X):
    """Any sparse form of X as a 2-D BCOO (None for a dense X)."""
    if _checks.is_scipy_sparse(X):
        return jsparse.BCOO.from_scipy_sparse(X)
    if isinstance(X, linop.ObservedMatrix):
        indices = jnp.stack([jnp.asarray(X.rows), jnp.asarray(X.cols)], axis=1)
        return jsparse.BCOO((jnp.asarray(X.values), indices.astype(jnp.int32)),
                            shape=tuple(X.shape))
    if isinstance(X, jsparse.BCSR):
        return X.to_bcoo()
    if isinstance(X, linop.LinearOperator):
        raise TypeError(f"{fn}: `X` must hold its entries (a dense array, a BCOO/BCSR, SciPy "
                        f"sparse, linop.SparseMatrix or linop.ObservedMatrix matrix); got a "
                        f"linop.LinearOperator, known only through its products, which NMF "
                        f"cannot use (its updates read the entries of X)")
    if isinstance(X, jsparse.BCOO):
        return X
    return None


def _check_sparse_matrix(fn, X, checks):
    """A :class:`jaxfact.linop.SparseMatrix` used as built: its layout is kept (no host work,
    no copy of the entries). Its values are checked; positions of weight 0 (padding, or
    entries a mask weighted 0) hold zeros and every other weight is reset to 1: NMF reads the
    matrix's values, and weights only come from its own ``mask`` argument."""
    _checks.check_float_dtype(fn, "X", X.dtype)
    out = X.dtype
    halves = []
    for S in (X.S, X.St):  # the same entries twice: checking one half suffices
        xv = jnp.where(S.wv != 0, S.xv, 0).astype(compute_dtype(out))
        if not halves:
            check_values(fn, "X", xv, checks)
        wv = (S.wv != 0).astype(xv.dtype)
        halves.append(linop.SparseRows(S.rows, S.inv, S.cols, xv, xv, wv, S.shape, S.nnz,
                                       S.buckets))
    return linop.SparseMatrix(*halves), out


def check_X(fn, X, checks=False):
    """X as a float32/float64 dense array or a :class:`jaxfact.linop.SparseMatrix` (values checked
    when concrete, or staged when ``checks``), and the dtype to return results in. A
    SparseMatrix is used as given (its host layout is not rebuilt)."""
    if isinstance(X, linop.SparseMatrix):
        return _check_sparse_matrix(fn, X, checks)
    B = _as_bcoo(fn, X)
    if B is not None:
        if len(B.shape) != 2 or B.n_batch or B.n_dense:
            raise ValueError(f"{fn}: `X` must be a 2-D sparse matrix without batch or dense "
                             f"dimensions; got shape {B.shape}")
        _checks.check_float_dtype(fn, "X", B.dtype)
        out = B.dtype
        if compute_dtype(out) != out:
            B = jsparse.BCOO((B.data.astype(compute_dtype(out)), B.indices), shape=B.shape)
        check_values(fn, "X", B, checks)
        # Concrete: duplicates summed, laid out by rows and by columns on the host (pass a
        # linop.SparseMatrix to do that once for many calls); traced: coordinate form.
        return linop.SparseMatrix.from_bcoo(B), out
    X = _checks.as_float_array(fn, "X", X)
    check_values(fn, "X", X, checks)
    return X.astype(compute_dtype(X.dtype)), X.dtype


def check_mask(fn, mask, shape, dtype, checks=False):
    if mask is None:
        return None
    if isinstance(mask, jsparse.BCOO):
        raise TypeError(f"{fn}: `mask` must be a dense array of the shape of `X`; got a BCOO "
                        f"matrix (`mask.todense()`)")
    if not hasattr(mask, "dtype"):
        mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{fn}: `mask` must have the shape of `X`, {tuple(shape)}; got shape "
                         f"{tuple(mask.shape)}")
    if mask.dtype == jnp.bool_:
        return jnp.asarray(mask).astype(dtype)
    mask = _checks.as_float_array(fn, "mask", mask)
    check_values(fn, "mask", mask, checks)
    return mask.astype(dtype)


def check_factor(fn, name, F, shape, dtype, checks=False):
    F = _checks.as_float_array(fn, name, F)
    if tuple(F.shape) != tuple(shape):
        raise ValueError(f"{fn}: `{name}` must have shape {tuple(shape)}; got shape "
                         f"{tuple(F.shape)}")
    check_values(fn, name, F, checks)
    return F.astype(dtype)


def warm_start_factors(fn, warm_start, W_init, H_init):
    """(W, H) from ``warm_start`` (an NMFResult or a (W, H) pair) or the deprecated
    ``W_init``/``H_init`` keywords; None when no start is given."""
    for old, value in (("W_init", W_init), ("H_init", H_init)):
        if value is not None:
            _checks.warn_renamed(fn, old, "warm_start", stacklevel=4)
    if W_init is not None or H_init is not None:
        if warm_start is not None:
            raise ValueError(f"{fn}: give `warm_start` or the deprecated `W_init`/`H_init`, "
                             f"not both")
        if (W_init is None) != (H_init is None):
            raise ValueError(f"{fn}: give both `W_init` and `H_init` or neither; got only "
                             f"{'`W_init`' if H_init is None else '`H_init`'}")
        return W_init, H_init
    if warm_start is None:
        return None
    if hasattr(warm_start, "W") and hasattr(warm_start, "H"):  # an NMFResult
        return warm_start.W, warm_start.H
    if isinstance(warm_start, (tuple, list)) and len(warm_start) == 2:
        return tuple(warm_start)
    raise TypeError(f"{fn}: `warm_start` must be an NMFResult or a (W, H) pair of arrays; got "
                    f"{type(warm_start).__name__}")


def check_start(fn, solver, W0, H0):
    """Rejects starts the solver cannot leave: multiplicative updates keep a zero factor at
    zero, and W = H = 0 is a stationary point of every solver (the gradient vanishes)."""
    if not _checks.is_concrete((W0, H0)):
        return
    zero_w, zero_h = not np.any(np.asarray(W0)), not np.any(np.asarray(H0))
    if solver == "mu" and (zero_w or zero_h):
        name = "warm_start.W" if zero_w else "warm_start.H"
        raise ValueError(f"{fn}: `{name}` is all zeros; multiplicative updates (solver='mu') "
                         f"cannot move a factor away from 0. Start from positive values, e.g. "
                         f"init='nndsvda' or 'random'")
    if zero_w and zero_h:
        raise ValueError(f"{fn}: `warm_start` factors are all zeros, a stationary point that "
                         f"solver={solver!r} cannot leave; start from e.g. init='nndsvda'")


def regularization(fn, shape, alpha_W, alpha_H, l1_ratio, dtype):
    """scikit-learn's penalties: ``l1_W = alpha_W l1_ratio n``, ``l2_W = alpha_W (1 - l1_ratio)
    n`` and the same for H with m."""
    m, n = shape
    alpha_W = _checks.check_real(fn, "alpha_W", alpha_W, low=0.0)
    alpha_H = _checks.check_real(fn, "alpha_H", alpha_H, low=0.0)
    l1_ratio = _checks.check_real(fn, "l1_ratio", l1_ratio, low=0.0, high=1.0)
    aW, aH, r = (jnp.asarray(v, dtype) for v in (alpha_W, alpha_H, l1_ratio))
    return Reg(aW * r * n, aW * (1 - r) * n, aH * r * m, aH * (1 - r) * m)


# ------------------------------------------------------------------------------------------------
# Sharding: X split by rows; the mask like X; W like X's rows and H replicated


def row_layout(fn, X):
    """(X, layout): the layout of a dense X's rows (None: unsharded or sparse, the
    single-device kernels), X resharded by rows once with a UserWarning where it is split
    otherwise (columns, both dimensions)."""
    if isinstance(X, linop.SparseMatrix):
        return X, None
    X, layout = _sharding.rows_or_reshard(fn, "X", X)
    return (_sharding.one_device(X) if layout is None else X), layout


def like_rows(fn, name, x, layout, given):
    """``x`` (the mask) split by rows as X is (``layout``). A device array ``given`` split
    otherwise is resharded to X's layout once, with a UserWarning; a host array is placed."""
    if x is None or layout is None:
        return None if x is None else _sharding.one_device(x)
    rows, cols = _sharding.layout_of(fn, name, x)
    if cols is None and rows is not None and rows.axes == layout.axes and rows.mesh == layout.mesh:
        return x
    if isinstance(given, (jax.Array, jax.core.Tracer)):
        nbytes = int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
        warnings.warn(
            f"{fn}: `{name}` is not split like `X` ({layout.spec()}); it is resharded once to "
            f"X's layout, moving up to {nbytes:,} bytes between devices. Shard `{name}` like `X` "
            f"to avoid this.", UserWarning, stacklevel=3)
    return _sharding.reshard(x, layout)


def place(x, layout, *, replicated=False):
    """A factor placed for the sharded kernels: split by rows like X (W), or replicated (H)."""
    if layout is None:
        return _sharding.one_device(x)
    if replicated:
        return _sharding.place(x, layout.mesh, jax.sharding.PartitionSpec())
    rows, cols = _sharding.layout_of("", "", x)
    if cols is None and rows is not None and rows.axes == layout.axes:
        return x
    return _sharding.reshard(x, layout)

