"""Lin (2007): projected-gradient ALS against multiplicative updates for NMF

C.-J. Lin, "Projected gradient methods for non-negative matrix factorization", Neural Computation
19:2756-2779, 2007. The paper compares `alspgrad` (alternating non-negative least squares, each
subproblem solved by projected gradient with an Armijo-type step search) with `mult` (Lee & Seung's
multiplicative updates) from the same random start and time budget, and reports that ALS-PG
reaches a lower objective 1/2 ||V - WH||^2 and a much smaller projected gradient ||grad^P f||.

Its tables are not available to us (research notes: [U]), so the paper's column states its
qualitative claim and ours gives numbers. (1) Synthetic problems: V = W* H* with uniform W*, H*
(no noise), starts ``abs(randn)`` as in Lin's script, float64, `pg` run to its stopping rule
(tol 1e-5, relative projected gradient), then `mu` run for the same wall time. (2) The paper's
image experiment on ORL faces (V: 10304 pixels x 400 faces, grey levels scaled to [0, 1], from
``jaxfact.datasets.load_orl_faces``), r = 25, ``abs(randn)`` starts, tol 1e-10, both solvers
given the same time budget. Lin used 30 starts and 25 s / 50 s budgets on a 2007 machine; we use
fewer starts and shorter budgets (stated in the table) on a shared 2-core CPU. Our `nmf` has no
time limit, so each budget is met by an iteration count measured from a short timed probe, and
`mu` then gets the time `pg` actually took. Times are CPU seconds of the process
(``time.process_time``, all threads), not wall time, so that other work on a shared machine
does not shrink one solver's budget more than the other's. Claims are decided on the start-to-start spread of
the paired log ratios (mean +- 2 standard errors). The stopping-rule claim is Lin's rule, read off
the table's relative projected gradient: `nmf` itself stops only once that rule holds and the
objective has settled, and on an exactly low-rank V (the synthetic problems) the objective keeps
falling toward 0 by 1-5 % every 5 iterations, so the solver's own test runs to the cap there.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from paper_repro._common import Report, decide, table

from jaxfact import datasets, nmf

TOL = 1e-5
PAPER = "alspgrad below mult (same start and time)"


def _projected_gradient(V, W, H):
    R = W @ H - V
    gW, gH = R @ H.T, W.T @ R
    pW = np.where((gW < 0) | (W > 0), gW, 0)
    pH = np.where((gH < 0) | (H > 0), gH, 0)
    return float(np.sqrt((pW**2).sum() + (pH**2).sum())), float(np.sqrt((gW**2).sum() +
                                                                          (gH**2).sum()))


def _timed(fn):
    jax.block_until_ready(fn())  # compile
    t0 = time.process_time()
    out = jax.block_until_ready(fn())
    return time.process_time() - t0, out


def _one(m, r, n, seed, pg_max_iter):
    rng = np.random.default_rng(seed)
    V = rng.random((m, r)) @ rng.random((r, n))
    W0 = np.abs(rng.standard_normal((m, r)))
    H0 = np.abs(rng.standard_normal((r, n)))
    t_pg, pg = _timed(lambda: nmf(V, r, solver="pg", warm_start=(W0, H0), tol=TOL,
                                  max_iter=pg_max_iter))
    # mu's iterations for the same wall time: measure its speed, then run that many.
    t_probe, _ = _timed(lambda: nmf(V, r, solver="mu", warm_start=(W0, H0), tol=0.0,
                                    max_iter=200))
    mu_iters = max(1, int(200 * t_pg / t_probe))
    t_mu, mu = _timed(lambda: nmf(V, r, solver="mu", warm_start=(W0, H0), tol=0.0,
                                  max_iter=mu_iters))
    _, g0 = _projected_gradient(V, W0, H0)
    out = {}
    for name, res, t in (("pg", pg, t_pg), ("mu", mu, t_mu)):
        W, H = np.asarray(res.W), np.asarray(res.H)
        pgn, _ = _projected_gradient(V, W, H)
        out[name] = dict(time=t, iters=int(res.n_iter), obj=0.5 * float(((V - W @ H) ** 2).sum()),
                         pg=pgn / g0, converged=bool(res.converged))
    return out


def _paired(a, b):
    """Mean log ratio of a to b (positive: a above b) and 2 standard errors of it across starts.

    A log ratio, not a relative excess: between solvers the objectives differ by factors that
    range over orders of magnitude from start to start (80x and 7500x on the synthetic problem at
    equal time), and the mean of relative excesses is then the largest one, with a spread as large.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.any(a <= 0) or np.any(b <= 0):
        return float("nan"), float("nan")   # decide(): inconclusive
    d = np.log(a / b)
    return float(d.mean()), float(2 * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else np.inf


def _budgeted(V, W0, H0, r, solver, seconds, probe):
    """nmf for about ``seconds`` of CPU time: compile (tol huge stops after one iteration; tol is
    traced, so the real run reuses the compilation), time ``probe`` iterations, scale."""
    def fit(n, tol=1e-10):
        return nmf(V, r, solver=solver, warm_start=(W0, H0), tol=tol, max_iter=n)
    jax.block_until_ready(fit(probe, 1e30))
    t0 = time.process_time()
    jax.block_until_ready(fit(probe))
    n = max(1, int(probe * seconds / (time.process_time() - t0)))
    jax.block_until_ready(fit(n, 1e30))
    t0 = time.process_time()
    res = jax.block_until_ready(fit(n))
    return time.process_time() - t0, res


def orl_experiment(quick):
    faces = datasets.load_orl_faces(scaled=True).images.astype(np.float64)
    if quick:  # every other pixel in each direction: 56 x 46
        faces = faces[:, ::2, ::2]
    V = faces.reshape(len(faces), -1).T  # (pixels, 400): one face per column, as in Lin's script
    r = 25
    budgets = (2.0,) if quick else (5.0, 15.0)
    starts = 3 if quick else 4
    rows, res = [], {b: {"pg": [], "mu": []} for b in budgets}
    rng = np.random.default_rng(0)
    for s in range(starts):
        W0 = np.abs(rng.standard_normal((V.shape[0], r)))
        H0 = np.abs(rng.standard_normal((r, V.shape[1])))
        _, g0 = _projected_gradient(V, W0, H0)
        for b in budgets:
            t_pg, pg = _budgeted(V, W0, H0, r, "pg", b, 10)
            t_mu, mu = _budgeted(V, W0, H0, r, "mu", t_pg, 100)
            for name, fit, t in (("pg", pg, t_pg), ("mu", mu, t_mu)):
                W, H = np.asarray(fit.W), np.asarray(fit.H)
                obj = 0.5 * float(((V - W @ H) ** 2).sum())
                pgn = _projected_gradient(V, W, H)[0] / g0
                res[b][name].append((obj, pgn))
                rows.append([b, s, "alspgrad (pg)" if name == "pg" else "mult (mu)",
                             int(fit.n_iter), t, obj, pgn])
    return V.shape, budgets, starts, rows, res


def run(quick: bool = False) -> Report:
    sizes = [(100, 10, 80)] if quick else [(300, 20, 200), (500, 40, 400), (1000, 30, 500)]
    seeds = [0, 1]
    rows, objs, pgs, stopped = [], {"pg": [], "mu": []}, {"pg": [], "mu": []}, []
    with jax.enable_x64(True):
        for (m, r, n) in sizes:
            for seed in seeds:
                res = _one(m, r, n, seed, 2000)
                for name in ("pg", "mu"):
                    d = res[name]
                    rows.append([f"{m}x{r}x{n}", seed, "alspgrad (pg)" if name == "pg" else
                                 "mult (mu)", d["iters"], d["time"], d["obj"], d["pg"],
                                 PAPER if name == "pg" else ""])
                    objs[name].append(d["obj"])
                    pgs[name].append(d["pg"])
                stopped.append(res["pg"]["pg"] <= 1e-5)   # Lin's rule met within the run
        shape, budgets, starts, orl_rows, orl = orl_experiment(quick)
    md = table(["m x r x n", "seed", "method", "iterations", "CPU seconds", "objective 1/2||V-WH||^2",
                "||grad^P f|| / ||grad f(W1,H1)||", "paper"], rows)
    md += ("\n\nSame start (abs(randn)), float64; mu gets the CPU time pg took to meet "
           "||grad^P f|| <= 1e-5 ||grad f(W1, H1)||. The paper's tables are not available here "
           "(its claim, from the abstract and Section 6: alspgrad converges faster than mult).")
    md += (f"\n\n### Image experiment: ORL faces\n\nV = {shape[0]} x {shape[1]} "
           f"({'every other pixel, 56 x 46' if quick else 'full 112 x 92 images'}), r = 25, "
           f"{starts} abs(randn) starts, tol 1e-10, float64; the paper: 30 starts, 25 s and 50 s. "
           "Per start and budget:\n\n")
    md += table(["budget (CPU s)", "start", "method", "iterations", "CPU seconds",
                 "objective 1/2||V-WH||^2", "||grad^P f|| / ||grad f(W1,H1)||"], orl_rows)
    summary = []
    for b in budgets:
        for name in ("pg", "mu"):
            a = np.array(orl[b][name])
            summary.append([b, "alspgrad (pg)" if name == "pg" else "mult (mu)", a[:, 0].mean(),
                            a[:, 1].mean(), "alspgrad lower" if name == "pg" else ""])
    md += "\n\nMeans over starts (the paper's Table 2 reports the same two means):\n\n"
    md += table(["budget (CPU s)", "method", "mean objective", "mean ||grad^P f|| (relative)",
                 "paper"], summary)
    claims = [
        ("Synthetic: with the same start and time, ALS with projected gradients reaches a lower "
         "objective than multiplicative updates", decide(*_paired(objs["mu"], objs["pg"]))),
        ("... and a smaller projected-gradient norm", decide(*_paired(pgs["mu"], pgs["pg"]))),
        ("The relative projected-gradient stopping rule ||grad^P f|| <= tol ||grad f(W1,H1)|| "
         "is met within the ALS-PG run (tol = 1e-5, at most 2000 iterations)", all(stopped)),
    ]
    for b in budgets:
        pg, mu = np.array(orl[b]["pg"]), np.array(orl[b]["mu"])
        claims.append((f"ORL, {b:g} s each: projected gradient reaches a lower mean objective than "
                       "multiplicative updates", decide(*_paired(mu[:, 0], pg[:, 0]))))
        claims.append((f"ORL, {b:g} s each: ... and a smaller projected gradient",
                       decide(*_paired(mu[:, 1], pg[:, 1]))))
    return Report("lin2007", __doc__.strip().splitlines()[0], md, claims)
