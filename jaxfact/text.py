"""Word vectors from co-occurrence counts: counts, (shifted) PPMI and SVD (Levy & Goldberg).

The pipeline of Levy, Goldberg & Dagan (2015), all sparse, never forming a V x V dense matrix:

1. :func:`build_vocab` and :func:`encode_corpus`: token strings to ids by frequency;
2. :func:`cooccurrence`: the (V, V) word-context count matrix of a symmetric window, as a BCOO;
3. :func:`ppmi`: positive PMI with context distribution smoothing (``alpha``, their "cds") and a
   shift ``log k`` (their "neg"), on the stored entries only;
4. :func:`word_vectors`: ``U_d S_d^eig`` from a randomized SVD of the sparse PPMI matrix.

A corpus sharded over devices (the token array split into equal parts,
``jax.device_put(ids, NamedSharding(mesh, P("data")))``) gives one count matrix whose entries are
split over the same devices, each holding the rows w = j (mod p); :func:`ppmi` keeps that layout
and :func:`word_vectors` returns the word vectors split by rows. See each function's "Sharding".

Example::

  >>> docs = [["the", "cat", "sat", "on", "the", "mat"], ["the", "dog", "sat", "on", "a", "log"]]
  >>> vocab = build_vocab(docs, min_count=1)
  >>> ids = encode_corpus(docs, vocab, gap=2)
  >>> M = ppmi(cooccurrence(ids, len(vocab.words), window=2), alpha=0.75)
  >>> W = word_vectors(M, 3, eig=0.5, key=jax.random.key(0))
  >>> W.shape                                  # (V, d)
  (8, 3)

References:
  O. Levy, Y. Goldberg, I. Dagan. Improving distributional similarity with lessons learned from word
  embeddings. TACL 3, 2015 (Sections 2-3: PPMI, SVD, cds, eig, neg).
  O. Levy, Y. Goldberg. Neural word embedding as implicit matrix factorization. NIPS 2014
  (shifted PPMI, Section 3.1).
"""

from __future__ import annotations

import collections
import warnings
from functools import partial
from typing import Any, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse
from jax.sharding import PartitionSpec as P

from jaxfact import _checks
from jaxfact import _linalg
from jaxfact import _sharding
from jaxfact import linop
from jaxfact import svd as _svd

__all__ = ["Vocabulary", "build_vocab", "encode_corpus", "cooccurrence", "ppmi", "word_vectors"]

WEIGHTINGS = ("uniform", "linear", "harmonic")

# Below this vocabulary size a (word, context) pair fits one uint32 sort key, w * V + c, with the
# largest value left free as the sentinel of dropped pairs; above it the sort uses two int32 keys.
_SINGLE_KEY_MAX_VOCAB = 65535


class Vocabulary(NamedTuple):
    """Words sorted by decreasing corpus frequency (ties alphabetically); id = position."""

    words: tuple[str, ...]   # (V,)
    counts: np.ndarray       # (V,) int64, corpus frequency of each word
    index: dict[str, int]    # word -> id


def build_vocab(documents: Iterable[Sequence[str]], *, min_count: int = 1,
                max_size: int | None = None) -> Vocabulary:
    """Vocabulary of the words occurring at least ``min_count`` times, most frequent first.

    Id 0 is the most frequent word, the order adaptive embeddings
    (:class:`jaxfact.nn.AdaptiveEmbed`) expect. ``max_size`` keeps only the most frequent words.
    O(number of tokens).

    Example::

      >>> build_vocab([["a", "b", "a"], ["c", "a"]], min_count=1).words
      ('a', 'b', 'c')
    """
    fn = "build_vocab"
    min_count = _checks.check_int(fn, "min_count", min_count, low=1)
    if max_size is not None:
        max_size = _checks.check_int(fn, "max_size", max_size, low=1)
    counter: collections.Counter = collections.Counter()
    for doc in _documents(fn, documents):
        counter.update(doc)
    bad = next((t for t in counter if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{fn}: every token in `documents` must be a string; got "
                        f"{type(bad).__name__} {bad!r}. Convert the tokens first, e.g. "
                        f"`[[str(t) for t in doc] for doc in documents]`")
    items = sorted((kv for kv in counter.items() if kv[1] >= min_count),
                   key=lambda kv: (-kv[1], kv[0]))
    if max_size is not None:
        items = items[:max_size]
    if not items:
        raise ValueError(f"{fn}: no word occurs at least min_count = {min_count} times in "
                         f"`documents` ({sum(counter.values())} tokens)")
    words = tuple(w for w, _ in items)
    counts = np.asarray([c for _, c in items], dtype=np.int64)
    return Vocabulary(words, counts, {w: i for i, w in enumerate(words)})


def encode_corpus(documents: Iterable[Sequence[str]], vocab: Vocabulary, *,
                  gap: int = 0) -> np.ndarray:
    """Token ids of a corpus as one int32 array for :func:`cooccurrence`.

    Words outside the vocabulary become -1 and keep their position, so the window distance counts
    them, as Levy et al.'s ``hyperwords`` does. ``gap`` copies of -1 are put between documents:
    ``gap >= window`` keeps windows from crossing document boundaries.
    """
    fn = "encode_corpus"
    gap = _checks.check_int(fn, "gap", gap, low=0)
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"{fn}: `vocab` must be a Vocabulary from build_vocab; got "
                        f"{type(vocab).__name__}")
    index = vocab.index
    out: list[int] = []
    for i, doc in enumerate(_documents(fn, documents)):
        if i and gap:
            out.extend([-1] * gap)
        out.extend(index.get(t, -1) for t in doc)
    return np.asarray(out, dtype=np.int32)


