"""Tests for jaxfact.completion: SVT and SoftImpute against dense NumPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.experimental import checkify

import jaxfact
from conftest import dense
from jaxfact import _completion

N1, N2, R = 40, 30, 2


def _problem(seed=0, frac=0.5, noise=0.0, n1=N1, n2=N2, r=R):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n1, r)) @ rng.standard_normal((r, n2))
    m = int(frac * n1 * n2)
    flat = np.sort(rng.choice(n1 * n2, m, replace=False))
    rows, cols = (flat // n2).astype(np.int32), (flat % n2).astype(np.int32)
    vals = M[rows, cols] + noise * rng.standard_normal(m)
    return rows, cols, vals, M


def svt_dense(rows, cols, vals, shape, tau, delta, tol, max_iter):
    """SVT (Cai, Candès & Shen 2010, section 5.1.1) with full NumPy SVDs and a dense Y."""
    P = np.zeros(shape)
    P[rows, cols] = vals
    k0 = math.ceil(tau / (delta * np.linalg.norm(P, 2)))
    Y = k0 * delta * P
    hist = []
    for _ in range(max_iter):
        U, s, Vt = np.linalg.svd(Y, full_matrices=False)
        X = (U * np.maximum(s - tau, 0)) @ Vt
        res = np.linalg.norm(X[rows, cols] - vals) / np.linalg.norm(vals)
        hist.append(res)
        if res <= tol:
            break
        Y[rows, cols] += delta * (vals - X[rows, cols])
    return X, np.array(hist)


def soft_impute_dense(rows, cols, vals, shape, lam, iters):
    """SoftImpute (Mazumder et al. 2010, Algorithm 1) with full SVDs; returns Z, its objective."""
    X = np.zeros(shape)
    X[rows, cols] = vals
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    Z = np.zeros(shape)
    for _ in range(iters):
        U, s, Vt = np.linalg.svd(np.where(mask, X, Z), full_matrices=False)
        s = np.maximum(s - lam, 0)
        Z = (U * s) @ Vt
    return Z, 0.5 * np.sum((Z[rows, cols] - vals) ** 2) + lam * np.sum(s)


# ------------------------------------------------------------------------------------------------
# SVT

@pytest.fixture(scope="module")
def svt_case():
    with jax.enable_x64(True):
        rows, cols, vals, M = _problem(frac=0.7)
        tau, delta = 5 * math.sqrt(N1 * N2), 1.2 * N1 * N2 / len(vals)
        X_ref, hist_ref = svt_dense(rows, cols, vals, (N1, N2), tau, delta, 1e-4, 500)
        res = jaxfact.svt(rows, cols, jnp.asarray(vals), (N1, N2))
        jax.block_until_ready(res)
    return rows, cols, vals, M, X_ref, hist_ref, res


def test_svt_matches_dense_reference_iterates(svt_case):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    n = int(res.n_iter)
    # Same iterates: the same number of steps and the same residual at every step, up to the
    # accuracy of one warm-started subspace pass per step (about 1e-6 relative here).
    assert n == len(hist_ref)
    np.testing.assert_allclose(np.asarray(res.residual_history[:n]), hist_ref, rtol=1e-5)
    assert np.all(np.isnan(np.asarray(res.residual_history[n:])))
    assert np.all(np.isnan(np.asarray(res.history[n:])))
    assert np.all(np.asarray(res.rank_history[n:]) == -1)
    np.testing.assert_allclose(dense(res), X_ref, atol=1e-6 * np.abs(X_ref).max())
    assert bool(res.converged) and float(res.residual) <= 1e-4


def test_svt_status_and_objective_history(svt_case, x64):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    n = int(res.n_iter)
    assert int(res.status) == jaxfact.Status.CONVERGED and res.status.dtype == jnp.int32
    # history: SVT's objective tau ||X||_* + 1/2 ||X||_F^2 (S is X's singular values).
    tau = 5 * math.sqrt(N1 * N2)
    S = np.asarray(res.S)
    np.testing.assert_allclose(float(res.history[n - 1]), tau * S.sum() + 0.5 * (S**2).sum(),
                               rtol=1e-10)
    assert np.all(np.isfinite(np.asarray(res.history[:n])))
    assert float(res.residual) == float(res.residual_history[n - 1])


def test_svt_status_diverged(x64):
    rows, cols, vals, M = _problem(frac=0.7)
    # Steps far beyond the paper's 0 < delta < 2 (delta = 5 / p): the residual blows up.
    res = jaxfact.svt(rows, cols, jnp.asarray(vals), (N1, N2), delta=5 * N1 * N2 / len(vals))
    assert int(res.status) == jaxfact.Status.DIVERGED and not bool(res.converged)
    assert float(res.residual) > 1e5 and int(res.n_iter) < 50


def test_svt_status_buffer_full_under_jit(svt_case, x64):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    # A buffer of 6 holds rank 1 beside the 5 values below tau: rank 2 fills it. Under jit it
    # cannot grow: the solve stops with the last iterate that fitted.
    f = jax.jit(lambda v: jaxfact.svt(rows, cols, v, (N1, N2), buffer_size=6))
    out = f(jnp.asarray(vals))
    n = int(out.n_iter)
    assert int(out.status) == jaxfact.Status.BUFFER_FULL and not bool(out.converged)
    assert 0 < n < int(res.n_iter) and out.U.shape == (N1, 6)
    assert int(jnp.sum(out.S > 0)) <= 1
    np.testing.assert_allclose(np.asarray(out.residual_history[:n]), hist_ref[:n], rtol=1e-5)
    assert float(out.residual) == float(out.residual_history[n - 1])


def test_svt_does_not_depend_on_the_key(svt_case, x64):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    other = jaxfact.svt(rows, cols, jnp.asarray(vals), (N1, N2), key=jax.random.key(7),
                        buffer_size=4)
    assert int(other.n_iter) == int(res.n_iter)
    np.testing.assert_allclose(dense(other), dense(res), atol=1e-6 * np.abs(X_ref).max())


def test_svt_more_power_iterations_converge_to_exact_iterates(svt_case, x64):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    # The deviation above is the partial SVD's: it shrinks geometrically with n_power.
    exact = jaxfact.svt(rows, cols, jnp.asarray(vals), (N1, N2), n_power=4)
    assert int(exact.n_iter) == len(hist_ref)
    np.testing.assert_allclose(np.asarray(exact.residual_history[:len(hist_ref)]), hist_ref,
                               rtol=1e-9)


def test_svt_recovers_low_rank(svt_case, x64):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    assert res.S.shape == (R,)                    # trimmed to the recovered rank
    assert np.linalg.norm(dense(res) - M) / np.linalg.norm(M) < 1e-3
    np.testing.assert_allclose(np.asarray(res.U.T @ res.U), np.eye(R), atol=1e-10)
    ranks = np.asarray(res.rank_history[:int(res.n_iter)])
    assert ranks[-1] == R


def test_svt_buffer_doubling_gives_same_iterates(svt_case, x64):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    # A buffer of 4 cannot hold rank 2 plus the 5 values below tau: it doubles to 8.
    small = jaxfact.svt(rows, cols, jnp.asarray(vals), (N1, N2), buffer_size=4)
    assert int(small.n_iter) == int(res.n_iter)
    np.testing.assert_allclose(dense(small), dense(res), atol=1e-6 * np.abs(X_ref).max())


def test_svt_float32(svt_case):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    res32 = jaxfact.svt(rows, cols, jnp.asarray(vals, jnp.float32), (N1, N2))
    assert res32.U.dtype == jnp.float32
    # float32 rounding (1e-7) perturbs the iterates slightly: the count may move by a step.
    assert abs(int(res32.n_iter) - len(hist_ref)) <= 2
    assert np.linalg.norm(dense(res32) - M) / np.linalg.norm(M) < 1e-3


def test_svt_tol_is_traced(svt_case, x64):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    n_compiled = _completion.svt_solve._cache_size()
    loose = jaxfact.svt(rows, cols, jnp.asarray(vals), (N1, N2), tol=1e-2)
    assert _completion.svt_solve._cache_size() == n_compiled   # a new tol does not recompile
    n = int(loose.n_iter)
    assert bool(loose.converged) and n < int(res.n_iter)
    assert hist_ref[n - 1] <= 1e-2 < hist_ref[n - 2]


def test_svt_under_jit(svt_case, x64):
    rows, cols, vals, M, X_ref, hist_ref, res = svt_case
    out = jax.jit(lambda v: jaxfact.svt(rows, cols, v, (N1, N2)))(jnp.asarray(vals))
    assert out.U.shape == (N1, 16)                             # untrimmed buffer under jit
    assert bool(out.converged) and int(out.n_iter) == int(res.n_iter)
    np.testing.assert_allclose(dense(out), dense(res), atol=1e-8 * np.abs(dense(res)).max())


def test_svt_rectangular_wide(x64):
    rows, cols, vals, M = _problem(seed=3, n1=20, n2=45, frac=0.6)
    tau, delta = 5 * math.sqrt(20 * 45), 1.2 * 20 * 45 / len(vals)
    X_ref, hist_ref = svt_dense(rows, cols, vals, (20, 45), tau, delta, 1e-4, 500)
    res = jaxfact.svt(rows, cols, jnp.asarray(vals), (20, 45))
    assert int(res.n_iter) == len(hist_ref)
    np.testing.assert_allclose(dense(res), X_ref, atol=1e-6 * np.abs(X_ref).max())


# ------------------------------------------------------------------------------------------------
# SoftImpute

LAM = 2.0


@pytest.fixture(scope="module")
def si_case():
    with jax.enable_x64(True):
        rows, cols, vals, M = _problem(seed=1, noise=0.1)
        Z_ref, obj_ref = soft_impute_dense(rows, cols, vals, (N1, N2), LAM, 3000)
        res = jaxfact.soft_impute(rows, cols, jnp.asarray(vals), (N1, N2), lam=LAM, rank=8,
                                  tol=1e-16, max_iter=3000)
        jax.block_until_ready(res)
    return rows, cols, vals, M, Z_ref, obj_ref, res


def _objective(res, rows, cols, vals, lam):
    x = np.asarray(jaxfact.predict(res, rows, cols), np.float64)
    return 0.5 * np.sum((x - vals) ** 2) + lam * np.sum(np.asarray(res.S, np.float64))


def test_soft_impute_matches_dense_objective(si_case, x64):
    rows, cols, vals, M, Z_ref, obj_ref, res = si_case
    # A convex problem: the same optimal objective and (strictly convex here) the same Z. The
    # relative-change rule (tol=1e-16 on ||dZ||^2 / ||Z||^2) stops within ~1e-9 of the optimum.
    obj = _objective(res, rows, cols, vals, LAM)
    np.testing.assert_allclose(obj, obj_ref, rtol=1e-8)
    np.testing.assert_allclose(dense(res), Z_ref, atol=1e-5 * np.abs(Z_ref).max())
    n = int(res.n_iter)
    np.testing.assert_allclose(float(res.history[n - 1]), obj, rtol=1e-12)
    assert int(np.sum(np.asarray(res.S) > 0)) == np.linalg.matrix_rank(Z_ref, tol=1e-8)


def test_soft_impute_objective_never_increases(si_case):
    *_, res = si_case
    h = np.asarray(res.history[:int(res.n_iter)])
    assert np.all(np.diff(h) <= 1e-12 * h[0])
    assert h[-1] < h[0]


def test_soft_impute_path_recovers_low_rank(dtype):
    rows, cols, vals, M = _problem(seed=2, frac=0.6)
    lams = jnp.geomspace(10.0, 0.01, 7).astype(dtype)
    path = jaxfact.soft_impute_path(rows, cols, jnp.asarray(vals, dtype), (N1, N2), lams=lams,
                                    rank=8, tol=1e-10, max_iter=3000)
    last = jax.tree.map(lambda a: a[-1], path)
    assert last.U.dtype == dtype
    # Noiseless rank 2, 60% observed: along the path the solution keeps rank 2 and approaches M;
    # at lam = 0.01 the shrinkage bias is about lam / sigma_min(M) ~ 1e-3.
    assert int(jnp.sum(last.S > 0)) == R
    assert np.linalg.norm(dense(last) - M) / np.linalg.norm(M) < 2e-3
    h = np.asarray(last.history[:int(last.n_iter)])
    assert np.all(np.diff(h) <= 10 * np.finfo(dtype).eps * h[0])


def test_soft_impute_path_warm_starts(si_case, x64):
    rows, cols, vals, M, Z_ref, obj_ref, res = si_case
    lams = jnp.array([20.0, 8.0, LAM])
    path = jaxfact.soft_impute_path(rows, cols, jnp.asarray(vals), (N1, N2), lams=lams,
                                    rank=8, tol=1e-16, max_iter=3000)
    assert path.U.shape == (3, N1, 8) and path.n_iter.shape == (3,)
    last = jax.tree.map(lambda a: a[-1], path)
    np.testing.assert_allclose(_objective(last, rows, cols, vals, LAM), obj_ref, rtol=1e-8)
    first = jax.tree.map(lambda a: a[0], path)
    _, ref = soft_impute_dense(rows, cols, vals, (N1, N2), 20.0, 300)
    np.testing.assert_allclose(_objective(first, rows, cols, vals, 20.0), ref, rtol=1e-8)
    # Larger lam, lower rank; the batched predict keeps the leading axis.
    ranks = np.sum(np.asarray(path.S) > 0, axis=1)
    assert np.all(np.diff(ranks) >= 0)
    assert jaxfact.predict(path, rows[:5], cols[:5]).shape == (3, 5)


def test_soft_impute_warm_start_and_tol_traced(si_case, x64):
    rows, cols, vals, M, Z_ref, obj_ref, res = si_case
    n_compiled = _completion.soft_impute._cache_size()
    again = jaxfact.soft_impute(rows, cols, jnp.asarray(vals), (N1, N2), lam=LAM, rank=8,
                                tol=1e-12, max_iter=3000, warm_start=res)
    # From the solution, the first steps barely move it (tol 1e-12: ||dZ|| / ||Z|| < 1e-6).
    assert int(again.n_iter) <= 3
    assert np.linalg.norm(dense(again) - dense(res)) <= 1e-6 * np.linalg.norm(dense(res))
    # A warm start of lower rank is padded with zero components.
    short = jaxfact.soft_impute(rows, cols, jnp.asarray(vals), (N1, N2), lam=LAM, rank=8,
                                tol=1e-16, max_iter=3000, warm_start=(res.U[:, :2], res.S[:2],
                                                                      res.Vt[:2]))
    np.testing.assert_allclose(_objective(short, rows, cols, vals, LAM), obj_ref, rtol=1e-8)
    jaxfact.soft_impute(rows, cols, jnp.asarray(vals), (N1, N2), lam=LAM + 1, rank=8,
                        tol=1e-6, max_iter=3000, warm_start=res)
    assert _completion.soft_impute._cache_size() == n_compiled + 1  # new `fresh`, not new lam/tol


def test_soft_impute_does_not_depend_on_the_key(si_case, x64):
    rows, cols, vals, M, Z_ref, obj_ref, res = si_case
    # A convex problem with the rank cap above the solution's rank: a cold start from another
    # key, and a warm start of low rank padded with directions from a key, reach the same Z.
    kw = dict(lam=LAM, rank=8, tol=1e-16, max_iter=3000)
    other = jaxfact.soft_impute(rows, cols, jnp.asarray(vals), (N1, N2), key=jax.random.key(3),
                                **kw)
    np.testing.assert_allclose(dense(other), dense(res), atol=1e-6 * np.abs(Z_ref).max())
    start = (res.U[:, :1], res.S[:1], res.Vt[:1])
    a, b = (jaxfact.soft_impute(rows, cols, jnp.asarray(vals), (N1, N2), warm_start=start,
                                key=jax.random.key(k), **kw) for k in (1, 2))
    np.testing.assert_allclose(dense(a), dense(b), atol=1e-6 * np.abs(Z_ref).max())
    np.testing.assert_allclose(dense(a), dense(res), atol=1e-6 * np.abs(Z_ref).max())


def test_soft_impute_status_and_residual_history(si_case, x64):
    rows, cols, vals, M, Z_ref, obj_ref, res = si_case
    n = int(res.n_iter)
    assert int(res.status) == jaxfact.Status.CONVERGED and bool(res.converged)
    x = np.asarray(jaxfact.predict(res, rows, cols))
    resid = np.linalg.norm(x - vals) / np.linalg.norm(vals)
    np.testing.assert_allclose(float(res.residual), resid, rtol=1e-8)
    np.testing.assert_allclose(float(res.residual_history[n - 1]), resid, rtol=1e-8)
    assert np.all(np.isnan(np.asarray(res.residual_history[n:])))
    few = jaxfact.soft_impute(rows, cols, jnp.asarray(vals), (N1, N2), lam=LAM, rank=8,
                              tol=1e-16, max_iter=3)
    assert int(few.status) == jaxfact.Status.MAX_ITER and int(few.n_iter) == 3
    assert not bool(few.converged)


def test_soft_impute_max_rank_is_deprecated():
    rows, cols, vals, M = _problem(seed=1, noise=0.1)
    v = jnp.asarray(vals, jnp.float32)
    kw = dict(lam=LAM, tol=1e-7, max_iter=500)   # as in test_soft_impute_jit_and_vmap: no compile
    with pytest.warns(DeprecationWarning, match=r"soft_impute: `max_rank` is renamed `rank`"):
        old = jaxfact.soft_impute(rows, cols, v, (N1, N2), max_rank=8, **kw)
    new = jaxfact.soft_impute(rows, cols, v, (N1, N2), rank=8, **kw)
    np.testing.assert_array_equal(np.asarray(old.S), np.asarray(new.S))
    with pytest.warns(DeprecationWarning, match=r"soft_impute_path: `max_rank` is renamed"):
        with pytest.raises(ValueError, match=r"soft_impute_path: `lams` must hold at least one"):
            jaxfact.soft_impute_path(rows, cols, v, (N1, N2), lams=jnp.zeros(0), max_rank=8)
    with pytest.raises(TypeError, match=r"soft_impute: pass `rank` only"):
        jaxfact.soft_impute(rows, cols, v, (N1, N2), lam=LAM, rank=4, max_rank=4)
    with pytest.raises(TypeError, match=r"soft_impute: missing the keyword argument `rank`"):
        jaxfact.soft_impute(rows, cols, v, (N1, N2), lam=LAM)


def test_checks_true_stages_value_checks_under_jit():
    rows, cols, vals, M = _problem(seed=1, noise=0.1)
    good = jnp.asarray(vals, jnp.float32)
    bad = good.at[3].set(jnp.nan)
    f = checkify.checkify(jax.jit(lambda r, c, v: jaxfact.svt(r, c, v, (N1, N2), max_iter=1,
                                                             checks=True).S))
    with pytest.raises(Exception, match=r"svt: `values` must be finite"):
        f(rows, cols, bad)[0].throw()
    assert f(rows, cols, good)[0].get() is None
    g = checkify.checkify(jax.jit(lambda r, c, v, lams: jaxfact.soft_impute_path(
        r, c, v, (N1, N2), lams=lams, rank=3, max_iter=1, checks=True).S))
    lams = jnp.array([2.0, 1.0])
    with pytest.raises(Exception, match=r"soft_impute_path: `values` must be finite"):
        g(rows, cols, bad, lams)[0].throw()
    with pytest.raises(Exception, match=rf"soft_impute_path: `rows` must be in \[0, {N1 - 1}\]"):
        g(rows + 1, cols, good, lams)[0].throw()
    with pytest.raises(Exception, match=r"soft_impute_path: `lams` must be non-negative"):
        g(rows, cols, good, -lams)[0].throw()
    assert g(rows, cols, good, lams)[0].get() is None


_SHAPES = [(8, 6), (5, 9)]


@given(st.integers(0, 1), st.integers(0, 2**31 - 1), st.floats(0.05, 0.6))
def test_soft_impute_invariants(shape_index, seed, lam_frac):
    # Small problems (two shapes, a fixed number of observed entries each: few compilations).
    with jax.enable_x64(True):
        n1, n2 = _SHAPES[shape_index]
        rng = np.random.default_rng(seed)
        cells = np.sort(rng.permutation(n1 * n2)[:n1 * n2 // 2])
        rows, cols = cells // n2, cells % n2
        vals = (rng.standard_normal((n1, 2)) @ rng.standard_normal((2, n2)))[rows, cols]
        vals = vals + 0.1 * rng.standard_normal(len(cells))
        P = np.zeros((n1, n2))
        P[rows, cols] = vals
        lam = lam_frac * np.linalg.norm(P, 2)
        res = jaxfact.soft_impute(rows, cols, jnp.asarray(vals), (n1, n2), lam=lam,
                                  rank=min(n1, n2), tol=1e-20, max_iter=3000)
        n = int(res.n_iter)
        h = np.asarray(res.history)
        assert bool(res.converged) == (int(res.status) == jaxfact.Status.CONVERGED)
        assert n == int(np.sum(~np.isnan(h)))
        assert np.all(np.diff(h[:n]) <= 1e-12 * h[0])
        # Optimality of 1/2 ||P(X - Z)||^2 + lam ||Z||_*: the residual R = P(X - Z) is lam times
        # a subgradient of the nuclear norm at Z, so ||R||_2 <= lam, with equality if Z != 0.
        R = np.zeros((n1, n2))
        R[rows, cols] = vals - np.asarray(jaxfact.predict(res, rows, cols))
        norm_R = np.linalg.norm(R, 2)
        # (A relative change below 1e-20 leaves ~1e-7 of slack in these small problems.)
        assert bool(res.converged)
        assert norm_R <= lam * (1 + 1e-6)
        if float(res.S[0]) > 0:
            assert norm_R >= lam * (1 - 1e-6)


def test_soft_impute_jit_and_vmap():
    rows, cols, vals, M = _problem(seed=1, noise=0.1)
    batch = jnp.stack([jnp.asarray(vals, jnp.float32), 2 * jnp.asarray(vals, jnp.float32)])
    f = lambda v: jaxfact.soft_impute(rows, cols, v, (N1, N2), lam=LAM, rank=8, tol=1e-7,
                                      max_iter=500)
    out = jax.jit(jax.vmap(f))(batch)
    assert out.U.shape == (2, N1, 8)
    one = f(batch[1])
    np.testing.assert_allclose(dense(jax.tree.map(lambda a: a[1], out)), dense(one),
                               atol=1e-4 * np.abs(dense(one)).max())


def test_predict_matches_dense(si_case, x64):
    rows, cols, vals, M, Z_ref, obj_ref, res = si_case
    r = np.array([0, 5, 39, 39])
    c = np.array([0, 29, 0, 7])
    np.testing.assert_allclose(np.asarray(jaxfact.predict(res, r, c)), dense(res)[r, c],
                               rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Errors


def test_errors_observed_entries():
    r, c, v = np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([1.0, 2.0, 3.0], np.float32)
    with pytest.raises(ValueError, match=r"svt: `rows` must be in \[0, 2\]; got values in "
                                         r"\[0, 3\]"):
        jaxfact.svt(np.array([0, 1, 3]), c, v, (3, 3))
    with pytest.raises(ValueError, match=r"svt: `cols` must be in \[0, 2\]; got values in "
                                         r"\[-1, 2\]"):
        jaxfact.svt(r, np.array([0, -1, 2]), v, (3, 3))
    with pytest.raises(ValueError, match=r"svt: `rows`, `cols` and `values` must have the same"):
        jaxfact.svt(r[:2], c, v, (3, 3))
    with pytest.raises(ValueError, match=r"svt: duplicate observed entry \(row 1, col 1\)"):
        jaxfact.svt(np.array([0, 1, 1]), np.array([0, 1, 1]), v, (3, 3))
    with pytest.raises(ValueError, match=r"svt: `values` must be finite; got 1 NaN"):
        jaxfact.svt(r, c, np.array([1.0, np.nan, 3.0], np.float32), (3, 3))
    with pytest.raises(ValueError, match=r"soft_impute: no observed entries"):
        jaxfact.soft_impute(r[:0], c[:0], v[:0], (3, 3), lam=1.0, rank=2)
    with pytest.raises(TypeError, match=r"svt: `rows` must hold integer indices"):
        jaxfact.svt(r.astype(float), c, v, (3, 3))
    with pytest.raises(ValueError, match=r"svt: `tau` must be a finite number in \(0"):
        jaxfact.svt(r, c, v, (3, 3), tau=-1.0)


def test_errors_options():
    r, c, v = np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([1.0, 2.0, 3.0], np.float32)
    with pytest.raises(ValueError, match=r"soft_impute: `rank` must be an integer in \[1, 3\]"):
        jaxfact.soft_impute(r, c, v, (3, 3), lam=1.0, rank=4)
    with pytest.raises(ValueError, match=r"soft_impute: `lam` must be a finite number in \[0"):
        jaxfact.soft_impute(r, c, v, (3, 3), lam=-1.0, rank=2)
    with pytest.raises(ValueError, match=r"soft_impute_path: `lams` must be non-negative"):
        jaxfact.soft_impute_path(r, c, v, (3, 3), lams=jnp.array([1.0, -1.0]), rank=2)
    with pytest.raises(ValueError, match=r"soft_impute: `warm_start` factors must have shapes"):
        jaxfact.soft_impute(r, c, v, (3, 3), lam=1.0, rank=2,
                            warm_start=(jnp.zeros((4, 1)), jnp.zeros(1), jnp.zeros((1, 3))))
    with pytest.raises(ValueError, match=r"predict: `rows` must be in \[0, 2\]"):
        jaxfact.predict((jnp.zeros((3, 1)), jnp.zeros(1), jnp.zeros((1, 3))), [3], [0])
    with pytest.raises(ValueError, match=r"svt: `max_iter` must be an integer in \[1, inf\]"):
        jaxfact.svt(r, c, v, (3, 3), max_iter=0)
