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
        "csr": linop.SparseCSR.from_coo(sp.row, sp.col, sp.data, sp.shape),
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


def test_concrete_sparse_inputs_become_csr_and_duplicates_are_summed():
    bcoo = jsparse.BCOO((jnp.array([1.0, 2.0, 5.0]), jnp.array([[0, 1], [0, 1], [2, 0]])),
                        shape=(3, 2))
    op = linop.as_operator(bcoo)
    assert isinstance(op, linop.SparseCSR)
    np.testing.assert_array_equal(linop.matmul(op, jnp.eye(2)), [[0, 3], [0, 0], [5, 0]])
    np.testing.assert_array_equal(linop.rmatmul(op, jnp.eye(3)), [[0, 0, 5], [3, 0, 0]])
    # Under jit a BCOO stays a BCOO (its indices are traced) and still multiplies correctly.
    out = jax.jit(lambda A: linop.matmul(linop.as_operator(A), jnp.eye(2)))(bcoo)
    np.testing.assert_array_equal(out, [[0, 3], [0, 0], [5, 0]])
