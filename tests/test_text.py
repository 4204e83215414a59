"""Tests of jaxfact.text: vocabulary, co-occurrence counts, PPMI and SVD word vectors."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse as jsparse

from conftest import max_intermediate, tol
from jaxfact import text

WEIGHT = {"uniform": lambda d, w: 1.0, "linear": lambda d, w: (w - d + 1) / w,
          "harmonic": lambda d, w: 1.0 / d}


def counter_cooccurrence(tokens, window, weighting="uniform"):
    """Reference: a plain Python double loop over positions and offsets."""
    out = collections.Counter()
    for i in range(len(tokens)):
        for d in range(1, window + 1):
            j = i + d
            if j < len(tokens) and tokens[i] >= 0 and tokens[j] >= 0:
                w = WEIGHT[weighting](d, window)
                out[(int(tokens[i]), int(tokens[j]))] += w
                out[(int(tokens[j]), int(tokens[i]))] += w
    return out


def as_dict(C):
    return {(int(r), int(c)): float(v) for (r, c), v in zip(np.asarray(C.indices),
                                                          np.asarray(C.data))}


@pytest.fixture(scope="module")
def small_corpus():
    rng = np.random.default_rng(0)
    return rng.integers(-1, 30, 600).astype(np.int32)   # -1: padding / out of vocabulary


# ------------------------------------------------------------------------------------------------
# Vocabulary


def test_build_vocab_and_encode():
    docs = [["b", "a", "c", "a"], ["a", "b", "d"], ["z"]]
    vocab = text.build_vocab(docs, min_count=2)
    assert vocab.words == ("a", "b") and list(vocab.counts) == [3, 2]
    assert vocab.index == {"a": 0, "b": 1}
    np.testing.assert_array_equal(text.encode_corpus(docs, vocab, gap=2),
                                  [1, 0, -1, 0, -1, -1, 0, 1, -1, -1, -1, -1])
    assert text.build_vocab(docs, max_size=3).words == ("a", "b", "c")   # ties alphabetical


# ------------------------------------------------------------------------------------------------
# Co-occurrence counts against a Python Counter


@pytest.mark.parametrize("weighting", ["uniform", "linear", "harmonic"])
def test_cooccurrence_matches_counter(small_corpus, weighting):
    C = text.cooccurrence(small_corpus, 30, window=3, weighting=weighting)
    ref = counter_cooccurrence(small_corpus, 3, weighting)
    got = as_dict(C)
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=tol(np.float32))
    assert C.nse == len(ref) and C.unique_indices and C.indices_sorted
    dense = np.asarray(C.todense())
    np.testing.assert_array_equal(dense, dense.T)


def test_cooccurrence_two_key_path_for_large_vocabularies():
    # V > 65535: (word, context) no longer fits one uint32 key and is sorted on two int32 keys.
    rng = np.random.default_rng(1)
    V = 70000
    tokens = rng.choice(np.array([0, 5, 65534, 65536, 69999, -1]), 400).astype(np.int32)
    C = text.cooccurrence(tokens, V, window=2)
    assert as_dict(C) == dict(counter_cooccurrence(tokens, 2))


def test_cooccurrence_tiny_inputs():
    assert text.cooccurrence(np.array([3], np.int32), 5, window=2).nse == 0
    assert text.cooccurrence(np.array([-1, -1, -1], np.int32), 5, window=2).nse == 0
    C = text.cooccurrence(jnp.array([0, 1, 2, 1]), 3, window=5)   # window beyond the corpus
    assert as_dict(C) == dict(counter_cooccurrence(np.array([0, 1, 2, 1]), 5))


@pytest.mark.parametrize("V,weighting", [(30, "uniform"), (70000, "linear")])
def test_cooccurrence_numpy_and_xla_sorts_agree(V, weighting):
    # On the CPU backend cooccurrence sorts with NumPy (a callback); an accelerator runs the
    # on-device path (XLA's sort, prefix sum, segment sums). Both: same entries, same order,
    # same padding (index V, value 0), counts exactly equal.
    rng = np.random.default_rng(3)
    tokens = jnp.asarray(rng.choice(np.array([0, 1, 7, 29, V - 1, -1]), 300).astype(np.int32))
    out = [text._cooccurrence(tokens, vocab_size=V, window=3, weighting=weighting,
                              dtype=jnp.float32, host_sort=host) for host in (True, False)]
    (i_np, v_np, nnz_np), (i_xla, v_xla, nnz_xla) = [[np.asarray(x) for x in o] for o in out]
    assert nnz_np == nnz_xla and i_np.shape == (2 * 3 * 300 - 2 * 6, 2)
    np.testing.assert_array_equal(i_np, i_xla)
    assert np.all(i_np[nnz_np:] == V) and np.all(v_np[nnz_np:] == 0) and np.all(v_xla[nnz_np:] == 0)
    if weighting == "uniform":
        np.testing.assert_array_equal(v_np, v_xla)
    else:
        np.testing.assert_allclose(v_np, v_xla, rtol=tol(np.float32))
    ref = counter_cooccurrence(np.asarray(tokens), 3, weighting)
    assert {tuple(map(int, k)) for k in i_np[:nnz_np]} == set(ref)


# ------------------------------------------------------------------------------------------------
# PPMI against the NumPy formula


def numpy_ppmi(C, alpha, shift):
    C = np.asarray(C, np.float64)
    total = C.sum()
    pw = C.sum(1, keepdims=True) / total
    cc = C.sum(0, keepdims=True) ** alpha
    pc = cc / cc.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log((C / total) / (pw * pc))
    return np.where(C > 0, np.maximum(pmi - np.log(shift), 0), 0)


@pytest.mark.parametrize("alpha,shift", [(1.0, 1.0), (0.75, 1.0), (0.75, 5.0)])
def test_ppmi_matches_numpy(small_corpus, alpha, shift):
    C = text.cooccurrence(small_corpus, 30, window=3)
    ref = numpy_ppmi(C.todense(), alpha, shift)
    M = text.ppmi(C, alpha=alpha, shift=shift)
    assert isinstance(M, jsparse.BCOO) and M.nse == C.nse
    np.testing.assert_allclose(M.todense(), ref, rtol=tol(np.float32, 10), atol=tol(np.float32, 10))
    np.testing.assert_allclose(text.ppmi(C.todense(), alpha=alpha, shift=shift), ref,
                               rtol=tol(np.float32, 10), atol=tol(np.float32, 10))


def test_ppmi_float64(x64, small_corpus):
    C = text.cooccurrence(small_corpus, 30, window=2)
    assert C.dtype == np.float64
    np.testing.assert_allclose(text.ppmi(C).todense(), numpy_ppmi(C.todense(), 0.75, 1.0),
                               rtol=tol(np.float64, 10), atol=tol(np.float64, 10))


def test_ppmi_hyperparameters_are_traced(small_corpus):
    C = text.cooccurrence(small_corpus, 30, window=2)
    text.ppmi(C, alpha=0.5)
    before = text._ppmi_sparse._cache_size()
    text.ppmi(C, alpha=0.9, shift=3.0)
    assert text._ppmi_sparse._cache_size() == before


def test_ppmi_sums_duplicate_entries():
    idx = jnp.array([[0, 1], [0, 1], [1, 0], [1, 1]])
    C = jsparse.BCOO((jnp.array([1.0, 2.0, 3.0, 1.0]), idx), shape=(2, 2))
    np.testing.assert_allclose(text.ppmi(C, alpha=1.0).todense(),
                               numpy_ppmi(C.todense(), 1.0, 1.0), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Word vectors


@pytest.mark.parametrize("eig", [0.0, 0.5, 1.0])
def test_word_vectors_are_u_times_s_to_the_eig(small_corpus, eig):
    M = text.ppmi(text.cooccurrence(small_corpus, 30, window=3))
    # rank + oversamples >= 30 = min(V, C): the randomized SVD spans everything and is exact.
    W = text.word_vectors(M, 20, eig=eig, key=jax.random.key(0), n_oversamples=10)
    U, S, _ = np.linalg.svd(np.asarray(M.todense(), np.float64))
    # Compare Gram matrices (invariant to the signs of singular vectors).
    ref = (U[:, :20] * S[:20] ** (2 * eig)) @ U[:, :20].T
    np.testing.assert_allclose(np.asarray(W) @ np.asarray(W).T, ref,
                               atol=tol(np.float32, 100) * max(1.0, S[0] ** (2 * eig)))


def test_fifty_thousand_word_vocabulary_is_never_densified():
    V = 50_000
    rng = np.random.default_rng(2)
    tokens = (rng.zipf(1.2, 100_000) % V).astype(np.int32)
    C = text.cooccurrence(tokens, V, window=2)
    M = text.ppmi(C)
    W = text.word_vectors(M, 16, key=jax.random.key(0), n_iter=1)
    assert W.shape == (V, 16) and np.all(np.isfinite(W))
    assert C.nse < 2 * 4 * len(tokens) and M.nse == C.nse
    # No intermediate of the three kernels holds anything like V x V (2.5e9) entries.
    limit = 10 * 4 * len(tokens)
    jaxprs = [
        jax.make_jaxpr(lambda t: text._cooccurrence(t, vocab_size=V, window=2,
                                                   weighting="uniform", dtype=jnp.float32))(tokens),
        jax.make_jaxpr(lambda d, i: text._ppmi_sparse(d, i, 0.75, 1.0, shape=(V, V)))(
            C.data, C.indices),
        jax.make_jaxpr(lambda m: text.word_vectors(m, 16, key=jax.random.key(0)))(M),
    ]
    for jaxpr in jaxprs:
        assert max_intermediate(jaxpr.jaxpr) < limit


# ------------------------------------------------------------------------------------------------
# Bad input


def test_errors():
    ids = np.array([0, 1, 2], np.int32)
    with pytest.raises(TypeError, match=r"cooccurrence: `token_ids` must be an integer array"):
        text.cooccurrence(ids.astype(np.float32), 3, window=1)
    with pytest.raises(ValueError, match=r"cooccurrence: `token_ids` must be 1-D"):
        text.cooccurrence(ids.reshape(1, 3), 3, window=1)
    with pytest.raises(ValueError, match=r"cooccurrence: `token_ids` must be < vocab_size = 2"):
        text.cooccurrence(ids, 2, window=1)
    with pytest.raises(ValueError, match=r"cooccurrence: `window` must be an integer in \[1, in"):
        text.cooccurrence(ids, 3, window=0)
    with pytest.raises(ValueError, match=r"cooccurrence: `weighting` must be one of"):
        text.cooccurrence(ids, 3, window=1, weighting="gaussian")
    C = text.cooccurrence(ids, 3, window=1)
    with pytest.raises(ValueError, match=r"ppmi: `alpha` must be a finite number in \(0.0, inf\]"):
        text.ppmi(C, alpha=0.0)
    with pytest.raises(ValueError, match=r"ppmi: `shift` must be a finite number in \(0.0, inf\]"):
        text.ppmi(C, shift=-1.0)
    with pytest.raises(ValueError, match=r"ppmi: `counts` must be non-negative"):
        text.ppmi(-C.todense())
    with pytest.raises(ValueError, match=r"ppmi: `counts` must be finite"):
        text.ppmi(jnp.full((2, 2), jnp.nan))
    with pytest.raises(ValueError, match=r"word_vectors: `key` is required"):
        text.word_vectors(C, 1, key=None)
    with pytest.raises(ValueError, match=r"word_vectors: `rank` must be an integer in \[1, 3\]"):
        text.word_vectors(C, 4, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"word_vectors: `eig` must be a finite number"):
        text.word_vectors(C, 1, eig=-1.0, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"build_vocab: `documents` must be an iterable of token"):
        text.build_vocab(["a", "b"])
    with pytest.raises(TypeError, match=r"build_vocab: `documents` must be an iterable of token"):
        text.build_vocab("a b c")
    with pytest.raises(TypeError, match=r"build_vocab: each document must be a list of tokens"):
        text.build_vocab(["a b", ["c"]])
    bad = jsparse.BCOO.fromdense(jnp.ones((2, 2, 2)), n_batch=1)
    with pytest.raises(ValueError, match=r"ppmi: `counts` must be a 2-D BCOO matrix"):
        text.ppmi(bad)
    with pytest.raises(ValueError, match=r"build_vocab: no word occurs at least min_count = 3"):
        text.build_vocab([["a", "b"]], min_count=3)
    with pytest.raises(ValueError, match=r"build_vocab: `min_count` must be an integer in \[1"):
        text.build_vocab([["a"]], min_count=0)
    with pytest.raises(TypeError, match=r"encode_corpus: `vocab` must be a Vocabulary"):
        text.encode_corpus([["a"]], {"a": 0})


def test_cooccurrence_and_ppmi_under_jit(small_corpus):
    # Under jit the number of distinct pairs is unknown: the result is padded with zero entries
    # at index V, which every BCOO operation and ppmi ignore.
    eager = text.cooccurrence(small_corpus, 30, window=2)
    dense = jax.jit(lambda t: text.cooccurrence(t, 30, window=2).todense())(small_corpus)
    np.testing.assert_array_equal(dense, eager.todense())
    traced = jax.jit(lambda t: text.ppmi(text.cooccurrence(t, 30, window=2)).todense())
    np.testing.assert_allclose(traced(small_corpus), text.ppmi(eager).todense(),
                               rtol=tol(np.float32, 10), atol=tol(np.float32, 10))


def test_build_vocab_rejects_non_string_tokens():
    with pytest.raises(TypeError, match=r"build_vocab: every token in `documents` must be a "
                                        r"string; got int 3"):
        text.build_vocab([["a", "b"], ["a", 3]])


def test_checks_true_stages_value_checks_under_jit():
    from jax.experimental import checkify

    counts = jnp.array([[0.0, 2.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.0, jnp.nan]])
    f = checkify.checkify(jax.jit(lambda C: text.ppmi(C, checks=True)))
    with pytest.raises(Exception, match=r"ppmi: `counts` must be finite"):
        f(counts)[0].throw()
    g = checkify.checkify(jax.jit(lambda C: text.ppmi(jsparse.BCOO.fromdense(C, nse=9),
                                                      checks=True).data))
    with pytest.raises(Exception, match=r"ppmi: `counts` must be non-negative"):
        g(-jnp.eye(3))[0].throw()
    h = checkify.checkify(jax.jit(lambda M: text.word_vectors(M, 2, key=jax.random.key(0),
                                                              checks=True)))
    with pytest.raises(Exception, match=r"randomized_svd: `X` must be finite"):
        h(counts)[0].throw()
    assert h(jnp.eye(3))[0].get() is None
    c = checkify.checkify(jax.jit(lambda t: text.cooccurrence(t, 3, window=1,
                                                              checks=True).data))
    with pytest.raises(Exception, match=r"cooccurrence: `token_ids` must be < vocab_size = 3"):
        c(jnp.array([0, 1, 3]))[0].throw()
    assert c(jnp.array([0, 1, -1, 2]))[0].get() is None
