"""Matrix completion from observed entries: SVT (Cai, Candès & Shen 2010) and SoftImpute
(Mazumder, Hastie & Tibshirani 2010).

Both work on the observed entries only. The data are ``(rows, cols, values, shape)``; an iterate X
is kept as factors ``U diag(S) Vt`` and read at the observed positions by gathering rows of U and
V (O(nnz k)); no dense n1 x n2 array is formed. The partial SVDs are block subspace iterations
warm-started from the previous iterate's singular vectors: the iterates change little from one
step to the next, so a couple of products with the sparse (or sparse-plus-low-rank) matrix per
step give singular triplets as accurate as a fresh Lanczos run, at O(nnz k) each.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import _checks
from jaxfact import _implicit_diff as _implicit
from jaxfact import linop
from jaxfact import _linalg

__all__ = ["CompletionResult", "svt", "soft_impute", "soft_impute_path"]

# SVT keeps at least this many computed singular values at or below tau (the paper's rank
# increment l = 5): they certify that no singular value above tau was missed and serve as the
# oversampling that makes the warm-started subspace iteration accurate.
_MARGIN = 5
_DIVERGED = 1e5  # SVT.m declares divergence when the relative residual exceeds this

# status codes of the SVT loop
_RUNNING, _CONVERGED, _FULL, _DIVERGED_STATUS, _START = 0, 1, 2, 3, 4
_START_PASSES = 10  # power iterations for ||P_Omega M||_2 and the first subspace


class CompletionResult(NamedTuple):
    """A completed (or weighted low-rank) matrix ``X = U @ diag(S) @ Vt``, kept factored.

    Unused components of the rank buffer have ``S == 0``; for :func:`svt` (concrete input) the
    buffer is trimmed to the final rank.
    """

    U: jax.Array          # (n1, k), orthonormal columns
    S: jax.Array          # (k,), non-negative, descending
    Vt: jax.Array         # (k, n2), orthonormal rows
    n_iter: jax.Array     # () int32, iterations run
    converged: jax.Array  # () bool, the stopping rule was met within max_iter
    residual: jax.Array   # () relative residual on the data at the end (see each function)
    history: jax.Array    # (max_iter,) per iteration (residual for svt, objective otherwise); NaN
                          # after n_iter
    rank_history: jax.Array  # (max_iter,) int32, rank of X at each iteration; -1 after n_iter


# ------------------------------------------------------------------------------------------------
# Public functions


def svt(rows: Any, cols: Any, values: Any, shape: tuple[int, int], *, tau: Any = None,
        delta: Any = None, tol: Any = 1e-4, max_iter: int = 500, key: Any = None,
        buffer_size: int = 16, n_power: int = 1) -> CompletionResult:
    """Singular value thresholding for matrix completion (Cai, Candès & Shen 2010).

    Approximately solves ``min tau ||X||_* + 1/2 ||X||_F^2  s.t.  X_ij = M_ij on Omega`` (close to
    the nuclear-norm minimizer for large tau) by the iteration of the paper's eq. (3.2)::

        X^k = D_tau(Y^{k-1}),   Y^k = Y^{k-1} + delta P_Omega(M - X^k)

    with the section 5.1 recipe: kicking start ``Y^{k0} = k0 delta P_Omega(M)`` with
    ``k0 = ceil(tau / (delta ||P_Omega M||_2))``, and stop when
    ``||P_Omega(X^k - M)||_F / ||P_Omega M||_F <= tol`` (or when it exceeds 1e5, a divergence).
    Y is sparse (its values on Omega); ``D_tau`` needs only the singular triplets of Y above tau,
    computed by a subspace iteration warm-started from the previous step's singular vectors with at
    least 5 computed values at or below tau (the paper's rank increment l = 5). The rank lives in a
    buffer of ``buffer_size`` components; when it fills, the buffer doubles and the solve goes on
    (one compilation per size). Iterations run in ``lax.while_loop``.

    Cost per iteration: ``2 (n_power + 1)`` products of the sparse Y with (n, k) blocks,
    O(nnz k) each, plus O((n1 + n2) k^2) for orthonormalization; k = buffer size.

    Args:
      rows, cols: (nnz,) integer indices of the observed entries, each pair at most once.
      values: (nnz,) float observed values M_ij (float32, or float64 with x64 enabled).
      shape: (n1, n2).
      tau: threshold; default ``5 sqrt(n1 n2)`` (the paper's 5n).
      delta: step size; default ``1.2 n1 n2 / nnz`` (the paper's 1.2 / p).
      tol: stopping tolerance on the relative residual on Omega (paper: 1e-4).
      max_iter: iteration cap (SVT.m: 500).
      key: ``jax.random`` key for the starting block of the first subspace iteration; ``None``
        uses ``jax.random.key(0)``. The iterates do not depend on it beyond rounding.
      buffer_size: initial size of the rank buffer (it doubles when needed).
      n_power: extra subspace (power) iterations per SVT step (1 matches full-accuracy SVDs).

    Returns:
      ``CompletionResult``: ``X^k = U diag(S) Vt`` with ``U`` (n1, r), ``S`` (r,), ``Vt``
      (r, n2) for the final rank r; ``residual`` the final relative residual on Omega;
      ``history`` the relative residual per iteration; ``rank_history`` the rank of X^k.
      Under an outer ``jit`` the buffer cannot grow: it stays at ``buffer_size`` (untrimmed)
      and ``converged`` is False if it filled.

    Example::

      >>> res = svt(rows, cols, values, (1000, 1000))
      >>> res.n_iter, res.S.shape
      >>> x = predict(res, test_rows, test_cols)

    References:
      J.-F. Cai, E. J. Candès, Z. Shen. A singular value thresholding algorithm for matrix
      completion. SIAM J. Optim. 20(4), 2010. Eq. (3.2), section 5.1.1.

    Deviations: the paper recomputes each partial SVD from scratch with PROPACK (Lanczos) and grows
    the number of computed values by 5 until one is at or below tau; here a fixed-size block
    (at least 5 values below tau) is carried from step to step, which gives the same iterates to
    rounding.
    """
    fn = "svt"
    rows, cols, values, (n1, n2) = _checks.check_observed(fn, rows, cols, values, shape)
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    n_power = _checks.check_int(fn, "n_power", n_power, low=0)
    nmin = min(n1, n2)
    buffer_size = _checks.check_int(fn, "buffer_size", buffer_size, low=1)
    nnz = values.shape[0]
    dtype = values.dtype
    tau = 5.0 * math.sqrt(n1 * n2) if tau is None else _checks.check_real(fn, "tau", tau, low=0.0,
                                                                           low_open=True)
    delta = (1.2 * n1 * n2 / nnz if delta is None
             else _checks.check_real(fn, "delta", delta, low=0.0, low_open=True))
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    key = jax.random.key(0) if key is None else _checks.check_key(fn, key)
    tau, delta, tol = (jnp.asarray(v, dtype) for v in (tau, delta, tol))

    K = min(buffer_size, nmin)
    state, result = _svt_run(None, key, rows, cols, values, tau, delta, tol, shape=(n1, n2),
                             K=K, max_iter=max_iter, n_power=n_power)
    # Traced under an outer jit, also when every input is concrete (closed over by the jitted
    # function): then the buffer cannot grow.
    concrete = _checks.is_concrete(state.status)
    while concrete and int(state.status) == _FULL and K < nmin:
        # The buffer filled: double it (new random directions next to the computed subspace) and
        # redo the step that filled it. One compilation per buffer size.
        K = min(2 * K, nmin)
        key, sub = jax.random.split(key)
        state, result = _svt_run(state, sub, rows, cols, values, tau, delta, tol,
                                 shape=(n1, n2), K=K, max_iter=max_iter, n_power=n_power)
    if concrete:
        r = int(jnp.sum(result.S > 0))
        result = result._replace(U=result.U[:, :r], S=result.S[:r], Vt=result.Vt[:r])
    return result


def soft_impute(rows: Any, cols: Any, values: Any, shape: tuple[int, int], *, lam: Any,
                max_rank: int, tol: Any = 1e-5, max_iter: int = 100, key: Any = None,
                warm_start: Any = None, n_power: int = 1,
                diff: _implicit.ImplicitDiff | None = None) -> CompletionResult:
    """SoftImpute: nuclear-norm regularized completion (Mazumder, Hastie & Tibshirani 2010).

    Minimizes ``1/2 ||P_Omega(X - Z)||_F^2 + lam ||Z||_*`` over rank(Z) <= ``max_rank`` by the
    paper's Algorithm 1, ``Z <- D_lam(P_Omega(X) + P_Omega^perp(Z))``, stopping when
    ``||Z_old - Z||^2 / ||Z_old||^2 < tol`` (the paper's criterion, measured on the observed
    entries) or at ``max_iter``.
    ``P_Omega(X) + P_Omega^perp(Z) = P_Omega(X - Z) + Z`` is "sparse plus low rank", so products
    with it cost O(nnz k + (n1 + n2) k^2) and no dense matrix is formed. Each step's SVD is a
    block subspace iteration started from Z's right singular vectors; every such step is the
    exact minimizer of the paper's majorizer over a subspace that contains the previous iterate,
    so the objective never increases (``history``) and the fixed points are SoftImpute's.

    Args:
      rows, cols, values, shape: the observed entries, as for :func:`svt`.
      lam: regularization lambda >= 0 (traced: a new value does not recompile).
      max_rank: rank cap k (the buffer size); choose it above the rank of the solution.
      tol: stopping tolerance on the relative change.
      max_iter: iteration cap.
      key: random key for the starting subspace when ``warm_start`` is None (None: key(0)).
      warm_start: a previous ``CompletionResult`` (or (U, S, Vt)) to start from.
      n_power: extra subspace iterations per step.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).

    Returns:
      ``CompletionResult`` with U (n1, k), S (k,), Vt (k, n2) (S == 0 beyond the solution's
      rank), ``residual = ||P_Omega(Z - X)||_F / ||P_Omega X||_F`` and ``history`` the objective.

    Differentiable (reverse mode) w.r.t. ``values`` and ``lam``, by implicit differentiation of
    the fixed point ``Z = D_lam(P_Omega(X) + P_Omega^perp(Z))`` at the returned solution (not
    through the iterations): losses of ``Z = U diag(S) Vt`` (e.g. :func:`predict`) and of S are
    well defined; U, V are defined up to rotations among tied singular values, and components
    with S == 0 get no gradient. The backward pass forms the dense n1 x n2 Z and takes one full
    SVD, O(n1 n2 min(n1, n2)), then GMRES products of O(n1 n2 min(n1, n2)) each; its memory is
    O(n1 n2) whatever ``max_iter``. It assumes the forward solve converged (``converged``).

    Example::

      >>> res = soft_impute(rows, cols, values, (500, 400), lam=5.0, max_rank=20)
      >>> pred = predict(res, test_rows, test_cols)

    References:
      R. Mazumder, T. Hastie, R. Tibshirani. Spectral regularization algorithms for learning large
      incomplete matrices. JMLR 11, 2010. Algorithm 1, section 5.1 (sparse plus low rank).

    Deviations: the paper computes each SVD to convergence with PROPACK; here each step does
    ``n_power + 1`` warm-started subspace iterations (as in the later "softImpute-ALS" of
    Hastie et al. 2015), which keeps the objective monotone and converges to the same solution.
    The relative change is measured on the observed entries (computing it on the whole matrix
    from the factors loses half the digits to cancellation).
    """
    fn = "soft_impute"
    rows, cols, values, (n1, n2) = _checks.check_observed(fn, rows, cols, values, shape)
    max_rank = _checks.check_rank(fn, max_rank, (n1, n2), name="max_rank")
    lam = _checks.check_real(fn, "lam", lam, low=0.0)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    n_power = _checks.check_int(fn, "n_power", n_power, low=0)
    key = jax.random.key(0) if key is None else _checks.check_key(fn, key)
    diff = _implicit.check_diff(fn, diff)
    U0, d0, V0 = _start(fn, warm_start, (n1, n2), max_rank, values.dtype)
    lam, tol = jnp.asarray(lam, values.dtype), jnp.asarray(tol, values.dtype)
    sg = jax.lax.stop_gradient
    res = _soft_impute(rows, cols, sg(values), sg(U0), sg(d0), sg(V0), key, sg(lam), tol,
                       shape=(n1, n2), max_iter=max_iter, n_power=n_power,
                       fresh=warm_start is None)
    return _implicit.soft_impute(res, rows, cols, values, lam, max_rank, diff)


def soft_impute_path(rows: Any, cols: Any, values: Any, shape: tuple[int, int], *, lams: Any,
                     max_rank: int, tol: Any = 1e-5, max_iter: int = 100, key: Any = None,
                     warm_start: Any = None, n_power: int = 1,
                     diff: _implicit.ImplicitDiff | None = None) -> CompletionResult:
    """SoftImpute along a grid of ``lams`` (best decreasing), each fit warm-started from the last.

    This is the paper's Algorithm 1 path (Mazumder et al. 2010, section 3): the solution for one
    lambda is an excellent start for the next smaller one. The whole path runs in one compiled
    ``lax.scan``. Cost: that of :func:`soft_impute` per lambda, usually far fewer iterations
    each than from a cold start.

    Args:
      rows, cols, values, shape: the observed entries, as for :func:`svt`.
      lams: (L,) non-negative lambdas, best in decreasing order.
      max_rank, tol, max_iter, key, n_power: as for :func:`soft_impute` (per lambda).
      warm_start: optional start for the first lambda.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).

    Returns:
      A ``CompletionResult`` whose fields have a leading axis of length ``len(lams)``; take one
      fit with ``jax.tree.map(lambda a: a[i], path)``.

    Differentiable w.r.t. ``values`` and ``lams`` as :func:`soft_impute` is, fit by fit (each
    fit is the solution for its lambda, whatever its warm start).

    Example::

      >>> lam_max = randomized_svd(ObservedMatrix(rows, cols, values, shape), 1, key=key).S[0]
      >>> lams = lam_max * jnp.geomspace(1, 1e-2, 10)
      >>> path = soft_impute_path(rows, cols, values, shape, lams=lams, max_rank=30)
    """
    fn = "soft_impute_path"
    rows, cols, values, (n1, n2) = _checks.check_observed(fn, rows, cols, values, shape)
    max_rank = _checks.check_rank(fn, max_rank, (n1, n2), name="max_rank")
    lams = _checks.as_float_array(fn, "lams", lams, ndim=1).astype(values.dtype)
    if lams.shape[0] == 0:
        raise ValueError(f"{fn}: `lams` must hold at least one value; got an empty array")
    _checks.check_finite(fn, "lams", lams)
    _checks.check_nonnegative(fn, "lams", lams)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    n_power = _checks.check_int(fn, "n_power", n_power, low=0)
    key = jax.random.key(0) if key is None else _checks.check_key(fn, key)
    diff = _implicit.check_diff(fn, diff)
    U0, d0, V0 = _start(fn, warm_start, (n1, n2), max_rank, values.dtype)
    tol = jnp.asarray(tol, values.dtype)
    sg = jax.lax.stop_gradient
    path = _soft_impute_path(rows, cols, sg(values), sg(U0), sg(d0), sg(V0), key, sg(lams), tol,
                             shape=(n1, n2), max_iter=max_iter, n_power=n_power,
                             fresh=warm_start is None)
    return _implicit.soft_impute_path(path, rows, cols, values, lams, max_rank, diff)


# ------------------------------------------------------------------------------------------------
# Kernels (assume valid input)


class _SVTState(NamedTuple):
    k: jax.Array          # () int32, iterations done
    y: jax.Array          # (nnz,) Y on Omega
    U: jax.Array          # (n1, K) left singular vectors of the last Y
    s: jax.Array          # (K,) its singular values (X = U diag(max(s - tau, 0)) V^T)
    V: jax.Array          # (n2, K)
    residual: jax.Array   # ()
    history: jax.Array    # (max_iter,)
    ranks: jax.Array      # (max_iter,) int32
    status: jax.Array     # () int32: _START, _RUNNING, _CONVERGED, _FULL, _DIVERGED_STATUS


def _svt_start(key, b, shape, K, max_iter):
    n1, n2 = shape
    # A Gaussian start block; the first pass orthonormalizes Y V, so V need not be orthonormal.
    V = jax.random.normal(key, (n2, K), b.dtype)
    return _SVTState(jnp.zeros((), jnp.int32), jnp.zeros_like(b), jnp.zeros((n1, K), b.dtype),
                     jnp.zeros((K,), b.dtype), V, jnp.asarray(jnp.inf, b.dtype),
                     jnp.full((max_iter,), jnp.nan, b.dtype),
                     jnp.full((max_iter,), -1, jnp.int32), jnp.asarray(_START, jnp.int32))


def _svt_grow(state, key, K):
    # New Gaussian directions; the next pass orthonormalizes Y V, so V need not be orthonormal.
    extra = K - state.s.shape[0]
    k1, k2 = jax.random.split(key)
    grow = lambda A, k: jnp.concatenate([A, jax.random.normal(k, (A.shape[0], extra), A.dtype)], 1)
    return state._replace(U=grow(state.U, k1), V=grow(state.V, k2),
                          s=jnp.concatenate([state.s, jnp.zeros((extra,), state.s.dtype)]),
                          status=jnp.asarray(_RUNNING, jnp.int32))


@partial(jax.jit, static_argnames=("shape", "K", "max_iter", "n_power"))
def _svt_run(state, key, rows, cols, b, tau, delta, tol, *, shape, K, max_iter, n_power):
    """Runs SVT from ``state`` (None: from the start) with a rank buffer of K components until it
    converges, diverges, reaches max_iter or fills the buffer. Returns (state, result)."""
    state = _svt_start(key, b, shape, K, max_iter) if state is None else _svt_grow(state, key, K)
    nmin = min(shape)
    norm_b = jnp.linalg.norm(b)
    norm_b = jnp.where(norm_b > 0, norm_b, 1)  # all-zero data: the residual is then ||X||

    def cond(st):
        return ((st.status == _RUNNING) | (st.status == _START)) & (st.k < max_iter)

    def body(st):
        start = st.status == _START
        # The first pass (start) computes the SVD of P_Omega(M) with a long power iteration:
        # ||P_Omega M||_2 sets the kicking start, and Y^{k0} = k0 delta P_Omega(M) has the same
        # singular vectors, the warm start of iteration 1.
        Y = linop.ObservedMatrix(rows, cols, jnp.where(start, b, st.y), shape)
        U, s, V = _linalg.subspace_svd(lambda B: linop.matmul(Y, B), lambda B: linop.rmatmul(Y, B),
                                st.V, jnp.where(start, _START_PASSES, n_power + 1), shape)
        norm = jnp.where(s[0] > 0, s[0], 1)
        scale = jnp.ceil(tau / (delta * norm)) * delta   # k0 delta
        kick = st._replace(y=scale * b, U=U, s=scale * s, V=V,
                           status=jnp.asarray(_RUNNING, jnp.int32))

        r = jnp.sum(s > tau).astype(jnp.int32)
        full = (r > K - _MARGIN) & (K < nmin)
        x = _linalg.gather(U, jnp.maximum(s - tau, 0), V.T, rows, cols)
        res = jnp.linalg.norm(x - b) / norm_b
        status = jnp.where(res <= tol, _CONVERGED,
                           jnp.where((res > _DIVERGED) | ~jnp.isfinite(res), _DIVERGED_STATUS,
                                     _RUNNING))
        step = _SVTState(st.k + 1, st.y + delta * (b - x), U, s, V, res,
                         st.history.at[st.k].set(res), st.ranks.at[st.k].set(r),
                         status.astype(jnp.int32))
        # A full buffer leaves the state as it was (with the better subspace) for the driver.
        stalled = st._replace(V=V, status=jnp.asarray(_FULL, jnp.int32))
        return jax.tree.map(lambda a, c, d: jnp.where(start, a, jnp.where(full, c, d)),
                            kick, stalled, step)

    state = jax.lax.while_loop(cond, body, state)
    U, S, Vt = _linalg.flip(state.U, jnp.maximum(state.s - tau, 0), state.V.T)
    return state, CompletionResult(U, S, Vt, state.k, state.status == _CONVERGED, state.residual,
                                   state.history, state.ranks)


def _start(fn, warm_start, shape, k, dtype):
    """Factors (U (n1, k), d (k,), V (n2, k)) of a warm start, or placeholders for a cold one."""
    n1, n2 = shape
    if warm_start is None:
        return (jnp.zeros((n1, k), dtype), jnp.zeros((k,), dtype), jnp.zeros((n2, k), dtype))
    U, S, Vt = _checks.check_factors(fn, "warm_start", warm_start, shape, dtype,
                                     "a CompletionResult or a (U, S, Vt) triple")
    j = S.shape[0]
    if j >= k:
        return U[:, :k], S[:k], Vt[:k].T
    return _pad_factors(U, S, Vt.T, k=k)


@partial(jax.jit, static_argnames=("k",))
def _pad_factors(U, S, V, *, k):
    # Extra components get S = 0 and Gaussian directions: they only seed the subspace iteration,
    # which orthonormalizes its blocks, and contribute nothing to Z.
    j = S.shape[0]
    k1, k2 = jax.random.split(jax.random.key(1))
    U = jnp.concatenate([U, jax.random.normal(k1, (U.shape[0], k - j), U.dtype)], axis=1)
    V = jnp.concatenate([V, jax.random.normal(k2, (V.shape[0], k - j), V.dtype)], axis=1)
    return U, jnp.concatenate([S, jnp.zeros((k - j,), S.dtype)]), V


class _SIState(NamedTuple):
    k: jax.Array        # () int32
    U: jax.Array        # (n1, K)
    d: jax.Array        # (K,)
    V: jax.Array        # (n2, K)
    z: jax.Array        # (nnz,) Z on Omega
    change: jax.Array   # () relative change of the last step
    history: jax.Array  # (max_iter,) objective
    ranks: jax.Array    # (max_iter,) int32


def _si_operator(rows, cols, b, U, d, V, shape, z):
    # A = P_Omega(X - Z) + Z, with Z = U diag(d) V^T: sparse plus low rank.
    R = linop.ObservedMatrix(rows, cols, b - z, shape)
    mm = lambda B: linop.matmul(R, B) + U @ (d[:, None] * (V.T @ B))
    rmm = lambda B: linop.rmatmul(R, B) + V @ (d[:, None] * (U.T @ B))
    return mm, rmm


def _si_solve(rows, cols, b, U, d, V, lam, tol, shape, max_iter, n_power, first_passes):
    """The SoftImpute while loop from factors (U, d, V); the first step runs ``first_passes``
    power iterations (more for a random start), later ones ``n_power + 1``."""
    dtype = b.dtype

    def objective(z, d):
        return 0.5 * jnp.sum((z - b) ** 2) + lam * jnp.sum(d)

    def cond(st):
        return (st.k < max_iter) & ~(st.change < tol)

    def body(st):
        mm, rmm = _si_operator(rows, cols, b, st.U, st.d, st.V, shape, st.z)
        passes = jnp.where(st.k == 0, first_passes, n_power + 1)
        U, s, V = _linalg.subspace_svd(mm, rmm, st.V, passes, shape)
        d = jnp.maximum(s - lam, 0)
        z = _linalg.gather(U, d, V.T, rows, cols)
        # The paper's relative change ||Z_old - Z||_F^2 / ||Z_old||_F^2, measured on the observed
        # entries: from the factors it would be ||Z_old||^2 + ||Z||^2 - 2 <Z_old, Z>, whose
        # cancellation floors it at ~eps (1e-7 in float32) instead of eps^2.
        old2 = jnp.sum(st.z ** 2)
        diff2 = jnp.sum((z - st.z) ** 2)
        # Z_old = 0 (a cold start, or lam above ||P_Omega X||_2): converged only if Z stays 0.
        safe_old2 = jnp.where(old2 > 0, old2, 1)
        change = jnp.where(old2 > 0, diff2 / safe_old2, jnp.where(diff2 > 0, jnp.inf, 0))
        return _SIState(st.k + 1, U, d, V, z, change.astype(dtype),
                        st.history.at[st.k].set(objective(z, d)),
                        st.ranks.at[st.k].set(jnp.sum(d > 0).astype(jnp.int32)))

    z0 = _linalg.gather(U, d, V.T, rows, cols)
    st = _SIState(jnp.zeros((), jnp.int32), U, d, V, z0, jnp.asarray(jnp.inf, dtype),
                  jnp.full((max_iter,), jnp.nan, dtype), jnp.full((max_iter,), -1, jnp.int32))
    st = jax.lax.while_loop(cond, body, st)
    norm_b = jnp.linalg.norm(b)
    res = jnp.linalg.norm(st.z - b) / jnp.where(norm_b > 0, norm_b, 1)
    U, d, Vt = _linalg.flip(st.U, st.d, st.V.T)
    return CompletionResult(U, d, Vt, st.k, st.change < tol, res, st.history, st.ranks)


_COLD_PASSES = 5  # power iterations of the first step from a random start


@partial(jax.jit, static_argnames=("shape", "max_iter", "n_power", "fresh"))
def _soft_impute(rows, cols, b, U, d, V, key, lam, tol, *, shape, max_iter, n_power, fresh):
    if fresh:  # Z = 0, and a Gaussian block to start the subspace iteration from
        V = jax.random.normal(key, V.shape, V.dtype)
    first = _COLD_PASSES if fresh else n_power + 1
    return _si_solve(rows, cols, b, U, d, V, lam, tol, shape, max_iter, n_power, first)


@partial(jax.jit, static_argnames=("shape", "max_iter", "n_power", "fresh"))
def _soft_impute_path(rows, cols, b, U, d, V, key, lams, tol, *, shape, max_iter, n_power, fresh):
    if fresh:
        V = jax.random.normal(key, V.shape, V.dtype)

    def step(carry, lam):
        U, d, V, i = carry
        first = jnp.where((i == 0) & fresh, _COLD_PASSES, n_power + 1)
        res = _si_solve(rows, cols, b, U, d, V, lam, tol, shape, max_iter, n_power, first)
        return (res.U, res.S, res.Vt.T, i + 1), res

    _, path = jax.lax.scan(step, (U, d, V, jnp.zeros((), jnp.int32)), lams)
    return path
