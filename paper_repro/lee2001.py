"""Lee & Seung (2001): multiplicative updates never increase either divergence

D. D. Lee, H. S. Seung, "Algorithms for non-negative matrix factorization", NIPS 13, 2001.
Theorem 1: ||V - WH||^2 is non-increasing under H <- H (W^T V) / (W^T W H), W <- W (V H^T) /
(W H H^T). Theorem 2: D(V || WH) = sum(V log(V / WH) - V + WH) is non-increasing under the
divergence updates. Both are invariant exactly at stationary points, so V = W* H* is a fixed point.

The paper has no tables: we run both updates (jaxfact ``nmf(solver="mu")``, float64) on random
non-negative V (100 x 80, as in the research notes' CPU check) for r in {5, 10}, and report the
largest single-step increase of each objective relative to its value (rounding is ~1e-16), plus the
drift of a perfect factorization under 50 updates.
"""

from __future__ import annotations

import jax
import numpy as np

from paper_repro._common import Report, figure_path, pyplot, table

from jaxfact import nmf

LOSSES = ("frobenius", "kullback-leibler")


def run(quick: bool = False) -> Report:
    ranks = (5,) if quick else (5, 10)
    iters = 200 if quick else 1000
    rng = np.random.default_rng(0)
    V = rng.random((100, 80))
    rows, curves = [], {}
    monotone = {loss: True for loss in LOSSES}
    fixed = []
    with jax.enable_x64(True):
        for r in ranks:
            W0 = rng.random((100, r))
            H0 = rng.random((r, 80))
            for loss in LOSSES:
                res = nmf(V, r, solver="mu", beta_loss=loss, warm_start=(W0, H0), tol=0.0,
                          max_iter=iters)
                h = np.asarray(res.history)
                rise = float(np.max(np.diff(h) / h[:-1]))
                monotone[loss] &= rise <= 1e-12
                curves[(loss, r)] = h
                rows.append([loss, r, iters, float(h[0]), float(h[-1]), rise, "non-increasing"])
            # A perfect factorization is a fixed point of both updates.
            Ws, Hs = rng.random((100, r)) + 0.1, rng.random((r, 80)) + 0.1
            Vs = Ws @ Hs
            for loss in LOSSES:
                res = nmf(Vs, r, solver="mu", beta_loss=loss, warm_start=(Ws, Hs), tol=0.0,
                          max_iter=50)
                drift = float(np.max(np.abs(np.asarray(res.W) @ np.asarray(res.H) - Vs)) /
                              np.max(Vs))
                fixed.append(drift <= 1e-10)
                rows.append([loss + " at V = W*H*", r, 50, "", "", drift, "fixed point"])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, loss in zip(axes, LOSSES):
        for r in ranks:
            h = curves[(loss, r)]
            ax.loglog(np.arange(1, h.size + 1), h, label=f"r = {r}")
        ax.set_title({"frobenius": "Theorem 1: ||V - WH||^2 / 2",
                      "kullback-leibler": "Theorem 2: D(V || WH)"}[loss])
        ax.set_xlabel("iteration")
        ax.set_ylabel("objective")
        ax.legend()
    fig.suptitle("Multiplicative updates, random V (100 x 80), float64")
    fig.tight_layout()
    path = figure_path("lee2001")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    md = table(["objective", "r", "iterations", "first", "last",
                "max step increase (relative) / drift", "paper (Theorems 1-2)"], rows)
    claims = [
        ("Theorem 1: the Euclidean distance never increases under the multiplicative updates",
         monotone["frobenius"]),
        ("Theorem 2: the divergence D(V||WH) never increases under its multiplicative updates",
         monotone["kullback-leibler"]),
        ("A perfect factorization V = WH is a fixed point of both updates", all(fixed)),
    ]
    return Report("lee2001", __doc__.strip().splitlines()[0], md, claims, [path])
