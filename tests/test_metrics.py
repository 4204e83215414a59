"""Tests for jaxfact.metrics: error and top-k ranking metrics against NumPy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from jaxfact import mae, ndcg_at_k, precision_at_k, rmse


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


def test_rmse_and_mae():
    p, t = np.array([1.0, 2.0, 4.0], np.float32), np.array([1.0, 3.0, 2.0], np.float32)
    np.testing.assert_allclose(rmse(p, t), np.sqrt(5 / 3), rtol=1e-6)
    np.testing.assert_allclose(mae(p, t), 1.0, rtol=1e-6)


def test_errors():
    v = np.ones(5, np.float32)
    r, c = np.arange(5, dtype=np.int32), np.arange(5, dtype=np.int32)
    with pytest.raises(ValueError, match=r"rmse: `predictions` and `targets` must have the same"):
        rmse(v, v[:-1])
    with pytest.raises(ValueError, match=r"mae: `targets` must be finite; got 1 NaN"):
        mae(v, np.r_[v[:-1], np.nan].astype(np.float32))
    with pytest.raises(ValueError, match=r"precision_at_k: `k` must be an integer in \[1, 20\]"):
        precision_at_k(np.ones((30, 2)), np.ones((20, 2)), (r, c), k=21)
    with pytest.raises(ValueError, match=r"ndcg_at_k: `test.cols` must be in \[0, 3\]; got values"):
        ndcg_at_k(np.ones((30, 2)), np.ones((4, 2)), (r, c), k=2)
    with pytest.raises(ValueError, match=r"precision_at_k: `exclude.rows` must be in \[0, 2\]"):
        precision_at_k(np.ones((3, 2)), np.ones((20, 2)), (r[:3], c[:3]), exclude=(r, c), k=2)


def test_checks_true_stages_value_checks_under_jit():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 2)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    r, c = np.array([0, 1, 5], np.int32), np.array([1, 2, 4], np.int32)
    f = checkify.checkify(jax.jit(lambda X, r: ndcg_at_k(X, Y, (r, c), k=2, checks=True)))
    assert f(X, r)[0].get() is None
    bad = X.copy()
    bad[2, 0] = np.nan
    with pytest.raises(Exception, match=r"ndcg_at_k: `user_factors` must be finite"):
        f(bad, r)[0].throw()
    with pytest.raises(Exception, match=r"ndcg_at_k: `test.rows` must be in \[0, 5\]; got values "
                                        r"in \[0, 9\]"):
        f(X, np.array([0, 1, 9], np.int32))[0].throw()
    g = checkify.checkify(jax.jit(lambda p: rmse(p, jnp.zeros(3), checks=True)))
    with pytest.raises(Exception, match=r"rmse: `predictions` must be finite"):
        g(jnp.array([0.0, jnp.inf, 1.0]))[0].throw()
