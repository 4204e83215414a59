"""Tests of jaxfact.nn: FactorizedEmbed and AdaptiveEmbed (NNX) and their Linen twins."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import max_intermediate, tol
from jaxfact import nn as jnn
from jaxfact.nn import _math
from jaxfact.nn import linen as jln

V, F, R = 50, 12, 4
CUTOFFS = (6, 20, 50)   # band dims with F = 12, factor 2: (12, 6, 3)


def n_params(module):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def dense_table(emb):
    """The explicit (V, F) table, in NumPy float64, from the module's parameters."""
    if isinstance(emb, jnn.FactorizedEmbed):
        T = np.asarray(emb.embedding[...], np.float64) @ np.asarray(emb.projection[...], np.float64)
        return T + (np.asarray(emb.bias[...], np.float64) if emb.use_bias else 0)
    blocks = []
    for i in range(len(emb.cutoffs)):
        E = np.asarray(getattr(emb, f"embedding_{i}")[...], np.float64)
        P = getattr(emb, f"projection_{i}")
        blocks.append(E if P is None else E @ np.asarray(P[...], np.float64))
    return np.concatenate(blocks)


@pytest.fixture(scope="module")
def fact():
    return jnn.FactorizedEmbed(V, F, R, use_bias=True, rngs=nnx.Rngs(0),
                               bias_init=nnx.initializers.normal(1.0))


@pytest.fixture(scope="module")
def adaptive():
    return jnn.AdaptiveEmbed(CUTOFFS, F, factor=2, rngs=nnx.Rngs(1))


# ------------------------------------------------------------------------------------------------
# Parameter counts and shapes


@pytest.mark.parametrize("use_bias", [False, True])
def test_factorized_param_count(use_bias):
    emb = jnn.FactorizedEmbed(V, F, R, use_bias=use_bias, rngs=nnx.Rngs(0))
    expected = V * R + R * F + (F if use_bias else 0)
    assert n_params(emb) == emb.num_params == expected
    lin = jln.FactorizedEmbed(V, F, R, use_bias=use_bias)
    variables = lin.init(jax.random.key(0), jnp.zeros((1,), jnp.int32))
    assert sum(x.size for x in jax.tree.leaves(variables)) == expected


def test_adaptive_param_count_and_band_dims():
    # The WikiText-103 configuration, counted without allocating (eval_shape).
    emb = nnx.eval_shape(lambda: jnn.AdaptiveEmbed((20000, 60000, 267735), 1024,
                                                   rngs=nnx.Rngs(0)))
    assert emb.dims == (1024, 256, 64)
    expected = 20000 * 1024 + 40000 * 256 + (267735 - 60000) * 64 + 256 * 1024 + 64 * 1024
    assert n_params(emb) == emb.num_params == expected
    head = nnx.eval_shape(lambda: jnn.AdaptiveEmbed((10, 30), 8, head_projection=True,
                                                    rngs=nnx.Rngs(0)))
    assert n_params(head) == head.num_params == 10 * 8 + 20 * 2 + 8 * 8 + 2 * 8


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4)])
def test_output_shapes(fact, adaptive, shape):
    ids = jnp.zeros(shape, jnp.int32)
    for emb in (fact, adaptive):
        assert emb(ids).shape == shape + (F,)
        assert emb.attend(jnp.ones(shape + (F,))).shape == shape + (V,)


# ------------------------------------------------------------------------------------------------
# Lookup and attend against the explicit dense table


def test_factorized_lookup_and_attend_match_dense(fact):
    T = dense_table(fact)
    ids = jax.random.randint(jax.random.key(2), (3, 9), 0, V)
    x = jax.random.normal(jax.random.key(3), (3, 5, F))
    np.testing.assert_allclose(fact(ids), T[np.asarray(ids)], rtol=tol(np.float32, 10),
                               atol=tol(np.float32, 10))
    np.testing.assert_allclose(fact.attend(x), np.asarray(x, np.float64) @ T.T,
                               rtol=tol(np.float32, 10), atol=tol(np.float32, 30))
    np.testing.assert_allclose(fact.table(), T, rtol=tol(np.float32, 10), atol=tol(np.float32, 10))


def test_adaptive_lookup_and_attend_match_dense(adaptive):
    T = dense_table(adaptive)
    assert adaptive.dims == (12, 6, 3) and adaptive.projection_0 is None
    ids = jnp.arange(V).reshape(5, 10)   # every id, every band
    x = jax.random.normal(jax.random.key(4), (2, F))
    np.testing.assert_allclose(adaptive(ids), T[np.asarray(ids)], rtol=tol(np.float32, 10),
                               atol=tol(np.float32, 10))
    np.testing.assert_allclose(adaptive.attend(x), np.asarray(x, np.float64) @ T.T,
                               rtol=tol(np.float32, 10), atol=tol(np.float32, 30))


