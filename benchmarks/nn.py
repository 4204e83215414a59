"""Embedding modules and co-occurrence counting.

1. One training step (forward + backward) of a tied-embedding bigram model,
   ``loss = CE(attend(embed(ids)), next ids)``, with ``jaxfact.nn.FactorizedEmbed`` (vocabulary
   100k, features 512, rank 64) against ``flax.nnx.Embed`` (100k x 512) with the same tied output,
   on 8 x 512 ids: seconds per step and the compiled step's memory (XLA's buffer assignment:
   arguments + outputs + temporaries).
2. ``jaxfact.cooccurrence`` on a 1M-token Zipfian corpus against the usual NumPy + SciPy build
   (window pairs in NumPy, ``coo_matrix(...).tocsr()`` to sum duplicates): tokens per second,
   warm, with the compile time apart; the same entries and counts are checked. On the CPU
   backend cooccurrence sorts with NumPy (a callback); the last columns time the on-device
   path (XLA's sort), what an accelerator runs, on the default device.
"""

from __future__ import annotations

import time
from functools import partial

import jax
import numpy as np
import optax
from flax import nnx

from benchmarks._common import machine, table, time_once, timeit
from jaxfact import cooccurrence
from jaxfact import text as _text
from jaxfact.nn import FactorizedEmbed


def _step_fn():
    def loss_fn(model, ids):
        logits = model.attend(model(ids[:, :-1]))
        return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

    @nnx.jit
    def step(model, ids):
        return nnx.value_and_grad(loss_fn)(model, ids)

    return step


def _memory_mb(model, ids) -> float:
    graph, state = nnx.split(model)

    def pure(state, ids):
        m = nnx.merge(graph, state)
        logits = m.attend(m(ids[:, :-1]))
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()
        return loss

    compiled = jax.jit(jax.value_and_grad(pure)).lower(state, ids).compile()
    mem = compiled.memory_analysis()
    if mem is None:  # pragma: no cover - backends without memory analysis
        return float("nan")
    total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    return total / 2**20


def bench_step(quick: bool):
    V, F, R = (20_000, 256, 32) if quick else (100_000, 512, 64)
    B, T = (2, 128) if quick else (8, 512)
    ids = jax.random.randint(jax.random.key(0), (B, T + 1), 0, V)
    step = _step_fn()
    rows = []
    models = {
        f"nnx.Embed {V}x{F}": nnx.Embed(V, F, rngs=nnx.Rngs(0)),
        f"FactorizedEmbed r={R}": FactorizedEmbed(V, F, R, rngs=nnx.Rngs(0)),
    }
    times = {}
    for name, model in models.items():
        n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        seconds = timeit(lambda: step(model, ids), repeat=2 if not quick else 3)
        times[name] = seconds
        rows.append([name, n_params, seconds * 1e3, _memory_mb(model, ids)])
    base = rows[0]
    for r in rows:
        r.append(base[2] / r[2])
        r.append(base[3] / r[3])
    print(f"fwd+bwd step, tied output, batch {B}x{T} ids, vocabulary {V}, features {F}")
    print(table(["embedding", "params", "ms/step", "step memory MB", "speed-up vs Embed",
                 "memory ratio Embed/ours"], rows))


def _scipy_cooccurrence(tokens, V, window):
    import scipy.sparse as sp
    left, right = [], []
    for d in range(1, window + 1):
        a, b = tokens[:-d], tokens[d:]
        left += [a, b]
        right += [b, a]
    r = np.concatenate(left)
    c = np.concatenate(right)
    keep = (r >= 0) & (c >= 0)
    r, c = r[keep], c[keep]
    M = sp.coo_matrix((np.ones(r.shape[0], np.float32), (r, c)), shape=(V, V)).tocsr()
    M.sum_duplicates()
    return M


def bench_cooccurrence(quick: bool):
    n = 200_000 if quick else 1_000_000
    V = 50_000
    rng = np.random.default_rng(0)
    tokens = (rng.zipf(1.1, n) % V).astype(np.int32)   # Zipf-like word frequencies
    tokens_dev = jax.device_put(tokens)
    rows = []
    for window in (2, 5):
        run = lambda: cooccurrence(tokens, V, window=window)   # noqa: E731
        cold, C = time_once(lambda: run().data)
        C = run()
        ours = timeit(lambda: run().data, repeat=3, warmup=0)
        # The on-device path (XLA's sort), what an accelerator runs; on the CPU backend the
        # public call above sorts with NumPy instead.
        xla = partial(_text._cooccurrence, tokens_dev, vocab_size=V, window=window,
                      weighting="uniform", dtype=C.dtype, host_sort=False)
        xla_cold, _ = time_once(lambda: xla()[1])
        xla_warm = timeit(lambda: xla()[1], repeat=2, warmup=0)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            M = _scipy_cooccurrence(tokens, V, window)
            best = min(best, time.perf_counter() - t0)
        M = M.tocoo()   # CSR with sorted indices: row-major order, as ours
        same = (C.nse == M.nnz and np.array_equal(np.asarray(C.indices[:, 0]), M.row)
                and np.array_equal(np.asarray(C.indices[:, 1]), M.col))
        err = float(np.max(np.abs(np.asarray(C.data) - M.data))) if same else float("nan")
        rows.append([window, n, C.nse, same, err, n / ours / 1e6, n / best / 1e6, best / ours,
                     max(cold - ours, 0.0), best / xla_warm, max(xla_cold - xla_warm, 0.0)])
    print(f"\ncooccurrence of a {n}-token corpus, vocabulary {V} (uniform weights); warm times, "
          f"compile s = first call - warm call; on {machine()}")
    print(table(["window", "tokens", "nnz", "same entries", "max |ours - SciPy|",
                 "jaxfact Mtok/s", "NumPy+SciPy Mtok/s", "speed-up", "compile s",
                 "speed-up, XLA sort (device path)", "its compile s"], rows))


def main(quick: bool = False) -> None:
    bench_step(quick)
    bench_cooccurrence(quick)


if __name__ == "__main__":
    main()
