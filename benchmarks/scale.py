"""Scaling out: randomized_svd, nmf (HALS) and soft_impute on 1, 2, 4 and 8 devices.

The total problem is fixed; its rows are split over a mesh of p devices. For each p the compiled
program is inspected: the bytes its collectives move per iteration (the collectives inside its
``while`` loops, each counted once) against the algorithm's lower bound per iteration (the
reduction it cannot avoid: the (l, n) ``Q^T X`` of a power pass of the randomized SVD,
``W^T X`` (k, n) and ``W^T W`` (k, k) of a HALS iteration, the (K, n) product of a pass of
SoftImpute's partial SVD), the bytes of the steps outside the loops (start, final SVD), and its
peak memory per device from ``memory_analysis()``, which must fall like 1/p for X-sized arrays. The seconds per call are printed too; on host devices that
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
                           l * n * itemsize, "Q^T X (l, n) per power pass"),
        "nmf hals": (lambda X: jf.nmf(X, k, key=key, solver="hals", init="random",
                                      max_iter=10, tol=0.0),
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
                Xs = tuple(jax.device_put(jnp.asarray(a), split) for a in (obs_r, obs_c, obs_v))
                call = lambda entries: jf.soft_impute(*entries, (m, n), lam=1.0, rank=K,  # noqa
                                                      max_iter=10, tol=0.0)
                # A call regroups the entries by row blocks on the host, then runs one program:
                # that program is the one inspected (under an outer jit the regrouping is done
                # on the devices instead, by a one-time all-gather of the entries).
                program = _soft_impute_program(Xs, mesh, (m, n), K)
            else:
                Xs = jax.device_put(jnp.asarray(X), NamedSharding(mesh, P("data", None)))
                program = None
            try:
                compiled = program or jax.jit(call).lower(Xs).compile()
            except Exception as err:  # a family not yet sharding-aware: say so, go on
                rows.append([name, p, "n/a", "", "", "", "", "", "", type(err).__name__])
                break
            text = compiled.as_text()
            found = _sharding.collectives(text)
            per_iter = sum(c.nbytes for c in _sharding.loop_collectives(text))
            setup = sum(c.nbytes for c in found) - per_iter
            peak = _sharding.peak_bytes(compiled)
            base_peak = base_peak or peak
            first, _ = time_once(lambda: call(Xs))
            seconds = timeit(lambda: call(Xs), repeat=1 if quick else 3, warmup=0)
            biggest = max((c.shape for c in found), key=lambda s: int(np.prod(s)), default=())
            rows.append([name, p, seconds, first, per_iter, per_iter / bound if p > 1 else "",
                         setup, peak / 2**20, peak / base_peak, str(biggest)])
        rows.append([""] * 10)
    print(f"X: {m} x {n} float32 ({X.nbytes / 2**20:.0f} MiB), rank {k}, rows split over p "
          f"devices of {devices[0].platform}")
    print(table(["algorithm", "p", "s/call", "first call s", "bytes/iteration",
                 "/ lower bound", "bytes outside loops", "peak MiB/device", "peak / p=1",
                 "largest collective"], rows[:-1]))
    for name, (_, bound, what) in algorithms.items():
        print(f"lower bound per iteration, {name}: {bound:,} bytes ({what})")


def _soft_impute_program(entries, mesh, shape, rank):
    """The compiled program an eager ``soft_impute`` call on split entries runs (after grouping
    them by row blocks on the host), for lam=1, max_iter=10, tol=0."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxfact import _completion, _sharding, completion

    layout = _sharding.Layout(mesh, ("data",), 0)
    grouped = _completion.group_entries(*entries, shape[0], layout)
    key = jax.random.key(0)
    U0, d0, V0 = completion._start("soft_impute", None, shape, rank, jnp.float32, key)
    put = lambda a, spec: jax.device_put(jnp.asarray(a), NamedSharding(mesh, spec))  # noqa
    args = (grouped, put(U0, P("data", None)), put(d0, P()), put(V0, P()), key,
            put(1.0, P()), put(0.0, P()))
    return _completion.soft_impute_sharded.lower(
        *args, mesh=mesh, axes=("data",), replicated=False, shape=shape, max_iter=10, n_power=1,
        fresh=True, path=False).compile()


if __name__ == "__main__":
    _run("--quick" in sys.argv)
