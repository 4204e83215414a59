"""Sparse X for the NMF kernels: its stored entries by rows and by columns.

NMF reads a sparse X through ``X @ B``, ``X.T @ B`` and the values of ``W H`` at X's stored
entries. On CPU, XLA's scatter-based BCOO products are several times slower than gather-only
loops over padded rows (ELLPACK). A concrete BCOO is converted once, on the host, by rows and by
columns (so both products read rows), with rows grouped into buckets of similar length
(counts in (2^(b-1), 2^b]): each bucket is an (L_b, p_b) ELL block, so padding stays below 2x
even when a few rows (or columns: text is Zipfian) are very long. Under an outer ``jit`` the
row lengths are unknown, and the entries stay in coordinate form, multiplied by segment sums.
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
    """Stored entries of a (p, q) matrix, by rows.

    ``cols``, ``vals``, ``xv``, ``wv`` are 1-D. Coordinate form (``buckets == ()``): ``rows``
    gives each entry's row. Bucketed ELL form: bucket b (static ``(L_b, p_b)``) occupies the next
    ``L_b * p_b`` positions, entry l of its i-th row at ``l * p_b + i``; ``rows`` lists the rows
    of all buckets in order, and ``inv`` (p,) maps each row to its place in that list (empty rows
    to one past the end). ``vals = wv * xv`` is the data term's matrix (mask times X), ``xv``
    holds X's values and ``wv`` the weights (1 or the mask, and 0 on padding).
    """

    def __init__(self, rows, inv, cols, vals, xv, wv, shape, nnz, buckets):
        self.rows, self.inv, self.cols, self.vals, self.xv, self.wv = rows, inv, cols, vals, xv, wv
        self.shape = (int(shape[0]), int(shape[1]))
        self.nnz = int(nnz)
        self.buckets = tuple(buckets)

    @property
    def dtype(self):
        return self.vals.dtype

    def with_vals(self, vals):
        return Sparse(self.rows, self.inv, self.cols, vals, self.xv, self.wv, self.shape,
                      self.nnz, self.buckets)

    def scaled(self, f):
        """The same entries with X's values (and the data term's) multiplied by ``f``."""
        return Sparse(self.rows, self.inv, self.cols, self.vals * f, self.xv * f, self.wv,
                      self.shape, self.nnz, self.buckets)

    def row_index(self):
        if not self.buckets:
            return self.rows
        parts, start = [], 0
        for L, pb in self.buckets:
            parts.append(jnp.broadcast_to(self.rows[start:start + pb], (L, pb)).reshape(-1))
            start += pb
        return jnp.concatenate(parts)

    def blocks(self, arr):
        """Splits a 1-D value array into the buckets' (L_b, p_b) blocks."""
        out, start = [], 0
        for L, pb in self.buckets:
            out.append(arr[start:start + L * pb].reshape(L, pb))
            start += L * pb
        return out


