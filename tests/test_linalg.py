"""Tests of the shared kernels of jaxfact._linalg that the public functions do not pin down alone."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import _linalg


def test_the_three_orthonormalizers_span_the_same_space_and_householder_matches_lapack():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 6)).astype(np.float32)
    A[:, 4] = 0.0                                   # rank deficient: a zero column
    Q_lapack = _linalg.orthonormalize(jnp.asarray(A))
    Q_hh, R = _linalg.householder_qr(jnp.asarray(A))
    Q_cqr = _linalg.normalize_rows(jnp.asarray(A).T).T
    for Q in (Q_lapack, Q_hh):
        np.testing.assert_allclose(Q.T @ Q, np.eye(6), atol=1e-5)
    np.testing.assert_allclose(Q_hh @ R, A, atol=1e-5)
    # Same reflector convention as LAPACK: the same Q on the full-rank columns.
    keep = [0, 1, 2, 3]
    np.testing.assert_allclose(Q_hh[:, keep], Q_lapack[:, keep], atol=1e-5)
    # CholeskyQR3's basis (A R^-1) lies in range(A), all the intermediate bases need.
    P = np.linalg.svd(A.astype(np.float64), full_matrices=False)[0][:, :5]
    Q_cqr = np.asarray(Q_cqr, np.float64)
    np.testing.assert_allclose(P @ (P.T @ Q_cqr), Q_cqr, atol=1e-4)


def test_subspace_rotations_solve_the_tangent_equation_also_at_ties():
    # dP = Om_U S + diag(dS) + S Om_V^T with Om_U antisymmetric, for distinct and tied values.
    rng = np.random.default_rng(1)
    dP = jnp.asarray(rng.standard_normal((4, 4)))
    for s in (jnp.array([4.0, 3.0, 2.0, 1.0]), jnp.array([3.0, 3.0, 2.0, 1.0])):
        om_u, om_v = _linalg.subspace_rotations(dP, s, 4)
        np.testing.assert_allclose(om_u, -om_u.T, atol=1e-6)
        S = jnp.diag(s)
        rebuilt = om_u @ S + jnp.diag(jnp.diagonal(dP)) + S @ om_v.T
        np.testing.assert_allclose(rebuilt, dP, atol=1e-5)
    assert jax.numpy.isfinite(_linalg.safe_inverse(jnp.array([0.0, 2.0]))).all()


def test_cholesky_orthonormalizer_triangular_inverse_and_qr_iteration_svd():
    rng = np.random.default_rng(1)
    # Well conditioned: CholeskyQR3 reaches working precision, Y = Q R.
    Y = (rng.standard_normal((300, 8)) * np.geomspace(1, 1e-2, 8)).astype(np.float32)
    Q, R = jax.jit(_linalg.orthonormalize_cholesky)(jnp.asarray(Y))
    np.testing.assert_allclose(Q.T @ Q, np.eye(8), atol=1e-5)
    np.testing.assert_allclose(Q @ R, Y, atol=1e-5)
    # Rank deficient (a zero column): the Householder fallback keeps Q orthonormal.
    Y[:, 3] = 0.0
    Q, R = jax.jit(_linalg.orthonormalize_cholesky)(jnp.asarray(Y))
    np.testing.assert_allclose(Q.T @ Q, np.eye(8), atol=1e-5)
    np.testing.assert_allclose(Q @ R, Y, atol=1e-5)
    # The Newton-Schulz inverse of an upper-triangular R matches the triangular solve.
    R = np.triu(rng.standard_normal((13, 13))) + 4 * np.eye(13)
    np.testing.assert_allclose(_linalg.inv_upper(jnp.asarray(R, jnp.float32)), np.linalg.inv(R),
                               rtol=1e-4, atol=1e-5)
    # gesvd (qr_algorithm=True) gives gesdd's flipped factors.
    A = jnp.asarray(rng.standard_normal((9, 9)), jnp.float32)
    for x, y in zip(_linalg.svd_thin(A, qr_algorithm=True), _linalg.svd_thin(A)):
        np.testing.assert_allclose(x, y, atol=1e-4)