def test_attend_never_forms_the_table():
    # Largest intermediate of attend on one query: A (or its transpose), V x r, never V x F.
    emb = nnx.eval_shape(lambda: jnn.FactorizedEmbed(20000, 256, 8, rngs=nnx.Rngs(0)))
    graph, state = nnx.split(emb)
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graph, s).attend(x))(
        state, jax.ShapeDtypeStruct((1, 256), jnp.float32))
    assert max_intermediate(jaxpr.jaxpr) == 20000 * 8 < 20000 * 256


# ------------------------------------------------------------------------------------------------
# from_table / from_factors: the truncated-SVD and PCA optima


@pytest.fixture(scope="module")
def trained_table():
    rng = np.random.default_rng(0)
    # A low-rank-plus-noise table with a non-zero column mean (where PCA and SVD differ).
    return (rng.normal(size=(80, 5)) @ rng.normal(size=(5, 24)) + 0.1 * rng.normal(size=(80, 24))
            + 2.0).astype(np.float32)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_from_table_svd_reaches_eckart_young(trained_table, k):
    emb = jnn.FactorizedEmbed.from_table(trained_table, k)
    S = np.linalg.svd(trained_table.astype(np.float64), compute_uv=False)
    err = np.linalg.norm(np.asarray(emb.table(), np.float64) - trained_table)
    np.testing.assert_allclose(err, np.sqrt(np.sum(S[k:] ** 2)), rtol=1e-4)
    assert emb.bias is None and emb.num_params == 80 * k + k * 24


@pytest.mark.parametrize("k", [1, 3, 6])
def test_from_table_pca_reaches_centred_optimum(trained_table, k):
    emb = jnn.FactorizedEmbed.from_table(trained_table, k, method="pca")
    X = trained_table.astype(np.float64)
    mu = X.mean(0)
    S = np.linalg.svd(X - mu, compute_uv=False)
    err = np.linalg.norm(np.asarray(emb.table(), np.float64) - X)
    np.testing.assert_allclose(err, np.sqrt(np.sum(S[k:] ** 2)), rtol=1e-4)
    np.testing.assert_allclose(emb.bias[...], mu, rtol=1e-5)
    svd_err = np.sqrt(np.sum(np.linalg.svd(X, compute_uv=False)[k:] ** 2))
    assert err <= svd_err * (1 + 1e-6)


def test_from_table_randomized_and_balanced_factors(trained_table):
    exact = jnn.FactorizedEmbed.from_table(trained_table, 5)
    rand = jnn.FactorizedEmbed.from_table(trained_table, 5, key=jax.random.key(0))
    e_exact = np.linalg.norm(np.asarray(exact.table()) - trained_table)
    e_rand = np.linalg.norm(np.asarray(rand.table()) - trained_table)
    assert e_rand <= 1.01 * e_exact
    # Balanced split: A = U S^(1/2), B = S^(1/2) V^T have equal column / row norms.
    np.testing.assert_allclose(np.linalg.norm(exact.embedding[...], axis=0),
                               np.linalg.norm(exact.projection[...], axis=1), rtol=1e-4)


def test_from_factors_roundtrip_and_dtypes():
    A = np.arange(12.0, dtype=np.float32).reshape(6, 2)
    B = np.ones((2, 3), np.float32)
    b = np.array([1.0, 2.0, 3.0], np.float32)
    emb = jnn.FactorizedEmbed.from_factors(A, B, b, param_dtype=jnp.bfloat16)
    assert emb.embedding[...].dtype == jnp.bfloat16 and emb.use_bias
    np.testing.assert_allclose(emb(jnp.array([5])), [A[5] @ B + b], rtol=1e-2)
    module, variables = jln.FactorizedEmbed.from_factors(A, B, b)
    np.testing.assert_allclose(module.apply(variables, jnp.array([5])), [A[5] @ B + b])


# ------------------------------------------------------------------------------------------------
# Linen twins: same parameters, same outputs


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


# ------------------------------------------------------------------------------------------------
# Transformations, gradients, training, dtypes


def test_band_local_gradients(adaptive):
    graph, params = nnx.split(adaptive, nnx.Param)
    ids = jnp.array([[7, 8, 19], [10, 10, 12]])   # band 1 only: [6, 20)

    def loss(p):
        return jnp.sum(nnx.merge(graph, p)(ids) ** 2)

    g = jax.grad(loss)(params)
    assert not np.any(g["embedding_0"][...]) and not np.any(g["embedding_2"][...])
    assert not np.any(g["projection_2"][...])
    assert np.any(g["projection_1"][...])
    touched = np.flatnonzero(np.any(np.asarray(g["embedding_1"][...]) != 0, axis=1))
    np.testing.assert_array_equal(touched, np.unique(np.asarray(ids)) - 6)