def cooccurrence(token_ids: Any, vocab_size: int, *, window: int,
                 weighting: str = "uniform", checks: bool = False) -> jsparse.BCOO:
    """Symmetric-window co-occurrence counts ``#(w, c)`` as a sparse (V, V) BCOO matrix.

    ``#(w, c) = sum over positions i, offsets 1 <= d <= window of weight(d) * ([t_i = w, t_{i+d} =
    c] + [t_{i+d} = w, t_i = c])``, so the matrix is symmetric. Negative ids are padding: they
    keep their position but pair with nothing (out-of-vocabulary words, document gaps).
    Weightings: ``"uniform"`` (weight 1), ``"linear"`` (``(window - d + 1) / window``, what
    word2vec's dynamic window gives in expectation, Levy et al.'s "dyn") and ``"harmonic"``
    (``1 / d``, GloVe's).

    The 2 n w window pairs, packed into one uint32 key ``w V + c`` (two int32 keys when V >
    65535), are sorted once by (word, context) and each run of equal pairs summed, in one jitted
    kernel: O(n w log(n w)) time and O(n w) memory, independent of V^2; the result stores only
    the non-zeros, with sorted unique indices. On the CPU backend (the tokens on CPU devices, or
    the default backend under an outer ``jit``) the sort and the run sums are NumPy's, through
    ``jax.pure_callback`` (several times faster than XLA's CPU sort; weighted sums are added in
    float64 and rounded once); elsewhere, and for a sharded corpus, everything stays on the
    device: XLA's sort (of the keys alone for uniform weights), a prefix sum of the run starts and
    two sorted segment sums. Both give the same entries in the same order and the same counts
    (weighted sums to rounding).

    Args:
      token_ids: (n,) integer ids in [0, vocab_size), negative for padding.
      vocab_size: V.
      window: maximum distance w >= 1.
      weighting: "uniform", "linear" or "harmonic".
      checks: under an outer ``jit``, also check that ``token_ids < vocab_size``, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      ``BCOO`` of shape (V, V), float (float32 unless x64 is on), with ``nse`` = number of
      distinct pairs.

    Sharding: ``token_ids`` may be split along its one axis over any mesh axes (its length a
    multiple of the number of shards p: pad the corpus with -1, an empty document, e.g.
    ``np.pad(ids, (0, -len(ids) % p), constant_values=-1)``). Documents may straddle the cut:
    each shard receives the next ``window`` tokens from the following shard(s) (a
    collective-permute of ``window`` ids), counts the pairs starting in its part, then sends each
    distinct (w, c) count to the shard owning row w, ``w mod p`` (one all-to-all of p slots of
    ``cap`` entries, 12 bytes each, ``cap`` the largest count any shard sends to another), where
    they are summed. Rows are dealt out cyclically because a frequency-sorted vocabulary puts
    most counts in its first rows. The result is a BCOO whose ``data`` and ``indices`` are split
    over the same axes, shard j holding the distinct entries of the rows w = j (mod p) and then
    padding (index V); its indices are unique but not sorted across shards. It feeds
    :func:`ppmi` and :func:`word_vectors` as it is; JAX's own BCOO methods (``todense``, ``@``)
    do not accept data split over explicit mesh axes (JAX 0.10): gather it first
    (``jax.device_get``). Eagerly, the number of entries per shard is read back to size the
    all-to-all and the result exactly (two host round trips). Under an outer ``jit`` those
    sizes are unknown: every slot has room for all of a shard's pairs, so each shard receives
    and keeps 2 n w entries (the whole corpus' pairs), p times the eager figure: call
    ``cooccurrence`` outside ``jit`` on large corpora.

    Example::

      >>> C = cooccurrence(jnp.array([0, 1, 2, 1]), 3, window=1)
      >>> C.todense()[1]
      Array([1., 0., 2.], dtype=float32)
    """
    fn = "cooccurrence"
    tokens = token_ids if hasattr(token_ids, "dtype") else np.asarray(token_ids)
    if not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.dtype == bool:
        raise TypeError(f"{fn}: `token_ids` must be an integer array; got dtype {tokens.dtype}")
    if len(tokens.shape) != 1:
        raise ValueError(f"{fn}: `token_ids` must be 1-D (concatenate documents, with negative ids "
                         f"between them); got shape {tuple(tokens.shape)}")
    vocab_size = _checks.check_int(fn, "vocab_size", vocab_size, low=1, high=2**31 - 2)
    window = _checks.check_int(fn, "window", window, low=1)
    weighting = _checks.check_choice(fn, "weighting", weighting, WEIGHTINGS)
    _checks.check_below(fn, "token_ids", tokens, vocab_size, "vocab_size", checks)
    layout, _ = _sharding.layout_of(fn, "token_ids", tokens)
    if layout is not None:
        return _sharded_cooccurrence(tokens.astype(jnp.int32), layout, vocab_size=vocab_size,
                                     window=window, weighting=weighting,
                                     dtype=jnp.result_type(float))
    host_sort = _host_sort_default(tokens)
    tokens = jnp.asarray(tokens, jnp.int32)
    dtype = jnp.result_type(float)
    indices, vals, nnz = _cooccurrence(tokens, vocab_size=vocab_size, window=window,
                                       weighting=weighting, dtype=dtype, host_sort=host_sort)
    if not _checks.is_concrete(nnz):
        # Under an outer jit the number of distinct pairs is unknown: return the padded matrix
        # (padding entries have index V, which BCOO treats as out of bounds and ignores).
        return jsparse.BCOO((vals, indices), shape=(vocab_size, vocab_size))
    nnz = int(nnz)
    return jsparse.BCOO((vals[:nnz], indices[:nnz]), shape=(vocab_size, vocab_size),
                        indices_sorted=True, unique_indices=True)


