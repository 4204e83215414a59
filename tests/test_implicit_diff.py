"""Implicit gradients through converged solvers, checked against two references in float64.

Reference 1: central finite differences of the converged solution (directional, two random
directions per argument). Reference 2: reverse-mode through the solver's iterations unrolled
with ``lax.fori_loop`` and run to convergence, with plain JAX autodiff (``jnp.linalg.svd``'s own
rule, dense ALS and projected-gradient steps). Problems are small and well conditioned so that
the solvers converge to ~1e-12 and 1e-6 relative agreement is meaningful in float64.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfact as jf

RTOL = 1e-6   # agreement asked of every gradient (float64, solves converged to ~1e-12)
EPS_FD = 1e-5  # finite-difference step: truncation ~EPS^2, solve error ~1e-12 / EPS


def rel(a, b):
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def fd_check(loss, args, grads, seed=0):
    """Relative error of <grad, d> against central differences, worst of 2 random directions."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(2):
        dirs = [jnp.asarray(rng.standard_normal(np.shape(a))) for a in args]
        up = loss(*[a + EPS_FD * d for a, d in zip(args, dirs)])
        dn = loss(*[a - EPS_FD * d for a, d in zip(args, dirs)])
        fd = (float(up) - float(dn)) / (2 * EPS_FD)
        an = sum(float(jnp.vdot(g, d)) for g, d in zip(grads, dirs))
        worst = max(worst, abs(an - fd) / abs(fd))
    return worst


# ------------------------------------------------------------------------------------------------
# Problems


def _completion_problem(n1=12, n2=10, r=2, frac=0.6, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n1, r)) @ rng.standard_normal((r, n2))
    rows, cols = np.nonzero(rng.random((n1, n2)) < frac)
    C = rng.standard_normal((n1, n2))
    return (jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(A[rows, cols]), jnp.asarray(C))


def _svt_ref(M, lam, k):
    # Plain JAX: autodiff through jnp.linalg.svd (its own derivative rule, not jaxfact's).
    U, s, Vt = jnp.linalg.svd(M, full_matrices=False)
    f = jnp.where(jnp.arange(s.shape[0]) < k, jnp.maximum(s - lam, 0), 0)
    return (U * f[None, :]) @ Vt


def soft_impute_unrolled(rows, cols, values, shape, lam, k, n_iter):
    def step(_, Z):
        return _svt_ref(Z.at[rows, cols].set(values), lam, k)
    return jax.lax.fori_loop(0, n_iter, step, jnp.zeros(shape, values.dtype))


def wlra_unrolled(X, Wt, lam, k, n_iter):
    W = Wt / jnp.max(Wt)

    def step(_, Z):
        return _svt_ref(Z + W * (X - Z), lam, k)
    return jax.lax.fori_loop(0, n_iter, step, jnp.zeros_like(X))


# ------------------------------------------------------------------------------------------------
# SoftImpute and its path


SHAPE = (12, 10)


def _si_loss(C, **kw):
    def loss(values, lam, rows, cols):
        res = jf.soft_impute(rows, cols, values, SHAPE, lam=lam, rank=6, tol=1e-26,
                             max_iter=2000, **kw)
        return jnp.sum(C * ((res.U * res.S[None, :]) @ res.Vt))
    return loss


def test_soft_impute_matches_finite_differences_and_unrolled(x64):
    rows, cols, vals, C = _completion_problem()
    lam = jnp.asarray(0.5)
    loss = _si_loss(C)
    res = jf.soft_impute(rows, cols, vals, SHAPE, lam=lam, rank=6, tol=1e-26, max_iter=2000)
    assert bool(res.converged) and int(jnp.sum(res.S > 0)) < 6   # rank cap inactive
    g_vals, g_lam = jax.jit(jax.grad(loss, argnums=(0, 1)))(vals, lam, rows, cols)

    unrolled = lambda v, l: jnp.sum(C * soft_impute_unrolled(rows, cols, v, SHAPE, l, 6, 1000))
    u_vals, u_lam = jax.jit(jax.grad(unrolled, argnums=(0, 1)))(vals, lam)
    assert rel(g_vals, u_vals) < RTOL
    assert rel(g_lam, u_lam) < RTOL
    f = jax.jit(loss)
    assert fd_check(lambda v, l: f(v, l, rows, cols), (vals, lam), (g_vals, g_lam)) < RTOL


