"""Sharded inputs on 8 host devices, each file of tests/sharded/ in a process of its own.

The default session keeps two host devices (tests/conftest.py); XLA fixes the device count when
JAX starts, so the 8-device tests need fresh processes.
"""

import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent
FILES = sorted(p.name for p in (HERE / "sharded").glob("test_*.py"))


@pytest.mark.parametrize("name", FILES)
def test_on_8_host_devices(name):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAXFACT_SHARDED_SESSION="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         str(HERE / "sharded" / name)],
        env=env, capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
