"""truncated_svd, randomized_svd, svd_flip, reconstruct, singular_value_shrink and pca against
NumPy, SciPy and scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
from hypothesis import given
from hypothesis import strategies as st
from jax.experimental import sparse as jsparse
from jax.test_util import check_grads

import jaxfact as jf
from jaxfact import linop
from conftest import dense, tol

KEY = jax.random.key(0)


def spectrum_matrix(m, n, s, seed=0, dtype=np.float64):
    """An (m, n) matrix with singular values ``s`` and random singular vectors."""
    rng = np.random.default_rng(seed)
    r = len(s)
    U, _ = np.linalg.qr(rng.standard_normal((m, r)))
    V, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return ((U * np.asarray(s, np.float64)) @ V.T).astype(dtype)


def np_rank_k(X, k):
    U, s, Vt = np.linalg.svd(np.asarray(X, np.float64), full_matrices=False)
    return (U[:, :k] * s[:k]) @ Vt[:k]


# Shapes are shared across tests so each kernel compiles a handful of times only.
CASES = {
    "tall": lambda dt: spectrum_matrix(30, 12, np.geomspace(10, 0.1, 12), 1, dt),
    "wide": lambda dt: spectrum_matrix(12, 30, np.geomspace(10, 0.1, 12), 2, dt),
    "rank_deficient": lambda dt: spectrum_matrix(30, 12, [5.0, 4.0, 3.0], 3, dt),
    "repeated": lambda dt: spectrum_matrix(30, 12, [3, 3, 3, 1, 0.5, 0.5, 0.2], 4, dt),
}


# ------------------------------------------------------------------------------------------------
# truncated_svd


@pytest.mark.parametrize("case", sorted(CASES))
def test_truncated_svd_matches_numpy(case, dtype):
    X = CASES[case](dtype)
    k = 4 if case != "rank_deficient" else 3
    U, S, Vt = jf.truncated_svd(X, k)
    assert U.dtype == dtype and U.shape == (X.shape[0], k) and Vt.shape == (k, X.shape[1])
    s_ref = np.linalg.svd(X.astype(np.float64), compute_uv=False)[:k]
    scale = s_ref[0]
    np.testing.assert_allclose(S, s_ref, atol=tol(dtype, 10) * scale)
    # The rank-k approximation is unique when S[k-1] > S[k] (true in every case here).
    np.testing.assert_allclose(jf.reconstruct((U, S, Vt)), np_rank_k(X, k),
                               atol=tol(dtype, 10) * scale)
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=tol(dtype, 10))
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(k), atol=tol(dtype, 10))


def test_truncated_svd_zero_matrix():
    U, S, Vt = jf.truncated_svd(np.zeros((30, 12), np.float32), 4)
    np.testing.assert_array_equal(S, 0)
    assert np.all(np.isfinite(U)) and np.all(np.isfinite(Vt))
    np.testing.assert_array_equal(jf.reconstruct((U, S, Vt)), 0)


def test_signs_are_deterministic_and_follow_svd_flip():
    X = CASES["tall"](np.float32)
    U, S, Vt = jf.truncated_svd(X, 4)
    idx = np.argmax(np.abs(U), axis=0)
    assert np.all(U[idx, np.arange(4)] > 0)
    flipped = jf.svd_flip(jf.SVDResult(-U, S, -Vt))
    np.testing.assert_array_equal(flipped.U, U)
    np.testing.assert_array_equal(flipped.Vt, Vt)
    v_based = jf.svd_flip(jf.SVDResult(U, S, Vt), u_based=False)
    idx = np.argmax(np.abs(v_based.Vt), axis=1)
    assert np.all(v_based.Vt[np.arange(4), idx] > 0)
    np.testing.assert_allclose(jf.reconstruct(v_based), jf.reconstruct((U, S, Vt)), atol=1e-6)


@given(st.integers(0, 10_000), st.sampled_from([(30, 12), (12, 30)]), st.integers(1, 12))
def test_invariants(seed, shape, k):
    X = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    U, S, Vt = jf.truncated_svd(X, k)
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-5)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(k), atol=1e-5)
    assert np.all(np.diff(np.asarray(S)) <= 0) and np.all(S >= 0)
    # Eckart-Young: the squared error is exactly the energy of the discarded singular values.
    s_all = np.linalg.svd(X.astype(np.float64), compute_uv=False)
    err = np.sum((X.astype(np.float64) - np.asarray(jf.reconstruct((U, S, Vt)), np.float64)) ** 2)
    np.testing.assert_allclose(err, np.sum(s_all[k:] ** 2), atol=1e-4 * np.sum(s_all**2))


def test_jit_and_vmap():
    batch = np.stack([CASES["tall"](np.float32), CASES["rank_deficient"](np.float32)])
    out = jax.jit(jax.vmap(lambda X: jf.reconstruct(jf.truncated_svd(X, 3))))(batch)
    for b in range(2):
        np.testing.assert_allclose(out[b], np_rank_k(batch[b], 3), atol=1e-4)
    S = jax.vmap(lambda X, k: jf.randomized_svd(X, 3, key=k).S)(batch, jax.random.split(KEY, 2))
    for b in range(2):
        np.testing.assert_allclose(S[b], np.linalg.svd(batch[b], compute_uv=False)[:3], rtol=1e-3)


# ------------------------------------------------------------------------------------------------
# Gradients, including the (near-)degenerate case where JAX's own SVD derivative is NaN


def test_grad_of_top_k_energy_is_twice_the_rank_k_part(dtype):
    # d/dX sum_{i<k} s_i^2 = 2 X_k, the closed form; s = 3, 3, 3, 1, 0.5 ties inside the kept block.
    X = spectrum_matrix(8, 6, [3, 3, 3, 1, 0.5], 5, dtype)
    g = jax.grad(lambda X: jnp.sum(jf.truncated_svd(X, 3).S ** 2))(X)
    np.testing.assert_allclose(g, 2 * np_rank_k(X, 3), atol=tol(dtype, 100))


@pytest.mark.parametrize("spectrum", [[3, 3, 3, 1, 0.5], [3, 3 + 1e-9, 3 - 1e-9, 1, 0.5],
                                      [2, 2, 1]], ids=["tied", "nearly_tied", "diag221"])
def test_grad_of_reconstruction_is_finite_and_correct_at_ties(spectrum, x64):
    k = len(spectrum) - 2 if len(spectrum) > 3 else 2
    X = spectrum_matrix(8, 6, spectrum, 6)
    if spectrum == [2, 2, 1]:
        X = np.diag([2.0, 2.0, 1.0])
    G = np.random.default_rng(0).standard_normal(X.shape)
    loss = lambda X: jnp.sum(jf.reconstruct(jf.truncated_svd(X, k)) * G)
    g = np.asarray(jax.grad(loss)(X))
    assert np.all(np.isfinite(g))
    # Reference: central finite differences of NumPy's rank-k approximation, which is smooth
    # here because S[k-1] > S[k] (the ties are inside the kept block).
    eps = 1e-6
    fd = np.zeros_like(X)
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            E = np.zeros_like(X)
            E[i, j] = eps
            fd[i, j] = np.sum((np_rank_k(X + E, k) - np_rank_k(X - E, k)) * G) / (2 * eps)
    np.testing.assert_allclose(g, fd, atol=1e-7)


# Functions of (U, S, Vt) for the central-difference checks below, each a scalar <f(result), C>.
TIE_QUANTITIES = {
    "U U^T": lambda U, S, Vt, C: (U @ U.T * C["m"]).sum(),
    "V V^T": lambda U, S, Vt, C: (Vt.T @ Vt * C["n"]).sum(),
    "U diag(S) Vt": lambda U, S, Vt, C: ((U * S[..., None, :]) @ Vt * C["mn"]).sum(),
    "U^T U": lambda U, S, Vt, C: (U.T @ U * C["k"]).sum(),
    "sum S^2": lambda U, S, Vt, C: (S**2).sum(),
}


def _directional_errors(X, k, names, *, h=1e-6, seed=0):
    """|grad f . D - central difference of f along D| / |central difference| for each quantity f,
    with f evaluated through jf.truncated_svd (gradient) and NumPy's SVD (differences)."""
    rng = np.random.default_rng(seed)
    m, n = X.shape
    C = {"m": rng.standard_normal((m, m)), "n": rng.standard_normal((n, n)),
         "mn": rng.standard_normal((m, n)), "k": rng.standard_normal((k, k))}
    D = rng.standard_normal(X.shape)

    def numpy_svd(X):
        U, s, Vt = np.linalg.svd(X, full_matrices=False)
        return U[:, :k], s[:k], Vt[:k]

    errors = {}
    for name in names:
        q = TIE_QUANTITIES[name]
        g = jax.grad(lambda X: q(*jf.truncated_svd(X, k), C))(X)
        assert np.all(np.isfinite(g)), name
        ours = float(np.sum(np.asarray(g) * D))
        fd = (q(*numpy_svd(X + h * D), C) - q(*numpy_svd(X - h * D), C)) / (2 * h)
        errors[name] = abs(ours - fd) / max(abs(fd), 1.0)
    return errors