def test_soft_impute_path_gradients_are_per_lambda(x64):
    rows, cols, vals, C = _completion_problem()
    lams = jnp.asarray([1.0, 0.5])
    w = jnp.asarray([1.0, -2.0])

    @jax.jit
    def loss(values, lams):
        path = jf.soft_impute_path(rows, cols, values, SHAPE, lams=lams, rank=6, tol=1e-26,
                                   max_iter=2000)
        return jnp.sum(w * jnp.einsum("ij,lij->l", C, jnp.einsum("lik,lk,lkj->lij", path.U,
                                                                  path.S, path.Vt)))

    g_vals, g_lams = jax.grad(loss, argnums=(0, 1))(vals, lams)
    assert fd_check(loss, (vals, lams), (g_vals, g_lams)) < RTOL


# ------------------------------------------------------------------------------------------------
# WLRA


def _wlra_problem(seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 8)) + 0.1 * rng.standard_normal(
        (10, 8))
    Wt = rng.uniform(0.3, 1.0, (10, 8))
    return jnp.asarray(X), jnp.asarray(Wt), jnp.asarray(rng.standard_normal((10, 8)))


def test_wlra_matches_finite_differences_and_unrolled(x64):
    X, Wt, C = _wlra_problem()
    lam = jnp.asarray(0.3)

    @jax.jit
    def loss(X, Wt, lam):
        res = jf.wlra(X, Wt, 4, lam=lam, tol=0.0, max_iter=1500)
        return jnp.sum(C * ((res.U * res.S[None, :]) @ res.Vt)) + jnp.sum(res.S ** 2)

    grads = jax.grad(loss, argnums=(0, 1, 2))(X, Wt, lam)

    def unrolled(X, Wt, lam):
        Z = wlra_unrolled(X, Wt, lam, 4, 1500)
        return jnp.sum(C * Z) + jnp.sum(jnp.linalg.svd(Z, compute_uv=False)[:4] ** 2)
    ref = jax.jit(jax.grad(unrolled, argnums=(0, 1, 2)))(X, Wt, lam)
    for g, r in zip(grads, ref):
        assert rel(g, r) < RTOL
    assert fd_check(loss, (X, Wt, lam), grads) < RTOL


# ------------------------------------------------------------------------------------------------
# NMF


def _nnls_problem(seed=2, m=8, n=7, k=3):
    rng = np.random.default_rng(seed)
    W = np.abs(rng.standard_normal((m, k)))
    W[rng.random((m, k)) < 0.3] = 0          # an active set in the solution
    H = np.abs(rng.standard_normal((k, n))) + 0.2 * np.eye(k, n)
    X = np.abs(W @ H + 0.3 * rng.standard_normal((m, n)))
    return jnp.asarray(X), jnp.asarray(H), jnp.asarray(rng.standard_normal((m, k)))


def nnls_unrolled(X, H, n_iter):
    G = H @ H.T
    step = 1.0 / jnp.linalg.norm(jax.lax.stop_gradient(G), 2)

    def body(_, W):
        return jnp.maximum(W - step * (W @ G - X @ H.T), 0)
    return jax.lax.fori_loop(0, n_iter, body, jnp.ones((X.shape[0], H.shape[0]), X.dtype))


