"""Matrix completion from observed entries: SVT (Cai, Candès & Shen 2010) and SoftImpute
(Mazumder, Hastie & Tibshirani 2010).

Both work on the observed entries only. The data are ``(rows, cols, values, shape)``; an iterate X
is kept as factors ``U diag(S) Vt`` and read at the observed positions by gathering rows of U and
V (O(nnz k)); no dense n1 x n2 array is formed. The partial SVDs are block subspace iterations
warm-started from the previous iterate's singular vectors: the iterates change little from one
step to the next, so a couple of products with the sparse (or sparse-plus-low-rank) matrix per
step give singular triplets as accurate as a fresh Lanczos run, at O(nnz k) each. The kernels
are in ``jaxfact/_completion.py``; every solve runs on the shared iteration driver
(``jaxfact/_solver.py``) and ends with a :class:`jaxfact.Status`.

Sharded data: ``rows``, ``cols`` and ``values`` may come split along their one axis over the
devices of a mesh (``jax.device_put(values, NamedSharding(mesh, P("data")))``). The solvers then
group the entries by row blocks of ``n1 / p`` rows (each block padded with zero-weight entries to
the largest block's count: a padded entry changes nothing), keep U split by rows (each device the
rows of its block) and V replicated, and run the iterations in one ``jax.shard_map`` kernel where
only (n2, K) and (p K, K) blocks and scalars cross devices (see each function's "Sharding").
"""

from __future__ import annotations

import contextlib
import gc
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import _checks
from jaxfact import _completion
from jaxfact import _implicit_diff as _implicit
from jaxfact import _sharding
from jaxfact import _solver

__all__ = ["CompletionResult", "svt", "soft_impute", "soft_impute_path"]


# Defined beside the kernels that build it; its public home is this module.
CompletionResult = _completion.CompletionResult
CompletionResult.__module__ = __name__


