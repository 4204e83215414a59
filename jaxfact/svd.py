"""Truncated and randomized SVD, sign fixing, reconstruction, PCA and singular value shrinkage.

Every SVD jaxfact returns has singular values in descending order and deterministic signs
(:func:`svd_flip`), so the same input and key give the same factors on every backend.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from jaxfact import _checks
from jaxfact import _implicit
from jaxfact import linop

__all__ = ["SVDResult", "PCAResult", "truncated_svd", "randomized_svd", "svd_flip", "reconstruct",
           "singular_value_shrink", "pca", "pca_transform"]


class SVDResult(NamedTuple):
    """A (truncated) singular value decomposition ``X ~= U @ diag(S) @ Vt``."""

    U: jax.Array   # (m, k), orthonormal columns
    S: jax.Array   # (k,), non-negative, descending
    Vt: jax.Array  # (k, n), orthonormal rows


class PCAResult(NamedTuple):
    """Principal components of the rows of X, in scikit-learn's conventions."""

    components: jax.Array                # (k, n_features), orthonormal rows
    explained_variance: jax.Array        # (k,), S**2 / (n_samples - 1)
    explained_variance_ratio: jax.Array  # (k,), share of the total variance
    mean: jax.Array                      # (n_features,), the column means removed first
    singular_values: jax.Array           # (k,), of the centred X


# ------------------------------------------------------------------------------------------------
# Public functions


def truncated_svd(X: Any, rank: int, *, checks: bool = False) -> SVDResult:
    """The best rank-``rank`` approximation of a dense matrix, by a full thin SVD.

    Computes ``U, S, Vt`` with ``X_k = U @ diag(S) @ Vt`` minimizing ``||X - X_k||`` in the
    Frobenius and spectral norms over rank-k matrices (Eckart & Young 1936). Signs follow
    :func:`svd_flip`. Cost: O(m n min(m, n)) time, O(m n) memory.

    Gradients stay finite and correct when kept singular values are equal or nearly equal
    (JAX's own SVD derivative divides by ``s_i**2 - s_j**2`` there and returns NaN): within such a
    block the derivative returned keeps ``U @ diag(S) @ Vt`` exact, which is all that is defined
    there (individual singular vectors of a repeated singular value are not differentiable). A tie
    *across* the cut (``S[k-1] == S_full[k]``) makes the rank-k approximation itself
    non-differentiable; the derivative is then finite but arbitrary.

    Args:
      X: (m, n) real floating array.
      rank: number of components k, 1 <= k <= min(m, n).
      checks: under an outer ``jit``, also check that X is finite, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      ``SVDResult(U (m, k), S (k,), Vt (k, n))``.

    Example::

      >>> X = jax.random.normal(jax.random.key(0), (100, 40))
      >>> U, S, Vt = truncated_svd(X, 5)
      >>> (U.shape, S.shape, Vt.shape)
      ((100, 5), (5,), (5, 40))
    """
    fn = "truncated_svd"
    X = _checks.as_float_array(fn, "X", X)
    rank = _checks.check_rank(fn, rank, X.shape)
    _checks.check_finite(fn, "X", X, checks)
    return _truncated_svd(X, rank)


