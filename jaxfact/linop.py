"""What a "matrix" may be, and the two products every algorithm is written against.

jaxfact's iterative algorithms touch their input only through ``matmul(A, B) = A @ B`` and
``rmatmul(A, B) = A.T @ B``, so they accept any of:

* a dense ``jax.Array`` (or NumPy array) of shape (m, n);
* a ``jax.experimental.sparse.BCOO`` matrix or a SciPy sparse matrix (:func:`as_operator` turns
  a concrete one into a :class:`SparseMatrix`, the one sparse format of jaxfact's solvers: the
  entries by rows and by columns, in padded blocks whose products are gathers);
* an :class:`ObservedMatrix`: a sparse matrix given by its observed entries (rows, cols, values),
  the form ratings and matrix-completion data come in; its products are segment sums, O(nnz * k);
* a :class:`LinearOperator` built from two functions, for matrices that are never stored (a sum
  of sparse and low-rank parts, a kernel matrix, a Hessian).

All of them are pytrees, so they pass through ``jax.jit`` and ``jax.vmap`` as arguments.
:func:`sample`, :func:`apply_mask`, :func:`masked` and :func:`total` are the other operations
on a :class:`SparseMatrix` that the NMF solvers need.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import sparse as jsparse

__all__ = ["ObservedMatrix", "LinearOperator", "SparseMatrix", "SparseRows", "as_operator",
           "matmul", "rmatmul", "shape_of", "dtype_of", "sample", "apply_mask", "masked", "total"]


class ObservedMatrix(NamedTuple):
    """A sparse (m, n) matrix given by its observed entries.

    ``rows``, ``cols`` (int32, (nnz,)) and ``values`` ((nnz,)) list the stored entries, each
    (row, col) pair at most once; every other entry is zero. ``shape`` is static.

    Products cost O(nnz * k) for a right-hand side with k columns and never form the dense matrix.
    """

    rows: jax.Array    # (nnz,) int32
    cols: jax.Array    # (nnz,) int32
    values: jax.Array  # (nnz,) float
    shape: tuple[int, int]

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def T(self) -> "ObservedMatrix":
        return ObservedMatrix(self.cols, self.rows, self.values, (self.shape[1], self.shape[0]))

    def todense(self) -> jax.Array:
        return jnp.zeros(self.shape, self.values.dtype).at[self.rows, self.cols].add(self.values)


# `shape` must be static: register ObservedMatrix as a pytree whose aux data holds it.
jax.tree_util.register_pytree_node(
    ObservedMatrix,
    lambda a: ((a.rows, a.cols, a.values), a.shape),
    lambda shape, children: ObservedMatrix(*children, shape),
)


class LinearOperator:
    """A matrix known only through its products.

    Args:
      matmul: ``B -> A @ B`` for B of shape (n, k).
      rmatmul: ``B -> A.T @ B`` for B of shape (m, k).
      shape: (m, n).
      dtype: the dtype of the products.

    The two functions are static (compared by identity under ``jit``): build the operator once and
    reuse it, or close over arrays passed as ``operands`` so they stay traced. With ``operands``,
    the functions are called as ``matmul(operands, B)`` and ``rmatmul(operands, B)``.

    Example::

      op = LinearOperator(lambda B: A @ B, lambda B: A.T @ B, A.shape, A.dtype)
      U, S, Vt = randomized_svd(op, 10, key=jax.random.key(0))
    """

    def __init__(self, matmul: Callable, rmatmul: Callable, shape: tuple[int, int], dtype: Any,
                 operands: Any = None):
        self.matmul_fn = matmul
        self.rmatmul_fn = rmatmul
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = jnp.dtype(dtype)
        self.operands = operands

    def matmul(self, B: jax.Array) -> jax.Array:
        if self.operands is None:
            return self.matmul_fn(B)
        return self.matmul_fn(self.operands, B)

    def rmatmul(self, B: jax.Array) -> jax.Array:
        if self.operands is None:
            return self.rmatmul_fn(B)
        return self.rmatmul_fn(self.operands, B)

    def __repr__(self) -> str:
        return f"LinearOperator(shape={self.shape}, dtype={self.dtype})"


jax.tree_util.register_pytree_node(
    LinearOperator,
    lambda a: ((a.operands,), (a.matmul_fn, a.rmatmul_fn, a.shape, a.dtype)),
    lambda aux, children: LinearOperator(aux[0], aux[1], aux[2], aux[3], children[0]),
)

class SparseRows:
    """The stored entries of a sparse (p, q) matrix, laid out by rows: one half of a
    :class:`SparseMatrix`. ``matmul(S, B)`` multiplies it; it has no ``rmatmul``.

    ``cols``, ``vals``, ``xv``, ``wv`` are 1-D. ``xv`` holds the matrix's values, ``wv`` a weight
    per entry (1, or a mask's value, see :func:`apply_mask`; 0 on padding) and ``vals = wv * xv``
    the weighted matrix that :func:`matmul` multiplies. Two layouts:

    * coordinate (``buckets == ()``, built under ``jit``): ``rows`` gives each entry's row, and
      products are segment sums;
    * bucketed ELLPACK (built on the host): rows of similar length (counts in (2^(b-1), 2^b]) share
      a bucket, a dense (L_b, p_b) block, so products are gathers only and the padding stays
      below 2x even when a few rows are very long (word counts are Zipfian). Bucket b (static
      ``(L_b, p_b)``) occupies the next ``L_b * p_b`` positions, entry l of its i-th row at
      ``l * p_b + i``; ``rows`` lists the rows of all buckets in order and ``inv`` (p,) maps each
      row to its place in that list (empty rows to one past the end).
    """

    def __init__(self, rows, inv, cols, vals, xv, wv, shape, nnz, buckets):
        self.rows, self.inv, self.cols, self.vals, self.xv, self.wv = rows, inv, cols, vals, xv, wv
        self.shape = (int(shape[0]), int(shape[1]))
        self.nnz = int(nnz)
        self.buckets = tuple(buckets)

    @property
    def dtype(self):
        return self.vals.dtype

    def with_vals(self, vals: jax.Array) -> "SparseRows":
        """The same entries with ``vals`` replaced (e.g. a residual at the stored entries)."""
        return SparseRows(self.rows, self.inv, self.cols, vals, self.xv, self.wv, self.shape,
                          self.nnz, self.buckets)

    def scaled(self, f: Any) -> "SparseRows":
        """The same entries with the values (``xv`` and ``vals``) multiplied by ``f``."""
        return SparseRows(self.rows, self.inv, self.cols, self.vals * f, self.xv * f, self.wv,
                          self.shape, self.nnz, self.buckets)

    def astype(self, dtype: Any) -> "SparseRows":
        return SparseRows(self.rows, self.inv, self.cols, self.vals.astype(dtype),
                          self.xv.astype(dtype), self.wv.astype(dtype), self.shape, self.nnz,
                          self.buckets)

    def row_index(self) -> jax.Array:
        """The row of each stored position (padding included), in the layout's order."""
        if not self.buckets:
            return self.rows
        parts, start = [], 0
        for L, pb in self.buckets:
            parts.append(jnp.broadcast_to(self.rows[start:start + pb], (L, pb)).reshape(-1))
            start += pb
        return jnp.concatenate(parts)

    def blocks(self, arr: jax.Array) -> list:
        """Splits a 1-D array in the layout's order into the buckets' (L_b, p_b) blocks."""
        out, start = [], 0
        for L, pb in self.buckets:
            out.append(arr[start:start + L * pb].reshape(L, pb))
            start += L * pb
        return out

    def __repr__(self) -> str:
        return f"SparseRows(shape={self.shape}, nnz={self.nnz}, buckets={len(self.buckets)})"


jax.tree_util.register_pytree_node(
    SparseRows,
    lambda s: ((s.rows, s.inv, s.cols, s.vals, s.xv, s.wv), (s.shape, s.nnz, s.buckets)),
    lambda aux, ch: SparseRows(*ch, *aux),
)


class SparseMatrix(NamedTuple):
    """A sparse (m, n) matrix kept twice, by rows (``S``, (m, n)) and by columns (``St``, (n, m)).

    Both products then read rows: ``X @ B`` multiplies ``S`` and ``X.T @ B`` multiplies ``St``,
    each with gathers only on the host-built (bucketed ELLPACK) layout, several times faster on
    CPU than XLA's CSR or COO kernels (which scatter). It costs twice the memory of the non-zeros.
    :func:`as_operator` builds it from a concrete ``BCOO`` or SciPy sparse matrix.

    Example::

      >>> X = SparseMatrix.from_coo([0, 0, 2], [1, 1, 0], [1.0, 2.0, 5.0], (3, 2))
      >>> print(X.nnz, matmul(X, jnp.eye(2)).tolist())   # duplicates are summed
      2 [[0.0, 3.0], [0.0, 0.0], [5.0, 0.0]]
    """

    S: SparseRows
    St: SparseRows

    @property
    def shape(self) -> tuple[int, int]:
        return self.S.shape

    @property
    def dtype(self):
        return self.S.dtype

    @property
    def nnz(self) -> int:
        return self.S.nnz

    @property
    def T(self) -> "SparseMatrix":
        return SparseMatrix(self.St, self.S)

    def astype(self, dtype: Any) -> "SparseMatrix":
        return SparseMatrix(self.S.astype(dtype), self.St.astype(dtype))

    @classmethod
    def from_coo(cls, rows: Any, cols: Any, values: Any, shape: tuple[int, int]
                 ) -> "SparseMatrix":
        """From coordinates on the host (duplicates are summed)."""
        m, n = int(shape[0]), int(shape[1])
        rows = np.asarray(rows, np.int64)
        cols = np.asarray(cols, np.int64)
        values = np.asarray(values)
        flat = rows * n + cols
        if flat.size and not np.all(flat[1:] > flat[:-1]):  # unsorted or duplicated entries
            flat, inverse = np.unique(flat, return_inverse=True)
            values = np.bincount(inverse, weights=values,
                                 minlength=flat.size).astype(values.dtype)
        r, c = flat // n, flat % n
        nnz = int(flat.size)
        order = stable_argsort(c)
        return cls(_bucketed(r, c, values, m, n, nnz),
                   _bucketed(c[order], r[order], values[order], n, m, nnz))

    @classmethod
    def from_bcoo(cls, X: jsparse.BCOO) -> "SparseMatrix":
        """From a 2-D BCOO. Concrete: the ELL layout, duplicates summed, padding dropped. Traced
        (under ``jit``, row lengths unknown): the coordinate layout, whose entries must be unique
        (padding entries, index == shape, multiply to nothing)."""
        m, n = X.shape
        if _is_concrete(X):
            idx = np.asarray(X.indices).astype(np.int64)
            data = np.asarray(X.data)
            inside = (idx[:, 0] < m) & (idx[:, 1] < n)  # BCOO pads with out-of-range indices
            return cls.from_coo(idx[inside, 0], idx[inside, 1], data[inside], (m, n))
        r, c = X.indices[:, 0], X.indices[:, 1]
        ones = jnp.ones_like(X.data)
        return cls(SparseRows(r, None, c, X.data, X.data, ones, (m, n), X.nse, ()),
                   SparseRows(c, None, r, X.data, X.data, ones, (n, m), X.nse, ()))


def sample(S: SparseRows, Y: jax.Array, O: jax.Array) -> jax.Array:
    """``Y^T O`` at S's stored positions, in S's layout (like its ``vals``), for Y (k, p) and
    O (k, q): the entries of a factored matrix where S has data. O(nnz k)."""
    Yt, Ot = jnp.asarray(Y).T, jnp.asarray(O).T
    if not S.buckets:
        return jnp.sum(Yt[S.rows] * Ot[S.cols], axis=1)
    # As in _rows_matmul, each loop step takes _GROUP entries of every row of a block at once.
    outs, start = [], 0
    for (L, pb), c in zip(S.buckets, S.blocks(S.cols)):
        Yb = Yt[S.rows[start:start + pb]]
        start += pb

        def body(_, c, Yb=Yb):  # c (g, p_b): g entries of each row -> their (g, p_b) values
            return None, jnp.sum(Yb[None] * Ot.at[c].get(mode="promise_in_bounds"), axis=2)

        if L <= _GROUP:
            outs.append(body(None, c)[1].reshape(-1))
            continue
        steps = -(-L // _GROUP)
        c = jnp.pad(c, ((0, steps * _GROUP - L), (0, 0))).reshape(steps, _GROUP, pb)
        outs.append(lax.scan(body, None, c)[1].reshape(steps * _GROUP, pb)[:L].reshape(-1))
    return jnp.concatenate(outs)


def apply_mask(S: SparseRows, M: Any) -> SparseRows:
    """Weights ``wv * M[i, j]`` and ``vals = wv * xv`` for a dense (p, q) mask M (None: none)."""
    wv = S.wv if M is None else S.wv * M[S.row_index(), S.cols]
    return SparseRows(S.rows, S.inv, S.cols, wv * S.xv, S.xv, wv, S.shape, S.nnz, S.buckets)


def masked(X: Any, mask: Any) -> Any:
    """``mask * X`` for dense X or a :class:`SparseMatrix` (which keeps its layout)."""
    if isinstance(X, SparseMatrix):
        return SparseMatrix(apply_mask(X.S, mask), apply_mask(X.St, mask.T))
    return mask * X


def total(X: Any) -> jax.Array:
    """``sum(X)`` for dense X or a :class:`SparseMatrix` (of its weighted values)."""
    if isinstance(X, SparseMatrix):
        return jnp.sum(X.S.vals)
    return jnp.sum(X)


Operator = Union[jax.Array, jsparse.BCOO, SparseMatrix, ObservedMatrix, LinearOperator]


def as_operator(A: Any) -> Operator:
    """Returns ``A`` in the form its products are fastest in.

    NumPy arrays become ``jax.Array``; a SciPy sparse matrix, and a concrete 2-D ``BCOO``, become
    a :class:`SparseMatrix` (duplicates summed); a traced ``BCOO`` (under ``jit``) and the other
    forms are unchanged.
    """
    if isinstance(A, jsparse.BCOO):
        if A.n_batch == 0 and A.n_dense == 0 and len(A.shape) == 2 and _is_concrete(A):
            return SparseMatrix.from_bcoo(A)
        return A
    if isinstance(A, (SparseMatrix, ObservedMatrix, LinearOperator, jax.Array)):
        return A
    if hasattr(A, "tocoo") and hasattr(A, "nnz"):  # a SciPy sparse matrix or array
        coo = A.tocoo()
        return SparseMatrix.from_coo(coo.row, coo.col, coo.data, coo.shape)
    return jnp.asarray(A)


def shape_of(A: Operator) -> tuple[int, int]:
    return tuple(int(d) for d in A.shape)


def dtype_of(A: Operator):
    return A.dtype


def matmul(A: Operator, B: jax.Array) -> jax.Array:
    """``A @ B`` for any supported ``A`` (or a :class:`SparseRows`) and a dense (n, k) ``B``."""
    if isinstance(A, ObservedMatrix):
        return _segment_matmul(A.rows, A.cols, A.values.astype(B.dtype), B, A.shape[0])
    if isinstance(A, SparseMatrix):
        return _rows_matmul(A.S, B)
    if isinstance(A, SparseRows):
        return _rows_matmul(A, B)
    if isinstance(A, LinearOperator):
        return A.matmul(B)
    return A @ B


def rmatmul(A: Operator, B: jax.Array) -> jax.Array:
    """``A.T @ B`` for any supported ``A`` and a dense (m, k) ``B``."""
    if isinstance(A, ObservedMatrix):
        return _segment_matmul(A.cols, A.rows, A.values.astype(B.dtype), B, A.shape[1])
    if isinstance(A, SparseMatrix):
        return _rows_matmul(A.St, B)
    if isinstance(A, LinearOperator):
        return A.rmatmul(B)
    return A.T @ B


def stable_argsort(seg: np.ndarray) -> np.ndarray:
    """``np.argsort(seg, kind="stable")`` for non-negative int64 seg < 2^32 (host side), by two
    16-bit radix passes (NumPy's stable sort is a radix sort for 16-bit keys only): several
    times faster than a merge sort of 64-bit keys."""
    seg = np.asarray(seg, np.int64)
    if seg.size and int(seg.max()) >> 32:
        return np.argsort(seg, kind="stable")
    order = np.argsort((seg & 0xFFFF).astype(np.uint16), kind="stable")
    high = seg[order] >> 16
    if not high.any():
        return order
    return order[np.argsort(high.astype(np.uint16), kind="stable")]


# ------------------------------------------------------------------------------------------------
# Kernels


def _is_concrete(x: Any) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _segment_matmul(rows, cols, values, B, n_out):
    # out[r] = sum_{e: rows[e] = r} values[e] * B[cols[e]]; O(nnz * k), never densifies A.
    return jax.ops.segment_sum(values[:, None] * B[cols], rows, num_segments=n_out)


def _rows_matmul(S, B):
    # S @ B (p, k) for B (q, k): O(nnz k); the ELL blocks use gathers only. Each step of the loop
    # over a block's L entries per row adds _GROUP of them at once (one fused XLA loop that reads
    # and writes the (p_b, k) accumulator once). Measured on a loaded 2-core CPU at 100000 x 20000,
    # 2M non-zeros, k = 30: X^T @ B (20000 rows of ~100 entries) ~1.5x faster than a scan over
    # single entries with unroll=4, X @ B (rows of ~20) about the same; what X @ B pays for is the
    # padding, which the bucket widths (:func:`_bucket_ids`) keep low.
    B = jnp.asarray(B)
    p = S.shape[0]
    if not S.buckets:
        vals = S.vals.astype(B.dtype)
        return jax.ops.segment_sum(vals[:, None] * B[S.cols], S.rows, num_segments=p)

    def body(acc, cv):
        c, v = cv
        for j in range(c.shape[0]):
            acc = acc + v[j][:, None] * B.at[c[j]].get(mode="promise_in_bounds")
        return acc, None

    outs = []
    for (L, pb), c, v in zip(S.buckets, S.blocks(S.cols), S.blocks(S.vals.astype(B.dtype))):
        acc = jnp.zeros((pb, B.shape[1]), B.dtype)
        if L <= _GROUP:
            outs.append(body(acc, (c, v))[0])
            continue
        steps = -(-L // _GROUP)
        pad = ((0, steps * _GROUP - L), (0, 0))  # padding entries: column 0, value 0
        c = jnp.pad(c, pad).reshape(steps, _GROUP, pb)
        v = jnp.pad(v, pad).reshape(steps, _GROUP, pb)
        outs.append(lax.scan(body, acc, (c, v))[0])
    outs.append(jnp.zeros((1, B.shape[1]), B.dtype))  # the empty rows' result
    return jnp.concatenate(outs).at[S.inv].get(mode="promise_in_bounds")


# Entries per row added in one step of _rows_matmul's loop.
_GROUP = 8


# Adjacent buckets are merged, cheapest first, while the stored slots (entries plus padding) stay
# below this factor times those of the unmerged buckets: fewer, larger blocks compile faster and
# loop less; small matrices get a single block.
_MERGE_SLACK = 1.1
_SMALL_NNZ = 1 << 14
# Past the slack, merging goes on (cheapest first) down to this many buckets.
_MAX_BUCKETS = 16


def _bucket_ids(counts):
    """Bucket id per row (-1 for empty rows) before merging: lengths up to _GROUP by powers of 2,
    longer ones by multiples of _GROUP up to 4 _GROUP and then by quarter octaves (lengths in
    (3/4 * 2^j, 2^j], (2^j, 5/4 * 2^j], ...), so a row is padded by less than _GROUP entries or
    25 %. The ids increase with the length."""
    c = np.maximum(counts, 1).astype(np.int64)
    octave = np.floor(np.log2(c - 1, where=c > 1, out=np.zeros(c.shape))).astype(np.int64)
    step = np.maximum(_GROUP, 2 ** np.maximum(octave - 2, 0))
    padded = np.where(c <= _GROUP, 2 ** np.ceil(np.log2(c)).astype(np.int64), -(-c // step) * step)
    return np.where(counts > 0, padded, -1)


def _merge_buckets(counts):
    """Bucket id per row (-1 for empty rows): rows of similar length (:func:`_bucket_ids`),
    adjacent buckets merged while that costs little padding (``_MERGE_SLACK``)."""
    if counts.sum() <= _SMALL_NNZ:
        return np.where(counts > 0, 0, -1)
    b = _bucket_ids(counts)
    ids = [int(i) for i in np.unique(b[b >= 0])]
    size = [int((b == i).sum()) for i in ids]
    top = [int(counts[b == i].max()) for i in ids]
    budget = _MERGE_SLACK * sum(t * n for t, n in zip(top, size))
    slots = sum(t * n for t, n in zip(top, size))
    merged = {i: i for i in ids}
    while len(ids) > 1:
        extra = [(top[j + 1] - top[j]) * size[j] for j in range(len(ids) - 1)]
        j = int(np.argmin(extra))
        if slots + extra[j] > budget and len(ids) <= _MAX_BUCKETS:
            break
        slots += extra[j]
        lo, hi = ids[j], ids[j + 1]
        for k, v in merged.items():
            if v == lo:
                merged[k] = hi
        size[j + 1] += size[j]
        del ids[j], size[j], top[j]
    keys = np.array(sorted(merged))
    vals = np.array([merged[k] for k in keys])
    return np.where(b >= 0, vals[np.searchsorted(keys, np.maximum(b, keys[0]))], -1)


def _bucketed(r, c, v, p, q, nnz):
    """Bucketed ELL layout of entries sorted by row (r ascending)."""
    counts = np.bincount(r, minlength=p)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(r.size) - starts[r]
    bucket_of_row = _merge_buckets(counts)
    # Entries grouped by bucket (rows ascending within each): one sort instead of a pass over all
    # entries per bucket.
    ids = np.unique(bucket_of_row[bucket_of_row >= 0])
    rank = np.searchsorted(ids, bucket_of_row[r]).astype(np.int16)  # few ids: a radix sort
    order = np.argsort(rank, kind="stable")
    r, c, v, pos = r[order], c[order], v[order], pos[order]
    ends = np.cumsum(np.bincount(rank, minlength=ids.size))
    local = np.zeros(p, np.int64)
    buckets, rows_all, cols_all, vals_all, valid_all = [], [], [], [], []
    for j, b in enumerate(ids):
        rows_b = np.nonzero(bucket_of_row == b)[0]
        L, pb = int(counts[rows_b].max()), rows_b.size
        local[rows_b] = np.arange(pb)
        lo, hi = (ends[j - 1] if j else 0), ends[j]
        li, lp = pos[lo:hi], local[r[lo:hi]]
        cols = np.zeros((L, pb), np.int32)
        vals = np.zeros((L, pb), v.dtype)
        valid = np.zeros((L, pb), v.dtype)
        cols[li, lp] = c[lo:hi]
        vals[li, lp] = v[lo:hi]
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
    return SparseRows(jnp.asarray(rows.astype(np.int32)), jnp.asarray(inv),
                      cat(cols_all, np.int32), vals, vals, cat(valid_all, v.dtype), (p, q), nnz,
                      buckets)
