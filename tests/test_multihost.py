"""Two processes on this machine, joined by ``jax.distributed.initialize`` (a localhost
coordinator, CPU collectives over gloo), each holding half of the rows of X, get the factors one
process gets."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

import jaxfact
from tests.conftest import tol, xla_flags
from tests.multihost.data import RANK, matrix

ROOT = pathlib.Path(__file__).parent.parent


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS=xla_flags(1),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("JAX_PLATFORMS", None)
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests/multihost/worker.py"), str(port),
                               str(pid), str(tmp_path)],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for pid in (0, 1)]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:          # never leave a process behind, whatever happened
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-5000:]
    parts = [np.load(tmp_path / f"process{pid}.npz") for pid in (0, 1)]

    X = matrix()
    t = tol(np.float32, 10)
    svd = jaxfact.randomized_svd(X, RANK, key=jax.random.key(1))
    np.testing.assert_allclose(np.concatenate([p["svd_U"] for p in parts]), svd.U, atol=t)
    for p in parts:
        np.testing.assert_allclose(p["svd_S"], svd.S, rtol=t)
        np.testing.assert_allclose(p["svd_Vt"], svd.Vt, atol=t)
    fit = jaxfact.nmf(np.abs(X), RANK, solver="hals", max_iter=20)
    np.testing.assert_allclose(np.concatenate([p["nmf_W"] for p in parts]), fit.W,
                               atol=tol(np.float32, 100))
    for p in parts:
        np.testing.assert_allclose(p["nmf_H"], fit.H, atol=tol(np.float32, 100))
        assert int(p["nmf_n_iter"]) == int(fit.n_iter)