def test_nmf_transform_matches_finite_differences_and_unrolled(x64):
    X, H, C = _nnls_problem()

    @jax.jit
    def loss(X, H):
        return jnp.sum(C * jf.nmf_transform(H, X, solver="hals", tol=1e-15, max_iter=3000).W)

    W = jf.nmf_transform(H, X, solver="hals", tol=1e-15, max_iter=3000).W
    assert 0 < int(jnp.sum(W == 0)) < W.size    # both free and active entries
    grads = jax.grad(loss, argnums=(0, 1))(X, H)
    ref = jax.jit(jax.grad(lambda X, H: jnp.sum(C * nnls_unrolled(X, H, 3000)),
                           argnums=(0, 1)))(X, H)
    for g, r in zip(grads, ref):
        assert rel(g, r) < RTOL
    assert fd_check(loss, (X, H), grads) < RTOL


def test_nmf_transform_under_vmap_matches_a_loop(x64):
    X, H, C = _nnls_problem()
    Xs = jnp.stack([X, X * 1.5 + 0.1])
    grad = jax.grad(lambda X, H: jnp.sum(C * jf.nmf_transform(H, X, solver="hals", tol=1e-15,
                                                               max_iter=3000).W))
    batched = jax.jit(jax.vmap(grad, in_axes=(0, None)))(Xs, H)
    single = jax.jit(grad)
    for i in range(2):
        one = single(Xs[i], H)
        np.testing.assert_allclose(batched[i], one, rtol=1e-10, atol=1e-12)


def _nmf_problem(seed=3, m=9, n=8):
    # Factors with zeros in every column of W and row of H, so that the only freedom left is
    # NMF's scaling: no mixing of the two components keeps both non-negative. (With strictly
    # positive factors (W R, R^-1 H) is a solution for every R near I and W is not determined.)
    rng = np.random.default_rng(seed)
    W = np.abs(rng.standard_normal((m, 2))) + 0.3
    W[0:3, 1] = 0
    W[3:6, 0] = 0
    H = np.abs(rng.standard_normal((2, n))) + 0.3
    H[1, 0:3] = 0
    H[0, 3:6] = 0
    X = np.maximum(W @ H * (1 + 0.1 * rng.standard_normal((m, n))), 0)
    return jnp.asarray(X), jnp.asarray(rng.standard_normal((m, n))), jnp.asarray(
        rng.standard_normal((m, 2)))


def nmf_unrolled(W, H, X, l2W, l2H, n_iter):
    # Alternating projected-gradient steps (each half a contraction near a strict minimum).
    def body(_, z):
        W, H = z
        G = H @ H.T
        W = jnp.maximum(W - (W @ G - X @ H.T + l2W * W) / jax.lax.stop_gradient(
            jnp.linalg.norm(G, 2) + l2W), 0)
        G = W.T @ W
        H = jnp.maximum(H - (G @ H - W.T @ X + l2H * H) / jax.lax.stop_gradient(
            jnp.linalg.norm(G, 2) + l2H), 0)
        return W, H
    return jax.lax.fori_loop(0, n_iter, body, (W, H))


def _normalized(W):
    return W / jnp.linalg.norm(W, axis=0, keepdims=True)


def test_nmf_invariant_losses_match_finite_differences_and_unrolled(x64):
    X, C, D = _nmf_problem()
    m, n = X.shape
    kw = dict(solver="hals", tol=1e-14, max_iter=20000)

    @jax.jit
    def loss(X, aW, aH):
        res = jf.nmf(X, 2, alpha_W=aW, alpha_H=aH, **kw)
        return jnp.sum(C * (res.W @ res.H)) + jnp.sum(D * _normalized(res.W))

    aW, aH = jnp.asarray(0.01), jnp.asarray(0.02)
    res = jf.nmf(X, 2, alpha_W=aW, alpha_H=aH, **kw)
    assert bool(res.converged)
    assert bool(jnp.all(jnp.sum(res.W == 0, 0) > 0)) and bool(jnp.all(jnp.sum(res.H == 0, 1) > 0))
    grads = jax.grad(loss, argnums=(0, 1, 2))(X, aW, aH)

    def unrolled(X, aW, aH):
        W, H = nmf_unrolled(jax.lax.stop_gradient(res.W), jax.lax.stop_gradient(res.H), X,
                            aW * n, aH * m, 4000)
        return jnp.sum(C * (W @ H)) + jnp.sum(D * _normalized(W))
    ref = jax.jit(jax.grad(unrolled, argnums=(0, 1, 2)))(X, aW, aH)
    for g, r in zip(grads, ref):
        assert rel(g, r) < RTOL
    assert fd_check(loss, (X, aW, aH), grads) < RTOL


