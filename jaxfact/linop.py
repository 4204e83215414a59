"""What a "matrix" may be, and the two products every algorithm is written against.

jaxfact's iterative algorithms touch their input only through ``matmul(A, B) = A @ B`` and
``rmatmul(A, B) = A.T @ B``, so they accept any of:

* a dense ``jax.Array`` (or NumPy array) of shape (m, n);
* a ``jax.experimental.sparse.BCOO`` matrix (a SciPy sparse matrix is converted to one by
  :func:`as_operator`);
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
from jax.experimental import sparse as jsparse

__all__ = ["ObservedMatrix", "LinearOperator", "as_operator", "matmul", "rmatmul", "shape_of",
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

Operator = Union[jax.Array, jsparse.BCOO, ObservedMatrix, LinearOperator]


def as_operator(A: Any) -> Operator:
    """Returns ``A`` in one of the forms above: arrays and NumPy arrays become ``jax.Array``;
    SciPy sparse matrices become ``BCOO``; the other forms are returned unchanged."""
    if isinstance(A, (jsparse.BCOO, ObservedMatrix, LinearOperator, jax.Array)):
        return A
    if hasattr(A, "tocoo") and hasattr(A, "nnz"):  # a SciPy sparse matrix or array
        return jsparse.BCOO.from_scipy_sparse(A)
    return jnp.asarray(A)


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
    if isinstance(A, LinearOperator):
        return A.matmul(B)
    if isinstance(A, jsparse.BCOO):
        return A @ B
    return A @ B


def rmatmul(A: Operator, B: jax.Array) -> jax.Array:
    """``A.T @ B`` for any supported ``A`` and a dense (m, k) ``B``."""
    if isinstance(A, ObservedMatrix):
        return _segment_matmul(A.cols, A.rows, A.values.astype(B.dtype), B, A.shape[1])
    if isinstance(A, LinearOperator):
        return A.rmatmul(B)
    if isinstance(A, jsparse.BCOO):
        return A.T @ B
    return A.T @ B
