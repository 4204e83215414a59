"""cooccurrence, ppmi and word_vectors on a corpus sharded over 1, 2, 4 and 8 devices.

The corpus is 13 documents of uneven lengths joined with gaps (``encode_corpus``'s layout), then
padded with -1 (empty documents, which count nothing) to a multiple of the device count. The
reference is the unpadded corpus on one device. Tolerances: the counts are sums of integers in
float32 (exact below 2^24), so sharded counts and PPMI equal the unsharded ones exactly (same
elementwise formula, exact sums); the word vectors come from the same randomized SVD (same key,
same algorithm) whose sums run in another order and whose last QR is a TSQR, so they agree to a
few float32 ulps of the largest entry times the conditioning of the rank-3 subspace (1e-4).
"""

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse as jsparse
from jax.sharding import PartitionSpec as P

from jaxfact import _sharding, text
from tests.sharded import meshes

V = 32          # vocabulary (a multiple of 8: word vectors split evenly by rows)
WINDOW = 2
RANK = 3
KEY = jax.random.key(0)
N_ITER = 2


def corpus():
    rng = np.random.default_rng(0)
    docs = [rng.integers(-1, V, rng.integers(3, 40)) for _ in range(13)]
    gap = np.full(WINDOW, -1)
    parts = [p for d in docs for p in (d, gap)][:-1]
    return np.concatenate(parts).astype(np.int32)


def padded(tokens, p):
    return np.concatenate([tokens, np.full(-len(tokens) % p, -1, np.int32)])


def dense(C):
    """A (possibly sharded) BCOO as a NumPy matrix, padding (index == shape) dropped."""
    m, n = C.shape
    out = np.zeros((m + 1, n + 1), np.asarray(C.data).dtype)
    np.add.at(out, tuple(np.asarray(C.indices).T), np.asarray(C.data))
    return out[:m, :n]


@pytest.fixture(scope="module")
def reference():
    tokens = corpus()
    C = text.cooccurrence(tokens, V, window=WINDOW)
    M = text.ppmi(C)
    W = text.word_vectors(M, RANK, key=KEY, n_iter=N_ITER)
    return tokens, dense(C), dense(M), np.asarray(W)


def collectives(jitted, args, static):
    """The collectives of a jitted kernel's compiled program (cached when already called)."""
    return _sharding.collectives(jitted.lower(*args, **static).compile().as_text())


def assert_small(jitted, args, static, *, limit, what):
    found = collectives(jitted, args, static)
    big = [c for c in found if int(np.prod(c.shape)) >= limit]
    assert not big, f"{what}: collectives of >= {limit} elements: {big}"
    return found


def check_vectors(W, W_ref):
    scale = np.abs(W_ref).max()
    np.testing.assert_allclose(np.asarray(W), W_ref, atol=1e-4 * scale, rtol=0)


# Mesh size 4 runs in test_under_jit_on_4_devices_and_dense_counts (the same pipeline under an outer
# jit): every pipeline compiles its own kernels, and the file must stay within its time budget.
@pytest.mark.parametrize("size,explicit", [(1, True), (2, True), (8, True), (2, False)])
def test_sharded_corpus_matches_one_device(reference, size, explicit):
    tokens, C_ref, M_ref, W_ref = reference
    assert len(tokens) % 8            # uneven: the padding below is needed
    m = meshes.mesh(size, explicit=explicit)
    t = meshes.rows(padded(tokens, size), m)
    C = text.cooccurrence(t, V, window=WINDOW)
    M = text.ppmi(C)
    W = text.word_vectors(M, RANK, key=KEY, n_iter=N_ITER)
    np.testing.assert_array_equal(dense(C), C_ref)
    np.testing.assert_array_equal(dense(M), M_ref)
    check_vectors(W, W_ref)
    if size > 1:
        for X in (C, M):
            assert meshes.spec_of(X.data) == P("data")
            assert meshes.spec_of(X.indices) == P("data")
            # shard j holds the distinct entries of the rows w = j (mod p), then padding
            rows = np.asarray(X.indices[:, 0]).reshape(size, -1)
            assert np.all((rows == V) | (rows % size == np.arange(size)[:, None]))
            assert X.unique_indices
        assert meshes.spec_of(W) == P("data")


def test_windows_reach_over_several_shards_and_uneven_row_blocks():
    # 8 shards of 2 tokens and a window of 5: a pair can span three shard boundaries. V = 30
    # rows dealt out to 8 shards (some get 3, some 4).
    rng = np.random.default_rng(1)
    tokens = rng.integers(-1, 30, 16).astype(np.int32)
    t = meshes.rows(tokens, meshes.mesh(8))
    ref = dense(text.cooccurrence(tokens, 30, window=5, weighting="harmonic"))
    C = text.cooccurrence(t, 30, window=5, weighting="harmonic")
    np.testing.assert_allclose(dense(C), ref, rtol=1e-6, atol=0)
    rows = np.asarray(C.indices[:, 0]).reshape(8, -1)
    assert np.all((rows == 30) | (rows % 8 == np.arange(8)[:, None]))
    with pytest.raises(ValueError, match="multiple of 8"):   # before anything compiles
        text.word_vectors(C, RANK, key=KEY)


