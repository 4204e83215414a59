"""Shared test configuration.

Tests run in float32 by default (the library's default); the ``x64`` fixture switches JAX to
float64 for one test. Tolerances are set per dtype by :func:`tol`.
"""

import gc
import mmap
import os
import pathlib


def _jaxlib_knows(flag: str) -> bool:
    """Whether the installed jaxlib has an XLA flag (an unknown flag in XLA_FLAGS is fatal)."""
    import importlib.util
    spec = importlib.util.find_spec("jaxlib")
    for lib in pathlib.Path(spec.origin).parent.rglob("*.so"):
        with open(lib, "rb") as f:
            try:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    if mm.find(flag.encode()) >= 0:
                        return True
            except ValueError:   # an empty file
                pass
    return False


# At test sizes the suite's time is XLA compilation, not execution. XLA's CPU backend compiles
# fusions about a third faster with its older (non-MLIR) emitters, which run the compiled code
# somewhat slower: the right trade for tests, not for benchmarks, examples or reproductions,
# which keep XLA's defaults. Semantics are the same; every comparison holds to its dtype's
# tolerance either way.
_FAST_COMPILE = ("--xla_cpu_use_fusion_emitters=false"
                 if _jaxlib_knows("xla_cpu_use_fusion_emitters") else "")


def xla_flags(n_devices: int) -> str:
    """XLA_FLAGS for a test process with ``n_devices`` virtual CPU devices."""
    return f"--xla_force_host_platform_device_count={n_devices} {_FAST_COMPILE}".strip()


# Two virtual CPU devices, so that sharded inputs can be tested on any machine.
os.environ.setdefault("XLA_FLAGS", xla_flags(2))

# Tracing allocates many small objects, and with Python's default thresholds (700 allocations)
# the cyclic collector walks the suite's ever larger heap very often: measured, ~7 % of the
# suite's CPU time. Collections still run, less often.
gc.set_threshold(50_000, 20, 100)

import jax
import numpy as np
import pytest
from hypothesis import settings

# tests/sharded/ runs in its own process on 8 host devices (tests/test_sharded.py starts it).
if os.environ.get("JAXFACT_SHARDED_SESSION") != "1":
    collect_ignore = ["sharded"]

# The library must not lean on implicit promotion: mixing float32 with float64 arrays, or arrays of
# different ranks without an explicit broadcast, raises in the whole suite.
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# At test sizes the suite's time is XLA compilation, not execution: compiling without most of
# XLA's optimization passes takes a third less time (measured: 155 s -> 102 s for the NMF and
# completion tests on 2 cores) and leaves the semantics unchanged; every comparison against a
# reference still holds to its dtype's tolerance. Benchmarks, examples and reproductions run
# fully optimized.
jax.config.update("jax_disable_most_optimizations", True)

# Few examples by default: every new shape compiles, and the suite must stay fast on 2 cores.
settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True)
settings.load_profile("ci")


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Runs a test once in float32 and once in float64 (with x64 enabled for that test)."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield np.float64
    else:
        yield np.float32


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def tol(dtype, scale=1.0):
    """A relative tolerance for results computed in ``dtype``: ~100 ulps times a condition scale."""
    return float(scale * 100 * np.finfo(dtype).eps)


def max_intermediate(jaxpr):
    """Largest output of any equation of a jaxpr, looking inside nested (jit, scan) jaxprs."""
    best = 0
    for eqn in jaxpr.eqns:
        best = max([best] + [int(np.prod(v.aval.shape)) for v in eqn.outvars])
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (tuple, list)) else (p,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    best = max(best, max_intermediate(inner))
    return best


def dense(res):
    """U diag(S) Vt of a result, in float64 NumPy (for comparing against references)."""
    return (np.asarray(res.U, np.float64) * np.asarray(res.S, np.float64)) @ np.asarray(
        res.Vt, np.float64)


def small_ratings(m, n, seed=0, density=0.4):
    """Observed entries (rows, cols, values ~ N(3, 1)) of an m x n matrix, each kept with
    probability ``density``: int32 indices, float64 values."""
    rng = np.random.default_rng(seed)
    r, c = np.nonzero(rng.random((m, n)) < density)
    v = rng.normal(3.0, 1.0, r.size)
    return r.astype(np.int32), c.astype(np.int32), v


def pytest_collection_modifyitems(session, config, items):
    """The tests that start processes of their own (8-device session, two-process run) run
    first: each takes a minute or more on one worker, and started last they would end last."""
    first = ("test_sharded.py", "test_multihost.py")
    items.sort(key=lambda item: item.path.name not in first)