def ppmi(counts: Any, *, alpha: Any = 0.75, shift: Any = 1.0, checks: bool = False) -> Any:
    """Shifted positive PMI with context distribution smoothing (Levy, Goldberg & Dagan 2015).

    ``SPPMI(w, c) = max(log(#(w,c) sum_c' #(c')^alpha / (#(w) #(c)^alpha)) - log(shift), 0)``
    with ``#(w)`` the row sums and ``#(c)`` the column sums of ``counts``. ``alpha = 0.75`` is
    their "cds" (it raises the probability of rare contexts and lowers their PMI), ``shift = k``
    their "neg" (SGNS with k negative samples factorizes ``PMI - log k``, Levy & Goldberg 2014).

    A BCOO input gives a BCOO with the same sparsity pattern (entries not above ``log k`` are
    stored as explicit zeros; ``jax.experimental.sparse.bcoo_eliminate_zeros`` removes them);
    a dense input gives a dense output. O(nnz + V). ``alpha`` and ``shift`` are traced.

    Args:
      counts: (V, C) non-negative counts, BCOO (duplicate indices are summed first when concrete)
        or dense.
      alpha: context smoothing exponent > 0 (0.75 recommended; 1 means no smoothing).
      shift: k > 0; 1 gives plain PPMI.
      checks: under an outer ``jit``, also check that ``counts`` is finite and non-negative, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Sharding: a BCOO whose ``data`` and ``indices`` are split over mesh axes (as
    :func:`cooccurrence` returns it on a sharded corpus; its indices must be unique) gives a BCOO
    split the same way: each shard's entries are transformed where they are, after one psum of
    the (V,) row sums and the (C,) column sums. A dense ``counts`` split by rows gives a dense
    result split by rows: row sums local, the (C,) column sums by psum. A dense ``counts``
    split otherwise is resharded by rows once, with a ``UserWarning``.

    Example::

      >>> counts = jnp.array([[0.0, 2.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
      >>> M = ppmi(counts, alpha=1.0)          # log(#(w,c) * 6 / (#(w) #(c)))
      >>> print(np.asarray(M, float).round(3).tolist())
      [[0.0, 0.693, 0.693], [0.693, 0.0, 0.0], [0.693, 0.0, 0.0]]
    """
    fn = "ppmi"
    alpha = _checks.check_real(fn, "alpha", alpha, low=0.0, low_open=True)
    shift = _checks.check_real(fn, "shift", shift, low=0.0, low_open=True)
    if isinstance(counts, jsparse.BCOO):
        if len(counts.shape) != 2 or counts.n_batch or counts.n_dense:
            raise ValueError(f"{fn}: `counts` must be a 2-D BCOO matrix without batch or dense "
                             f"dimensions; got shape {counts.shape}, n_batch={counts.n_batch}, "
                             f"n_dense={counts.n_dense}")
        _checks.check_float_dtype(fn, "counts", counts.dtype)
        _checks.check_finite(fn, "counts", counts, checks)
        _checks.check_nonnegative(fn, "counts", counts, checks)
        counts, layout = _bcoo_layout(fn, "counts", counts)
        if layout is not None:
            if not counts.unique_indices:
                raise ValueError(f"{fn}: a `counts` BCOO whose entries are split over devices "
                                 f"must have unique indices (cooccurrence's output has); sum "
                                 f"its duplicates before sharding it")
            a = jnp.asarray(alpha, counts.dtype)
            k = jnp.asarray(shift, counts.dtype)
            data = _sharded_ppmi_sparse(counts.data, counts.indices, a, k, layout=layout,
                                        shape=tuple(counts.shape))
            return jsparse.BCOO((data, counts.indices), shape=counts.shape,
                                indices_sorted=counts.indices_sorted, unique_indices=True)
        if not counts.unique_indices and _checks.is_concrete(counts):
            with _checks.eager():   # the number of distinct entries must be known
                counts = counts.sum_duplicates()
        a = jnp.asarray(alpha, counts.dtype)
        k = jnp.asarray(shift, counts.dtype)
        data = _ppmi_sparse(counts.data, counts.indices, a, k, shape=tuple(counts.shape))
        return jsparse.BCOO((data, counts.indices), shape=counts.shape,
                            indices_sorted=counts.indices_sorted,
                            unique_indices=counts.unique_indices)
    counts = _checks.as_float_array(fn, "counts", counts)
    _checks.check_finite(fn, "counts", counts, checks)
    _checks.check_nonnegative(fn, "counts", counts, checks)
    if counts.ndim == 2:
        counts, layout = _sharding.rows_or_reshard(fn, "counts", counts)
        if layout is not None:
            return _sharded_ppmi_dense(counts, jnp.asarray(alpha, counts.dtype),
                                       jnp.asarray(shift, counts.dtype), layout=layout)
    return _ppmi_dense(counts, jnp.asarray(alpha, counts.dtype), jnp.asarray(shift, counts.dtype))


def word_vectors(matrix: Any, rank: int, *, eig: Any = 0.5, key: Any, n_oversamples: int = 10,
                 n_iter: int = 4, checks: bool = False) -> jax.Array:
    """Word vectors ``W = U_d diag(S_d)^eig`` from the top-d SVD of a (PPMI) matrix.

    ``eig = 0.5`` is Levy et al.'s recommended symmetric split (``W W^T`` approximates the
    matrix's Gram structure with the singular values shared between words and contexts), ``eig =
    0`` drops the singular values, ``eig = 1`` is the classic ``U S`` they advise against. The SVD
    is :func:`jaxfact.randomized_svd`, which works on BCOO matrices without densifying them:
    O(nnz d (n_iter + 1) + V d^2).

    Args:
      matrix: (V, C) BCOO or dense array (typically :func:`ppmi`'s output).
      rank: d, 1 <= d <= min(V, C).
      eig: exponent p >= 0 of the singular values (traced).
      key: ``jax.random`` key of the randomized SVD.
      n_oversamples, n_iter: as in :func:`jaxfact.randomized_svd`.
      checks: under an outer ``jit``, also check that the matrix is finite, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      (V, d) array; rows are word vectors (compare them by cosine).

    Sharding: a BCOO whose entries are split over mesh axes with shard j holding the rows
    w = j (mod p) (what :func:`cooccurrence` and :func:`ppmi` return on a sharded corpus; V a
    multiple of p, else a ValueError: give cooccurrence a ``vocab_size`` rounded up to one) runs
    the same randomized SVD with each shard multiplying its own rows: per power iteration an
    (l, V) psum (``l = rank + n_oversamples``) and the three (l, l) Gram psums of a CholeskyQR3,
    then a TSQR (a psum of p stacked (l, l) factors) and one all-to-all of the V x d result,
    which comes back split by rows in contiguous blocks, ``P(axes, None)``. Same key, same
    factors as on one device, to rounding. A dense ``matrix`` follows
    :func:`jaxfact.randomized_svd`.

    Example::

      >>> M = jnp.diag(jnp.array([4.0, 1.0, 0.25]))
      >>> W = word_vectors(M, 2, eig=0.5, key=jax.random.key(0))
      >>> print(jnp.abs(W).round(3).tolist())            # |U| diag(S)^0.5
      [[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    """
    fn = "word_vectors"
    matrix, layout = _bcoo_layout(fn, "matrix", matrix)
    if layout is None:
        matrix = linop.as_operator(matrix)
    if len(matrix.shape) != 2:
        raise ValueError(f"{fn}: `matrix` must be 2-D; got shape {tuple(matrix.shape)}")
    _checks.check_float_dtype(fn, "matrix", matrix.dtype)
    rank = _checks.check_rank(fn, rank, linop.shape_of(matrix))
    eig = _checks.check_real(fn, "eig", eig, low=0.0)
    _checks.check_key(fn, key, why="the SVD is randomized")
    if layout is not None:
        return _word_vectors_sharded(fn, matrix, layout, rank, eig=eig, key=key,
                                     n_oversamples=n_oversamples, n_iter=n_iter, checks=checks)
    res = _svd.randomized_svd(matrix, rank, key=key, n_oversamples=n_oversamples, n_iter=n_iter,
                              checks=checks)
    return _scale(res.U, res.S, jnp.asarray(eig, res.S.dtype))


