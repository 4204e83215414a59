"""A row-sharded 200,000 x 2,000 matrix on 8 devices: its randomized SVD and NMF.

Each device holds 25,000 rows (200 MB of the 1.6 GB); jaxfact follows the sharding of X, so U and W
come back split by rows like X, while S, Vt and H are replicated. The script prints, per call, the
memory one device needs and the collectives that cross devices (small: (l, n) and (k, n)
reductions, never rows of X or of U).

Run: python examples/sharded.py            (8 host devices on a CPU; on 8 GPUs drop the flag)
     python examples/sharded.py --small    (a 20,000 x 500 matrix, seconds)
"""

import os
import sys

# Host devices must be requested before JAX starts. On a machine with 8 accelerators, skip this.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxfact as jf  # noqa: E402
from jaxfact import _sharding  # noqa: E402  (reads collectives off a compiled program)

m, n, rank = (20_000, 500, 10) if "--small" in sys.argv else (200_000, 2_000, 20)

# 1. A mesh over the devices and a row sharding: the only lines a one-device script adds.
mesh = jax.make_mesh((jax.device_count(),), ("data",))
rows = NamedSharding(mesh, P("data", None))


# 2. The data, built where it lives: each device makes its own rows (a non-negative rank-20
#    product plus noise), so no host ever holds all of X.
def block(index):
    start = index[0].start or 0
    rng = np.random.default_rng(start)
    H = np.random.default_rng(0).random((rank, n), dtype=np.float32)
    W = rng.random((m // jax.device_count(), rank), dtype=np.float32)
    return W @ H + 0.1 * rng.random((W.shape[0], n), dtype=np.float32)


X = jax.make_array_from_callback((m, n), rows, block)
print(f"X: {m} x {n} float32, {X.nbytes / 2**30:.2f} GiB in all, "
      f"{X.addressable_shards[0].data.nbytes / 2**20:.0f} MiB on each of {jax.device_count()} "
      f"devices: {X.sharding.spec}")


def report(name, fn, *args):
    compiled = jax.jit(fn).lower(*args).compile()
    moved = _sharding.collectives(compiled.as_text())
    kinds = sorted({(c.op, c.shape) for c in moved})
    print(f"{name}: {_sharding.peak_bytes(compiled) / 2**20:.0f} MiB per device; collectives "
          f"(op, shape): {kinds}")


# 3. The same calls as on one device.
key = jax.random.key(0)
report("randomized_svd", lambda X: jf.randomized_svd(X, rank, key=key), X)
U, S, Vt = jf.randomized_svd(X, rank, key=key)
print(f"  U {U.shape} {U.sharding.spec}, S {S.shape}, Vt {Vt.shape} {Vt.sharding.spec}; "
      f"top singular values {np.round(np.asarray(S[:3]), 1)}")

fit = lambda X: jf.nmf(X, rank, key=key, solver="hals", max_iter=50)  # noqa: E731
report("nmf (hals)", fit, X)
res = fit(X)
error = float(jnp.linalg.norm(X - jf.reconstruct(res)) / jnp.linalg.norm(X))
print(f"  W {res.W.shape} {res.W.sharding.spec}, H {res.H.shape} {res.H.sharding.spec}; "
      f"{int(res.n_iter)} iterations, status {jf.Status(int(res.status)).name}, relative "
      f"error {error:.4f}")