def test_factorized_gradients_touch_only_used_rows(fact):
    g = nnx.grad(lambda m: jnp.sum(m(jnp.array([3, 3, 9])) ** 2))(fact)
    rows = np.flatnonzero(np.any(np.asarray(g.embedding[...]) != 0, axis=1))
    np.testing.assert_array_equal(rows, [3, 9])


@pytest.mark.parametrize("kind", ["factorized", "adaptive"])
def test_one_optimizer_step_lowers_the_loss(kind):
    if kind == "factorized":
        model = jnn.FactorizedEmbed(V, F, R, rngs=nnx.Rngs(0))
    else:
        model = jnn.AdaptiveEmbed(CUTOFFS, F, factor=2, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    ids = jnp.arange(V - 1)
    targets = jnp.arange(1, V)

    def loss_fn(m):   # a bigram language model with tied input and output embeddings
        logits = m.attend(m(ids))
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @nnx.jit
    def step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss

    before = float(step(model, opt))
    for _ in range(3):
        step(model, opt)
    assert float(loss_fn(model)) < before


def test_vmap_and_jit(fact, adaptive):
    ids = jax.random.randint(jax.random.key(9), (4, 6), 0, V)
    for emb in (fact, adaptive):
        out = nnx.vmap(lambda m, i: m(i), in_axes=(None, 0))(emb, ids)
        np.testing.assert_allclose(out, emb(ids), rtol=1e-6, atol=1e-6)
        out = nnx.jit(lambda m, i: m.attend(m(i)))(emb, ids)
        np.testing.assert_allclose(out, emb.attend(emb(ids)), rtol=1e-5, atol=1e-5)


def test_out_of_range_ids_under_jit_give_nan(fact, adaptive):
    for emb in (fact, adaptive):
        out = nnx.jit(lambda m, i: m(i))(emb, jnp.array([1, V, -1]))
        assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1:]))


@pytest.mark.parametrize("kind", ["factorized", "adaptive"])
def test_bfloat16_compute_and_storage(kind):
    if kind == "factorized":
        mk = lambda **kw: jnn.FactorizedEmbed(V, F, R, use_bias=True, rngs=nnx.Rngs(0), **kw)
    else:
        mk = lambda **kw: jnn.AdaptiveEmbed(CUTOFFS, F, factor=2, rngs=nnx.Rngs(0), **kw)
    ref, low = mk(), mk(dtype=jnp.bfloat16)
    store = mk(param_dtype=jnp.bfloat16)
    ids = jnp.arange(V)
    out = low(ids)
    assert out.dtype == jnp.bfloat16 and low.attend(out).dtype == jnp.bfloat16
    assert store(ids).dtype == jnp.bfloat16
    # bfloat16 has an 8-bit mantissa: relative error ~ a few 2^-8 per product and sum.
    np.testing.assert_allclose(np.asarray(out, np.float32), ref(ids), rtol=3e-2, atol=3e-2)


def test_pure_math_is_shared():
    A = jnp.arange(6.0).reshape(3, 2)
    B = jnp.ones((2, 4))
    out = _math.factorized_lookup(jnp.array([2]), A, B)
    np.testing.assert_allclose(out, [[9.0] * 4])
    assert _math.factorized_param_count(3, 4, 2, True) == 3 * 2 + 2 * 4 + 4


# ------------------------------------------------------------------------------------------------
# Bad input


def test_errors_ids(fact, adaptive):
    with pytest.raises(TypeError, match=r"FactorizedEmbed: `ids` must be an integer array"):
        fact(jnp.array([1.0]))
    with pytest.raises(TypeError, match=r"AdaptiveEmbed: `ids` must be an integer array"):
        adaptive(np.array([0.5]))
    with pytest.raises(ValueError, match=r"FactorizedEmbed: `ids` must be in \[0, 50\).*got 50"):
        fact(jnp.array([0, 50]))
    with pytest.raises(ValueError, match=r"AdaptiveEmbed: `ids` must be in \[0, 50\).*got -1"):
        adaptive(jnp.array([-1, 3]))
    with pytest.raises(ValueError, match=r"FactorizedEmbed.attend: `x` must have a last axis"):
        fact.attend(jnp.ones((2, F + 1)))


