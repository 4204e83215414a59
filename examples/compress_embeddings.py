"""Compressing a trained embedding table with ``FactorizedEmbed.from_table``: kept and lost.

The table is the PPMI-SVD word vectors of ``examples/word_vectors.py`` (Lee corpus, V ~ 4000 words,
100 dimensions). For a sweep of ranks k it is replaced by ``A @ B`` (``method="svd"``, the best
rank-k approximation) or ``A @ B + mean`` (``method="pca"``), and the table reports: parameters
(and the share of the original), the relative reconstruction error ``||T - T_k||_F / ||T||_F``,
Spearman's rho with human judgements on WordSim353 and SimLex-999 before and after, and how well
the compressed table preserves the original's cosine similarities on those pairs (Pearson r).

Run: ``python examples/compress_embeddings.py`` (about 15 s on 2 CPU cores). PNG in
``examples/out/``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import word_vectors as wv  # noqa: E402  (the sibling example builds the table)

from jaxfact import datasets  # noqa: E402
from jaxfact.nn import FactorizedEmbed  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def run(ks=(5, 10, 20, 40, 80)):
    vocab, ids = wv.load_corpus()
    _, W = wv.build(vocab, ids, rank=100)
    T = np.asarray(W, np.float64)
    V, F = T.shape
    bench = {"WS353": datasets.load_wordsim353(), "SimLex999": datasets.load_simlex999()}
    before = wv.similarity(T, vocab, bench)
    cos_before = {n: wv.cosine_pairs(T, vocab, p)[0] for n, p in bench.items()}
    rows = [dict(method="full table", k=F, params=V * F, share=1.0, error=0.0,
                 ws=before["WS353"][0], sl=before["SimLex999"][0], r_ws=1.0, r_sl=1.0)]
    for method in ("svd", "pca"):
        for k in ks:
            emb = FactorizedEmbed.from_table(W, k, method=method)
            Tk = np.asarray(emb(jnp.arange(V)), np.float64)   # lookup of every id
            after = wv.similarity(Tk, vocab, bench)
            r = {n: np.corrcoef(cos_before[n], wv.cosine_pairs(Tk, vocab, p)[0])[0, 1]
                 for n, p in bench.items()}
            rows.append(dict(method=method.upper(), k=k, params=emb.num_params,
                             share=emb.num_params / (V * F),
                             error=float(np.linalg.norm(T - Tk) / np.linalg.norm(T)),
                             ws=after["WS353"][0], sl=after["SimLex999"][0],
                             r_ws=r["WS353"], r_sl=r["SimLex999"]))
    return rows, (V, F), {n: v[1] for n, v in before.items()}


def print_table(rows):
    print("| table | k | params | share | rel. error | WS353 rho | SimLex rho | "
          "cos r (WS353 pairs) | cos r (SimLex pairs) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['k']} | {r['params']} | {r['share']:.3f} | {r['error']:.3f} | "
              f"{r['ws']:.3f} | {r['sl']:.3f} | {r['r_ws']:.3f} | {r['r_sl']:.3f} |")


def figure(rows, out: Path = OUT):
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    full = rows[0]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for method, c in (("SVD", "C0"), ("PCA", "C1")):
        rs = [r for r in rows if r["method"] == method]
        k = [r["k"] for r in rs]
        a1.plot(k, [r["error"] for r in rs], "o-", color=c, label=method)
        a2.plot(k, [r["ws"] for r in rs], "o-", color=c, label=f"{method} WS353")
        a2.plot(k, [r["sl"] for r in rs], "s--", color=c, label=f"{method} SimLex")
    a2.axhline(full["ws"], color="k", lw=1, label="full table WS353")
    a2.axhline(full["sl"], color="k", lw=1, ls="--", label="full table SimLex")
    a1.set_xlabel("rank k")
    a1.set_ylabel("relative reconstruction error")
    a1.legend()
    a2.set_xlabel("rank k")
    a2.set_ylabel("Spearman rho with humans")
    a2.legend(fontsize=7)
    fig.suptitle("Compressing 100-d PPMI-SVD word vectors with FactorizedEmbed.from_table")
    fig.tight_layout()
    path = out / "compress_embeddings.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main():
    t0 = time.perf_counter()
    rows, (V, F), pairs = run()
    print(f"Table: {V} x {F} PPMI-SVD word vectors (Lee corpus); pairs in vocabulary: {pairs}")
    print_table(rows)
    print(f"wrote {figure(rows)}")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
