"""Tests for biased MF (jaxfact.explicit_feedback).

References are NumPy loops over users/items of the same closed-form updates, so the vectorized
kernels are checked entry by entry.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.experimental import checkify

from conftest import small_ratings, tol
from jaxfact import (BiasedMFResult, Status, biased_mf, mae, predict, predict_ratings, rmse,
                     train_test_split)
from jaxfact.explicit_feedback import _biased_als

M, N, K = 30, 20, 3


def _small(seed=0, density=0.4):
    return small_ratings(M, N, seed, density)


def _init(dtype, seed=1):
    rng = np.random.default_rng(seed)
    return BiasedMFResult(mu=0.0, user_bias=rng.normal(0, 0.1, M).astype(dtype),
                          item_bias=rng.normal(0, 0.1, N).astype(dtype),
                          user_factors=rng.normal(0, 0.1, (M, K)).astype(dtype),
                          item_factors=rng.normal(0, 0.1, (N, K)).astype(dtype),
                          n_iter=0, converged=False, history=None, status=0)


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


def _objective_np(res, r, c, v, lam):
    """J of eq. (5) in float64 NumPy from the returned factors (no normalization)."""
    f = {k: np.asarray(getattr(res, k), np.float64) for k in
         ("mu", "user_bias", "item_bias", "user_factors", "item_factors")}
    P, Q = f["user_factors"], f["item_factors"]
    e = v - (f["mu"] + f["user_bias"][r] + f["item_bias"][c] + np.sum(P[r] * Q[c], 1))
    pen = f["user_bias"][r] ** 2 + f["item_bias"][c] ** 2 + np.sum(P[r] ** 2 + Q[c] ** 2, 1)
    return float(np.sum(e**2 + lam * pen))


def test_als_one_step_matches_numpy(dtype):
    r, c, v = _small()
    v = v.astype(dtype)
    init = _init(dtype)
    lam = 0.1
    res = biased_mf(r, c, v, (M, N), K, lam=lam, max_iter=1, tol=0.0, warm_start=init)
    v64 = v.astype(np.float64)
    mu = v64.mean()
    bu, P = _ridge_half(r, c, M, v64, mu, np.asarray(init.item_bias, float),
                        np.asarray(init.item_factors, float), lam)
    bi, Q = _ridge_half(c, r, N, v64, mu, bu, P, lam)
    # Well-conditioned (k+1)-dim ridge systems with O(1) entries: errors of a few ulps times k.
    atol = tol(dtype, 10)
    np.testing.assert_allclose(res.user_bias, bu, atol=atol)
    np.testing.assert_allclose(res.user_factors, P, atol=atol)
    np.testing.assert_allclose(res.item_bias, bi, atol=atol)
    np.testing.assert_allclose(res.item_factors, Q, atol=atol)
    assert res.user_factors.dtype == dtype and int(res.n_iter) == 1
    assert int(res.status) == Status.MAX_ITER and not bool(res.converged)
    # The same start given as a tuple of factors.
    again = biased_mf(r, c, v, (M, N), K, lam=lam, max_iter=1, tol=0.0,
                      warm_start=tuple(init[1:5]))
    np.testing.assert_array_equal(again.user_factors, res.user_factors)


def test_als_objective_never_increases_and_stops_on_tol():
    r, c, v = _small(seed=2)
    res = biased_mf(r, c, v.astype(np.float32), (M, N), K, lam=0.05, max_iter=40, tol=0.0,
                    key=jax.random.key(0))
    h = np.asarray(res.history)
    assert np.all(np.isfinite(h)) and int(res.n_iter) == 40 and not bool(res.converged)
    assert int(res.status) == Status.MAX_ITER
    # Each half-step is an exact minimization, so J is monotone up to float32 rounding of J.
    assert np.all(np.diff(h) <= 4 * np.finfo(np.float32).eps * h[:-1])
    res2 = biased_mf(r, c, v.astype(np.float32), (M, N), K, lam=0.05, max_iter=40, tol=1e-3,
                     key=jax.random.key(0))
    n = int(res2.n_iter)
    assert bool(res2.converged) and n < 40 and int(res2.status) == Status.CONVERGED
    assert np.all(np.isnan(np.asarray(res2.history)[n:]))


def test_als_cg_exact_with_enough_steps_and_monotone(x64):
    r, c, v = _small(seed=12)
    init = _init(np.float64)
    lam = 0.1
    exact = biased_mf(r, c, v, (M, N), K, lam=lam, max_iter=1, tol=0.0, warm_start=init)
    # CG on a (K+1)-dim SPD system is exact after K+1 steps (twice that for rounding slack).
    cg = biased_mf(r, c, v, (M, N), K, lam=lam, max_iter=1, tol=0.0, warm_start=init,
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
                    warm_start=init, sgd_blocks=1)
    # sgd_blocks=1 visits ratings in the order jax.random.permutation(fold_in(key, epoch), nnz).
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), r.size))
    mu = float(np.mean(v.astype(np.float64)))
    bu, bi = np.array(init.user_bias, float), np.array(init.item_bias, float)
    P, Q = np.array(init.user_factors, float), np.array(init.item_factors, float)
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
    np.testing.assert_allclose(res.user_factors, P, atol=atol)
    np.testing.assert_allclose(res.item_factors, Q, atol=atol)
    assert int(res.status) == Status.MAX_ITER


def test_sgd_stratified_epochs_match_sequential_numpy():
    """sgd_blocks > 1: two epochs equal Surprise's loop run over the ratings in the documented
    DSGD order (strata one after another; in a stratum, step t takes the t-th rating of every
    block, cyclically from its shift), and the blocks of a stratum share no user and no item."""
    from jaxfact.explicit_feedback import dsgd_schedule
    r, c, v = _small(seed=4)
    v = v.astype(np.float32)
    init = _init(np.float32)
    key = jax.random.key(9)
    lr, lam, b = 0.01, 0.02, 3
    res = biased_mf(r, c, v, (M, N), K, lam=lam, lr=lr, solver="sgd", max_iter=2, key=key,
                    warm_start=init, sgd_blocks=b)
    # With a warm start, biased_mf draws nothing else from `key`: it is the schedule's key.
    order, start, count, strata_all, shift_all = (np.asarray(a) for a in dsgd_schedule(
        key, r, c, (M, N), b, 2))
    assert np.array_equal(np.sort(order), np.arange(r.size)) and count.sum() == r.size
    mu = float(np.mean(v.astype(np.float64)))
    bu, bi = np.array(init.user_bias, float), np.array(init.item_bias, float)
    P, Q = np.array(init.user_factors, float), np.array(init.item_factors, float)
    for epoch in range(2):
        strata, shift = strata_all[epoch], shift_all[epoch]
        assert sorted(strata) == list(range(b))
        for o in strata:
            blocks = [order[start[o, g]:start[o, g] + count[o, g]] for g in range(b)]
            users = [set(r[j]) for j in blocks]
            items = [set(c[j]) for j in blocks]
            for g in range(b):
                for h in range(g):
                    assert not users[g] & users[h] and not items[g] & items[h]
            for t in range(count[o].max()):
                for g in range(b):
                    if t >= count[o, g]:
                        continue
                    j = blocks[g][(t + shift[o, g]) % count[o, g]]
                    u, i = r[j], c[j]
                    e = v[j] - (mu + bu[u] + bi[i] + P[u] @ Q[i])
                    bu[u] += lr * (e - lam * bu[u])
                    bi[i] += lr * (e - lam * bi[i])
                    P[u], Q[i] = (P[u] + lr * (e * Q[i] - lam * P[u]),
                                  Q[i] + lr * (e * P[u] - lam * Q[i]))
    # float32 arithmetic over ~480 sequential updates of O(1) values.
    atol = tol(np.float32, 10)
    np.testing.assert_allclose(res.user_bias, bu, atol=atol)
    np.testing.assert_allclose(res.item_bias, bi, atol=atol)
    np.testing.assert_allclose(res.user_factors, P, atol=atol)
    np.testing.assert_allclose(res.item_factors, Q, atol=atol)
    # The history's last entry is J of the returned factors.
    np.testing.assert_allclose(float(res.history[1]) * r.size, _objective_np(res, r, c, v, lam),
                               rtol=1e-5)


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
    err = float(rmse(predict(res, test.rows, test.cols), test.values))
    base = float(rmse(jnp.full(test.values.shape, jnp.mean(train.values)), test.values))
    # Held-out error near the noise floor (the signal has std ~1.4): within 50% of sigma.
    assert err < 1.5 * noise, (err, base)
    assert float(mae(predict(res, test.rows, test.cols), test.values)) < err


def test_predict_clip_and_matches_formula():
    r, c, v = _small(seed=6)
    res = biased_mf(r, c, v.astype(np.float32), (M, N), K, max_iter=3, key=jax.random.key(0))
    p = predict(res, r, c)
    ref = (res.mu + res.user_bias[r] + res.item_bias[c]
           + np.sum(res.user_factors[r] * res.item_factors[c], 1))
    np.testing.assert_allclose(p, ref, rtol=tol(np.float32))
    pc = predict(res, r, c, clip=(2.5, 3.5))
    assert float(pc.min()) >= 2.5 and float(pc.max()) <= 3.5
    # Works under jit (the indices are tracers there).
    np.testing.assert_allclose(jax.jit(predict)(res, r, c), p, rtol=tol(np.float32))


def test_deprecated_names_warn_and_agree():
    r, c, v = _small(seed=6)
    v = v.astype(np.float32)
    init = _init(np.float32)
    new = biased_mf(r, c, v, (M, N), K, max_iter=2, warm_start=init)
    with pytest.warns(DeprecationWarning, match=r"biased_mf: `init` is renamed `warm_start`"):
        old = biased_mf(r, c, v, (M, N), K, max_iter=2, init=init)
    np.testing.assert_array_equal(old.user_factors, new.user_factors)
    with pytest.raises(TypeError, match=r"biased_mf: give `warm_start` only"):
        biased_mf(r, c, v, (M, N), K, max_iter=2, init=init, warm_start=init)
    with pytest.warns(DeprecationWarning, match=r"BiasedMFResult: `P` is renamed `user_factors`"):
        np.testing.assert_array_equal(new.P, new.user_factors)
    with pytest.warns(DeprecationWarning, match=r"BiasedMFResult: `Q` is renamed `item_factors`"):
        np.testing.assert_array_equal(new.Q, new.item_factors)
    with pytest.warns(DeprecationWarning, match=r"predict_ratings is renamed `jaxfact.predict`"):
        p = predict_ratings(new, r, c, clip=(1, 5))
    np.testing.assert_array_equal(p, predict(new, r, c, clip=(1, 5)))


def test_errors():
    r, c, v = _small(seed=11)
    v = v.astype(np.float32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"biased_mf: `rows` must be in \[0, 29\]; got values in"):
        biased_mf(np.r_[r[:-1], 30], c, v, (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `rows`, `cols` and `values` must have the"):
        biased_mf(r[:-1], c, v, (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `values` must be finite; got 1 NaN"):
        biased_mf(r, c, np.r_[v[:-1], np.nan].astype(np.float32), (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: duplicate observed entry"):
        biased_mf(np.r_[r, r[0]], np.r_[c, c[0]], np.r_[v, v[0]], (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `rank` must be an integer in \[1, 20\]"):
        biased_mf(r, c, v, (M, N), 0, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `rank` must be an integer in \[1, 20\]"):
        biased_mf(r, c, v, (M, N), N + 1, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `solver` must be one of 'als', 'sgd'"):
        biased_mf(r, c, v, (M, N), K, solver="adam", key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `lam` must be a finite number in \(0"):
        biased_mf(r, c, v, (M, N), K, lam=0.0, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `cg_steps` must be an integer in \[1, inf\]"):
        biased_mf(r, c, v, (M, N), K, cg_steps=0, key=key)
    with pytest.raises(ValueError, match=r"biased_mf: `key` is required"):
        biased_mf(r, c, v, (M, N), K)
    with pytest.raises(ValueError, match=r"biased_mf: `key` is required"):
        biased_mf(r, c, v, (M, N), K, solver="sgd", warm_start=_init(np.float32))
    with pytest.raises(ValueError,
                       match=r"biased_mf: `warm_start.user_factors` must have the shape"):
        biased_mf(r, c, v, (M, N), K + 1, warm_start=_init(np.float32))
    with pytest.raises(TypeError, match=r"biased_mf: `warm_start` must be a BiasedMFResult"):
        biased_mf(r, c, v, (M, N), K, warm_start=5)
    with pytest.raises(ValueError, match=r"predict: `cols` must be in \[0, 3\]"):
        predict(_init(np.float32)._replace(item_factors=np.zeros((4, K), np.float32)), r, c)
    with pytest.raises(ValueError, match=r"predict: `clip` must be a pair"):
        predict(_init(np.float32), r, c, clip=(5, 1))
    with pytest.raises(TypeError, match="biased_mf: `biased` must be True or False; got 1"):
        biased_mf(r, c, v, (M, N), K, key=key, biased=1)
    with pytest.raises(ValueError,
                       match=r"biased_mf: `sgd_blocks` must be an integer in \[1, 20\]"):
        biased_mf(r, c, v, (M, N), K, key=key, solver="sgd", sgd_blocks=0)


def test_checks_true_stages_value_checks_under_jit():
    r, c, v = _small(seed=13)
    v = v.astype(np.float32)
    f = checkify.checkify(jax.jit(lambda r, c, v: biased_mf(
        r, c, v, (M, N), K, max_iter=2, key=jax.random.key(0), checks=True).user_factors))
    bad = v.copy()
    bad[3] = np.nan
    with pytest.raises(Exception, match=r"biased_mf: `values` must be finite"):
        f(r, c, bad)[0].throw()
    with pytest.raises(Exception, match=r"biased_mf: `cols` must be in \[0, 19\]; got values in "
                                        r"\[0, 25\]"):
        f(r, np.r_[c[:-1], 25].astype(np.int32), v)[0].throw()
    err, out = f(r, c, v)
    assert err.get() is None and out.shape == (M, K)


def test_under_jit():
    r, c, v = _small(seed=6)  # the data of test_predict_clip_and_matches_formula: one compilation
    v = jnp.asarray(v, jnp.float32)
    key = jax.random.key(0)
    eager = biased_mf(r, c, v, (M, N), K, max_iter=3, key=key)
    jitted = jax.jit(lambda v: biased_mf(r, c, v, (M, N), K, max_iter=3, key=key))(v)
    np.testing.assert_allclose(jitted.user_factors, eager.user_factors, atol=tol(np.float32, 10))


def test_unbiased_mf_matches_numpy():
    """biased=False: mu, b_u, b_i stay 0; ALS solves (P^T P + lam n_s I) q = P^T r per item and SGD
    runs Surprise's SVD(biased=False) loop."""
    r, c, v = _small(seed=6)
    v64 = v.astype(np.float64)
    init = _init(np.float64)
    lam = 0.1
    with jax.enable_x64(True):
        als = biased_mf(r, c, v64, (M, N), K, lam=lam, max_iter=1, tol=0.0, warm_start=init,
                        biased=False)
        P = np.zeros((M, K))
        Q0 = np.asarray(init.item_factors, float)
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
        np.testing.assert_allclose(als.user_factors, P, atol=tol(np.float64, 10))
        np.testing.assert_allclose(als.item_factors, Q, atol=tol(np.float64, 10))

        key, lr = jax.random.key(3), 0.01
        sgd = biased_mf(r, c, v64, (M, N), K, lam=0.02, lr=lr, solver="sgd", max_iter=1,
                        key=key, warm_start=init, biased=False, sgd_blocks=1)
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), r.size))
        P, Q = np.array(init.user_factors, float), np.array(init.item_factors, float)
        for j in order:
            u, i = r[j], c[j]
            e = v64[j] - P[u] @ Q[i]
            P[u], Q[i] = P[u] + lr * (e * Q[i] - 0.02 * P[u]), Q[i] + lr * (e * P[u] - 0.02 * Q[i])
        assert float(sgd.mu) == 0 and not np.any(sgd.user_bias) and not np.any(sgd.item_bias)
        np.testing.assert_allclose(sgd.user_factors, P, atol=tol(np.float64, 10))
        np.testing.assert_allclose(sgd.item_factors, Q, atol=tol(np.float64, 10))


