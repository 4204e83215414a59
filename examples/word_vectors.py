"""PPMI-SVD word vectors from a small real corpus, evaluated on word similarity.

Levy, Goldberg & Dagan (2015)'s count-based pipeline, with jaxfact end to end: the Lee background
corpus (300 news documents, ~60k tokens, shipped in the gensim wheel) -> vocabulary -> window-2
co-occurrence counts (sparse) -> PPMI with context smoothing alpha = 0.75 -> randomized SVD,
``W = U_d S_d^0.5``. Words are compared by cosine; the table gives Spearman's rho between cosine
and human judgements on WordSim353 and SimLex-999, over the pairs whose two words are in the
vocabulary, for the sparse PPMI rows and for the SVD vectors; then nearest neighbours.

Spearman's rho is computed with NumPy ranks (ties averaged), no SciPy.

Run: ``python examples/word_vectors.py`` (about 15 s on 2 CPU cores).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

import jaxfact
from jaxfact import datasets

WORDS = ("government", "police", "fire", "australia", "president", "market", "week")


def load_corpus(min_count: int = 2, window: int = 2):
    docs = datasets.load_lee_corpus()
    vocab = jaxfact.build_vocab(docs, min_count=min_count)
    ids = jaxfact.encode_corpus(docs, vocab, gap=window)   # gap >= window: no cross-document pairs
    return vocab, ids


def build(vocab, ids, *, window: int = 2, alpha: float = 0.75, shift: float = 1.0,
          rank: int = 100, eig: float = 0.5, seed: int = 0, weighting: str = "uniform"):
    """(PPMI matrix as BCOO, word vectors (V, rank))."""
    V = len(vocab.words)
    counts = jaxfact.cooccurrence(ids, V, window=window, weighting=weighting)
    M = jaxfact.ppmi(counts, alpha=alpha, shift=shift)
    W = jaxfact.word_vectors(M, rank, eig=eig, key=jax.random.key(seed))
    return M, W


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def spearman(a, b) -> float:
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def rows_of(matrix, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a dense array or of a BCOO (by a sparse product, never densifying it)."""
    if isinstance(matrix, jsparse.BCOO):
        select = jnp.zeros((matrix.shape[0], len(idx)), matrix.dtype)
        select = select.at[jnp.asarray(idx), jnp.arange(len(idx))].set(1)
        return np.asarray((matrix.T @ select).T)
    return np.asarray(matrix)[idx]


def cosine_pairs(matrix, vocab, pairs):
    """Cosine similarity of the in-vocabulary pairs, their human scores, and how many there are."""
    keep = [(vocab.index[a], vocab.index[b], s) for a, b, s in
            zip(pairs.word1, pairs.word2, pairs.score) if a in vocab.index and b in vocab.index]
    if not keep:
        return np.zeros(0), np.zeros(0)
    i, j, s = map(np.asarray, zip(*keep))
    words = np.unique(np.concatenate([i, j]))
    R = rows_of(matrix, words).astype(np.float64)
    norms = np.linalg.norm(R, axis=1)
    R = R / np.where(norms > 0, norms, 1)[:, None]   # an all-zero row has cosine 0 with anything
    pos = {w: n for n, w in enumerate(words)}
    cos = np.array([R[pos[a]] @ R[pos[b]] for a, b in zip(i, j)])
    return cos, s


def similarity(matrix, vocab, benchmarks=None) -> dict:
    benchmarks = benchmarks or {"WS353": datasets.load_wordsim353(),
                                "SimLex999": datasets.load_simlex999()}
    out = {}
    for name, pairs in benchmarks.items():
        cos, s = cosine_pairs(matrix, vocab, pairs)
        out[name] = (spearman(cos, s) if len(s) > 2 else float("nan"), len(s))
    return out


def neighbours(W, vocab, word: str, n: int = 5) -> list[str]:
    Wn = np.asarray(W, np.float64)
    Wn = Wn / np.maximum(np.linalg.norm(Wn, axis=1, keepdims=True), 1e-12)
    i = vocab.index[word]
    sims = Wn @ Wn[i]
    sims[i] = -np.inf
    return [vocab.words[j] for j in np.argsort(-sims)[:n]]


def main():
    t0 = time.perf_counter()
    vocab, ids = load_corpus()
    M, W = build(vocab, ids)
    n_tokens = int(np.sum(ids >= 0))
    print(f"Lee corpus: {n_tokens} in-vocabulary tokens, vocabulary {len(vocab.words)} words "
          f"(min_count 2); window 2; PPMI alpha 0.75 ({M.nse} stored entries, "
          f"{M.nse / len(vocab.words)**2:.2%} of V x V); SVD d = 100, eig = 0.5")
    rows = []
    for name, mat in (("PPMI (sparse rows)", M), ("SVD d=100, eig 0.5", W)):
        sim = similarity(mat, vocab)
        rows.append((name, sim))
    print("\n| representation | WS353 rho | WS353 pairs | SimLex999 rho | SimLex999 pairs |")
    print("|---|---|---|---|---|")
    for name, sim in rows:
        print(f"| {name} | {sim['WS353'][0]:.3f} | {sim['WS353'][1]} | "
              f"{sim['SimLex999'][0]:.3f} | {sim['SimLex999'][1]} |")
    print("\n(Levy et al. 2015, Table 3, 1.5B-token Wikipedia: SVD .784 WS-Sim, .402 SimLex; "
          "a 60k-token corpus gives far lower absolute scores.)")
    print("\n| word | 5 nearest neighbours (SVD vectors, cosine) |")
    print("|---|---|")
    for w in WORDS:
        if w in vocab.index:
            print(f"| {w} | {', '.join(neighbours(W, vocab, w))} |")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
