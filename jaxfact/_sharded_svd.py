"""SVD kernels for a dense X whose rows are split over mesh axes (``jax.shard_map``).

Each device holds a block of rows of X and works on it; what crosses devices is small:

* randomized SVD (tall X, m >= n): per power pass one (l, n) psum of ``Q^T X`` and three (l, l)
  Gram psums (the CholeskyQR3 of the (l, m) sketch), then a TSQR of the final (m, l) basis (a psum
  of the stacked (l, l) R factors) and one (l, n) psum of ``B = Q^T X``. A wide X (m < n) whose
  rows are split runs the single-device kernel's transposed algorithm with the same split: its
  (l, m) sketches stay split and the (l, n) ones are psum'd. Nothing of size m x l or m x n is ever
  gathered.
* exact SVD of a tall X: a TSQR ``X = Q R`` (psum of the stacked n x n R factors) and the SVD of
  the small R on every device.
* PCA: the column mean by psum, then either of the above on the centred rows.

The results equal the single-device kernels' (same key, same algorithm) to rounding: only the
order of the sums and the QR of the final basis (TSQR instead of one Householder QR) differ.
Signs follow ``_linalg.flip``, decided across shards by :func:`_sharding.flip`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxfact import _implicit_diff
from jaxfact import _linalg
from jaxfact import _sharding

__all__ = []  # private module


def _local_slice(full, axes, size, axis):
    """This shard's block of a replicated array split evenly along ``axis``."""
    i = _sharding.shard_index(axes)
    return jax.lax.dynamic_slice_in_dim(full, i * size, size, axis=axis)


def randomized_svd_body(X, key, *, axes, m, rank, n_samples, n_iter):
    """``_linalg.randomized_svd`` of the full X, inside a shard_map body whose rows of X are split
    over ``axes``: X is the local (m_local, n) block, m the global row count. Returns
    (U_local (m_local, rank), s, Vt) with U's rows split like X's and s, Vt replicated."""
    m_local, n = X.shape
    dtype = X.dtype
    if m >= n:
        U, s, Vt = _tall(X, key, axes, m, rank, n_samples, n_iter, dtype)
    else:
        U, s, Vt = _wide(X, key, axes, m, rank, n_samples, n_iter, dtype)
    return _sharding.flip(U, s, Vt, axes)


def _tall(X, key, axes, m, rank, n_samples, n_iter, dtype):
    # As _linalg._randomized_svd_tall with the m side split: sketches (l, m) are local blocks.
    n = X.shape[1]
    omega_t = jax.random.normal(key, (n_samples, n), dtype)
    Qt = _sharding.normalize_rows(omega_t @ X.T, axes, m)                    # (l, m_local)

    def power(_, Qt):
        Zt = _linalg.normalize_rows(jax.lax.psum(Qt @ X, axes))             # (l, n)
        return _sharding.normalize_rows(Zt @ X.T, axes, m)                  # (l, m_local)

    Qt = jax.lax.fori_loop(0, n_iter, power, Qt)
    Q, _ = _sharding.tsqr(Qt.T, axes)                                       # (m_local, l)
    B = jax.lax.psum(Q.T @ X, axes)                                         # (l, n) = Q^T X
    Ub, s, Vbt = _linalg.svd_thin(B, rank)
    return (Q @ Ub)[:, :rank], s[:rank], Vbt[:rank]


