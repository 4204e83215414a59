"""Koren, Bell & Volinsky (2009): biased matrix factorization for recommender systems.

What is checked, on a synthetic MovieLens-shaped rating matrix (no ratings data set ships inside an
installable package, and MovieLens/Netflix cannot be downloaded at run time; the generator is
:func:`jaxfact.synthetic_ratings`, documented there):

1. held-out RMSE orders as global mean > baseline ``mu + b_u + b_i`` > biased MF (the paper's
   progression of models; on Netflix, Cinematch 0.9514 and Fig. 4's biased MF ~0.895);
2. RMSE against the number of factors falls with diminishing returns (the shape of Fig. 4).

The baseline is the same objective with the factors held at zero: ALS started from zero factors
keeps them at zero (a zero feature column gets a zero ridge coefficient) and fits the biases
exactly. Published numbers are shown for context only: the data differ, so only the orderings and
the shape of the curve are compared.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import BiasedMFResult, biased_mf, predict_ratings, rmse, synthetic_ratings
from paper_repro._common import Report, figure_path, pyplot, table

LAM = 0.1  # ALS penalty (per rating, eq. 5), chosen once on the quick data; not tuned per rank


def _fit_eval(train, test, shape, rank, **kw):
    res = biased_mf(*train, shape, rank, key=jax.random.key(0), **kw)
    err = float(rmse(predict_ratings(res, test[0], test[1], clip=(1, 5)), test[2]))
    return err, int(res.n_iter)


def run(quick: bool = False) -> Report:
    if quick:
        shape, n_ratings, ranks = (1200, 800), 100_000, (1, 3, 10, 30)
    else:
        shape, n_ratings, ranks = (6040, 3706), 1_000_000, (1, 2, 5, 10, 20, 50, 100)
    u, i, r = synthetic_ratings(n_users=shape[0], n_items=shape[1], n_ratings=n_ratings, seed=0)
    perm = np.random.default_rng(1).permutation(u.size)
    n_train = int(0.8 * u.size)
    tr, te = perm[:n_train], perm[n_train:]
    train, test = (u[tr], i[tr], r[tr]), (u[te], i[te], r[te])

    t0 = time.perf_counter()
    global_rmse = float(np.sqrt(np.mean((r[tr].mean() - r[te]) ** 2)))
    m, n = shape
    zeros = BiasedMFResult(0.0, np.zeros(m, np.float32), np.zeros(n, np.float32),
                           np.zeros((m, 1), np.float32), np.zeros((n, 1), np.float32), 0, False,
                           None)
    base = biased_mf(*train, shape, 1, lam=LAM, init=zeros, max_iter=20)
    base_rmse = float(rmse(predict_ratings(base, test[0], test[1], clip=(1, 5)), test[2]))
    curve = []
    for k in ranks:
        err, it = _fit_eval(train, test, shape, k, lam=LAM, solver="als", max_iter=10 if quick else 15)
        curve.append((k, err, it))
    sgd = None
    if not quick:
        sgd = _fit_eval(train, test, shape, 100, solver="sgd")  # Surprise's SVD defaults
    seconds = time.perf_counter() - t0

    best = min(e for _, e, _ in curve)
    errs = np.array([e for _, e, _ in curve])
    gains = -np.diff(errs)
    rows = [["global mean", "-", global_rmse, "Netflix: Cinematch 0.9514; ML-1M Random 1.504"],
            ["baseline mu + b_u + b_i", "-", base_rmse, "ML-1M Baseline 0.909 (Surprise)"]]
    for k, e, it in curve:
        rows.append([f"biased MF, ALS lam {LAM}", k, e, f"{it} iterations"])
    if sgd is not None:
        rows.append(["biased MF, SGD (Surprise defaults)", 100, sgd[0],
                     "ML-1M SVD 0.873 (Surprise); Netflix Fig. 4 ~0.895 at f=50-200"])
    md = (f"Synthetic ratings {m} x {n}, {u.size} ratings (1-5 stars), 80/20 split, held-out RMSE "
          f"with predictions clipped to [1, 5]. {seconds:.1f} s.\n\n"
          + table(["model", "factors", "held-out RMSE (ours)", "published (other data)"], rows)
          + "\n\nThe paper's Fig. 4 (Netflix probe RMSE against parameters) is read off the plot "
          "only approximately [S]: plain MF ~0.905 -> 0.902 for f = 40..180, with biases ~0.895; "
          "it falls with more factors and flattens. The synthetic matrix has a rank-20 signal with a "
          "decaying spectrum and noise std 0.75 before rounding, so the gains should shrink as "
          "factors are added.")

    if np.any(gains < 0):
        worst = int(np.argmin(gains))
        md += (f"\n\nHere RMSE rises from {curve[worst][0]} to {curve[worst + 1][0]} factors by "
               f"{-gains[worst]:.4f}: at a fixed lam the extra factors start fitting noise on "
               "this matrix (the paper tunes lam by validation for each model; we do not).")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot([k for k, _, _ in curve], errs, "o-", label=f"biased MF (ALS, lam {LAM})")
    ax.axhline(global_rmse, color="gray", ls=":", label="global mean")
    ax.axhline(base_rmse, color="k", ls="--", label="baseline mu + b_u + b_i")
    if sgd is not None:
        ax.plot([100], [sgd[0]], "s", label="biased MF (SGD, Surprise defaults)")
    ax.set_xscale("log")
    ax.set_xlabel("number of factors f")
    ax.set_ylabel("held-out RMSE")
    ax.set_title("RMSE vs factors (cf. Koren et al. 2009, Fig. 4)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = figure_path("koren2009")
    fig.savefig(path, dpi=110)
    plt.close(fig)

    claims = [
        ("Held-out RMSE: global mean > baseline (mu + b_u + b_i) > biased MF",
         global_rmse > base_rmse > best),
        ("RMSE falls as factors are added (first step gains more than the last; no step up by "
         "more than 0.002)", bool(gains[0] > gains[-1] and np.all(gains > -0.002)
                                  and errs[-1] < errs[0])),
    ]
    return Report("koren2009", __doc__.strip().splitlines()[0], md, claims, [path])
