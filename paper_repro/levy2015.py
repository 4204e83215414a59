"""Levy, Goldberg & Dagan (TACL 2015): PPMI and SVD hyper-parameters, direction of effects.

The paper trains on 1.5B tokens of Wikipedia; here the same pipeline (``jaxfact.cooccurrence``,
``ppmi``, ``word_vectors``) runs on the Lee corpus shipped with gensim (~56k in-vocabulary
tokens, 4041 words seen at least twice), so absolute scores are far lower and only the
*direction* of each effect is compared: Spearman's rho on WordSim353 and SimLex-999 (pairs in
vocabulary), averaged over the two as the paper's Table 6 averages its similarity tasks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

from jaxfact import cooccurrence, ppmi, randomized_svd
from paper_repro import _common
from paper_repro._common import Report, figure_path, pyplot, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import word_vectors as wv  # noqa: E402  (corpus loading, Spearman, cosine evaluation)

D = 100


def score(matrix, vocab, bench):
    """(WS353 rho, SimLex rho, their mean, the per-pair cosines for the bootstrap)."""
    pairs = {n: wv.cosine_pairs(matrix, vocab, p) for n, p in bench.items()}
    ws = wv.spearman(*pairs["WS353"])
    sl = wv.spearman(*pairs["SimLex999"])
    return ws, sl, (ws + sl) / 2, pairs


def bootstrap_diffs(pa, pb, n_boot=300, seed=0):
    """Bootstrap replicates of mean-rho(a) - mean-rho(b): each replicate resamples the evaluation
    pairs of every benchmark (the same resample for both configurations, so the comparison is
    paired) and averages the two benchmarks' rho differences, as the table averages them."""
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        diff = 0.0
        for name in pa:
            cos_a, s = pa[name]
            cos_b, _ = pb[name]
            i = rng.integers(0, len(s), len(s))
            diff += wv.spearman(cos_a[i], s[i]) - wv.spearman(cos_b[i], s[i])
        out[b] = diff / len(pa)
    return out



def shifted_ppmi_is_exact(counts, k=5.0):
    """SPPMI's stored values against max(PMI - log k, 0) computed in NumPy float64."""
    M = ppmi(counts, alpha=1.0, shift=k)
    idx = np.asarray(counts.indices)
    c = np.asarray(counts.data, np.float64)
    rows = np.bincount(idx[:, 0], c, counts.shape[0])
    cols = np.bincount(idx[:, 1], c, counts.shape[1])
    pmi = np.log(c * c.sum() / (rows[idx[:, 0]] * cols[idx[:, 1]]))
    ref = np.maximum(pmi - np.log(k), 0)
    err = np.max(np.abs(np.asarray(M.data, np.float64) - ref))
    return err, err <= 1e-4 * max(1.0, np.abs(ref).max())


