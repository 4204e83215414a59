"""Tests of jaxfact.nn._compress (and the module-graph walk of jaxfact.nn._graph behind it):
compress replaces the layers of an NNX model, keeps ties and reports what each layer lost."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tol
import jaxfact as jf
from jaxfact import nn as jnn
from nn_testing import F, HID, V, TiedLM, UntiedLM, svd_tail
from nn_testing import table  # noqa: F401  (a fixture)


def test_compress_adaptive_reports_band_errors(table):
    model = TiedLM(nnx.Rngs(0))
    model.embed.embedding.set_value(table)
    new, report = jnn.compress(model, method="adaptive", cutoffs=(5, 30, V), factor=2)
    assert isinstance(new.embed, jnn.AdaptiveEmbed)
    (layer,) = report.layers
    assert layer.rank == (12, 6, 3) and layer.band_errors[0] == 0.0
    assert layer.band_errors[1] == pytest.approx(svd_tail(table[5:30], 6), rel=1e-4)
    assert new(jnp.arange(3)).shape == (3, V)        # attend still ties the output


@pytest.mark.parametrize("cls", [TiedLM, UntiedLM])
def test_compress_round_trips_at_full_rank(cls):
    model = cls(nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(model))
    ids = jnp.arange(V)
    ref = model(ids)
    full = {"embed": F, "hidden": F, "blocks/0": F, "blocks/1": HID, "head": HID}
    new, report = jnn.compress(model, rank=full, include="all")
    np.testing.assert_allclose(new(ids), ref, atol=tol(np.float32, 10) * np.abs(ref).max())
    # Nothing the user passed is modified, and the replacements are what the report says.
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, nnx.state(model)),
                 before)
    assert isinstance(model.embed, nnx.Embed) and isinstance(new.embed, jnn.FactorizedEmbed)
    assert report.params_after == sum(x.size for x in jax.tree.leaves(nnx.state(new, nnx.Param)))
    assert all(r.error < tol(np.float32) for r in report.layers)
    if cls is UntiedLM:
        assert new.alias is new.embed                    # a shared layer stays shared
        # A layer is reported at its first path, in the order the attributes were defined.
        assert [r.path for r in report.layers] == ["embed", "blocks/0", "blocks/1", "head"]
        assert isinstance(new.blocks[1], jnn.FactorizedLinear)


def test_compress_selected_layers_reach_eckart_young(table):
    model = UntiedLM(nnx.Rngs(1))
    model.embed.embedding.set_value(table)
    new, report = jnn.compress(model, rank=3, include=["embed", "blocks/*"])
    paths = [r.path for r in report.layers]
    assert paths == ["embed", "blocks/0", "blocks/1"] and isinstance(new.head, nnx.Linear)
    by_path = {r.path: r for r in report.layers}
    assert by_path["embed"].error == pytest.approx(svd_tail(table, 3), rel=1e-4)
    assert by_path["embed"].params_after == V * 3 + 3 * F
    np.testing.assert_allclose(new.embed.table(), np.asarray(jf.reconstruct(
        jf.truncated_svd(table, 3))), atol=tol(np.float32, 10))
    assert "| embed | Embed -> FactorizedEmbed | 40 x 12 | 3 |" in str(report)


def test_compress_keeps_dtypes():
    model = nnx.Embed(V, F, param_dtype=jnp.bfloat16, dtype=jnp.float32, rngs=nnx.Rngs(0))

    class Wrap(nnx.Module):
        def __init__(self):
            self.embed = model

    new, _ = jnn.compress(Wrap(), rank=4)
    assert new.embed.embedding[...].dtype == jnp.bfloat16 and new.embed.dtype == jnp.float32


def test_compress_errors(table):
    model = UntiedLM(nnx.Rngs(0))

    class NoLayers(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones(3))

    with pytest.raises(ValueError, match=r"compress: `model` has no nnx.Embed or nnx.Linear"):
        jnn.compress(NoLayers(), rank=2)
    with pytest.raises(ValueError, match=r"compress: `include` entry 'enc\*' matches no layer; "
                                         r"the model's replaceable layers are 'embed' \(Embed\), "
                                         r"'blocks/0'"):
        jnn.compress(model, rank=2, include="enc*")
    with pytest.raises(ValueError, match=r"compress: `rank` must be an integer in \[1, 10\] .*"
                                         r"\(layer 'blocks/1'\); got 11"):
        jnn.compress(model, rank=11, include="all")
    with pytest.raises(ValueError, match=r"compress: `rank` as a float .* \(0, 1\)"):
        jnn.compress(model, rank=2.0)
    with pytest.raises(ValueError, match=r"compress: `rank` gives no rank for layer 'head': none "
                                         r"of its patterns \['embed', 'blocks/\*'\] matches"):
        jnn.compress(model, rank={"embed": 2, "blocks/*": 2}, include="all")
    with pytest.raises(ValueError, match=r"compress: `table` must be non-negative; got minimum "
                                         r".* \(layer 'embed'\)"):
        jnn.compress(model, rank=2, method="nmf")
    with pytest.raises(ValueError, match=r"compress: method='pca' applies to embeddings only .* "
                                         r"nnx.Linear at 'blocks/0'"):
        jnn.compress(model, rank=2, method="pca", include="all")
    model.out_table = model.embed.embedding            # a tie through the parameter itself
    with pytest.raises(ValueError, match=r"compress: the parameter of layer 'embed' is also "
                                         r"referenced at 'out_table'; replacing the layer would "
                                         r"untie them"):
        jnn.compress(model, rank=2)
    with pytest.raises(TypeError, match=r"compress: `model` must be a flax.nnx.Module"):
        jnn.compress({"embedding": table}, rank=2)
