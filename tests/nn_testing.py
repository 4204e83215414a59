"""Shared helpers of the jaxfact.nn tests (tests/test_nn_*.py): a trained-looking table, two small
NNX language models, error measures and a compilation counter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

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
    T = jax.random.normal(jax.random.key(0), (V, F))
    T = T / (1.0 + jnp.arange(F, dtype=jnp.float32))[None, :]
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
