"""Every public function that takes data runs inside ``jax.jit``, with its data closed over by the
jitted function (concrete arrays inside a trace: the value checks must still run, eagerly) and with
its data passed as arguments (tracers: the value checks are skipped), and gives the eager result.

``build_vocab`` and ``encode_corpus`` take Python strings, which cannot be traced, and
``synthetic_ratings`` takes no data; they are not here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse as jsparse

import jaxfact as jf

KEY = jax.random.key(0)
_rng = np.random.default_rng(0)

X = _rng.standard_normal((12, 8)).astype(np.float32)
X_POS = np.abs(X) + 0.1
W = (_rng.random((12, 8)) < 0.7).astype(np.float32)
RES = jf.truncated_svd(X, 3)
PCA_RES = jf.pca(X, 3)
S_ALL = np.linalg.svd(X, compute_uv=False)
H = jf.nmf(X_POS, 3, max_iter=20).H

# Observed entries of a 10 x 9 matrix of rank 2: every (row, col) pair at most once.
_cells = _rng.permutation(90)[:50]
ROWS = (_cells // 9).astype(np.int32)
COLS = (_cells % 9).astype(np.int32)
_full = _rng.standard_normal((10, 2)) @ _rng.standard_normal((2, 9))
VALUES = _full[ROWS, COLS].astype(np.float32)
COUNTS = np.abs(VALUES) * 3
SHAPE = (10, 9)
COMPLETION = jf.soft_impute(ROWS, COLS, VALUES, SHAPE, lam=0.5, rank=3, max_iter=5)
BIASED = jf.biased_mf(ROWS, COLS, VALUES, SHAPE, 2, max_iter=3, key=KEY)
P_FAC = _rng.standard_normal((10, 2)).astype(np.float32)
Q_FAC = _rng.standard_normal((9, 2)).astype(np.float32)
TOKENS = _rng.integers(-1, 6, 40).astype(np.int32)
COOC = np.asarray(jf.cooccurrence(TOKENS, 6, window=2).todense()) + 1.0
COOC_SPARSE = jsparse.BCOO.fromdense(COOC)
RESTARTS = jax.vmap(lambda k: jf.nmf(X_POS, 3, init="random", key=k, max_iter=5))(
    jax.random.split(KEY, 3))


def _from_table(method, key=None):
    def run(table):
        return jf.nn.FactorizedEmbed.from_table(table, 3, method=method, key=key).table()
    return run


# name -> (function of the data arrays only, the data arrays). Ranks, shapes and options are fixed
# in the function, so that only arrays cross the jit boundary.
CASES = {
    "truncated_svd": (lambda X: jf.truncated_svd(X, 3), (X,)),
    "randomized_svd": (lambda X: jf.randomized_svd(X, 3, key=KEY), (X,)),
    "svd_flip": (lambda r: jf.svd_flip(r, u_based=False), (RES,)),
    "reconstruct": (jf.reconstruct, (RES,)),
    "singular_value_shrink": (lambda X: jf.singular_value_shrink(X, 0.5), (X,)),
    "pca": (lambda X: jf.pca(X, 3), (X,)),
    "pca_randomized": (lambda X: jf.pca(X, 3, key=KEY), (X,)),
    "pca_transform": (jf.pca_transform, (PCA_RES, X)),
    "energy_rank": (lambda S: jf.energy_rank(S, 0.9), (S_ALL,)),
    "hard_threshold": (lambda S: jf.hard_threshold(S, X.shape), (S_ALL,)),
    "optimal_hard_threshold": (lambda S: jf.optimal_hard_threshold(S, X.shape), (S_ALL,)),
    "nmf": (lambda X: jf.nmf(X, 3, init="random", key=KEY, max_iter=20), (X_POS,)),
    "nmf_init": (lambda X: jf.nmf_init(X, 3), (X_POS,)),
    "nmf_transform": (lambda X, H: jf.nmf_transform(H, X, max_iter=20), (X_POS, H)),
    "svt": (lambda r, c, v: jf.predict(jf.svt(r, c, v, SHAPE, max_iter=5), r, c),
            (ROWS, COLS, VALUES)),
    "soft_impute": (lambda r, c, v: jf.soft_impute(r, c, v, SHAPE, lam=0.5, rank=3,
                                                   max_iter=5), (ROWS, COLS, VALUES)),
    "soft_impute_path": (lambda r, c, v, lams: jf.soft_impute_path(
        r, c, v, SHAPE, lams=lams, rank=3, max_iter=5),
        (ROWS, COLS, VALUES, np.array([1.0, 0.5], np.float32))),
    "predict": (jf.predict, (COMPLETION, ROWS, COLS)),
    "wlra": (lambda X, W: jf.wlra(X, W, 2, max_iter=5), (X, W)),
    "biased_mf": (lambda r, c, v: jf.biased_mf(r, c, v, SHAPE, 2, max_iter=3, key=KEY),
                  (ROWS, COLS, VALUES)),
    "predict_biased_mf": (jf.predict, (BIASED, ROWS, COLS)),
    "implicit_als": (lambda r, c, n: jf.implicit_als(r, c, n, SHAPE, 2, key=KEY, max_iter=3),
                     (ROWS, COLS, COUNTS)),
    "implicit_loss": (jf.implicit_loss, (P_FAC, Q_FAC, ROWS, COLS, COUNTS)),
    "rmse": (jf.rmse, (VALUES, COUNTS)),
    "mae": (jf.mae, (VALUES, COUNTS)),
    "precision_at_k": (lambda P, Q, r, c: jf.precision_at_k(P, Q, (r, c), k=3),
                       (P_FAC, Q_FAC, ROWS, COLS)),
    "ndcg_at_k": (lambda P, Q, r, c: jf.ndcg_at_k(P, Q, (r, c), k=3), (P_FAC, Q_FAC, ROWS, COLS)),
    "train_test_split": (lambda r, c, v: jf.train_test_split(r, c, v, test_fraction=0.25, key=KEY),
                         (ROWS, COLS, VALUES)),
    "cooccurrence": (lambda t: jf.cooccurrence(t, 6, window=2).todense(), (TOKENS,)),
    "ppmi_dense": (lambda C: jf.ppmi(C), (COOC,)),
    "ppmi_sparse": (lambda C: jf.ppmi(C).todense(), (COOC_SPARSE,)),
    "word_vectors": (lambda M: jf.word_vectors(M, 2, key=KEY), (COOC,)),
    "from_table_svd": (_from_table("svd"), (X,)),
    "from_table_svd_randomized": (_from_table("svd", KEY), (X,)),
    "from_table_pca": (_from_table("pca"), (X,)),
    "from_table_nmf": (_from_table("nmf"), (X_POS,)),
    "best_run": (jf.best_run, (RESTARTS,)),
}


def test_every_data_function_is_covered():
    data_free = {"build_vocab", "encode_corpus", "synthetic_ratings"}
    types = {name for name in jf.__all__ if isinstance(getattr(jf, name), type)}
    functions = set(jf.__all__) - types - data_free - {"nn", "datasets"}
    covered = {name.split("_randomized")[0].replace("_dense", "").replace("_sparse", "")
               for name in CASES}
    assert functions <= covered, sorted(functions - covered)


def _assert_same(got, want):
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        if w.shape == () and np.issubdtype(w.dtype, np.integer):
            # A rank is a Python int when concrete and an int32 scalar under jit.
            assert int(g) == int(w)
            continue
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if np.issubdtype(w.dtype, np.floating):
            # Same kernels inside and outside jit: only XLA's fusion decisions may differ.
            scale = max(float(np.nanmax(np.abs(w), initial=0.0)), 1.0)
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)
        else:
            np.testing.assert_array_equal(g, w)


@functools.cache
def _eager(name):
    fn, data = CASES[name]
    return jax.tree.map(np.asarray, fn(*data))


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_closed_over_by_jit(name):
    fn, data = CASES[name]
    data = jax.tree.map(jnp.asarray, data)   # concrete jax.Arrays, as research code holds them
    got = jax.jit(lambda: fn(*data))()
    _assert_same(got, _eager(name))


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_passed_to_jit(name):
    fn, data = CASES[name]
    got = jax.jit(fn)(*data)
    _assert_same(got, _eager(name))