def test_grad_of_projector_and_gram_at_a_tie_issue_example(x64):
    # s = 3, 3 | 1, 0.5 with k = 2: the top-2 subspace is well defined (gap 3 -> 1) though its
    # basis is not; U^T U is constant.
    X = np.diag([3.0, 3.0, 1.0, 0.5])
    errors = _directional_errors(X, 2, ["U U^T", "U diag(S) Vt", "sum S^2"])
    assert max(errors.values()) < 1e-8, errors
    C = np.random.default_rng(1).standard_normal((2, 2))
    g = jax.grad(lambda X: jnp.sum(jf.truncated_svd(X, 2).U.T @ jf.truncated_svd(X, 2).U * C))(X)
    np.testing.assert_allclose(g, 0, atol=1e-14)


@pytest.mark.parametrize("gap", [0.0, 1e-9, 1e-6, 1e-3, 0.5])
def test_grad_through_ties_inside_the_kept_block(gap, x64):
    # s_1 = 3 + gap, s_2 = 3 are kept (k = 2), separated from s_3 = 1: every function below is
    # differentiable, and the U-side ones get their exact derivative at every gap.
    X = spectrum_matrix(8, 6, [3 + gap, 3, 1, 0.5, 0.2, 0.1], 7)
    errors = _directional_errors(X, 2, ["U U^T", "U diag(S) Vt", "U^T U", "sum S^2"])
    assert max(errors.values()) < 1e-8, errors
    # V V^T is exact when the tie is resolved (gap > sqrt(eps) s_1 ~ 4.5e-8); inside that band V's
    # tangent absorbs the symmetric part of U^T dX V (see truncated_svd), and the exact projector
    # derivative comes from the transposed problem, whose U is V.
    v_errors = _directional_errors(X.T, 2, ["U U^T"])
    assert v_errors["U U^T"] < 1e-8
    if gap >= 1e-6:
        assert _directional_errors(X, 2, ["V V^T"])["V V^T"] < 1e-8


