"""Weighted low-rank approximation (Srebro & Jaakkola 2003), with optional nuclear-norm shrinkage.

``wlra`` fits ``Z`` of rank at most k to a dense matrix whose entries are trusted unequally
(inverse noise variances, confidence counts, a 0/1 mask of observed entries). Each step fills in
the target where the weight is low and takes a truncated (and, with ``lam > 0``, soft-thresholded)
SVD: an EM / majorization-minimization step, so the weighted objective never increases.

X and the weights may be split by rows over the devices of a mesh: each device then keeps its
rows of X, W and of the factor U, V is replicated, and only (n2, k) and (p k, k) blocks and
scalars cross devices (see :func:`wlra`).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from jaxfact import _checks
from jaxfact import _completion
from jaxfact import _implicit_diff as _implicit
from jaxfact import _linalg
from jaxfact import _sharding
from jaxfact import _solver
from jaxfact.completion import CompletionResult

__all__ = ["wlra"]


def wlra(X: Any, weights: Any, rank: int, *, lam: Any = 0.0, max_iter: int = 500,
         tol: Any = 1e-7, key: Any = None, warm_start: Any = None, n_power: int = 1,
         diff: _implicit.ImplicitDiff | None = None, checks: bool = False,
         init: Any = None) -> CompletionResult:
    """Weighted low-rank approximation by EM / proximal gradient (Srebro & Jaakkola 2003).

    Minimizes ``f(Z) = 1/2 ||sqrt(W) * (X - Z)||_F^2 + lam ||Z||_*`` over rank(Z) <= ``rank``,
    with ``W = weights / max(weights)``. Each step is

        ``Z <- D_lam(LRA_k(W * X + (1 - W) * Z))``

    (``LRA_k``: best rank-k approximation, ``D_lam``: singular value soft-thresholding). With
    ``lam = 0`` this is the EM algorithm of Srebro & Jaakkola (section 3: "fill in" the low-weight
    entries from the current estimate, then truncate); with ``lam > 0`` it is the proximal gradient
    step with step size 1/max(W) = 1 for the nuclear-norm penalized problem, so 0/1 weights give
    SoftImpute on a dense grid. Both majorize f, so ``history`` never increases. The SVD of each
    step is a block subspace iteration warm-started from Z's right singular vectors; every such
    step minimizes the majorizer over a subspace holding the previous Z, so monotonicity is kept.
    Stops when the relative decrease of f falls to ``tol`` (``Status.CONVERGED``) or at
    ``max_iter`` (``Status.MAX_ITER``).

    Entries with zero weight are ignored, so ``X`` may hold NaN there (missing values).

    Cost per step: O(n1 n2 k (n_power + 1)) (dense products with the (n1, n2) matrix).

    Args:
      X: (n1, n2) real floating array.
      weights: (n1, n2) non-negative finite weights with a positive maximum (e.g. 1 / sigma_ij^2,
        or a 0/1 mask); integer and boolean arrays are accepted.
      rank: k, 1 <= k <= min(n1, n2).
      lam: nuclear-norm weight >= 0, on the scale of the normalized weights (traced).
      max_iter: iteration cap.
      tol: stopping tolerance on ``(f_old - f_new) / f_old`` (traced); 0 runs all ``max_iter``
        iterations.
      key: random key for the starting block of the first step from Z = 0 (``warm_start`` None)
        and for the directions that pad a warm start of rank below k; ``None`` uses
        ``jax.random.key(0)``. The start is Z = 0 whatever the key, which only seeds the
        subspace iteration of the first step (its LRA_k(W X)): the result does not depend on it
        beyond the tolerance (tests compare two keys).
      warm_start: starting Z: a ``CompletionResult`` / ``SVDResult`` / (U, S, Vt) triple, or a
        dense (n1, n2) array (truncated to rank k by an exact SVD). Default: Z = 0. (``init`` is
        its deprecated name.)
      n_power: extra subspace iterations per step.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).
      checks: under an outer ``jit``, also check that ``weights`` are finite and non-negative
        and ``X`` finite where ``weights > 0``, with ``jax.experimental.checkify`` (wrap the
        jitted caller in ``checkify.checkify``).

    Returns:
      ``CompletionResult`` with U (n1, k), S (k,), Vt (k, n2); ``residual`` is
      ``||sqrt(W) (X - Z)||_F / ||sqrt(W) X||_F`` (``residual_history`` after each iteration);
      ``history`` the objective f after each iteration (non-increasing).

    Differentiable (reverse mode) w.r.t. ``X``, ``weights`` and ``lam``, by implicit
    differentiation of the fixed point ``Z = D_lam(LRA_k(W X + (1 - W) Z))`` at the returned
    solution: well defined for ``lam > 0`` (and for lam = 0 at an isolated local minimum with
    s_k > s_{k+1}); losses of Z and S are well defined, U, V up to rotations among tied values.
    Backward: one full SVD of an (n1, n2) matrix, then GMRES products of O(n1 n2 min(n1, n2))
    each; memory O(n1 n2), independent of ``max_iter``. Assumes the forward solve converged.

    Example:

      >>> rng = np.random.default_rng(0)
      >>> L = rng.standard_normal((20, 2)) @ rng.standard_normal((2, 15))
      >>> sigma = rng.uniform(0.1, 1.0, (20, 15))
      >>> X = (L + sigma * rng.standard_normal((20, 15))).astype(np.float32)
      >>> res = wlra(X, (1 / sigma**2).astype(np.float32), 2, max_iter=1000, tol=1e-6)
      >>> print(jaxfact.Status(int(res.status)).name, jaxfact.reconstruct(res).shape)
      CONVERGED (20, 15)

    Sharding: ``X`` and ``weights`` may be split by rows over mesh axes
    (``P("data", None)``); U comes back split the same way, S, Vt and the rest replicated. Each
    device keeps its rows of X, W and Z; per subspace pass one psum of the (n2, k) block
    ``A^T Q`` and TSQR's (p k, k) stack of R factors cross devices, per iteration the psum'd
    objective (a scalar, so the stopping test is the same everywhere), and once the maximum
    weight. ``X`` split by columns (or both dimensions), or ``weights`` split otherwise than
    ``X``, is resharded once with a ``UserWarning``. A split dense ``warm_start`` is gathered
    for its truncated SVD, with a ``UserWarning``; a factored one (a ``CompletionResult``)
    stays split. The implicit gradient is not available for split input (``grad`` raises a
    TypeError): differentiate with unsplit arrays.

    References:
      N. Srebro, T. Jaakkola. Weighted low-rank approximations. ICML 2003, section 3 (EM).

    Deviations: the paper computes each LRA_k exactly; here it is one warm-started subspace
    iteration (``n_power + 1`` passes), a generalized EM step with the same fixed points.
    """
    fn = "wlra"
    if init is not None:
        if warm_start is not None:
            raise TypeError(f"{fn}: pass `warm_start` only; `init` is its deprecated name")
        _checks.warn_renamed(fn, "init", "warm_start")
        warm_start = init
    X, layout = _layouts(fn, X, weights)
    if layout is not None:
        X, weights = layout[1], layout[2]
        layout = layout[0]
    else:
        weights = _sharding.one_device(weights)
    X = _checks.as_float_array(fn, "X", X)
    W = weights
    if not hasattr(W, "dtype"):
        W = np.asarray(W)
    if jnp.issubdtype(W.dtype, jnp.integer) or W.dtype == bool:
        W = jnp.asarray(W).astype(X.dtype)
    W = _checks.as_float_array(fn, "weights", W).astype(X.dtype)
    _checks.check_same_shape(fn, "weights", W, X.shape, "X")
    rank = _checks.check_rank(fn, rank, X.shape)
    lam = _checks.check_real(fn, "lam", lam, low=0.0)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    n_power = _checks.check_int(fn, "n_power", n_power, low=0)
    _check_values(fn, X, W, checks)
    key = jax.random.key(0) if key is None else _checks.check_key(fn, key)
    diff = _implicit.check_diff(fn, diff)
    U0, d0, V0 = _start(fn, warm_start, X.shape, rank, X.dtype, key)
    lam, tol = jnp.asarray(lam, X.dtype), jnp.asarray(tol, X.dtype)
    sg = jax.lax.stop_gradient
    if layout is not None:
        from jax.sharding import PartitionSpec as P
        from jaxfact.completion import _only_jit
        _only_jit(fn, X=X, weights=W, lam=lam)
        mesh, row = layout.mesh, layout.spec(2, 0)
        U0 = _sharding.place(U0, mesh, row)
        d0, V0, lam, tol = (_sharding.place(jnp.asarray(a), mesh, P())
                            for a in (d0, V0, lam, tol))
        res = _wlra_sharded(sg(X), sg(W), sg(U0), sg(d0), sg(V0), key, sg(lam), tol,
                            mesh=mesh, axes=layout.axes, max_iter=max_iter, n_power=n_power,
                            fresh=warm_start is None)
        return _implicit.wlra(res, X, W, lam, rank, diff)
    res = _wlra(sg(X), sg(W), sg(U0), sg(d0), sg(V0), key, sg(lam), tol, max_iter=max_iter,
                n_power=n_power, fresh=warm_start is None)
    return _implicit.wlra(res, X, W, lam, rank, diff)


def _check_values(fn, X, W, checks):
    """Weights finite, non-negative, not all zero; X finite where the weight is positive."""
    if _checks.is_concrete(W):
        with _checks.eager():  # also for a concrete W closed over by jit
            if bool(jnp.any(jnp.isnan(W))):
                raise ValueError(f"{fn}: `weights` must not contain NaN; got "
                                 f"{int(jnp.sum(jnp.isnan(W)))} NaN entries")
            _checks.check_finite(fn, "weights", W)
            _checks.check_nonnegative(fn, "weights", W)
            if not float(jnp.max(W)) > 0:
                raise ValueError(f"{fn}: `weights` must have a positive entry; got all zeros")
    else:
        _checks.check_finite(fn, "weights", W, checks)
        _checks.check_nonnegative(fn, "weights", W, checks)
    if _checks.is_concrete((X, W)):
        with _checks.eager():
            if not bool(jnp.all(jnp.isfinite(jnp.where(W > 0, X, 0)))):
                raise ValueError(f"{fn}: `X` must be finite where `weights` > 0 (NaN or Inf is "
                                 f"allowed only at zero weight)")
    elif checks:
        checkify.check(jnp.all(jnp.isfinite(jnp.where(W > 0, X, 0))),
                       f"{fn}: `X` must be finite where `weights` > 0")


def _start(fn, warm_start, shape, k, dtype, key):
    """(U (n1, k), d (k,), V (n2, k)) of the starting Z (placeholders for Z = 0)."""
    n1, n2 = shape
    if warm_start is None:
        return jnp.zeros((n1, k), dtype), jnp.zeros((k,), dtype), jnp.zeros((n2, k), dtype)
    if hasattr(warm_start, "shape") and len(warm_start.shape) == 2:
        z_rows, z_cols = _sharding.layout_of(fn, "warm_start", warm_start)
        if z_rows is not None or z_cols is not None:
            from jax.sharding import PartitionSpec as P
            nbytes = int(np.prod(warm_start.shape)) * jnp.dtype(warm_start.dtype).itemsize
            warnings.warn(
                f"{fn}: a dense `warm_start` is truncated by an SVD on every device, so the split "
                f"array is gathered once ({nbytes:,} bytes to each device). Pass a factored "
                f"warm start (a CompletionResult or (U, S, Vt)) to keep it split.",
                UserWarning, stacklevel=3)
            warm_start = _sharding.place(warm_start, (z_rows or z_cols).mesh, P())
        warm_start = _sharding.one_device(warm_start)
        Z = _checks.as_float_array(fn, "warm_start", warm_start).astype(dtype)
        _checks.check_same_shape(fn, "warm_start", Z, shape, "X")
        _checks.check_finite(fn, "warm_start", Z)
        U, S, Vt = _linalg.truncated_svd(Z, k)
        return U, S, Vt.T
    U, S, Vt = _checks.check_factors(fn, "warm_start", warm_start, shape, dtype, "an (n1, n2) "
                                     "array or a (U, S, Vt) triple such as a CompletionResult")
    return _completion.start_factors(U, S, Vt, key, k)


class _Iterate(NamedTuple):
    U: jax.Array  # (n1, k)   Z = U diag(d) V^T
    d: jax.Array  # (k,)
    V: jax.Array  # (n2, k)


@partial(jax.jit, static_argnames=("max_iter", "n_power", "fresh"))
def _wlra(X, W, U, d, V, key, lam, tol, *, max_iter, n_power, fresh):
    if fresh:
        V = jax.random.normal(key, V.shape, X.dtype)
    first = _completion.COLD_PASSES if fresh else n_power + 1

    def subspace(A, V, passes):
        return _linalg.subspace_svd(lambda B: A @ B, lambda B: A.T @ B, V, passes, A.shape)

    state, it, residual = _iterations(X, W, U, d, V, lam, tol, max_iter=max_iter, first=first,
                                      n_power=n_power, subspace=subspace)
    return _completion.completed(state, it.U, it.d, it.V, residual)


def _iterations(X, W, U, d, V, lam, tol, *, max_iter, first, n_power, subspace,
                psum=lambda x: x, pmax=lambda x: x):
    """The EM / proximal iterations of :func:`wlra`, on one device or (with ``psum``/``pmax``
    over the devices holding X's rows, and a ``subspace`` SVD of split rows) in a shard_map."""
    dtype = X.dtype
    W = W / pmax(jnp.max(W))
    X = jnp.where(W > 0, X, 0)   # zero-weight entries may hold NaN (missing values)
    norm = jnp.sqrt(psum(jnp.sum(W * X * X)))
    norm = jnp.where(norm > 0, norm, 1)

    def weighted_sq(U, d, V):
        R = X - (U * d[None, :]) @ V.T
        return psum(jnp.sum(W * R * R))

    def update(it, n_iter):
        Z = (it.U * it.d[None, :]) @ it.V.T
        A = Z + W * (X - Z)   # EM "fill in": W X + (1 - W) Z
        passes = jnp.where(n_iter == 0, first, n_power + 1)
        U, s, V = subspace(A, it.V, passes)
        d = jnp.maximum(s - lam, 0)
        sq = weighted_sq(U, d, V)
        record = _completion.Record(jnp.sum(d > 0).astype(jnp.int32), jnp.sqrt(sq) / norm)
        return _Iterate(U, d, V), 0.5 * sq + lam * jnp.sum(d), record

    f0 = 0.5 * weighted_sq(U, d, V) + lam * jnp.sum(d)

    def stop(state):
        # Relative decrease; f = 0 (an exact fit) is converged. tol = 0 runs every iteration:
        # the decrease of f resolves Z only to ~sqrt(eps), too coarse for derivatives.
        return _solver.status_of(_solver.relative_decrease_below(state, tol, f0))

    record = _completion.Record(jnp.zeros((), jnp.int32), jnp.zeros((), dtype))
    state = _solver.run(update, stop, _solver.start(_Iterate(U, d, V), max_iter=max_iter,
                                                    dtype=dtype, record=record))
    it = state.iterate
    return state, it, jnp.sqrt(weighted_sq(it.U, it.d, it.V)) / norm


# ------------------------------------------------------------------------------------------------
# Sharded: X, weights and U split by rows, V replicated


def _layouts(fn, X, weights):
    """(X, None) when neither X nor weights is split by a NamedSharding; else
    (X, (layout, X, weights)) with both on X's row layout (or weights', when only they are
    split). One that is split differently is resharded once with a UserWarning."""
    x_rows, x_cols = _sharding.layout_of(fn, "X", X)
    w_rows, w_cols = _sharding.layout_of(fn, "weights", weights)
    if any(lay is not None for lay in (x_rows, x_cols, w_rows, w_cols)):
        from jaxfact.completion import _only_jit
        _only_jit(fn, X=X, weights=weights)
    if x_rows is None and x_cols is None and w_rows is None and w_cols is None:
        # A mesh axis of size 1 splitting the rows: the sharded kernel, on one device.
        one = _sharding.layout_of(fn, "X", X)[0]
        if one is not None and _sharding.layout_of(fn, "weights", weights)[0] == one:
            return X, (one, X, weights)
        return _sharding.one_device(X), None
    if x_rows is not None or x_cols is not None:
        X, layout = _sharding.rows_or_reshard(fn, "X", X)
        other, other_name, other_layout = weights, "weights", (w_rows, w_cols)
    else:
        weights, layout = _sharding.rows_or_reshard(fn, "weights", weights)
        other, other_name, other_layout = X, "X", (x_rows, x_cols)
    same = (other_layout[1] is None and other_layout[0] is not None
            and other_layout[0].axes == layout.axes
            and dict(other_layout[0].mesh.shape) == dict(layout.mesh.shape))
    if not same:
        if other_layout != (None, None):
            nbytes = int(np.prod(other.shape)) * jnp.dtype(other.dtype).itemsize
            warnings.warn(
                f"{fn}: `{other_name}` is sharded differently from the data's row split "
                f"{layout.spec()}; it is resharded once to {layout.spec()}, moving up to "
                f"{nbytes:,} bytes between devices. Shard `X` and `weights` alike.",
                UserWarning, stacklevel=3)
        other = _sharding.reshard(jnp.asarray(other) if not hasattr(other, "dtype")
                                  else other, layout)
    if other_name == "weights":
        weights = other
    else:
        X = other
    return X, (layout, X, weights)


@partial(jax.jit, static_argnames=("mesh", "axes", "max_iter", "n_power", "fresh"))
def _wlra_sharded(X, W, U, d, V, key, lam, tol, *, mesh, axes, max_iter, n_power, fresh):
    """:func:`_wlra` with X, W and U split by rows over ``axes`` of ``mesh``: per subspace pass a
    psum of A^T Q (n2, K) and TSQR's (p K, K) stack; per iteration a psum'd objective."""
    from jax.sharding import PartitionSpec as P
    dtype = X.dtype
    row = axes[0] if len(axes) == 1 else axes
    mb = X.shape[0] // int(np.prod([mesh.shape[a] for a in axes]))
    if fresh:
        V = jax.random.normal(key, V.shape, dtype)
    first = _completion.COLD_PASSES if fresh else n_power + 1

    def body(X, W, U, d, V, lam, tol):
        psum = lambda x: jax.lax.psum(x, axes)  # noqa: E731

        def subspace(A, V, passes):
            return _completion.sharded_subspace_svd(lambda B: A @ B, lambda Q: psum(A.T @ Q),
                                                    V, passes, mb, axes)

        state, it, residual = _iterations(
            X, W, U, d, V, lam, tol, max_iter=max_iter, first=first, n_power=n_power,
            subspace=subspace, psum=psum, pmax=lambda x: jax.lax.pmax(x, axes))
        return _completion.completed_sharded(state, it.U, it.d, it.V, residual, axes)

    in_specs = (P(row, None), P(row, None), P(row, None), P(), P(), P(), P())
    return _completion._shard_map(body, mesh, axes, in_specs, _completion._result_specs(row))(
        X, W, U, d, V, lam, tol)
