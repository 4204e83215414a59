"""nmf, nmf_init and nmf_transform on row-sharded X (8 host devices).

Sharded and unsharded runs do the same arithmetic except for the order of the sums over rows
(a psum of per-device partial sums), so they agree to rounding: W and H to 1e-4 of their largest
entry (~800 float32 ulps after up to 60 alternating iterations, which do not amplify rounding
for hals and mu), the same n_iter and status (tol = 0 runs max_iter; the tolerance stops here
are not borderline). The objective (``history``) of pg and hals is the expanded form
1/2 ||X||^2 - <W, X H^T> + ..., good to ~eps ||X||^2 only (its stopping rule's noise level):
compared to 1e-5 ||X||^2. pg's step search accepts or rejects steps on tests that rounding
can tip, so its float32 trajectories drift apart (2e-2 relatively after 20 iterations, while
float64 runs agree to 1e-13): it is compared in float64.
"""

import warnings

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxfact import nmf, nmf_init, nmf_transform

from .meshes import SIZES, assert_no_large_collective, mesh, rows, shard, spec_of
from .meshes import SLOW
from .meshes import slow as meshes_slow

M, N, K = 64, 24, 4
ITERS = 60
RTOL = 1e-4


def _data(m=M, n=N, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.random((m, K))
    H = rng.random((K, n))
    X = W @ H + 0.1 * rng.random((m, n))
    return X.astype(np.float32)


X = _data()
X_SQ = float(np.sum(X.astype(np.float64) ** 2))
MASK = (np.random.default_rng(1).random((M, N)) > 0.2).astype(np.float32)
START = nmf_init(X, K, init="random", key=jax.random.key(3))


def _close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.max(np.abs(b)), 1e-30)
    np.testing.assert_allclose(a, b, rtol=0, atol=RTOL * scale, err_msg=what)


def _same(res, ref, what):
    _close(res.W, ref.W, f"{what}: W")
    _close(res.H, ref.H, f"{what}: H")
    assert int(res.n_iter) == int(ref.n_iter), what
    assert int(res.status) == int(ref.status), what
    h, r = np.asarray(res.history), np.asarray(ref.history)
    np.testing.assert_array_equal(np.isnan(h), np.isnan(r))
    ok = ~np.isnan(r)
    np.testing.assert_allclose(h[ok], r[ok], rtol=RTOL, atol=1e-5 * X_SQ,
                               err_msg=f"{what}: history")


def _layout_ok(res, m):
    assert spec_of(res.W) == P("data"), res.W.sharding
    assert spec_of(res.H) == P(), res.H.sharding
    assert res.W.sharding.mesh == m


@pytest.mark.parametrize("solver", ["hals", "mu", "pg"])
def test_solvers_match_one_device(solver):
    dtype = np.float64 if solver == "pg" else np.float32
    with jax.enable_x64(dtype == np.float64):
        Xd = X.astype(dtype)
        start = tuple(np.asarray(f, dtype) for f in START)
        kw = dict(solver=solver, max_iter=ITERS, tol=0.0, warm_start=start)
        ref = nmf(Xd, K, **kw)
        # hals on 8 devices: test_tolerance_stop (in float64), one compilation less.
        # pg (its step search psums a few more scalars) on 8 devices only, unless the slow sweep.
        sizes = SIZES[:-1] if solver == "hals" else SIZES[-1:] if solver == "pg" and not SLOW \
            else SIZES
        meshes = [mesh(size) for size in sizes]
        for m in meshes:
            res = nmf(rows(Xd, m), K, **kw)
            _same(res, ref, f"{solver} on {m}")
            if m.size > 1:
                _layout_ok(res, m)


def test_tolerance_stop(x64):
    # In float64: in float32 the objective's rounding, ~eps ||X||^2, is what decides the last
    # iterations, and the order of the sums can move the stop by an iteration either way.
    Xd = X.astype(np.float64)
    kw = dict(solver="hals", max_iter=ITERS, tol=1e-2,
              warm_start=nmf_init(Xd, K, init="random", key=jax.random.key(3)))
    ref = nmf(Xd, K, **kw)
    assert int(ref.status) == 1 and int(ref.n_iter) < ITERS, ref
    _same(nmf(rows(Xd, mesh(8)), K, **kw), ref, "hals stopped by tol")


def test_mask():
    kw = dict(solver="hals", max_iter=ITERS, tol=0.0, warm_start=START, mask=MASK)
    ref = nmf(X, K, **kw)
    m = mesh(4)
    res = nmf(rows(X, m), K, **{**kw, "mask": rows(MASK, m)})
    _same(res, ref, "masked hals")
    _layout_ok(res, m)