def randomized_svd(X: Any, rank: int, *, key: Any, n_oversamples: int = 10,
                   n_iter: int = 4, checks: bool = False,
                   diff: _implicit.ImplicitDiff | None = None) -> SVDResult:
    """Approximate top-``rank`` SVD by random projection (Halko, Martinsson & Tropp 2011).

    Forms ``Y = (X X^T)^q X Omega`` with a Gaussian ``Omega`` of ``rank + n_oversamples`` columns,
    re-normalizing the basis after every product (their Algorithm 4.4, the subspace iteration),
    then ``Q = orth(Y)`` by Householder QR, ``B = Q^T X`` and the exact SVD of the small ``B``.
    Deviation from the paper: the intermediate bases are normalized by shifted CholeskyQR3 (Fukaya
    et al. 2020) rather than Householder QR; it spans the same subspace, is stable up to
    ``cond(Y) ~ 1/eps``, and runs at matrix-multiply speed (scikit-learn uses LU for the same
    purpose). The error is within
    a small factor of the optimal ``sigma_{k+1}`` that shrinks like ``1/(2q+1)`` in the exponent
    (their Theorem 1.2); ``n_iter=4`` (scikit-learn's default for large ranks) gets within a
    fraction of a percent of the optimum on slowly decaying spectra.

    Cost: ``2 (n_iter + 1)`` products with X and X^T against (rank + oversamples) columns, plus
    O((m + n) l^2) for the QR and small SVD; X is never copied or densified.

    Args:
      X: (m, n) dense array, ``jax.experimental.sparse.BCOO``, SciPy sparse matrix,
        :class:`jaxfact.linop.ObservedMatrix` or :class:`jaxfact.linop.LinearOperator`.
      rank: number of components k, 1 <= k <= min(m, n).
      key: a ``jax.random`` key; the same key gives the same factors.
      n_oversamples: extra random directions p (Halko et al. recommend 5 or 10).
      n_iter: power (subspace) iterations q >= 0.
      checks: under an outer ``jit``, also check that X is finite, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).
      diff: settings of the gradient's backward solves (:class:`ImplicitDiff`).

    Returns:
      ``SVDResult(U (m, k), S (k,), Vt (k, n))`` with signs fixed by :func:`svd_flip`.

    Differentiable (reverse mode, dense X): the gradient is that of the exact truncated SVD at
    the factors found (not of the random sketch), so it matches :func:`truncated_svd`'s when the
    factors have converged. The components of dU outside span(U) solve
    ``(s_i^2 - P X X^T P) y_i = P (dX v_i s_i + X dX^T u_i)``, ``P = I - U U^T`` (and the same for
    V), by CG with products with X: O(m n k) per step, well conditioned when s_k > s_{k+1}.

    Example::

      >>> X = jax.random.normal(jax.random.key(0), (500, 200))
      >>> U, S, Vt = randomized_svd(X, 10, key=jax.random.key(1))
      >>> S.shape
      (10,)

    References:
      N. Halko, P.-G. Martinsson, J. A. Tropp. Finding structure with randomness: probabilistic
      algorithms for constructing approximate matrix decompositions. SIAM Review 53(2), 2011.
      Algorithms 4.4 and 5.1.
    """
    fn = "randomized_svd"
    X = linop.as_operator(X)
    if isinstance(X, jax.Array):
        X = _checks.as_float_array(fn, "X", X)
    else:
        if len(X.shape) != 2:
            raise ValueError(f"{fn}: `X` must be 2-D; got shape {tuple(X.shape)}")
        _checks.check_float_dtype(fn, "X", X.dtype)
    m, n = linop.shape_of(X)
    rank = _checks.check_rank(fn, rank, (m, n))
    n_oversamples = _checks.check_int(fn, "n_oversamples", n_oversamples, low=0)
    n_iter = _checks.check_int(fn, "n_iter", n_iter, low=0)
    key = _checks.check_key(fn, key, why="randomized_svd draws a random test matrix")
    if isinstance(X, jax.Array):
        _checks.check_finite(fn, "X", X, checks)
    elif isinstance(X, jsparse.BCOO):
        _checks.check_finite(fn, "X", X.data, checks)
    elif isinstance(X, linop.SparseCSR):
        _checks.check_finite(fn, "X", X.X.data, checks)
    elif isinstance(X, linop.ObservedMatrix):
        _checks.check_finite(fn, "X", X.values, checks)
    n_samples = min(rank + n_oversamples, m, n)
    diff = _implicit.check_diff(fn, diff)
    if not isinstance(X, jax.Array):
        return _randomized_svd(X, key, rank=rank, n_samples=n_samples, n_iter=n_iter)
    res = _randomized_svd(jax.lax.stop_gradient(X), key, rank=rank, n_samples=n_samples,
                          n_iter=n_iter)
    return SVDResult(*_implicit.svd_factors(*res, X, diff))


def svd_flip(result: SVDResult, *, u_based: bool = True) -> SVDResult:
    """Makes the signs of singular vectors deterministic.

    Each pair (u_i, v_i) is multiplied by +-1 so that the entry of largest absolute value in u_i
    (``u_based=True``, scikit-learn's ``svd_flip`` default) or in v_i (``u_based=False``, what
    scikit-learn's ``PCA`` uses) is positive. ``U @ diag(S) @ Vt`` is unchanged.
    """
    U, S, Vt = result
    return SVDResult(*_flip(U, S, Vt, u_based))


def reconstruct(result: SVDResult) -> jax.Array:
    """``U @ diag(S) @ Vt``, the (m, n) matrix a truncated SVD represents. O(m n k)."""
    U, S, Vt = result
    return (U * S) @ Vt


