"""The sharding layer (jaxfact._sharding) on the default session's two host devices."""

import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxfact import _sharding


def _put(x, spec, explicit=True):
    kind = jax.sharding.AxisType.Explicit if explicit else jax.sharding.AxisType.Auto
    mesh = jax.make_mesh((2,), ("data",), axis_types=(kind,))
    return jax.device_put(x, NamedSharding(mesh, spec))


def test_layout_reads_arrays_and_explicit_tracers():
    X = jnp.ones((4, 6))
    assert _sharding.layout_of("f", "X", X) == (None, None)
    assert _sharding.layout_of("f", "X", np.ones((4, 6))) == (None, None)
    rows, cols = _sharding.layout_of("f", "X", _put(X, P("data", None)))
    assert rows.axes == ("data",) and rows.dim == 0 and rows.size == 2 and cols is None
    assert rows.spec() == P("data", None) and rows.spec(3, dim=1) == P(None, "data", None)
    rows, cols = _sharding.layout_of("f", "X", _put(X, P(None, "data")))
    assert rows is None and cols.dim == 1
    seen = []
    jax.jit(lambda X: seen.append(_sharding.layout_of("f", "X", X)) or X)(_put(X, P("data")))
    assert seen[0][0].axes == ("data",)
    # Auto axes: the sharding is not part of a tracer's type, the kernels fall back to XLA's.
    seen = []
    jax.jit(lambda X: seen.append(_sharding.layout_of("f", "X", X)) or X)(
        _put(X, P("data"), explicit=False))
    assert seen[0] == (None, None)


def test_unusable_split_is_resharded_with_a_warning_naming_the_cost():
    X = _put(jnp.ones((4, 6)), P(None, "data"))
    with pytest.warns(UserWarning, match=r"f: `X` of shape \(4, 6\) is sharded along its columns "
                                         r"\(P\(None, 'data'\)\); f splits this work by rows, "
                                         r"so `X` is resharded once to P\('data', None\), moving "
                                         r"up to 96 bytes"):
        Y, layout = _sharding.rows_or_reshard("f", "X", X)
    assert layout.dim == 0 and Y.sharding.spec == P("data", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _sharding.rows_or_reshard("f", "X", X, allow_cols=True)[1].dim == 1


def test_devices_of_different_platforms_are_rejected():
    devices = [types.SimpleNamespace(platform="cpu"), types.SimpleNamespace(platform="gpu")]
    with pytest.raises(ValueError, match=r"f: `X` is sharded over a mesh that mixes devices of "
                                         r"different platforms \(cpu, gpu\)"):
        _sharding.check_same_platform("f", "X", devices)
    _sharding.check_same_platform("f", "X", devices[:1])


def test_collectives_are_read_off_the_compiled_program():
    X = _put(jnp.ones((8, 3)), P("data", None), explicit=False)
    compiled = jax.jit(lambda X: jnp.sum(X, axis=0)).lower(X).compile()
    found = _sharding.collectives(compiled.as_text())
    assert [(c.op, c.shape, c.nbytes) for c in found] == [("all-reduce", (3,), 12)]
    text = ("%ag = (f32[4,8]{1,0}, bf16[2]{0}) all-gather-start(...)\n"
            "%d = f32[4,8]{1,0} all-gather-done(%ag)\n"
            "  %ar.1 = s32[] all-reduce(s32[] %x), replica_groups={}\n"
            "%a2a = (f32[2]{0}, f32[2]{0}, f32[2]{0}, f32[2]{0}, f32[2]{0}, /*index=5*/f32[3]{0}) "
            "all-to-all(...)")
    assert _sharding.collectives(text) == [
        _sharding.Collective("all-gather", "f32", (4, 8), 128),
        _sharding.Collective("all-gather", "bf16", (2,), 4),
        _sharding.Collective("all-reduce", "s32", (), 4)] + [
        _sharding.Collective("all-to-all", "f32", (2,), 8)] * 5 + [
        _sharding.Collective("all-to-all", "f32", (3,), 12)]
    assert _sharding.peak_bytes(compiled) > 0


def test_loop_collectives_are_those_inside_while_bodies():
    X = _put(jnp.ones((8, 3)), P("data", None), explicit=False)

    def f(X):
        total = jnp.sum(X, axis=0)                     # outside the loop: an all-reduce of (3,)
        body = lambda i, c: c + jnp.sum(X * c[None, :] ** 2, axis=0)   # noqa: E731
        return jax.lax.fori_loop(0, 3, body, total)    # inside: one all-reduce of (3,) per pass

    text = jax.jit(f).lower(X).compile().as_text()
    inside = _sharding.loop_collectives(text)
    assert [(c.op, c.shape) for c in inside] == [("all-reduce", (3,))]
    assert len(_sharding.collectives(text)) == 2
