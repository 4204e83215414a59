"""Tests of model compression: FactorizedLinear, AdaptiveEmbed.from_table, compress (NNX),
compress_params / swap_modules (Linen), rank rules and rank_sweep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from sklearn.decomposition import PCA

from conftest import tol
import jaxfact as jf
from jaxfact import nn as jnn
from jaxfact.nn import _build
from jaxfact.nn import linen as jln

V, F, HID = 40, 12, 10


def compilations(f):
    """Runs f() and returns how many XLA programs were compiled meanwhile."""
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        f()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return len(events)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def svd_tail(T, k):
    """||T - T_k||_F / ||T||_F by NumPy in float64 (Eckart & Young)."""
    s = np.linalg.svd(np.asarray(T, np.float64), compute_uv=False)
    return np.sqrt(np.sum(s[k:] ** 2) / np.sum(s**2))


@pytest.fixture(scope="module")
def table():
    # A decaying spectrum, so that ranks differ in error.
    T = jax.random.normal(jax.random.key(0), (V, F)) / (1.0 + jnp.arange(F))
    return T + 0.3


class TiedLM(nnx.Module):
    """Embedding tied to the output layer through attend, one hidden Linear."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(V, F, rngs=rngs)
        self.hidden = nnx.Linear(F, F, rngs=rngs)

    def __call__(self, ids):
        return self.embed.attend(jnp.tanh(self.hidden(self.embed(ids))))


