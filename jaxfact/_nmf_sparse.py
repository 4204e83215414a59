"""Sparse X for the NMF kernels: its stored entries by rows and by columns.

NMF reads a sparse X through ``X @ B``, ``X.T @ B`` and the values of ``W H`` at X's stored
entries. On CPU, XLA's scatter-based BCOO products are several times slower than a gather-only
loop over a padded row layout (ELLPACK): row i keeps its entries in column i of (L, p) arrays,
L the largest row count, padding has weight 0. A concrete BCOO is converted to that layout once,
on the host, by rows and by columns (so both products read rows); rows much longer than the
rest spill into a coordinate part (the HYB format). Under an outer ``jit`` the row lengths are
unknown, and the entries stay in coordinate form, multiplied by segment sums.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import sparse as jsparse

from jaxfact import linop

__all__ = []  # private module


class Sparse:
    """Stored entries of a (p, q) matrix, by rows, in a hybrid ELL + COO layout.

    The first ``L * p`` positions of the 1-D arrays ``cols``, ``vals``, ``xv``, ``wv`` are an
    (L, p) ELL block (entry l of row i at ``l * p + i``); the remaining ones are coordinate
    entries whose rows are ``rows``. Rows longer than L spill into the coordinate part, so a few
    long rows (or columns: text is Zipfian) do not blow up the padding. ``vals = wv * xv`` is the
    data term's matrix (mask times X), ``xv`` holds X's values and ``wv`` the weights (1 or the
    mask, and 0 on padding). ``L = 0`` is plain COO (used under an outer jit).
    """

    def __init__(self, rows, cols, vals, xv, wv, shape, nnz, L):
        self.rows, self.cols, self.vals, self.xv, self.wv = rows, cols, vals, xv, wv
        self.shape = (int(shape[0]), int(shape[1]))
        self.nnz = int(nnz)
        self.L = int(L)

    @property
    def dtype(self):
        return self.vals.dtype

    def with_vals(self, vals):
        return Sparse(self.rows, self.cols, vals, self.xv, self.wv, self.shape, self.nnz, self.L)

    def row_index(self):
        p = self.shape[0]
        ell = jnp.broadcast_to(jnp.arange(p, dtype=self.cols.dtype), (self.L, p)).reshape(-1)
        return jnp.concatenate([ell, self.rows.astype(self.cols.dtype)])


jax.tree_util.register_pytree_node(
    Sparse,
    lambda s: ((s.rows, s.cols, s.vals, s.xv, s.wv), (s.shape, s.nnz, s.L)),
    lambda aux, ch: Sparse(*ch, *aux),
)


class SparseX(NamedTuple):
    """X by rows (``S``, (m, n)) and by columns (``St``, (n, m)): the same entries twice."""

    S: Sparse
    St: Sparse

    @property
    def shape(self):
        return self.S.shape

    @property
    def dtype(self):
        return self.S.dtype


def matmul(S: Sparse, B: jax.Array) -> jax.Array:
    """``S @ B`` (p, k) for B (q, k): O(nnz k); the ELL block is a gather-only loop."""
    p, Lp = S.shape[0], S.L * S.shape[0]
    out = jax.ops.segment_sum(S.vals[Lp:, None] * B[S.cols[Lp:]], S.rows, num_segments=p)
    if S.L == 0:
        return out

    def body(acc, cv):
        c, v = cv
        return acc + v[:, None] * B.at[c].get(mode="promise_in_bounds"), None

    ell = (S.cols[:Lp].reshape(S.L, p), S.vals[:Lp].reshape(S.L, p))
    return lax.scan(body, out, ell, unroll=4)[0]


def sample(S: Sparse, Y: jax.Array, O: jax.Array) -> jax.Array:
    """``(Y^T O)`` at S's entries, in S's layout, for Y (k, p) and O (k, q). O(nnz k)."""
    p, Lp = S.shape[0], S.L * S.shape[0]
    Yt, Ot = Y.T, O.T
    coo = jnp.sum(Yt[S.rows] * Ot[S.cols[Lp:]], axis=1)
    if S.L == 0:
        return coo

    def body(_, c):
        return None, jnp.sum(Yt * Ot.at[c].get(mode="promise_in_bounds"), axis=1)

    ell = lax.scan(body, None, S.cols[:Lp].reshape(S.L, p), unroll=4)[1]
    return jnp.concatenate([ell.reshape(-1), coo])


def apply_mask(S: Sparse, M) -> Sparse:
    """Weights ``wv * M[i, j]`` and values ``wv * xv`` for a dense mask M in S's orientation."""
    wv = S.wv if M is None else S.wv * M[S.row_index(), S.cols]
    return Sparse(S.rows, S.cols, wv * S.xv, S.xv, wv, S.shape, S.nnz, S.L)


