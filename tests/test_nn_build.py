"""Tests of jaxfact.nn._build: factors of a trained table (rank rules, nmf_options, adaptive bands,
value checks and keys)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from sklearn.decomposition import PCA

from conftest import tol
from jaxfact import nn as jnn
from jaxfact.nn import _build
from jaxfact.nn import linen as jln
from nn_testing import F, V, rel, svd_tail
from nn_testing import table  # noqa: F401  (a fixture)


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


# ------------------------------------------------------------------------------------------------
# checks=True: value checks staged with checkify under jit


@pytest.mark.parametrize("build", [
    lambda t: jnn.FactorizedEmbed.from_table(t, 2, checks=True).embedding[...],
    lambda t: jln.FactorizedEmbed.from_table(t, 2, method="pca", checks=True)[1]["params"]["bias"],
    lambda t: jnn.FactorizedLinear.from_kernel(t, 2, checks=True).kernel(),
    lambda t: jnn.AdaptiveEmbed.from_table(t, (5, V), checks=True).embedding_1[...],
], ids=["nnx-embed", "linen-embed", "nnx-linear", "nnx-adaptive"])
def test_checks_report_nan_under_jit(table, build):
    checked = checkify.checkify(jax.jit(build))
    err, _ = checked(table.at[3, 4].set(jnp.nan))
    assert "must be finite" in err.get()
    err, _ = checked(table)
    assert err.get() is None
    unchecked = checkify.checkify(jax.jit(
        lambda t: jnn.FactorizedEmbed.from_table(t, 2).embedding[...]))
    assert unchecked(table.at[3, 4].set(jnp.nan))[0].get() is None


def test_checks_report_negative_table_for_nmf(table):
    checked = checkify.checkify(jax.jit(lambda t: jnn.FactorizedEmbed.from_table(
        t, 2, method="nmf", nmf_options={"max_iter": 5}, checks=True).embedding[...]))
    err, _ = checked(-jnp.abs(table))
    assert "FactorizedEmbed.from_table: `table` must be non-negative" in err.get()