def svt(rows: Any, cols: Any, values: Any, shape: tuple[int, int], *, tau: Any = None,
        delta: Any = None, tol: Any = 1e-4, max_iter: int = 500, key: Any = None,
        buffer_size: int = 16, n_power: int = 1, checks: bool = False) -> CompletionResult:
    """Singular value thresholding for matrix completion (Cai, Candès & Shen 2010).

    Approximately solves ``min tau ||X||_* + 1/2 ||X||_F^2  s.t.  X_ij = M_ij on Omega`` (close to
    the nuclear-norm minimizer for large tau) by the iteration of the paper's eq. (3.2)::

        X^k = D_tau(Y^{k-1}),   Y^k = Y^{k-1} + delta P_Omega(M - X^k)

    with the section 5.1 recipe: kicking start ``Y^{k0} = k0 delta P_Omega(M)`` with
    ``k0 = ceil(tau / (delta ||P_Omega M||_2))``, and stop when
    ``||P_Omega(X^k - M)||_F / ||P_Omega M||_F <= tol`` (``Status.CONVERGED``) or when it exceeds
    1e5 (``Status.DIVERGED``, as in the paper's code).
    Y is sparse (its values on Omega); ``D_tau`` needs only the singular triplets of Y above tau,
    computed by a subspace iteration warm-started from the previous step's singular vectors with at
    least 5 computed values at or below tau (the paper's rank increment l = 5). The rank lives in a
    buffer of ``buffer_size`` components; when it fills, the buffer doubles and the solve goes on
    (one compilation per size). Iterations run in ``lax.while_loop``.

    Cost per iteration: ``2 (n_power + 1)`` products of the sparse Y with (n, k) blocks,
    O(nnz k) each, plus O((n1 + n2) k^2) for orthonormalization (two Gram-matrix
    eigendecompositions per block, SVQB); k = buffer size. The whole solve for one buffer size
    is one compiled program holding one partial SVD (the start's SVD is the loop's first step);
    with concrete input its start state, index arrays and start block are built, and its
    result's sign flip and records finished, in NumPy outside that program, so a first call
    compiles that one program only; see :ref:`compilation-cache` for keeping compiled programs
    across processes.

    Args:
      rows, cols: (nnz,) integer indices of the observed entries, each pair at most once.
      values: (nnz,) float observed values M_ij (float32, or float64 with x64 enabled).
      shape: (n1, n2).
      tau: threshold; default ``5 sqrt(n1 n2)`` (the paper's 5n).
      delta: step size; default ``1.2 n1 n2 / nnz`` (the paper's 1.2 / p).
      tol: stopping tolerance on the relative residual on Omega (paper: 1e-4).
      max_iter: iteration cap (SVT.m: 500).
      key: ``jax.random`` key whose bits seed the pseudo-random starting block of the first
        subspace iteration and the new directions when the buffer grows (an integer hash of
        the key and the entry's position: no ``jax.random`` program is compiled); ``None`` uses
        the bits of ``jax.random.key(0)``. The result does not depend on it beyond the
        tolerance: the starting block only seeds a 12-pass power iteration on P_Omega(M) (tests
        compare two keys).
      buffer_size: the initial size of the rank buffer, not a target rank: the rank of X is set
        by ``tau``, and the buffer doubles whenever fewer than 5 of its values fall below tau.
      n_power: extra subspace (power) iterations per SVT step (1 matches full-accuracy SVDs).
      checks: under an outer ``jit``, also check that the indices are in range and the
        values finite, with ``jax.experimental.checkify`` (wrap the jitted caller in
        ``checkify.checkify``).

    Returns:
      ``CompletionResult``: ``X^k = U diag(S) Vt`` with ``U`` (n1, r), ``S`` (r,), ``Vt``
      (r, n2) for the final rank r; ``residual`` the final relative residual on Omega and
      ``residual_history`` that residual after each iteration; ``history`` the objective of the
      problem SVT solves, ``tau ||X^k||_* + 1/2 ||X^k||_F^2``, after each iteration (it grows
      towards the constrained optimum: it is not monotone in general); ``rank_history`` the rank
      of X^k. Under an outer ``jit`` the buffer cannot grow: it stays at ``buffer_size``
      (untrimmed), and if it fills the solve stops with ``status == Status.BUFFER_FULL`` and the
      last iterate that fitted (X = 0 if none did).

    Example:

      >>> rng = np.random.default_rng(0)
      >>> M = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20))
      >>> rows, cols = np.nonzero(rng.random((30, 20)) < 0.7)
      >>> res = svt(rows, cols, M[rows, cols].astype(np.float32), (30, 20))
      >>> print(jaxfact.Status(int(res.status)).name, res.S.shape)
      CONVERGED (2,)
      >>> x = jaxfact.predict(res, rows[:3], cols[:3])
      >>> print(bool(jnp.allclose(x, M[rows[:3], cols[:3]], atol=1e-2)))
      True

    Sharding: ``rows``, ``cols`` and ``values`` may be split along their axis over mesh axes
    (``P("data")``; n1 must then be divisible by the number of shards p, else a ValueError says
    which ``shape`` to pass). The entries are regrouped once by row blocks of n1 / p rows on the
    host (O(nnz) bytes, in one process; each block padded with zero-weight entries to the
    largest block's count), so a device holds its block's entries and rows of U; V is
    replicated. U comes back split by rows (``P("data", None)``), S, Vt and the rest replicated. Per subspace pass the devices
    exchange one psum of the (n2, K) block ``Y^T Q`` and TSQR's (p K, K) stack of R factors; per
    iteration a few scalars (the residual, identical everywhere). Under an outer ``jit`` (entries
    traced, explicit mesh) the counts per block are unknown when tracing: each device receives
    all entries once and keeps its block's (O(nnz) per device). A mesh axis of size 1 takes the
    same kernel.

    References:
      J.-F. Cai, E. J. Candès, Z. Shen. A singular value thresholding algorithm for matrix
      completion. SIAM J. Optim. 20(4), 2010. Eq. (3.2), section 5.1.1.

    Deviations: the paper recomputes each partial SVD from scratch with PROPACK (Lanczos) and grows
    the number of computed values by 5 until one is at or below tau; here a fixed-size block
    (at least 5 values below tau) is carried from step to step, which gives the same iterates to
    rounding.
    """
    fn = "svt"
    layout = _entries_layout(fn, rows, cols, values, shape)
    if layout is None:
        rows, cols, values = (_sharding.one_device(a) for a in (rows, cols, values))
    rows, cols, values, (n1, n2) = _checks.check_observed(fn, rows, cols, values, shape,
                                                          checks=checks)
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
    # None: the raw bits of jax.random.key(0), without compiling its seeding program.
    key = np.zeros((2,), np.uint32) if key is None else _checks.check_key(fn, key)
    # Concrete scalars are put on the device as they are: jnp.asarray of a NumPy value compiles
    # a small conversion program per shape and dtype on a first call.
    put = lambda v: (jax.device_put(np.asarray(v, dtype)) if _checks.is_concrete(v)  # noqa: E731
                     else jnp.asarray(v, dtype))
    tau, delta, tol = (put(v) for v in (tau, delta, tol))

    K = min(buffer_size, nmin)
    if layout is not None:
        from jax.sharding import PartitionSpec as P
        _only_jit(fn, values=values, tau=tau, delta=delta)
        entries, replicated = _sharded_entries(rows, cols, values, n1, layout)
        tau, delta, tol = (_sharding.place(a, layout.mesh, P()) for a in (tau, delta, tol))

        def run(state, key, K):
            return _completion.svt_solve_sharded(
                state, key, entries, tau, delta, tol, mesh=layout.mesh, axes=layout.axes,
                replicated=replicated, shape=(n1, n2), K=K, max_iter=max_iter, n_power=n_power)
    else:
        def run(state, key, K):
            # The start state and the end's slices and sign flip: NumPy on concrete arrays (no
            # compiled program for them), jax.numpy under a trace.
            xp = np if state is None or _checks.is_concrete(state.status) else jnp
            if xp is np and state is not None:
                state = jax.tree.map(np.asarray, state)
            k_old = 0 if state is None else state.iterate.Y.s.shape[0]
            start = 0 if state is None else int(state.n_iter) if xp is np else state.n_iter
            init = _completion.svt_start(np if _checks.is_concrete(values) and xp is np else jnp,
                                         values, state, n1, n2, K, max_iter)
            xi = np if _checks.is_concrete((key, rows, cols)) else jnp
            inputs = _completion.svt_inputs(xi, key, rows, cols, (n1, n2), K, k_old)
            inputs = inputs[:3] + tuple(h.astype(dtype) for h in inputs[3:])
            if xi is np and _checks.is_concrete(values):   # in float64, rounded once
                norm_b = jax.device_put(np.asarray(np.linalg.norm(np.asarray(values, np.float64))
                                                   or 1.0, dtype))
            else:
                norm_b = jnp.linalg.norm(values)
                norm_b = jnp.where(norm_b > 0, norm_b, 1)
            with _no_gc():
                out = _completion.svt_solve(init, *inputs, values, norm_b, tau, delta, tol,
                                            shape=(n1, n2), K=K, k_old=k_old,
                                            max_iter=max_iter, n_power=n_power)
            if _checks.is_concrete(out.status):
                state, result = _completion.svt_finish(np, jax.tree.map(np.asarray, out),
                                                       start, max_iter)
                return state, jax.tree.map(jax.device_put, result)
            return _completion.svt_finish(jnp, out, start, max_iter)
    state, result = run(None, key, K)
    # Traced under an outer jit, also when every input is concrete (closed over by the jitted
    # function): then the buffer cannot grow.
    concrete = _checks.is_concrete(state.status)
    while concrete and int(state.status) == _solver.Status.BUFFER_FULL and K < nmin:
        # Double the buffer (new random directions beside the computed subspace), redo the SVD
        # of the last Y with it and go on. One compilation per buffer size.
        K = min(2 * K, nmin)
        state, result = run(state, key, K)   # new directions: the key's hash at new columns
    if concrete:
        result = _trim(result)
    return result