def singular_value_shrink(X: Any, tau: Any) -> SVDResult:
    """The proximal operator of ``tau * ||.||_*`` (singular value soft thresholding).

    Returns the SVD of ``D_tau(X) = U diag(max(S - tau, 0)) Vt``, the minimizer of
    ``1/2 ||Z - X||_F^2 + tau ||Z||_*`` (Cai, Candès & Shen 2010, Theorem 2.1). All min(m, n)
    components are returned; those shrunk to zero have ``S == 0``. ``tau`` is traced, so changing
    it does not recompile.

    Example::

      >>> Z = reconstruct(singular_value_shrink(X, 1.0))
    """
    fn = "singular_value_shrink"
    X = _checks.as_float_array(fn, "X", X)
    tau = _checks.check_real(fn, "tau", tau, low=0.0)
    _checks.check_finite(fn, "X", X)
    return _shrink(X, jnp.asarray(tau, X.dtype))


def pca(X: Any, rank: int, *, key: Any = None, n_oversamples: int = 10,
        n_iter: int = 4, checks: bool = False) -> PCAResult:
    """Principal component analysis of the rows of X.

    Centres the columns of X and takes the top-``rank`` SVD of the result, exactly
    (``key=None``, :func:`truncated_svd`) or by :func:`randomized_svd` (given a ``key``). The
    components are the right singular vectors; ``explained_variance = S**2 / (n_samples - 1)``
    and the ratio divides by the total variance of X, as scikit-learn's ``PCA`` does, whose signs
    (largest loading of each component positive) are followed too.

    PCA and SVD differ by the centring: the rank-k SVD approximates X itself, PCA approximates
    ``X - mean`` and adds the mean back, so PCA spends no component on the mean row.

    Args:
      X: (n_samples, n_features) with n_samples >= 2.
      rank: number of components, 1 <= rank <= min(n_samples, n_features).
      key: ``None`` for the exact SVD, or a key for the randomized one.
      n_oversamples, n_iter: as in :func:`randomized_svd` (used when a key is given).
      checks: under an outer ``jit``, also check that X is finite, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      ``PCAResult(components, explained_variance, explained_variance_ratio, mean,
      singular_values)``.

    Example::

      >>> res = pca(X, 2)
      >>> Z = pca_transform(res, X)   # (n_samples, 2)
    """
    fn = "pca"
    X = _checks.as_float_array(fn, "X", X)
    if X.shape[0] < 2:
        raise ValueError(f"{fn}: `X` needs at least 2 rows (samples); got shape {X.shape}")
    rank = _checks.check_rank(fn, rank, X.shape)
    _checks.check_finite(fn, "X", X, checks)
    if key is None:
        return _pca_exact(X, rank)
    key = _checks.check_key(fn, key)
    n_oversamples = _checks.check_int(fn, "n_oversamples", n_oversamples, low=0)
    n_iter = _checks.check_int(fn, "n_iter", n_iter, low=0)
    n_samples = min(rank + n_oversamples, *X.shape)
    return _pca_randomized(X, key, rank=rank, n_samples=n_samples, n_iter=n_iter)


def pca_transform(result: PCAResult, X: Any) -> jax.Array:
    """Projects rows of X on the principal components: ``(X - mean) @ components.T``."""
    X = _checks.as_float_array("pca_transform", "X", X)
    if X.shape[1] != result.mean.shape[0]:
        raise ValueError(f"pca_transform: `X` must have {result.mean.shape[0]} columns (the "
                         f"number of features PCA was fitted on); got shape {X.shape}")
    return (X - result.mean) @ result.components.T


# ------------------------------------------------------------------------------------------------
# Kernels (assume valid input)


def _flip(U, S, Vt, u_based=True):
    basis = U if u_based else Vt.T
    idx = jnp.argmax(jnp.abs(basis), axis=0)
    signs = jnp.sign(basis[idx, jnp.arange(basis.shape[1])])
    signs = jnp.where(signs == 0, 1, signs).astype(U.dtype)
    return U * signs, S, Vt * signs[:, None]


def _tie_tolerance(s):
    # Singular values closer than sqrt(eps) * s_max are treated as one (near-)degenerate block:
    # the exact formula would divide by their difference and lose all accuracy in floating point.
    eps = jnp.finfo(s.dtype).eps
    return jnp.sqrt(eps) * jnp.maximum(s[0], jnp.finfo(s.dtype).tiny)


