"""Restarts: R random starts at once under ``jax.vmap`` against R sequential calls.

NMF of the digits (1797 x 64, rank 16, ``init="random"``, "hals", 200 iterations at most) and
SoftImpute of a 600 x 500 rank-5 matrix with 20% of its entries observed, each from R = 8 keys;
:func:`jaxfact.best_run` keeps the best. Compilation excluded (both paths warmed up).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxfact
from benchmarks._common import table, timeit
from jaxfact.datasets import load_digits

R = 8


def _nmf_case(quick):
    X = jnp.asarray(load_digits().images[: 600 if quick else None])
    one = lambda X, k: jaxfact.nmf(X, 16, solver="hals", init="random", key=k, max_iter=200,
                                   tol=1e-4)
    return one, (X,)


def _si_case(quick):
    rng = np.random.default_rng(0)
    n1, n2 = (300, 250) if quick else (600, 500)
    A = rng.standard_normal((n1, 5)) @ rng.standard_normal((5, n2))
    rows, cols = np.nonzero(rng.random((n1, n2)) < 0.2)
    vals = jnp.asarray(A[rows, cols] + 0.1 * rng.standard_normal(rows.size), jnp.float32)
    rows, cols = jnp.asarray(rows), jnp.asarray(cols)
    lam = 0.1 * float(np.sqrt(rows.size))
    one = lambda rows, cols, vals, k: jaxfact.soft_impute(rows, cols, vals, (n1, n2), lam=lam,
                                                          rank=10, key=k, max_iter=200)
    return one, (rows, cols, vals)


def main(quick: bool = False) -> None:
    keys = jax.random.split(jax.random.key(0), R)
    rows = []
    for name, (fit, data) in (("nmf (digits, k=16)", _nmf_case(quick)),
                              ("soft_impute (600x500, 20%)", _si_case(quick))):
        # Data are arguments of the compiled functions, not captured constants.
        one = jax.jit(fit)
        axes = (None,) * len(data) + (0,)
        many = jax.jit(lambda *a: jax.vmap(fit, in_axes=axes)(*a))
        batched = jax.jit(lambda *a: jaxfact.best_run(jax.vmap(fit, in_axes=axes)(*a)))
        t_seq = timeit(lambda: [one(*data, k) for k in keys], repeat=2)
        t_vmap = timeit(lambda: batched(*data, keys), repeat=2)
        runs = many(*data, keys)
        score = runs.loss if hasattr(runs, "loss") else runs.history[
            jnp.arange(R), runs.n_iter - 1]
        rows.append([name, t_seq, t_vmap, t_seq / t_vmap,
                     f"{float(score.min()):.5g} / {float(score.max()):.5g}",
                     f"{int(runs.n_iter.min())}-{int(runs.n_iter.max())}"])
    print(table(["problem", f"{R} sequential (s)", f"vmap x{R} (s)", "speed-up",
                 "best / worst objective", "iterations"], rows))


if __name__ == "__main__":
    main()
