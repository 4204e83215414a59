"""randomized_svd, truncated_svd and pca on split rows (and columns) equal one device's."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxfact
from tests.conftest import tol
from tests.sharded import meshes

KEY = jax.random.key(1)


def _data(m, n, seed=0):
    # A decaying spectrum (a gap after the 5th value), so the top-5 factors are well defined.
    g = jax.random.normal(jax.random.key(seed), (m, n))
    return g * jnp.concatenate([jnp.linspace(4, 2, 5), jnp.linspace(1, 0.1, n - 5)])[None, :]


TALL = _data(96, 16)
WIDE = _data(96, 16).T   # (16, 96)


def _fits(X):
    return {"randomized_svd": jaxfact.randomized_svd(X, 4, key=KEY, n_iter=2),
            "truncated_svd": jaxfact.truncated_svd(X, 4),
            "pca": jaxfact.pca(X, 4),
            "pca_randomized": jaxfact.pca(X, 4, key=KEY, n_iter=2)}


def _close(got, want, scale=10.0):
    # float32 factors of an O(1)-conditioned top block: ~1e-5 agreement; sums in another order
    # and TSQR against one Householder QR differ by a few ulps times the condition (gap 2 -> 1).
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=tol(np.float32, scale),
                                   rtol=tol(np.float32, scale))


REF = {}


def _ref(name, X):
    key = (name, X.shape)
    if key not in REF:
        REF[key] = _fits(X)[name]
    return REF[key]


@pytest.mark.parametrize("size", meshes.SIZES)
def test_split_rows_match_one_device(size):
    mesh = meshes.mesh(size)
    Xs = meshes.rows(TALL, mesh)
    for name, res in _fits(Xs).items():
        _close(res, _ref(name, TALL))
        if name in ("randomized_svd", "truncated_svd"):
            assert meshes.spec_of(res.U) == P("data")          # U split like X
            assert meshes.spec_of(res.Vt) == P()               # Vt, S replicated
        else:
            assert meshes.spec_of(res.components) == P()


def test_wide_x_with_split_rows_and_columns():
    mesh = meshes.mesh(8)
    # randomized: a wide X split by rows runs the transposed range finder with the same split.
    res = jaxfact.randomized_svd(meshes.rows(WIDE, mesh), 4, key=KEY, n_iter=2)
    _close(res, _ref("randomized_svd", WIDE))
    assert meshes.spec_of(res.U) == P("data")
    # Columns split: the kernels run on X^T; U replicated, Vt's columns split.
    Xc = meshes.shard(WIDE, mesh, P(None, "data"))
    for name, res in (("randomized_svd", jaxfact.randomized_svd(Xc, 4, key=KEY, n_iter=2)),
                      ("truncated_svd", jaxfact.truncated_svd(Xc, 4))):
        _close(res, _ref(name, WIDE))
        assert meshes.spec_of(res.Vt) == P(None, "data") and meshes.spec_of(res.U) == P()


def test_auto_mesh_and_outer_jit():
    # Mesh(devices, names) (auto axes) as older code builds it, and an explicit mesh under jit.
    Xa = meshes.rows(TALL, meshes.mesh(8, explicit=False))
    _close(jaxfact.randomized_svd(Xa, 4, key=KEY, n_iter=2), _ref("randomized_svd", TALL))
    _close(jaxfact.pca(Xa, 4), _ref("pca", TALL))
    Xe = meshes.rows(TALL, meshes.mesh(8))
    res = jax.jit(lambda X: jaxfact.randomized_svd(X, 4, key=KEY, n_iter=2))(Xe)
    _close(res, _ref("randomized_svd", TALL))
    assert meshes.spec_of(res.U) == P("data")


def test_two_mesh_axes_on_rows():
    mesh = jax.make_mesh((2, 4), ("a", "b"))
    Xs = meshes.shard(TALL, mesh, P(("a", "b"), None))
    res = jaxfact.randomized_svd(Xs, 4, key=KEY, n_iter=2)
    _close(res, _ref("randomized_svd", TALL))
    assert meshes.spec_of(res.U) == P(("a", "b"))


def test_unusable_sharding_is_resharded_once_with_a_warning():
    mesh = jax.make_mesh((2, 4), ("a", "b"))
    Xs = meshes.shard(TALL, mesh, P("a", "b"))               # both dimensions split
    with pytest.warns(UserWarning, match=r"randomized_svd: `X` of shape \(96, 16\) is sharded "
                                         r"along both its dimensions.*resharded once"):
        res = jaxfact.randomized_svd(Xs, 4, key=KEY, n_iter=2)
    _close(res, _ref("randomized_svd", TALL))
    # A tall X split by columns: the exact SVD needs its rows split.
    Xc = meshes.shard(TALL, meshes.mesh(8), P(None, "data"))
    with pytest.warns(UserWarning, match=r"truncated_svd: .* along its columns.*by rows"):
        _close(jaxfact.truncated_svd(Xc, 4), _ref("truncated_svd", TALL))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # the right split: no warning
        jaxfact.truncated_svd(meshes.rows(TALL, meshes.mesh(8)), 4)


def test_gradients_through_split_rows():
    # d sum(S_k) / dX = U_k V_k^T, and d sum(explained_variance) / dX = 2 Xc V_k V_k^T / (m - 1)
    # (the top-k block separated: values 4 ... 2 against 1 ... 0.1).
    mesh = meshes.mesh(8)
    Xs = meshes.rows(TALL, mesh)
    X = np.asarray(TALL, np.float64)
    Xc = X - X.mean(axis=0)
    U, _, Vt = np.linalg.svd(X, full_matrices=False)
    Vc = np.linalg.svd(Xc, full_matrices=False)[2][:4].T
    with jax.set_mesh(mesh):
        # pca differentiates through the shard_map kernel (TSQR, psum'd mean); randomized_svd's
        # implicit backward runs with the mesh axes in auto mode.
        for f, want in ((lambda X: jnp.sum(jaxfact.pca(X, 4).explained_variance),
                         2 * Xc @ Vc @ Vc.T / (X.shape[0] - 1)),
                        (lambda X: jnp.sum(jaxfact.randomized_svd(X, 4, key=KEY, n_iter=2).S),
                         U[:, :4] @ Vt[:4])):
            g = jax.grad(f)(Xs)
            np.testing.assert_allclose(np.asarray(g), want, atol=tol(np.float32, 10))
            assert meshes.spec_of(g) == P("data")


def test_no_collective_moves_the_split_rows():
    # 8 devices, rows per device (100) well above n (10): the TSQR stacks 8 n x n factors.
    m, n, k = 800, 10, 4
    Xs = meshes.rows(_data(m, n), meshes.mesh(8))
    for name, f in (("randomized_svd", lambda X: jaxfact.randomized_svd(X, k, key=KEY)),
                    ("truncated_svd", lambda X: jaxfact.truncated_svd(X, k)),
                    ("pca", lambda X: jaxfact.pca(X, k)),
                    ("pca(key)", lambda X: jaxfact.pca(X, k, key=KEY))):
        found = meshes.assert_no_large_collective(f, (Xs,), limit=m * k // 2, what=name)
        assert {c.op for c in found} <= {"all-reduce"}, (name, found)


def test_reading_split_factors():
    # svd_flip decides signs across shards, predict reads only the rows asked for, and
    # singular_value_shrink takes the TSQR path; all equal one device's.
    mesh = meshes.mesh(8)
    res = jaxfact.randomized_svd(meshes.rows(TALL, mesh), 4, key=KEY, n_iter=2)
    ref = _ref("randomized_svd", TALL)
    for u_based in (True, False):
        _close(jaxfact.svd_flip(res, u_based=u_based), jaxfact.svd_flip(ref, u_based=u_based))
    rows = jnp.arange(90) % 96
    cols = jnp.arange(90) % 16
    np.testing.assert_allclose(jaxfact.predict(res, rows, cols), jaxfact.predict(ref, rows, cols),
                               atol=tol(np.float32, 100))
    assert meshes.spec_of(jaxfact.reconstruct(res)) == P("data")
    _close(jaxfact.singular_value_shrink(meshes.rows(TALL, mesh), 0.5),
           jaxfact.singular_value_shrink(TALL, 0.5), scale=30)
    pc = jaxfact.pca(meshes.rows(TALL, mesh), 3)
    scores = jaxfact.pca_transform(pc, meshes.rows(TALL, mesh))
    assert meshes.spec_of(scores) == P("data")
    np.testing.assert_allclose(scores, jaxfact.pca_transform(jaxfact.pca(TALL, 3), TALL),
                               atol=tol(np.float32, 100))
