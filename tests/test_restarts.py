"""Tests of jaxfact.restarts: the best of a batch of runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfact as jf


def test_best_run_of_vmapped_random_restarts_matches_sequential_calls():
    X = jnp.abs(jax.random.normal(jax.random.key(0), (12, 9)))
    keys = jax.random.split(jax.random.key(1), 4)
    fit = jax.jit(lambda X, k: jf.nmf(X, 3, init="random", key=k, solver="hals", max_iter=30))
    runs = jax.vmap(fit, in_axes=(None, 0))(X, keys)
    assert len(set(np.round(np.asarray(runs.loss), 6))) > 1     # the starts do differ
    best = jf.best_run(runs)
    seq = [fit(X, k) for k in keys]
    i = int(np.argmin([float(r.loss) for r in seq]))
    np.testing.assert_allclose(best.W, seq[i].W, rtol=1e-4, atol=1e-5)
    assert float(best.loss) == float(jnp.min(runs.loss))
    by_score = jf.best_run(runs, scores=-runs.loss)
    assert float(by_score.loss) == float(jnp.max(runs.loss))


def test_best_run_rejects_what_it_cannot_score():
    with pytest.raises(TypeError, match="best_run: `results` must be an NMFResult"):
        jf.best_run((jnp.ones(3),))
    with pytest.raises(ValueError, match="best_run: `results` must be a batch of runs"):
        jf.best_run((jnp.ones(3),), scores=jnp.ones(4))