@contextlib.contextmanager
def _no_gc():
    """Python's cyclic garbage collector paused for a call that may trace and compile a solver:
    tracing allocates many small objects, and the full collections they trigger walk every
    object in the process (about half of svt_solve's tracing time, measured). Nothing is lost:
    objects are still freed by reference counting, and cycles at the next collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _trim(result):
    """``result`` with its factors cut to the rank (S > 0), sliced on the host: a slice of a device
    array compiles a program per shape, which costs more than copying these small factors."""
    S = np.asarray(result.S)
    r = int(np.count_nonzero(S > 0))
    if r == S.shape[0]:
        return result
    put = lambda a, sub: jax.device_put(sub, a.sharding)
    return result._replace(U=put(result.U, np.asarray(result.U)[:, :r]), S=put(result.S, S[:r]),
                           Vt=put(result.Vt, np.asarray(result.Vt)[:r]))


def soft_impute(rows: Any, cols: Any, values: Any, shape: tuple[int, int], *, lam: Any,
                rank: int | None = None, tol: Any = 1e-5, max_iter: int = 100, key: Any = None,
                warm_start: Any = None, n_power: int = 1,
                diff: _implicit.ImplicitDiff | None = None, checks: bool = False,
                max_rank: int | None = None) -> CompletionResult:
    """SoftImpute: nuclear-norm regularized completion (Mazumder, Hastie & Tibshirani 2010).

    Minimizes ``1/2 ||P_Omega(X - Z)||_F^2 + lam ||Z||_*`` over rank(Z) <= ``rank`` by the
    paper's Algorithm 1, ``Z <- D_lam(P_Omega(X) + P_Omega^perp(Z))``, stopping when
    ``||Z_old - Z||^2 / ||Z_old||^2 < tol`` (the paper's criterion, measured on the observed
    entries; ``Status.CONVERGED``) or at ``max_iter`` (``Status.MAX_ITER``).
    ``P_Omega(X) + P_Omega^perp(Z) = P_Omega(X - Z) + Z`` is "sparse plus low rank", so products
    with it cost O(nnz k + (n1 + n2) k^2) and no dense matrix is formed. Each step's SVD is a
    block subspace iteration started from Z's right singular vectors; every such step is the
    exact minimizer of the paper's majorizer over a subspace that contains the previous iterate,
    so the objective never increases (``history``) and the fixed points are SoftImpute's.

    Args:
      rows, cols, values, shape: the observed entries, as for :func:`svt`.
      lam: regularization lambda >= 0 (traced: a new value does not recompile).
      rank: rank cap k (the buffer size); choose it above the rank of the solution.
        (``max_rank`` is its deprecated name.)
      tol: stopping tolerance on the relative change.
      max_iter: iteration cap.
      key: random key for the starting subspace of a cold start (``warm_start`` None) and for
        the directions that pad a warm start of rank below k; ``None`` uses
        ``jax.random.key(0)``. The problem is convex: when ``rank`` exceeds the solution's rank,
        the result does not depend on the key beyond the tolerance (tests compare two keys).
      warm_start: a previous ``CompletionResult`` (or (U, S, Vt)) to start from.
      n_power: extra subspace iterations per step.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).
      checks: under an outer ``jit``, also check that the indices are in range and the
        values finite, with ``jax.experimental.checkify`` (wrap the jitted caller in
        ``checkify.checkify``).

    Returns:
      ``CompletionResult`` with U (n1, k), S (k,), Vt (k, n2) (S == 0 beyond the solution's
      rank); ``residual = ||P_Omega(Z - X)||_F / ||P_Omega X||_F`` (``residual_history`` after
      each iteration) and ``history`` the objective ``1/2 ||P_Omega(X - Z)||_F^2 + lam ||Z||_*``
      after each iteration (non-increasing).

    Differentiable (reverse mode) w.r.t. ``values`` and ``lam``, by implicit differentiation of
    the fixed point ``Z = D_lam(P_Omega(X) + P_Omega^perp(Z))`` at the returned solution (not
    through the iterations): losses of ``Z = U diag(S) Vt`` (e.g. :func:`jaxfact.predict`) and of
    S are well defined; U, V are defined up to rotations among tied singular values, and
    components with S == 0 get no gradient. The backward pass forms the dense n1 x n2 Z and takes
    one full SVD, O(n1 n2 min(n1, n2)), then GMRES products of O(n1 n2 min(n1, n2)) each; its
    memory is O(n1 n2) whatever ``max_iter``. It assumes the forward solve converged.

    Example:

      >>> rng = np.random.default_rng(0)
      >>> M = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20))
      >>> rows, cols = np.nonzero(rng.random((30, 20)) < 0.6)
      >>> res = soft_impute(rows, cols, M[rows, cols].astype(np.float32), (30, 20), lam=0.5,
      ...                   rank=5, tol=1e-8, max_iter=500)
      >>> print(bool(res.converged), int(jnp.sum(res.S > 0)))
      True 2
      >>> print(jaxfact.predict(res, rows[:2], cols[:2]).shape)
      (2,)

    Sharding: as for :func:`svt`: entries split along their axis are grouped by row blocks, U
    comes back split by rows, S and Vt replicated; a ``warm_start`` whose U is split like that
    is used where it lies. Per subspace pass one (n2, K) psum of ``A^T Q`` (the sparse part and
    the low-rank part summed before the psum) and TSQR's (p K, K) stack; per iteration one psum
    of 3 scalars (objective, change, residual). The implicit gradient is not available for
    split entries (its backward pass forms the dense Z): ``grad`` (or ``vmap``) of a call on
    split entries raises a TypeError; differentiate with unsplit arrays.

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
    rank = _rank_argument(fn, rank, max_rank)
    layout = _entries_layout(fn, rows, cols, values, shape)
    if layout is None:
        rows, cols, values = (_sharding.one_device(a) for a in (rows, cols, values))
    rows, cols, values, (n1, n2) = _checks.check_observed(fn, rows, cols, values, shape,
                                                          checks=checks)
    rank = _checks.check_rank(fn, rank, (n1, n2))
    lam = _checks.check_real(fn, "lam", lam, low=0.0)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    n_power = _checks.check_int(fn, "n_power", n_power, low=0)
    key = jax.random.key(0) if key is None else _checks.check_key(fn, key)
    diff = _implicit.check_diff(fn, diff)
    U0, d0, V0 = _start(fn, warm_start, (n1, n2), rank, values.dtype, key)
    lam, tol = jnp.asarray(lam, values.dtype), jnp.asarray(tol, values.dtype)
    sg = jax.lax.stop_gradient
    if layout is not None:
        _only_jit(fn, values=values, lam=lam)
        res = _soft_impute_sharded(rows, cols, sg(values), sg(U0), sg(d0), sg(V0), key, sg(lam),
                                   tol, layout, shape=(n1, n2), max_iter=max_iter,
                                   n_power=n_power, fresh=warm_start is None, path=False)
        return _implicit.soft_impute(res, rows, cols, values, lam, rank, diff)
    res = _completion.soft_impute(rows, cols, sg(values), sg(U0), sg(d0), sg(V0), key, sg(lam),
                                  tol, shape=(n1, n2), max_iter=max_iter, n_power=n_power,
                                  fresh=warm_start is None)
    return _implicit.soft_impute(res, rows, cols, values, lam, rank, diff)