def test_communication(reference):
    """What crosses devices for 8 shards: the window's tokens to the previous shard, the local
    distinct counts to the shard owning their rows (an all-to-all of (p, cap) slots), 2 V sums
    for PPMI, and the randomized SVD's (l, V) sketches; never the V x V count matrix."""
    tokens, C_ref, M_ref, _ = reference
    p = 8
    m = meshes.mesh(p)
    layout = _sharding.Layout(m, ("data",), 0)
    t = meshes.rows(padded(tokens, p), m)
    args = dict(layout=layout, vocab_size=V, window=WINDOW, weighting="uniform",
                dtype=jnp.result_type(float))
    local = text._sharded_local_counts(t, **args)
    sizes = np.asarray(local[3])
    cap = int(sizes.max())
    found = assert_small(text._sharded_local_counts, (t,), args, limit=WINDOW + 1,
                         what="local counts")
    assert {c.op for c in found} == {"collective-permute"}        # the halo, WINDOW tokens
    found = assert_small(text._sharded_merge, local,
                         dict(layout=layout, vocab_size=V, cap=cap), limit=V * V // 2,
                         what="merge")
    assert {c.op for c in found} == {"all-to-all"}
    sent = sum(c.nbytes for c in found)       # per device, its own slot row included
    assert sent == p * cap * 12               # (row, col) int32 and a float32 count per slot
    # Each slot row is one source-destination run of distinct local entries: the slots hold
    # every local distinct entry once, plus the padding of the runs shorter than the longest.
    assert sizes.sum() <= p * p * cap
    C = text.cooccurrence(t, V, window=WINDOW)
    # The programs below were compiled by test_sharded_corpus_matches_one_device[8-True]: the
    # same static arguments and input types find them in jit's cache.
    f32 = partial(jnp.asarray, dtype=jnp.float32)
    found = assert_small(
        text._sharded_ppmi_sparse, (C.data, C.indices, f32(0.75), f32(1.0)),
        dict(layout=layout, shape=(V, V)), limit=2 * V + 1, what="ppmi")
    assert {c.op for c in found} == {"all-reduce"}
    M = text.ppmi(C)
    l = RANK + 10
    found = assert_small(
        text._sharded_word_vectors, (M.data, M.indices, KEY, f32(0.5)),
        dict(layout=layout, shape=(V, V), rank=RANK, n_samples=l, n_iter=N_ITER),
        limit=l * V + 1, what="word_vectors")
    # the (l, V) sketches are all-reduced; nothing of V x l or more is gathered
    assert not [c for c in found if c.op != "all-reduce" and np.prod(c.shape) >= l * l * p]

    # indices not split like the data: resharded with a warning (same programs as above)
    loose = jsparse.BCOO((C.data, jnp.asarray(np.asarray(C.indices))), shape=(V, V),
                         unique_indices=True)
    with pytest.warns(UserWarning, match="indices of `counts`"):
        np.testing.assert_array_equal(dense(text.ppmi(loose)), M_ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text.ppmi(C)        # a well-formed sharded count matrix: no warning

    # entries on the wrong shard: a clear error, not wrong vectors
    shift = M.nse // p
    rolled = jsparse.BCOO((meshes.rows(np.roll(np.asarray(M.data), shift), m),
                           meshes.rows(np.roll(np.asarray(M.indices), shift, 0), m)),
                          shape=(V, V), unique_indices=True)
    with pytest.raises(ValueError, match="another shard than their row"):
        text.word_vectors(rolled, RANK, key=KEY, n_iter=N_ITER)


def test_under_jit_on_4_devices_and_dense_counts(reference):
    tokens, C_ref, M_ref, W_ref = reference
    m = meshes.mesh(4)
    t = meshes.rows(padded(tokens, 4), m)

    @jax.jit
    def pipeline(t):
        M = text.ppmi(text.cooccurrence(t, V, window=WINDOW))
        return M.data, M.indices, text.word_vectors(M, RANK, key=KEY, n_iter=N_ITER)

    data, indices, W = pipeline(t)
    np.testing.assert_array_equal(dense(jsparse.BCOO((data, indices), shape=(V, V))), M_ref)
    check_vectors(W, W_ref)
    assert meshes.spec_of(W) == meshes.spec_of(data) == meshes.spec_of(indices) == P("data")

    # dense counts split by rows: row sums local, column sums by psum, output split by rows
    M = text.ppmi(meshes.rows(C_ref, m))
    assert meshes.spec_of(M) == P("data")
    np.testing.assert_allclose(np.asarray(M), M_ref, rtol=1e-6, atol=0)
    with pytest.warns(UserWarning, match="resharded once"):
        M = text.ppmi(meshes.shard(C_ref, m, P(None, "data")))
    np.testing.assert_allclose(np.asarray(M), M_ref, rtol=1e-6, atol=0)

