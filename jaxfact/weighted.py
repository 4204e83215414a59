"""Weighted low-rank approximation (Srebro & Jaakkola 2003), with optional nuclear-norm shrinkage.

``wlra`` fits ``Z`` of rank at most k to a dense matrix whose entries are trusted unequally
(inverse noise variances, confidence counts, a 0/1 mask of observed entries). Each step fills in
the target where the weight is low and takes a truncated (and, with ``lam > 0``, soft-thresholded)
SVD: an EM / majorization-minimization step, so the weighted objective never increases.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import _checks
from jaxfact import _implicit_diff as _implicit
from jaxfact import _linalg
from jaxfact.completion import CompletionResult

__all__ = ["wlra"]

_COLD_PASSES = 5  # power iterations of the first step from a random start


def wlra(X: Any, weights: Any, rank: int, *, lam: Any = 0.0, max_iter: int = 500,
         tol: Any = 1e-7, key: Any = None, init: Any = None,
         n_power: int = 1, diff: _implicit.ImplicitDiff | None = None) -> CompletionResult:
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
    Stops when the relative decrease of f falls to ``tol`` or at ``max_iter``.

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
      key: random key for the starting block when ``init`` is None (None: ``jax.random.key(0)``).
      init: starting Z: a ``CompletionResult`` / ``SVDResult`` / (U, S, Vt) triple, or a dense
        (n1, n2) array (truncated to rank k by an exact SVD). Default: Z = 0.
      n_power: extra subspace iterations per step.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).

    Returns:
      ``CompletionResult`` with U (n1, k), S (k,), Vt (k, n2); ``residual`` is
      ``||sqrt(W) (X - Z)||_F / ||sqrt(W) X||_F``; ``history`` the objective f per iteration.

    Differentiable (reverse mode) w.r.t. ``X``, ``weights`` and ``lam``, by implicit
    differentiation of the fixed point ``Z = D_lam(LRA_k(W X + (1 - W) Z))`` at the returned
    solution: well defined for ``lam > 0`` (and for lam = 0 at an isolated local minimum with
    s_k > s_{k+1}); losses of Z and S are well defined, U, V up to rotations among tied values.
    Backward: one full SVD of an (n1, n2) matrix, then GMRES products of O(n1 n2 min(n1, n2))
    each; memory O(n1 n2), independent of ``max_iter``. Assumes the forward solve converged.

    Example::

      >>> W = 1.0 / sigma**2
      >>> res = wlra(X, W, 5)
      >>> Z = reconstruct(res[:3])

    References:
      N. Srebro, T. Jaakkola. Weighted low-rank approximations. ICML 2003, section 3 (EM).

    Deviations: the paper computes each LRA_k exactly; here it is one warm-started subspace
    iteration (``n_power + 1`` passes), a generalized EM step with the same fixed points.
    """
    fn = "wlra"
    X = _checks.as_float_array(fn, "X", X)
    W = weights
    if not hasattr(W, "dtype"):
        W = np.asarray(W)
    if jnp.issubdtype(W.dtype, jnp.integer) or W.dtype == bool:
        W = jnp.asarray(W).astype(X.dtype)
    W = _checks.as_float_array(fn, "weights", W).astype(X.dtype)
    _checks.check_same_shape(fn, "weights", W, X.shape, "X")
    n1, n2 = X.shape
    rank = _checks.check_rank(fn, rank, X.shape)
    lam = _checks.check_real(fn, "lam", lam, low=0.0)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    n_power = _checks.check_int(fn, "n_power", n_power, low=0)
    if _checks.is_concrete(W):
        with _checks.eager():  # also for a concrete W closed over by jit
            if bool(jnp.any(jnp.isnan(W))):
                raise ValueError(f"{fn}: `weights` must not contain NaN; got "
                                 f"{int(jnp.sum(jnp.isnan(W)))} NaN entries")
            _checks.check_finite(fn, "weights", W)
            _checks.check_nonnegative(fn, "weights", W)
            if not float(jnp.max(W)) > 0:
                raise ValueError(f"{fn}: `weights` must have a positive entry; got all zeros")
            if _checks.is_concrete(X) and not bool(jnp.all(jnp.isfinite(jnp.where(W > 0, X, 0)))):
                raise ValueError(f"{fn}: `X` must be finite where `weights` > 0 (NaN or Inf is "
                                 f"allowed only at zero weight)")
    key = jax.random.key(0) if key is None else _checks.check_key(fn, key)
    diff = _implicit.check_diff(fn, diff)
    U0, d0, V0, fresh = _init(fn, init, X.shape, rank, X.dtype)
    lam, tol = jnp.asarray(lam, X.dtype), jnp.asarray(tol, X.dtype)
    sg = jax.lax.stop_gradient
    res = _wlra(sg(X), sg(W), sg(U0), sg(d0), sg(V0), key, sg(lam), tol, max_iter=max_iter,
                n_power=n_power, fresh=fresh)
    return _implicit.wlra(res, X, W, lam, rank, diff)