def _wide(X, key, axes, m, rank, n_samples, n_iter, dtype):
    # As _linalg.randomized_svd on a wide X: the tall algorithm on T = X^T (n, m), whose m
    # columns are split here. Its (l, m) sketches are local blocks, its (l, n) ones psum'd.
    m_local, n = X.shape
    omega_t = _local_slice(jax.random.normal(key, (n_samples, m), dtype), axes, m_local, 1)
    Qt = _linalg.normalize_rows(jax.lax.psum(omega_t @ X, axes))            # (l, n)

    def power(_, Qt):
        Zt = _sharding.normalize_rows(Qt @ X.T, axes, m)                    # (l, m_local)
        return _linalg.normalize_rows(jax.lax.psum(Zt @ X, axes))           # (l, n)

    Q = _linalg.orthonormalize(jax.lax.fori_loop(0, n_iter, power, Qt).T)  # (n, l)
    # B = Q^T T = (X Q)^T, (l, m) with its columns split: the SVD of B from the TSQR of B^T.
    Qb, Rb = _sharding.tsqr(X @ Q, axes)                                    # (m_local, l), (l, l)
    Ur, s, Vrt = _linalg.svd_thin(Rb.T, rank)                               # B = Rb^T Qb^T
    # T ~ (Q Ur) diag(s) (Qb Vr)^T, so X = T^T ~ (Qb Vr) diag(s) (Q Ur)^T.
    return (Qb @ Vrt.T)[:, :rank], s[:rank], (Q @ Ur)[:, :rank].T


def truncated_svd_body(X, *, axes, rank):
    """Exact top-``rank`` SVD of a tall X (m >= n) whose rows are split over ``axes``."""
    Q, R = _sharding.tsqr(X, axes)                                          # (m_local, n), (n, n)
    Ur, s, Vt = _linalg.svd_thin(R, rank)
    return _sharding.flip((Q @ Ur)[:, :rank], s[:rank], Vt[:rank], axes)


# ------------------------------------------------------------------------------------------------
# Whole-array kernels: X is the global array, ``layout`` says how its rows (dim 0) or columns
# (dim 1) are split. A column split is the row split of X^T: the kernels run on X^T and swap.


def _specs(layout, transposed_out):
    split = P(layout.axes, None)
    if transposed_out:  # columns split: U replicated, Vt's columns split
        return (P(), P(), P(None, layout.axes))
    return (split, P(), P())


@partial(jax.jit, static_argnames=("layout", "rank", "n_samples", "n_iter"))
def randomized_svd(X, key, layout, *, rank, n_samples, n_iter):
    """``_linalg.randomized_svd`` of a dense X with rows (layout.dim 0) or columns (1) split."""
    axes = layout.axes
    cols = layout.dim == 1
    m = X.shape[1] if cols else X.shape[0]

    def body(X, key):
        if cols:
            Vl, s, Ut = randomized_svd_body(X.T, key, axes=axes, m=m, rank=rank,
                                            n_samples=n_samples, n_iter=n_iter)
            U, s, Vt = _linalg.flip(Ut.T, s, Vl.T)   # signs decided by U, replicated here
            return U, s, Vt
        return randomized_svd_body(X, key, axes=axes, m=m, rank=rank, n_samples=n_samples,
                                   n_iter=n_iter)

    return jax.shard_map(body, mesh=layout.mesh, in_specs=(layout.spec(), P()),
                         out_specs=_specs(layout, cols))(X, key)


@partial(jax.jit, static_argnames=("layout", "rank"))
def truncated_svd(X, layout, *, rank):
    """Exact truncated SVD of a tall X with rows split, or a wide X with columns split."""
    axes = layout.axes
    cols = layout.dim == 1

    def body(X):
        if cols:
            Vl, s, Ut = truncated_svd_body(X.T, axes=axes, rank=rank)
            return _linalg.flip(Ut.T, s, Vl.T)
        return truncated_svd_body(X, axes=axes, rank=rank)

    return jax.shard_map(body, mesh=layout.mesh, in_specs=layout.spec(),
                         out_specs=_specs(layout, cols))(X)


