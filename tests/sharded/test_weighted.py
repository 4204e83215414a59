"""wlra on X and weights split by rows over 1, 2, 4 and 8 devices.

U comes back split like X, S and Vt replicated. Sharded and unsharded runs do the same
arithmetic up to the order of sums (psums of per-shard partial sums) and the QR of the row side
(TSQR instead of one Householder QR, the same subspace): in float32 the factors and objective agree
to ~1e-5 on this well-conditioned problem; tolerances 1e-4 leave a margin of ten.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxfact import _sharding, weighted
from tests.sharded import meshes

M_ROWS, N_COLS, RANK = 64, 24, 3
KW = dict(max_iter=6, tol=0.0, lam=0.1)


def _problem():
    rng = np.random.default_rng(0)
    L = rng.standard_normal((M_ROWS, 2)) @ rng.standard_normal((2, N_COLS))
    sigma = rng.uniform(0.1, 1.0, (M_ROWS, N_COLS))
    X = (L + sigma * rng.standard_normal((M_ROWS, N_COLS))).astype(np.float32)
    W = (1 / sigma ** 2).astype(np.float32)
    W[rng.random(W.shape) < 0.2] = 0       # missing entries
    X[W == 0] = np.nan                     # allowed where the weight is 0
    return X, W


X, W = _problem()
REF = []


def _ref():
    if not REF:
        REF.append(weighted.wlra(X, W, RANK, **KW))
    return REF[0]


def _close(res, ref=None):
    ref = _ref() if ref is None else ref
    scale = float(ref.S[0])
    np.testing.assert_allclose(np.asarray(res.S), np.asarray(ref.S), atol=1e-4 * scale)
    Z = (np.asarray(res.U) * np.asarray(res.S)) @ np.asarray(res.Vt)
    Zr = (np.asarray(ref.U) * np.asarray(ref.S)) @ np.asarray(ref.Vt)
    np.testing.assert_allclose(Z, Zr, atol=1e-4 * scale)
    np.testing.assert_allclose(np.asarray(res.history), np.asarray(ref.history), rtol=1e-4)
    assert int(res.n_iter) == int(ref.n_iter)


def _shardings(res):
    assert meshes.spec_of(res.U) == P("data")
    assert meshes.spec_of(res.S) == P() and meshes.spec_of(res.Vt) == P()


@pytest.mark.parametrize("size,explicit", [(1, True), (2, True), (4, True), (8, True),
                                           (2, False)])
def test_wlra_matches_one_device(size, explicit):
    mesh = meshes.mesh(size, explicit=explicit)
    res = weighted.wlra(meshes.rows(X, mesh), meshes.rows(W, mesh), RANK, **KW)
    _close(res)
    _shardings(res)


def test_wlra_under_outer_jit():
    mesh = meshes.mesh(4)
    res = jax.jit(lambda X, W: weighted.wlra(X, W, RANK, **KW))(meshes.rows(X, mesh),
                                                                meshes.rows(W, mesh))
    _close(res)
    _shardings(res)


def test_bad_shardings_are_resharded_with_a_warning():
    # X split by columns: resharded by rows once, with a warning naming X. Weights split
    # otherwise than X: resharded to X's layout, with a warning naming them. Both reuse the
    # 8-device program.
    mesh = meshes.mesh(8)
    with pytest.warns(UserWarning, match=r"`X` of shape \(64, 24\) is sharded along its columns"):
        res = weighted.wlra(meshes.shard(X, mesh, P(None, "data")), meshes.rows(W, mesh), RANK,
                            **KW)
    _close(res)
    with pytest.warns(UserWarning, match="`weights` is sharded differently"):
        res = weighted.wlra(meshes.rows(X, mesh), meshes.shard(W, mesh, P(None, "data")), RANK,
                            **KW)
    _close(res)
    _shardings(res)


def test_no_large_collective():
    # Per subspace pass the (n, K) psum of A^T Q and TSQR's (p K, K) stack of R factors, per
    # iteration a few scalars: nothing of m K / 2 elements crosses devices.
    mesh = meshes.mesh(8)
    Xs, Ws = meshes.rows(X, mesh), meshes.rows(W, mesh)
    weighted.wlra(Xs, Ws, RANK, **KW)     # compiled once (cached if run before)
    rep = lambda a: meshes.shard(jnp.asarray(a), mesh, P())
    k = RANK
    args = (Xs, Ws, meshes.rows(jnp.zeros((M_ROWS, k), jnp.float32), mesh),
            rep(jnp.zeros((k,), jnp.float32)), rep(jnp.zeros((N_COLS, k), jnp.float32)),
            jax.random.key(0), rep(jnp.float32(KW["lam"])), rep(jnp.float32(KW["tol"])))
    hlo = weighted._wlra_sharded.lower(*args, mesh=mesh, axes=("data",), max_iter=KW["max_iter"],
                                       n_power=1, fresh=True).compile().as_text()
    found = _sharding.collectives(hlo)
    assert not [c for c in found if np.prod(c.shape) >= M_ROWS * k // 2], found
    assert any(c.shape == (N_COLS, k) for c in found)


def test_grad_of_split_input_raises():
    mesh = meshes.mesh(2)
    Ws = meshes.rows(W, mesh)
    f = lambda x: jnp.sum(weighted.wlra(x, Ws, RANK, **KW).S)
    with pytest.raises(TypeError, match="runs under jit only"):
        jax.grad(f)(meshes.rows(np.nan_to_num(X), mesh))