# ------------------------------------------------------------------------------------------------
# Invariants (hypothesis): one shape, so that every example reuses one compiled kernel per solver


NNZ = 200


def _drawn(seed):
    rng = np.random.default_rng(seed)
    cells = rng.permutation(M * N)[:NNZ]
    r, c = (cells // N).astype(np.int32), (cells % N).astype(np.int32)
    return r, c, rng.normal(3.0, 1.0, NNZ) * rng.uniform(0.2, 2.0)


@given(seed=st.integers(0, 2**16), lam=st.floats(0.01, 1.0), cg=st.sampled_from([None, 2]),
       tol_=st.sampled_from([0.0, 1e-6]))
def test_als_invariants(seed, lam, cg, tol_):
    """ALS (exact or CG) never increases J; the last history entry times nnz is J recomputed in
    NumPy from the returned factors; converged == (status == CONVERGED)."""
    r, c, v = _drawn(seed)
    with jax.enable_x64(True):
        res = biased_mf(r, c, v, (M, N), K, lam=lam, max_iter=8, tol=tol_, cg_steps=cg,
                        key=jax.random.key(seed))
        n = int(res.n_iter)
        h = np.asarray(res.history)
        assert 1 <= n <= 8 and np.all(np.isfinite(h[:n])) and np.all(np.isnan(h[n:]))
        assert np.all(np.diff(h[:n]) <= 1e-12 * h[:n - 1])
        np.testing.assert_allclose(h[n - 1] * NNZ, _objective_np(res, r, c, v, lam), rtol=1e-10)
        assert bool(res.converged) == (int(res.status) == Status.CONVERGED)
        assert int(res.status) in (Status.CONVERGED, Status.MAX_ITER)
        assert (int(res.status) == Status.MAX_ITER) == (n == 8 and not bool(res.converged))
