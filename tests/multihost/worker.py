"""One process of a 2-process jaxfact run (tests/test_multihost.py starts two of these).

Usage: python worker.py COORDINATOR_PORT PROCESS_ID OUT_DIR. Each process holds half of the rows of
X, joins the other with ``jax.distributed.initialize`` and writes its block of the factors.
"""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                           process_id=pid, local_device_ids=[0])

import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxfact  # noqa: E402
from tests.multihost.data import RANK, matrix  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 2, jax.devices()
mesh = jax.make_mesh((2,), ("data",))
rows = NamedSharding(mesh, P("data", None))
X = matrix()
half = X.shape[0] // 2
X = jax.make_array_from_process_local_data(rows, X[pid * half:(pid + 1) * half])

res = {}
svd = jaxfact.randomized_svd(X, RANK, key=jax.random.key(1))
res["svd_U"] = svd.U.addressable_shards[0].data
res["svd_S"], res["svd_Vt"] = svd.S.addressable_shards[0].data, svd.Vt.addressable_shards[0].data
if "nmf" in sys.argv[4:]:
    fit = jaxfact.nmf(jax.numpy.abs(X), RANK, key=jax.random.key(2), solver="hals", max_iter=20)
    res["nmf_W"], res["nmf_H"] = fit.W.addressable_shards[0].data, fit.H.addressable_shards[0].data
    res["nmf_n_iter"] = fit.n_iter.addressable_shards[0].data
np.savez(f"{out}/process{pid}.npz", **{k: np.asarray(v) for k, v in res.items()})
jax.distributed.shutdown()
