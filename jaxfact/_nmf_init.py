"""NMF's data, scaling and starts: the matrix in the forms the kernels read, its power-of-4 scale,
the NNDSVD / random initializations and the optimal scalar multiple of a start.

Everything here assumes validated input. Factors are held as ``Wt = W.T`` (k, m) and ``H``
(k, n) (see :mod:`jaxfact._nmf_steps`). The data term is held as ``A = M * X`` (``X`` when there
is no mask), dense, or sparse by rows and by columns (:class:`jaxfact.linop.SparseMatrix`) so that both
``O A^T`` products read rows.

Row-sharded dense X: the same functions run inside a ``shard_map`` body on each device's block of
rows (``Wt`` then holds that block's columns, H is replicated), given ``axes``, the mesh axes the
rows are split over (``None``: unsharded, the single-device computation unchanged). Every sum over
the rows is then completed by a ``psum`` over ``axes`` (:func:`psum`), so that the scalars that
decide control flow are the same on every device.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jax.sharding import PartitionSpec as P

from jaxfact import _linalg
from jaxfact import _sharding
from jaxfact import linop

__all__ = []  # private module

# nndsvd zeroes entries below this times sqrt(s_1), the scale of the factors' entries
# (scikit-learn zeroes below an absolute 1e-6, which erases every entry of small-valued X).
_NNDSVD_EPS = 1e-6
# Dense X up to this size (min(m, n)) gets the exact SVD even when a key is given.
_EXACT_SVD_MAX = 256


class Data(NamedTuple):
    """The matrix to factorize, in the forms the kernels read (a pytree)."""

    A: Any     # (m, n) dense M * X (X without a mask), or None when X is sparse
    X: Any     # (m, n) dense X, or None
    S: Any     # Sparse (m, n) by rows, values M * X, or None when X is dense
    St: Any    # Sparse (n, m): the same entries by columns, or None
    M: Any     # (m, n) dense weights, or None
    Mt: Any    # (n, m) = M.T, or None
    x_sq: Any  # sum(M * X**2)


class Reg(NamedTuple):
    """Penalties ``l1 * sum(Y) + l2 / 2 * ||Y||^2`` of each factor (scikit-learn's scaling)."""

    l1W: Any
    l2W: Any
    l1H: Any
    l2H: Any


# ------------------------------------------------------------------------------------------------
# Sums over row-split arrays


def psum(x, axes):
    """``x`` summed over the shards of ``axes`` (mesh axes the rows are split over); ``x``
    itself when ``axes`` is None (unsharded)."""
    return x if axes is None else lax.psum(x, axes)


def total(x, axes):
    """``sum(x)`` of an array whose rows (or, for ``Wt``, columns) are split over ``axes``."""
    return psum(jnp.sum(x), axes)


def n_shards(axes):
    """The number of shards along ``axes`` (1 when unsharded), a Python int."""
    return 1 if axes is None else lax.psum(1, axes)


# ------------------------------------------------------------------------------------------------
# Data preparation and products


def prepare(X, mask, axes=None):
    """Builds :class:`Data` from dense or :class:`SparseX` X and an optional dense mask."""
    Mt = None if mask is None else mask.T
    if isinstance(X, linop.SparseMatrix):
        S = linop.apply_mask(X.S, mask)
        St = linop.apply_mask(X.St, Mt)
        return Data(None, None, S, St, mask, Mt, jnp.sum(S.vals * S.xv))
    A = X if mask is None else mask * X
    return Data(A, X, None, None, mask, Mt, total(A * X, axes))


def data_scale(X, mask=None, axes=None):
    """A power of 4 near max(M * X) (1 for M * X = 0), so that ``X / s`` has entries of order 1
    where they count (entries with weight 0 play no part in the fit, so not in s either).

    The kernels run on ``X / s`` with factors ``W / sqrt(s)``, ``H / sqrt(s)``: dividing by a
    power of 4 is exact in binary floating point (so is the square root), so the scaled problem
    is the same problem, and no intermediate (squared gradients, Gram matrices, the objective)
    under- or overflows for X of any magnitude the dtype can hold.
    """
    if isinstance(X, linop.SparseMatrix):
        top = jnp.max(linop.apply_mask(X.S, mask).vals, initial=0)
    else:
        top = jnp.max(X if mask is None else mask * X, initial=0)
        if axes is not None:
            top = lax.pmax(top, axes)
    ok = (top > 0) & jnp.isfinite(top)
    e = jnp.round(0.5 * jnp.log2(jnp.where(ok, top, 1))).astype(jnp.int32)
    return jnp.ldexp(jnp.ones((), X.dtype), 2 * e)


def scale_x(X, f):
    """``f * X`` for dense or :class:`SparseX` X."""
    if isinstance(X, linop.SparseMatrix):
        return linop.SparseMatrix(X.S.scaled(f), X.St.scaled(f))
    return X * f


def dot_t(a, b):
    """``a @ b.T`` for dense a (k, q), b (p, q) -> (k, p), without forming the transpose."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())))


def dot_tn(a, b):
    """``a.T @ b`` for a (k, p), b (k, q) -> (p, q)."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())))


def cross_w(data, H):
    """``H A^T`` (k, m): the cross product of the W step."""
    if data.S is not None:
        return linop.matmul(data.S, H.T).T
    return dot_t(H, data.A)


def cross_h(data, Wt, axes=None):
    """``Wt A`` (k, n): the cross product of the H step (a psum of the shards' products when the
    rows of A are split)."""
    if data.St is not None:
        return linop.matmul(data.St, Wt.T).T
    return psum(Wt @ data.A, axes)


# ------------------------------------------------------------------------------------------------
# Initializations (Boutsidis & Gallopoulos 2008; scikit-learn's `_initialize_nmf`)


def _mean(X, axes=None, m=None):
    if axes is None:
        m, n = X.shape
        return linop.total(X) / (m * n)
    return total(X, axes) / (m * X.shape[1])


@partial(jax.jit, static_argnames=("rank", "init"))
def initialize(X, key, *, rank, init):
    """(W (m, k), H (k, n)) for init in "random", "nndsvd", "nndsvda", "nndsvdar", scaled by the
    scalar c that minimizes ``||X - c W H||_F`` (computed on ``X / data_scale(X)``)."""
    return initialize_body(X, key, rank=rank, init=init)


def initialize_body(X, key, *, rank, init, axes=None):
    """:func:`initialize`'s computation; inside a ``shard_map`` body when ``axes`` is given (X
    the local block of rows; returns the local rows of W and the replicated H)."""
    s = data_scale(X, None, axes)
    Xn = scale_x(X, 1 / s)
    W, H = _named_start(Xn, key, rank, init, axes)
    Wt, H = scale_start(prepare(Xn, None, axes), W.T, H, "frobenius", update_H=True, axes=axes)
    r = jnp.sqrt(s)
    return Wt.T * r, H * r


@partial(jax.jit, static_argnames=("rank", "init", "mesh", "axes"))
def initialize_sharded(X, key, *, rank, init, mesh, axes):
    """:func:`initialize` of X (m, n) whose rows are split over ``axes`` of ``mesh``: W comes
    back split the same way, H replicated. Same start as on one device for the same key."""
    rows = P(axes, None)
    body = partial(initialize_body, rank=rank, init=init, axes=axes)
    # check_vma=False: the factors are computed from psum'd (hence equal) pieces on every
    # device; the type checker cannot tell the replicated H from a device-varying one.
    return jax.shard_map(body, mesh=mesh, in_specs=(rows, P()), out_specs=(rows, P()),
                         check_vma=False)(X, key)


def _local_rows(full, axes):
    """This shard's block of rows of an array computed in full on every device."""
    if axes is None:
        return full
    m_local = full.shape[0] // n_shards(axes)
    return lax.dynamic_slice_in_dim(full, lax.axis_index(axes) * m_local, m_local)


def _normal_rows(key, shape, dtype, axes):
    """Rows of ``jax.random.normal(key, shape)`` (shape the global one) that this shard holds:
    the same draws as on one device."""
    return _local_rows(jax.random.normal(key, shape, dtype), axes)


def _named_start(X, key, rank, init, axes=None):
    m, n = X.shape
    m = m * n_shards(axes)  # the global row count
    dtype = X.dtype
    # sqrt(mean(X) / k): entries of this size give W H entries of about mean(X) (scikit-learn's
    # scale for random factors). scikit-learn fills nndsvd's zeros with mean(X) itself, which
    # makes the start's products scale like mean(X)^2, i.e. depend on the units of X.
    fill = jnp.sqrt(_mean(X, axes, m) / rank)
    if init == "random":
        kw, kh = jax.random.split(key)
        W = fill * jnp.abs(_normal_rows(kw, (m, rank), dtype, axes))
        H = fill * jnp.abs(jax.random.normal(kh, (rank, n), dtype))
        return W, H
    U, S, Vt = _init_svd(X, key, rank, axes)
    W, H = _nndsvd(U, S, Vt, axes)
    if init == "nndsvda":
        W = jnp.where(W == 0, fill, W)
        H = jnp.where(H == 0, fill, H)
    elif init == "nndsvdar":
        kw, kh = jax.random.split(key)
        W = jnp.where(W == 0, jnp.abs(fill * _normal_rows(kw, (m, rank), dtype, axes) / 100), W)
        H = jnp.where(H == 0, jnp.abs(fill * jax.random.normal(kh, H.shape, dtype) / 100), H)
    return W, H


def optimal_scale(data, Wt, H, beta_loss, axes=None, cw=None):
    """The scalar c >= 0 minimizing the data term D(X, c W H): for the Frobenius loss
    ``<M X, WH> / sum(M (WH)^2)``, for KL ``sum(M X) / sum(M WH)``; 1 when undefined (W H = 0 or
    X = 0). ``cw``: ``cross_w(data, H)`` when the caller has it already."""
    if beta_loss == "frobenius":
        cw = cross_w(data, H) if cw is None else cw
        num = total(Wt * cw, axes)  # <A, W H>, A = M * X
        if data.M is None:
            den = jnp.sum(psum(Wt @ Wt.T, axes) * (H @ H.T))
        else:
            WH = dot_tn(Wt, H)
            den = total(data.M * WH * WH, axes)
    else:
        num = jnp.sum(data.S.vals) if data.S is not None else total(data.A, axes)
        if data.M is None:
            den = jnp.sum(psum(jnp.sum(Wt, axis=1), axes) * jnp.sum(H, axis=1))
        else:
            den = total(data.M * dot_tn(Wt, H), axes)
    ok = (num > 0) & (den > 0)
    return jnp.where(ok, num / jnp.where(ok, den, 1), 1)


def scale_start(data, Wt, H, beta_loss, *, update_H, axes=None):
    """(Wt, H) times the optimal scalar (split as sqrt on each factor; on Wt alone when H is
    fixed): the best start along the ray through (W, H), whatever the units of X."""
    c = optimal_scale(data, Wt, H, beta_loss, axes)
    if not update_H:
        return Wt * c, H
    r = jnp.sqrt(c)
    return Wt * r, H * r


def _n_power_iter(rank, m, n):
    # scikit-learn's randomized_svd defaults: 10 oversamples, 7 power iterations for small ranks.
    return 7 if rank < 0.1 * min(m, n) else 4


def _init_svd(X, key, rank, axes=None):
    """The top-``rank`` singular triplets of X: exact (deterministic) for dense X without a key
    or with min(m, n) <= 256, else randomized with ``key`` (sparse X always: the caller requires
    the key there).

    Rows split over ``axes``: the exact SVD is that of the R factor of a tall-skinny QR of X
    (U = Q U_R, rows of U where X's rows live), the randomized one the sharded sketch of
    :mod:`jaxfact._sharded_svd`; both with the signs of the single-device SVD."""
    m, n = X.shape
    if axes is not None:
        m = m * n_shards(axes)
        if key is None or min(m, n) <= _EXACT_SVD_MAX:
            Q, R = _sharding.tsqr(X, axes)
            Ur, S, Vt = _linalg.svd_thin(R)
            U, S, Vt = _sharding.flip(Q @ Ur, S, Vt, axes)
            return U[:, :rank], S[:rank], Vt[:rank]
        from jaxfact import _sharded_svd  # the coordinator's sharded sketch
        return _sharded_svd.randomized_svd_body(
            X, key, axes=axes, m=m, rank=rank, n_samples=min(rank + 10, m, n),
            n_iter=_n_power_iter(rank, m, n))
    n_iter = _n_power_iter(rank, m, n)
    if isinstance(X, linop.SparseMatrix):
        return _sparse_svd(X, key, rank, min(rank + 10, m, n), n_iter)
    if key is None or min(m, n) <= _EXACT_SVD_MAX:
        U, S, Vt = _linalg.svd_thin(X)
        return U[:, :rank], S[:rank], Vt[:rank]
    return _linalg.randomized_svd(X, key, rank=rank, n_samples=min(rank + 10, m, n), n_iter=n_iter)


# The sparse start's power iterations stop once the top-``rank`` right singular subspace moved by
# at most this many ulps times sqrt(rank) (the Frobenius norm of the sines of the angles) and by at
# most half as much as in the iteration before: it has then converged to working precision.
_SUBSPACE_ULPS = 16


def _top_right(P, rank):
    """An orthonormal basis (n, rank) of the top-``rank`` left singular subspace of P (n, l),
    from the eigenvectors of the small Gram matrix P^T P."""
    hi = lax.Precision.HIGHEST
    lam, E = jnp.linalg.eigh(jnp.matmul(P.T, P, precision=hi))
    E = E[:, ::-1][:, :rank]
    V = jnp.matmul(P, E, precision=hi)
    nrm = jnp.linalg.norm(V, axis=0, keepdims=True)
    return V / jnp.where(nrm > 0, nrm, 1)


def _subspace_move(V0, V1):
    """``||V1 - V0 V0^T V1||_F``: the sines of the angles between two orthonormal bases."""
    hi = lax.Precision.HIGHEST
    return jnp.linalg.norm(V1 - jnp.matmul(V0, jnp.matmul(V0.T, V1, precision=hi), precision=hi))


def _orthonormal_basis(X, Q, P):
    """(Qf, X^T Qf): an orthonormal basis Qf of range(Q), Q (m, l) the power iterations'
    well-conditioned basis and P = X^T Q. Q's columns are orthonormal but for the small shift of
    its CholeskyQR (:func:`jaxfact._linalg.normalize_rows`), so one more unshifted Cholesky pass
    Qf = Q R^-1 (R^T R = Q^T Q) makes them orthonormal to rounding, and X^T Qf = P R^-1 needs no
    product with X. Where that shift damped some direction (R far from the identity: Q nearly
    rank-deficient), Householder QR and the product instead."""
    hi = lax.Precision.HIGHEST
    R = jnp.linalg.cholesky(jnp.matmul(Q.T, Q, precision=hi), upper=True)
    d = jnp.diagonal(R)
    ok = jnp.all(jnp.isfinite(R)) & jnp.all(d >= 0.5)

    def cholesky_pass(_):
        Ri = _linalg.inv_upper(R)   # l x l products (no LAPACK call that wakes BLAS threads)
        return jnp.matmul(Q, Ri, precision=hi), jnp.matmul(P, Ri, precision=hi)

    def householder(_):
        Qf = _linalg.orthonormalize(Q)
        return Qf, linop.rmatmul(X, Qf)

    return lax.cond(ok, cholesky_pass, householder, None)


def _sparse_svd(X, key, rank, n_samples, n_iter):
    """The randomized SVD of Halko, Martinsson & Tropp (2011, Algorithm 4.4: ``n_samples``
    columns, up to ``n_iter`` power iterations normalized after every product, as
    scikit-learn's ``randomized_svd``) of a :class:`jaxfact.linop.SparseMatrix`, with an early
    stop: after each power iteration the top-``rank`` subspace of ``X^T Q`` is compared with the
    previous one, and the iterations stop once it has converged to working precision
    (``_SUBSPACE_ULPS``). With a gap after the rank-th singular value (the case a rank-``rank``
    NMF is for), that takes 1-3 iterations instead of ``n_iter``; without one the full
    ``n_iter`` run. Same sketch (``key``) as :func:`jaxfact._linalg.randomized_svd`."""
    if X.shape[0] < X.shape[1]:  # sketch the column space of the smaller side (a free transpose)
        V, S, Ut = _sparse_range_svd(X.T, key, rank, n_samples, n_iter)
        U, S, Vt = Ut.T, S, V.T
    else:
        U, S, Vt = _sparse_range_svd(X, key, rank, n_samples, n_iter)
    U, S, Vt = _linalg.flip(U, S, Vt)
    return U[:, :rank], S[:rank], Vt[:rank]


def _sparse_range_svd(X, key, rank, n_samples, n_iter):
    """:func:`_sparse_svd` of X (m, n), m >= n, all ``n_samples`` components, signs unflipped."""
    m, n = X.shape
    dtype = X.dtype
    tol = _SUBSPACE_ULPS * jnp.finfo(dtype).eps * rank ** 0.5
    omega_t = jax.random.normal(key, (n_samples, n), dtype)
    Q = _linalg.normalize_rows(linop.matmul(X, omega_t.T), rows=False)   # (m, l)
    P = linop.rmatmul(X, Q)                                              # (n, l) = X^T Q
    V = _top_right(P, rank)
    inf = jnp.asarray(jnp.inf, dtype)

    def more(state):
        i, _, _, _, d, d_prev = state
        return (i < n_iter) & ~((d <= tol) & (d <= 0.5 * d_prev))

    def power(state):
        i, Q, P, V, d, _ = state
        Z = _linalg.normalize_rows(P, rows=False)
        Q = _linalg.normalize_rows(linop.matmul(X, Z), rows=False)
        P = linop.rmatmul(X, Q)
        V1 = _top_right(P, rank)
        return i + 1, Q, P, V1, _subspace_move(V, V1), d

    _, Q, P, _, _, _ = lax.while_loop(more, power, (0, Q, P, V, inf, inf))
    Q, Bt = _orthonormal_basis(X, Q, P)
    return _linalg.svd_in_range(Q, Bt, rank)


def svd_is_randomized(X, key_given):
    """Whether the NNDSVD starts of X use the randomized SVD (so depend on the key)."""
    return isinstance(X, linop.SparseMatrix) or (key_given and min(X.shape) > _EXACT_SVD_MAX)


def _col_norms(x, axes):
    if axes is None:
        return jnp.linalg.norm(x, axis=0)
    return jnp.sqrt(psum(jnp.sum(x * x, axis=0), axes))


def _nndsvd(U, S, Vt, axes=None):
    """Boutsidis & Gallopoulos (2008), Table 1: each singular pair split into its positive and
    negative parts; the part with the larger norm product is kept. Vectorized over components.
    ``axes``: the rows of U are split over them (norms of its columns by psum)."""
    x, y = U, Vt.T                                   # (m, k), (n, k)
    xp, xn = jnp.maximum(x, 0), jnp.maximum(-x, 0)
    yp, yn = jnp.maximum(y, 0), jnp.maximum(-y, 0)
    nxp, nxn = _col_norms(xp, axes), _col_norms(xn, axes)
    nyp, nyn = jnp.linalg.norm(yp, axis=0), jnp.linalg.norm(yn, axis=0)
    mp, mn = nxp * nyp, nxn * nyn
    use_p = (mp > mn)[None, :]
    u_num = jnp.where(use_p, xp, xn)
    v_num = jnp.where(use_p, yp, yn)
    u_den = jnp.where(use_p, nxp[None, :], nxn[None, :])
    v_den = jnp.where(use_p, nyp[None, :], nyn[None, :])
    sigma = jnp.where(mp > mn, mp, mn)
    # A zero part (norm 0) gives a zero column, not 0/0.
    u = jnp.where(u_den > 0, u_num / jnp.where(u_den > 0, u_den, 1), 0)
    v = jnp.where(v_den > 0, v_num / jnp.where(v_den > 0, v_den, 1), 0)
    lbd = jnp.sqrt(S * sigma)[None, :]
    W = lbd * u
    H = (lbd * v).T
    # The leading pair of a non-negative matrix is one-signed (Perron-Frobenius): take |.|.
    W = W.at[:, 0].set(jnp.sqrt(S[0]) * jnp.abs(U[:, 0]))
    H = H.at[0].set(jnp.sqrt(S[0]) * jnp.abs(Vt[0]))
    floor = _NNDSVD_EPS * jnp.sqrt(S[0])
    W = jnp.where(W < floor, 0, W)
    H = jnp.where(H < floor, 0, H)
    return W, H


