"""Tests for biased MF (jaxfact.ratings), implicit ALS (jaxfact.implicit) and jaxfact.evaluation.

References are NumPy loops over users/items of the same closed-form updates, so the vectorized
kernels are checked entry by entry.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tol
from jaxfact import (BiasedMFResult, biased_mf, implicit_als, implicit_loss, mae, ndcg_at_k,
                     precision_at_k, predict_ratings, rmse, synthetic_ratings, train_test_split)
from jaxfact.ratings import _biased_als

M, N, K = 30, 20, 3


def _small(seed=0, density=0.4):
    rng = np.random.default_rng(seed)
    r, c = np.nonzero(rng.random((M, N)) < density)
    v = rng.normal(3.0, 1.0, r.size)
    return r.astype(np.int32), c.astype(np.int32), v


def _init(dtype, seed=1):
    rng = np.random.default_rng(seed)
    return BiasedMFResult(0.0, rng.normal(0, 0.1, M).astype(dtype),
                          rng.normal(0, 0.1, N).astype(dtype),
                          rng.normal(0, 0.1, (M, K)).astype(dtype),
                          rng.normal(0, 0.1, (N, K)).astype(dtype), 0, False, None)


def _ridge_half(seg, other, n_seg, values, mu, other_bias, other_F, lam):
    """NumPy: for every segment s, solve (X^T X + lam n_s I) w = X^T y, X = [1, F_other]."""
    k = other_F.shape[1]
    b, F = np.zeros(n_seg), np.zeros((n_seg, k))
    for s in range(n_seg):
        j = seg == s
        if not j.any():
            continue
        X = np.c_[np.ones(j.sum()), other_F[other[j]]]
        y = values[j] - mu - other_bias[other[j]]
        w = np.linalg.solve(X.T @ X + lam * j.sum() * np.eye(k + 1), X.T @ y)
        b[s], F[s] = w[0], w[1:]
    return b, F


def test_als_one_step_matches_numpy(dtype):
    r, c, v = _small()
    v = v.astype(dtype)
    init = _init(dtype)
    lam = 0.1
    res = biased_mf(r, c, v, (M, N), K, lam=lam, max_iter=1, tol=0.0, init=init)
    v64 = v.astype(np.float64)
    mu = v64.mean()
    bu, P = _ridge_half(r, c, M, v64, mu, np.asarray(init.item_bias, float),
                        np.asarray(init.Q, float), lam)
    bi, Q = _ridge_half(c, r, N, v64, mu, bu, P, lam)
    # Well-conditioned (k+1)-dim ridge systems with O(1) entries: errors of a few ulps times k.
    atol = tol(dtype, 10)
    np.testing.assert_allclose(res.user_bias, bu, atol=atol)
    np.testing.assert_allclose(res.P, P, atol=atol)
    np.testing.assert_allclose(res.item_bias, bi, atol=atol)
    np.testing.assert_allclose(res.Q, Q, atol=atol)
    assert res.P.dtype == dtype and int(res.n_iter) == 1


def test_als_objective_never_increases_and_stops_on_tol():
    r, c, v = _small(seed=2)
    res = biased_mf(r, c, v.astype(np.float32), (M, N), K, lam=0.05, max_iter=40, tol=0.0,
                    key=jax.random.key(0))
    h = np.asarray(res.history)
    assert np.all(np.isfinite(h)) and int(res.n_iter) == 40 and not bool(res.converged)
    # Each half-step is an exact minimization, so J is monotone up to float32 rounding of J.
    assert np.all(np.diff(h) <= 4 * np.finfo(np.float32).eps * h[:-1])
    res2 = biased_mf(r, c, v.astype(np.float32), (M, N), K, lam=0.05, max_iter=40, tol=1e-3,
                     key=jax.random.key(0))
    n = int(res2.n_iter)
    assert bool(res2.converged) and n < 40
    assert np.all(np.isnan(np.asarray(res2.history)[n:]))


def test_als_cg_exact_with_enough_steps_and_monotone(x64):
    r, c, v = _small(seed=12)
    init = _init(np.float64)
    lam = 0.1
    exact = biased_mf(r, c, v, (M, N), K, lam=lam, max_iter=1, tol=0.0, init=init)
    # CG on a (K+1)-dim SPD system is exact after K+1 steps (twice that for rounding slack).
    cg = biased_mf(r, c, v, (M, N), K, lam=lam, max_iter=1, tol=0.0, init=init,
                   cg_steps=2 * (K + 1))
    for a, b in zip(exact[1:5], cg[1:5]):
        np.testing.assert_allclose(a, b, atol=1e-10)
    # Two steps per half-iteration: inexact, but every half-step still lowers J.
    few = biased_mf(r, c, v, (M, N), K, lam=lam, max_iter=20, tol=0.0, key=jax.random.key(0),
                    cg_steps=2)
    h = np.asarray(few.history)
    assert np.all(np.diff(h) <= 1e-12 * h[:-1])


def test_tol_and_lam_are_traced():
    r, c, v = _small(seed=3)
    v = v.astype(np.float32)
    biased_mf(r, c, v, (M, N), K, lam=0.05, max_iter=5, tol=1e-3, key=jax.random.key(0))
    before = _biased_als._cache_size()
    biased_mf(r, c, v, (M, N), K, lam=0.07, max_iter=5, tol=1e-5, key=jax.random.key(1))
    assert _biased_als._cache_size() == before


def test_sgd_epoch_matches_sequential_numpy():
    r, c, v = _small(seed=4)
    v = v.astype(np.float32)
    init = _init(np.float32)
    key = jax.random.key(7)
    lr, lam = 0.01, 0.02
    res = biased_mf(r, c, v, (M, N), K, lam=lam, lr=lr, solver="sgd", max_iter=1, key=key,
                    init=init)
    # The kernel visits ratings in the order jax.random.permutation(fold_in(key, epoch), nnz).
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), r.size))
    mu = float(np.mean(v.astype(np.float64)))
    bu, bi = np.array(init.user_bias, float), np.array(init.item_bias, float)
    P, Q = np.array(init.P, float), np.array(init.Q, float)
    for j in order:  # Surprise's SVD.sgd inner loop
        u, i = r[j], c[j]
        e = v[j] - (mu + bu[u] + bi[i] + P[u] @ Q[i])
        bu[u] += lr * (e - lam * bu[u])
        bi[i] += lr * (e - lam * bi[i])
        P[u], Q[i] = P[u] + lr * (e * Q[i] - lam * P[u]), Q[i] + lr * (e * P[u] - lam * Q[i])
    # float32 arithmetic over ~240 sequential updates of O(1) values.
    atol = tol(np.float32, 10)
    np.testing.assert_allclose(res.user_bias, bu, atol=atol)
    np.testing.assert_allclose(res.item_bias, bi, atol=atol)
    np.testing.assert_allclose(res.P, P, atol=atol)
    np.testing.assert_allclose(res.Q, Q, atol=atol)


@pytest.fixture(scope="module")
def planted():
    """A rank-3 model with biases, 35% observed, noise 0.1, split 80/20."""
    rng = np.random.default_rng(5)
    m, n, k = 120, 90, 3
    r, c = np.nonzero(rng.random((m, n)) < 0.35)
    P, Q = rng.normal(0, 0.7, (m, k)), rng.normal(0, 0.7, (n, k))
    bu, bi = rng.normal(0, 0.5, m), rng.normal(0, 0.5, n)
    noise = 0.1
    v = 3.0 + bu[r] + bi[c] + np.sum(P[r] * Q[c], 1) + rng.normal(0, noise, r.size)
    train, test = train_test_split(r.astype(np.int32), c.astype(np.int32), v.astype(np.float32),
                                   test_fraction=0.2, key=jax.random.key(0))
    return (m, n), train, test, noise


@pytest.mark.parametrize("solver,kwargs", [("sgd", dict(lr=0.02, max_iter=150)),
                                           ("als", dict(max_iter=30))])
def test_planted_model_rmse_recovered(planted, solver, kwargs):
    shape, train, test, noise = planted
    res = biased_mf(*train, shape, 3, lam=0.02, solver=solver, key=jax.random.key(1), **kwargs)
    err = float(rmse(predict_ratings(res, test.rows, test.cols), test.values))
    base = float(rmse(jnp.full(test.values.shape, jnp.mean(train.values)), test.values))
    # Held-out error near the noise floor (the signal has std ~1.4): within 50% of sigma.
    assert err < 1.5 * noise, (err, base)
    assert float(mae(predict_ratings(res, test.rows, test.cols), test.values)) < err


def test_predict_clip_and_matches_formula():
    r, c, v = _small(seed=6)
    res = biased_mf(r, c, v.astype(np.float32), (M, N), K, max_iter=3, key=jax.random.key(0))
    p = predict_ratings(res, r, c)
    ref = (res.mu + res.user_bias[r] + res.item_bias[c] + np.sum(res.P[r] * res.Q[c], 1))
    np.testing.assert_allclose(p, ref, rtol=tol(np.float32))
    pc = predict_ratings(res, r, c, clip=(2.5, 3.5))
    assert float(pc.min()) >= 2.5 and float(pc.max()) <= 3.5
    # Works under jit (the indices are tracers there).
    np.testing.assert_allclose(jax.jit(predict_ratings)(res, r, c), p, rtol=tol(np.float32))


def _hu_update(F_other, C, Pref, lam):
    """Hu et al. (2008) eq. 4 for every row, densely: (Y^T C^u Y + lam I)^-1 Y^T C^u p(u)."""
    k = F_other.shape[1]
    return np.stack([np.linalg.solve(F_other.T @ (C[u][:, None] * F_other) + lam * np.eye(k),
                                      F_other.T @ (C[u] * Pref[u])) for u in range(C.shape[0])])


def test_implicit_als_matches_dense_hu_update(x64):
    rng = np.random.default_rng(8)
    m, n, k = 25, 18, 4
    r, c = np.nonzero(rng.random((m, n)) < 0.3)
    counts = rng.integers(1, 6, r.size).astype(np.float64)
    alpha, lam = 2.0, 0.1
    key = jax.random.key(0)
    # With cg_steps >= k, CG on a k x k SPD system is exact.
    res = implicit_als(r, c, counts, (m, n), k, alpha=alpha, lam=lam, max_iter=2, key=key,
                       cg_steps=2 * k, init_std=0.1)
    Y0 = np.asarray(0.1 * jax.random.normal(jax.random.split(key)[1], (n, k), jnp.float64))
    R = np.zeros((m, n))
    R[r, c] = counts
    C, Pref = 1 + alpha * R, (R > 0).astype(float)
    X = _hu_update(Y0, C, Pref, lam)
    Y = _hu_update(X, C.T, Pref.T, lam)
    X = _hu_update(Y, C, Pref, lam)
    Y = _hu_update(X, C.T, Pref.T, lam)
    np.testing.assert_allclose(res.user_factors, X, atol=1e-10)
    np.testing.assert_allclose(res.item_factors, Y, atol=1e-10)
    L = (C * (Pref - X @ Y.T) ** 2).sum() + lam * ((X**2).sum() + (Y**2).sum())
    np.testing.assert_allclose(res.history[-1], L / (m * n), rtol=1e-12)
    np.testing.assert_allclose(implicit_loss(X, Y, r, c, counts, alpha=alpha, lam=lam),
                               L / (m * n), rtol=1e-12)
    # Three CG steps (the default) descend the same loss and get close to the exact fit.
    res3 = implicit_als(r, c, counts, (m, n), k, alpha=alpha, lam=lam, max_iter=15, key=key,
                        init_std=0.1)
    h = np.asarray(res3.history)
    assert np.all(np.diff(h) <= 1e-12) and h[-1] < h[0]


def test_precision_and_ndcg_match_numpy_loop():
    rng = np.random.default_rng(9)
    m, n, d, k = 13, 30, 4, 5
    X, Y = rng.normal(size=(m, d)), rng.normal(size=(n, d))
    tr_r, tr_c = np.nonzero(rng.random((m, n)) < 0.2)
    te = rng.random((m, n)) < 0.15
    te[tr_r, tr_c] = False
    te[3] = False  # a user without held-out items does not count
    te_r, te_c = np.nonzero(te)
    prec = precision_at_k(X, Y, (te_r, te_c), k=k, exclude=(tr_r, tr_c), batch_size=4)
    nd = ndcg_at_k(X, Y, (te_r, te_c), k=k, exclude=(tr_r, tr_c), batch_size=4)
    S = X @ Y.T
    S[tr_r, tr_c] = -np.inf
    ps, ns = [], []
    for u in range(m):
        rel = set(te_c[te_r == u])
        if not rel:
            continue
        top = np.argsort(-S[u], kind="stable")[:k]
        hits = np.array([t in rel for t in top], float)
        ps.append(hits.sum() / k)
        disc = 1 / np.log2(np.arange(k) + 2)
        ns.append(hits @ disc / disc[:min(k, len(rel))].sum())
    np.testing.assert_allclose(prec, np.mean(ps), rtol=1e-6)
    np.testing.assert_allclose(nd, np.mean(ns), rtol=1e-6)


def test_train_test_split_partitions():
    r, c, v = _small(seed=10)
    train, test = train_test_split(r, c, v.astype(np.float32), test_fraction=0.25,
                                   key=jax.random.key(0))
    assert test.rows.shape[0] == round(0.25 * r.size)
    both = sorted(zip(np.r_[train.rows, test.rows].tolist(), np.r_[train.cols, test.cols].tolist()))
    assert both == sorted(zip(r.tolist(), c.tolist()))


def test_synthetic_ratings_shape_and_scale():
    d = synthetic_ratings(n_users=200, n_items=100, n_ratings=3000, rank=5, seed=0)
    assert d.rows.shape == (3000,) and d.values.dtype == np.float32
    assert len(set(zip(d.rows.tolist(), d.cols.tolist()))) == 3000
    assert set(np.unique(d.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_errors():
    r, c, v = _small(seed=11)
    v = v.astype(np.float32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"biased_mf: `rows` must be < 30"):
        biased_mf(np.r_[r[:-1], 30], c, v, (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `rows`, `cols` and `values` must have the"):
        biased_mf(r[:-1], c, v, (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `values` must be finite; got 1 NaN"):
        biased_mf(r, c, np.r_[v[:-1], np.nan].astype(np.float32), (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: duplicate observed entry"):
        biased_mf(np.r_[r, r[0]], np.r_[c, c[0]], np.r_[v, v[0]], (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `rank` must be an integer in \[1, inf\]"):
        biased_mf(r, c, v, (M, N), 0, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `solver` must be one of 'als', 'sgd'"):
        biased_mf(r, c, v, (M, N), K, solver="adam", key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `lam` must be a finite number in \(0"):
        biased_mf(r, c, v, (M, N), K, lam=0.0, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `cg_steps` must be an integer in \[1, inf\]"):
        biased_mf(r, c, v, (M, N), K, cg_steps=0, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `key` is required"):
        biased_mf(r, c, v, (M, N), K)
    with pytest.raises(ValueError, match=r"biased_mf: `init.P` must have the shape"):
        biased_mf(r, c, v, (M, N), K + 1, init=_init(np.float32))
    with pytest.raises(ValueError, match=r"implicit_als: `counts` must be non-negative"):
        implicit_als(r, c, -np.abs(v), (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"implicit_als: `rank` must be an integer in \[1, inf\]"):
        implicit_als(r, c, np.abs(v), (M, N), 0, key=key)
    with pytest.raises(ValueError, match=r"implicit_als: `cols` must be < 20"):
        implicit_als(r, np.r_[c[:-1], 20], np.abs(v), (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"predict_ratings: `cols` must be in \[0, 4\)"):
        predict_ratings(_init(np.float32)._replace(Q=np.zeros((4, K), np.float32)), r, c)
    with pytest.raises(ValueError, match=r"predict_ratings: `clip` must be a pair"):
        predict_ratings(_init(np.float32), r, c, clip=(5, 1))
    with pytest.raises(ValueError, match=r"rmse: `predictions` and `targets` must have the same"):
        rmse(v, v[:-1])
    with pytest.raises(ValueError, match=r"train_test_split: `test_fraction` must be a finite"):
        train_test_split(r, c, v, test_fraction=1.0, key=key)
    with pytest.raises(ValueError, match=r"precision_at_k: `k` must be an integer in \[1, 20\]"):
        precision_at_k(np.ones((M, 2)), np.ones((N, 2)), (r, c), k=21)


def test_under_jit_and_vmap():
    r, c, v = _small(seed=13)
    v = jnp.asarray(v, jnp.float32)
    key = jax.random.key(0)
    eager = biased_mf(r, c, v, (M, N), K, max_iter=3, key=key)
    jitted = jax.jit(lambda v: biased_mf(r, c, v, (M, N), K, max_iter=3, key=key))(v)
    np.testing.assert_allclose(jitted.P, eager.P, atol=tol(np.float32, 10))
    keys = jax.random.split(key, 2)
    hist = jax.vmap(lambda k: implicit_als(r, c, jnp.abs(v), (M, N), K, key=k, max_iter=3).history)(
        keys)
    one = implicit_als(r, c, jnp.abs(v), (M, N), K, key=keys[1], max_iter=3).history
    np.testing.assert_allclose(hist[1], one, rtol=tol(np.float32, 10))


def test_unbiased_mf_matches_numpy():
    """biased=False: mu, b_u, b_i stay 0; ALS solves (P^T P + lam n_s I) q = P^T r per item and SGD
    runs Surprise's SVD(biased=False) loop."""
    r, c, v = _small(seed=6)
    v64 = v.astype(np.float64)
    init = _init(np.float64)
    lam = 0.1
    with jax.enable_x64(True):
        als = biased_mf(r, c, v64, (M, N), K, lam=lam, max_iter=1, tol=0.0, init=init,
                        biased=False)
        P = np.zeros((M, K))
        Q0 = np.asarray(init.Q, float)
        for s in range(M):
            j = r == s
            X = Q0[c[j]]
            P[s] = np.linalg.solve(X.T @ X + lam * j.sum() * np.eye(K), X.T @ v64[j])
        Q = np.zeros((N, K))
        for s in range(N):
            j = c == s
            X = P[r[j]]
            Q[s] = np.linalg.solve(X.T @ X + lam * j.sum() * np.eye(K), X.T @ v64[j])
        assert float(als.mu) == 0 and not np.any(als.user_bias) and not np.any(als.item_bias)
        np.testing.assert_allclose(als.P, P, atol=tol(np.float64, 10))
        np.testing.assert_allclose(als.Q, Q, atol=tol(np.float64, 10))

        key, lr = jax.random.key(3), 0.01
        sgd = biased_mf(r, c, v64, (M, N), K, lam=0.02, lr=lr, solver="sgd", max_iter=1,
                        key=key, init=init, biased=False)
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), r.size))
        P, Q = np.array(init.P, float), np.array(init.Q, float)
        for j in order:
            u, i = r[j], c[j]
            e = v64[j] - P[u] @ Q[i]
            P[u], Q[i] = P[u] + lr * (e * Q[i] - 0.02 * P[u]), Q[i] + lr * (e * P[u] - 0.02 * Q[i])
        assert float(sgd.mu) == 0 and not np.any(sgd.user_bias) and not np.any(sgd.item_bias)
        np.testing.assert_allclose(sgd.P, P, atol=tol(np.float64, 10))
        np.testing.assert_allclose(sgd.Q, Q, atol=tol(np.float64, 10))
    with pytest.raises(TypeError, match="biased_mf: `biased` must be True or False; got 1"):
        biased_mf(r, c, v, (M, N), K, key=key, biased=1)