def soft_impute_path(rows: Any, cols: Any, values: Any, shape: tuple[int, int], *, lams: Any,
                     rank: int | None = None, tol: Any = 1e-5, max_iter: int = 100,
                     key: Any = None, warm_start: Any = None, n_power: int = 1,
                     diff: _implicit.ImplicitDiff | None = None, checks: bool = False,
                     max_rank: int | None = None) -> CompletionResult:
    """SoftImpute along a grid of ``lams`` (best decreasing), each fit warm-started from the last.

    This is the paper's Algorithm 1 path (Mazumder et al. 2010, section 3): the solution for one
    lambda is an excellent start for the next smaller one. The whole path runs in one compiled
    ``lax.scan``. Cost: that of :func:`soft_impute` per lambda, usually far fewer iterations
    each than from a cold start.

    Args:
      rows, cols, values, shape: the observed entries, as for :func:`svt`.
      lams: (L,) non-negative lambdas, best in decreasing order.
      rank, tol, max_iter, key, n_power: as for :func:`soft_impute` (per lambda); ``max_rank``
        is the deprecated name of ``rank``.
      warm_start: optional start for the first lambda.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).
      checks: under an outer ``jit``, also check that the indices are in range and the
        values and ``lams`` finite (``lams`` non-negative), with ``jax.experimental.checkify``
        (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      A ``CompletionResult`` whose fields have a leading axis of length ``len(lams)``, each fit
      as :func:`soft_impute`'s; take one fit with ``jax.tree.map(lambda a: a[i], path)``.

    Differentiable w.r.t. ``values`` and ``lams`` as :func:`soft_impute` is, fit by fit (each
    fit is the solution for its lambda, whatever its warm start).

    Sharding: as for :func:`soft_impute`, for every lambda; U comes back (L, n1, k) split along
    its rows (``P(None, "data", None)``).

    Example:

      >>> rng = np.random.default_rng(0)
      >>> M = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20))
      >>> rows, cols = np.nonzero(rng.random((30, 20)) < 0.6)
      >>> lams = jnp.geomspace(10.0, 0.1, 4)
      >>> path = soft_impute_path(rows, cols, M[rows, cols].astype(np.float32), (30, 20),
      ...                         lams=lams, rank=5, max_iter=300)
      >>> print(path.U.shape, path.S.shape)
      (4, 30, 5) (4, 5)
    """
    fn = "soft_impute_path"
    rank = _rank_argument(fn, rank, max_rank)
    layout = _entries_layout(fn, rows, cols, values, shape)
    if layout is None:
        rows, cols, values = (_sharding.one_device(a) for a in (rows, cols, values))
    rows, cols, values, (n1, n2) = _checks.check_observed(fn, rows, cols, values, shape,
                                                          checks=checks)
    rank = _checks.check_rank(fn, rank, (n1, n2))
    lams = _checks.as_float_array(fn, "lams", lams, ndim=1).astype(values.dtype)
    if lams.shape[0] == 0:
        raise ValueError(f"{fn}: `lams` must hold at least one value; got an empty array")
    _checks.check_finite(fn, "lams", lams, checks)
    _checks.check_nonnegative(fn, "lams", lams, checks)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    n_power = _checks.check_int(fn, "n_power", n_power, low=0)
    key = jax.random.key(0) if key is None else _checks.check_key(fn, key)
    diff = _implicit.check_diff(fn, diff)
    U0, d0, V0 = _start(fn, warm_start, (n1, n2), rank, values.dtype, key)
    tol = jnp.asarray(tol, values.dtype)
    sg = jax.lax.stop_gradient
    if layout is not None:
        _only_jit(fn, values=values, lams=lams)
        path = _soft_impute_sharded(rows, cols, sg(values), sg(U0), sg(d0), sg(V0), key,
                                    sg(lams), tol, layout, shape=(n1, n2), max_iter=max_iter,
                                    n_power=n_power, fresh=warm_start is None, path=True)
        return _implicit.soft_impute_path(path, rows, cols, values, lams, rank, diff)
    path = _completion.soft_impute_path(rows, cols, sg(values), sg(U0), sg(d0), sg(V0), key,
                                        sg(lams), tol, shape=(n1, n2), max_iter=max_iter,
                                        n_power=n_power, fresh=warm_start is None)
    return _implicit.soft_impute_path(path, rows, cols, values, lams, rank, diff)