@pytest.mark.parametrize("gap", [1e-6, 1e-3])
def test_grad_through_near_ties_across_the_cut(gap, x64):
    # s_2 = 1 + gap is kept and s_3 = 1 is not: the top-2 subspace is defined but turns fast
    # (derivatives of order 1 / gap), so the differences need a step well below the gap.
    X = spectrum_matrix(8, 6, [3, 1 + gap, 1, 0.5, 0.2, 0.1], 8)
    h = gap * 1e-4
    errors = _directional_errors(X, 2, ["U U^T", "V V^T", "U diag(S) Vt", "sum S^2"], h=h)
    # The differences themselves lose ~eps |f| / h to rounding (2e-5 for sum S^2 ~ 10 at h = 1e-10)
    # and ~(h / gap)^2 to truncation.
    assert max(errors.values()) < 1e-6 + 10 * np.finfo(np.float64).eps * 10 / h, errors


def test_grad_at_an_exact_tie_across_the_cut_is_finite_and_keeps_u_orthonormal(x64):
    # s_2 = s_3 with k = 2: the rank-2 truncation jumps, no derivative exists. What is returned is
    # finite, keeps U orthonormal to first order, and is exact for directions that do not mix the
    # tied pair (here dX = diag(1, 2, 0, 0): the pair keeps its order, no rotation).
    X = np.diag([3.0, 1.0, 1.0, 0.5])
    C = np.random.default_rng(2).standard_normal((4, 4))
    proj = lambda X: jnp.sum(jf.truncated_svd(X, 2).U @ jf.truncated_svd(X, 2).U.T * C)
    g = jax.grad(proj)(X)
    assert np.all(np.isfinite(g))
    gram = lambda X: jnp.sum(jf.truncated_svd(X, 2).U.T @ jf.truncated_svd(X, 2).U * C[:2, :2])
    np.testing.assert_allclose(jax.grad(gram)(X), 0, atol=1e-14)
    D = np.diag([1.0, 2.0, 0.0, 0.0])
    recon = lambda X: jf.reconstruct(jf.truncated_svd(X, 2))
    _, tangent = jax.jvp(recon, (X,), (D,))
    np.testing.assert_allclose(tangent, np.diag([1.0, 2.0, 0.0, 0.0]), atol=1e-14)


