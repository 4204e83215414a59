"""Tests of jaxfact.nn.linen: the Linen twins (same parameters, same outputs as the NNX modules),
compress_params and swap_modules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from conftest import tol
from jaxfact import nn as jnn
from jaxfact.nn import linen as jln
from nn_testing import V as V_LM
from nn_testing import table  # noqa: F401  (a fixture)

V, F, R = 50, 12, 4
CUTOFFS = (6, 20, 50)   # band dims with F = 12, factor 2: (12, 6, 3)


@pytest.fixture(scope="module")
def trained_table():
    rng = np.random.default_rng(0)
    # A low-rank-plus-noise table with a non-zero column mean (where PCA and SVD differ).
    return (rng.normal(size=(80, 5)) @ rng.normal(size=(5, 24)) + 0.1 * rng.normal(size=(80, 24))
            + 2.0).astype(np.float32)


def _nnx_from_linen(nnx_module, variables):
    for name, value in variables["params"].items():
        getattr(nnx_module, name).set_value(value)
    return nnx_module


def test_linen_twin_factorized():
    lin = jln.FactorizedEmbed(V, F, R, use_bias=True, bias_init=nn_normal())
    variables = lin.init(jax.random.key(5), jnp.zeros((1,), jnp.int32))
    emb = _nnx_from_linen(nnx.eval_shape(lambda: jnn.FactorizedEmbed(
        V, F, R, use_bias=True, rngs=nnx.Rngs(0))), variables)
    ids = jnp.array([[0, 3, 49], [7, 7, 1]])
    x = jax.random.normal(jax.random.key(6), (4, F))
    np.testing.assert_array_equal(lin.apply(variables, ids), emb(ids))
    np.testing.assert_array_equal(lin.apply(variables, x, method="attend"), emb.attend(x))


def test_linen_twin_adaptive():
    lin = jln.AdaptiveEmbed(CUTOFFS, F, factor=2)
    variables = lin.init(jax.random.key(7), jnp.zeros((1,), jnp.int32))
    emb = _nnx_from_linen(nnx.eval_shape(lambda: jnn.AdaptiveEmbed(CUTOFFS, F, factor=2,
                                                                   rngs=nnx.Rngs(0))), variables)
    assert set(variables["params"]) == set(nnx.state(emb, nnx.Param).keys())
    ids = jnp.arange(V).reshape(2, 25)
    x = jax.random.normal(jax.random.key(8), (3, F))
    np.testing.assert_array_equal(lin.apply(variables, ids), emb(ids))
    np.testing.assert_array_equal(lin.apply(variables, x, method="attend"), emb.attend(x))


def nn_normal():
    return jax.nn.initializers.normal(1.0)


def test_linen_from_table_matches_nnx(trained_table):
    module, variables = jln.FactorizedEmbed.from_table(trained_table, 3, method="pca")
    emb = jnn.FactorizedEmbed.from_table(trained_table, 3, method="pca")
    ids = jnp.array([0, 5, 79])
    np.testing.assert_array_equal(module.apply(variables, ids), emb(ids))
    assert set(variables["params"]) == {"embedding", "projection", "bias"}


# ------------------------------------------------------------------------------------------------
# compress_params / swap_modules (V_LM = 40: the shared table's vocabulary)


class LinenBlock(nn.Module):
    dense: nn.Module

    def __call__(self, h):
        return jnp.tanh(self.dense(h))


class LinenLM(nn.Module):
    embed: nn.Module
    block: nn.Module
    head: nn.Module | None = None      # None: tied through embed.attend

    def __call__(self, ids):
        h = self.block(self.embed(ids))
        return self.embed.attend(h) if self.head is None else self.head(h)


@pytest.mark.parametrize("tied", [True, False])
def test_compress_params_round_trips_at_full_rank(tied):
    model = LinenLM(nn.Embed(V_LM, F), LinenBlock(nn.Dense(F)), None if tied else nn.Dense(V_LM))
    ids = jnp.arange(V_LM)
    variables = model.init(jax.random.key(0), ids)
    ref = model.apply(variables, ids)
    paths = ["embed", "block/dense"] + ([] if tied else ["head"])
    params, modules, report = jln.compress_params(variables, paths,
                                                  rank={"embed": F, "block/*": F, "head": F})
    small = jln.swap_modules(model, modules)
    np.testing.assert_allclose(small.apply(params, ids), ref,
                               atol=tol(np.float32, 10) * np.abs(ref).max())
    assert isinstance(modules["embed"], jln.FactorizedEmbed)
    assert set(params["params"]["block"]["dense"]) == {"kernel_a", "kernel_b", "bias"}
    assert "embedding" in variables["params"]["embed"] and \
        variables["params"]["embed"]["embedding"].shape == (V_LM, F)      # input unchanged
    assert [r.path for r in report.layers] == paths


def test_compress_params_at_low_rank_matches_nnx(table):
    model = LinenLM(nn.Embed(V_LM, F), LinenBlock(nn.Dense(F)))
    ids = jnp.arange(V_LM)
    variables = model.init(jax.random.key(0), ids)
    variables["params"]["embed"]["embedding"] = table
    params, modules, report = jln.compress_params(variables["params"], "embed", rank=3,
                                                  method="pca")
    nnx_emb = jnn.FactorizedEmbed.from_table(table, 3, method="pca")
    out = modules["embed"].apply({"params": params["embed"]}, ids)
    np.testing.assert_array_equal(out, nnx_emb(ids))
    assert report.layers[0].params_after == V_LM * 3 + 3 * F + F
    assert jln.swap_modules(model, modules).apply({"params": params}, ids).shape == (V_LM, V_LM)


def test_compress_params_errors():
    model = LinenLM(nn.Embed(V_LM, F), LinenBlock(nn.Dense(F)))
    variables = model.init(jax.random.key(0), jnp.arange(3))
    with pytest.raises(ValueError, match=r"compress_params: `module_paths` entry 'enc' is not in "
                                         r"`params`; its layers are \['embed', 'block/dense'\]"):
        jln.compress_params(variables, ["enc"], rank=2)
    with pytest.raises(ValueError, match=r"compress_params: `module_paths` entry 'block' holds "
                                         r"parameters \['dense'\]"):
        jln.compress_params(variables, ["block"], rank=2)
    with pytest.raises(ValueError, match=r"compress_params: `module_paths` must name at least"):
        jln.compress_params(variables, [], rank=2)
    with pytest.raises(ValueError, match=r"compress_params: `rank` must be an integer in \[1, 12\]"
                                         r" .*\(layer 'embed'\); got 13"):
        jln.compress_params(variables, ["embed"], rank=13)

    class Compact(nn.Module):
        @nn.compact
        def __call__(self, ids):
            return nn.Embed(V_LM, F, name="embed")(ids)

    _, modules, _ = jln.compress_params(variables, ["embed"], rank=2)
    with pytest.raises(ValueError, match=r"swap_modules: cannot replace 'embed': Compact has no "
                                         r"submodule field 'embed'"):
        jln.swap_modules(Compact(), modules)