def test_starts_match_one_device():
    # Random start: the full W drawn from the key, each device keeping its rows. NNDSVD: the
    # exact SVD through a tall-skinny QR, signs as on one device.
    key = jax.random.key(5)
    m = mesh(8)
    for init in ("random", "nndsvda"):
        W0, H0 = nmf_init(X, K, init=init, key=key if init == "random" else None)
        W1, H1 = nmf_init(rows(X, m), K, init=init, key=key if init == "random" else None)
        _close(W1, W0, f"{init}: W")
        _close(H1, H0, f"{init}: H")
        assert spec_of(W1) == P("data") and spec_of(H1) == P()


def test_kl_and_transform():
    m = mesh(2)
    kw = dict(solver="mu", beta_loss="kullback-leibler", max_iter=ITERS, tol=0.0,
              warm_start=START)
    _same(nmf(rows(X, m), K, **kw), nmf(X, K, **kw), "KL")
    for solver in ("hals",):
        ref = nmf_transform(START[1], X, solver=solver, max_iter=ITERS, tol=0.0)
        res = nmf_transform(START[1], rows(X, m), solver=solver, max_iter=ITERS, tol=0.0)
        _same(res, ref, f"transform {solver}")
        _layout_ok(res, m)


def test_under_outer_jit():
    m = mesh(4)
    kw = dict(solver="hals", max_iter=ITERS, tol=0.0)
    ref = nmf(X, K, warm_start=START, **kw)

    @jax.jit
    def fit(X, W0, H0):
        res = nmf(X, K, warm_start=(W0, H0), **kw)
        return res, nmf_transform(res, X, solver="hals", max_iter=5, tol=0.0).W

    res, codes = fit(rows(X, m), rows(START[0], m), START[1])
    _same(res, ref, "hals under jit")
    _layout_ok(res, m)
    assert spec_of(codes) == P("data")


def test_communication_is_small():
    # Nothing of the size of X's rows or W's rows crosses devices: every collective of the
    # whole fit (random start included) is a (k, n), (k, k) or scalar sum.
    m = mesh(8)
    Xs = rows(X, m)
    limit = M * K // 2
    found = assert_no_large_collective(
        lambda X, key: nmf(X, K, solver="hals", init="random", key=key, max_iter=5, tol=0.0).W,
        (Xs, jax.random.key(0)), limit=limit, what="nmf hals")
    assert max(int(np.prod(c.shape)) for c in found) == K * N  # W^T X
    assert_no_large_collective(
        lambda X: nmf(X, K, solver="mu", mask=X > 0.5, warm_start=START, max_iter=5).W,
        (Xs,), limit=limit, what="nmf mu with a mask")


def test_column_sharded_x_warns_and_is_right():
    m = mesh(8, explicit=False)  # also: the auto (non-explicit) mesh of older code
    kw = dict(solver="hals", max_iter=ITERS, tol=0.0, warm_start=START)
    with pytest.warns(UserWarning, match="resharded once"):
        res = nmf(shard(X, m, P(None, "data")), K, **kw)
    _same(res, nmf(X, K, **kw), "column-sharded X")
    _layout_ok(res, m)
    # A mask split otherwise than X is resharded like X, with a warning.
    m = mesh(4)
    with pytest.warns(UserWarning, match="not split like `X`"):
        res = nmf(rows(X, m), K, mask=shard(MASK, m, P(None, "data")), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res2 = nmf(rows(X, m), K, mask=MASK, **kw)  # a host mask is placed without a warning
    _same(res, res2, "mask resharded")


@meshes_slow
def test_randomized_nndsvd_start():
    # With a key and min(m, n) > 256 the NNDSVD starts use the randomized SVD, here the sharded
    # sketch (same draws as on one device): equal up to the sketch's float32 rounding.
    Y = np.abs(np.random.default_rng(2).standard_normal((264, 260))).astype(np.float32)
    key = jax.random.key(2)
    W0, H0 = nmf_init(Y, K, init="nndsvda", key=key)
    W1, H1 = nmf_init(rows(Y, mesh(8)), K, init="nndsvda", key=key)
    np.testing.assert_allclose(np.asarray(W1), np.asarray(W0), atol=1e-4 * float(np.max(W0)))
    np.testing.assert_allclose(np.asarray(H1), np.asarray(H0), atol=1e-4 * float(np.max(H0)))
    assert spec_of(W1) == P("data") and spec_of(H1) == P()
