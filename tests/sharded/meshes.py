"""Meshes, sharded inputs and communication checks shared by the sharded tests."""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxfact import _sharding

# Mesh sizes each function is compared on: one device (a mesh axis of size 1 still types arrays
# as split) and all eight. 2 and 4 devices (exercised by single tests too) join the sweep with
# JAXFACT_SLOW_TESTS=1: every size compiles its own programs, and the suite must stay under 10
# minutes on 2 cores.
SLOW = os.environ.get("JAXFACT_SLOW_TESTS") == "1"
SIZES = (1, 2, 4, 8) if SLOW else (1, 8)
slow = __import__("pytest").mark.skipif(not SLOW, reason="set JAXFACT_SLOW_TESTS=1")


def mesh(size: int, *, explicit: bool = True, name: str = "data") -> jax.sharding.Mesh:
    """A 1-D mesh over the first ``size`` devices; explicit axes (``jax.make_mesh``'s default)
    or auto axes (``Mesh(devices, names)``, as older code builds it)."""
    kind = AxisType.Explicit if explicit else AxisType.Auto
    return jax.make_mesh((size,), (name,), axis_types=(kind,), devices=jax.devices()[:size])


def shard(x, m: jax.sharding.Mesh, spec: P):
    return jax.device_put(x, NamedSharding(m, spec))


def rows(x, m: jax.sharding.Mesh, axis="data"):
    """x split by rows over ``axis`` of mesh m (other dimensions replicated)."""
    return shard(x, m, P(axis, *([None] * (np.ndim(x) - 1))))


def spec_of(x) -> P:
    """The PartitionSpec of an array's sharding, trailing Nones dropped."""
    spec = tuple(x.sharding.spec)
    while spec and spec[-1] is None:
        spec = spec[:-1]
    return P(*spec)


def compiled(fn, *args, **kwargs):
    """The compiled program of ``jax.jit(fn)`` on these arguments."""
    return jax.jit(fn, **kwargs).lower(*args).compile()


def collectives(fn, *args, **kwargs):
    return _sharding.collectives(compiled(fn, *args, **kwargs).as_text())


def assert_no_large_collective(fn, args, *, limit: int, what: str, **kwargs):
    """No all-gather / all-to-all / all-reduce / collective-permute in ``jax.jit(fn)(*args)``
    moves an array of ``limit`` or more elements (e.g. limit = m * k / 2 for a row-split m x k
    basis: anything that size means a device received other devices' rows)."""
    found = collectives(fn, *args, **kwargs)
    big = [c for c in found if int(np.prod(c.shape)) >= limit]
    assert not big, f"{what}: collectives of >= {limit} elements: {big}"
    return found