def _start(fn, warm_start, shape, k, dtype, key):
    """Factors (U (n1, k), d (k,), V (n2, k)) of a warm start, or placeholders for a cold one."""
    n1, n2 = shape
    if warm_start is None:
        return (jnp.zeros((n1, k), dtype), jnp.zeros((k,), dtype), jnp.zeros((n2, k), dtype))
    U, S, Vt = _checks.check_factors(fn, "warm_start", warm_start, shape, dtype,
                                     "a CompletionResult or a (U, S, Vt) triple")
    return _completion.start_factors(U, S, Vt, key, k)


def _rank_argument(fn, rank, max_rank):
    """``rank``, or its deprecated name ``max_rank`` (with a DeprecationWarning)."""
    if max_rank is not None:
        if rank is not None:
            raise TypeError(f"{fn}: pass `rank` only; `max_rank` is its deprecated name")
        _checks.warn_renamed(fn, "max_rank", "rank", stacklevel=4)
        return max_rank
    if rank is None:
        raise TypeError(f"{fn}: missing the keyword argument `rank` (the rank cap)")
    return rank


# ------------------------------------------------------------------------------------------------
# Sharded observed entries


def _entries_layout(fn, rows, cols, values, shape):
    """The layout of the observed entries (split along their one axis), or None when none of
    ``rows``, ``cols``, ``values`` is split. The row blocks are ``n1 / p`` rows each."""
    layout = None
    for name, a in (("values", values), ("rows", rows), ("cols", cols)):
        if getattr(a, "ndim", 0) != 1:
            continue
        layout = _sharding.layout_of(fn, name, a)[0]
        if layout is not None:
            break
    if layout is None:
        return None
    n1 = _checks.check_shape2(fn, shape)[0]
    if n1 % layout.size:
        raise ValueError(
            f"{fn}: the observed entries are split over {layout.size} devices, so U is split by "
            f"rows into {layout.size} blocks, which needs shape[0] = {n1} divisible by "
            f"{layout.size}. Pass shape=({-(-n1 // layout.size) * layout.size}, {shape[1]}): "
            f"rows without entries leave the other rows' fit unchanged (their rows of U are 0).")
    return layout


