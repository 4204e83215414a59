"""Scaling out: randomized_svd, nmf (HALS) and soft_impute on 1, 2, 4 and 8 devices.

The total problem is fixed; its rows are split over a mesh of p devices. For each p the compiled
program is inspected: the bytes its collectives move in one pass of every loop (each collective
of the HLO counted once; a loop body's collectives run once per iteration) against the algorithm's
lower bound (the reductions it cannot avoid: an (l, n) product per power pass for the randomized
SVD, ``W^T X`` (k, n) and ``W^T W`` (k, k) per HALS iteration, the (K, n) products of the partial
SVD per SoftImpute iteration), and its peak memory per device from ``memory_analysis()``, which
must fall like 1/p for X-sized arrays. The seconds per call are printed too; on host devices that
share a CPU they do not fall with p, on p accelerators they do.

Runs in a subprocess with 8 host devices (``--xla_force_host_platform_device_count=8``) unless
the process already has 8 or more devices (e.g. on a GPU machine).
"""

from __future__ import annotations

import os
import subprocess
import sys

SIZES = (1, 2, 4, 8)


def main(quick: bool = False) -> None:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        env["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()
    args = [sys.executable, "-m", "benchmarks.scale", "--run"] + (["--quick"] if quick else [])
    subprocess.run(args, env=env, check=True)


def _run(quick: bool) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxfact as jf
    from benchmarks._common import table, time_once, timeit
    from jaxfact import _sharding

    devices = jax.devices()
    if len(devices) < max(SIZES):
        raise SystemExit(f"benchmarks.scale needs {max(SIZES)} devices; got {len(devices)}")
    m, n, k = (16000, 200, 10) if quick else (160000, 400, 20)
    rng = np.random.default_rng(0)
    W0 = rng.random((m, k), dtype=np.float32)
    H0 = rng.random((k, n), dtype=np.float32)
    X = W0 @ H0 + 0.1 * rng.random((m, n), dtype=np.float32)
    itemsize = 4
    l = k + 10
    K = k   # soft_impute's rank cap
    key = jax.random.key(0)
    algorithms = {
        # name: (call on the split X, lower bound of bytes in one static pass, what it is)
        "randomized_svd": (lambda X: jf.randomized_svd(X, k, key=key, n_iter=4),
                           2 * l * n * itemsize, "(l, n) per power pass + B = Q^T X"),
        "nmf hals": (lambda X: jf.nmf(X, k, key=key, solver="hals", init="random",
                                      max_iter=20, tol=0.0),
                     (k * n + k * k) * itemsize, "W^T X (k, n) + W^T W (k, k) per iteration"),
        "soft_impute": (None, (K * n + K * K) * itemsize,
                        "Q^T Y (K, n) + R (K, K) per subspace pass"),
    }
    # soft_impute: 10 % of the entries of X observed, the entry lists split over the devices.
    obs_r, obs_c = np.nonzero(rng.random((m, n)) < 0.1)
    keep = obs_r.size - obs_r.size % max(SIZES)
    obs_r, obs_c = obs_r[:keep].astype(np.int32), obs_c[:keep].astype(np.int32)
    obs_v = X[obs_r, obs_c]

    rows = []
    for name, (call, bound, what) in algorithms.items():
        base_peak = None
        for p in SIZES:
            mesh = jax.make_mesh((p,), ("data",), devices=devices[:p])
            if name == "soft_impute":
                split = NamedSharding(mesh, P("data"))
                entries = tuple(jax.device_put(jnp.asarray(a), split)
                                for a in (obs_r, obs_c, obs_v))
                call = lambda entries: jf.soft_impute(*entries, (m, n), lam=1.0, rank=K,  # noqa
                                                      max_iter=20, tol=0.0)
                Xs = entries
            else:
                Xs = jax.device_put(jnp.asarray(X), NamedSharding(mesh, P("data", None)))
            try:
                compiled = jax.jit(call).lower(Xs).compile()
            except Exception as err:  # a family not yet sharding-aware: say so, go on
                rows.append([name, p, "n/a", "", "", "", "", "", type(err).__name__])
                break
            found = _sharding.collectives(compiled.as_text())
            moved = sum(c.nbytes for c in found)
            peak = _sharding.peak_bytes(compiled)
            base_peak = base_peak or peak
            first, _ = time_once(lambda: call(Xs))
            seconds = timeit(lambda: call(Xs), repeat=1 if quick else 3, warmup=0)
            biggest = max((c.shape for c in found), key=lambda s: int(np.prod(s)), default=())
            rows.append([name, p, seconds, first, moved, moved / bound if p > 1 else "",
                         peak / 2**20, peak / base_peak, str(biggest)])
        rows.append(["", "", "", "", "", "", "", "", ""])
    print(f"X: {m} x {n} float32 ({X.nbytes / 2**20:.0f} MiB), rank {k}, rows split over p "
          f"devices of {devices[0].platform}")
    print(table(["algorithm", "p", "s/call", "first call s", "bytes moved (static)",
                 "/ lower bound", "peak MiB/device", "peak / p=1", "largest collective"],
                rows[:-1]))
    for name, (_, bound, what) in algorithms.items():
        print(f"lower bound, {name}: {bound:,} bytes ({what})")


if __name__ == "__main__":
    _run("--quick" in sys.argv)
