"""Sharded inputs on 8 host devices: tests/sharded/ in a process of its own.

The default session keeps two host devices (tests/conftest.py); XLA fixes the device count when
JAX starts, so the 8-device tests need a fresh process (one for the whole directory: starting
JAX once per file would cost half a minute of CPU). ``JAXFACT_SLOW_TESTS=1`` adds meshes of 2 and 4
devices to every comparison (tests/sharded/meshes.py).
"""

import os
import pathlib
import subprocess
import sys

from tests.conftest import xla_flags

HERE = pathlib.Path(__file__).parent


def test_on_8_host_devices():
    env = dict(os.environ, XLA_FLAGS=xla_flags(8), JAXFACT_SHARDED_SESSION="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(HERE / "sharded")],
        env=env, capture_output=True, text=True, timeout=900, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