def _only_jit(fn, **arrays):
    """TypeError when a split input is traced by a transformation other than ``jit`` (grad,
    vmap): the sharded kernels have no implicit gradient and no batching rule."""
    from jax._src.interpreters.partial_eval import DynamicJaxprTracer
    for name, a in arrays.items():
        if isinstance(a, jax.core.Tracer) and not isinstance(a, DynamicJaxprTracer):
            raise TypeError(
                f"{fn}: `{name}` is split over devices and traced by {type(a).__name__} (grad, "
                f"vmap, ...); with split input {fn} runs under jit only. To differentiate or "
                f"batch, pass unsplit arrays.")


def _sharded_entries(rows, cols, values, n1, layout):
    """(Entries grouped by row blocks, replicated): grouped on the host for concrete entries;
    under an outer jit (the counts per block are not known when tracing) every device receives
    all entries once and keeps those of its block."""
    from jax.sharding import PartitionSpec as P
    if _checks.is_concrete((rows, cols, values)):
        return _completion.group_entries(rows, cols, values, n1, layout), False
    e = _completion.Entries(rows, cols, values, jnp.ones_like(values))
    return jax.tree.map(lambda a: _sharding.place(a, layout.mesh, P()), e), True


def _soft_impute_sharded(rows, cols, values, U0, d0, V0, key, lam, tol, layout, *, shape,
                         max_iter, n_power, fresh, path):
    from jax.sharding import PartitionSpec as P
    mesh, axes = layout.mesh, layout.axes
    entries, replicated = _sharded_entries(rows, cols, values, shape[0], layout)
    U0 = _sharding.place(U0, mesh, layout.spec(2, 0))
    d0, V0, lam, tol = (_sharding.place(jnp.asarray(a), mesh, P()) for a in (d0, V0, lam, tol))
    return _completion.soft_impute_sharded(entries, U0, d0, V0, key, lam, tol, mesh=mesh,
                                           axes=axes, replicated=replicated, shape=shape,
                                           max_iter=max_iter, n_power=n_power, fresh=fresh,
                                           path=path)
