"""What a "matrix" may be, and the two products every algorithm is written against.

jaxfact's iterative algorithms touch their input only through ``matmul(A, B) = A @ B`` and
``rmatmul(A, B) = A.T @ B``, so they accept any of:

* a dense ``jax.Array`` (or NumPy array) of shape (m, n);
* a ``jax.experimental.sparse.BCOO`` matrix or a SciPy sparse matrix (:func:`as_operator` turns
  a concrete one into a :class:`SparseCSR`, whose products use XLA's CSR kernel);
* an :class:`ObservedMatrix`: a sparse matrix given by its observed entries (rows, cols, values),
  the form ratings and matrix-completion data come in; its products are segment sums, O(nnz * k);
* a :class:`LinearOperator` built from two functions, for matrices that are never stored (a sum
  of sparse and low-rank parts, a kernel matrix, a Hessian).

All four are pytrees, so they pass through ``jax.jit`` and ``jax.vmap`` as arguments.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

__all__ = ["ObservedMatrix", "LinearOperator", "SparseCSR", "as_operator", "matmul", "rmatmul", "shape_of",
           "dtype_of"]


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

class SparseCSR(NamedTuple):
    """A sparse matrix kept twice in CSR form, as ``X`` and as ``X.T``.

    Both products then run XLA's compressed-sparse-row kernel (``X @ B`` and ``X.T @ B`` are each a
    CSR times dense product), several times faster on CPU than the scatter-add that a COO product
    lowers to. :func:`as_operator` builds it from a concrete ``BCOO`` or SciPy sparse matrix; it
    costs twice the memory of the non-zeros.
    """

    X: jsparse.BCSR   # (m, n)
    Xt: jsparse.BCSR  # (n, m)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(d) for d in self.X.shape)

    @property
    def dtype(self):
        return self.X.dtype

    @classmethod
    def from_coo(cls, rows: Any, cols: Any, values: Any, shape: tuple[int, int]) -> "SparseCSR":
        """From coordinates on the host (duplicates are summed)."""
        rows = np.asarray(rows, np.int64)
        cols = np.asarray(cols, np.int64)
        values = np.asarray(values)
        m, n = int(shape[0]), int(shape[1])
        return cls(_csr(rows, cols, values, m, n), _csr(cols, rows, values, n, m))


def _csr(rows, cols, values, m, n) -> jsparse.BCSR:
    key = rows * n + cols
    uniq, inverse = np.unique(key, return_inverse=True)  # sorted by row, then column
    data = np.bincount(inverse, weights=values, minlength=uniq.size).astype(values.dtype)
    r, c = uniq // n, uniq % n
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=m))])
    return jsparse.BCSR((jnp.asarray(data), jnp.asarray(c, jnp.int32),
                         jnp.asarray(indptr, jnp.int32)), shape=(m, n))


Operator = Union[jax.Array, jsparse.BCOO, SparseCSR, ObservedMatrix, LinearOperator]


def as_operator(A: Any) -> Operator:
    """Returns ``A`` in the form its products are fastest in.

    NumPy arrays become ``jax.Array``; a SciPy sparse matrix, and a concrete 2-D ``BCOO``, become
    a :class:`SparseCSR`; a traced ``BCOO`` (under ``jit``) and the other forms are unchanged.
    """
    if isinstance(A, jsparse.BCOO):
        if A.n_batch == 0 and A.n_dense == 0 and _is_concrete(A):
            return SparseCSR.from_coo(A.indices[:, 0], A.indices[:, 1], A.data, A.shape)
        return A
    if isinstance(A, (SparseCSR, ObservedMatrix, LinearOperator, jax.Array)):
        return A
    if hasattr(A, "tocoo") and hasattr(A, "nnz"):  # a SciPy sparse matrix or array
        coo = A.tocoo()
        return SparseCSR.from_coo(coo.row, coo.col, coo.data, coo.shape)
    return jnp.asarray(A)


def _is_concrete(x: Any) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def shape_of(A: Operator) -> tuple[int, int]:
    return tuple(int(d) for d in A.shape)


def dtype_of(A: Operator):
    return A.dtype


def _segment_matmul(rows, cols, values, B, n_out):
    # out[r] = sum_{e: rows[e] = r} values[e] * B[cols[e]]; O(nnz * k), never densifies A.
    return jax.ops.segment_sum(values[:, None] * B[cols], rows, num_segments=n_out)


def matmul(A: Operator, B: jax.Array) -> jax.Array:
    """``A @ B`` for any supported ``A`` and a dense (n, k) ``B``."""
    if isinstance(A, ObservedMatrix):
        return _segment_matmul(A.rows, A.cols, A.values.astype(B.dtype), B, A.shape[0])
    if isinstance(A, SparseCSR):
        return A.X @ B
    if isinstance(A, LinearOperator):
        return A.matmul(B)
    return A @ B


def rmatmul(A: Operator, B: jax.Array) -> jax.Array:
    """``A.T @ B`` for any supported ``A`` and a dense (m, k) ``B``."""
    if isinstance(A, ObservedMatrix):
        return _segment_matmul(A.cols, A.rows, A.values.astype(B.dtype), B, A.shape[1])
    if isinstance(A, SparseCSR):
        return A.Xt @ B
    if isinstance(A, LinearOperator):
        return A.rmatmul(B)
    return A.T @ B