class UntiedLM(nnx.Module):
    """A separate output layer, layers in an nnx.List, and a second reference to the embedding."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(V, F, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(F, F, rngs=rngs), nnx.Linear(F, HID, rngs=rngs)])
        self.head = nnx.Linear(HID, V, rngs=rngs)
        self.alias = self.embed

    def __call__(self, ids):
        h = self.alias(ids)
        for layer in self.blocks:
            h = jnp.tanh(layer(h))
        return self.head(h)


# ------------------------------------------------------------------------------------------------
# FactorizedLinear


def test_factorized_linear_from_kernel_full_rank_equals_dense():
    dense = nnx.Linear(F, HID, rngs=nnx.Rngs(0), bias_init=nnx.initializers.normal(1.0))
    low = jnn.FactorizedLinear.from_kernel(dense.kernel[...], min(F, HID),
                                           bias=dense.bias[...])
    x = jax.random.normal(jax.random.key(1), (3, 5, F))
    np.testing.assert_allclose(low(x), dense(x), atol=tol(np.float32, 10))
    assert low.num_params == F * HID + HID * HID + HID
    assert low.kernel_a[...].shape == (F, HID) and low.kernel_b[...].shape == (HID, HID)


def test_factorized_linear_reaches_eckart_young_and_matches_linen():
    K = jax.random.normal(jax.random.key(2), (F, HID))
    k = 3
    b = jnp.linspace(-1.0, 1.0, HID)
    low = jnn.FactorizedLinear.from_kernel(K, k, bias=b)
    assert rel(low.kernel(), K) == pytest.approx(svd_tail(K, k), rel=1e-5)
    module, variables = jln.FactorizedLinear.from_kernel(K, k, bias=b)
    x = jax.random.normal(jax.random.key(3), (4, F))
    np.testing.assert_array_equal(module.apply(variables, x), low(x))
    # The Linen layer initializes parameters of the same names and shapes as the NNX one.
    shapes = jax.tree.map(jnp.shape, module.init(jax.random.key(0), x)["params"])
    assert shapes == {"kernel_a": (F, k), "kernel_b": (k, HID), "bias": (HID,)}


def test_factorized_linear_init_and_dtypes():
    layer = jnn.FactorizedLinear(F, HID, 4, param_dtype=jnp.bfloat16, dtype=jnp.float32,
                                 rngs=nnx.Rngs(0))
    assert layer.kernel_a[...].dtype == jnp.bfloat16
    y = layer(jnp.ones((2, F), jnp.bfloat16))
    assert y.dtype == jnp.float32 and y.shape == (2, HID)
    with pytest.raises(ValueError, match=r"FactorizedLinear: `rank` must be an integer in "
                                         r"\[1, 10\]"):
        jnn.FactorizedLinear(F, HID, 11, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"FactorizedLinear: `x` must have a last axis of size"):
        layer(jnp.ones((2, F + 1)))
    with pytest.raises(ValueError, match=r"FactorizedLinear.from_kernel: `method` must be one of "
                                         r"'svd', 'nmf'; got 'pca'"):
        jnn.FactorizedLinear.from_kernel(jnp.ones((4, 3)), 1, method="pca")


# ------------------------------------------------------------------------------------------------
# nmf_options and rank rules


def test_nmf_options_are_validated(table):
    T = jnp.abs(table)
    fn = "FactorizedEmbed.from_table"
    with pytest.raises(TypeError, match=fn + r": `nmf_options` has an unknown key 'max_iters' "
                                          r"\(did you mean 'max_iter'\?\); allowed keys: .*solver"):
        jnn.FactorizedEmbed.from_table(T, 2, method="nmf", nmf_options={"max_iters": 5})
    with pytest.raises(ValueError, match=fn + r": `nmf_options` must not contain 'rank'"):
        jnn.FactorizedEmbed.from_table(T, 2, method="nmf", nmf_options={"rank": 5})
    with pytest.raises(ValueError, match=fn + r": `nmf_options` must not contain 'key'"):
        jnn.FactorizedEmbed.from_table(T, 2, method="nmf", nmf_options={"key": None})
    with pytest.raises(TypeError, match=fn + r": `nmf_options` must be a dict"):
        jnn.FactorizedEmbed.from_table(T, 2, method="nmf", nmf_options=[("solver", "mu")])
    valid = {"solver": "mu", "max_iter": 5, "warm_start": None}
    assert _build.check_nmf_options(fn, valid) == valid


def test_fractional_rank_matches_scikit_learn_and_energy_rule(table):
    for energy in (0.9,):
        sk = PCA(n_components=energy, svd_solver="full").fit(np.asarray(table, np.float64))
        assert jnn.FactorizedEmbed.from_table(table, energy, method="pca").rank == \
            sk.n_components_
        s = np.linalg.svd(np.asarray(table, np.float64), compute_uv=False)
        expected = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), energy) + 1)
        assert jnn.FactorizedEmbed.from_table(table, energy).rank == expected
    traced = jax.jit(lambda t: jnn.FactorizedEmbed.from_table(t, 0.9).embedding[...])
    with pytest.raises(ValueError, match=r"from_table: rank=0.9 reads all singular values of the "
                                         r"table on the host, which a traced table"):
        traced(table)


def test_gavish_donoho_rank_finds_the_signal():
    k0 = 2
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    signal = jax.random.normal(k1, (V, k0)) @ jax.random.normal(k2, (k0, F))
    noise = jax.random.normal(k3, (V, F))
    assert jnn.FactorizedEmbed.from_table(signal + 0.02 * noise, "gavish-donoho").rank == k0
    with pytest.raises(ValueError, match=r"rank='gavish-donoho' keeps no component"):
        jnn.FactorizedEmbed.from_table(noise, "gavish-donoho")


@pytest.mark.parametrize("bad,err,msg", [
    (1.5, ValueError, r"`rank` as a float .* must lie in \(0, 1\)"),
    (0.0, ValueError, r"`rank` as a float .* must lie in \(0, 1\)"),
    ("energy", ValueError, r"`rank` must be an int, a float in \(0, 1\) .*; got 'energy'"),
    (True, TypeError, r"`rank` must be an int, a float in \(0, 1\) or 'gavish-donoho'"),
    (0, ValueError, r"`rank` must be an integer in \[1, inf\]"),
])
def test_bad_rank(table, bad, err, msg):
    with pytest.raises(err, match="FactorizedEmbed.from_table: " + msg):
        jnn.FactorizedEmbed.from_table(table, bad)


# ------------------------------------------------------------------------------------------------
# AdaptiveEmbed.from_table


def test_adaptive_from_table_bands_are_optimal(table):
    cutoffs = (5, 30, V)           # dims (12, 6, 3) with factor 2; the 5-row head is exact
    emb = jnn.AdaptiveEmbed.from_table(table, cutoffs, factor=2)
    assert emb.dims == (12, 6, 3)
    out = emb(jnp.arange(V))
    np.testing.assert_array_equal(out[:5], table[:5])
    for (lo, hi), d in zip([(5, 30), (30, V)], emb.dims[1:]):
        assert rel(out[lo:hi], table[lo:hi]) == pytest.approx(svd_tail(table[lo:hi], d),
                                                              rel=1e-4)
    module, variables = jln.AdaptiveEmbed.from_table(table, cutoffs, factor=2)
    np.testing.assert_array_equal(module.apply(variables, jnp.arange(V)), out)
    # A band with fewer rows than its width is exact (padded with zero components).
    small = jnn.AdaptiveEmbed.from_table(table, (2, 4, V), factor=2)
    np.testing.assert_allclose(small(jnp.arange(2, 4)), table[2:4], atol=tol(np.float32, 10))


def test_compress_adaptive_reports_band_errors(table):
    model = TiedLM(nnx.Rngs(0))
    model.embed.embedding.set_value(table)
    new, report = jnn.compress(model, method="adaptive", cutoffs=(5, 30, V), factor=2)
    assert isinstance(new.embed, jnn.AdaptiveEmbed)
    (layer,) = report.layers
    assert layer.rank == (12, 6, 3) and layer.band_errors[0] == 0.0
    assert layer.band_errors[1] == pytest.approx(svd_tail(table[5:30], 6), rel=1e-4)
    assert new(jnp.arange(3)).shape == (3, V)        # attend still ties the output


# ------------------------------------------------------------------------------------------------
# compress (NNX)


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
    with pytest.raises(ValueError, match=r"compress: `table` must be non-negative for "
                                         r"method='nmf' \(layer 'embed'\)"):
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


# ------------------------------------------------------------------------------------------------
# compress_params / swap_modules (Linen)


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
    model = LinenLM(nn.Embed(V, F), LinenBlock(nn.Dense(F)), None if tied else nn.Dense(V))
    ids = jnp.arange(V)
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
        variables["params"]["embed"]["embedding"].shape == (V, F)      # input unchanged
    assert [r.path for r in report.layers] == paths


def test_compress_params_at_low_rank_matches_nnx(table):
    model = LinenLM(nn.Embed(V, F), LinenBlock(nn.Dense(F)))
    ids = jnp.arange(V)
    variables = model.init(jax.random.key(0), ids)
    variables["params"]["embed"]["embedding"] = table
    params, modules, report = jln.compress_params(variables["params"], "embed", rank=3,
                                                  method="pca")
    nnx_emb = jnn.FactorizedEmbed.from_table(table, 3, method="pca")
    out = modules["embed"].apply({"params": params["embed"]}, ids)
    np.testing.assert_array_equal(out, nnx_emb(ids))
    assert report.layers[0].params_after == V * 3 + 3 * F + F
    assert jln.swap_modules(model, modules).apply({"params": params}, ids).shape == (V, V)


def test_compress_params_errors():
    model = LinenLM(nn.Embed(V, F), LinenBlock(nn.Dense(F)))
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
            return nn.Embed(V, F, name="embed")(ids)

    _, modules, _ = jln.compress_params(variables, ["embed"], rank=2)
    with pytest.raises(ValueError, match=r"swap_modules: cannot replace 'embed': Compact has no "
                                         r"submodule field 'embed'"):
        jln.swap_modules(Compact(), modules)


# ------------------------------------------------------------------------------------------------
# rank_sweep


def test_rank_sweep_compiles_once_and_matches_direct_factorizations(table):
    traces = []

    @nnx.jit
    def evaluate(emb):
        traces.append(1)                  # runs once per compilation
        return jnp.sum(emb(jnp.arange(V)))

    ranks = [1, 2, 4, 8, 12]
    jnn.rank_sweep(table, [12], evaluate)            # compiles everything at the largest rank
    out = []
    assert compilations(lambda: out.append(jnn.rank_sweep(table, ranks, evaluate))) == 0
    sweep = out[0]
    assert len(traces) == 1                                      # padded modules: one shape
    assert sweep.rank == tuple(ranks)
    assert sweep.params == tuple(V * k + k * F for k in ranks)
    U, S, Vt = np.linalg.svd(np.asarray(table, np.float64), full_matrices=False)
    for k, err, metric in zip(ranks, sweep.error, sweep.metric):
        assert err == pytest.approx(svd_tail(table, k), rel=1e-4, abs=tol(np.float32))
        T_k = (U[:, :k] * S[:k]) @ Vt[:k]           # the Eckart-Young optimum at rank k
        np.testing.assert_allclose(metric, T_k.sum(), rtol=1e-4)
    unpadded = jnn.rank_sweep(table, ranks, lambda emb: emb.rank, padded=False)
    assert unpadded.metric == tuple(ranks)
    assert "| 4 | 208 |" in str(sweep)


def test_rank_sweep_pca_and_model(table):
    sweep = jnn.rank_sweep(table, [2, 5], method="pca")
    centred = np.asarray(table) - np.asarray(table).mean(0)
    s = np.linalg.svd(centred, compute_uv=False)
    expected = [np.sqrt(np.sum(s[k:] ** 2)) / np.linalg.norm(table) for k in (2, 5)]
    np.testing.assert_allclose(sweep.error, expected, rtol=1e-4)
    assert sweep.metric == (None, None)

    model = TiedLM(nnx.Rngs(0))
    model.embed.embedding.set_value(table)
    traces = []

    @nnx.jit
    def evaluate(m):
        traces.append(1)
        return jnp.mean(m(jnp.arange(V)))

    sweep = jnn.rank_sweep(model, [2, 6], evaluate, include="all")
    assert len(traces) == 1 and isinstance(model.embed, nnx.Embed)
    small, report = jnn.compress(model, rank=6, include="all")     # the sweep's last row
    np.testing.assert_allclose(sweep.metric[1], jnp.mean(small(jnp.arange(V))), rtol=1e-4,
                               atol=1e-6)
    assert sweep.params[1] == report.params_after
    assert sweep.error[1] == pytest.approx(max(r.error for r in report.layers), rel=1e-4)
    assert sweep.error[0] > sweep.error[1]
    with pytest.raises(ValueError, match=r"rank_sweep: every rank in `ranks` must be at most "
                                         r"min\(40, 12\) = 12 \(layer 'embed'\); got 13"):
        jnn.rank_sweep(model, [2, 13])


def test_rank_sweep_nmf_is_one_program_equal_to_separate_fits(table):
    X = jnp.abs(table)
    opts = {"solver": "mu", "max_iter": 30}
    jnn.rank_sweep(X, [5], method="nmf", nmf_options=opts)
    out = []
    assert compilations(lambda: out.append(jnn.rank_sweep(X, [2, 5], method="nmf",
                                                          nmf_options=opts))) == 0
    sweep = out[0]
    # The rank-2 fit inside the rank-5 program is the rank-2 fit from the same start.
    W0, H0 = jf.nmf_init(X, 5)
    res = jf.nmf(X, 2, warm_start=(W0[:, :2], H0[:2]), **opts)
    assert sweep.error[0] == pytest.approx(rel(res.W @ res.H, X), rel=1e-4)
    assert sweep.error[0] > sweep.error[1]
    with pytest.raises(ValueError, match=r"rank_sweep: `nmf_options` must not contain 'W_init'"):
        jnn.rank_sweep(X, [1, 2], method="nmf", nmf_options={"W_init": W0})
