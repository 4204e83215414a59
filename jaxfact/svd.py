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
from jaxfact import _implicit_diff as _implicit
from jaxfact import _linalg
from jaxfact import _sharded_svd
from jaxfact import _sharding
from jaxfact import linop

__all__ = ["SVDResult", "PCAResult", "truncated_svd", "randomized_svd", "svd_flip",
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

    Derivatives (``jax.grad``, ``jax.jvp``) are finite everywhere (JAX's own SVD derivative
    divides by ``s_i**2 - s_j**2`` and returns NaN at ties). They are exact for U, S and Vt
    themselves wherever the singular values are distinct. Kept singular values that tie, or nearly
    tie (``|s_i - s_j| <= sqrt(eps) * S[0]``), leave their singular vectors and the individual tied
    values undefined or ill-conditioned; with the kept block separated from the rest
    (``S[k-1] > s_{k+1}``), the derivative returned is exact there for

    * ``U @ diag(S) @ Vt`` (:func:`reconstruct`),
    * functions of U that do not depend on the basis of a tied block: the projector ``U @ U.T``,
      and ``U.T @ U`` (its derivative is zero: U's tangent stays orthonormal),
    * symmetric functions of the tied values, e.g. ``sum(S)`` or ``sum(S**2)``,

    but not for ``Vt.T @ Vt`` or ``Vt @ Vt.T`` on that block: no linear derivative makes
    ``U diag(S) Vt``, ``U U^T`` and ``V V^T`` exact at once there (the symmetric part of
    ``U^T dX V`` on a tied block cannot be carried by orthonormal tangents of U and V and a
    diagonal dS), and V's tangent carries it. For an exact ``V V^T`` at ties, differentiate
    ``truncated_svd(X.T, k)`` and use its U (:func:`pca` does this for its components).
    A tie *across* the cut (``S[k-1] == s_{k+1}``) makes the rank-k truncation and its projectors
    discontinuous: no derivative exists. The derivative returned is then finite, keeps
    ``U.T @ U`` constant, and is exact along directions that do not mix the tied vectors (the
    symmetric part of ``u_i^T dX v_j`` zero for the tied pair).

    Args:
      X: (m, n) dense real floating array (float16 and bfloat16 are computed in float32 and the
        factors returned in X's dtype). For sparse X use :func:`randomized_svd`.
      rank: number of components k, 1 <= k <= min(m, n).
      checks: under an outer ``jit``, also check that X is finite, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      ``SVDResult(U (m, k), S (k,), Vt (k, n))`` in X's dtype.

    Sharding: a tall X (m >= n) may have its rows split over mesh axes, a wide one its columns.
    Each device then factors its block by Householder QR and one QR of the stacked ``(n, n)``
    R factors (TSQR, Demmel et al. 2012) gives R; the SVD of R is computed on every device.
    Crosses devices: the stacked R factors, ``p n^2`` entries for p devices (less than X when
    each device holds at least n rows). U comes back split like X's rows (Vt like a wide X's
    columns); the rest is replicated. Other splits are resharded once, with a warning.

    Example::

      >>> X = jax.random.normal(jax.random.key(0), (100, 40))
      >>> U, S, Vt = truncated_svd(X, 5)
      >>> (U.shape, S.shape, Vt.shape)
      ((100, 5), (5,), (5, 40))
    """
    fn = "truncated_svd"
    X = _checks.as_float_array(fn, "X", X, sparse_hint=_SPARSE_HINT)
    _checks.check_nonempty(fn, "X", X)
    rank = _checks.check_rank(fn, rank, X.shape)
    _checks.check_finite(fn, "X", X, checks)
    m, n = X.shape
    # The sharded kernel (a TSQR) needs the long side split: rows of a tall X, columns of a wide.
    X, layout = _sharding.split_or_reshard(fn, "X", X, (0,) if m > n else (1,) if m < n
                                           else (0, 1))
    if layout is not None:
        return _in_dtype(SVDResult(*_sharded_svd.truncated_svd(_compute(X), layout, rank=rank)),
                         X.dtype)
    return _in_dtype(SVDResult(*_linalg.truncated_svd(_compute(X), rank)), X.dtype)


def randomized_svd(X: Any, rank: int, *, key: Any, n_oversamples: int = 10,
                   n_iter: int = 4, checks: bool = False,
                   diff: _implicit.ImplicitDiff | None = None) -> SVDResult:
    """Approximate top-``rank`` SVD by random projection (Halko, Martinsson & Tropp 2011).

    With ``l = rank + n_oversamples`` (capped at min(m, n)) and a Gaussian test matrix
    ``Omega`` (n, l), the range finder is their subspace iteration (Algorithm 4.4): ``Y = X Omega``,
    then ``n_iter`` times ``Z = X^T Q``, ``Y = X Z``, orthonormalizing every product before the
    next one. Deviation from the paper: those ``2 n_iter + 1`` intermediate bases are
    orthonormalized by shifted CholeskyQR3 (Fukaya et al. 2020), not Householder QR; it spans the
    same subspace, is stable up to ``cond(Y) ~ 1/eps`` and runs at matrix-multiply speed
    (scikit-learn uses LU for the same purpose). For float32 sketches with more than ~1.5e6
    entries its shifted first pass is skipped (its shift would exceed every eigenvalue of the
    Gram matrix, so it could not improve the conditioning): CholeskyQR2 with a small shift. The last basis is then orthonormalized once more
    by Householder QR (LAPACK), which makes the final ``Q`` orthonormal to working precision also
    when Y is rank deficient; then ``B = Q^T X`` and the exact SVD of the small ``B`` (their
    Algorithm 5.1). For a dense X the last basis and ``B^T = Qb R`` are orthonormalized by
    CholeskyQR3 instead, checked to working precision with Householder QR as the fallback, and
    the SVD of ``B`` is taken from the l x l ``R``: on CPU, LAPACK on tall matrices wakes
    OpenBLAS's threads, which then spin on the cores XLA's products need. A wide X (m < n) is handled as ``X^T``, as scikit-learn does. The error is
    within a small factor of the optimal ``sigma_{k+1}`` that shrinks like ``1/(2q+1)`` in the
    exponent (their Theorem 1.2); ``n_iter=4`` (scikit-learn's default for large ranks) gets within
    a fraction of a percent of the optimum on slowly decaying spectra.

    Cost: ``2 (n_iter + 1)`` products with X and X^T against (rank + oversamples) columns, plus
    O((m + n) l^2) for the QR and small SVD; X is never copied or densified.

    Args:
      X: (m, n) dense array, ``jax.experimental.sparse.BCOO``, SciPy sparse matrix,
        :class:`jaxfact.linop.SparseMatrix`, :class:`jaxfact.linop.ObservedMatrix` or
        :class:`jaxfact.linop.LinearOperator`. float16
        and bfloat16 data are computed in float32 and the factors returned in X's dtype (a
        ``LinearOperator`` must compute in float32 or float64).
      rank: number of components k, 1 <= k <= min(m, n).
      key: a ``jax.random`` key; the same key gives the same factors.
      n_oversamples: extra random directions p (Halko et al. recommend 5 or 10).
      n_iter: power (subspace) iterations q >= 0.
      checks: under an outer ``jit``, also check that X is finite, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).
      diff: settings of the gradient's backward solves (:class:`ImplicitDiff`).

    Returns:
      ``SVDResult(U (m, k), S (k,), Vt (k, n))`` with signs fixed by :func:`svd_flip`.

    Sharding: a dense X may have its rows (or its columns) split over mesh axes. Each device
    sketches its own rows; per power pass one ``(l, n)`` psum of ``Q^T X`` and three ``(l, l)``
    Gram psums (the CholeskyQR3 of the split sketch) cross devices, then the final basis is
    orthonormalized by TSQR (a psum of the stacked ``(l, l)`` R factors) and ``B = Q^T X`` is one
    more ``(l, n)`` psum; nothing with m rows moves. The result equals the unsharded one for the
    same key to rounding. U comes back split like X's rows (Vt like its columns), the rest
    replicated. Both dimensions split: resharded once by rows, with a warning.

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
      >>> exact = truncated_svd(X, 10).S      # close to the exact values on this matrix
      >>> print(bool(jnp.allclose(S, exact, rtol=0.05)))
      True

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
        if isinstance(X, linop.LinearOperator) and X.dtype in _HALF:
            raise TypeError(f"{fn}: a LinearOperator `X` must compute in float32 or float64 (its "
                            f"products feed QR and SVD); got dtype {X.dtype}. Build it with "
                            f"dtype=jnp.float32 and products in float32.")
    _checks.check_nonempty(fn, "X", X)
    m, n = linop.shape_of(X)
    rank = _checks.check_rank(fn, rank, (m, n))
    n_oversamples = _checks.check_int(fn, "n_oversamples", n_oversamples, low=0)
    n_iter = _checks.check_int(fn, "n_iter", n_iter, low=0)
    key = _checks.check_key(fn, key, why="randomized_svd draws a random test matrix")
    if isinstance(X, jax.Array):
        _checks.check_finite(fn, "X", X, checks)
    elif isinstance(X, jsparse.BCOO):
        _checks.check_finite(fn, "X", X.data, checks)
    elif isinstance(X, linop.SparseMatrix):
        _checks.check_finite(fn, "X", X.S.xv, checks)
    elif isinstance(X, linop.ObservedMatrix):
        _checks.check_finite(fn, "X", X.values, checks)
    n_samples = min(rank + n_oversamples, m, n)
    dtype = linop.dtype_of(X)
    diff = _implicit.check_diff(fn, diff)
    if isinstance(X, jax.Array):
        X, layout = _sharding.rows_or_reshard(fn, "X", X, allow_cols=True)
        if layout is not None:
            Xc = _compute(X)
            res = _sharded_svd.randomized_svd(jax.lax.stop_gradient(Xc), key, layout, rank=rank,
                                              n_samples=n_samples, n_iter=n_iter)
            return _in_dtype(SVDResult(*_sharded_svd.svd_factors(res, Xc, diff, layout)), dtype)
    Xc = _compute(X)
    if not isinstance(Xc, jax.Array):
        return _in_dtype(SVDResult(*_linalg.randomized_svd(
            Xc, key, rank=rank, n_samples=n_samples, n_iter=n_iter)), dtype)
    res = _linalg.randomized_svd(jax.lax.stop_gradient(Xc), key, rank=rank, n_samples=n_samples,
                          n_iter=n_iter)
    return _in_dtype(SVDResult(*_implicit.svd_factors(*res, Xc, diff)), dtype)


def svd_flip(result: SVDResult, *, u_based: bool = True) -> SVDResult:
    """Makes the signs of singular vectors deterministic.

    Each pair (u_i, v_i) is multiplied by +-1 so that the entry of largest absolute value in u_i
    (``u_based=True``, scikit-learn's ``svd_flip`` default) or in v_i (``u_based=False``, what
    scikit-learn's ``PCA`` uses) is positive. ``U @ diag(S) @ Vt`` is unchanged.

    Args:
      result: an ``SVDResult`` (or any result whose first fields are U (m, k), S (k,),
        Vt (k, n)); use ``jax.vmap`` for a batch.
    """
    U, S, Vt = _checks.check_svd_result("svd_flip", "result", result)
    U, S, Vt = jnp.asarray(U), jnp.asarray(S), jnp.asarray(Vt)
    rows, _ = _sharding.layout_of("svd_flip", "result.U", U)
    basis_cols, _ = _sharding.layout_of("svd_flip", "result.Vt.T", Vt.T)
    layout = rows if u_based else basis_cols
    if layout is not None:   # the deciding factor's rows are split: decide the signs across shards
        return SVDResult(*_sharded_svd.flip(U, S, Vt, layout, u_based=u_based))
    return SVDResult(*_linalg.flip(U, S, Vt, u_based))


def singular_value_shrink(X: Any, tau: Any, *, checks: bool = False) -> SVDResult:
    """The proximal operator of ``tau * ||.||_*`` (singular value soft thresholding).

    Returns the SVD of ``D_tau(X) = U diag(max(S - tau, 0)) Vt``, the minimizer of
    ``1/2 ||Z - X||_F^2 + tau ||Z||_*`` (Cai, Candès & Shen 2010, Theorem 2.1). All min(m, n)
    components are returned; those shrunk to zero have ``S == 0``. ``tau`` is traced, so changing
    it does not recompile.

    Args:
      X: (m, n) dense real floating array (float16 and bfloat16 are computed in float32).
      tau: threshold >= 0.
      checks: under an outer ``jit``, also check that X is finite, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Example::

      >>> X = jnp.diag(jnp.array([3.0, 2.0, 0.5]))
      >>> res = singular_value_shrink(X, 1.0)
      >>> print(res.S.tolist())
      [2.0, 1.0, 0.0]
    """
    fn = "singular_value_shrink"
    X = _checks.as_float_array(fn, "X", X, sparse_hint=_SPARSE_HINT)
    _checks.check_nonempty(fn, "X", X)
    tau = _checks.check_real(fn, "tau", tau, low=0.0)
    _checks.check_finite(fn, "X", X, checks)
    m, n = X.shape
    X, layout = _sharding.split_or_reshard(fn, "X", X, (0,) if m > n else (1,) if m < n
                                           else (0, 1))
    Xc = _compute(X)
    if layout is not None:   # as truncated_svd: the TSQR of the long side
        U, s, Vt = _sharded_svd.truncated_svd(Xc, layout, rank=min(m, n))
        return _in_dtype(SVDResult(U, jnp.maximum(s - jnp.asarray(tau, s.dtype), 0), Vt),
                         X.dtype)
    return _in_dtype(_shrink(Xc, jnp.asarray(tau, Xc.dtype)), X.dtype)


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

    Columns whose entries are all equal are centred to exact zeros, so they carry no variance;
    when every column is constant (zero total variance) ``explained_variance``,
    ``explained_variance_ratio`` and ``singular_values`` are exactly 0 (scikit-learn's ratio is
    NaN there, 0 / 0). The ratio is formed as ``(S / ||X - mean||_F)**2`` and so does not depend
    on the scale of X. Derivatives (exact SVD, ``key=None``): exact for the components' projector
    ``components.T @ components``, the rank-k reconstruction and ``sum(explained_variance)``, also
    at tied variances; see :func:`truncated_svd`.

    Args:
      X: (n_samples, n_features) dense array with n_samples >= 2 (float16 and bfloat16 are computed
        in float32, results returned in X's dtype). Sparse X is not centred implicitly: densify
        it, or use :func:`randomized_svd` for an uncentred truncated SVD.
      rank: number of components, 1 <= rank <= min(n_samples, n_features).
      key: ``None`` for the exact SVD, or a key for the randomized one.
      n_oversamples, n_iter: as in :func:`randomized_svd` (used when a key is given).
      checks: under an outer ``jit``, also check that X is finite, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      ``PCAResult(components, explained_variance, explained_variance_ratio, mean,
      singular_values)``.

    Sharding: the samples (rows of X) may be split over mesh axes. The column mean is a psum of
    ``(n_features,)`` sums; the exact SVD then comes from the TSQR of the centred rows (as in
    :func:`truncated_svd`, a psum of the stacked ``(n_features, n_features)`` R factors), the
    randomized one from :func:`randomized_svd`'s split range finder. Every output is replicated.

    Example::

      >>> X = jax.random.normal(jax.random.key(0), (50, 6))
      >>> res = pca(X, 2)
      >>> pca_transform(res, X).shape
      (50, 2)
    """
    fn = "pca"
    X = _checks.as_float_array(fn, "X", X, sparse_hint=_PCA_SPARSE_HINT)
    _checks.check_nonempty(fn, "X", X)
    if X.shape[0] < 2:
        raise ValueError(f"{fn}: `X` needs at least 2 rows (samples); got shape {X.shape}")
    rank = _checks.check_rank(fn, rank, X.shape)
    _checks.check_finite(fn, "X", X, checks)
    if key is not None:
        key = _checks.check_key(fn, key)
        n_oversamples = _checks.check_int(fn, "n_oversamples", n_oversamples, low=0)
        n_iter = _checks.check_int(fn, "n_iter", n_iter, low=0)
    # Samples (rows) split: the mean by psum, a TSQR (exact) or the sharded range finder.
    X, layout = _sharding.rows_or_reshard(fn, "X", X)
    if layout is not None:
        n_samples = 0 if key is None else min(rank + n_oversamples, *X.shape)
        return _in_dtype(_sharded_svd.pca(
            _compute(X), jax.random.key(0) if key is None else key, layout, rank=rank,
            n_samples=n_samples, n_iter=n_iter, finish=_pca_finish), X.dtype)
    if key is None:
        return _in_dtype(_pca_exact(_compute(X), rank), X.dtype)
    n_samples = min(rank + n_oversamples, *X.shape)
    return _in_dtype(_pca_randomized(_compute(X), key, rank=rank, n_samples=n_samples,
                                     n_iter=n_iter), X.dtype)


def pca_transform(result: PCAResult, X: Any, *, checks: bool = False) -> jax.Array:
    """Projects rows of X on the principal components: ``(X - mean) @ components.T``.

    Args:
      result: a :class:`PCAResult` from :func:`pca`.
      X: (n_samples, n_features) dense array, the features those of the fit.
      checks: under an outer ``jit``, also check that X is finite, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      (n_samples, k) scores.
    """
    fn = "pca_transform"
    X = _checks.as_float_array(fn, "X", X)
    if X.shape[1] != result.mean.shape[0]:
        raise ValueError(f"{fn}: `X` must have {result.mean.shape[0]} columns (the "
                         f"number of features PCA was fitted on); got shape {X.shape}")
    _checks.check_finite(fn, "X", X, checks)
    return (X - result.mean[None, :]) @ result.components.T


# ------------------------------------------------------------------------------------------------
# Private helpers and kernels

_SPARSE_HINT = ("jaxfact.randomized_svd, which takes SciPy sparse and "
                "jax.experimental.sparse.BCOO matrices as they are")
_PCA_SPARSE_HINT = ("jaxfact.randomized_svd for an uncentred truncated SVD of the sparse matrix "
                    "(it takes SciPy sparse and jax.experimental.sparse.BCOO matrices)")
# LAPACK has no half-precision SVD or QR: these dtypes are computed in float32.
_HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _compute(X):
    """X in the dtype the kernels compute in: float32 for half-precision input, else unchanged."""
    if linop.dtype_of(X) not in _HALF:
        return X
    if isinstance(X, jax.Array):
        return X.astype(jnp.float32)
    if isinstance(X, jsparse.BCOO):
        return jsparse.BCOO((X.data.astype(jnp.float32), X.indices), shape=X.shape,
                            indices_sorted=X.indices_sorted, unique_indices=X.unique_indices)
    if isinstance(X, linop.SparseMatrix):
        return X.astype(jnp.float32)
    if isinstance(X, linop.ObservedMatrix):
        return X._replace(values=X.values.astype(jnp.float32))
    return X


def _in_dtype(result, dtype):
    """A result (NamedTuple of arrays) cast back to the input's dtype."""
    if jnp.dtype(dtype) not in _HALF:
        return result
    return type(result)(*(a.astype(dtype) for a in result))


@jax.jit
def _shrink(X, tau):
    U, s, Vt = _linalg.svd_thin(X)
    return SVDResult(U, jnp.maximum(s - tau, 0), Vt)


def _centre(X):
    # A column whose entries are all equal is centred to exact zeros: the rounded mean would leave
    # residues of order eps |x|, which the SVD reports as variance (a constant X would "explain" a
    # ratio of 1). The correction carries no gradient, so d Xc = (I - 11^T / n) dX everywhere.
    mean = jnp.mean(X, axis=0)
    Xc = X - mean[None, :]
    constant = jnp.all(X == X[:1], axis=0)
    return Xc - jax.lax.stop_gradient(jnp.where(constant[None, :], Xc, 0)), mean


def _pca_from_svd(Xc, U, s, Vt, mean):
    # ||Xc||_F scaled by its largest entry, so that it neither overflows nor underflows where the
    # variances themselves would (|x| ~ 1e19 or 1e-19 in float32).
    big = jnp.max(jnp.abs(Xc))
    safe_big = jnp.where(big > 0, big, 1)
    norm = safe_big * jnp.sqrt(jnp.sum((Xc / safe_big) ** 2))
    return _pca_finish(Vt, s, mean, norm, Xc.shape[0])


def _pca_finish(Vt, s, mean, norm, n_samples):
    _, s, Vt = _linalg.flip(Vt.T, s, Vt, u_based=False)
    var = s**2 / (n_samples - 1)
    # ratio = s_i^2 / ||Xc||_F^2, formed from s_i / ||Xc||_F.
    # Zero total variance (every row equal): no component explains any of it; ratio 0, not 0/0.
    ratio = jnp.where(norm > 0, s / jnp.where(norm > 0, norm, 1), 0) ** 2
    return PCAResult(Vt, var, ratio, mean, s)


@partial(jax.jit, static_argnames=("rank",))
def _pca_exact(X, rank):
    Xc, mean = _centre(X)
    # The SVD of Xc^T: its U is PCA's V, whose tangent stays exact at tied variances (the
    # derivative of the components' projector V_k V_k^T), see _svd_kept_jvp.
    V, s, Ut = _linalg.svd_thin(Xc.T, rank)
    return _pca_from_svd(Xc, Ut.T[:, :rank], s[:rank], V.T[:rank], mean)


@partial(jax.jit, static_argnames=("rank", "n_samples", "n_iter"))
def _pca_randomized(X, key, *, rank, n_samples, n_iter):
    Xc, mean = _centre(X)
    U, s, Vt = _linalg.randomized_svd(Xc, key, rank=rank, n_samples=n_samples, n_iter=n_iter)
    return _pca_from_svd(Xc, U, s, Vt, mean)