def _word_vectors_sharded(fn, matrix, layout, rank, *, eig, key, n_oversamples, n_iter, checks):
    m, n = matrix.shape
    if m % layout.size:
        raise ValueError(
            f"{fn}: `matrix` has {m} rows, which do not split evenly over the {layout.size} "
            f"shards of its entries ({layout.spec(1)}), so its word vectors cannot be split by "
            f"rows. Give cooccurrence a vocab_size that is a multiple of {layout.size} (the "
            f"extra ids never occur and get zero vectors).")
    n_oversamples = _checks.check_int(fn, "n_oversamples", n_oversamples, low=0)
    n_iter = _checks.check_int(fn, "n_iter", n_iter, low=0)
    _checks.check_finite(fn, "matrix", matrix.data, checks)
    dtype = matrix.dtype
    if dtype != jnp.float32 and dtype != jnp.float64:
        matrix = jsparse.BCOO((matrix.data.astype(jnp.float32), matrix.indices),
                              shape=matrix.shape, unique_indices=matrix.unique_indices)
    W, S, misplaced = _sharded_word_vectors(
        matrix.data, matrix.indices, key, jnp.asarray(eig, matrix.dtype), layout=layout,
        shape=(m, n), rank=rank, n_samples=min(rank + n_oversamples, m, n), n_iter=n_iter)
    if _checks.is_concrete(misplaced) and int(misplaced):
        raise ValueError(
            f"{fn}: {int(misplaced)} entries of `matrix` are held by another shard than their "
            f"row's; a BCOO whose entries are split over {layout.size} devices must hold the "
            f"rows w = j (mod {layout.size}) on shard j, as cooccurrence and ppmi return it")
    return W.astype(dtype)


# ------------------------------------------------------------------------------------------------
# Private helpers and kernels


def _documents(fn, documents):
    if isinstance(documents, (str, bytes)):
        raise TypeError(f"{fn}: `documents` must be an iterable of token lists; got a string")
    docs = list(documents)
    if docs and all(isinstance(t, str) for t in docs):
        raise TypeError(f"{fn}: `documents` must be an iterable of token lists (one list per "
                        f"document); got a flat list of strings. Wrap it: [tokens]")
    for doc in docs:
        if isinstance(doc, (str, bytes)):
            raise TypeError(f"{fn}: each document must be a list of tokens; got a string "
                            f"{doc[:30]!r}. Tokenize it first (jaxfact.datasets.tokenize)")
    return docs


def _offset_weight(d, window, weighting):
    if weighting == "linear":
        return (window - d + 1) / window
    if weighting == "harmonic":
        return 1.0 / d
    return 1.0


@partial(jax.jit, static_argnames=("vocab_size", "window", "weighting", "dtype", "host_sort"))
def _cooccurrence(tokens, *, vocab_size, window, weighting, dtype, host_sort=False):
    """(indices, vals, nnz): the distinct pairs' (row, col) indices, (2 n w, 2), sorted, then
    padding (index V, value 0), and their summed weights. ``host_sort``: sort and sum the pairs
    with NumPy through a callback (CPU backend only)."""
    n = tokens.shape[0]
    keys, weights = [], []
    for d in range(1, min(window, max(n - 1, 0)) + 1):   # static: one slice pair per offset
        a, b = tokens[:-d], tokens[d:]
        w = jnp.full(a.shape, _offset_weight(d, window, weighting), dtype)
        keys += [_pair_keys(a, b, vocab_size), _pair_keys(b, a, vocab_size)]
        weights += [w, w]
    if not keys:  # fewer than 2 tokens: no pairs at all
        return jnp.zeros((0, 2), jnp.int32), jnp.zeros((0,), dtype), jnp.int32(0)
    # Keys per slice, then one concatenation (XLA fuses this better than keys of concatenations).
    keys = tuple(jnp.concatenate(k) for k in zip(*keys))
    weight = jnp.concatenate(weights)
    if host_sort:
        return _host_sum_pairs(keys, weight, vocab_size=vocab_size, weighting=weighting,
                               dtype=dtype)
    rows, cols, vals, nnz = _sum_keys(keys, weight, vocab_size=vocab_size, weighting=weighting,
                                      dtype=dtype)
    return jnp.stack([rows, cols], axis=1), vals, nnz


def _sum_pairs(w_ids, c_ids, weight, *, vocab_size, weighting, dtype):
    """Sorted distinct (word, context) pairs and their summed weights, padded with index V.

    Pairs with a negative id are dropped; ``weighting == "uniform"`` means every weight is 1
    (``weight`` is then not read, and only the keys are sorted). The pairs are sorted once, then
    each run of equal pairs becomes one entry: its index from a prefix sum of the run starts,
    and two sorted segment sums pick the run's pair and add its weights. Returns (rows, cols,
    vals, nnz), each of the pairs' length."""
    keys = _pair_keys(w_ids, c_ids, vocab_size)
    return _sum_keys(keys, weight, vocab_size=vocab_size, weighting=weighting, dtype=dtype)


