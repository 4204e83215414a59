"""Levy & Goldberg (2014): SGNS implicitly factorizes the shifted PMI matrix

O. Levy, Y. Goldberg, "Neural word embedding as implicit matrix factorization", NIPS 2014. At the
optimum of skip-gram with k negative samples (SGNS), a word vector w and a context vector c
satisfy w . c = PMI(w, c) - log k (their Section 3.1), PMI taken with the noise distribution's
smoothed context counts #(c)^0.75; and SVD of the (shifted) positive PMI matrix gives word
vectors that match SGNS on word similarity (abstract). The paper trains on Wikipedia (1.5B
tokens); no Wikipedia dump ships offline except the ~470k-token sample in gensim's test data
(``jaxfact.datasets.load_wikipedia_sample``), so we train gensim's SGNS on that sample: window 2
(fixed, no dynamic shrinking), no subsampling, words seen >= 5 times, d = 100, ns_exponent 0.75,
k in {1, 5, 15}. Then W C^T (gensim's input and output vectors) is compared with PMI - log k
computed from the same window counts (``jaxfact.cooccurrence``) on the frequent pairs, and SGNS's
vectors with SVD of PPMI / SPPMI (``jaxfact.ppmi``, ``jaxfact.word_vectors``, eig 0.5) on the
WordSim353 and SimLex-999 pairs in vocabulary. Margins are 95% bootstrap half-widths over pairs.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import jax
import numpy as np

import jaxfact as jf
from jaxfact import datasets
from paper_repro._common import Report, bootstrap_interval, decide, figure_path, pyplot, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import word_vectors as wv  # noqa: E402  (Spearman and cosine evaluation of word pairs)

NAME = "levy2014"
D, WINDOW, MIN_COUNT, CHUNK = 100, 2, 5, 1000


def corpus(quick):
    docs = datasets.load_wikipedia_sample()
    docs = docs[::3] if quick else docs
    return [d[i:i + CHUNK] for d in docs for i in range(0, len(d), CHUNK)]


def sgns(sentences, k, epochs):
    from gensim.models import Word2Vec
    return Word2Vec(sentences, vector_size=D, window=WINDOW, min_count=MIN_COUNT, sg=1, hs=0,
                    negative=k, ns_exponent=0.75, sample=0, shrink_windows=False, epochs=epochs,
                    workers=2, seed=0)


def counts_of(sentences, index):
    """Window counts over the in-vocabulary words (gensim drops the others before windowing);
    sentences are separated by WINDOW padding ids so no window crosses them."""
    ids = []
    for s in sentences:
        ids += [index[w] for w in s if w in index] + [-1] * WINDOW
    return jf.cooccurrence(np.asarray(ids, np.int32), len(index), window=WINDOW)


def pmi_pairs(C, min_pair):
    idx, c = np.asarray(C.indices), np.asarray(C.data, np.float64)
    rows = np.bincount(idx[:, 0], c, C.shape[0])
    cols = np.bincount(idx[:, 1], c, C.shape[1]) ** 0.75
    pmi = np.log(c * cols.sum() / (rows[idx[:, 0]] * cols[idx[:, 1]]))
    keep = c >= min_pair
    return idx[keep, 0], idx[keep, 1], pmi[keep], np.log(c[keep])


def _half(samples):
    lo, hi = bootstrap_interval(samples, n_boot=500)
    return (hi - lo) / 2


def _boot(stat, n, n_boot=500, seed=0):
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return float((hi - lo) / 2)


def run(quick: bool = False) -> Report:
    sentences = corpus(quick)
    ks, epochs, min_pair = ((1, 15), 5, 10) if quick else ((1, 5, 15), 15, 20)
    models = {k: sgns(sentences, k, epochs) for k in ks}
    words = models[ks[0]].wv.index_to_key
    index = {w: i for i, w in enumerate(words)}
    C = counts_of(sentences, index)
    wi, ci, pmi, logc = pmi_pairs(C, min_pair)
    n = len(pmi)
    rows, offs, dots = [], {}, {}
    for k in ks:
        m = models[k]
        dot = np.sum(m.wv.vectors[wi] * m.syn1neg[ci], axis=1).astype(np.float64)
        dots[k] = dot
        r = np.corrcoef(dot, pmi)[0, 1]
        r_half = _boot(lambda i: np.corrcoef(dot[i], pmi[i])[0, 1], n)
        r_cnt = np.corrcoef(dot, logc)[0, 1]
        r_diff = _boot(lambda i: np.corrcoef(dot[i], pmi[i])[0, 1] - np.corrcoef(dot[i], logc[i])[0, 1], n)
        off = dot - pmi
        offs[k] = off
        rows.append([k, r, r_half, r_cnt, r_diff, float(off.mean()), _half(off), 0.0 - np.log(k)])

    logk = np.log(np.array(ks, float))
    def slope(i):
        return np.polyfit(logk, [offs[k][i].mean() for k in ks], 1)[0]
    s, s_half = float(slope(np.arange(n))), _boot(slope, n)

    # Word similarity: SGNS (k = 5, or the largest quick k) against SVD of PPMI and SPPMI.
    k_sim = 5 if 5 in ks else ks[-1]
    vocab = types.SimpleNamespace(index=index)
    bench = {"WS353": datasets.load_wordsim353(), "SimLex999": datasets.load_simlex999()}
    mats = {f"SGNS k={k_sim}": models[k_sim].wv.vectors}
    for shift in (1.0, float(k_sim)):
        M = jf.ppmi(C, alpha=0.75, shift=shift)
        mats[f"SVD of {'PPMI' if shift == 1 else f'SPPMI (shift log {k_sim})'}"] = np.asarray(
            jf.word_vectors(M, D, eig=0.5, key=jax.random.key(0)))
    pairs = {name: {b: wv.cosine_pairs(X, vocab, p) for b, p in bench.items()}
             for name, X in mats.items()}
    sim_rows = [[name, *(wv.spearman(*pairs[name][b]) for b in bench)] for name in mats]
    n_pairs = {b: len(pairs[f"SGNS k={k_sim}"][b][1]) for b in bench}

    def delta(name, idx=None):  # mean over the two sets of rho(name) - rho(SGNS)
        out = 0.0
        for b in bench:
            (ca, s_), (cb, _) = pairs[name][b], pairs[f"SGNS k={k_sim}"][b]
            i = np.arange(len(s_)) if idx is None else idx[b]
            out += wv.spearman(ca[i], s_[i]) - wv.spearman(cb[i], s_[i])
        return out / len(bench)
    rng = np.random.default_rng(1)
    boots = [delta("SVD of PPMI", {b: rng.integers(0, m, m) for b, m in n_pairs.items()})
             for _ in range(300)]
    d_svd = delta("SVD of PPMI")
    d_half = float(np.subtract(*np.quantile(boots, [0.975, 0.025])) / 2)

    md = (f"Wikipedia sample{' (every third article)' if quick else ''}: "
          f"{sum(map(len, sentences))} tokens, {len(words)} words seen >= {MIN_COUNT} times; "
          f"SGNS {epochs} epochs. {n} word-context pairs seen >= {min_pair} times:\n\n"
          + table(["k", "corr(w.c, PMI)", "+-", "corr(w.c, log #(w,c))", "+- (difference)",
                   "mean(w.c - PMI)", "+-", "paper: -log k"], rows)
          + f"\n\nSlope of mean(w.c - PMI) against log k: {s:.3f} +- {s_half:.3f} (paper: -1).\n\n"
          + f"Word similarity, Spearman rho on the pairs in vocabulary ({n_pairs}):\n\n"
          + table(["vectors (d = 100)", "WS353", "SimLex999"], sim_rows)
          + f"\n\nSVD of PPMI minus SGNS, mean rho over the two sets: {d_svd:.3f} +- {d_half:.3f}.")
    claims = [("SGNS's w.c tracks PMI on frequent pairs (correlation > 0.5 for every k)",
               decide(min(r[1] - 0.5 for r in rows), max(r[2] for r in rows))),
              ("... and tracks PMI better than it tracks the log count (which GloVe factorizes)",
               decide(min(r[1] - r[3] for r in rows), max(r[4] for r in rows))),
              ("The shift is log k: mean(w.c - PMI) falls by log k (slope -1 within 0.25)",
               decide(0.25 - abs(s + 1), s_half)),
              ("SVD of PPMI matches SGNS on word similarity (mean rho within 0.05)",
               decide(0.05 - abs(d_svd), d_half))]

    plt = pyplot()
    fig, axes = plt.subplots(1, len(ks), figsize=(4 * len(ks), 3.8), sharey=True)
    sub = np.random.default_rng(0).permutation(n)[:3000]
    for ax, k in zip(np.atleast_1d(axes), ks):
        ax.scatter(pmi[sub] - np.log(k), dots[k][sub], s=2, alpha=0.3, label="pairs (ours)")
        lim = np.array([pmi.min() - np.log(k), pmi.max()])
        ax.plot(lim, lim, "r-", lw=1, label="paper: w.c = PMI - log k")
        ax.set(title=f"SGNS, k = {k}", xlabel="PMI(w, c) - log k")
        ax.legend(fontsize=7, loc="upper left")
    np.atleast_1d(axes)[0].set_ylabel("w . c (gensim SGNS)")
    fig.tight_layout()
    path = figure_path(NAME)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Report(NAME, __doc__.strip().splitlines()[0], md, claims, [path])