@partial(jax.jit, static_argnames=("layout", "u_based"))
def flip(U, S, Vt, layout, *, u_based):
    """``_linalg.flip`` where the deciding factor (U, or V for ``u_based=False``) has its rows
    split (layout.dim 0 of U, or of Vt.T, i.e. Vt's columns)."""
    axes = layout.axes
    if u_based:
        return jax.shard_map(lambda U, S, Vt: _sharding.flip(U, S, Vt, axes), mesh=layout.mesh,
                             in_specs=(P(axes, None), P(), P()),
                             out_specs=(P(axes, None), P(), P()))(U, S, Vt)

    def body(U, S, Vt):
        V, S, Ut = _sharding.flip(Vt.T, S, U.T, axes)
        return Ut.T, S, V.T

    return jax.shard_map(body, mesh=layout.mesh, in_specs=(P(), P(), P(None, axes)),
                         out_specs=(P(), P(), P(None, axes)))(U, S, Vt)


def _centre(X, axes, m):
    # svd._centre with the rows split: the mean by psum, and a column is constant when every
    # entry equals the first row's (broadcast from shard 0).
    mean = jax.lax.psum(jnp.sum(X, axis=0), axes) / m
    Xc = X - mean[None, :]
    first = jax.lax.psum(jnp.where(_sharding.shard_index(axes) == 0, X[0], 0), axes)
    constant = jax.lax.pmin(jnp.all(X == first[None, :], axis=0).astype(jnp.int32), axes) > 0
    return Xc - jax.lax.stop_gradient(jnp.where(constant[None, :], Xc, 0)), mean


def _frobenius(Xc, axes):
    # ||Xc||_F without overflow or underflow: scaled by the global max |entry|.
    # (The scale cancels, so it carries no derivative; pmax has none.)
    big = jax.lax.pmax(jax.lax.stop_gradient(jnp.max(jnp.abs(Xc))), axes)
    safe = jnp.where(big > 0, big, 1)
    return safe * jnp.sqrt(jax.lax.psum(jnp.sum((Xc / safe) ** 2), axes))


@partial(jax.jit, static_argnames=("layout", "rank", "n_samples", "n_iter", "finish"))
def pca(X, key, layout, *, rank, n_samples, n_iter, finish):
    """The pieces of svd._pca_from_svd for a row-split X: (Vt, s, mean, ||Xc||_F), replicated.
    ``key=None`` (static via n_samples=0) takes the exact SVD of the TSQR factor R."""
    axes = layout.axes
    m = X.shape[0]

    def body(X, key):
        Xc, mean = _centre(X, axes, m)
        if n_samples == 0:
            _, R = _sharding.tsqr(Xc, axes)
            # As svd._pca_exact: the SVD of R^T, whose U is PCA's V (exact tangents at ties).
            V, s, Ut = _linalg.svd_thin(R.T, rank)
            Vt, s = V.T[:rank], s[:rank]
        else:
            _, s, Vt = randomized_svd_body(Xc, key, axes=axes, m=m, rank=rank,
                                           n_samples=n_samples, n_iter=n_iter)
        return finish(Vt, s, mean, _frobenius(Xc, axes), m)

    return jax.shard_map(body, mesh=layout.mesh, in_specs=(layout.spec(), P()),
                         out_specs=P())(X, key)


def svd_factors(res, X, diff, layout):
    """``_implicit_diff.svd_factors`` (the implicit derivative of top-k triplets) for a split X.

    Its backward pass solves with products with X; under explicit mesh axes those products would
    need their output shardings spelled out, so it runs with the mesh axes in auto mode, where
    XLA places them (the forward pass is only the identity on the factors).
    """
    explicit = all(t == jax.sharding.AxisType.Explicit
                   for t in getattr(layout.mesh, "axis_types", ()))
    if not explicit:
        return _implicit_diff.svd_factors(*res, X, diff)
    specs = _specs(layout, layout.dim == 1)
    with jax.sharding.use_abstract_mesh(layout.mesh.abstract_mesh
                                        if isinstance(layout.mesh, jax.sharding.Mesh)
                                        else layout.mesh):
        return jax.sharding.auto_axes(
            lambda U, S, Vt, X: _implicit_diff.svd_factors(U, S, Vt, X, diff),
            out_sharding=specs)(*res, X)