def run(quick: bool = False) -> Report:
    windows = (2,) if quick else (2, 5)
    bench = {"WS353": wv.datasets.load_wordsim353(), "SimLex999": wv.datasets.load_simlex999()}
    rows, verdict_rows = [], {}
    for window in windows:
        vocab, ids = wv.load_corpus(window=window)
        V = len(vocab.words)
        counts = cooccurrence(ids, V, window=window)
        key = jax.random.key(0)
        configs = [
            ("PPMI", dict(alpha=1.0, shift=1.0, svd=False)),
            ("PPMI", dict(alpha=0.75, shift=1.0, svd=False)),
            ("SVD", dict(alpha=1.0, shift=1.0, eig=0.5)),
            ("SVD", dict(alpha=0.75, shift=1.0, eig=0.0)),
            ("SVD", dict(alpha=0.75, shift=1.0, eig=0.5)),
            ("SVD", dict(alpha=0.75, shift=1.0, eig=1.0)),
            ("SVD", dict(alpha=0.75, shift=5.0, eig=0.5)),
        ]
        svds = {}
        for method, cfg in configs:
            M = ppmi(counts, alpha=cfg["alpha"], shift=cfg["shift"])
            if method == "PPMI":
                rep = M
            else:
                # word_vectors(M, D, eig=e, key=key) is U * S**e of this SVD; the eig variants of
                # one matrix share a single randomized SVD.
                mkey = (cfg["alpha"], cfg["shift"])
                if mkey not in svds:
                    svds[mkey] = randomized_svd(M, D, key=key)
                U, S, _ = svds[mkey]
                rep = U * S ** cfg["eig"]
            ws, sl, avg, pairs = score(rep, vocab, bench)
            name = (method, cfg["alpha"], cfg["shift"], cfg.get("eig"))
            verdict_rows[(window,) + name] = (avg, pairs)
            rows.append([window, method, cfg["alpha"], int(cfg["shift"]),
                         "-" if method == "PPMI" else cfg["eig"], round(ws, 3), round(sl, 3),
                         round(avg, 3)])
    err, exact = shifted_ppmi_is_exact(counts)

    firmness = []

    def held(label, a, b):   # a better than b in every window, beyond the bootstrap spread
        verdicts = []
        for w in windows:
            (ra, pa), (rb, pb) = verdict_rows[(w,) + a], verdict_rows[(w,) + b]
            reps = bootstrap_diffs(pa, pb, n_boot=200 if quick else 500)
            lo, hi = np.quantile(reps, [0.025, 0.975])
            margin = (hi - lo) / 2
            verdict = _common.decide(ra - rb, margin)
            verdicts.append(verdict)
            firmness.append([label, w, round(ra, 3), round(rb, 3), round(ra - rb, 3),
                             f"[{lo:+.3f}, {hi:+.3f}]", round(margin, 3), verdict])
        return _common.all_hold(verdicts)

    cds = held("PPMI: cds 0.75 vs 1", ("PPMI", 0.75, 1.0, None), ("PPMI", 1.0, 1.0, None))
    eig_half = held("SVD: eig 0.5 vs 1", ("SVD", 0.75, 1.0, 0.5), ("SVD", 0.75, 1.0, 1.0))
    eig_zero = held("SVD: eig 0 vs 1", ("SVD", 0.75, 1.0, 0.0), ("SVD", 0.75, 1.0, 1.0))
    neg = held("SVD: neg 1 vs 5", ("SVD", 0.75, 1.0, 0.5), ("SVD", 0.75, 5.0, 0.5))
    cds_svd = held("SVD: cds 0.75 vs 1", ("SVD", 0.75, 1.0, 0.5), ("SVD", 1.0, 1.0, 0.5))

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    labels = [f"w{r[0]} {r[1]} a={r[2]} k={r[3]} eig={r[4]}" for r in rows]
    ax.barh(range(len(rows)), [r[7] for r in rows], color=["C1" if r[1] == "PPMI" else "C0"
                                                            for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean Spearman rho (WS353, SimLex-999)")
    ax.set_title("PPMI / SVD hyper-parameters on the Lee corpus", fontsize=9)
    fig.tight_layout()
    fig_path = figure_path("levy2015")
    fig.savefig(fig_path, dpi=120)
    plt.close(fig)

    md = (
        "Data substitution and scale: the Lee background corpus that ships with gensim (300 "
        "news documents, ~60k tokens) in place of the paper's 1.5B-token Wikipedia; SVD "
        f"dimension {D} in place of 500; windows {windows}"
        + (" (quick run; the full run adds window 5)" if quick else "") + ". "
        f"Lee corpus, vocabulary {V} (min_count 2), symmetric window, SVD d = {D}, randomized SVD "
        "(`word_vectors`: U S^eig). rho = Spearman correlation of cosine similarity with human "
        "scores on "
        f"the pairs in vocabulary ({wv.similarity(np.zeros((V, 1)), vocab, bench)['WS353'][1]} "
        f"WS353, {wv.similarity(np.zeros((V, 1)), vocab, bench)['SimLex999'][1]} SimLex-999 pairs)."
        "\n\n" + table(["window", "method", "cds alpha", "neg k", "eig", "WS353 rho",
                        "SimLex rho", "mean"], rows)
        + "\n\nThe paper (Wikipedia, 1.5B tokens, d = 500): Table 6 gives SVD averages .611 (eig "
        "0.5) against .551 (eig 1) at win 2; Table 8 finds neg > 1 hurts SVD by 1.7 to 14.9 "
        "points and cds = 0.75 helps PPMI (e.g. MSR Mul .443 -> .535). Their vanilla SVD scores "
        ".776 on WS-Sim and .422 on SimLex. With ~1/25000 of the data and 133 / 237 evaluation "
        "pairs, our absolute scores are 3-10x lower and a difference of a few hundredths is "
        "within noise. Each direction is decided against a paired bootstrap of the evaluation "
        "pairs (95% percentile interval of the difference, "
        f"{200 if quick else 500} resamples): it holds when the difference exceeds the "
        "interval's half-width, does not hold when it is below minus the half-width, and is "
        "inconclusive in between; a claim holds when it holds in every window.\n\n"
        + table(["paper's preferred setting vs the other", "window", "mean rho (preferred)",
                 "mean rho (other)", "difference", "bootstrap 95% interval", "margin",
                 "verdict"], firmness)
        + "\n\n"
        f"Shifted PPMI against max(PMI - log k, 0) in NumPy float64 (k = 5): max abs error "
        f"{err:.2e}."
    )
    claims = [
        ("Context distribution smoothing (cds 0.75) helps PPMI against cds 1", cds),
        ("For SVD, eig = 0.5 beats eig = 1 (Table 6)", eig_half),
        ("For SVD, eig = 0 beats eig = 1 (Table 6)", eig_zero),
        ("For SVD, shifted PPMI (neg k = 5) hurts against neg 1 (Table 8)", neg),
        ("cds 0.75 also helps SVD (Section 6: 'always use cds')", cds_svd),
        ("Shifted PPMI equals max(PMI - log k, 0) (Levy & Goldberg 2014) to float32 precision",
         bool(exact)),
    ]
    return Report("levy2015", __doc__.strip().splitlines()[0], md, claims, [fig_path])