def test_errors_constructor():
    rank_msg = r"FactorizedEmbed: `rank` must be an integer in \[1, 12\]"
    with pytest.raises(ValueError, match=rank_msg):
        jnn.FactorizedEmbed(V, F, 13, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=rank_msg):
        jln.FactorizedEmbed(V, F, 13).init(jax.random.key(0), jnp.zeros((1,), jnp.int32))
    with pytest.raises(ValueError, match=r"AdaptiveEmbed: `cutoffs` must be strictly increasing"):
        jnn.AdaptiveEmbed((10, 10, 50), F, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"AdaptiveEmbed: `cutoffs` must end at the vocabulary"):
        jnn.AdaptiveEmbed((10, 40), F, num_embeddings=50, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"AdaptiveEmbed: `cutoffs` must be a non-empty"):
        jnn.AdaptiveEmbed((), F, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"AdaptiveEmbed: `factor` must be a finite number >= 1"):
        jnn.AdaptiveEmbed((10, 50), F, factor=0.5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"AdaptiveEmbed: `cutoffs` must hold Python ints"):
        jnn.AdaptiveEmbed((10, 50.0), F, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"AdaptiveEmbed: `cutoffs` define 3 bands but"):
        jnn.AdaptiveEmbed((10, 20, 50), 4, factor=4, rngs=nnx.Rngs(0))


def test_errors_from_table(trained_table):
    with pytest.raises(ValueError, match=r"FactorizedEmbed.from_table: `table` must be 2-D"):
        jnn.FactorizedEmbed.from_table(np.ones(5, np.float32), 1)
    bad = trained_table.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"FactorizedEmbed.from_table: `table` must be finite"):
        jnn.FactorizedEmbed.from_table(bad, 2)
    with pytest.raises(ValueError, match=r"FactorizedEmbed.from_table: `table` must be non-neg"):
        jnn.FactorizedEmbed.from_table(trained_table - 10, 2, method="nmf")
    with pytest.raises(ValueError, match=r"FactorizedEmbed.from_table: `rank` must be an integer"):
        jnn.FactorizedEmbed.from_table(trained_table, 25)
    with pytest.raises(ValueError, match=r"FactorizedEmbed.from_table: `method` must be one of"):
        jnn.FactorizedEmbed.from_table(trained_table, 2, method="lda")
    with pytest.raises(TypeError, match=r"FactorizedEmbed.from_table: `table` must be floating"):
        jnn.FactorizedEmbed.from_table(np.ones((4, 4), np.int32), 2)
    with pytest.raises(ValueError, match=r"from_table: method='pca' needs a table with at least"):
        jnn.FactorizedEmbed.from_table(trained_table[:1], 1, method="pca")
    with pytest.raises(ValueError, match=r"FactorizedEmbed.from_factors: `A` \(num_embeddings"):
        jnn.FactorizedEmbed.from_factors(np.ones((5, 2)), np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"FactorizedEmbed.from_factors: `bias` must have shape"):
        jnn.FactorizedEmbed.from_factors(np.ones((5, 2)), np.ones((2, 4)), np.ones(3))


def test_from_table_nmf_gives_nonnegative_parts(trained_table):
    from jaxfact.nonnegative import nmf
    X = np.abs(trained_table)
    emb = jnn.FactorizedEmbed.from_table(X, 4, method="nmf", nmf_options={"solver": "hals"})
    A, B = np.asarray(emb.embedding[...]), np.asarray(emb.projection[...])
    assert A.min() >= 0 and B.min() >= 0 and emb.bias is None
    res = nmf(X, 4, solver="hals")
    # The balanced rescaling leaves the product W H unchanged.
    np.testing.assert_allclose(A @ B, np.asarray(res.W) @ np.asarray(res.H), rtol=1e-4, atol=1e-4)
    svd_err = np.sqrt(np.sum(np.linalg.svd(X, compute_uv=False)[4:] ** 2))
    assert np.linalg.norm(A @ B - X) >= svd_err * (1 - 1e-5)   # never beats Eckart-Young
    with pytest.raises(ValueError, match=r"FactorizedEmbed.from_table: `nmf_options` only applies"):
        jnn.FactorizedEmbed.from_table(X, 4, nmf_options={"solver": "mu"})


def test_scan_over_chunks(fact, adaptive):
    ids = jax.random.randint(jax.random.key(10), (3, 2, 5), 0, V)   # 3 chunks of (2, 5)
    for emb in (fact, adaptive):
        @nnx.scan(in_axes=(None, nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def total(m, carry, chunk):
            y = m(chunk)
            return carry + jnp.sum(y), y

        s, ys = total(emb, jnp.zeros(()), ids)
        np.testing.assert_allclose(ys, emb(ids), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(s, jnp.sum(emb(ids)), rtol=1e-5)


def test_linen_from_table_matches_nnx(trained_table):
    module, variables = jln.FactorizedEmbed.from_table(trained_table, 3, method="pca")
    emb = jnn.FactorizedEmbed.from_table(trained_table, 3, method="pca")
    ids = jnp.array([0, 5, 79])
    np.testing.assert_array_equal(module.apply(variables, ids), emb(ids))
    assert set(variables["params"]) == {"embedding", "projection", "bias"}