def test_pca_grad_of_the_components_projector_at_tied_variances(x64):
    # Centred data with singular values 3, 3 | 1, 0.5: the top-2 principal subspace is defined.
    rng = np.random.default_rng(4)
    n, d = 10, 5
    centring = np.eye(n) - 1.0 / n
    U, _ = np.linalg.qr(centring @ rng.standard_normal((n, 4)))
    V, _ = np.linalg.qr(rng.standard_normal((d, 4)))
    X = (U * [3.0, 3.0, 1.0, 0.5]) @ V.T + rng.standard_normal(d)
    C = rng.standard_normal((d, d))
    D = rng.standard_normal(X.shape)

    def numpy_projector(X):
        Vt = np.linalg.svd(X - X.mean(0), full_matrices=False)[2][:2]
        return np.sum(Vt.T @ Vt * C)

    g = jax.grad(lambda X: jnp.sum(jf.pca(X, 2).components.T @ jf.pca(X, 2).components * C))(X)
    h = 1e-6
    fd = (numpy_projector(X + h * D) - numpy_projector(X - h * D)) / (2 * h)
    assert abs(float(np.sum(np.asarray(g) * D)) - fd) < 1e-8 * max(abs(fd), 1.0)


def test_grad_matches_jax_away_from_ties(x64):
    X = CASES["tall"](np.float64)
    G = np.random.default_rng(1).standard_normal(X.shape)

    def jax_rank_k(X):
        U, s, Vt = jnp.linalg.svd(X, full_matrices=False)
        return (U[:, :4] * s[None, :4]) @ Vt[:4]

    ours = jax.grad(lambda X: jnp.sum(jf.reconstruct(jf.truncated_svd(X, 4)) * G))(X)
    ref = jax.grad(lambda X: jnp.sum(jax_rank_k(X) * G))(X)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    check_grads(lambda X: jf.reconstruct(jf.truncated_svd(X, 4)), (X,), order=1,
                modes=["fwd", "rev"])


# ------------------------------------------------------------------------------------------------
# randomized_svd


