"""Tests for jaxfact.nonnegative (nmf, nmf_init, nmf_transform): scikit-learn references,
invariants, masks, sparse input, jit/vmap, errors.

Most tests share one 30 x 20 problem of rank 4 (plus noise, half its entries zero) so that the
kernels compile once per solver. Float64 tests compare trajectories with scikit-learn's updates
to ~1e-10; float32 tests check what float32 can resolve.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given
from hypothesis import strategies as st
from jax.experimental import sparse as jsparse

from jaxfact import NMFResult, Status, nmf, nmf_init, nmf_transform
from jaxfact import _nmf_steps as S

sklearn_nmf = pytest.importorskip("sklearn.decomposition._nmf")
from sklearn.decomposition import NMF  # noqa: E402

M_, N_, K_ = 30, 20, 4


def _problem(seed=0, zeros=0.5):
    rng = np.random.default_rng(seed)
    X = rng.random((M_, K_)) @ rng.random((K_, N_)) + 0.05 * rng.random((M_, N_))
    X[rng.random(X.shape) < zeros] = 0
    return X


@pytest.fixture(scope="module")
def X64():
    return _problem()


@pytest.fixture(scope="module")
def init64(X64):
    with jax.enable_x64(True):
        W0, H0 = nmf_init(X64, K_, init="nndsvda")
        return np.asarray(W0), np.asarray(H0)


def _sk(X, W0, H0, **kw):
    return NMF(K_, init="custom", **kw).fit(X, W=W0.copy(), H=H0.copy())


def _objective(X, W, H):
    return 0.5 * np.sum((X - W @ H) ** 2)


# ------------------------------------------------------------------------------------------------
# Against scikit-learn


@pytest.mark.parametrize("beta_loss", ["frobenius", "kullback-leibler"])
def test_mu_follows_sklearn_updates(x64, X64, init64, beta_loss):
    # Same init, same Lee & Seung updates (W then H): identical trajectories up to rounding.
    W0, H0 = init64
    ref = _sk(X64, W0, H0, solver="mu", beta_loss=beta_loss, tol=0.0, max_iter=60)
    res = nmf(X64, K_, solver="mu", beta_loss=beta_loss, warm_start=(W0, H0), tol=0.0,
              max_iter=60)
    np.testing.assert_allclose(res.H, ref.components_, rtol=1e-9, atol=1e-12)
    beta = 2 if beta_loss == "frobenius" else 1
    ref_loss = sklearn_nmf._beta_divergence(X64, np.asarray(res.W), np.asarray(res.H), beta)
    np.testing.assert_allclose(res.loss, ref_loss, rtol=1e-9)


@pytest.mark.parametrize("solver", ["pg", "hals"])
def test_reaches_sklearn_cd_error(x64, X64, init64, solver):
    # From the same init, a converged run ends within 0.5% of scikit-learn cd's converged
    # objective (different stationary points may differ slightly; pg lands on the same one).
    W0, H0 = init64
    ref = _sk(X64, W0, H0, solver="cd", tol=1e-10, max_iter=5000)
    ref_loss = 0.5 * ref.reconstruction_err_**2
    res = nmf(X64, K_, solver=solver, warm_start=(W0, H0), tol=1e-7, max_iter=2000)
    assert bool(res.converged)
    assert float(res.loss) <= ref_loss * 1.005
    np.testing.assert_allclose(res.loss, _objective(X64, np.asarray(res.W), np.asarray(res.H)),
                               rtol=1e-10)


def test_regularized_objective_vs_sklearn(x64, X64, init64):
    # scikit-learn's penalty scaling: l1_W = alpha_W * l1_ratio * n_features, and so on.
    W0, H0 = init64
    kw = dict(alpha_W=0.01, alpha_H=0.02, l1_ratio=0.3)
    model = NMF(K_, init="custom", solver="cd", tol=1e-10, max_iter=5000, **kw)
    W_ref = model.fit_transform(X64, W=W0.copy(), H=H0.copy())
    res = nmf(X64, K_, solver="pg", warm_start=(W0, H0), tol=1e-7, max_iter=2000, **kw)
    m, n = X64.shape
    r = kw["l1_ratio"]

    def objective(W, H):
        return (_objective(X64, W, H)
                + kw["alpha_W"] * n * (r * W.sum() + 0.5 * (1 - r) * (W**2).sum())
                + kw["alpha_H"] * m * (r * H.sum() + 0.5 * (1 - r) * (H**2).sum()))

    ours = objective(np.asarray(res.W), np.asarray(res.H))
    np.testing.assert_allclose(res.loss, ours, rtol=1e-9)
    assert ours <= objective(W_ref, model.components_) * 1.005


@pytest.mark.parametrize("init", ["nndsvd", "nndsvda"])
def test_nndsvd_matches_sklearn(x64, X64, init):
    # scikit-learn uses a randomized SVD; on this small matrix it is accurate to ~1e-6.
    # Two documented differences: nndsvda fills NNDSVD's zeros with sqrt(mean(X) / k), not
    # mean(X), and both starts are scaled by the c minimizing ||X - c W H||_F.
    W, H = nmf_init(X64, K_, init=init)
    Ws, Hs = sklearn_nmf._initialize_nmf(X64, K_, init="nndsvd")
    if init == "nndsvda":
        fill = np.sqrt(X64.mean() / K_)
        Ws, Hs = np.where(Ws == 0, fill, Ws), np.where(Hs == 0, fill, Hs)
    WH = Ws @ Hs
    c = np.sum(X64 * WH) / np.sum(WH * WH)
    assert 0.5 < c < 1  # NNDSVD's W H overshoots X here
    np.testing.assert_allclose(W, np.sqrt(c) * Ws, atol=1e-3)
    np.testing.assert_allclose(H, np.sqrt(c) * Hs, atol=1e-3)
    if init == "nndsvd":
        assert np.mean(np.asarray(W) == 0) > 0.1  # sparse factors, as the paper intends


def test_transform_vs_sklearn(x64, X64, init64):
    W0, H0 = init64
    ref = _sk(X64, W0, H0, solver="cd", tol=1e-10, max_iter=3000)
    Wref = ref.transform(X64)
    for solver in ("pg", "hals", "mu"):
        W = nmf_transform(ref.components_, X64, solver=solver, tol=1e-9, max_iter=2000).W
        assert np.all(np.asarray(W) >= 0)
        f_ours = _objective(X64, np.asarray(W), ref.components_)
        f_ref = _objective(X64, Wref, ref.components_)
        assert f_ours <= f_ref * (1.01 if solver == "mu" else 1 + 1e-6)


# ------------------------------------------------------------------------------------------------
# Invariants


@pytest.mark.parametrize("beta_loss", ["frobenius", "kullback-leibler"])
@pytest.mark.parametrize("masked", [False, True])
def test_mu_monotone(x64, X64, init64, beta_loss, masked):
    W0, H0 = init64
    mask = np.random.default_rng(1).random(X64.shape) < 0.7 if masked else None
    res = nmf(X64, K_, solver="mu", beta_loss=beta_loss, warm_start=(W0, H0), tol=0.0,
              max_iter=60, mask=mask, alpha_W=0.001, alpha_H=0.001, l1_ratio=0.5)
    h = np.asarray(res.history)
    assert int(res.n_iter) == 60 and np.all(np.isfinite(h))
    assert np.all(np.diff(h) <= 1e-12 * h[0])
    assert h[-1] < 0.9 * h[0]  # and it does decrease


def test_mu_monotone_float32(X64):
    # Lee & Seung's theorem 1 in float32: no increase beyond rounding (~eps * objective).
    X = X64.astype(np.float32)
    res = nmf(X, K_, solver="mu", tol=0.0, max_iter=30)
    h = np.asarray(res.history)
    assert np.all(np.diff(h) <= 1e-5 * h[:-1])


@pytest.mark.parametrize("solver", ["pg", "hals"])
def test_kkt_at_convergence(x64, X64, init64, solver):
    # W >= 0, grad_W f >= 0, W * grad_W f = 0 (and the same for H), up to the tolerance.
    W0, H0 = init64
    res = nmf(X64, K_, solver=solver, warm_start=(W0, H0), tol=1e-9, max_iter=2000)
    assert bool(res.converged)
    W, H = np.asarray(res.W), np.asarray(res.H)
    gW = (W @ H - X64) @ H.T
    gH = W.T @ (W @ H - X64)
    scale = np.abs(X64 @ H.T).max()
    assert W.min() >= 0 and H.min() >= 0
    assert gW.min() >= -1e-6 * scale and gH.min() >= -1e-6 * scale
    assert np.abs(W * gW).max() <= 1e-6 * scale * W.max()
    assert np.abs(H * gH).max() <= 1e-6 * scale * H.max()


def test_pg_subproblem_solves_nnls(x64):
    # One Lin subproblem min_{H >= 0} 1/2 ||V - W H||^2 against SciPy's active-set NNLS
    # (delta=0: Lin's solve to the tolerance, without the stalled-progress stop).
    rng = np.random.default_rng(3)
    W = rng.random((25, 4))
    V = rng.random((25, 6))
    h = S.Half(jnp.asarray(W.T @ V), jnp.asarray(W.T @ W), None, None, 0.0, 0.0)
    Y, it = S.pg_subproblem(h, jnp.ones((4, 6)), 1e-12, delta=0.0)
    ref = np.stack([scipy.optimize.nnls(W, V[:, j])[0] for j in range(6)], 1)
    assert int(it) > 1
    np.testing.assert_allclose(Y, ref, atol=1e-8)
    # delta=0.1: the solve also ends once a step lowers the objective by less than 0.1 times
    # the first step did: fewer steps, a lower objective than the start's.
    Yd, itd = S.pg_subproblem(h, jnp.ones((4, 6)), 1e-12, delta=0.1)

    def f(Y):
        return 0.5 * np.sum((V - W @ np.asarray(Y)) ** 2)
    assert 2 < int(itd) < int(it)
    assert np.asarray(Yd).min() >= 0 and f(ref) <= f(Yd) < f(np.ones((4, 6)))


def test_hals_sweep_matches_numpy(x64):
    # One HALS sweep against a NumPy loop over the rows (Cichocki & Phan's update).
    rng = np.random.default_rng(4)
    O, A, Y = rng.random((4, 12)), rng.random((9, 12)), rng.random((4, 9))
    G, C = O @ O.T, O @ A.T
    h = S.Half(jnp.asarray(C), jnp.asarray(G), None, None, 0.1, 0.2)
    ours, _ = S.hals_sweep(h, jnp.asarray(Y))
    ref = Y.copy()
    for j in range(4):
        num = C[j] - G[j] @ ref + G[j, j] * ref[j] - 0.1
        ref[j] = np.maximum(num / (G[j, j] + 0.2), 0)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_zero_rows_and_columns_give_finite_factors(X64):
    X = X64.astype(np.float32).copy()
    X[3] = 0
    X[:, 5] = 0
    for solver in ("pg", "hals", "mu"):
        for init in ("nndsvd",):  # nndsvd keeps zeros: the case where 0/0 could appear
            res = nmf(X, K_, solver=solver, init=init, max_iter=30)
            assert np.all(np.isfinite(res.W)) and np.all(np.isfinite(res.H))
            assert np.isfinite(float(res.loss))
    res = nmf(X, K_, solver="mu", beta_loss="kullback-leibler", max_iter=30)
    assert np.all(np.isfinite(res.W)) and np.isfinite(float(res.loss))
    zero = nmf(np.zeros((M_, N_), np.float32), K_, solver="pg", max_iter=30)
    assert np.all(np.asarray(zero.W) == 0) and float(zero.loss) == 0


def test_history_contract(X64):
    # tol bounds the decrease still to come (relative): mu needs ~20 iterations for 5e-2 here.
    res = nmf(X64.astype(np.float32), K_, solver="mu", max_iter=30, tol=5e-2)
    n = int(res.n_iter)
    assert res.history.shape == (30,) and 0 < n < 30 and bool(res.converged)
    assert np.all(np.isfinite(res.history[:n])) and np.all(np.isnan(res.history[n:]))


# ------------------------------------------------------------------------------------------------
# Masks, sparse input


@pytest.mark.parametrize("solver", ["pg", "hals", "mu"])
def test_mask_predicts_held_out_entries(x64, solver):
    rng = np.random.default_rng(5)
    X = rng.random((M_, 3)) @ rng.random((3, N_))           # exactly rank 3
    mask = rng.random(X.shape) < 0.7
    X_seen = np.where(mask, X, 0.0)
    res = nmf(X_seen, 3, solver=solver, mask=mask, tol=1e-8, max_iter=2000, init="random",
              key=jax.random.key(0))
    pred = np.asarray(res.W) @ np.asarray(res.H)
    err = np.linalg.norm((pred - X)[~mask]) / np.linalg.norm(X[~mask])
    assert err < 0.05
    # Entries with weight 0 cannot influence the fit.
    X_noise = np.where(mask, X, 100 * rng.random(X.shape))
    res2 = nmf(X_noise, 3, solver=solver, mask=mask, tol=1e-8, max_iter=2000, init="random",
               key=jax.random.key(0))
    np.testing.assert_allclose(res2.W, res.W, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver,beta_loss,masked", [
    ("pg", "frobenius", False), ("hals", "frobenius", True), ("mu", "frobenius", False),
    ("mu", "kullback-leibler", False), ("mu", "kullback-leibler", True)])
def test_sparse_equals_dense(x64, X64, init64, solver, beta_loss, masked):
    W0, H0 = init64
    X = X64 + (solver == "hals") * 0.01  # no stored zeros: HALS repeats sweeps by nnz
    mask = np.random.default_rng(6).random(X.shape) < 0.8 if masked else None
    # max_iter as in the other float64 tests (it is static: the kernels are shared)
    tol, max_iter = (0.0, 60) if solver == "mu" else (1e-4, 2000)
    kw = dict(solver=solver, beta_loss=beta_loss, warm_start=(W0, H0), tol=tol,
              max_iter=max_iter, mask=mask)
    dense = nmf(X, K_, **kw)
    sparse = nmf(jsparse.BCOO.fromdense(jnp.asarray(X)), K_, **kw)
    np.testing.assert_allclose(sparse.W, dense.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sparse.H, dense.H, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sparse.loss, dense.loss, rtol=1e-9)
    assert int(sparse.n_iter) == int(dense.n_iter)


def test_sparse_init_and_scipy_input(x64, X64):
    import scipy.sparse as sp
    Xs = sp.csr_matrix(X64)
    W, H = nmf_init(Xs, K_, init="nndsvd", key=jax.random.key(0))
    Wd, Hd = nmf_init(X64, K_, init="nndsvd")  # exact SVD vs randomized: close on this matrix
    np.testing.assert_allclose(W, Wd, atol=1e-3)
    np.testing.assert_allclose(H, Hd, atol=1e-3)


def test_sparse_start_svd_stops_early_as_accurate():
    # The sparse start's randomized SVD stops its power iterations (at most 7, scikit-learn's
    # count) once the top-k subspace has converged, here after 1-3: it gives the exact SVD's
    # triplets to rounding, as the full 7 iterations do.
    import scipy.sparse as sp
    from jaxfact import _nmf_init, linop
    rng = np.random.default_rng(3)
    L = sp.random(300, 4, density=0.3, random_state=4) @ sp.random(4, 120, density=0.3,
                                                                   random_state=5)
    X = (L + 0.01 * sp.random(300, 120, density=0.05, random_state=6)).tocsr().astype(np.float32)
    X.data *= rng.uniform(0.8, 1.2, X.nnz).astype(np.float32)
    Xs, k, key = linop.as_operator(X), 4, jax.random.key(0)
    svd = jax.jit(_nmf_init._sparse_svd, static_argnums=(2, 3, 4))
    U, S, Vt = svd(Xs, key, k, 15, 7)
    # It stopped after 3 of the 7 iterations: a cap of 3 gives the same bits, a cap of 2 does not.
    same = lambda cap: all(np.array_equal(a, b) for a, b in zip(svd(Xs, key, k, 15, cap),
                                                                 (U, S, Vt)))
    assert same(3) and not same(2)
    Ue, Se, Vte = np.linalg.svd(X.toarray().astype(np.float64))
    np.testing.assert_allclose(S, Se[:k], rtol=1e-5)
    for A, B in ((U, Ue[:, :k]), (Vt.T, Vte[:k].T)):
        np.testing.assert_allclose(np.abs(np.asarray(A, np.float64).T @ B), np.eye(k), atol=1e-4)


def test_sparse_with_duplicates_and_long_rows(x64, monkeypatch):
    # Duplicate entries are summed; rows of very different lengths land in separate ELL blocks
    # (forced here: small matrices normally get a single block).
    from jaxfact import linop
    monkeypatch.setattr(linop, "_SMALL_NNZ", 0)
    monkeypatch.setattr(linop, "_MERGE_SLACK", 1.0)
    rng = np.random.default_rng(7)
    X = rng.random((M_, N_)) * (rng.random((M_, N_)) < 0.15)
    X[0] = rng.random(N_) + 0.1
    idx = np.argwhere(X > 0)
    vals = X[X > 0]
    dup = jsparse.BCOO((jnp.concatenate([vals / 2, vals / 2]),
                        jnp.concatenate([idx, idx])), shape=X.shape)
    W0, H0 = nmf_init(X, K_)
    kw = dict(solver="mu", beta_loss="kullback-leibler", max_iter=60, tol=0.0,
              warm_start=(W0, H0))
    layout = linop.SparseMatrix.from_bcoo(dup)
    assert len(layout.S.buckets) > 1 and len(layout.St.buckets) > 1
    a = nmf(X, K_, **kw)
    b = nmf(dup, K_, **kw)
    np.testing.assert_allclose(b.W, a.W, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Transformations: jit, vmap, no recompilation


def test_jit_and_vmap_over_a_batch(X64):
    # vmap runs the nested while loops with per-problem trip counts; each problem must get the
    # fit it gets alone (float32: same ops, batched, agree to rounding).
    Xs = np.stack([_problem(s) for s in range(2)]).astype(np.float32)
    fit = lambda X: nmf(X, K_, solver="hals", max_iter=30, tol=1e-3)  # noqa: E731
    batched = jax.jit(jax.vmap(fit))(jnp.asarray(Xs))
    for i in range(2):
        single = fit(Xs[i])
        assert int(batched.n_iter[i]) == int(single.n_iter)
        np.testing.assert_allclose(batched.loss[i], single.loss, rtol=1e-4)
        np.testing.assert_allclose(batched.W[i], single.W, rtol=1e-3, atol=1e-5)
    sparse_jit = jax.jit(lambda X: nmf(X, K_, solver="mu", max_iter=30,
                                       key=jax.random.key(0)).loss)(
        jsparse.BCOO.fromdense(jnp.asarray(Xs[0])))
    np.testing.assert_allclose(sparse_jit, nmf(Xs[0], K_, solver="mu", max_iter=30).loss,
                               rtol=1e-4)


def test_no_recompile_when_tol_changes(X64):
    from jaxfact import nonnegative as mod
    X = X64.astype(np.float32)
    nmf(X, K_, solver="pg", tol=1e-3, max_iter=30)
    before = mod._nmf_kernel._cache_size()
    nmf(X, K_, solver="pg", tol=1e-5, max_iter=30, alpha_W=0.1)
    assert mod._nmf_kernel._cache_size() == before


# ------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(rank=0), ValueError, r"nmf: `rank` must be an integer in \[1, 20\]; got 0"),
    (dict(rank=21), ValueError, r"`rank` must be an integer in \[1, 20\]; got 21"),
    (dict(solver="als"), ValueError, r"`solver` must be one of 'pg', 'mu', 'hals'; got 'als'"),
    (dict(init="svd"), ValueError, r"`init` must be one of 'nndsvda', 'nndsvd', 'nndsvdar', "
                                   r"'random'; got 'svd'"),
    (dict(beta_loss="itakura-saito"), ValueError,
     r"`beta_loss` must be one of 'frobenius', 'kullback-leibler'"),
    (dict(init="random"), ValueError, r"nmf: `key` is required \(init='random'"),
    (dict(init="nndsvdar"), ValueError, r"nmf: `key` is required \(init='nndsvdar'"),
    (dict(mask=np.ones((3, 3), bool)), ValueError,
     r"nmf: `mask` must have the shape of `X`, \(30, 20\); got shape \(3, 3\)"),
    (dict(beta_loss="kullback-leibler", solver="hals"), ValueError,
     r"`beta_loss`='kullback-leibler' needs `solver`='mu'"),
    (dict(tol=-1.0), ValueError, r"`tol` must be a finite number in \[0.0, inf\]"),
    (dict(l1_ratio=2.0), ValueError, r"`l1_ratio` must be a finite number in \[0.0, 1.0\]"),
    (dict(alpha_W=-1.0), ValueError, r"`alpha_W` must be a finite number"),
    (dict(max_iter=0), ValueError, r"`max_iter` must be an integer in \[1, inf\]"),
    (dict(warm_start=(np.ones((30, 3)), np.ones((4, 20)))), ValueError,
     r"`warm_start.W` must have shape \(30, 4\); got shape \(30, 3\)"),
    (dict(warm_start=(-np.ones((30, 4)), np.ones((4, 20)))), ValueError,
     r"`warm_start.W` must be non-negative"),
    (dict(warm_start=np.ones((30, 4))), TypeError, r"`warm_start` must be an NMFResult or a"),
])
def test_bad_arguments(X64, kwargs, exc, match):
    kwargs = dict(kwargs)
    rank = kwargs.pop("rank", K_)
    with pytest.raises(exc, match=match):
        nmf(X64.astype(np.float32), rank, **kwargs)


def test_bad_X(X64):
    X = X64.astype(np.float32)
    with pytest.raises(ValueError, match="nmf: `X` must be non-negative; got minimum -1"):
        nmf(X - 1 * (X == X.max()) * (X.max() + 1), K_)
    bad = X.copy()
    bad[0, 0] = np.nan
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="nmf: `X` must be finite; got 1 NaN and 1 Inf"):
        nmf(bad, K_)
    with pytest.raises(ValueError, match="nmf: `X` must be non-negative"):
        nmf(jsparse.BCOO.fromdense(jnp.asarray(-X)), K_)
    with pytest.raises(TypeError, match="nmf: `X` must be floating point; got dtype int"):
        nmf(np.ones((5, 4), np.int32), 2)
    with pytest.raises(ValueError, match="nmf: `X` must be 2-D"):
        nmf(np.ones(5, np.float32), 1)
    with pytest.raises(ValueError, match="nmf: `mask` must be non-negative"):
        nmf(X, K_, mask=-np.ones(X.shape, np.float32))


def test_transform_errors(X64):
    X = X64.astype(np.float32)
    with pytest.raises(ValueError, match=r"nmf_transform: `H` must have 20 columns"):
        nmf_transform(np.ones((4, 7), np.float32), X)
    with pytest.raises(ValueError, match=r"nmf_transform: `H` must be non-negative"):
        nmf_transform(-np.ones((4, 20), np.float32), X)
    with pytest.raises(ValueError, match=r"nmf_transform\(X, H\) is now nmf_transform\(H, X\)"):
        nmf_transform(X, np.ones((4, 20), np.float32))  # the former order
    with pytest.raises(ValueError, match=r"nmf_transform: `beta_loss`='kullback-leibler' needs"):
        nmf_transform(np.ones((4, 20), np.float32), X, solver="pg",
                      beta_loss="kullback-leibler")


# ------------------------------------------------------------------------------------------------
# The one surface: status, warm_start, nmf_transform's result, operator forms, keys, checks


def test_status_and_transform_result(X64):
    X = X64.astype(np.float32)
    res = nmf(X, K_, solver="hals", max_iter=200, tol=1e-3)
    assert res._fields[-1] == "status" and res.status.dtype == jnp.int32
    assert Status(int(res.status)) == Status.CONVERGED and bool(res.converged)
    short = nmf(X, K_, solver="hals", max_iter=30, tol=0.0)  # tol = 0: every iteration runs
    assert Status(int(short.status)) == Status.MAX_ITER and not bool(short.converged)
    for basis in (res, res.H):
        out = nmf_transform(basis, X, solver="hals")
        assert isinstance(out, NMFResult)
        assert out.W.shape == (M_, K_) and np.array_equal(out.H, res.H)
        n = int(out.n_iter)
        assert bool(out.converged) == (int(out.status) == Status.CONVERGED)
        assert np.all(np.isfinite(out.history[:n])) and np.all(np.isnan(out.history[n:]))
        np.testing.assert_allclose(out.loss, _objective(X, np.asarray(out.W), np.asarray(res.H)),
                                   rtol=1e-4)


def test_nan_objective_is_diverged():
    # A warm start too large for float32 overflows the objective: the driver stops at once.
    X = np.ones((6, 5), np.float32)
    res = nmf(X, 2, solver="mu", warm_start=(np.full((6, 2), 1e30, np.float32),
                                             np.full((2, 5), 1e30, np.float32)), max_iter=50)
    assert Status(int(res.status)) == Status.DIVERGED and int(res.n_iter) == 1
    assert not bool(res.converged)


def test_warm_start_forms_and_deprecated_keywords(X64):
    X = X64.astype(np.float32)
    res = nmf(X, K_, solver="hals", max_iter=10)
    kw = dict(solver="hals", max_iter=10)
    a = nmf(X, K_, warm_start=res, **kw)
    b = nmf(X, K_, warm_start=(res.W, res.H), **kw)
    np.testing.assert_array_equal(a.W, b.W)
    with pytest.warns(DeprecationWarning) as record:
        c = nmf(X, K_, W_init=res.W, H_init=res.H, **kw)
    np.testing.assert_array_equal(c.W, a.W)
    messages = [str(w.message) for w in record]
    assert "nmf: `W_init` is renamed `warm_start`; `W_init` will be removed" in messages[0]
    assert "nmf: `H_init` is renamed `warm_start`; `H_init` will be removed" in messages[1]
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"not both"):
        nmf(X, K_, warm_start=res, W_init=res.W, H_init=res.H)
    with pytest.warns(DeprecationWarning), pytest.raises(
            ValueError, match=r"give both `W_init` and `H_init`"):
        nmf(X, K_, W_init=res.W)


def test_sparse_operator_forms_equal_dense(x64, X64, init64):
    import scipy.sparse as sp
    from jaxfact import linop
    W0, H0 = init64
    kw = dict(solver="pg", warm_start=(W0, H0), tol=1e-4, max_iter=2000)
    dense = nmf(X64, K_, **kw)
    bcoo = jsparse.BCOO.fromdense(jnp.asarray(X64))
    r, c = np.nonzero(X64)
    forms = {"bcoo": bcoo, "bcsr": jsparse.BCSR.fromdense(jnp.asarray(X64)),
             "scipy": sp.csr_matrix(X64), "SparseMatrix": linop.as_operator(bcoo),
             "ObservedMatrix": linop.ObservedMatrix(jnp.asarray(r, jnp.int32),
                                                    jnp.asarray(c, jnp.int32),
                                                    jnp.asarray(X64[r, c]), X64.shape)}
    assert isinstance(forms["SparseMatrix"], linop.SparseMatrix)
    for name, X in forms.items():
        res = nmf(X, K_, **kw)
        np.testing.assert_allclose(res.W, dense.W, rtol=1e-9, atol=1e-12, err_msg=name)
        assert int(res.n_iter) == int(dense.n_iter), name
        codes = nmf_transform(dense, X, solver="mu", max_iter=60)
        np.testing.assert_allclose(codes.W, nmf_transform(dense, X64, solver="mu",
                                                          max_iter=60).W, rtol=1e-9, atol=1e-12)
    W, H = nmf_init(forms["ObservedMatrix"], K_, key=jax.random.key(0))
    assert W.shape == (M_, K_) and H.shape == (K_, N_)
    op = linop.LinearOperator(lambda B: X64 @ B, lambda B: X64.T @ B, X64.shape, X64.dtype)
    for f in (lambda: nmf(op, K_), lambda: nmf_init(op, K_), lambda: nmf_transform(H0, op)):
        with pytest.raises(TypeError, match=r"got a linop.LinearOperator, known only through"):
            f()


def test_sparse_matrix_used_as_built(x64, X64, init64, monkeypatch):
    # A linop.SparseMatrix built once is not laid out again by nmf / nmf_transform, and
    # weights left by linop.masked do not leak into the fit (NMF reads the values). The same
    # calls as test_sparse_operator_forms_equal_dense (compiled once).
    from jaxfact import linop
    W0, H0 = init64
    Xs = linop.as_operator(jsparse.BCOO.fromdense(jnp.asarray(X64)))
    negative = linop.as_operator(jsparse.BCOO.fromdense(jnp.asarray(-X64)))
    kw = dict(solver="pg", warm_start=(W0, H0), tol=1e-4, max_iter=2000)
    dense = nmf(X64, K_, **kw)
    ref_codes = nmf_transform(dense, X64, solver="mu", max_iter=60).W

    def no_layout(*a, **k):
        raise AssertionError("the host layout was rebuilt")

    monkeypatch.setattr(linop, "_bucketed", no_layout)
    for X in (Xs, linop.masked(Xs, jnp.asarray(np.where(X64 > 0.5, 2.0, 1.0)))):
        np.testing.assert_allclose(nmf(X, K_, **kw).W, dense.W, rtol=1e-9, atol=1e-12)
    codes = nmf_transform(dense, Xs, solver="mu", max_iter=60)
    np.testing.assert_allclose(codes.W, ref_codes, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match=r"must be non-negative"):
        nmf(negative, K_, **kw)


def test_no_hidden_key(X64):
    # Dense X without a key: the exact SVD, at any size (no silent jax.random.key(0)).
    rng = np.random.default_rng(11)
    big = (rng.random((300, 3)) @ rng.random((3, 260)) + 0.1 * rng.random((300, 260)))
    big = big.astype(np.float32)
    W, H = nmf_init(big, 3, init="nndsvd")
    U, S, Vt = np.linalg.svd(big.astype(np.float64), full_matrices=False)
    np.testing.assert_allclose(W[:, 0] / np.linalg.norm(W[:, 0]), np.abs(U[:, 0]), atol=1e-5)
    W2, _ = nmf_init(big, 3, init="nndsvd")
    np.testing.assert_array_equal(W, W2)
    # With a key, large X gets the randomized SVD: the start depends on the key.
    Wa, _ = nmf_init(big, 3, init="nndsvd", key=jax.random.key(0))
    Wb, _ = nmf_init(big, 3, init="nndsvd", key=jax.random.key(1))
    assert not np.array_equal(Wa, Wb)
    # Small dense X: the exact SVD whatever the key, which is said.
    X = X64.astype(np.float32)
    with pytest.warns(UserWarning, match="does not change the start"):
        a = nmf(X, K_, solver="mu", key=jax.random.key(0), tol=0.0, max_iter=30)
    b = nmf(X, K_, solver="mu", tol=0.0, max_iter=30)
    np.testing.assert_array_equal(a.W, b.W)
    # Sparse X: the randomized SVD needs the key.
    with pytest.raises(ValueError, match=r"nmf_init: `key` is required \(init='nndsvda' of a "
                                         r"sparse X computes a randomized SVD\)"):
        nmf_init(jsparse.BCOO.fromdense(jnp.asarray(X)), K_)


def test_checks_report_nan_under_jit(X64):
    from jax.experimental import checkify
    X = jnp.asarray(X64, jnp.float32).at[0, 0].set(jnp.nan)
    H = jnp.ones((K_, N_), jnp.float32)
    for f, name in ((lambda X: nmf(X, K_, max_iter=2, checks=True).W, "nmf"),
                    (lambda X: nmf_init(X, K_, checks=True)[0], "nmf_init"),
                    (lambda X: nmf_transform(H, X, max_iter=2, checks=True).W, "nmf_transform")):
        err, _ = checkify.checkify(jax.jit(f))(X)
        assert err.get() is not None and f"{name}: `X` must be finite" in err.get()
        err, _ = checkify.checkify(jax.jit(f))(jnp.abs(jnp.nan_to_num(X)))
        assert err.get() is None


# ------------------------------------------------------------------------------------------------
# Hypothesis invariants (small shapes: a few compilations)


@pytest.mark.parametrize("solver", ["pg", "mu", "hals"])
@given(shape=st.sampled_from([(6, 5), (5, 6)]), rank=st.sampled_from([1, 3]),
       seed=st.integers(0, 2**16), zeros=st.floats(0.0, 0.6),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_invariants(solver, shape, rank, seed, zeros, scale):
    rng = np.random.default_rng(seed)
    X = rng.random(shape) * (rng.random(shape) >= zeros) * scale
    with jax.enable_x64(True):
        res = nmf(X, rank, solver=solver, max_iter=40, tol=1e-4)
        W, H, h = np.asarray(res.W), np.asarray(res.H), np.asarray(res.history)
        n = int(res.n_iter)
        assert W.min() >= 0 and H.min() >= 0
        assert bool(res.converged) == (int(res.status) == Status.CONVERGED)
        assert n == int(np.sum(~np.isnan(h))) and np.all(np.isfinite(h[:n]))
        if solver in ("mu", "hals"):  # Lee & Seung's Theorem 1; exact coordinate minimization
            rounding = 1e-12 * (0.5 * np.sum(X**2) + h[0])
            assert np.all(np.diff(h[:n]) <= rounding), np.diff(h[:n]).max()
