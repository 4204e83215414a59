"""Tests for jaxfact.nonnegative on data of any magnitude, and what ``converged`` promises.

The fit must not depend on the units of X: ``nmf(c * X)`` gives ``c``-times the same product
``W H`` (the same relative error) for every solver, start, loss and storage, and ``converged``
must mean the objective has stopped moving: a restart from the returned factors lowers it by at
most ``tol`` (relatively).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import sparse as jsparse

from jaxfact import nmf, nmf_init, nmf_transform

NMF = pytest.importorskip("sklearn.decomposition").NMF

INITS = ("nndsvda", "nndsvd", "nndsvdar", "random")
# (solver, beta_loss): every loss each solver supports.
METHODS = (("pg", "frobenius"), ("hals", "frobenius"), ("mu", "frobenius"),
           ("mu", "kullback-leibler"))
MAX_ITER = 200  # static: one compilation per method and storage, shared by all scales


def _abs_normal(m=30, n=20, seed=0):
    return np.abs(np.random.default_rng(seed).standard_normal((m, n)))


def _rel_err(X, W, H, mask=None):
    R = np.asarray(X, np.float64) - np.asarray(W, np.float64) @ np.asarray(H, np.float64)
    w = 1.0 if mask is None else mask
    return np.sqrt(np.sum(w * R * R) / np.sum(w * np.asarray(X, np.float64) ** 2))


def _kl(X, WH, w=1.0):
    X = np.asarray(X, np.float64)
    pos = X > 0
    return np.sum(w * (np.where(pos, X * np.log(np.where(pos, X, 1) / WH), 0) - X + WH))


# ------------------------------------------------------------------------------------------------
# The reported failures


def test_default_nmf_same_error_at_every_scale():
    # nmf(X, 3) with its defaults (pg, nndsvda) reached 0.483 at scale 1 but 0.69 (3 iterations),
    # 1.00 (W H ~ 0, 1 iteration) at 1e3 and 1e4, and the start itself at 1e6, all "converged".
    # scikit-learn (cd, same rank) reaches 0.48 at scale 1.
    X = _abs_normal().astype(np.float32)
    errs = []
    for c in (1e-6, 1e-3, 1.0, 1e3, 1e4, 1e6):
        res = nmf(c * X, 3)
        assert bool(res.converged) and int(res.n_iter) > 5
        errs.append(_rel_err(c * X, res.W, res.H))
    ref = NMF(3, init="nndsvda", solver="cd", tol=1e-10, max_iter=5000).fit(X.astype(np.float64))
    ref_err = ref.reconstruction_err_ / np.linalg.norm(X)
    # float32 objective resolved to ~1e-6 relatively; the fits converge to tol = 1e-4.
    np.testing.assert_allclose(errs, errs[2], rtol=1e-4)
    assert errs[2] <= ref_err * (1 + 1e-3)


def test_tiny_data_is_not_fitted_by_zero(dtype):
    # X * 1e-16 gave W H ~ 0 "converged" for all three solvers (nndsvd's absolute 1e-6 floor
    # erased the start; the gradient at W = H = 0 vanishes).
    X = _abs_normal().astype(dtype)
    for solver in ("pg", "hals", "mu"):
        res = nmf(1e-16 * X, 3, solver=solver, max_iter=MAX_ITER)
        err = _rel_err(1e-16 * X, res.W, res.H)
        assert err < 0.49, (solver, err)


def test_counts_with_large_means(x64):
    # Word counts and ratings are data "not of order 1": a 40 x 25 Poisson count matrix with
    # means up to ~9000. The fit stopped at 0.731 after 3 iterations against the rank-4 SVD bound.
    rng = np.random.default_rng(0)
    X = rng.poisson(9000 * rng.random((40, 25)) ** 3).astype(np.float64)
    s = np.linalg.svd(X, compute_uv=False)
    svd_bound = np.sqrt(np.sum(s[4:] ** 2) / np.sum(s**2))
    for solver in ("pg", "hals"):
        res = nmf(X, 4, solver=solver, max_iter=MAX_ITER)
        assert bool(res.converged)
        err = _rel_err(X, res.W, res.H)
        # NMF's error is at least the SVD's; on these counts the two are within 3%.
        assert svd_bound <= err <= 1.03 * svd_bound, (solver, err, svd_bound)


# ------------------------------------------------------------------------------------------------
# Scale invariance: every solver, start, loss and storage


def _storage_input(X, storage):
    if storage == "sparse":
        return jsparse.BCOO.fromdense(jnp.asarray(X)), None
    if storage == "mask":
        return X, (np.random.default_rng(9).random(X.shape) < 0.8)
    return X, None


def _scale_check(X, solver, beta_loss, storage, scales, inits):
    # Dividing X by a power of 4 is exact in binary floating point, and the kernels work on X
    # divided by one near max(X); other factors only change the rounding, and the runs stop at
    # the same rule (tol = 1e-4 on the objective still to come): the errors agree to ~tol.
    key = jax.random.key(3)
    # Multiplicative updates for KL need ~200-225 iterations at tol 1e-4 on this problem: a cap
    # of 200 would sit where rounding decides whether a run ends converged.
    max_iter = MAX_ITER if beta_loss == "frobenius" else 2 * MAX_ITER
    for init in inits:
        errs, conv = [], []
        for c in scales:
            Xc, mask = _storage_input(c * X, storage)
            res = nmf(Xc, 3, solver=solver, beta_loss=beta_loss, init=init,
                      key=key if init in ("random", "nndsvdar") or storage == "sparse" else None,
                      mask=mask, max_iter=max_iter)
            W, H = np.asarray(res.W, np.float64), np.asarray(res.H, np.float64)
            assert np.all(np.isfinite(W)) and np.all(np.isfinite(H))
            w = 1.0 if mask is None else mask
            if beta_loss == "frobenius":
                errs.append(_rel_err(c * X, W, H, mask))
            else:
                errs.append(_kl(c * X, np.maximum(W @ H, 1e-300), w) / np.sum(w * c * X))
            conv.append(bool(res.converged))
        assert len(set(conv)) == 1, (init, conv)
        np.testing.assert_allclose(errs, errs[1], rtol=1e-3, err_msg=f"init={init}")
        assert errs[1] < 0.6, (init, errs)


def _scale_problem(dtype):
    X = _abs_normal().astype(dtype)
    X[X < 0.3] = 0  # stored zeros, and zero entries for KL
    return X


@pytest.mark.parametrize("storage", ["dense", "sparse", "mask"])
@pytest.mark.parametrize("solver,beta_loss", METHODS)
def test_scale_invariance_float64(x64, solver, beta_loss, storage):
    # Every start on dense X; sparse and masked X (whose own code paths are the products and the
    # randomized SVD of the start) take the default start (each start compiles: keep it fast).
    inits = INITS if storage == "dense" else ("nndsvda",)
    _scale_check(_scale_problem(np.float64), solver, beta_loss, storage, (1e-12, 1.0, 1e12),
                 inits)


@pytest.mark.parametrize("solver,beta_loss", METHODS)
def test_scale_invariance_float32(solver, beta_loss):
    _scale_check(_scale_problem(np.float32), solver, beta_loss, "dense", (1e-6, 1.0, 1e6),
                 INITS)


def test_transform_scale_invariance(x64):
    X = _abs_normal()
    H = np.asarray(nmf(X, 3).H)
    W1 = np.asarray(nmf_transform(H, X, tol=1e-8).W)
    for c in (1e-12, 1e12):
        Wc = np.asarray(nmf_transform(np.sqrt(c) * H, c * X, tol=1e-8).W)
        np.testing.assert_allclose(Wc / np.sqrt(c), W1, rtol=1e-5, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# What converged means


def _restart_gain(X, solver, beta_loss, tol, **kw):
    res = nmf(X, 3, solver=solver, beta_loss=beta_loss, tol=tol, max_iter=1000, **kw)
    again = nmf(X, 3, solver=solver, beta_loss=beta_loss, tol=tol, max_iter=1000,
                warm_start=(res.W, res.H))
    return res, (float(res.loss) - float(again.loss)) / float(res.loss)


@pytest.mark.parametrize("solver,beta_loss", METHODS)
def test_restart_from_converged_result_gains_at_most_tol(x64, solver, beta_loss):
    rng = np.random.default_rng(2)
    problems = [_abs_normal(), rng.random((30, 3)) @ rng.random((3, 20)) + 0.01 * rng.random(
        (30, 20))]
    n_converged = 0
    for X in problems:
        for init in ("nndsvda", "random"):
            res, gain = _restart_gain(X, solver, beta_loss, 1e-4, init=init,
                                      key=jax.random.key(1) if init == "random" else None)
            if bool(res.converged):
                n_converged += 1
                assert gain <= 1e-4, (init, gain)
    assert n_converged >= 1  # mu converges slowly: honest False on the near-low-rank problem


def test_bad_user_start_does_not_stop_the_run(x64):
    # Lin's rule compares the projected gradient with the gradient at the start; a start a
    # thousand times too large made that reference huge and the rule pass at once.
    X = _abs_normal()
    W0, H0 = nmf_init(X, 3)
    for solver in ("pg", "hals"):
        res = nmf(X, 3, solver=solver, warm_start=(1e3 * np.asarray(W0), np.asarray(H0)))
        assert bool(res.converged)
        assert _rel_err(X, res.W, res.H) < 0.484


def test_mu_zero_locked_start_is_not_converged(x64):
    # nndsvd's zeros cannot grow under multiplicative updates; where the objective would fall
    # by growing them the result is not a stationary point and must not be called converged.
    X = _abs_normal()
    for beta_loss in ("frobenius", "kullback-leibler"):
        res = nmf(X, 3, solver="mu", beta_loss=beta_loss, init="nndsvd", max_iter=MAX_ITER)
        assert not bool(res.converged)
        assert bool(nmf(X, 3, solver="mu", beta_loss=beta_loss, max_iter=1000).converged)


@pytest.mark.parametrize("solver", ["mu", "pg"])
def test_all_zero_start_rejected(solver):
    X = _abs_normal().astype(np.float32)
    W0, H0 = (np.asarray(a) for a in nmf_init(X, 3))
    zero_h = np.zeros_like(H0)
    if solver == "mu":
        with pytest.raises(ValueError, match=r"nmf: `warm_start.H` is all zeros; multiplicative"):
            nmf(X, 3, solver="mu", warm_start=(W0, zero_h))
        with pytest.raises(ValueError, match=r"nmf: `warm_start.W` is all zeros"):
            nmf(X, 3, solver="mu", beta_loss="kullback-leibler", warm_start=(0 * W0, H0))
    else:
        with pytest.raises(ValueError, match=r"nmf: `warm_start` factors are all zeros"):
            nmf(X, 3, solver="pg", warm_start=(0 * W0, zero_h))
        # one zero factor is fine for pg: the other one's step moves it
        res = nmf(X, 3, solver="pg", warm_start=(W0, zero_h))
        assert _rel_err(X, res.W, res.H) < 0.49


# ------------------------------------------------------------------------------------------------
# Half precision, values captured under jit


@pytest.mark.parametrize("low", [jnp.float16, jnp.bfloat16])
def test_half_precision_computed_in_float32(low):
    X = jnp.asarray(_abs_normal(), low)
    res = nmf(X, 3, solver="hals")
    ref = nmf(X.astype(jnp.float32), 3, solver="hals")
    assert res.W.dtype == low and res.H.dtype == low and res.loss.dtype == jnp.float32
    np.testing.assert_allclose(res.loss, ref.loss, rtol=1e-6)
    assert nmf_transform(res, X).W.dtype == low


def test_value_checks_on_data_captured_under_jit():
    # The call, jax.jit(lambda key: nmf(X, 10, key=key, init="random")), raised
    # TracerBoolConversionError from the finiteness check on the captured X. (solver "mu":
    # the cheapest kernel to compile; the checks are the same for every solver.)
    X = jnp.asarray(_abs_normal(), jnp.float32)
    kw = dict(init="random", solver="mu", max_iter=MAX_ITER)
    H = jnp.asarray(nmf(X, 3, **kw, key=jax.random.key(0)).H)
    eager = nmf(X, 10, key=jax.random.key(0), **kw)
    captured = jax.jit(lambda key: nmf(X, 10, key=key, **kw))(jax.random.key(0))
    passed = jax.jit(lambda X, key: nmf(X, 10, key=key, **kw))(X, jax.random.key(0))
    for res in (captured, passed):  # under jit the value checks are skipped for a traced X
        np.testing.assert_allclose(res.loss, eager.loss, rtol=1e-4)
    # Fused under jit, float32 rounding differs: mu's slowly converging small entries may stop
    # an iteration apart, so compare the fits (relative error), not the entries.
    err = _rel_err(X, nmf_transform(H, X, solver="mu").W, H)
    for W in (jax.jit(lambda: nmf_transform(H, X, solver="mu").W)(),
              jax.jit(partial(nmf_transform, solver="mu"))(H, X).W):
        np.testing.assert_allclose(_rel_err(X, W, H), err, rtol=1e-4)
    # concrete captured data is still checked
    bad, neg = X.at[0, 0].set(-1.0), -H
    with pytest.raises(ValueError, match="nmf: `X` must be non-negative"):
        jax.jit(lambda key: nmf(bad, 10, key=key, **kw))(jax.random.key(0))
    with pytest.raises(ValueError, match="nmf_transform: `H` must be non-negative"):
        jax.jit(lambda: nmf_transform(neg, X, solver="mu"))()


# ------------------------------------------------------------------------------------------------
# Property: any scale, shape and rank, against scikit-learn's converged objective


@settings(max_examples=5, deadline=None)
@given(exponent=st.integers(-12, 12), shape=st.sampled_from([(12, 8), (8, 12), (16, 10)]),
       rank=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_property_scale_against_sklearn(exponent, shape, rank, seed):
    # scikit-learn's cd run to tol 1e-10 from its own nndsvda start, on X itself, against ours
    # on 10^e X from our default start. NMF is non-convex: different starts may end in
    # different local minima. Over 44 random problems of these sizes and scales (exponents in
    # [-12, 12]) the ratio of our objective to scikit-learn's was at most 1.0002 in 42 and
    # 1.011, 1.012 in two (other local minima): 5% leaves room for such cases.
    rng = np.random.default_rng(seed)
    X = rng.random(shape) * (rng.random(shape) < 0.8)
    c = 10.0**exponent
    with jax.enable_x64(True):
        res = nmf(c * X, rank, tol=1e-6, max_iter=1000)
        ours = float(res.loss) / c**2
        assert bool(res.converged)
    ref = NMF(rank, init="nndsvda", solver="cd", tol=1e-10, max_iter=3000).fit(X)
    theirs = 0.5 * ref.reconstruction_err_**2
    assert ours <= 1.05 * theirs + 1e-12 * np.sum(X**2)