def _sum_keys(keys, weight, *, vocab_size, weighting, dtype):
    """``_sum_pairs`` of the pairs' sort keys (``_pair_keys``)."""
    n_pairs = keys[0].shape[0]
    uniform = weighting == "uniform"
    values = () if uniform else (weight,)
    sentinel = jnp.uint32(0xFFFFFFFF) if len(keys) == 1 else jnp.int32(vocab_size)
    keys_s = jax.lax.sort(keys + values, num_keys=len(keys), is_stable=True)
    keys_s, weight_s = keys_s[:len(keys)], keys_s[len(keys):]
    valid_s = keys_s[0] != sentinel      # dropped pairs sort last
    new = jnp.zeros((1,), bool)
    for k in keys_s:
        new = new | (k[1:] != k[:-1])
    new = jnp.concatenate([jnp.ones((1,), bool), new]) & valid_s
    # Run index of each sorted pair (the dropped pairs, last, join the last run with weight 0).
    run = jnp.cumsum(new, dtype=jnp.int32) - 1
    nnz = run[-1] + 1
    segsum = partial(jax.ops.segment_sum, segment_ids=jnp.maximum(run, 0), num_segments=n_pairs,
                     indices_are_sorted=True)
    # A run has one start: summing (key - pad, at its start; 0 elsewhere) over the run and adding
    # pad back gives its key, and the pad key (row V) in the runs past nnz. Unsigned wrap-around.
    if len(keys) == 1:
        V = jnp.uint32(vocab_size)
        pad = V * V                          # row V, the padding's
        key = segsum(jnp.where(new, keys_s[0] - pad, jnp.uint32(0))) + pad
        rows = (key // V).astype(jnp.int32)
        cols = jnp.where(rows < vocab_size, key % V, V).astype(jnp.int32)
    else:
        V = jnp.int32(vocab_size)
        rows, cols = (segsum(jnp.where(new, k - V, 0)) + V for k in keys_s)
    if uniform:   # counts in int32: exact beyond float32's 2**24
        vals = segsum(valid_s.astype(jnp.int32)).astype(dtype)
    else:
        vals = segsum(jnp.where(valid_s, weight_s[0], 0))
    return rows, cols, vals, nnz.astype(jnp.int32)


def _pair_keys(w_ids, c_ids, vocab_size):
    """Sort keys of the (word, context) pairs, dropped pairs (a negative id) sorting last: up to
    ``_SINGLE_KEY_MAX_VOCAB`` one uint32 key w V + c, 2**32 - 1 for dropped pairs; above it
    (w, c) as two int32 keys, (V, V) for dropped pairs."""
    valid = (w_ids >= 0) & (c_ids >= 0)
    if vocab_size <= _SINGLE_KEY_MAX_VOCAB:
        V = jnp.uint32(vocab_size)
        sentinel = jnp.uint32(0xFFFFFFFF)   # > (V-1) * V + V-1 for V <= 65535
        key = jnp.where(valid, w_ids.astype(jnp.uint32) * V + c_ids.astype(jnp.uint32), sentinel)
        return (key,)
    big = jnp.int32(vocab_size)
    return (jnp.where(valid, w_ids, big), jnp.where(valid, c_ids, big))


def _host_sum_pairs(keys, weight, *, vocab_size, weighting, dtype):
    """``_sum_keys`` by NumPy through ``jax.pure_callback``, for the CPU backend only (on an
    accelerator the pairs would travel to the host and back): NumPy's sort is several times
    faster than XLA's CPU sort. Returns (indices (n_pairs, 2), vals, nnz)."""
    uniform = weighting == "uniform"
    operands = keys if uniform else keys + (weight,)
    n_pairs = keys[0].shape[0]
    shapes = (jax.ShapeDtypeStruct((n_pairs, 2), jnp.int32),
              jax.ShapeDtypeStruct((n_pairs,), dtype), jax.ShapeDtypeStruct((), jnp.int32))
    return jax.pure_callback(partial(_host_sum_pairs_np, vocab_size=vocab_size,
                                     num_keys=len(keys), dtype=np.dtype(dtype)),
                             shapes, *operands, vmap_method="sequential")


def _host_sum_pairs_np(*operands, vocab_size, num_keys, dtype):
    keys = [np.asarray(k) for k in operands[:num_keys]]
    n_pairs = keys[0].shape[0]
    if num_keys == 1:
        key, end = keys[0], np.uint32(0xFFFFFFFF)
    else:   # two non-negative int32 keys as one uint64 (NumPy has it whatever JAX's x64 is)
        key = (keys[0].astype(np.uint64) << np.uint64(32)) | keys[1].astype(np.uint64)
        end = np.uint64(vocab_size) << np.uint64(32)
    if len(operands) > num_keys:
        if num_keys == 1 and n_pairs < 2**32:
            # A stable argsort as a sort of (key, position) in one uint64 (several times faster).
            packed = np.sort((key.astype(np.uint64) << np.uint64(32))
                             | np.arange(n_pairs, dtype=np.uint64))
            key = (packed >> np.uint64(32)).astype(np.uint32)
            order = (packed & np.uint64(0xFFFFFFFF)).astype(np.intp)
        else:
            order = np.argsort(key, kind="stable")
            key = key[order]
        weight = np.asarray(operands[num_keys])[order]
    else:
        key, weight = np.sort(key), None
    n_valid = int(np.searchsorted(key, end))     # dropped pairs sort last
    key = key[:n_valid]
    new = np.ones((n_valid,), bool)
    np.not_equal(key[1:], key[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    nnz = starts.shape[0]
    first = key[starts]
    indices = np.empty((n_pairs, 2), np.int32)
    indices[nnz:] = vocab_size
    if num_keys == 1:
        rows = first // np.uint32(vocab_size)
        indices[:nnz, 0], indices[:nnz, 1] = rows, first - rows * np.uint32(vocab_size)
    else:
        indices[:nnz, 0], indices[:nnz, 1] = first >> np.uint64(32), first & np.uint64(0xFFFFFFFF)
    vals = np.empty((n_pairs,), dtype)
    vals[nnz:] = 0
    if nnz and weight is None:   # counts: the distances between run starts
        np.subtract(starts[1:], starts[:-1], out=vals[:nnz - 1], casting="unsafe")
        vals[nnz - 1] = n_valid - starts[-1]
    elif nnz:
        # float64 sums, rounded once (XLA's segment sum adds in the dtype, in order)
        vals[:nnz] = np.add.reduceat(weight[:n_valid].astype(np.float64), starts)
    return indices, vals, np.int32(nnz)


def _host_sort_default(x):
    """Whether :func:`cooccurrence` sorts with NumPy: only where XLA runs on the CPU (the array's
    devices, else the default backend)."""
    if isinstance(x, jax.Array) and _checks.is_concrete(x):
        return all(d.platform == "cpu" for d in x.devices())
    return jax.default_backend() == "cpu"


def _pmi_terms(count, row_sum, col_sum, total_alpha, alpha, shift):
    # log(#(w,c)) - log(#(w)) - alpha log(#(c)) + log(sum_c #(c)^alpha) - log k. Zero counts
    # (explicit zeros, padding) have no PMI: their log arguments are replaced by 1 and the output
    # by 0 (double where, so no -inf or NaN reaches the value or the gradient).
    ok = count > 0
    one = jnp.ones_like(count)
    pmi = (jnp.log(jnp.where(ok, count, one)) - jnp.log(jnp.where(ok, row_sum, one))
           - alpha * jnp.log(jnp.where(ok, col_sum, one)) + jnp.log(total_alpha) - jnp.log(shift))
    return jnp.where(ok, jnp.maximum(pmi, 0), 0)


@partial(jax.jit, static_argnames=("shape",))
def _ppmi_sparse(data, indices, alpha, shift, *, shape):
    return _ppmi_sparse_body(data, indices, alpha, shift, shape, lambda sums: sums)


def _ppmi_sparse_body(data, indices, alpha, shift, shape, reduce):
    # ``reduce`` completes the (row sums, column sums) pair: identity on one device, a psum over
    # the shards when the entries are split.
    m, n = shape
    r, c = indices[:, 0], indices[:, 1]
    inside = (r < m) & (c < n)           # BCOO padding entries carry index == shape
    data = jnp.where(inside, data, 0)
    row_sum, col_sum = reduce((jax.ops.segment_sum(data, r, num_segments=m),
                               jax.ops.segment_sum(data, c, num_segments=n)))
    col_alpha = jnp.where(col_sum > 0, jnp.where(col_sum > 0, col_sum, 1) ** alpha, 0)
    total_alpha = jnp.maximum(jnp.sum(col_alpha), jnp.finfo(data.dtype).tiny)
    rs = row_sum[jnp.minimum(r, m - 1)]
    cs = col_sum[jnp.minimum(c, n - 1)]
    return _pmi_terms(data, rs, cs, total_alpha, alpha, shift)


@jax.jit
def _ppmi_dense(counts, alpha, shift):
    return _ppmi_dense_body(counts, alpha, shift, lambda col_sum: col_sum)


def _ppmi_dense_body(counts, alpha, shift, reduce):
    # ``reduce`` completes the column sums: identity on one device, a psum when rows are split.
    row_sum = jnp.sum(counts, axis=1, keepdims=True)
    col_sum = reduce(jnp.sum(counts, axis=0, keepdims=True))
    col_alpha = jnp.where(col_sum > 0, jnp.where(col_sum > 0, col_sum, 1) ** alpha, 0)
    total_alpha = jnp.maximum(jnp.sum(col_alpha), jnp.finfo(counts.dtype).tiny)
    return _pmi_terms(counts, row_sum, col_sum, total_alpha, alpha, shift)


@jax.jit
def _scale(U, S, eig):
    # S**0 is 1 even at S = 0 (power(0, 0) = 1); S**p for p > 0 is 0 there. No division occurs.
    return U * jnp.power(S, eig)[None, :]


# ------------------------------------------------------------------------------------------------
# Sharded kernels: the tokens (and then the count matrix's entries) split over ``layout.axes``.
#
# A count matrix from sharded tokens is a BCOO whose ``data`` (nse,) and ``indices`` (nse, 2) are
# split over the same axes, shard j holding the distinct entries of the rows w = j (mod p), sorted,
# then padding (index V, value 0) up to the largest shard's count. Its indices are unique (padding
# is out of bounds) but not globally sorted. Rows are dealt out cyclically, not in contiguous
# blocks, because a frequency-sorted vocabulary puts most entries in its first rows: contiguous
# blocks would give the first shard most of the matrix (measured on Zipfian text: the all-to-all
# padded to 5x the entries that cross, and the first shard held most of the counts).
# word_vectors turns its cyclic rows into contiguous blocks at the end (one all-to-all of V d).


def _local_pairs(t, *, axes, p, window, weighting, dtype):
    """Window pairs starting at this shard's tokens: those starting near the end of the block
    reach into the next shards, whose first ``window`` tokens arrive by ``ppermute`` (-1 past the
    corpus end)."""
    n_local = t.shape[0]
    i = _sharding.shard_index(axes)
    parts, need, k = [t], window, 1
    while need > 0 and k < p:
        take = min(n_local, need)
        recv = jax.lax.ppermute(t[:take], axes, perm=[(j, j - k) for j in range(k, p)])
        parts.append(jnp.where(i + k < p, recv, -1))
        need, k = need - take, k + 1
    ext = jnp.concatenate(parts)
    if ext.shape[0] < n_local + window:
        ext = jnp.concatenate([ext, jnp.full((n_local + window - ext.shape[0],), -1, t.dtype)])
    left, right, weights = [], [], []
    for d in range(1, window + 1):
        a, b = ext[:n_local], ext[d:d + n_local]
        w = jnp.full(a.shape, _offset_weight(d, window, weighting), dtype)
        left += [a, b]
        right += [b, a]
        weights += [w, w]
    return jnp.concatenate(left), jnp.concatenate(right), jnp.concatenate(weights)


@partial(jax.jit, static_argnames=("layout", "vocab_size", "window", "weighting", "dtype"))
def _sharded_local_counts(tokens, *, layout, vocab_size, window, weighting, dtype):
    """Each shard's distinct (word, context) counts grouped by the shard owning their row (w mod
    p), and how many go to each: (rows, cols, vals) split like the tokens, and a (p, p) [source,
    destination] count matrix."""
    axes, p = layout.axes, layout.size

    def body(t):
        w_ids, c_ids, weight = _local_pairs(t, axes=axes, p=p, window=window,
                                            weighting=weighting, dtype=dtype)
        rows, cols, vals, _ = _sum_pairs(w_ids, c_ids, weight, vocab_size=vocab_size,
                                         weighting=weighting, dtype=dtype)
        dest = jnp.where(rows < vocab_size, rows % p, p)
        order = jnp.argsort(dest, stable=True)          # one run per destination, padding last
        sizes = jax.ops.segment_sum(jnp.ones_like(dest), dest, num_segments=p)
        return rows[order], cols[order], vals[order], sizes[None, :]

    split = P(axes)
    return jax.shard_map(body, mesh=layout.mesh, in_specs=split,
                         out_specs=(split, split, split, P(axes, None)))(tokens)


@partial(jax.jit, static_argnames=("layout", "vocab_size", "cap"))
def _sharded_merge(rows, cols, vals, sizes, *, layout, vocab_size, cap):
    """Sends each shard's entries to the shard owning their row (one all-to-all of (p, cap) slots,
    cap = the largest source-destination count) and sums the entries received."""
    axes = layout.axes

    def body(rows, cols, vals, sizes):
        n = rows.shape[0]
        size = sizes[0]
        start = jnp.cumsum(size) - size      # the local entries come in one run per destination
        slot = jnp.arange(cap)
        ok = slot[None, :] < size[:, None]                                  # (p, cap)
        pos = jnp.minimum(start[:, None] + slot[None, :], n - 1)
        ids = jnp.stack([jnp.where(ok, rows[pos], -1), jnp.where(ok, cols[pos], -1)], axis=-1)
        ids = jax.lax.all_to_all(ids, axes, 0, 0, tiled=True)              # (p, cap, 2)
        got = jax.lax.all_to_all(jnp.where(ok, vals[pos], 0), axes, 0, 0, tiled=True)
        r, c, v, nnz = _sum_pairs(ids[..., 0].ravel(), ids[..., 1].ravel(), got.ravel(),
                                  vocab_size=vocab_size, weighting="summed", dtype=vals.dtype)
        return v, jnp.stack([r, c], axis=1), nnz[None]

    split = P(axes)
    return jax.shard_map(body, mesh=layout.mesh, in_specs=(split, split, split, P(axes, None)),
                         out_specs=(split, P(axes, None), split))(rows, cols, vals, sizes)


@partial(jax.jit, static_argnames=("layout", "nse"))
def _sharded_trim(data, indices, *, layout, nse):
    """Each shard's first ``nse`` entries (its distinct entries and some padding)."""
    return jax.shard_map(lambda d, i: (d[:nse], i[:nse]), mesh=layout.mesh,
                         in_specs=(P(layout.axes), P(layout.axes, None)),
                         out_specs=(P(layout.axes), P(layout.axes, None)))(data, indices)


def _sharded_cooccurrence(tokens, layout, *, vocab_size, window, weighting, dtype):
    p = layout.size
    rows, cols, vals, sizes = _sharded_local_counts(
        tokens, layout=layout, vocab_size=vocab_size, window=window, weighting=weighting,
        dtype=dtype)
    concrete = _checks.is_concrete(sizes)
    if concrete:
        cap = max(int(np.max(np.asarray(jax.device_get(sizes)))), 1)
    else:   # under an outer jit: room for every local entry, or for all of a shard's rows
        cap = min(rows.shape[0] // p, -(-vocab_size // p) * vocab_size)
    data, indices, nnz = _sharded_merge(rows, cols, vals, sizes, layout=layout,
                                        vocab_size=vocab_size, cap=cap)
    if concrete:
        nse = max(int(np.max(np.asarray(jax.device_get(nnz)))), 1)
        data, indices = _sharded_trim(data, indices, layout=layout, nse=nse)
    return jsparse.BCOO((data, indices), shape=(vocab_size, vocab_size), indices_sorted=False,
                        unique_indices=True)


def _bcoo_layout(fn, name, M):
    """The layout of a BCOO whose entries are split (data and indices along nse), else None.
    Indices split differently from the data are resharded like it, with a warning."""
    if not isinstance(M, jsparse.BCOO):
        return M, None
    layout, _ = _sharding.layout_of(fn, name, M.data)
    if layout is None:
        return M, None
    if _sharding.layout_of(fn, name, M.indices) != (layout, None):
        warnings.warn(f"{fn}: the indices of `{name}` are not split like its data "
                      f"({layout.spec(1)}); they are resharded to {layout.spec(2)}, moving up to "
                      f"{M.indices.size * M.indices.dtype.itemsize:,} bytes between devices.",
                      UserWarning, stacklevel=3)
        M = jsparse.BCOO((M.data, _sharding.reshard(M.indices, layout)), shape=M.shape,
                         indices_sorted=M.indices_sorted, unique_indices=M.unique_indices)
    return M, layout


@partial(jax.jit, static_argnames=("layout", "shape"))
def _sharded_ppmi_sparse(data, indices, alpha, shift, *, layout, shape):
    axes = layout.axes

    def body(data, indices, alpha, shift):
        return _ppmi_sparse_body(data, indices, alpha, shift, shape,
                                 lambda sums: jax.lax.psum(sums, axes))

    return jax.shard_map(body, mesh=layout.mesh,
                         in_specs=(P(axes), P(axes, None), P(), P()),
                         out_specs=P(axes))(data, indices, alpha, shift)


@partial(jax.jit, static_argnames=("layout",))
def _sharded_ppmi_dense(counts, alpha, shift, *, layout):
    axes = layout.axes

    def body(counts, alpha, shift):
        return _ppmi_dense_body(counts, alpha, shift, lambda s: jax.lax.psum(s, axes))

    spec = layout.spec(2)
    return jax.shard_map(body, mesh=layout.mesh, in_specs=(spec, P(), P()),
                         out_specs=spec)(counts, alpha, shift)


class _Block(NamedTuple):
    """This shard's (m_local, n) row block of a sparse matrix as coordinates (vals, rows, cols),
    rows local; entries not in the block carry value 0 (and in-range indices)."""

    vals: jax.Array
    rows: jax.Array
    cols: jax.Array
    shape: tuple[int, int]

    def mm_rows(self, Bt):
        """(X @ Bt.T).T = Bt @ X.T, (l, m_local): a segment sum over the entries."""
        return jax.ops.segment_sum(self.vals[:, None] * Bt.T[self.cols], self.rows,
                                   num_segments=self.shape[0]).T

    def rmm_rows(self, Ct):
        """Ct @ X, (l, n), the local part of the sum over all rows."""
        return jax.ops.segment_sum(self.vals[:, None] * Ct.T[self.rows], self.cols,
                                   num_segments=self.shape[1]).T


def _svd_rows_body(X, key, *, axes, m, rank, n_samples, n_iter):
    """``_linalg.randomized_svd`` of a sparse matrix whose rows are dealt out cyclically over
    ``axes``: X is this shard's (m / p, n) block of rows j, j + p, ... (a :class:`_Block`), m the
    global row count. The algorithm of ``_sharded_svd.randomized_svd_body`` (dense blocks), with
    the products by segment sums; any assignment of rows to shards gives the same factors up to
    rounding, the wide case's random columns being taken in the same order. Returns (U_local, s,
    Vt), U's rows held like X's, signs as ``_linalg.flip`` (up to exact ties between rows of
    different shards, decided by the shard order)."""
    m_local, n = X.shape
    dtype = X.vals.dtype
    psum = partial(jax.lax.psum, axis_name=axes)
    if m >= n:
        omega_t = jax.random.normal(key, (n_samples, n), dtype)
        Qt = _sharding.normalize_rows(X.mm_rows(omega_t), axes, m)             # (l, m_local)

        def power(_, Qt):
            Zt = _linalg.normalize_rows(psum(X.rmm_rows(Qt)))                  # (l, n)
            return _sharding.normalize_rows(X.mm_rows(Zt), axes, m)

        Qt = jax.lax.fori_loop(0, n_iter, power, Qt)
        Q, _ = _sharding.tsqr(Qt.T, axes)                                      # (m_local, l)
        Ub, s, Vbt = _linalg.svd_thin(psum(X.rmm_rows(Q.T)), rank)             # B = Q^T X
        U, s, Vt = (Q @ Ub)[:, :rank], s[:rank], Vbt[:rank]
    else:   # the tall algorithm on X^T, whose (l, m) sketches are split here
        p = m // m_local
        full = jax.random.normal(key, (n_samples, m), dtype).reshape(n_samples, m_local, p)
        omega_t = jnp.take(full, _sharding.shard_index(axes), axis=2)         # columns j + p i
        Qt = _linalg.normalize_rows(psum(X.rmm_rows(omega_t)))                 # (l, n)

        def power(_, Qt):
            Zt = _sharding.normalize_rows(X.mm_rows(Qt), axes, m)              # (l, m_local)
            return _linalg.normalize_rows(psum(X.rmm_rows(Zt)))

        Q = _linalg.orthonormalize(jax.lax.fori_loop(0, n_iter, power, Qt).T)  # (n, l)
        Qb, Rb = _sharding.tsqr(X.mm_rows(Q.T).T, axes)                        # X Q = Qb Rb
        Ur, s, Vrt = _linalg.svd_thin(Rb.T, rank)
        U, s, Vt = (Qb @ Vrt.T)[:, :rank], s[:rank], (Q @ Ur)[:, :rank].T
    return _sharding.flip(U, s, Vt, axes)


def _cyclic_to_blocks(U, axes, p):
    """Rows held cyclically (local row i of shard j is global row j + p i) to contiguous blocks
    (shard k holds rows [k b, (k + 1) b), b = U's local row count): one all-to-all of about b
    rows per shard, each row sent once."""
    b, d = U.shape
    j = _sharding.shard_index(axes)
    g = j + p * jnp.arange(b)                                  # global rows, increasing
    # local rows going to shard k: those with k b <= j + p i < (k + 1) b, a contiguous range
    start = jnp.clip(-((j - jnp.arange(p + 1) * b) // p), 0, b)
    start, count = start[:-1], start[1:] - start[:-1]
    cap = -(-b // p)
    slot = jnp.arange(cap)
    ok = slot[None, :] < count[:, None]                                     # (p, cap)
    pos = jnp.minimum(start[:, None] + slot[None, :], b - 1)
    dest_row = jnp.where(ok, g[pos] - jnp.arange(p)[:, None] * b, b)        # b: padding
    got = jax.lax.all_to_all(jnp.where(ok[..., None], U[pos], 0), axes, 0, 0, tiled=True)
    at = jax.lax.all_to_all(dest_row, axes, 0, 0, tiled=True)
    return jnp.zeros_like(U).at[at.ravel()].set(got.reshape(-1, d), mode="drop")


@partial(jax.jit, static_argnames=("layout", "shape", "rank", "n_samples", "n_iter"))
def _sharded_word_vectors(data, indices, key, eig, *, layout, shape, rank, n_samples, n_iter):
    """Word vectors of a BCOO whose shard j holds the entries of the rows w = j (mod p):
    (W, S, misplaced), W's rows split in contiguous blocks, misplaced the number of entries on
    another shard than their row's (then the result is wrong and the caller raises)."""
    axes, (m, n), p = layout.axes, shape, layout.size
    block = m // p

    def body(data, indices, key, eig):
        j = _sharding.shard_index(axes)
        r, c = indices[:, 0], indices[:, 1]
        inside = (r < m) & (c < n)
        mine = inside & (r % p == j)
        misplaced = jax.lax.psum(jnp.sum(inside & ~mine), axes)
        local = _Block(jnp.where(mine, data, 0), jnp.where(mine, r // p, 0),
                       jnp.where(mine, c, 0), (block, n))
        U, s, _ = _svd_rows_body(local, key, axes=axes, m=m, rank=rank, n_samples=n_samples,
                                 n_iter=n_iter)
        return _cyclic_to_blocks(_scale(U, s, eig), axes, p), s, misplaced

    return jax.shard_map(body, mesh=layout.mesh,
                         in_specs=(P(axes), P(axes, None), P(), P()),
                         out_specs=(P(axes, None), P(), P()))(data, indices, key, eig)