# ------------------------------------------------------------------------------------------------
# Kernels (assume valid input)


def _init(fn, init, shape, k, dtype):
    n1, n2 = shape
    zeros = (jnp.zeros((n1, k), dtype), jnp.zeros((k,), dtype), jnp.zeros((n2, k), dtype))
    if init is None:
        return (*zeros, True)
    if hasattr(init, "shape") and len(init.shape) == 2:
        Z = _checks.as_float_array(fn, "init", init).astype(dtype)
        _checks.check_same_shape(fn, "init", Z, shape, "X")
        _checks.check_finite(fn, "init", Z)
        U, S, Vt = _linalg.truncated_svd(Z, k)
        return U, S, Vt.T, False
    U, S, Vt = _checks.check_factors(fn, "init", init, shape, dtype, "an (n1, n2) array or a "
                                     "(U, S, Vt) triple such as a CompletionResult")
    j = S.shape[0]
    if j >= k:
        return U[:, :k], S[:k], Vt[:k].T, False
    pad = k - j
    k1, k2 = jax.random.split(jax.random.key(1))
    # Extra components have S = 0; their Gaussian directions only seed the subspace iteration.
    U = jnp.concatenate([U, jax.random.normal(k1, (n1, pad), dtype)], axis=1)
    V = jnp.concatenate([Vt.T, jax.random.normal(k2, (n2, pad), dtype)], axis=1)
    return U, jnp.concatenate([S, jnp.zeros((pad,), dtype)]), V, False


@partial(jax.jit, static_argnames=("max_iter", "n_power", "fresh"))
def _wlra(X, W, U, d, V, key, lam, tol, *, max_iter, n_power, fresh):
    dtype = X.dtype
    W = W / jnp.max(W)
    X = jnp.where(W > 0, X, 0)   # zero-weight entries may hold NaN (missing values)
    if fresh:
        V = jax.random.normal(key, V.shape, dtype)
    first = _COLD_PASSES if fresh else n_power + 1

    def objective(U, d, V):
        R = X - (U * d) @ V.T
        return 0.5 * jnp.sum(W * R * R) + lam * jnp.sum(d)

    def cond(carry):
        k, _, _, _, _, _, _, done = carry
        return (k < max_iter) & ~done

    def body(carry):
        k, U, d, V, f, hist, ranks, _ = carry
        Z = (U * d) @ V.T
        A = Z + W * (X - Z)   # EM "fill in": W X + (1 - W) Z
        passes = jnp.where(k == 0, first, n_power + 1)
        U, s, V = _linalg.subspace_svd(lambda B: A @ B, lambda B: A.T @ B, V, passes, X.shape)
        d = jnp.maximum(s - lam, 0)
        f_new = objective(U, d, V)
        # Relative decrease; f = 0 (an exact fit) is converged. tol = 0 runs every iteration:
        # the decrease of f resolves Z only to ~sqrt(eps), too coarse for derivatives.
        done = (tol > 0) & ((f - f_new) <= tol * jnp.where(f > 0, f, 0))
        return (k + 1, U, d, V, f_new, hist.at[k].set(f_new),
                ranks.at[k].set(jnp.sum(d > 0).astype(jnp.int32)), done)

    f0 = objective(U, d, V)
    carry = (jnp.zeros((), jnp.int32), U, d, V, f0, jnp.full((max_iter,), jnp.nan, dtype),
             jnp.full((max_iter,), -1, jnp.int32), jnp.zeros((), bool))
    k, U, d, V, f, hist, ranks, done = jax.lax.while_loop(cond, body, carry)
    norm = jnp.sqrt(jnp.sum(W * X * X))
    R = X - (U * d) @ V.T
    res = jnp.sqrt(jnp.sum(W * R * R)) / jnp.where(norm > 0, norm, 1)
    U, d, Vt = _linalg.flip(U, d, V.T)
    return CompletionResult(U, d, Vt, k, done, res, hist, ranks)