def test_randomized_svd_matches_sklearn_and_exact(dtype):
    from sklearn.utils.extmath import randomized_svd as sk_randomized_svd

    X = spectrum_matrix(300, 120, np.geomspace(100, 1, 60), 7, dtype)
    k = 10
    U, S, Vt = jf.randomized_svd(X, k, key=KEY)
    s_exact = np.linalg.svd(X.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(S, s_exact[:k], rtol=1e-4)
    err = np.linalg.norm(X - np.asarray(jf.reconstruct((U, S, Vt)), np.float64))
    opt = np.sqrt(np.sum(s_exact[k:] ** 2))
    _, s_sk, _ = sk_randomized_svd(X, k, n_iter=4, random_state=0)
    np.testing.assert_allclose(S, s_sk, rtol=1e-4)
    assert err <= opt * (1 + 1e-3)


def test_randomized_svd_wide_and_halko_bound():
    # Slowly decaying spectrum; Halko et al. (1.10): E||A - U S V*|| <= [1 + 4 sqrt(2 min(m, n) /
    # (k - 1))]^(1 / (2q + 1)) sigma_{k+1}. Checked on the mean over keys.
    s = 1.0 / np.arange(1, 101) ** 0.5
    X = spectrum_matrix(100, 250, s, 8, np.float32)
    k, q = 10, 1
    errs = []
    for key in jax.random.split(KEY, 5):
        U, S, Vt = jf.randomized_svd(X, k, key=key, n_iter=q)
        assert U.shape == (100, k) and Vt.shape == (k, 250)
        errs.append(np.linalg.norm(X - np.asarray(jf.reconstruct((U, S, Vt))), 2))
    bound = (1 + 4 * np.sqrt(2 * 100 / (k - 1))) ** (1 / (2 * q + 1)) * s[k] + s[k]  # (1.11)
    assert np.mean(errs) <= bound
    assert np.mean(errs) >= s[k] * (1 - 1e-5)  # never better than optimal


def test_randomized_svd_same_key_same_factors():
    X = CASES["tall"](np.float32)
    a = jf.randomized_svd(X, 4, key=KEY)
    b = jf.randomized_svd(X, 4, key=KEY)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_randomized_svd_sparse_and_operator_inputs_agree_with_dense():
    rng = np.random.default_rng(9)
    sp = scipy.sparse.random(200, 80, density=0.05, random_state=rng, format="csr",
                             dtype=np.float32)
    dense = sp.toarray()
    coo = sp.tocoo()
    forms = {
        "dense": jnp.asarray(dense),
        "bcoo": jsparse.BCOO.from_scipy_sparse(sp),
        "scipy": sp,
        "observed": linop.ObservedMatrix(jnp.asarray(coo.row, jnp.int32),
                                         jnp.asarray(coo.col, jnp.int32),
                                         jnp.asarray(coo.data), sp.shape),
        "operator": linop.LinearOperator(lambda B: dense @ B, lambda B: dense.T @ B, sp.shape,
                                         np.float32),
    }
    results = {name: jf.randomized_svd(A, 6, key=KEY) for name, A in forms.items()}
    for name, (U, S, Vt) in results.items():
        np.testing.assert_allclose(S, results["dense"].S, rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(jf.reconstruct((U, S, Vt)), jf.reconstruct(results["dense"]),
                                   atol=1e-4, err_msg=name)
    # SciPy's Lanczos solver on the same sparse matrix (its order is ascending). The spectrum of a
    # random sparse matrix is flat, so the subspace iteration needs more steps to converge.
    s_ref = np.sort(scipy.sparse.linalg.svds(sp.astype(np.float64), k=6,
                                             return_singular_vectors=False))[::-1]
    S = jf.randomized_svd(forms["bcoo"], 6, key=KEY, n_iter=40).S
    np.testing.assert_allclose(S, s_ref, rtol=1e-4)


def test_randomized_svd_full_rank_request_is_exact():
    X = CASES["wide"](np.float32)
    U, S, Vt = jf.randomized_svd(X, 12, key=KEY, n_oversamples=0, n_iter=0)
    np.testing.assert_allclose(jf.reconstruct((U, S, Vt)), X, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# singular_value_shrink


def test_singular_value_shrink_is_the_nuclear_prox(dtype):
    X = CASES["tall"](dtype)
    tau = 0.5
    U, S, Vt = jf.singular_value_shrink(X, tau)
    u, s, vt = np.linalg.svd(X.astype(np.float64), full_matrices=False)
    ref = (u * np.maximum(s - tau, 0)) @ vt
    np.testing.assert_allclose(jf.reconstruct((U, S, Vt)), ref, atol=tol(dtype, 100))
    # Prox optimality: the minimizer of 1/2||Z - X||^2 + tau ||Z||_* beats nearby points.
    obj = lambda Z: 0.5 * np.sum((Z - X) ** 2) + tau * np.sum(np.linalg.svd(Z, compute_uv=False))
    Z = np.asarray(jf.reconstruct((U, S, Vt)), np.float64)
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert obj(Z) <= obj(Z + 1e-3 * rng.standard_normal(Z.shape)) + tol(dtype, 10) * obj(Z)


def test_singular_value_shrink_tau_is_traced():
    from jaxfact import svd as svd_module

    X = CASES["tall"](np.float32)
    jf.singular_value_shrink(X, 0.1)
    before = svd_module._shrink._cache_size()
    jf.singular_value_shrink(X, 0.7)
    assert svd_module._shrink._cache_size() == before


# ------------------------------------------------------------------------------------------------
# pca


@pytest.mark.parametrize("randomized", [False, True])
def test_pca_matches_sklearn(randomized, dtype):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(10)
    X = (rng.standard_normal((120, 20)) @ np.diag(np.geomspace(10, 0.1, 20)) + 3.0).astype(dtype)
    ref = PCA(5, svd_solver="full").fit(X.astype(np.float64))
    res = jf.pca(X, 5, key=KEY if randomized else None)
    rtol = 1e-4 if randomized else tol(dtype, 100)
    np.testing.assert_allclose(res.explained_variance, ref.explained_variance_, rtol=rtol)
    np.testing.assert_allclose(res.explained_variance_ratio, ref.explained_variance_ratio_,
                               rtol=rtol)
    np.testing.assert_allclose(res.mean, ref.mean_, rtol=tol(dtype, 10))
    np.testing.assert_allclose(res.components, ref.components_, atol=100 * rtol)
    np.testing.assert_allclose(jf.pca_transform(res, X), ref.transform(X.astype(np.float64)),
                               atol=1000 * rtol)


def test_pca_differs_from_svd_by_centring():
    X = CASES["tall"](np.float32) + 5.0
    res = jf.pca(X, 3)
    approx = jf.pca_transform(res, X) @ res.components + res.mean[None, :]
    Xc = X - X.mean(0)
    np.testing.assert_allclose(approx - res.mean[None, :], np_rank_k(Xc, 3), atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Bad input


def test_errors():
    X = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"truncated_svd: `X` must be 2-D"):
        jf.truncated_svd(np.ones(5, np.float32), 1)
    with pytest.raises(ValueError, match=r"truncated_svd: `rank` must be an integer in \[1, 4\]; got 0"):
        jf.truncated_svd(X, 0)
    with pytest.raises(ValueError, match=r"`rank` must be an integer in \[1, 4\]; got 5"):
        jf.randomized_svd(X, 5, key=KEY)
    with pytest.raises(TypeError, match=r"`rank` must be a Python int"):
        jf.truncated_svd(X, 2.0)
    with pytest.raises(TypeError, match=r"`X` must be floating point; got dtype int"):
        jf.truncated_svd(np.ones((5, 4), np.int32), 2)
    with pytest.raises(TypeError, match=r"`X` must be real floating point; got complex"):
        jf.truncated_svd(np.ones((5, 4), np.complex64), 2)
    bad = X.copy()
    bad[0, 0] = np.nan
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match=r"`X` must be finite; got 1 NaN and 1 Inf entries"):
        jf.truncated_svd(bad, 2)
    with pytest.raises(ValueError, match=r"randomized_svd: `key` is required"):
        jf.randomized_svd(X, 2, key=None)
    with pytest.raises(TypeError, match=r"`key` must be a jax.random key"):
        jf.randomized_svd(X, 2, key=0)
    with pytest.raises(ValueError, match=r"`n_iter` must be an integer in \[0, inf\]; got -1"):
        jf.randomized_svd(X, 2, key=KEY, n_iter=-1)
    with pytest.raises(ValueError, match=r"`n_oversamples` must be an integer in \[0, inf\]"):
        jf.randomized_svd(X, 2, key=KEY, n_oversamples=-3)
    with pytest.raises(ValueError, match=r"singular_value_shrink: `tau` must be a finite number"):
        jf.singular_value_shrink(X, -1.0)
    with pytest.raises(ValueError, match=r"pca: `X` needs at least 2 rows"):
        jf.pca(np.ones((1, 4), np.float32), 1)
    with pytest.raises(ValueError, match=r"pca_transform: `X` must have 4 columns"):
        jf.pca_transform(jf.pca(X, 1), np.ones((3, 5), np.float32))
    with pytest.raises(TypeError, match=r"must be a dense array here; got a sparse BCOO"):
        jf.truncated_svd(jsparse.BCOO.fromdense(X), 1)


def test_input_errors_name_the_function_and_argument():
    X = np.ones((6, 4), np.float32)
    for shape in [(0, 4), (4, 0)]:
        with pytest.raises(ValueError, match=r"truncated_svd: `X` is empty \(shape"):
            jf.truncated_svd(np.zeros(shape, np.float32), 1)
    with pytest.raises(ValueError, match=r"randomized_svd: `X` is empty"):
        jf.randomized_svd(np.zeros((0, 4), np.float32), 1, key=KEY)
    with pytest.raises(ValueError, match=r"pca: `X` is empty"):
        jf.pca(np.zeros((3, 0), np.float32), 1)
    sparse = scipy.sparse.random(20, 10, density=0.3, format="csr", dtype=np.float32,
                                 random_state=0)
    with pytest.raises(TypeError, match=r"truncated_svd: `X` must be a dense array here; got a "
                                        r"SciPy sparse csr_matrix\. Use jaxfact.randomized_svd"):
        jf.truncated_svd(sparse, 2)
    with pytest.raises(TypeError, match=r"pca: `X` must be a dense array here; got a SciPy "
                                        r"sparse .*jaxfact.randomized_svd.*X.toarray\(\)"):
        jf.pca(sparse, 2)
    with pytest.raises(TypeError, match=r"pca: `X` must be a dense array here; got a sparse BCOO"):
        jf.pca(jsparse.BCOO.fromdense(X), 2)
    res = jf.truncated_svd(X, 2)
    for fn in (jf.svd_flip, jf.reconstruct):
        name = fn.__name__
        with pytest.raises(TypeError, match=rf"{name}: `result` must be a \(U, S, Vt\) triple "
                                            r"such as an SVDResult; got an array of shape"):
            fn(X)
        with pytest.raises(TypeError, match=rf"{name}: `result` must be .*; got a tuple of 2"):
            fn(tuple(res[:2]))
        # reconstruct (jaxfact.factored) accepts leading batch axes: a 2-D S is a batch whose
        # shapes do not line up.
        batch = " after common batch axes" if fn is jf.reconstruct else ""
        with pytest.raises(ValueError, match=rf"{name}: `result.S` must be 1-D" if not batch else
                           rf"{name}: `result` factors must have shapes .*{batch}; got "
                           r"\(6, 2\), \(2, 2\)"):
            fn((res.U, jnp.diag(res.S), res.Vt))
        with pytest.raises(ValueError, match=rf"{name}: `result` factors must have shapes "
                                             rf"\(m, k\), \(k,\), \(k, n\){batch}; got "
                                             r"\(6, 2\), \(1,\)"):
            fn((res.U, res.S[:1], res.Vt))
        with pytest.raises(TypeError, match=rf"{name}: `result.U` must be floating point"):
            fn((np.ones((6, 2), np.int32), res.S, res.Vt))
    with pytest.raises(TypeError, match=r"randomized_svd: a LinearOperator `X` must compute in "
                                        r"float32 or float64"):
        op = jf.LinearOperator(lambda B: B, lambda B: B, (3, 3), jnp.float16)
        jf.randomized_svd(op, 1, key=KEY)


def test_predict_validates_the_result():
    res = jf.truncated_svd(CASES["tall"](np.float32), 3)
    rows, cols = jnp.array([0, 1]), jnp.array([2, 3])
    with pytest.raises(TypeError, match=r"predict: `result` must be a \(U, S, Vt\) triple"):
        jf.predict(jf.reconstruct(res), rows, cols)
    with pytest.raises(TypeError, match=r"predict: `result` must be .*; got a tuple of 2"):
        jf.predict(tuple(res[:2]), rows, cols)
    with pytest.raises(ValueError, match=r"predict: `result` factors must have shapes"):
        jf.predict((res.U, res.S[:2], res.Vt), rows, cols)
    # Stacked results (leading batch axes) stay accepted.
    stacked = (jnp.stack([res.U, res.U]), jnp.stack([res.S, 2 * res.S]),
               jnp.stack([res.Vt, res.Vt]))
    np.testing.assert_allclose(jf.predict(stacked, rows, cols)[1],
                               2 * jf.predict(res, rows, cols), rtol=1e-6)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32_and_returned_as_given(half):
    X = CASES["tall"](np.float32)
    Xh = jnp.asarray(X, half)
    X32 = np.asarray(Xh, np.float32)   # the values the half-precision input actually holds
    eps = float(jnp.finfo(half).eps)
    for name, fn in [("truncated_svd", lambda X: jf.truncated_svd(X, 3)),
                     ("randomized_svd", lambda X: jf.randomized_svd(X, 3, key=KEY)),
                     ("randomized_svd_bcoo",
                      lambda X: jf.randomized_svd(jsparse.BCOO.fromdense(X), 3, key=KEY)),
                     ("pca", lambda X: jf.pca(X, 3)),
                     ("pca_randomized", lambda X: jf.pca(X, 3, key=KEY)),
                     ("singular_value_shrink", lambda X: jf.singular_value_shrink(X, 1.0))]:
        got, want = fn(Xh), fn(X32)
        for g, w in zip(got, want):
            assert g.dtype == jnp.dtype(half), name
            # Only the final rounding to the half dtype differs.
            np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=eps,
                                       atol=eps * float(np.max(np.abs(w))), err_msg=name)


def test_randomized_svd_of_huge_float32_entries_is_exact():
    # Entries ~1e17: the Gram matrix of CholeskyQR would square them past float32's range.
    X = spectrum_matrix(200, 200, np.geomspace(1e19, 1e10, 200), 3, np.float32)
    ref = np.linalg.svd(X.astype(np.float64), compute_uv=False)[:5]
    S = np.asarray(jf.randomized_svd(X, 5, key=KEY).S, np.float64)
    np.testing.assert_allclose(S, ref, rtol=1e-4)
    np.testing.assert_allclose(S, np.asarray(jf.truncated_svd(X, 5).S, np.float64), rtol=1e-4)
    res = jf.pca(X, 5, key=KEY)
    assert np.all(np.isfinite(res.explained_variance_ratio))
    np.testing.assert_allclose(res.explained_variance_ratio, jf.pca(X / 1e18, 5, key=KEY)
                               .explained_variance_ratio, rtol=1e-4)


@given(st.floats(-30, 30), st.sampled_from([(30, 12), (12, 30)]), st.sampled_from([1, 4]),
       st.integers(0, 1000))
def test_svds_and_pca_are_scale_invariant(log_scale, shape, k, seed):
    # float32 spans 1e-38..3e38: every factorization must give c times the factors of X for c in
    # 1e-30..1e30 (PCA's variances, S**2, must stay representable: c in 1e-15..1e15).
    X = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    c = np.float32(10.0**log_scale)
    cX = X * c
    scale = float(np.linalg.norm(X))
    for name, fn in [("truncated_svd", lambda X: jf.truncated_svd(X, k)),
                     ("randomized_svd", lambda X: jf.randomized_svd(X, k, key=KEY))]:
        ref, got = fn(X), fn(cX)
        np.testing.assert_allclose(np.asarray(got.S, np.float64) / c, ref.S,
                                   rtol=1e-4, atol=1e-5 * scale, err_msg=name)
        np.testing.assert_allclose(dense(got) / c, dense(ref), atol=1e-4 * scale, err_msg=name)
    c_pca = np.float32(10.0 ** (log_scale / 2))
    for key in (None, KEY):
        ref, got = jf.pca(X, k, key=key), jf.pca(X * c_pca, k, key=key)
        np.testing.assert_allclose(got.explained_variance_ratio, ref.explained_variance_ratio,
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(got.singular_values, np.float64) / c_pca,
                                   ref.singular_values, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(np.asarray(got.explained_variance, np.float64) / c_pca**2,
                                   ref.explained_variance, rtol=1e-3, atol=1e-5 * scale**2)


def test_pca_of_constant_rows_has_exactly_zero_variance():
    X = np.tile(np.float32([[0.1, 3.3, 7.7, -2.5]]), (6, 1))
    for key in (None, KEY):
        res = jf.pca(X, 2, key=key)
        np.testing.assert_array_equal(res.explained_variance, 0)
        np.testing.assert_array_equal(res.explained_variance_ratio, 0)
        np.testing.assert_array_equal(res.singular_values, 0)
        assert np.all(np.isfinite(res.components))
    # A constant column is centred to exact zeros, so it carries no variance (up to the SVD's
    # rounding) and the components of the others do not load on it.
    Y = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    Y[:, 1] = 3.3
    res = jf.pca(Y, 4)
    np.testing.assert_allclose(res.explained_variance[-1], 0, atol=1e-6)
    np.testing.assert_allclose(np.sum(res.explained_variance_ratio), 1, rtol=1e-6)
    np.testing.assert_allclose(res.components[:3, 1], 0, atol=1e-6)


def test_inputs_are_not_modified_and_value_checks_skip_under_jit():
    X = CASES["tall"](np.float32)
    copy = X.copy()
    jf.truncated_svd(X, 3)
    jf.randomized_svd(X, 3, key=KEY)
    jf.pca(X, 3)
    np.testing.assert_array_equal(X, copy)
    # Under jit the NaN check cannot run; the function still traces and returns (NaN) factors.
    bad = X.copy()
    bad[0, 0] = np.nan
    S = jax.jit(lambda X: jf.truncated_svd(X, 3).S)(bad)
    assert S.shape == (3,)


def test_checks_true_stages_value_checks_under_jit():
    from jax.experimental import checkify

    bad = CASES["tall"](np.float32)
    bad[2, 3] = np.nan
    f = checkify.checkify(jax.jit(lambda X: jf.truncated_svd(X, 3, checks=True).S))
    err, _ = f(bad)
    with pytest.raises(Exception, match=r"truncated_svd: `X` must be finite"):
        err.throw()
    err, S = f(CASES["tall"](np.float32))
    assert err.get() is None and S.shape == (3,)
    g = checkify.checkify(jax.jit(lambda X: jf.randomized_svd(X, 3, key=KEY, checks=True).S))
    with pytest.raises(Exception, match=r"randomized_svd: `X` must be finite"):
        g(bad)[0].throw()
    h = checkify.checkify(jax.jit(lambda X: jf.singular_value_shrink(X, 0.5, checks=True).S))
    with pytest.raises(Exception, match=r"singular_value_shrink: `X` must be finite"):
        h(bad)[0].throw()
    res = jf.pca(CASES["tall"](np.float32), 2)
    p = checkify.checkify(jax.jit(lambda X: jf.pca_transform(res, X, checks=True)))
    with pytest.raises(Exception, match=r"pca_transform: `X` must be finite"):
        p(bad)[0].throw()
    assert p(CASES["tall"](np.float32))[0].get() is None
