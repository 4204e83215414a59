"""The jitted kernels behind :mod:`jaxfact.completion` (SVT, SoftImpute), the result type they
build (``CompletionResult``, public as ``jaxfact.completion.CompletionResult``) and the start
factors :mod:`jaxfact.weighted` shares. They assume the input validated by the public wrappers.

Every solve runs on the shared driver (``_solver.run``); the iterates are the NamedTuples below.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import _linalg
from jaxfact import _sharding
from jaxfact import _solver
from jaxfact import linop

__all__ = []  # private module

# SVT keeps at least this many computed singular values at or below tau (the paper's rank
# increment l = 5): they certify that no singular value above tau was missed and serve as the
# oversampling that makes the warm-started subspace iteration accurate.
MARGIN = 5
DIVERGED_RESIDUAL = 1e5  # SVT.m declares divergence when the relative residual exceeds this
START_PASSES = 10        # power iterations for ||P_Omega M||_2 and SVT's first subspace
COLD_PASSES = 5          # power iterations of a first step from a random start


class Record(NamedTuple):
    """What every completion solver records after each iteration (besides its objective)."""

    rank: jax.Array      # () int32, rank of the iterate
    residual: jax.Array  # () relative residual of the iterate on the data


class Factors(NamedTuple):
    U: jax.Array  # (n1, K)
    s: jax.Array  # (K,) singular values (descending)
    V: jax.Array  # (n2, K)


class CompletionResult(NamedTuple):
    """A completed (or weighted low-rank) matrix ``X = U @ diag(S) @ Vt``, kept factored.

    Unused components of the rank buffer have ``S == 0``; for :func:`~jaxfact.completion.svt`
    (concrete input) the buffer is trimmed to the final rank. ``history`` is the objective of the
    solver's problem after each iteration (each function says which), ``residual_history`` the
    relative residual on the data (the quantity of ``residual``) after each iteration; both are
    NaN after ``n_iter``, and ``rank_history`` is -1 there.
    """

    U: jax.Array          # (n1, k), orthonormal columns
    S: jax.Array          # (k,), non-negative, descending
    Vt: jax.Array         # (k, n2), orthonormal rows
    n_iter: jax.Array     # () int32, iterations run
    converged: jax.Array  # () bool, status == Status.CONVERGED
    residual: jax.Array   # () relative residual on the data at the end (see each function)
    history: jax.Array    # (max_iter,) objective after each iteration; NaN after n_iter
    rank_history: jax.Array  # (max_iter,) int32, rank of X after each iteration; -1 after n_iter
    status: jax.Array     # () int32, a jaxfact.Status: how the solve ended
    residual_history: jax.Array  # (max_iter,) relative residual after each iteration; NaN after


def completed(state: _solver.State, U, S, V, residual, xp=jnp) -> CompletionResult:
    """The result of a solve that ended in ``state``, X = U diag(S) V^T (signs made
    deterministic); ``xp``: jax.numpy, or NumPy for concrete output."""
    U, S, Vt = _linalg.flip(U, S, V.T, xp=xp)
    return CompletionResult(U, S, Vt, state.n_iter, state.status == _solver.Status.CONVERGED,
                            residual, state.history, state.trace.rank, state.status,
                            state.trace.residual)


def _record(dtype) -> Record:
    return Record(jnp.zeros((), jnp.int32), jnp.zeros((), dtype))


def take_rows(A, i):
    """A[i] for in-range unsigned indices ``i``, gathered as given (jnp indexing would convert
    them to int32 and wrap negative ones: one more pass over the indices each time)."""
    dn = jax.lax.GatherDimensionNumbers(offset_dims=(1,), collapsed_slice_dims=(0,),
                                        start_index_map=(0,))
    return jax.lax.gather(A, i[:, None], dn, (1, A.shape[1]),
                          mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def sample(U, d, V, rows, cols):
    """Entries (rows[e], cols[e]) of U diag(d) V^T: the rows of U and of V diag(d) gathered and
    multiplied, their sum over k taken as a product with a vector of ones (XLA's CPU reduction
    over a short minor axis, or the batched dot of an einsum, is about twice slower)."""
    G = take_rows(U, rows) * take_rows(V * d[None, :], cols)
    return G @ jnp.ones((U.shape[1],), U.dtype)


def relative_residual(x, b, norm_b):
    return jnp.linalg.norm(x - b) / jnp.where(norm_b > 0, norm_b, 1)


# ------------------------------------------------------------------------------------------------
# SVT


class SVTIterate(NamedTuple):
    y: jax.Array         # (nnz,) Y^k on Omega
    Y: Factors           # top K singular triplets of Y^k (warm start of the next step's SVD)
    X: Factors           # X^k = D_tau(Y^{k-1}): Y^{k-1}'s triplets, s shrunk by tau
    residual: jax.Array  # () ||P_Omega(X^k - M)||_F / ||P_Omega M||_F


def _svt_stop(state, tau, tol, K, shape, max_iter):
    """SVT's status after an iteration: converged on the residual, diverged, or the next step
    would need the grown buffer (none after the last iteration)."""
    it = state.iterate
    diverged = (it.residual > DIVERGED_RESIDUAL) | ~jnp.isfinite(it.residual)
    full = _svt_full(it.Y, tau, K, min(shape)) & (state.n_iter < max_iter)
    status = jnp.where(full, _solver.Status.BUFFER_FULL, _solver.Status.RUNNING)
    status = jnp.where(diverged, _solver.Status.DIVERGED, status)
    return jnp.where(it.residual <= tol, _solver.Status.CONVERGED, status)


def _svt_full(Y: Factors, tau, K, nmin):
    # Fewer than MARGIN computed values at or below tau: a value above tau may have been missed.
    return (jnp.sum(Y.s > tau) > K - MARGIN) & (K < nmin)


def hash_block(seed, n, cols, xp=jnp):
    """(n, len(cols)) pseudo-random numbers, uniform in [-1, 1), entry (i, j) a hash of (i,
    cols[j], seed): generic directions that seed a subspace iteration, built from a key's raw bits
    ``seed`` (uint32 (2,)) with a few integer operations (a ``jax.random`` draw compiles a
    threefry program several times larger than the solver's own steps). ``xp``: ``jax.numpy``,
    or NumPy for concrete ``seed`` (the same numbers, with no compiled program)."""
    u32 = lambda a: xp.asarray(a, xp.uint32)
    seed = u32(seed).reshape(2, 1, 1)
    i = xp.arange(n, dtype=xp.uint32)[:, None]
    j = u32(cols)[None, :]
    h = i * u32(0x9E3779B1) ^ (j * u32(0x85EBCA77) + seed[0])
    h = h ^ seed[1] * u32(0xC2B2AE3D)
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, None)):   # murmur3's finalizer
        h = h ^ (h >> u32(shift))
        if mult is not None:
            h = h * u32(mult)
    return (h >> u32(8)).astype(xp.int32).astype(xp.float32) * xp.float32(2.0**-23) - 1


def key_bits(key):
    """A ``jax.random`` key's raw uint32 (2,) data (typed or legacy keys)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key.reshape(-1)[:2].astype(jnp.uint32)


def _orth(B, fill):
    """An orthonormal basis of the columns of B (N, K), by the Gram matrix's eigendecomposition
    twice (SVQB, Stathopoulos & Wu 2002, without the diagonal scaling): ``Q = B W
    Lambda^{-1/2}`` for ``B^T B = W Lambda W^T``. Two K x K eigendecompositions and four (N, K)
    products; directions with eigenvalues below ``4 eps`` times the largest (rank deficiency) are
    replaced by those of ``fill`` (N, K) before the second pass, so Q keeps K orthonormal columns.
    The first pass leaves an orthogonality error of about eps cond(B)^2, the second removes it."""
    tiny = jnp.finfo(B.dtype).tiny

    def svqb(B):
        W, lam = jax.lax.linalg.eigh(B.T @ B, symmetrize_input=False, sort_eigenvalues=False)
        keep = lam > 4 * jnp.finfo(B.dtype).eps * jnp.maximum(jnp.max(lam), tiny)
        scale = jnp.where(keep, jax.lax.rsqrt(jnp.where(keep, lam, 1)), 0)
        return B @ (W * scale[None, :]), keep

    Q, keep = svqb(B)
    Q, _ = svqb(jnp.where(keep[None, :], Q, fill))
    return Q


def _svt_subspace_svd(idx, y, V, passes, shape, fill):
    """Top singular triplets of the sparse Y (values ``y`` at (rows, cols)) by ``passes`` block
    power iterations from V (n2, K) (Halko et al. 2011, Algorithms 4.4 and 5.1, as
    ``_linalg.subspace_svd``), in a small program: both half-steps (``Y Q`` and ``Y^T Q``) are
    the same segment sum over a block of max(n1, n2) rows, whose index arrays (gather from
    ``cols`` and sum into ``rows``, or the reverse) are selected per half-step instead of
    branching, and the blocks are orthonormalized by :func:`_orth` (``fill``: (N, K) directions
    for rank-deficient blocks). ``idx`` is ``stack([cols, rows])``: half-step h gathers the rows
    ``idx[h % 2]`` of its block and sums them into ``idx[1 - h % 2]``. ``passes`` may be traced.
    """
    n1, n2 = shape
    N = max(n1, n2)

    def half(h, carry):
        _, Q, _ = carry
        odd = h % 2
        src, dst = idx[odd], idx[1 - odd]
        B = jax.ops.segment_sum(y[:, None] * take_rows(Q, src), dst, num_segments=N)
        return Q, _orth(B, fill), B

    # Carry (the previous half-step's Q, the last one's Q, its block B): after an even number of
    # half-steps they are the row side Q_m and the column side Q_r with Y^T Q_m = Q_r R, R =
    # Q_r^T B, so Y ~ Q_m Q_m^T Y = Q_m R^T Q_r^T. (The start block fills every slot: no
    # zero-filled buffers to write.)
    V = jnp.pad(V, ((0, N - n2), (0, 0)))
    Qm, Qr, B = jax.lax.fori_loop(0, 2 * passes, half, (V, V, V))
    Ur, s, Vrt = jnp.linalg.svd(B.T @ Qr)
    return Factors(Qm[:n1] @ Ur, s, Qr[:n2] @ Vrt.T)


class _SVTLoop(NamedTuple):
    it: SVTIterate
    first: jax.Array     # () bool: the next step is the start's (or the grown buffer's) SVD
    passes0: jax.Array   # () int32: power iterations of that first SVD


def svt_start(xp, values, state, n1, n2, K, max_iter):
    """The state :func:`svt_solve` starts from for a buffer of K components, built with ``xp``
    (NumPy for concrete input, so that no program is compiled for it; ``jax.numpy`` under a
    trace): from scratch (``state`` None: Y = P_Omega(M), X = 0), or from :func:`svt_finish`'s
    state that stopped with a full smaller buffer (factors padded with zero columns). The records
    get one more entry, for the first step (:func:`svt_finish` drops it)."""
    dtype = values.dtype
    if state is None:
        zeros = lambda *shape: xp.zeros(shape, dtype)
        zero = Factors(zeros(n1, K), zeros(K), zeros(n2, K))
        it = SVTIterate(values, zero, zero, xp.asarray(np.inf, dtype))
        return _solver.State(it, xp.asarray(0, np.int32), xp.full((max_iter + 1,), np.nan, dtype),
                             Record(xp.full((max_iter + 1,), -1, np.int32),
                                    xp.full((max_iter + 1,), np.nan, dtype)),
                             xp.asarray(_solver.Status.RUNNING, np.int32))
    it = state.iterate
    pad = K - it.Y.s.shape[0]
    grow = lambda A: xp.pad(A, ((0, 0), (0, pad)))
    it = it._replace(Y=Factors(grow(it.Y.U), xp.pad(it.Y.s, (0, pad)), grow(it.Y.V)),
                     X=Factors(grow(it.X.U), xp.pad(it.X.s, (0, pad)), grow(it.X.V)))
    extend = lambda h, fill: xp.concatenate([h, xp.full((1,), fill, h.dtype)])
    return _solver.State(it, state.n_iter, extend(state.history, np.nan),
                         Record(extend(state.trace.rank, -1),
                                extend(state.trace.residual, np.nan)), state.status)


def svt_finish(xp, state, start, max_iter):
    """(state, CompletionResult) from :func:`svt_solve`'s state, with ``xp`` (NumPy for concrete
    output: these few slices and the sign flip would otherwise be a dozen more compiled kernels):
    the first step's record (at ``start``) dropped and ``n_iter`` counting SVT's iterations only;
    X = U diag(S) V^T with deterministic signs (:func:`completed`)."""
    before = xp.arange(max_iter) < start
    drop = lambda h: xp.where(before, h[:-1], h[1:])
    state = _solver.State(state.iterate, state.n_iter - 1, drop(state.history),
                          Record(drop(state.trace.rank), drop(state.trace.residual)),
                          state.status)
    X = state.iterate.X
    return state, completed(state, X.U, X.s, X.V, state.iterate.residual, xp)


def svt_inputs(xp, key, rows, cols, shape, K, k_old):
    """``svt_solve``'s index and hash arrays, built with ``xp`` (NumPy for concrete input: no
    compiled program for them). Returns (rows, cols, idx, V_new, fill): rows, cols and ``idx`` =
    stack([cols, rows]) as uint32 (see :func:`take_rows`); the hash block (N, 2 K - k_old), N =
    max(shape), in two parts: ``V_new`` (n2, K - k_old), the hash's columns [k_old, K) (the
    start block, or the new directions beside a full buffer's computed subspace), and ``fill``
    (N, K), its columns [nmin, nmin + K) (the directions that replace those of rank-deficient
    blocks in the orthonormalizations, never a buffer's)."""
    rows, cols = xp.asarray(rows).astype(xp.uint32), xp.asarray(cols).astype(xp.uint32)
    idx = xp.stack([cols, rows])
    bits = key_bits(key)
    bits = np.asarray(bits) if xp is np else bits
    H = hash_block(bits, max(shape), xp.concatenate([xp.arange(k_old, K),
                                                     min(shape) + xp.arange(K)]), xp)
    return rows, cols, idx, H[:shape[1], :K - k_old], H[:, K - k_old:]


@partial(jax.jit, static_argnames=("shape", "K", "k_old", "max_iter", "n_power"))
def svt_solve(state, rows, cols, idx, V_new, fill, b, norm_b, tau, delta, tol, *, shape, K,
              k_old, max_iter, n_power):
    """Runs SVT with a rank buffer of K components from :func:`svt_start`'s state (``k_old`` = 0:
    from the start; else the size of the full buffer it grows), until it converges, diverges,
    reaches max_iter or fills the buffer; ``rows`` to ``fill``: :func:`svt_inputs`; ``norm_b``:
    ||b||, or 1 if b = 0 (the residual is then ||X||). Returns the loop's
    state, whose records still hold the first step's entry at the incoming ``state.n_iter``
    (:func:`svt_finish` drops it).

    One program with one partial SVD: the loop's first step computes the SVD of the start (the
    paper's kicking start ``Y^{k0} = k0 delta P_Omega(M)``, ``k0 = ceil(tau / (delta
    ||P_Omega M||_2))``: the SVD of P_Omega(M) by a long power iteration from a pseudo-random
    block (:func:`hash_block` of the key's bits), scaled) or, after a full buffer, of the last Y
    with the grown block (the old subspace plus new pseudo-random directions); the later steps
    are SVT's. The first step is not an SVT iteration: its record is dropped, and ``n_iter``
    does not count it."""
    n1, n2 = shape
    dtype = b.dtype
    fresh = k_old == 0
    V_new, fill = V_new.astype(dtype), fill.astype(dtype)
    it = state.iterate
    # A pseudo-random start block: the first pass orthonormalizes Y V, so V need not be
    # orthonormal.
    V = V_new if fresh else jnp.concatenate([it.Y.V[:, :k_old], V_new], axis=1)
    # From the start, Y = P_Omega(M) (svt_start's y); the first step scales it to Y^{k0}.
    it = it._replace(Y=it.Y._replace(V=V))
    passes0 = START_PASSES + n_power + 1 if fresh else n_power + 1
    start = 0 if fresh else state.n_iter   # the first step's index
    state = _solver.State(_SVTLoop(it, jnp.asarray(True), jnp.asarray(passes0, jnp.int32)),
                          state.n_iter, state.history, state.trace,
                          jnp.asarray(_solver.Status.RUNNING, jnp.int32))

    def update(loop, n_iter):
        it, first = loop.it, loop.first
        U, s, V = it.Y
        d = jnp.maximum(s - tau, 0)
        x = sample(U, d, V, rows, cols)
        residual = jnp.linalg.norm(x - b) / norm_b
        y = jnp.where(first, it.y, it.y + delta * (b - x))
        Y = _svt_subspace_svd(idx, y, V, jnp.where(first, loop.passes0, n_power + 1), shape,
                              fill)
        if fresh:   # the start: Y = P_Omega(M) becomes Y^{k0}
            norm = jnp.where(Y.s[0] > 0, Y.s[0], 1)
            c = jnp.where(first, jnp.ceil(tau / (delta * norm)) * delta, 1).astype(dtype)
            y, Y = c * y, Y._replace(s=c * Y.s)
        # tau ||X||_* + 1/2 ||X||_F^2 and the rank, in one reduction.
        objective, rank = jnp.sum(jnp.stack([d * (tau + 0.5 * d), (s > tau).astype(d.dtype)]),
                                  axis=1)
        rank = rank.astype(jnp.int32)
        it = SVTIterate(y, Y, jax.tree.map(lambda a, b: jnp.where(first, a, b), it.X,
                                           Factors(U, d, V)),
                        jnp.where(first, it.residual, residual))
        loop = _SVTLoop(it, jnp.asarray(False), loop.passes0)
        return loop, jnp.where(first, 0, objective), Record(rank, residual)

    def stop(s):
        # s.n_iter counts the first step: SVT's own count is one less.
        svt = s._replace(iterate=s.iterate.it, n_iter=s.n_iter - 1)
        after_first = _svt_full(svt.iterate.Y, tau, K, min(shape))
        after_first = jnp.where(after_first, _solver.Status.BUFFER_FULL, _solver.Status.RUNNING)
        return jnp.where(s.n_iter == start + 1, after_first,
                         _svt_stop(svt, tau, tol, K, shape, max_iter))

    state = _solver.run(update, stop, state)
    return state._replace(iterate=state.iterate.it)


# ------------------------------------------------------------------------------------------------
# SoftImpute


class SoftImputeIterate(NamedTuple):
    U: jax.Array       # (n1, K) Z = U diag(d) V^T
    d: jax.Array       # (K,)
    V: jax.Array       # (n2, K)
    z: jax.Array       # (nnz,) Z on Omega
    change: jax.Array  # () relative change of the last step, ||Z_old - Z||^2 / ||Z_old||^2


def _soft_impute_operator(rows, cols, b, it, shape):
    # A = P_Omega(X - Z) + Z, with Z = U diag(d) V^T: sparse plus low rank.
    R = linop.ObservedMatrix(rows, cols, b - it.z, shape)
    mm = lambda B: linop.matmul(R, B) + it.U @ (it.d[:, None] * (it.V.T @ B))
    rmm = lambda B: linop.rmatmul(R, B) + it.V @ (it.d[:, None] * (it.U.T @ B))
    return mm, rmm


def _soft_impute_solve(rows, cols, b, U, d, V, lam, tol, shape, max_iter, n_power, first_passes):
    """SoftImpute from factors (U, d, V); the first step runs ``first_passes`` power iterations
    (more for a random start), later ones ``n_power + 1``."""
    norm_b = jnp.linalg.norm(b)

    def update(it, n_iter):
        mm, rmm = _soft_impute_operator(rows, cols, b, it, shape)
        passes = jnp.where(n_iter == 0, first_passes, n_power + 1)
        U, s, V = _linalg.subspace_svd(mm, rmm, it.V, passes, shape)
        d = jnp.maximum(s - lam, 0)
        z = sample(U, d, V, rows, cols)
        # The paper's relative change ||Z_old - Z||_F^2 / ||Z_old||_F^2, measured on the observed
        # entries: from the factors it would be ||Z_old||^2 + ||Z||^2 - 2 <Z_old, Z>, whose
        # cancellation floors it at ~eps (1e-7 in float32) instead of eps^2.
        old2 = jnp.sum(it.z ** 2)
        diff2 = jnp.sum((z - it.z) ** 2)
        # Z_old = 0 (a cold start, or lam above ||P_Omega X||_2): converged only if Z stays 0.
        safe_old2 = jnp.where(old2 > 0, old2, 1)
        change = jnp.where(old2 > 0, diff2 / safe_old2, jnp.where(diff2 > 0, jnp.inf, 0))
        objective = 0.5 * jnp.sum((z - b) ** 2) + lam * jnp.sum(d)
        record = Record(jnp.sum(d > 0).astype(jnp.int32), relative_residual(z, b, norm_b))
        return SoftImputeIterate(U, d, V, z, change.astype(b.dtype)), objective, record

    def stop(state):
        return _solver.status_of(state.iterate.change < tol)

    z0 = sample(U, d, V, rows, cols)
    iterate = SoftImputeIterate(U, d, V, z0, jnp.asarray(jnp.inf, b.dtype))
    state = _solver.run(update, stop, _solver.start(iterate, max_iter=max_iter, dtype=b.dtype,
                                                    record=_record(b.dtype)))
    it = state.iterate
    return completed(state, it.U, it.d, it.V, relative_residual(it.z, b, norm_b))


@partial(jax.jit, static_argnames=("shape", "max_iter", "n_power", "fresh"))
def soft_impute(rows, cols, b, U, d, V, key, lam, tol, *, shape, max_iter, n_power, fresh):
    if fresh:  # Z = 0, and a Gaussian block to start the subspace iteration from
        V = jax.random.normal(key, V.shape, V.dtype)
    first = COLD_PASSES if fresh else n_power + 1
    return _soft_impute_solve(rows, cols, b, U, d, V, lam, tol, shape, max_iter, n_power, first)


@partial(jax.jit, static_argnames=("shape", "max_iter", "n_power", "fresh"))
def soft_impute_path(rows, cols, b, U, d, V, key, lams, tol, *, shape, max_iter, n_power, fresh):
    if fresh:
        V = jax.random.normal(key, V.shape, V.dtype)

    def step(carry, lam):
        U, d, V, i = carry
        first = jnp.where((i == 0) & fresh, COLD_PASSES, n_power + 1)
        res = _soft_impute_solve(rows, cols, b, U, d, V, lam, tol, shape, max_iter, n_power,
                                 first)
        return (res.U, res.S, res.Vt.T, i + 1), res

    _, path = jax.lax.scan(step, (U, d, V, jnp.zeros((), jnp.int32)), lams)
    return path


# ------------------------------------------------------------------------------------------------
# Start factors (SoftImpute, WLRA)


def start_factors(U, S, Vt, key, k):
    """(U (n1, k), d (k,), V (n2, k)) from a warm start's factors of any rank: cut to k, or padded
    with S = 0 components whose Gaussian directions (from ``key``) only seed the subspace
    iteration, which orthonormalizes its blocks; they contribute nothing to the start."""
    j = S.shape[0]
    if j >= k:
        return U[:, :k], S[:k], Vt[:k].T
    return _pad_factors(U, S, Vt.T, key, k=k)


@partial(jax.jit, static_argnames=("k",))
def _pad_factors(U, S, V, key, *, k):
    j = S.shape[0]
    k1, k2 = jax.random.split(key)
    U = jnp.concatenate([U, jax.random.normal(k1, (U.shape[0], k - j), U.dtype)], axis=1)
    V = jnp.concatenate([V, jax.random.normal(k2, (V.shape[0], k - j), V.dtype)], axis=1)
    return U, jnp.concatenate([S, jnp.zeros((k - j,), S.dtype)]), V


# ------------------------------------------------------------------------------------------------
# Sharded kernels: the observed entries grouped by row blocks, U split by rows, V replicated.
#
# Each device holds the entries of its block of ``mb = n1 / p`` rows (with their global row index
# and a weight: 1 for an entry, 0 for padding) and the same rows of U; V (n2, K), the singular
# values and every scalar that decides control flow are replicated (computed from psums, so they
# are identical everywhere). Per subspace pass the devices exchange one (n2, K) psum (Y^T Q) and
# the (p K, K) stack of TSQR's R factors; per iteration a few scalars.


class Entries(NamedTuple):
    """Observed entries laid out for the sharded kernels: global row index, column, value and
    weight (0 marks padding), each (p * c,) with shard i's c entries in row block i."""

    rows: jax.Array
    cols: jax.Array
    values: jax.Array
    weights: jax.Array


def group_entries(rows, cols, values, n1, layout) -> Entries:
    """The entries grouped by row blocks of ``n1 / p`` rows (p = ``layout.size``) on the host, each
    block padded with zero-weight entries to the largest block's count, and put on the devices
    split over ``layout.axes``. Within a block the entries keep their order."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P
    if not all(getattr(a, "is_fully_addressable", True) for a in (rows, cols, values)):
        raise ValueError(
            "the observed entries are split over devices of several processes; grouping them "
            "by row blocks reads them on the host, which needs all of them in this process "
            "(multi-process completion is not supported yet: run it in one process)")
    p = layout.size
    mb = n1 // p
    r = np.asarray(rows).astype(np.int32)
    c = np.asarray(cols).astype(np.int32)
    v = np.asarray(values)
    block = r // mb
    counts = np.bincount(block, minlength=p)
    cap = max(int(counts.max()), 1)
    order = np.argsort(block, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(r.size) - starts[block[order]]
    R = np.repeat((np.arange(p, dtype=np.int32) * mb)[:, None], cap, axis=1)
    C = np.zeros((p, cap), np.int32)
    V = np.zeros((p, cap), v.dtype)
    Wt = np.zeros((p, cap), v.dtype)
    dst = (block[order], pos)
    R[dst], C[dst], V[dst], Wt[dst] = r[order], c[order], v[order], 1
    sharding = NamedSharding(layout.mesh, P(layout.axes[0] if len(layout.axes) == 1
                                            else layout.axes))
    return Entries(*(jax.device_put(a.reshape(-1), sharding) for a in (R, C, V, Wt)))


def _local_entries(e: Entries, axes, mb):
    """This shard's entries: local row index (clipped), column, weighted value, weight. Entries
    outside the shard's row block (all but its own, when the entries came replicated) get
    weight 0."""
    local = e.rows - _sharding.shard_index(axes) * mb
    w = e.weights * ((local >= 0) & (local < mb)).astype(e.weights.dtype)
    return jnp.clip(local, 0, mb - 1), e.cols, w * e.values, w


def sharded_subspace_svd(mm, rmm, V, n_passes, mb, axes):
    """``_linalg.subspace_svd`` with the n1 side split by rows: ``mm(B)`` gives this shard's rows
    of Y B (mb, K), ``rmm(Q)`` the replicated Y^T Q (n2, K) (psum'd). The row side is
    orthonormalized by TSQR (the (p K, K) stack of R factors crosses devices), the n2 side by the
    same Householder QR on every device."""
    K = V.shape[1]

    def step(_, carry):
        Qm, Qr, _ = carry
        Qm, _ = _sharding.tsqr(mm(Qr), axes)
        Qr, R = _linalg.householder_qr(rmm(Qm))
        return Qm, Qr, R

    init = (jnp.zeros((mb, K), V.dtype), V, jnp.zeros((K, K), V.dtype))
    Qm, Qr, R = jax.lax.fori_loop(0, n_passes, step, init)
    Ur, s, Vrt = jnp.linalg.svd(R.T)
    return Qm @ Ur, s, Qr @ Vrt.T


def completed_sharded(state, U, S, V, residual, axes) -> CompletionResult:
    """:func:`completed` with U split by rows (the sign flip reads U across shards)."""
    U, S, Vt = _sharding.flip(U, S, V.T, axes)
    return CompletionResult(U, S, Vt, state.n_iter, state.status == _solver.Status.CONVERGED,
                            residual, state.history, state.trace.rank, state.status,
                            state.trace.residual)


def _result_specs(row_spec, batch=False):
    from jax.sharding import PartitionSpec as P
    lead = (None,) if batch else ()
    rep = P(*lead) if batch else P()
    return CompletionResult(P(*lead, row_spec, None), rep, rep, rep, rep, rep, rep, rep, rep,
                            rep)


def _shard_map(body, mesh, axes, in_specs, out_specs):
    # check_vma=False: the loop carries mix row-split blocks with replicated ones (V, s, the
    # solver state); every replicated value is computed from psums, so it is the same everywhere.
    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)


def _entry_spec(axes, replicated):
    from jax.sharding import PartitionSpec as P
    return P() if replicated else P(axes[0] if len(axes) == 1 else axes)


def _soft_impute_solve_sharded(local, cols, b, w, U, d, V, lam, tol, *, axes, mb, n2, max_iter,
                               n_power, first_passes):
    """:func:`_soft_impute_solve` on this shard's entries (weighted values ``b``, weights ``w``)
    and rows of U."""
    psum = lambda x: jax.lax.psum(x, axes)
    norm_b = jnp.sqrt(psum(jnp.sum(b * b)))
    safe_norm = jnp.where(norm_b > 0, norm_b, 1)

    def at_entries(U, d, V):
        return w * _linalg.gather(U, d, V.T, local, cols)

    def update(it, n_iter):
        r = (b - it.z).astype(it.V.dtype)
        mm = lambda B: (jax.ops.segment_sum(r[:, None] * B[cols], local, num_segments=mb)
                        + it.U @ (it.d[:, None] * (it.V.T @ B)))
        rmm = lambda Q: psum(jax.ops.segment_sum(r[:, None] * Q[local], cols, num_segments=n2)
                             + it.V @ (it.d[:, None] * (it.U.T @ Q)))
        passes = jnp.where(n_iter == 0, first_passes, n_power + 1)
        U, s, V = sharded_subspace_svd(mm, rmm, it.V, passes, mb, axes)
        d = jnp.maximum(s - lam, 0)
        z = at_entries(U, d, V)
        old2, diff2, sq = psum(jnp.stack([jnp.sum(it.z ** 2), jnp.sum((z - it.z) ** 2),
                                          jnp.sum((z - b) ** 2)]))
        safe_old2 = jnp.where(old2 > 0, old2, 1)
        change = jnp.where(old2 > 0, diff2 / safe_old2, jnp.where(diff2 > 0, jnp.inf, 0))
        objective = 0.5 * sq + lam * jnp.sum(d)
        record = Record(jnp.sum(d > 0).astype(jnp.int32), jnp.sqrt(sq) / safe_norm)
        return SoftImputeIterate(U, d, V, z, change.astype(b.dtype)), objective, record

    def stop(state):
        return _solver.status_of(state.iterate.change < tol)

    z0 = at_entries(U, d, V)
    iterate = SoftImputeIterate(U, d, V, z0, jnp.asarray(jnp.inf, b.dtype))
    state = _solver.run(update, stop, _solver.start(iterate, max_iter=max_iter, dtype=b.dtype,
                                                    record=_record(b.dtype)))
    it = state.iterate
    residual = jnp.sqrt(psum(jnp.sum((it.z - b) ** 2))) / safe_norm
    return completed_sharded(state, it.U, it.d, it.V, residual, axes)


@partial(jax.jit, static_argnames=("mesh", "axes", "replicated", "shape", "max_iter", "n_power",
                                   "fresh", "path"))
def soft_impute_sharded(entries, U, d, V, key, lam, tol, *, mesh, axes, replicated, shape,
                        max_iter, n_power, fresh, path):
    """SoftImpute (``path``: along the lambdas ``lam``) with the entries grouped by row blocks
    (``replicated``: every device holds all entries and keeps its block's) and U split by rows
    over ``axes`` of ``mesh``; the same iterates as :func:`soft_impute` to rounding."""
    from jax.sharding import PartitionSpec as P
    n1, n2 = shape
    p = int(np.prod([mesh.shape[a] for a in axes]))
    mb = n1 // p
    row = axes[0] if len(axes) == 1 else axes
    if fresh:
        V = jax.random.normal(key, V.shape, V.dtype)

    def body(entries, U, d, V, lam, tol):
        local, cols, b, w = _local_entries(entries, axes, mb)
        solve = partial(_soft_impute_solve_sharded, local, cols, b, w, axes=axes, mb=mb, n2=n2,
                        max_iter=max_iter, n_power=n_power)
        if not path:
            first = COLD_PASSES if fresh else n_power + 1
            return solve(U, d, V, lam, tol, first_passes=first)

        def step(carry, lam):
            U, d, V, i = carry
            first = jnp.where((i == 0) & fresh, COLD_PASSES, n_power + 1)
            res = solve(U, d, V, lam, tol, first_passes=first)
            return (res.U, res.S, res.Vt.T, i + 1), res

        _, out = jax.lax.scan(step, (U, d, V, jnp.zeros((), jnp.int32)), lam)
        return out

    e_spec = _entry_spec(axes, replicated)
    in_specs = (Entries(e_spec, e_spec, e_spec, e_spec), P(row, None), P(), P(), P(), P())
    return _shard_map(body, mesh, axes, in_specs, _result_specs(row, batch=path))(
        entries, U, d, V, lam, tol)


def _svt_svd_sharded(local, cols, y, V, passes, mb, n2, axes):
    mm = lambda B: jax.ops.segment_sum(y[:, None] * B[cols], local, num_segments=mb)
    rmm = lambda Q: jax.lax.psum(jax.ops.segment_sum(y[:, None] * Q[local], cols,
                                                     num_segments=n2), axes)
    return Factors(*sharded_subspace_svd(mm, rmm, V, passes, mb, axes))


@partial(jax.jit, static_argnames=("mesh", "axes", "replicated", "shape", "K", "max_iter",
                                   "n_power"))
def svt_solve_sharded(state, key, entries, tau, delta, tol, *, mesh, axes, replicated, shape, K,
                      max_iter, n_power):
    """:func:`svt_solve` with the entries grouped by row blocks and U split by rows over
    ``axes`` of ``mesh``: the same iterates to rounding. ``state`` (None: from the start) holds
    Y on this layout's entries."""
    from jax.sharding import PartitionSpec as P
    n1, n2 = shape
    p = int(np.prod([mesh.shape[a] for a in axes]))
    mb = n1 // p
    row = axes[0] if len(axes) == 1 else axes
    e_spec = _entry_spec(axes, replicated)
    # Y on the entries: split like them (under an outer jit, where the entries come replicated,
    # each device's copy holds its block's; that state is never fed back: the buffer cannot grow).
    y_spec = P(row)
    fac = Factors(P(row, None), P(), P())
    state_spec = _solver.State(SVTIterate(y_spec, fac, fac, P()), P(), P(), Record(P(), P()), P())
    fresh = state is None
    # The start block and the grown buffer's new directions: the same hash columns as
    # svt_solve's.
    H = hash_block(key_bits(key), n2, jnp.arange(K)).astype(entries.values.dtype)
    V0 = H if fresh else jnp.concatenate([state.iterate.Y.V, H[:, state.iterate.Y.s.shape[0]:]],
                                         axis=1)

    def body(entries, state, V0, tau, delta, tol):
        local, cols, b, w = _local_entries(entries, axes, mb)
        psum = lambda x: jax.lax.psum(x, axes)
        svd = lambda y, V, passes: _svt_svd_sharded(local, cols, y, V, passes, mb, n2, axes)
        dtype = b.dtype
        if state is None:
            P0 = svd(b, V0, START_PASSES)
            norm = jnp.where(P0.s[0] > 0, P0.s[0], 1)
            y = jnp.ceil(tau / (delta * norm)) * delta * b
            Y = svd(y, P0.V, n_power + 1)
            zero = Factors(jnp.zeros((mb, K), dtype), jnp.zeros((K,), dtype),
                           jnp.zeros((n2, K), dtype))
            state = _solver.start(SVTIterate(y, Y, zero, jnp.asarray(jnp.inf, dtype)),
                                  max_iter=max_iter, dtype=dtype, record=_record(dtype))
        else:
            it = state.iterate
            pad = K - it.Y.s.shape[0]
            grow = lambda A: jnp.pad(A, ((0, 0), (0, pad)))
            Y = svd(it.y, V0, n_power + 1)
            X = Factors(grow(it.X.U), jnp.pad(it.X.s, (0, pad)), grow(it.X.V))
            state = state._replace(iterate=it._replace(Y=Y, X=X))
        full = _svt_full(Y, tau, K, min(shape))
        state = state._replace(status=jnp.where(full, _solver.Status.BUFFER_FULL,
                                                _solver.Status.RUNNING).astype(jnp.int32))
        norm_b = jnp.sqrt(psum(jnp.sum(b * b)))
        safe_norm_b = jnp.where(norm_b > 0, norm_b, 1)

        def update(it, n_iter):
            U, s, V = it.Y
            d = jnp.maximum(s - tau, 0)
            x = w * _linalg.gather(U, d, V.T, local, cols)
            residual = jnp.sqrt(psum(jnp.sum((x - b) ** 2))) / safe_norm_b
            y = it.y + delta * (b - x)
            Y = svd(y, V, n_power + 1)
            objective = tau * jnp.sum(d) + 0.5 * jnp.sum(d * d)
            rank = jnp.sum(s > tau).astype(jnp.int32)
            return SVTIterate(y, Y, Factors(U, d, V), residual), objective, Record(rank, residual)

        def stop(state):
            return _svt_stop(state, tau, tol, K, shape, max_iter)

        state = _solver.run(update, stop, state)
        X = state.iterate.X
        return state, completed_sharded(state, X.U, X.s, X.V, state.iterate.residual, axes)

    in_specs = (Entries(e_spec, e_spec, e_spec, e_spec), None if fresh else state_spec, P(),
                P(), P(), P())
    return _shard_map(body, mesh, axes, in_specs, (state_spec, _result_specs(row)))(
        entries, state, V0, tau, delta, tol)
