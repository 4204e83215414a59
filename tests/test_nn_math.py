"""Tests of jaxfact.nn._math: the pure functions of (parameters, ids) behind both shells."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact.nn import _math


def test_pure_math_is_shared():
    A = jnp.arange(6.0).reshape(3, 2)
    B = jnp.ones((2, 4))
    out = _math.factorized_lookup(jnp.array([2]), A, B)
    np.testing.assert_allclose(out, [[9.0] * 4])
    assert _math.factorized_param_count(3, 4, 2, True) == 3 * 2 + 2 * 4 + 4


def test_mixed_dtypes_promote_explicitly():
    # Under the suite's strict promotion: bfloat16 parameters with a float32 query compute in
    # float32 (NumPy-style promotion, made explicit), and a bias row broadcasts explicitly.
    A = jnp.ones((5, 2), jnp.bfloat16)
    B = jnp.ones((2, 3), jnp.bfloat16)
    b = jnp.arange(3, dtype=jnp.bfloat16)
    x = jnp.ones((4, 3), jnp.float32)
    logits = _math.factorized_attend(x, A, B, b)
    assert logits.dtype == jnp.float32 and logits.shape == (4, 5)
    np.testing.assert_allclose(logits, np.full((4, 5), 6.0 + 3.0))
    np.testing.assert_allclose(_math.factorized_lookup(jnp.array([[1, 2]]), A, B, b),
                               np.broadcast_to(2.0 + np.arange(3.0), (1, 2, 3)))
    np.testing.assert_allclose(_math.factorized_table(A, B, b), 2.0 + np.arange(3.0)[None, :]
                               + np.zeros((5, 1)))
    y = _math.factorized_dense(jnp.ones((2, 7, 5)), jnp.ones((5, 2)), jnp.ones((2, 3)),
                               jnp.ones(3))
    assert y.shape == (2, 7, 3)
    assert jax.numpy.issubdtype(y.dtype, jnp.floating)


def test_parameter_shapes_are_listed_in_creation_order():
    assert list(_math.low_rank_shapes(_math.EMBED_PARAMS, 7, 5, 2, True).items()) == [
        ("embedding", (7, 2)), ("projection", (2, 5)), ("bias", (5,))]
    assert _math.low_rank_shapes(_math.LINEAR_PARAMS, 7, 5, 2, False) == {
        "kernel_a": (7, 2), "kernel_b": (2, 5)}
    assert list(_math.adaptive_shapes((6, 20, 50), 12, 2, False).items()) == [
        ("embedding_0", (6, 12)), ("projection_0", None), ("embedding_1", (14, 6)),
        ("projection_1", (6, 12)), ("embedding_2", (30, 3)), ("projection_2", (3, 12))]
