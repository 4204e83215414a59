"""The linear-algebra kernels every family shares: one place for each.

* :func:`svd_thin` / :func:`svd_kept`: thin SVD with deterministic signs (:func:`flip`) and a
  derivative that stays finite at repeated singular values; :func:`subspace_rotations` (with
  :func:`tie_tolerance`) is the one treatment of ties, also used by the implicit derivative of
  top-k triplets found by any method (``_implicit_diff.svd_vjp``).
* :func:`truncated_svd`, :func:`randomized_svd`: the kernels behind :mod:`jaxfact.svd` (the public
  wrappers validate and cast; these assume valid input).
* :func:`subspace_svd`: warm-started block subspace iteration on an operator (completion, WLRA).
* :func:`gather`: entries of a factored matrix ``U diag(S) Vt`` at given positions.

Three orthonormalizers, because each wins where it is used. Measured on CPU, float32, median ms
per call, "1 thread" with XLA and OpenBLAS on one core, "busy" with the default threading on a
2-core machine at load 10 (``||Q^T Q - I||`` for LAPACK, XLA Householder, CholeskyQR3)::

    (n, K)         1 thread: LAPACK  House.  CQR3   busy: LAPACK  House.  CQR3   ||Q^T Q - I||
    (1000, 16)               0.08    0.58    0.16         344     0.64    72     2e-6 2e-6 1e-4
    (4000, 60)               12.6    32      12.9         540     40      88     2e-6 2e-6 3e-3
    (100000, 30)             85      972     135          1131    983     243    1e-6 1e-6 6e-4

* :func:`orthonormalize` (Householder QR by LAPACK): exactly orthonormal, robust to rank
  deficiency and the fastest on a quiet CPU: the final basis of the randomized range finder for
  sparse and operator input.
* :func:`orthonormalize_cholesky` (shifted CholeskyQR3 to working precision, with a Householder
  fallback where that does not reach it): the final bases of the dense randomized SVD. LAPACK's
  QR and SVD of an m x l matrix (and its divide-and-conquer SVD and triangular solve, even at
  l x l) run on OpenBLAS's threads, which keep spinning after the call on the cores that XLA's
  next products need; on a busy 2-core machine a dense 4000 x 2000 randomized SVD took a median
  2.9 s with OpenBLAS on 2 threads against 0.43 s on 1. Its products and the l x l Cholesky
  factor and QR-iteration SVD (which OpenBLAS runs on one thread) avoid that.
* :func:`normalize_rows` (shifted CholeskyQR3): matrix products and a small Cholesky factor, so it
  keeps XLA's speed when LAPACK's OpenBLAS threads contend with XLA's; its basis is orthonormal
  only to ~1e-3, which the intermediate bases of the power iteration do not need (they only
  carry the subspace to the next product).
* :func:`householder_qr` (Householder QR in XLA operations, also returns R): for the small
  (n, K) blocks of :func:`subspace_svd`, which runs inside the while loops of the completion
  solvers; it never calls LAPACK, so it does not collapse under contention (0.6 ms against
  LAPACK's 344 ms above), and it gives LAPACK's Q to 4e-7.

Two subspace iterations, because their inputs and answers differ: :func:`randomized_svd` starts
cold from a Gaussian sketch with a static number of passes, keeps its sketches in the layouts
its products are fastest in (see ``_randomized_svd_tall``) and ends with ``B = Q^T X`` and its
SVD; :func:`subspace_svd`
continues from the previous solver iteration's V with a traced number of passes, needs R of
every QR (its answer is the SVD of the K x K ``R^T``) and pads both half-steps to one shape so
its QR compiles once. Running one through the other's loop would change its results.

Everything here assumes valid input.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxfact import linop

__all__ = []  # private module


def flip(U, S, Vt, u_based=True, xp=jnp):
    """Signs made deterministic (scikit-learn's svd_flip); ``xp``: jax.numpy, or NumPy for
    concrete factors (no compiled program)."""
    basis = U if u_based else Vt.T
    idx = xp.argmax(xp.abs(basis), axis=0)
    signs = xp.sign(basis[idx, xp.arange(basis.shape[1])])
    signs = xp.where(signs == 0, 1, signs).astype(U.dtype)
    return U * signs[None, :], S, Vt * signs[:, None]


def tie_tolerance(s):
    # Singular values closer than sqrt(eps) * s_max are treated as one (near-)degenerate block:
    # the exact formula would divide by their difference and lose all accuracy in floating point.
    eps = jnp.finfo(s.dtype).eps
    return jnp.sqrt(eps) * jnp.maximum(s[0], jnp.finfo(s.dtype).tiny)


def svd_thin(X, n_kept=None, qr_algorithm=False):
    """Thin SVD with flipped signs and a derivative that stays finite at repeated values.

    ``n_kept`` (static; default all) is the number of leading components the caller keeps: it
    decides which pairs of tied singular values lie inside the kept block (see the JVP below).
    ``qr_algorithm`` (static) uses LAPACK's QR-iteration SVD (gesvd) instead of divide and
    conquer (gesdd): for the small l x l factors of :func:`randomized_svd`, where gesdd wakes
    OpenBLAS's threads (measured ~0.7 ms alone and up to 50 ms on a busy 2-core CPU, against
    ~0.9 ms for gesvd either way).
    """
    return svd_kept(X, min(X.shape[-2:]) if n_kept is None else n_kept, qr_algorithm)


@partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def svd_kept(X, n_kept, qr_algorithm=False):
    if qr_algorithm:
        U, s, Vt = jax.lax.linalg.svd(X, full_matrices=False,
                                      algorithm=jax.lax.linalg.SvdAlgorithm.QR)
    else:
        U, s, Vt = jnp.linalg.svd(X, full_matrices=False)
    return flip(U, s, Vt)


@svd_kept.defjvp
def _svd_kept_jvp(n_kept, qr_algorithm, primals, tangents):
    # dU = U Om_U + (I - U U^T) dX V / S,  dV = V Om_V + (I - V V^T) dX^T U / S, dS = diag(dP),
    # with Om_U, Om_V from subspace_rotations (ties treated there).
    (X,), (dX,) = primals, tangents
    U, s, Vt = svd_kept(X, n_kept, qr_algorithm)
    V = Vt.T
    dP = U.T @ dX @ V
    om_u, om_v = subspace_rotations(dP, s, n_kept)
    inv_s = safe_inverse(s)[None, :]
    dXV = dX @ V
    dXtU = dX.T @ U
    dU = U @ om_u + (dXV - U @ (U.T @ dXV)) * inv_s
    dV = V @ om_v + (dXtU - V @ (V.T @ dXtU)) * inv_s
    return (U, s, Vt), (dU, jnp.diagonal(dP), dV.T)


def safe_inverse(s):
    """1 / s where s > 0, 0 elsewhere; no NaN or Inf in the value or its derivative."""
    return jnp.where(s > 0, 1 / jnp.where(s > 0, s, 1), 0)


def subspace_rotations(dP, s, n_kept):
    """``Om_U = U^T dU`` and ``Om_V = V^T dV`` (k, k) of the SVD's tangent within the span of the
    k singular vectors, from ``dP = U^T dX V`` and the singular values s (descending).

    The one treatment of (near-)ties, shared by :func:`svd_kept`'s JVP and the implicit
    derivative of top-k triplets found by any method (``_implicit_diff.svd_vjp``, where every
    component is kept: ``n_kept = k``)."""
    # Derivative of the thin SVD (e.g. Townsend 2016, "Differentiating the singular value
    # decomposition"). With dP = U^T dX V, A and Sy its antisymmetric and symmetric parts:
    #   dP = Om_U S + dS + S Om_V^T;  with Om_U, Om_V antisymmetric, dS = diag(dP) and
    #   Om_U[i,j] =  A_ij / (s_i + s_j) + Sy_ij / (s_j - s_i)
    #   Om_V[i,j] = -A_ij / (s_i + s_j) + Sy_ij / (s_j - s_i)
    # At a tie s_i = s_j the Sy term is 1/0: the tied vectors rotate by an amount that depends on
    # the direction dX (no derivative exists). No choice of antisymmetric Om_U, Om_V and diagonal
    # dS then reproduces the symmetric part of dP on the tied block, so U S V^T, U U^T and V V^T
    # cannot all be exact; we keep U's tangent exact and let V's absorb that part:
    # * ties inside the kept block (i, j < n_kept): Om_U[i,j] = A_ij / (s_i + s_j), i.e. no
    #   rotation of U within the block, so U stays orthonormal (Om_U antisymmetric) and U_k U_k^T
    #   gets its exact derivative; Om_V[i,j] = -A_ij / (s_i + s_j) + Sy_ij / s_j solves both the
    #   (i, j) and the (j, i) entry of dP = Om_U S + dS + S Om_V^T exactly (also for s_i != s_j),
    #   so U_k S_k V_k^T gets its exact derivative. V's tangent leaves the orthogonal group there.
    # * ties across the cut (or among discarded values): the Sy term is dropped from both, the
    #   derivative along directions that do not mix the tied vectors; the truncation is not
    #   differentiable there.
    # "Tie" means |s_i - s_j| <= sqrt(eps) s_max: the exact formula's rounding error grows like
    # eps s_max / |s_i - s_j|, and inside the kept block the tie formula is exact for U_k U_k^T
    # and U_k S_k V_k^T whatever the gap.
    idx = jnp.arange(s.shape[0])
    si, sj = s[:, None], s[None, :]
    A = 0.5 * (dP - dP.T)
    Sy = 0.5 * (dP + dP.T)
    ssum = si + sj
    sdiff = sj - si
    off = idx[:, None] != idx[None, :]
    tied = off & (jnp.abs(sdiff) <= tie_tolerance(s))
    distinct = off & ~tied
    kept = idx < n_kept
    inside = tied & kept[:, None] & kept[None, :]
    # Double `where`: guard the divisions themselves, not only their results, so no NaN leaks into
    # the tangent (0 / 0 at zero singular values, 1 / 0 at ties).
    inv_sum = safe_inverse(ssum)
    inv_diff = jnp.where(distinct, 1 / jnp.where(distinct, sdiff, 1), 0)
    rotation = Sy * inv_diff          # zero on ties and on the diagonal (A is zero there too)
    om_u = A * inv_sum + rotation
    om_v = -A * inv_sum + rotation + jnp.where(inside, Sy * safe_inverse(s)[None, :], 0)
    return om_u, om_v


@partial(jax.jit, static_argnames=("rank",))
def truncated_svd(X, rank):
    U, s, Vt = svd_thin(X, rank)
    return U[:, :rank], s[:rank], Vt[:rank]


def orthonormalize(Y):
    """Householder QR: an orthonormal basis of range(Y), robust to rank deficiency."""
    return jnp.linalg.qr(Y, mode="reduced")[0]


def inv_upper(R):
    """R^-1 of an upper-triangular (l, l) R by Newton-Schulz steps ``X <- X (2 I - R X)`` from
    ``X = diag(R)^-1``, kept upper triangular: the error ``I - R X`` starts strictly upper
    triangular (nilpotent) and is squared by each step, so ceil(log2 l) steps make it exact in
    exact arithmetic, and one more step corrects rounding. Only l x l products: on CPU, LAPACK's
    triangular solve wakes OpenBLAS's threads, which then keep spinning on cores that XLA's
    products need (see :func:`orthonormalize_cholesky`)."""
    l = R.shape[0]
    eye = jnp.eye(l, dtype=R.dtype)
    X = jnp.diag(1 / jnp.diagonal(R))
    for _ in range(max(l - 1, 1).bit_length() + 1):
        X = jnp.triu(X @ (2 * eye - R @ X))
    return X


def _cholesky_qr(Y, shift, rows, with_r=False):
    # Orthonormalizes the rows (rows=True, Y (l, m)) or the columns (Y (m, l)) of Y:
    # Q = Y R^-1 (columns) or R^-T Y (rows), with R^T R = G + shift * trace(G) I, G the (l, l)
    # Gram matrix. The products run at matrix-multiply speed, unlike forming Householder's Q
    # (LAPACK orgqr), which dominates for tall thin matrices. R^-1 is formed (l x l, by
    # inv_upper's products) and applied by one product: XLA's CPU triangular solve with m
    # right-hand sides runs ~6x slower than that product, and the rounding of either is of order
    # eps cond(R) relative. ``with_r``: returns (Q, R).
    hi = jax.lax.Precision.HIGHEST
    l = Y.shape[0] if rows else Y.shape[1]
    ax = 1 if rows else 0   # the long axis, contracted in the Gram matrix
    G = jax.lax.dot_general(Y, Y, (((ax,), (ax,)), ((), ())), precision=hi)
    G = G + (shift * jnp.trace(G) + jnp.finfo(Y.dtype).tiny) * jnp.eye(l, dtype=G.dtype)
    R = jnp.linalg.cholesky(G, upper=True)
    Ri = inv_upper(R)
    Q = jnp.matmul(Ri.T, Y, precision=hi) if rows else jnp.matmul(Y, Ri, precision=hi)
    return (Q, R) if with_r else Q


def orthonormalize_cholesky(Y):
    """Thin QR of a tall Y (m, l), ``Y = Q R``, by shifted CholeskyQR3 (Fukaya, Kannan,
    Nakatsukasa, Yamamoto & Yanagisawa 2020): a shifted pass where its shift is below 1, then two
    plain passes. Where the result is not orthonormal to ``100 l eps`` (Y too ill-conditioned or
    rank deficient) it falls back to Householder QR (LAPACK), so Q is always orthonormal.

    It exists for the CPU: LAPACK's QR and SVD of an m x l matrix run on OpenBLAS's threads, which
    keep spinning after the call and take cores from XLA's next products (measured: a randomized
    SVD of 4000 x 2000 took 0.43 s against 2.9 s median on a loaded 2-core machine with OpenBLAS
    limited to 1 thread, against 2). Here only l x l factorizations reach LAPACK, which OpenBLAS
    runs on one thread."""
    m, l = Y.shape
    eps = jnp.finfo(Y.dtype).eps
    c = jnp.max(jnp.abs(Y))
    c = jnp.where((c > 0) & jnp.isfinite(c), c, 1).astype(Y.dtype)
    Q = Y / c
    R = jnp.eye(l, dtype=Y.dtype)
    shift = 11 * (m * l + l * (l + 1)) * float(eps)
    if shift < 1:
        Q, R = _cholesky_qr(Q, shift, False, with_r=True)
    Q, R2 = _cholesky_qr(Q, 0.0, False, with_r=True)
    Q, R3 = _cholesky_qr(Q, 0.0, False, with_r=True)
    R = (R3 @ R2 @ R) * c
    off = jnp.max(jnp.abs(jax.lax.dot_general(Q, Q, _TN) - jnp.eye(l, dtype=Y.dtype)))
    ok = (off <= 100 * l * eps) & jnp.all(jnp.isfinite(R))
    return jax.lax.cond(ok, lambda: (Q, R), lambda: tuple(jnp.linalg.qr(Y, mode="reduced")))


def normalize_rows(Yt, rows=True):
    """A well-conditioned basis (as rows) of the row space of Yt (l, m) for the power iterations:
    shifted CholeskyQR3 (Fukaya, Kannan, Nakatsukasa, Yamamoto & Yanagisawa 2020), stable for
    cond(Yt) up to 1/eps where its first pass applies (``11 (m l + l (l + 1)) eps < 1``; beyond,
    in float32 for m l > ~1.5e6, that pass is skipped: it could not change the conditioning, and
    the two passes left act as CholeskyQR2, whose shift damps directions below ~sqrt(l eps) of the
    largest). The small shift of the last two passes keeps a rank-deficient Yt finite;
    the final basis of the range finder still comes from :func:`orthonormalize`. With
    ``rows=False``, the same for the columns of Yt (m, l)."""
    l, m = Yt.shape if rows else Yt.shape[::-1]
    eps = jnp.finfo(Yt.dtype).eps
    # The Gram matrix squares the entries: rows of max-abs 1e19 overflow it in float32 and rows of
    # 1e-20 underflow it. Scaling each row to max-abs 1 spans the same space, so the result does
    # not depend on the scale of X.
    peak = jnp.max(jnp.abs(Yt), axis=1 if rows else 0, keepdims=True)
    Yt = Yt / jnp.where(peak > 0, peak, 1)
    shift = 11 * (m * l + l * (l + 1)) * float(jnp.finfo(Yt.dtype).eps)
    if shift < 1:
        Yt = _cholesky_qr(Yt, shift, rows)
    # else (float32 with m l > ~1.5e6): the shift exceeds every eigenvalue of the Gram matrix, so
    # that pass would change cond(Yt) by at most sqrt(2); skipping it changes nothing measurable.
    Qt = _cholesky_qr(Yt, l * eps, rows)
    return _cholesky_qr(Qt, l * eps, rows)


@partial(jax.jit, static_argnames=("rank", "n_samples", "n_iter"))
def randomized_svd(X, key, *, rank, n_samples, n_iter):
    m, n = linop.shape_of(X)
    dtype = linop.dtype_of(X)
    if m < n:
        # Sketch the column space of the smaller side: QR factors of m x l instead of n x l.
        U, s, Vt = _randomized_svd_tall(_Transposed(X), key, rank, n_samples, n_iter, dtype)
        U, s, Vt = Vt.T, s, U.T
    else:
        U, s, Vt = _randomized_svd_tall(X, key, rank, n_samples, n_iter, dtype)
    return flip(U, s, Vt)


class _Transposed:
    """X^T as an operator, without copying X."""

    def __init__(self, X):
        self.X = X
        self.shape = (linop.shape_of(X)[1], linop.shape_of(X)[0])
        self.dtype = linop.dtype_of(X)


# The sketch of the tall side is kept as columns, Q (m, l); for a dense X the short side's is kept
# as rows, Zt (l, n). Measured on CPU (XLA's dot, 4000 x 2000 float32, l = 60), Q^T X contracting
# the leading axes of both (no transposes) runs ~1.5x faster than Qt @ X or X.T @ Q, and X @ Zt^T
# as fast as the fastest other form. Every other operator keeps both as columns, (m, l) and (n, l):
# the sparse kernels gather and write rows of length l, and transposing their (m, l) blocks costs
# as much as a product.

_TN = (((0,), (0,)), ((), ()))   # contract the leading axes
_NT = (((1,), (1,)), ((), ()))   # contract the trailing axes


def _is_dense(X):
    return isinstance(X.X if isinstance(X, _Transposed) else X, jax.Array)


def _qtx(X, Q):
    """Q^T X, shape (l, n), for a dense X and Q (m, l)."""
    if isinstance(X, _Transposed):   # Q^T X0^T: contract Q's rows with X0's columns
        return jax.lax.dot_general(Q, X.X, (((0,), (1,)), ((), ())))
    return jax.lax.dot_general(Q, X, _TN)


def _xzt(X, Zt):
    """X Zt^T, shape (m, l), for a dense X and Zt (l, n)."""
    if isinstance(X, _Transposed):   # X0^T Zt^T: contract X0's rows with Zt's columns
        return jax.lax.dot_general(X.X, Zt, (((0,), (1,)), ((), ())))
    return jax.lax.dot_general(X, Zt, _NT)


def _mm(X, B):
    """X @ B, shape (m, l)."""
    return linop.rmatmul(X.X, B) if isinstance(X, _Transposed) else linop.matmul(X, B)


def _rmm(X, C):
    """X.T @ C, shape (n, l)."""
    return linop.matmul(X.X, C) if isinstance(X, _Transposed) else linop.rmatmul(X, C)


def _randomized_svd_tall(X, key, rank, n_samples, n_iter, dtype):
    n = X.shape[1]
    omega_t = jax.random.normal(key, (n_samples, n), dtype)
    if _is_dense(X):
        Q = normalize_rows(_xzt(X, omega_t), rows=False)

        def power(_, Q):
            Zt = normalize_rows(_qtx(X, Q))
            return normalize_rows(_xzt(X, Zt), rows=False)

        Q = jax.lax.fori_loop(0, n_iter, power, Q)
    else:
        Q = normalize_rows(_mm(X, omega_t.T), rows=False)

        def power(_, Q):
            Z = normalize_rows(_rmm(X, Q), rows=False)
            return normalize_rows(_mm(X, Z), rows=False)

        Q = jax.lax.fori_loop(0, n_iter, power, Q)
    Q, _ = orthonormalize_cholesky(Q)                      # (m, l)
    if _is_dense(X):
        # Q^T X in its fastest form (Q, X contracted on their leading axes); the barrier keeps XLA
        # from folding the transpose into the product, which it then runs as X^T Q, ~1.7x slower.
        Bt = jax.lax.optimization_barrier(_qtx(X, Q)).T     # (n, l) = X^T Q
    else:
        Bt = _rmm(X, Q)                                      # (n, l) = X^T Q
    U, s, Vt = svd_in_range(Q, Bt, rank)
    return U[:, :rank], s[:rank], Vt[:rank]


def svd_in_range(Q, Bt, n_kept):
    """The SVD ``U diag(s) Vt`` (all l components, flipped signs) of ``Q B``, for an orthonormal
    basis Q (m, l) and ``Bt = B^T = X^T Q`` (n, l): the last step of the randomized SVD (Halko
    et al. 2011, Algorithm 5.1). It is taken from the small Rb of ``Bt = Qb Rb`` (CholeskyQR3,
    :func:`orthonormalize_cholesky`) by LAPACK's QR-iteration SVD: no LAPACK call on an m x l or
    n x l matrix. ``n_kept``: the components the caller keeps (see :func:`svd_thin`)."""
    Qb, Rb = orthonormalize_cholesky(Bt)
    W, s, Ubt = svd_thin(Rb, n_kept, qr_algorithm=True)
    return Q @ Ubt.T, s, (Qb @ W).T


@jax.jit
def gather(U, S, Vt, rows, cols):
    """Entries (rows[e], cols[e]) of U diag(S) Vt (leading batch axes kept): O(len(rows) k)."""
    # Gathering rows of V (not columns of Vt) keeps the reads contiguous.
    V = jnp.swapaxes(Vt, -1, -2)
    return jnp.einsum("...ek,...k,...ek->...e", U[..., rows, :], S, V[..., cols, :])


def householder_qr(A):
    """Thin QR of a tall (n, K) matrix by Householder reflections written in XLA operations.

    ``jnp.linalg.qr`` calls LAPACK, whose OpenBLAS threads contend with XLA's own thread pool on a
    busy CPU (measured: 0.06 ms alone, up to 100 ms under load for n = 1000, K = 16); this loop of
    K rank-one updates, O(n K^2), does not. Q has orthonormal columns even when A is rank
    deficient (a zero column gets an identity reflector).
    """
    n, K = A.shape
    idx = jnp.arange(n)
    tiny = jnp.finfo(A.dtype).tiny

    def reflect(j, carry):
        A, Vs, taus = carry
        x = jnp.where(idx >= j, A[:, j], 0)
        alpha = x[j]
        norm = jnp.linalg.norm(x)
        beta = -jnp.where(alpha >= 0, 1, -1).astype(A.dtype) * norm
        ok = norm > tiny   # a zero column needs no reflection
        denom = jnp.where(ok, alpha - beta, 1)
        v = jnp.where(ok, x / denom, 0).at[j].set(1)
        tau = jnp.where(ok, (beta - alpha) / jnp.where(ok, beta, 1), 0)
        A = A - tau * jnp.outer(v, v @ A)
        return A, Vs.at[:, j].set(v), taus.at[j].set(tau)

    A, Vs, taus = jax.lax.fori_loop(
        0, K, reflect, (A, jnp.zeros_like(A), jnp.zeros((K,), A.dtype)))
    R = jnp.triu(A[:K])

    def apply(i, Q):
        j = K - 1 - i
        v = Vs[:, j]
        return Q - taus[j] * jnp.outer(v, v @ Q)

    Q = jax.lax.fori_loop(0, K, apply, jnp.eye(n, K, dtype=A.dtype))
    return Q, R


def subspace_svd(mm, rmm, V, n_passes, shape):
    """Top singular triplets of an operator Y (n1, n2) from a warm start V (n2, K).

    ``n_passes`` block power iterations (Halko et al. 2011, Algorithm 4.4), each
    ``Q = orth(Y V)``, ``Y^T Q = V R``; after the last one ``Y ~ Q Q^T Y = Q R^T V^T`` and the
    K x K SVD ``R^T = Ur diag(s) Vr^T`` gives ``Y ~ (Q Ur) diag(s) (V Vr)^T`` (their Algorithm 5.1).
    ``n_passes`` may be traced. The loop runs over half-steps that share one QR (of a block padded
    to max(n1, n2) rows, which leaves Q zero-padded and R unchanged), so the QR is compiled once.
    """
    n1, n2 = shape
    N, K = max(n1, n2), V.shape[1]

    def pad(B):
        return jnp.pad(B, ((0, N - B.shape[0]), (0, 0)))

    def half(h, carry):
        Qm, Qr, _ = carry
        even = h % 2 == 0
        B = jax.lax.cond(even, lambda: pad(mm(Qr[:n2])), lambda: pad(rmm(Qm[:n1])))
        Q, R = householder_qr(B)
        return jnp.where(even, Q, Qm), jnp.where(even, Qr, Q), R

    init = (jnp.zeros((N, K), V.dtype), pad(V), jnp.zeros((K, K), V.dtype))
    Qm, Qr, R = jax.lax.fori_loop(0, 2 * n_passes, half, init)
    Ur, s, Vrt = jnp.linalg.svd(R.T)
    return Qm[:n1] @ Ur, s, Qr[:n2] @ Vrt.T