# ------------------------------------------------------------------------------------------------
# Conversion


# Relative cost of a coordinate (scatter) entry to an ELL slot, measured on CPU.
_COO_COST = 4


def _hybrid(r, c, v, p, nnz):
    """Hybrid layout of entries sorted by row: L minimizes L p + cost * (entries beyond L)."""
    counts = np.bincount(r, minlength=p)
    hist = np.bincount(counts)
    vals_ = np.arange(hist.size)
    # over(L) = sum_{v > L} (v - L) hist[v], for every L in 0..max count
    s0 = np.concatenate([np.cumsum(hist[::-1])[::-1][1:], [0]])
    s1 = np.concatenate([np.cumsum((vals_ * hist)[::-1])[::-1][1:], [0]])
    over = s1 - vals_ * s0
    L = int(np.argmin(vals_ * p + _COO_COST * over))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(r.size) - starts[r]
    in_ell = pos < L
    cols = np.zeros((L, p), np.int32)
    vals = np.zeros((L, p), v.dtype)
    valid = np.zeros((L, p), v.dtype)
    cols[pos[in_ell], r[in_ell]] = c[in_ell]
    vals[pos[in_ell], r[in_ell]] = v[in_ell]
    valid[pos[in_ell], r[in_ell]] = 1
    spill = ~in_ell
    cols = np.concatenate([cols.reshape(-1), c[spill].astype(np.int32)])
    vals = np.concatenate([vals.reshape(-1), v[spill]])
    valid = np.concatenate([valid.reshape(-1), np.ones(int(spill.sum()), v.dtype)])
    vals, valid = jnp.asarray(vals), jnp.asarray(valid)
    return Sparse(jnp.asarray(r[spill].astype(np.int32)), jnp.asarray(cols), vals, vals, valid,
                  (p, 0), nnz, L)


def from_bcoo_host(X: jsparse.BCOO) -> SparseX:
    """Hybrid copies by rows and by columns of a concrete BCOO; duplicate entries are summed."""
    m, n = X.shape
    idx = np.asarray(X.indices).astype(np.int64)
    data = np.asarray(X.data)
    inside = (idx[:, 0] < m) & (idx[:, 1] < n)  # BCOO pads with out-of-range indices
    if not inside.all():
        idx, data = idx[inside], data[inside]
    flat = idx[:, 0] * n + idx[:, 1]
    if flat.size and not np.all(flat[1:] > flat[:-1]):  # unsorted or duplicated entries
        flat, inv = np.unique(flat, return_inverse=True)
        data = np.bincount(inv, weights=data, minlength=flat.size).astype(data.dtype)
    r, c = flat // n, flat % n
    nnz = int(flat.size)
    S = _hybrid(r, c, data, m, nnz)
    order = np.argsort(c, kind="stable")
    St = _hybrid(c[order], r[order], data[order], n, nnz)
    return SparseX(_shape(S, (m, n)), _shape(St, (n, m)))


def _shape(S, shape):
    return Sparse(S.rows, S.cols, S.vals, S.xv, S.wv, shape, S.nnz, S.L)


def from_bcoo_traced(X: jsparse.BCOO) -> SparseX:
    """Coordinate form, for a BCOO traced under an outer jit (its entries must be unique)."""
    m, n = X.shape
    r, c = X.indices[:, 0], X.indices[:, 1]
    ones = jnp.ones_like(X.data)
    S = Sparse(r, c, X.data, X.data, ones, (m, n), X.nse, 0)
    St = Sparse(c, r, X.data, X.data, ones, (n, m), X.nse, 0)
    return SparseX(S, St)


def _op_matmul(ops, B):
    return matmul(ops.S, B)


def _op_rmatmul(ops, B):
    return matmul(ops.St, B)


def as_linear_operator(X: SparseX) -> linop.LinearOperator:
    """X as a :class:`jaxfact.linop.LinearOperator`, for the randomized SVD of the init."""
    return linop.LinearOperator(_op_matmul, _op_rmatmul, X.shape, X.dtype, operands=X)


def total(X: Any) -> jax.Array:
    """sum(X) for dense or sparse X."""
    if isinstance(X, SparseX):
        return jnp.sum(X.S.xv)
    return jnp.sum(X)