@jax.custom_jvp
def _svd_thin(X):
    """Thin SVD with flipped signs and a derivative that stays finite at repeated values."""
    U, s, Vt = jnp.linalg.svd(X, full_matrices=False)
    return _flip(U, s, Vt)


@_svd_thin.defjvp
def _svd_thin_jvp(primals, tangents):
    # Derivative of the thin SVD (e.g. Townsend 2016, "Differentiating the singular value
    # decomposition"), with dP = U^T dX V, A / Sy its antisymmetric / symmetric parts:
    #   dS = diag(dP)
    #   dU = U Om_U + (I - U U^T) dX V / S,   Om_U[i,j] = A_ij / (s_i + s_j) + Sy_ij / (s_j - s_i)
    #   dV = V Om_V + (I - V V^T) dX^T U / S, Om_V[i,j] = -A_ij / (s_i + s_j) + Sy_ij / (s_j - s_i)
    # For a (near-)tie s_i ~ s_j the Sy term diverges: the two vectors rotate together by an
    # undefined amount. We keep the finite antisymmetric part and replace the Sy term by
    # Sy_ij / (s_i + s_j) in both: Om_U = dP / (s_i + s_j), Om_V = dP^T / (s_i + s_j). Then
    # (Om_U S + S Om_V^T)_ij = dP_ij, so U diag(S) V^T gets exactly its true derivative on that
    # block; no orthonormal tangent can do this, as the vectors themselves are not differentiable.
    (X,), (dX,) = primals, tangents
    U, s, Vt = _svd_thin(X)
    V = Vt.T
    dP = U.T @ dX @ V
    dS = jnp.diagonal(dP)

    si, sj = s[:, None], s[None, :]
    A = 0.5 * (dP - dP.T)
    Sy = 0.5 * (dP + dP.T)
    ssum = si + sj
    sdiff = sj - si
    tied = jnp.abs(sdiff) <= _tie_tolerance(s)
    off = ~jnp.eye(s.shape[0], dtype=bool)
    # Double `where`: guard the divisions themselves, not only their results, so no NaN leaks into
    # the tangent (0 / 0 at zero singular values, 1 / 0 at ties).
    safe_sum = jnp.where(ssum > 0, ssum, 1)
    safe_diff = jnp.where(tied, 1, sdiff)
    inv_sum = jnp.where(ssum > 0, 1 / safe_sum, 0)
    om_u = jnp.where(tied, dP * inv_sum, A * inv_sum + Sy / safe_diff)
    om_v = jnp.where(tied, dP.T * inv_sum, -A * inv_sum + Sy / safe_diff)
    om_u = jnp.where(off, om_u, 0)
    om_v = jnp.where(off, om_v, 0)

    safe_s = jnp.where(s > 0, s, 1)
    inv_s = jnp.where(s > 0, 1 / safe_s, 0)
    dXV = dX @ V
    dXtU = dX.T @ U
    dU = U @ om_u + (dXV - U @ (U.T @ dXV)) * inv_s
    dV = V @ om_v + (dXtU - V @ (V.T @ dXtU)) * inv_s
    return (U, s, Vt), (dU, dS, dV.T)


@partial(jax.jit, static_argnames=("rank",))
def _truncated_svd(X, rank):
    U, s, Vt = _svd_thin(X)
    return SVDResult(U[:, :rank], s[:rank], Vt[:rank])


def _orthonormalize(Y):
    """Householder QR: an orthonormal basis of range(Y), robust to rank deficiency."""
    return jnp.linalg.qr(Y, mode="reduced")[0]


def _cholesky_qr_rows(Yt, shift):
    # Orthonormalizes the rows of Yt (l, m): Qt = R^-T Yt with R^T R = Yt Yt^T + shift * trace I.
    # The products run at matrix-multiply speed, unlike forming Householder's Q (LAPACK orgqr),
    # which dominates for tall thin matrices.
    G = jnp.matmul(Yt, Yt.T, precision=jax.lax.Precision.HIGHEST)
    G = G + (shift * jnp.trace(G) + jnp.finfo(Yt.dtype).tiny) * jnp.eye(G.shape[0], dtype=G.dtype)
    R = jnp.linalg.cholesky(G, upper=True)
    return jax.scipy.linalg.solve_triangular(R, Yt, trans="T", lower=False)


