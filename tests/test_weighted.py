"""Tests for jaxfact.weighted.wlra against NumPy EM (Srebro & Jaakkola 2003) and SoftImpute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.experimental import checkify

import jaxfact
from conftest import dense
from jaxfact import weighted

N1, N2, K = 30, 20, 3


def _data(seed=0):
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((N1, K)) @ rng.standard_normal((K, N2))
    sigma = rng.uniform(0.1, 2.0, (N1, N2))
    return L, L + sigma * rng.standard_normal((N1, N2)), 1.0 / sigma**2


def em_reference(X, W, k, iters, lam=0.0):
    """X <- D_lam(LRA_k(W X + (1 - W) Z)) with full NumPy SVDs; weights scaled by their max."""
    W = W / W.max()
    Z = np.zeros_like(X)
    objs = []
    for _ in range(iters):
        U, s, Vt = np.linalg.svd(W * X + (1 - W) * Z, full_matrices=False)
        s = np.maximum(s[:k] - lam, 0)
        Z = (U[:, :k] * s) @ Vt[:k]
        objs.append(0.5 * np.sum(W * (X - Z) ** 2) + lam * np.sum(s))
    return Z, np.array(objs)


@pytest.fixture(scope="module")
def em_case():
    with jax.enable_x64(True):
        L, X, W = _data()
        Z_ref, objs = em_reference(X, W, K, 3000)
        res = jaxfact.wlra(X, W, K, max_iter=3000, tol=1e-13)
        jax.block_until_ready(res)
    return L, X, W, Z_ref, objs, res


def test_wlra_matches_numpy_em(em_case, x64):
    L, X, W, Z_ref, objs, res = em_case
    # Both converge to the same local optimum; EM's linear convergence leaves ~1e-5 in Z after
    # the relative-decrease rule (1e-13) stops it.
    n = int(res.n_iter)
    assert bool(res.converged) and n < 3000
    np.testing.assert_allclose(float(res.history[n - 1]), objs[-1], rtol=1e-9)
    np.testing.assert_allclose(dense(res), Z_ref, atol=1e-3 * np.abs(Z_ref).max())
    assert res.U.shape == (N1, K) and res.Vt.shape == (K, N2)
    np.testing.assert_allclose(np.asarray(res.U.T @ res.U), np.eye(K), atol=1e-10)


def test_wlra_objective_never_increases(em_case):
    *_, res = em_case
    h = np.asarray(res.history[:int(res.n_iter)])
    assert np.all(np.diff(h) <= 1e-13 * h[0])
    assert np.all(np.isnan(np.asarray(res.history[int(res.n_iter):])))


def test_weights_beat_unweighted_svd(em_case):
    L, X, W, Z_ref, objs, res = em_case
    # Heteroscedastic noise, weights 1/sigma^2: the weighted fit is closer to the truth.
    U, s, Vt = np.linalg.svd(X)
    plain = (U[:, :K] * s[:K]) @ Vt[:K]
    err_w = np.linalg.norm(dense(res) - L) / np.linalg.norm(L)
    err_u = np.linalg.norm(plain - L) / np.linalg.norm(L)
    assert err_w < 0.8 * err_u


def test_wlra_lam_is_proximal_gradient(dtype):
    L, X, W, *_ = _data(1)
    X, W = X.astype(dtype), W.astype(dtype)
    res = jaxfact.wlra(X, W, K, lam=2.0, max_iter=3000, tol=1e-12)
    h = np.asarray(res.history[:int(res.n_iter)])
    assert np.all(np.diff(h) <= 10 * np.finfo(dtype).eps * h[0])
    Z_ref, objs = em_reference(X.astype(np.float64), W.astype(np.float64), K, 3000, lam=2.0)
    # The stopping rule (relative decrease 1e-12) leaves a gap ~1e-11 below float32's rounding.
    np.testing.assert_allclose(h[-1], objs[-1], rtol=max(100 * np.finfo(dtype).eps, 1e-9))


def test_zero_one_weights_complete_a_low_rank_matrix(x64):
    rng = np.random.default_rng(2)
    L = rng.standard_normal((N1, 2)) @ rng.standard_normal((2, N2))
    mask = rng.random((N1, N2)) < 0.6
    X = np.where(mask, L, np.nan)        # missing entries may be NaN where the weight is 0
    res = jaxfact.wlra(X, mask, 2, max_iter=3000, tol=1e-15)
    assert np.linalg.norm(dense(res) - L) / np.linalg.norm(L) < 1e-5
    assert float(res.residual) < 1e-6


def test_zero_one_weights_with_lam_is_soft_impute(x64):
    # With 0/1 weights, the lam > 0 step is exactly SoftImpute's: same convex objective.
    L, X, _, *_ = _data(3)
    rng = np.random.default_rng(3)
    mask = rng.random((N1, N2)) < 0.5
    rows, cols = np.nonzero(mask)
    res = jaxfact.wlra(X, mask.astype(np.float64), N2, lam=3.0, max_iter=3000, tol=1e-14)
    si = jaxfact.soft_impute(rows.astype(np.int32), cols.astype(np.int32), X[rows, cols],
                             (N1, N2), lam=3.0, rank=N2, tol=1e-16, max_iter=3000)
    x = np.asarray(jaxfact.predict(si, rows, cols))
    obj_si = 0.5 * np.sum((x - X[rows, cols]) ** 2) + 3.0 * float(jnp.sum(si.S))
    np.testing.assert_allclose(float(res.history[int(res.n_iter) - 1]), obj_si, rtol=1e-7)


def test_wlra_warm_start_tol_traced_jit_and_vmap(em_case, x64):
    L, X, W, Z_ref, objs, res = em_case
    n_compiled = weighted._wlra._cache_size()
    again = jaxfact.wlra(X, W, K, max_iter=3000, tol=1e-12, warm_start=res)
    assert weighted._wlra._cache_size() == n_compiled + 1      # `fresh` changed, not tol
    jaxfact.wlra(X, W, K, max_iter=3000, tol=1e-10, warm_start=res)
    assert weighted._wlra._cache_size() == n_compiled + 1
    assert int(again.n_iter) <= 3
    from_dense = jaxfact.wlra(X, W, K, max_iter=3000, tol=1e-12, warm_start=dense(res))
    np.testing.assert_allclose(dense(from_dense), dense(res), atol=1e-4)
    # vmap over a batch of weight matrices (value checks are skipped for tracers).
    Ws = jnp.stack([jnp.asarray(W), jnp.ones_like(W)])
    out = jax.jit(jax.vmap(lambda w: jaxfact.wlra(X, w, K, max_iter=3000, tol=1e-13)))(Ws)
    np.testing.assert_allclose(dense(jax.tree.map(lambda a: a[0], out)), dense(res),
                               atol=1e-6 * np.abs(dense(res)).max())
    U, s, Vt = np.linalg.svd(X)
    np.testing.assert_allclose(dense(jax.tree.map(lambda a: a[1], out)),
                               (U[:, :K] * s[:K]) @ Vt[:K], atol=1e-6 * np.abs(X).max())


def test_errors():
    X = np.ones((4, 3), np.float32)
    W = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"wlra: `weights` must be non-negative; got minimum -1"):
        jaxfact.wlra(X, -W, 1)
    with pytest.raises(ValueError, match=r"wlra: `weights` must not contain NaN; got 1 NaN"):
        jaxfact.wlra(X, np.where(np.arange(12).reshape(4, 3) == 0, np.nan, W), 1)
    with pytest.raises(ValueError, match=r"wlra: `weights` must have the shape of `X`, \(4, 3\)"):
        jaxfact.wlra(X, W.T, 1)
    with pytest.raises(ValueError, match=r"wlra: `rank` must be an integer in \[1, 3\]; got 4"):
        jaxfact.wlra(X, W, 4)
    with pytest.raises(ValueError, match=r"wlra: `weights` must have a positive entry"):
        jaxfact.wlra(X, 0 * W, 1)
    with pytest.raises(ValueError, match=r"wlra: `warm_start` factors must have shapes \(4, k\), "
                                         r"\(k,\), \(k, 3\); got \(3, 1\)"):
        jaxfact.wlra(X, W, 1, warm_start=(np.ones((3, 1)), np.ones(1), np.ones((1, 3))))
    with pytest.raises(TypeError, match=r"wlra: `warm_start` must be an \(n1, n2\) array or a "
                                        r"\(U, S, Vt\)"):
        jaxfact.wlra(X, W, 1, warm_start=5)
    with pytest.raises(ValueError, match=r"wlra: `X` must be finite where `weights` > 0"):
        jaxfact.wlra(np.full((4, 3), np.nan, np.float32), W, 1)
    with pytest.raises(ValueError, match=r"wlra: `weights` must be finite; got 0 NaN and 1 Inf"):
        jaxfact.wlra(X, np.where(np.arange(12).reshape(4, 3) == 0, np.inf, 1.0), 1)
    with pytest.raises(TypeError, match=r"wlra: `X` must be floating point"):
        jaxfact.wlra(np.ones((4, 3), int), W, 1)
    with pytest.raises(ValueError, match=r"wlra: `lam` must be a finite number in \[0"):
        jaxfact.wlra(X, W, 1, lam=-1.0)


def test_wlra_status_and_residual_history(em_case, x64):
    L, X, W, Z_ref, objs, res = em_case
    n = int(res.n_iter)
    assert int(res.status) == jaxfact.Status.CONVERGED and res.status.dtype == jnp.int32
    Wn = W / W.max()
    resid = np.sqrt(np.sum(Wn * (X - dense(res)) ** 2) / np.sum(Wn * X * X))
    np.testing.assert_allclose(float(res.residual), resid, rtol=1e-8)
    np.testing.assert_allclose(float(res.residual_history[n - 1]), resid, rtol=1e-8)
    assert np.all(np.asarray(res.rank_history[:n]) == K)
    assert np.all(np.isnan(np.asarray(res.residual_history[n:])))


def test_wlra_init_is_deprecated(em_case, x64):
    L, X, W, Z_ref, objs, res = em_case
    with pytest.warns(DeprecationWarning, match=r"wlra: `init` is renamed `warm_start`"):
        old = jaxfact.wlra(X, W, K, max_iter=3000, tol=1e-12, init=res)
    new = jaxfact.wlra(X, W, K, max_iter=3000, tol=1e-12, warm_start=res)
    np.testing.assert_array_equal(np.asarray(old.S), np.asarray(new.S))
    with pytest.raises(TypeError, match=r"wlra: pass `warm_start` only"):
        jaxfact.wlra(X, W, K, init=res, warm_start=res)


def test_wlra_does_not_depend_on_the_key(em_case, x64):
    L, X, W, Z_ref, objs, res = em_case
    # The start is Z = 0 whatever the key; it only seeds the first step's subspace iteration.
    # The same optimum within the tolerance: EM converges linearly, and the relative-decrease
    # rule (1e-13) leaves ~1e-5 in Z (as against the NumPy EM above).
    def same(a, b):
        np.testing.assert_allclose(float(a.history[int(a.n_iter) - 1]),
                                   float(b.history[int(b.n_iter) - 1]), rtol=1e-9)
        np.testing.assert_allclose(dense(a), dense(b), atol=1e-4 * np.abs(dense(b)).max())

    same(jaxfact.wlra(X, W, K, max_iter=3000, tol=1e-13, key=jax.random.key(5)), res)
    # A warm start of rank below k is padded with directions drawn from the key.
    start = (res.U[:, :1], res.S[:1], res.Vt[:1])
    a, b = (jaxfact.wlra(X, W, K, max_iter=3000, tol=1e-13, warm_start=start,
                         key=jax.random.key(k)) for k in (1, 2))
    same(a, b)
    same(a, res)


def test_checks_true_stages_value_checks_under_jit():
    L, X, W, *_ = _data()
    X, W = X.astype(np.float32), W.astype(np.float32)
    f = checkify.checkify(jax.jit(lambda X, W: jaxfact.wlra(X, W, 2, max_iter=1, checks=True).S))
    Xnan = X.copy()
    Xnan[0, 0] = np.nan
    with pytest.raises(Exception, match=r"wlra: `X` must be finite where `weights` > 0"):
        f(Xnan, W)[0].throw()
    with pytest.raises(Exception, match=r"wlra: `weights` must be non-negative"):
        f(X, -W)[0].throw()
    assert f(X, W)[0].get() is None
    # NaN in X where the weight is 0 is a missing value, not an error.
    W0 = W.copy()
    W0[0, 0] = 0
    X0 = X.copy()
    X0[0, 0] = np.nan
    assert f(X0, W0)[0].get() is None


@given(st.integers(0, 2**31 - 1), st.floats(0.0, 1.0), st.booleans())
def test_wlra_invariants(seed, lam, mask):
    # One shape and rank (one compilation); weights positive or 0/1, lam from 0 (EM) up.
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((7, 5)).astype(np.float32)
    W = ((rng.random((7, 5)) < 0.6) if mask else rng.uniform(0.1, 3.0, (7, 5))).astype(np.float32)
    W[0, 0] = 1.0
    res = jaxfact.wlra(X, W, 2, lam=lam, max_iter=200, tol=1e-6)
    n = int(res.n_iter)
    h = np.asarray(res.history)
    assert bool(res.converged) == (int(res.status) == jaxfact.Status.CONVERGED)
    assert n == int(np.sum(~np.isnan(h)))
    assert np.all(np.diff(h[:n]) <= 1e-5 * h[0])