def test_nmf_without_penalties_well_defined_losses_only(x64):
    # Without penalties (W, H) can be rescaled freely: W @ H and normalized W are well defined
    # and match finite differences; the gradient of a loss of raw W is documented as meaningless.
    X, C, D = _nmf_problem()
    kw = dict(solver="hals", tol=1e-14, max_iter=20000)

    @jax.jit
    def loss(X):
        res = jf.nmf(X, 2, **kw)
        return jnp.sum(C * (res.W @ res.H)) + jnp.sum(D * _normalized(res.W))

    g = jax.grad(loss)(X)
    assert fd_check(loss, (X,), (g,)) < RTOL


def test_nmf_warns_when_a_key_meets_a_deterministic_init():
    X = jnp.abs(jax.random.normal(jax.random.key(0), (8, 6)))
    with pytest.warns(UserWarning, match="deterministic"):
        jf.nmf(X, 2, key=jax.random.key(1), max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jf.nmf(X, 2, init="random", key=jax.random.key(1), max_iter=5)


# ------------------------------------------------------------------------------------------------
# Biased MF (ALS)


def _ratings_problem(seed=4, m=7, n=6):
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(rng.random((m, n)) < 0.7)
    vals = 3 + rng.standard_normal(rows.size)
    t_rows, t_cols = rng.integers(0, m, 10), rng.integers(0, n, 10)
    return (jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(vals), jnp.asarray(t_rows),
            jnp.asarray(t_cols), jnp.asarray(rng.standard_normal(10)))


def als_unrolled(res, rows, cols, values, lam, shape, n_iter):
    """Dense ALS steps (exact ridge solves per user and item) from the given factors."""
    m, n = shape
    M = jnp.zeros((m, n)).at[rows, cols].set(1.0)
    R = jnp.zeros((m, n)).at[rows, cols].set(values - jnp.mean(values))
    k = res.user_factors.shape[1]

    def half(bo, Fo, M, R):
        Xo = jnp.concatenate([jnp.ones((Fo.shape[0], 1)), Fo], 1)   # (n_other, k + 1)
        cnt = M.sum(1)
        A = jnp.einsum("uj,ja,jb->uab", M, Xo, Xo) + lam * cnt[:, None, None] * jnp.eye(k + 1)[None]
        b = jnp.einsum("uj,ja->ua", M * (R - bo[None, :]), Xo)
        w = jnp.linalg.solve(A, b[..., None])[..., 0]
        return w[:, 0], w[:, 1:]

    def body(_, z):
        bu, bi, P, Q = z
        bu, P = half(bi, Q, M, R)
        bi, Q = half(bu, P, M.T, R.T)
        return bu, bi, P, Q
    z = tuple(jax.lax.stop_gradient(a) for a in (res.user_bias, res.item_bias, res.user_factors,
                                                res.item_factors))
    return jnp.mean(values), jax.lax.fori_loop(0, n_iter, body, z)


def test_biased_mf_matches_finite_differences_and_unrolled(x64):
    rows, cols, vals, tr, tc, w = _ratings_problem()
    shape = (7, 6)
    kw = dict(key=jax.random.key(0), tol=0.0, max_iter=3000)

    @jax.jit
    def loss_(values, lam, tr, tc):
        res = jf.biased_mf(rows, cols, values, shape, 2, lam=lam, **kw)
        return jnp.sum(w * jf.predict(res, tr, tc))

    loss = lambda values, lam: loss_(values, lam, tr, tc)
    lam = jnp.asarray(0.3)
    grads = jax.jit(jax.grad(loss_, argnums=(0, 1)))(vals, lam, tr, tc)
    res = jf.biased_mf(rows, cols, vals, shape, 2, lam=lam, **kw)

    def unrolled(values, lam):
        mu, (bu, bi, P, Q) = als_unrolled(res, rows, cols, values, lam, shape, 2000)
        return jnp.sum(w * (mu + bu[tr] + bi[tc] + jnp.sum(P[tr] * Q[tc], 1)))
    ref = jax.jit(jax.grad(unrolled, argnums=(0, 1)))(vals, lam)
    for g, r in zip(grads, ref):
        assert rel(g, r) < RTOL
    assert fd_check(loss, (vals, lam), grads) < RTOL


def test_unbiased_mf_gradient_matches_finite_differences(x64):
    # biased=False holds mu, b_u and b_i at 0: the root has only the P, Q equations.
    rows, cols, vals, tr, tc, w = _ratings_problem()
    shape = (7, 6)
    kw = dict(key=jax.random.key(0), tol=0.0, max_iter=3000, biased=False)

    def loss(values, lam):
        res = jf.biased_mf(rows, cols, values, shape, 2, lam=lam, **kw)
        return jnp.sum(w * jf.predict(res, tr, tc))

    lam = jnp.asarray(0.3)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(vals, lam)
    res = jf.biased_mf(rows, cols, vals, shape, 2, lam=lam, **kw)
    assert float(jnp.max(jnp.abs(res.user_bias))) == 0.0 and float(res.mu) == 0.0
    assert fd_check(jax.jit(loss), (vals, lam), grads) < RTOL


# ------------------------------------------------------------------------------------------------
# Randomized SVD


def test_randomized_svd_gradient_is_the_exact_truncated_svds(x64):
    rng = np.random.default_rng(5)
    U, _ = np.linalg.qr(rng.standard_normal((20, 12)))
    V, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    s = np.array([10, 8, 6, 2, 1.5, 1, .8, .6, .4, .3, .2, .1])
    X = jnp.asarray((U * s) @ V.T)      # a tail below the rank-3 cut: dU leaves span(U)
    C, D = jnp.asarray(rng.standard_normal((20, 12))), jnp.asarray(rng.standard_normal((3, 12)))

    def loss_of(svd):
        def loss(X):
            U, S, Vt = svd(X)
            # sign-invariant: the reconstruction, S, and the projector on span(V)
            return (jnp.sum(C * ((U * S[None, :]) @ Vt)) + jnp.sum(S ** 3)
                    + jnp.sum(D * (Vt.T @ Vt)[:3]))
        return loss

    ours = jax.jit(loss_of(lambda X: jf.randomized_svd(X, 3, key=jax.random.key(0),
                                                       n_iter=40)))
    exact = loss_of(lambda X: jf.truncated_svd(X, 3))
    g = jax.grad(ours)(X)
    assert rel(g, jax.grad(exact)(X)) < RTOL
    assert fd_check(exact, (X,), (g,)) < RTOL


def test_randomized_svd_gradient_at_a_tie_inside_the_kept_block_is_truncated_svds(x64):
    # s = 5, 5, 3 | 1, 0.5: the implicit derivative and truncated_svd's JVP share one treatment of
    # ties (_linalg.subspace_rotations): the projector U U^T and U S Vt get exact derivatives.
    rng = np.random.default_rng(6)
    U, _ = np.linalg.qr(rng.standard_normal((9, 5)))
    V, _ = np.linalg.qr(rng.standard_normal((7, 5)))
    X = jnp.asarray((U * np.array([5.0, 5.0, 3.0, 1.0, 0.5])) @ V.T)
    C, D = jnp.asarray(rng.standard_normal((9, 9))), jnp.asarray(rng.standard_normal((9, 7)))

    def loss_of(svd):
        def loss(X):
            U, S, Vt = svd(X)
            return jnp.sum(C * (U @ U.T)) + jnp.sum(D * ((U * S[None, :]) @ Vt))
        return loss

    ours = loss_of(lambda X: jf.randomized_svd(X, 3, key=jax.random.key(0), n_iter=30))
    exact = loss_of(lambda X: jf.truncated_svd(X, 3))
    g = jax.grad(ours)(X)
    assert bool(jnp.all(jnp.isfinite(g)))
    assert rel(g, jax.grad(exact)(X)) < RTOL
    assert fd_check(exact, (X,), (g,)) < 1e-5


# ------------------------------------------------------------------------------------------------
# Memory, strictness, options


def test_implicit_backward_memory_does_not_grow_with_max_iter(x64):
    rows, cols, vals, _ = _completion_problem(n1=40, n2=30, frac=0.5)
    shape = (40, 30)
    C = jnp.ones(shape)

    def temp_bytes(f):
        return f.lower(vals, jnp.asarray(0.5)).compile().memory_analysis().temp_size_in_bytes

    def implicit(max_iter):
        def loss(v, lam):
            res = jf.soft_impute(rows, cols, v, shape, lam=lam, rank=6, max_iter=max_iter)
            return jnp.sum(C * ((res.U * res.S[None, :]) @ res.Vt))
        return jax.jit(jax.grad(loss, argnums=(0, 1)))

    def unrolled(max_iter):
        return jax.jit(jax.grad(lambda v, lam: jnp.sum(
            C * soft_impute_unrolled(rows, cols, v, shape, lam, 6, max_iter)), argnums=(0, 1)))

    imp = [temp_bytes(implicit(n)) for n in (50, 400)]
    unr = [temp_bytes(unrolled(n)) for n in (50, 400)]
    # The implicit pass keeps only the (max_iter,) history buffers: a few bytes per iteration.
    assert imp[1] - imp[0] <= 64 * 350
    # Unrolling stores every iterate's SVD: at least one (n1, n2) matrix per iteration.
    assert unr[1] - unr[0] >= 350 * 40 * 30 * 8


def test_strict_backward_gives_nan_when_the_solve_does_not_converge(x64):
    X, H, C = _nnls_problem()

    def grad(diff):
        return jax.grad(lambda X: jnp.sum(C * jf.nmf_transform(
            H, X, solver="hals", tol=1e-15, max_iter=3000, diff=diff).W))(X)

    lax_ = grad(jf.ImplicitDiff(max_iter=1))
    assert bool(jnp.all(jnp.isfinite(lax_)))
    assert bool(jnp.all(jnp.isnan(grad(jf.ImplicitDiff(max_iter=1, strict=True)))))
    assert bool(jnp.all(jnp.isfinite(grad(jf.ImplicitDiff(strict=True)))))


def test_bad_diff_options_raise():
    X = jnp.ones((4, 3))
    with pytest.raises(TypeError, match="nmf_transform: `diff` must be None or a"):
        jf.nmf_transform(jnp.ones((2, 3)), X, diff="implicit")
    with pytest.raises(ValueError, match="wlra: `diff.solver` must be"):
        jf.wlra(X, jnp.ones((4, 3)), 2, diff=jf.ImplicitDiff(solver="lu"))
    with pytest.raises(ValueError, match="soft_impute: `diff.max_iter` must be"):
        jf.soft_impute(jnp.array([0]), jnp.array([0]), jnp.array([1.0]), (2, 2), lam=0.1,
                       rank=1, diff=jf.ImplicitDiff(max_iter=0))