def _normalize_rows(Yt):
    """A well-conditioned basis (as rows) of the row space of Yt (l, m) for the power iterations:
    shifted CholeskyQR3 (Fukaya, Kannan, Nakatsukasa, Yamamoto & Yanagisawa 2020), stable for
    cond(Yt) up to 1/eps. The small shift of the last two passes keeps a rank-deficient Yt finite;
    the final basis of the range finder still comes from :func:`_orthonormalize`."""
    l, m = Yt.shape
    eps = jnp.finfo(Yt.dtype).eps
    Qt = _cholesky_qr_rows(Yt, 11 * (m * l + l * (l + 1)) * eps)
    Qt = _cholesky_qr_rows(Qt, l * eps)
    return _cholesky_qr_rows(Qt, l * eps)


@partial(jax.jit, static_argnames=("rank", "n_samples", "n_iter"))
def _randomized_svd(X, key, *, rank, n_samples, n_iter):
    m, n = linop.shape_of(X)
    dtype = linop.dtype_of(X)
    if m < n:
        # Sketch the column space of the smaller side: QR factors of m x l instead of n x l.
        U, s, Vt = _randomized_svd_tall(_Transposed(X), key, rank, n_samples, n_iter, dtype)
        U, s, Vt = Vt.T, s, U.T
    else:
        U, s, Vt = _randomized_svd_tall(X, key, rank, n_samples, n_iter, dtype)
    return SVDResult(*_flip(U, s, Vt))


class _Transposed:
    """X^T as an operator, without copying X."""

    def __init__(self, X):
        self.X = X
        self.shape = (linop.shape_of(X)[1], linop.shape_of(X)[0])
        self.dtype = linop.dtype_of(X)


# The sketches are kept as rows, (l, m) and (l, n): for a dense row-major X, the products
# Bt @ X.T and Ct @ X run about twice as fast on CPU as X.T @ C, whose output XLA transposes.


def _mm_rows(X, Bt):
    """(X @ Bt.T).T = Bt @ X.T, shape (l, m)."""
    if isinstance(X, _Transposed):
        return _rmm_rows(X.X, Bt)
    if isinstance(X, jax.Array):
        return Bt @ X.T
    return linop.matmul(X, Bt.T).T


def _rmm_rows(X, Ct):
    """(X.T @ Ct.T).T = Ct @ X, shape (l, n)."""
    if isinstance(X, _Transposed):
        return _mm_rows(X.X, Ct)
    if isinstance(X, jax.Array):
        return Ct @ X
    return linop.rmatmul(X, Ct.T).T


def _randomized_svd_tall(X, key, rank, n_samples, n_iter, dtype):
    n = X.shape[1]
    omega_t = jax.random.normal(key, (n_samples, n), dtype)
    Qt = _normalize_rows(_mm_rows(X, omega_t))

    def power(_, Qt):
        Zt = _normalize_rows(_rmm_rows(X, Qt))
        return _normalize_rows(_mm_rows(X, Zt))

    Q = _orthonormalize(jax.lax.fori_loop(0, n_iter, power, Qt).T)  # (m, l)
    B = _rmm_rows(X, Q.T)                # (l, n) = Q^T X
    Ub, s, Vbt = _svd_thin(B)
    U = Q @ Ub
    return U[:, :rank], s[:rank], Vbt[:rank]


@jax.jit
def _shrink(X, tau):
    U, s, Vt = _svd_thin(X)
    return SVDResult(U, jnp.maximum(s - tau, 0), Vt)


def _pca_from_svd(Xc, U, s, Vt, mean):
    n_samples = Xc.shape[0]
    U, s, Vt = _flip(U, s, Vt, u_based=False)
    var = s**2 / (n_samples - 1)
    total = jnp.sum(Xc**2) / (n_samples - 1)
    ratio = var / jnp.where(total > 0, total, 1)  # a constant X has zero total variance
    return PCAResult(Vt, var, ratio, mean, s)


@partial(jax.jit, static_argnames=("rank",))
def _pca_exact(X, rank):
    mean = jnp.mean(X, axis=0)
    Xc = X - mean
    U, s, Vt = _svd_thin(Xc)
    return _pca_from_svd(Xc, U[:, :rank], s[:rank], Vt[:rank], mean)


@partial(jax.jit, static_argnames=("rank", "n_samples", "n_iter"))
def _pca_randomized(X, key, *, rank, n_samples, n_iter):
    mean = jnp.mean(X, axis=0)
    Xc = X - mean
    U, s, Vt = _randomized_svd(Xc, key, rank=rank, n_samples=n_samples, n_iter=n_iter)
    return _pca_from_svd(Xc, U, s, Vt, mean)
