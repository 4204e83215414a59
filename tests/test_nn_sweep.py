"""Tests of jaxfact.nn._sweep: rank_sweep factorizes once and compiles once."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tol
import jaxfact as jf
from jaxfact import nn as jnn
from nn_testing import F, V, TiedLM, compilations, rel, svd_tail
from nn_testing import table  # noqa: F401  (a fixture)


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
