"""energy_rank and optimal_hard_threshold (Gavish & Donoho 2014)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfact as jf
from jaxfact.rank import hard_threshold, lambda_star, marchenko_pastur_median, omega


@pytest.mark.parametrize("beta, lam, om", [(1.0, 2.3094, 2.8584), (0.5, 1.9786, 2.1712),
                                            (0.25, 1.7580, 1.8369), (0.1, 1.5816, 1.6088)])
def test_threshold_coefficients_match_the_paper(beta, lam, om):
    # Values computed from the paper's formulas (papers.md section 9); 4/sqrt(3) for beta = 1.
    assert lambda_star(beta) == pytest.approx(lam, abs=1e-4)
    assert omega(beta) == pytest.approx(om, abs=1e-4)
    # The cubic fit of their Eq. (5) agrees to about 1e-2.
    assert omega(beta) == pytest.approx(0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43,
                                        abs=6e-3)
    assert lambda_star(1.0) == pytest.approx(4 / np.sqrt(3), rel=1e-12)


def test_marchenko_pastur_median_by_sampling():
    # The median eigenvalue of W = Z Z^T / n (Z m x n Gaussian, beta = m / n) tends to mu_beta.
    rng = np.random.default_rng(0)
    m, n = 400, 800
    Z = rng.standard_normal((m, n))
    eig = np.linalg.eigvalsh(Z @ Z.T / n)
    assert np.median(eig) == pytest.approx(marchenko_pastur_median(0.5), rel=1e-2)


def low_rank_plus_noise(m, n, signal, sigma, seed):
    rng = np.random.default_rng(seed)
    r = len(signal)
    U, _ = np.linalg.qr(rng.standard_normal((m, r)))
    V, _ = np.linalg.qr(rng.standard_normal((n, r)))
    X = (U * signal) @ V.T
    return X, X + sigma * rng.standard_normal((m, n))


@pytest.mark.parametrize("shape", [(200, 200), (100, 300)])
def test_optimal_hard_threshold_finds_the_detectable_rank(shape):
    m, n = shape
    sigma = 1.0
    # Detection edge is (1 + sqrt(beta)) sqrt(n) sigma; signals well above are kept, well below not.
    edge = (1 + np.sqrt(min(m, n) / max(m, n))) * np.sqrt(max(m, n)) * sigma
    signal = np.array([6.0, 4.0, 3.0, 2.5, 0.3]) * edge
    _, Y = low_rank_plus_noise(m, n, signal, sigma, 1)
    S = np.linalg.svd(Y, compute_uv=False).astype(np.float32)
    assert jf.optimal_hard_threshold(S, Y.shape, sigma=sigma) == 4
    assert jf.optimal_hard_threshold(S, Y.shape) == 4
    tau = float(jf.hard_threshold(S, Y.shape, sigma=sigma))
    assert tau == pytest.approx(lambda_star(min(m, n) / max(m, n)) * np.sqrt(max(m, n)), rel=1e-6)
    # A transposed matrix gets the same rank.
    assert jf.optimal_hard_threshold(S, (n, m)) == 4


def test_hard_threshold_beats_truncation_at_the_true_rank():
    # Gavish & Donoho: optimal hard thresholding has lower MSE than TSVD at the true rank when
    # some signal sits near the detection edge (AMSE 3 n r sigma^2 against 5 n r sigma^2).
    n, sigma = 200, 1.0
    # In units of sqrt(n) sigma the detection edge is 1; components at 1.6 and 1.3 are detectable
    # but too noisy to be worth keeping (their observed values fall below 4/sqrt(3)).
    signal = np.array([4.0, 3.0, 2.5, 1.6, 1.3]) * np.sqrt(n) * sigma
    mse_ht, mse_tsvd = [], []
    for seed in range(4):
        X, Y = low_rank_plus_noise(n, n, signal, sigma, seed)
        U, S, Vt = np.linalg.svd(Y)
        k = jf.optimal_hard_threshold(S.astype(np.float32), Y.shape, sigma=sigma)
        mse_ht.append(np.sum(((U[:, :k] * S[:k]) @ Vt[:k] - X) ** 2))
        mse_tsvd.append(np.sum(((U[:, :5] * S[:5]) @ Vt[:5] - X) ** 2))
    assert np.mean(mse_ht) < np.mean(mse_tsvd)
    assert np.mean(mse_ht) <= 3 * n * 5 * sigma**2 * 1.1


def test_energy_rank_matches_numpy_and_sklearn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 30)) @ np.diag(np.geomspace(10, 0.1, 30))
    S = np.linalg.svd(X - X.mean(0), compute_uv=False)
    for energy in [0.5, 0.9, 0.95, 0.999, 1.0]:
        ref = int(np.searchsorted(np.cumsum(S**2) / np.sum(S**2), energy) + 1)
        k = jf.energy_rank(S.astype(np.float32), energy)
        assert isinstance(k, int) and k == min(ref, 30)
        if energy < 1:
            assert k == PCA(n_components=energy, svd_solver="full").fit(X).n_components_
    assert jf.energy_rank(jnp.array([3.0, 2.0, 1.0]), 0.9) == 2
    assert jf.energy_rank(jnp.zeros(4), 0.5) == 1


def test_traced_inputs_give_traced_ranks():
    S = jnp.array([3.0, 2.0, 1.0, 0.5])
    k = jax.jit(lambda S: jf.energy_rank(S, 0.9))(S)
    assert int(k) == 2
    k2 = jax.jit(lambda S: jf.optimal_hard_threshold(S, (4, 10), sigma=0.1))(S)
    assert int(k2) == jf.optimal_hard_threshold(S, (4, 10), sigma=0.1)


def test_errors():
    S = np.array([3.0, 2.0, 1.0], np.float32)
    with pytest.raises(ValueError, match=r"energy_rank: `energy` must be a finite number in \(0.0, 1.0\]; got 0.0"):
        jf.energy_rank(S, 0.0)
    with pytest.raises(ValueError, match=r"energy_rank: `S` must be 1-D"):
        jf.energy_rank(np.ones((2, 2), np.float32), 0.5)
    with pytest.raises(ValueError, match=r"energy_rank: `S` must be non-negative"):
        jf.energy_rank(-S, 0.5)
    with pytest.raises(ValueError, match=r"energy_rank: `S` must be finite"):
        jf.energy_rank(np.array([1.0, np.nan], np.float32), 0.5)
    with pytest.raises(ValueError, match=r"must hold all min\(shape\) = 5 of them; got 3"):
        jf.optimal_hard_threshold(S, (5, 10))
    with pytest.raises(ValueError, match=r"between 1 and min\(shape\) = 2 singular values; got 3"):
        jf.optimal_hard_threshold(S, (2, 10), sigma=1.0)
    with pytest.raises(ValueError, match=r"`shape` must be a pair"):
        jf.optimal_hard_threshold(S, 5)
    with pytest.raises(ValueError, match=r"`sigma` must be a finite number in \[0.0, inf\]; got -1.0"):
        jf.optimal_hard_threshold(S, (3, 10), sigma=-1.0)


def test_energy_rank_needs_descending_singular_values_not_variances():
    with pytest.raises(ValueError, match=r"energy_rank: `S` must be non-increasing \(singular "
                                         r"values in descending order\); got S\[1\] = 2.0 > S\[0\]"):
        jf.energy_rank(np.array([1.0, 2.0, 3.0], np.float32), 0.5)
    # Ties are fine.
    assert jf.energy_rank(np.array([2.0, 2.0, 1.0], np.float32), 0.4) == 1
    # The docstring's PCA recipe: singular values, or the square roots of the variances.
    X = np.random.default_rng(1).standard_normal((60, 20)) @ np.diag(np.geomspace(5, 0.2, 20))
    res = jf.pca(X.astype(np.float32), 20)
    k = jf.energy_rank(res.singular_values, 0.9)
    assert jf.energy_rank(jnp.sqrt(res.explained_variance), 0.9) == k
    assert jf.energy_rank(res.explained_variance, 0.9) < k   # squares the variances: too few


def test_checks_true_stages_value_checks_under_jit():
    from jax.experimental import checkify

    bad = jnp.array([3.0, jnp.nan, 1.0])
    f = checkify.checkify(jax.jit(lambda S: jf.energy_rank(S, 0.9, checks=True)))
    with pytest.raises(Exception, match=r"energy_rank: `S` must be finite"):
        f(bad)[0].throw()
    assert f(jnp.array([3.0, 2.0, 1.0]))[0].get() is None
    g = checkify.checkify(jax.jit(lambda S: jf.optimal_hard_threshold(S, (3, 4), checks=True)))
    with pytest.raises(Exception, match=r"optimal_hard_threshold: `S` must be non-negative"):
        g(jnp.array([3.0, 2.0, -1.0]))[0].throw()
    h = checkify.checkify(jax.jit(lambda S: hard_threshold(S, (3, 4), 1.0, checks=True)))
    with pytest.raises(Exception, match=r"hard_threshold: `S` must be finite"):
        h(bad)[0].throw()