jax.tree_util.register_pytree_node(
    Sparse,
    lambda s: ((s.rows, s.inv, s.cols, s.vals, s.xv, s.wv), (s.shape, s.nnz, s.buckets)),
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
    """``S @ B`` (p, k) for B (q, k): O(nnz k); bucketed ELL blocks use gathers only."""
    p = S.shape[0]
    if not S.buckets:
        return jax.ops.segment_sum(S.vals[:, None] * B[S.cols], S.rows, num_segments=p)

    def body(acc, cv):
        c, v = cv
        return acc + v[:, None] * B.at[c].get(mode="promise_in_bounds"), None

    outs = []
    for (L, pb), c, v in zip(S.buckets, S.blocks(S.cols), S.blocks(S.vals)):
        acc = jnp.zeros((pb, B.shape[1]), B.dtype)
        outs.append(lax.scan(body, acc, (c, v), unroll=min(L, 4))[0])
    outs.append(jnp.zeros((1, B.shape[1]), B.dtype))  # the empty rows' result
    return jnp.concatenate(outs).at[S.inv].get(mode="promise_in_bounds")


def sample(S: Sparse, Y: jax.Array, O: jax.Array) -> jax.Array:
    """``(Y^T O)`` at S's entries, in S's layout, for Y (k, p) and O (k, q). O(nnz k)."""
    Yt, Ot = Y.T, O.T
    if not S.buckets:
        return jnp.sum(Yt[S.rows] * Ot[S.cols], axis=1)
    outs, start = [], 0
    for (L, pb), c in zip(S.buckets, S.blocks(S.cols)):
        Yb = Yt[S.rows[start:start + pb]]
        start += pb

        def body(_, c, Yb=Yb):
            return None, jnp.sum(Yb * Ot.at[c].get(mode="promise_in_bounds"), axis=1)

        outs.append(lax.scan(body, None, c, unroll=min(L, 4))[1].reshape(-1))
    return jnp.concatenate(outs)


def apply_mask(S: Sparse, M) -> Sparse:
    """Weights ``wv * M[i, j]`` and values ``wv * xv`` for a dense mask M in S's orientation."""
    wv = S.wv if M is None else S.wv * M[S.row_index(), S.cols]
    return Sparse(S.rows, S.inv, S.cols, wv * S.xv, S.xv, wv, S.shape, S.nnz, S.buckets)


# ------------------------------------------------------------------------------------------------
# Conversion


# Buckets are merged while the padding grows by less than this factor: fewer, larger blocks
# compile faster and loop less; tiny matrices get a single block.
_MERGE_SLACK = 1.25
_SMALL_NNZ = 1 << 14


def _merge_buckets(counts):
    """Bucket id per row (-1 for empty rows): lengths in (2^(b-1), 2^b], adjacent buckets merged
    while that costs little padding."""
    b = np.where(counts > 0, np.ceil(np.log2(np.maximum(counts, 1))), -1).astype(int)
    if counts.sum() <= _SMALL_NNZ:
        return np.where(counts > 0, 0, -1)
    ids = list(np.unique(b[b >= 0]))
    size = {i: int((b == i).sum()) for i in ids}
    top = {i: int(counts[b == i].max()) for i in ids}
    merged = dict(zip(ids, ids))
    i = 0
    while i + 1 < len(ids):
        lo, hi = ids[i], ids[i + 1]
        separate = top[lo] * size[lo] + top[hi] * size[hi]
        if top[hi] * (size[lo] + size[hi]) <= _MERGE_SLACK * separate:
            size[hi] += size[lo]
            for k, v in merged.items():
                if v == lo:
                    merged[k] = hi
            ids.pop(i)
        else:
            i += 1
    return np.array([merged[x] if x >= 0 else -1 for x in b])


def _bucketed(r, c, v, p, q, nnz):
    """Bucketed ELL layout of entries sorted by row (r ascending)."""
    counts = np.bincount(r, minlength=p)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(r.size) - starts[r]
    bucket_of_row = _merge_buckets(counts)
    buckets, rows_all, cols_all, vals_all, valid_all = [], [], [], [], []
    for b in np.unique(bucket_of_row[bucket_of_row >= 0]).astype(int):
        rows_b = np.nonzero(bucket_of_row == b)[0]
        L, pb = int(counts[rows_b].max()), rows_b.size
        local = np.full(p, -1)
        local[rows_b] = np.arange(pb)
        sel = local[r] >= 0
        li, lp = pos[sel], local[r[sel]]
        cols = np.zeros((L, pb), np.int32)
        vals = np.zeros((L, pb), v.dtype)
        valid = np.zeros((L, pb), v.dtype)
        cols[li, lp] = c[sel]
        vals[li, lp] = v[sel]
        valid[li, lp] = 1
        buckets.append((L, pb))
        rows_all.append(rows_b)
        cols_all.append(cols.reshape(-1))
        vals_all.append(vals.reshape(-1))
        valid_all.append(valid.reshape(-1))
    rows = np.concatenate(rows_all) if rows_all else np.zeros(0, np.int64)
    inv = np.full(p, rows.size, np.int32)
    inv[rows] = np.arange(rows.size)
    cat = lambda xs, dt: jnp.asarray(np.concatenate(xs) if xs else np.zeros(0, dt))  # noqa: E731
    vals = cat(vals_all, v.dtype)
    return Sparse(jnp.asarray(rows.astype(np.int32)), jnp.asarray(inv), cat(cols_all, np.int32),
                  vals, vals, cat(valid_all, v.dtype), (p, q), nnz, buckets)


def from_bcoo_host(X: jsparse.BCOO) -> SparseX:
    """Bucketed ELL copies by rows and by columns of a concrete BCOO; duplicates are summed."""
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
    S = _bucketed(r, c, data, m, n, nnz)
    order = np.argsort(c, kind="stable")
    St = _bucketed(c[order], r[order], data[order], n, m, nnz)
    return SparseX(S, St)


def from_bcoo_traced(X: jsparse.BCOO) -> SparseX:
    """Coordinate form, for a BCOO traced under an outer jit (its entries must be unique)."""
    m, n = X.shape
    r, c = X.indices[:, 0], X.indices[:, 1]
    ones = jnp.ones_like(X.data)
    S = Sparse(r, None, c, X.data, X.data, ones, (m, n), X.nse, ())
    St = Sparse(c, None, r, X.data, X.data, ones, (n, m), X.nse, ())
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
        return jnp.sum(X.S.vals)
    return jnp.sum(X)


def masked(X: Any, mask) -> Any:
    """mask * X, dense or sparse (the sparse result keeps X's layout)."""
    if isinstance(X, SparseX):
        return SparseX(apply_mask(X.S, mask), apply_mask(X.St, mask.T))
    return mask * X
