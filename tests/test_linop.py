"""The matrix forms of jaxfact.linop: products agree with the dense matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
from jax.experimental import sparse as jsparse

from jaxfact import linop


@pytest.fixture(scope="module")
def forms():
    sp = scipy.sparse.random(40, 25, density=0.2, random_state=0, format="coo", dtype=np.float32)
    dense = sp.toarray()
    return dense, {
        "dense": jnp.asarray(dense),
        "numpy": dense,
        "bcoo": jsparse.BCOO.from_scipy_sparse(sp),
        "scipy": sp.tocsr(),
        "sparse": linop.SparseMatrix.from_coo(sp.row, sp.col, sp.data, sp.shape),
        "observed": linop.ObservedMatrix(jnp.asarray(sp.row, jnp.int32),
                                         jnp.asarray(sp.col, jnp.int32), jnp.asarray(sp.data),
                                         sp.shape),
        "operator": linop.LinearOperator(lambda B: dense @ B, lambda B: dense.T @ B, sp.shape,
                                         np.float32),
        "operator_with_operands": linop.LinearOperator(lambda A, B: A @ B, lambda A, B: A.T @ B,
                                                       sp.shape, np.float32,
                                                       operands=jnp.asarray(dense)),
    }


def test_products_match_dense(forms):
    dense, all_forms = forms
    rng = np.random.default_rng(1)
    B = rng.standard_normal((25, 3)).astype(np.float32)
    C = rng.standard_normal((40, 3)).astype(np.float32)
    for name, A in all_forms.items():
        A = linop.as_operator(A)
        assert linop.shape_of(A) == (40, 25), name
        np.testing.assert_allclose(linop.matmul(A, B), dense @ B, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
        np.testing.assert_allclose(linop.rmatmul(A, C), dense.T @ C, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
        # Every form is a pytree and passes through jit.
        out = jax.jit(lambda A, B: linop.matmul(A, B))(A, B)
        np.testing.assert_allclose(out, dense @ B, rtol=1e-5, atol=1e-5, err_msg=name)


def test_observed_matrix_helpers(forms):
    dense, all_forms = forms
    obs = all_forms["observed"]
    np.testing.assert_array_equal(obs.todense(), dense)
    np.testing.assert_array_equal(obs.T.todense(), dense.T)
    assert obs.dtype == np.float32
    assert "LinearOperator(shape=(40, 25)" in repr(all_forms["operator"])


def test_concrete_sparse_inputs_become_sparse_matrix_and_duplicates_are_summed():
    bcoo = jsparse.BCOO((jnp.array([1.0, 2.0, 5.0]), jnp.array([[0, 1], [0, 1], [2, 0]])),
                        shape=(3, 2))
    op = linop.as_operator(bcoo)
    assert isinstance(op, linop.SparseMatrix)
    np.testing.assert_array_equal(linop.matmul(op, jnp.eye(2)), [[0, 3], [0, 0], [5, 0]])
    np.testing.assert_array_equal(linop.rmatmul(op, jnp.eye(3)), [[0, 0, 5], [3, 0, 0]])
    # Under jit a BCOO stays a BCOO (its indices are traced) and still multiplies correctly.
    out = jax.jit(lambda A: linop.matmul(linop.as_operator(A), jnp.eye(2)))(bcoo)
    np.testing.assert_array_equal(out, [[0, 3], [0, 0], [5, 0]])


def test_sparse_matrix_long_rows_get_their_own_blocks_and_all_operations_agree(monkeypatch):
    # Rows of very different lengths land in separate ELL blocks (forced here: small matrices
    # normally get a single block); every operation the NMF solvers use agrees with the dense one.
    monkeypatch.setattr(linop, "_SMALL_NNZ", 0)
    monkeypatch.setattr(linop, "_MERGE_SLACK", 1.0)
    rng = np.random.default_rng(7)
    X = (rng.random((30, 20)) * (rng.random((30, 20)) < 0.15)).astype(np.float32)
    X[0] = rng.random(20) + 0.1
    X[:, 3] = rng.random(30) + 0.1
    r, c = np.nonzero(X)
    S = linop.SparseMatrix.from_coo(r, c, X[r, c], X.shape)
    assert len(S.S.buckets) > 1 and len(S.St.buckets) > 1 and S.nnz == r.size
    B, C = rng.standard_normal((20, 4), np.float32), rng.standard_normal((30, 4), np.float32)
    np.testing.assert_allclose(linop.matmul(S, B), X @ B, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(linop.rmatmul(S, C), X.T @ C, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(linop.matmul(S.T, C), X.T @ C, rtol=1e-5, atol=1e-5)
    Y, O = rng.standard_normal((4, 30), np.float32), rng.standard_normal((4, 20), np.float32)
    at = np.asarray(S.S.row_index()), np.asarray(S.S.cols)
    WH = (Y.T @ O)[at] * np.asarray(S.S.wv)     # zero on padding
    np.testing.assert_allclose(linop.sample(S.S, Y, O) * S.S.wv, WH, rtol=1e-5, atol=1e-5)
    M = (rng.random(X.shape) < 0.5).astype(np.float32)
    Sm = linop.masked(S, jnp.asarray(M))
    np.testing.assert_allclose(linop.matmul(Sm, B), (M * X) @ B, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(linop.rmatmul(Sm, C), (M * X).T @ C, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(linop.total(Sm), (M * X).sum(), rtol=1e-5)
    np.testing.assert_allclose(linop.total(S), X.sum(), rtol=1e-5)
    half = linop.SparseMatrix(S.S.scaled(0.5), S.St.scaled(0.5))
    np.testing.assert_allclose(linop.matmul(half, B), 0.5 * X @ B, rtol=1e-5, atol=1e-5)
    # Under jit a traced BCOO gives the coordinate layout, with the same products.
    bcoo = jsparse.BCOO.fromdense(X)
    out = jax.jit(lambda A: linop.rmatmul(linop.SparseMatrix.from_bcoo(A), C))(bcoo)
    np.testing.assert_allclose(out, X.T @ C, rtol=1e-5, atol=1e-5)
