"""Tests for implicit ALS (jaxfact.implicit_feedback): against a dense NumPy loop of Hu et al.'s
eq. 4, and invariants of the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.experimental import checkify

from conftest import small_ratings, tol
from jaxfact import ImplicitALSResult, Status, _als, implicit_als, implicit_loss
from jaxfact import implicit_feedback as imf

M, N, K = 30, 20, 3


def _small(seed=0, density=0.4):
    return small_ratings(M, N, seed, density)


def _hu_update(F_other, C, Pref, lam):
    """Hu et al. (2008) eq. 4 for every row, densely: (Y^T C^u Y + lam I)^-1 Y^T C^u p(u)."""
    k = F_other.shape[1]
    return np.stack([np.linalg.solve(F_other.T @ (C[u][:, None] * F_other) + lam * np.eye(k),
                                      F_other.T @ (C[u] * Pref[u])) for u in range(C.shape[0])])


def _loss_np(X, Y, r, c, counts, alpha, lam, shape):
    R = np.zeros(shape)
    R[r, c] = counts
    C, Pref = 1 + alpha * R, (R > 0).astype(float)
    return (C * (Pref - X @ Y.T) ** 2).sum() + lam * ((X**2).sum() + (Y**2).sum())


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
    L = _loss_np(X, Y, r, c, counts, alpha, lam, (m, n))
    np.testing.assert_allclose(res.history[-1], L / (m * n), rtol=1e-12)
    np.testing.assert_allclose(implicit_loss(X, Y, r, c, counts, alpha=alpha, lam=lam),
                               L / (m * n), rtol=1e-12)
    assert int(res.status) == Status.MAX_ITER and not bool(res.converged)
    # Three CG steps (the default) descend the same loss and get close to the exact fit.
    res3 = implicit_als(r, c, counts, (m, n), k, alpha=alpha, lam=lam, max_iter=15, key=key,
                        init_std=0.1)
    h = np.asarray(res3.history)
    assert np.all(np.diff(h) <= 1e-12) and h[-1] < h[0]
    assert int(res3.status) == Status.MAX_ITER and int(res3.n_iter) == 15
    # tol (traced: no new compilation) just above the relative decrease of iteration 5 stops there.
    t = (h[3] - h[4]) / h[3] * (1 + 1e-6)
    assert np.all((h[:3] - h[1:4]) > t * h[:3])  # iterations 2 to 4 decrease by more
    stopped = implicit_als(r, c, counts, (m, n), k, alpha=alpha, lam=lam, max_iter=15, key=key,
                           init_std=0.1, tol=t)
    assert int(stopped.n_iter) == 5 and bool(stopped.converged)
    assert int(stopped.status) == Status.CONVERGED
    np.testing.assert_array_equal(stopped.history[:5], h[:5])
    assert np.all(np.isnan(np.asarray(stopped.history)[5:]))


def test_warm_start_continues_the_iteration(x64):
    r, c, v = _small(seed=3)
    counts = np.abs(v)
    rng = np.random.default_rng(4)
    start = (0.1 * rng.normal(size=(M, K)), 0.1 * rng.normal(size=(N, K)))
    # No key needed from a warm start: nothing is drawn.
    two = implicit_als(r, c, counts, (M, N), K, max_iter=2, warm_start=start)
    more = implicit_als(r, c, counts, (M, N), K, max_iter=2, warm_start=two)
    four = implicit_als(r, c, counts, (M, N), K, max_iter=4, warm_start=start)
    np.testing.assert_allclose(more.user_factors, four.user_factors, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(more.history, four.history[2:], rtol=1e-12)
    # A result and its pair of factors are the same start.
    pair = implicit_als(r, c, counts, (M, N), K, max_iter=2,
                        warm_start=(two.user_factors, two.item_factors))
    np.testing.assert_array_equal(pair.item_factors, more.item_factors)
    assert isinstance(more, ImplicitALSResult)


def test_errors():
    r, c, v = _small(seed=11)
    v = v.astype(np.float32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"implicit_als: `counts` must be non-negative"):
        implicit_als(r, c, -np.abs(v), (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"implicit_als: `rank` must be an integer in \[1, 20\]"):
        implicit_als(r, c, np.abs(v), (M, N), 0, key=key)
    with pytest.raises(ValueError, match=r"implicit_als: `rank` must be an integer in \[1, 20\]"):
        implicit_als(r, c, np.abs(v), (M, N), 21, key=key)
    with pytest.raises(ValueError, match=r"implicit_als: `cols` must be in \[0, 19\]"):
        implicit_als(r, np.r_[c[:-1], 20], np.abs(v), (M, N), K, key=key)
    with pytest.raises(ValueError, match=r"implicit_als: `key` is required"):
        implicit_als(r, c, np.abs(v), (M, N), K)
    with pytest.raises(ValueError,
                       match=r"implicit_als: `warm_start.item_factors` must have the shape"):
        implicit_als(r, c, np.abs(v), (M, N), K,
                     warm_start=(np.zeros((M, K), np.float32), np.zeros((N, K + 1), np.float32)))
    with pytest.raises(TypeError, match=r"implicit_als: `warm_start` must be an ImplicitALSResult"):
        implicit_als(r, c, np.abs(v), (M, N), K, warm_start=np.zeros((M, K), np.float32))
    with pytest.raises(ValueError, match=r"implicit_loss: `rows` must be in \[0, 29\]"):
        implicit_loss(np.ones((M, 2), np.float32), np.ones((N, 2), np.float32),
                      np.r_[r[:-1], 40], c, np.abs(v))


def test_checks_true_stages_value_checks_under_jit():
    r, c, v = _small(seed=13)
    counts = np.abs(v).astype(np.float32)
    f = checkify.checkify(jax.jit(lambda n: implicit_als(
        r, c, n, (M, N), K, key=jax.random.key(0), max_iter=2, checks=True).user_factors))
    bad = counts.copy()
    bad[0] = np.nan
    with pytest.raises(Exception, match=r"implicit_als: `counts` must be finite"):
        f(bad)[0].throw()
    bad[0] = -1.0
    with pytest.raises(Exception, match=r"implicit_als: `counts` must be non-negative"):
        f(bad)[0].throw()
    assert f(counts)[0].get() is None
    X = np.ones((M, 2), np.float32)
    g = checkify.checkify(jax.jit(lambda X: implicit_loss(X, X[:N], r, c, counts, checks=True)))
    X[1, 1] = np.inf
    with pytest.raises(Exception, match=r"implicit_loss: `user_factors` must be finite"):
        g(X)[0].throw()


def test_under_vmap():
    r, c, v = _small(seed=13)
    v = jnp.asarray(v, jnp.float32)
    keys = jax.random.split(jax.random.key(0), 2)
    hist = jax.vmap(lambda k: implicit_als(r, c, jnp.abs(v), (M, N), K, key=k, max_iter=3).history)(
        keys)
    one = implicit_als(r, c, jnp.abs(v), (M, N), K, key=keys[1], max_iter=3).history
    np.testing.assert_allclose(hist[1], one, rtol=tol(np.float32, 10))


def test_chunk_layout_holds_whole_segments():
    """Every event in one slot of its segment's pieces; no segment straddles two chunks; a
    segment longer than a chunk gets a chunk of its own size."""
    rng = np.random.default_rng(2)
    seg = np.r_[np.zeros(40, np.int64), rng.integers(0, 30, 200)]  # segment 0 is long
    rng.shuffle(seg)
    ch = _als.chunk_layout(seg, 33, 16)
    n_chunks, cap, width = ch.event.shape
    assert n_chunks > 1 and cap * width >= np.sum(seg == 0)
    full = ch.event < seg.size
    np.testing.assert_array_equal(np.sort(ch.event[full]), np.arange(seg.size))
    owner = np.take_along_axis(ch.segs, ch.local, 1)           # segment of each piece
    np.testing.assert_array_equal(seg[ch.event[full]], np.broadcast_to(owner[..., None],
                                                                       full.shape)[full])
    np.testing.assert_array_equal(ch.segs.reshape(-1)[ch.where], np.arange(33))  # 31, 32: empty
    assert np.all(np.diff(ch.local, axis=1) >= 0)
    # Two segmentations of the same events (users, items) in one shape, for one program.
    other = rng.integers(0, 20, seg.size)
    pair, n_chunks = _als.paired_chunk_layouts(seg, 33, other, 20, 16)
    for h, (s, n) in enumerate(((seg, 33), (other, 20))):
        used = pair.event[h, :n_chunks[h]]
        full = used < seg.size
        np.testing.assert_array_equal(np.sort(used[full]), np.arange(seg.size))
        assert np.all(pair.event[h, n_chunks[h]:] == seg.size)
        np.testing.assert_array_equal(pair.segs[h].reshape(-1)[pair.where[h, :n]], np.arange(n))
        assert np.all(pair.where[h, n:] == pair.segs.shape[1] * pair.segs.shape[2])
        owner = np.take_along_axis(pair.segs[h], pair.local[h], 1)[:n_chunks[h]]
        np.testing.assert_array_equal(s[used[full]], np.broadcast_to(owner[..., None],
                                                                     full.shape)[full])
    # Everything in one chunk: its shape depends on (nnz, n_seg) only.
    one = _als.chunk_layout(seg, 33, 10_000)
    assert one.event.shape[0] == 1
    assert one.event.shape == _als.chunk_layout(np.arange(seg.size) % 33, 33, 10_000).event.shape


def test_chunked_fit_matches_the_traced_path(monkeypatch, x64):
    """Concrete events on the CPU run the solves chunk by chunk (laid out on the host); traced
    events the one-pass kernel: the same iteration up to rounding, with many small chunks."""
    r, c, v = _small(seed=5)
    counts = np.abs(v)
    monkeypatch.setattr(imf, "_CHUNK_BYTES", 4 * K * 8)  # 8 slots: chunks of 1 or 2 segments
    calls = []
    layouts = _als.paired_chunk_layouts
    monkeypatch.setattr(_als, "paired_chunk_layouts",
                        lambda *a, **k: calls.append(1) or layouts(*a, **k))
    key = jax.random.key(1)
    fit = lambda r, c, n: implicit_als(r, c, n, (M, N), K, key=key, max_iter=4)
    eager = fit(r, c, counts)
    assert calls, "concrete events on the CPU did not take the chunked path"
    traced = jax.jit(fit)(r, c, counts)
    assert len(calls) == 1, "traced events took the host layout"
    for a, b in zip(eager[:2], traced[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(eager.history, traced.history, rtol=1e-12)


NNZ = 150


@given(seed=st.integers(0, 2**16), alpha=st.floats(0.0, 20.0), lam=st.floats(0.0, 1.0),
       tol_=st.sampled_from([0.0, 1e-4]))
def test_implicit_als_with_exact_steps_never_increases_the_loss(seed, alpha, lam, tol_):
    """cg_steps >= rank: every half-step is an exact minimization, so L never increases; the
    history is implicit_loss at the returned factors; converged == (status == CONVERGED)."""
    rng = np.random.default_rng(seed)
    cells = rng.permutation(M * N)[:NNZ]
    r, c = (cells // N).astype(np.int32), (cells % N).astype(np.int32)
    counts = rng.integers(1, 10, NNZ).astype(np.float64)
    with jax.enable_x64(True):
        res = implicit_als(r, c, counts, (M, N), K, alpha=alpha, lam=lam, max_iter=6, tol=tol_,
                           cg_steps=K, key=jax.random.key(seed), init_std=0.3)
        n = int(res.n_iter)
        h = np.asarray(res.history)
        assert np.all(np.isfinite(h[:n])) and np.all(np.isnan(h[n:]))
        assert np.all(np.diff(h[:n]) <= 1e-10 * h[:n - 1])
        L = _loss_np(np.asarray(res.user_factors), np.asarray(res.item_factors), r, c, counts,
                     alpha, lam, (M, N))
        np.testing.assert_allclose(h[n - 1], L / (M * N), rtol=1e-9)
        assert bool(res.converged) == (int(res.status) == Status.CONVERGED)
