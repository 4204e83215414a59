"""jaxfact.nn's embedding modules with their vocabulary split over a mesh (8 host devices).

The parameters of a module built with ``vocab_axis`` are the ones built without it (same
initializers, same keys), only placed differently; so lookups, logits and gradients must agree to
float32 rounding: lookups are gathers (bit-exact, summed with zeros), logits are the same (|x|, r)
x (r, V) products computed shard by shard (a few ulps, 1e-5 relative). ``from_table`` on a
row-sharded table goes through the sharded SVD / PCA, which match the single-device ones to
float32 rounding of a well-separated spectrum (1e-4 relative on the reconstructed table).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from jaxfact import _sharding
from jaxfact import nn as jnn
from jaxfact.nn import linen as jlinen
from tests.sharded import meshes

V, F, R = 256, 16, 4
IDS = np.random.default_rng(0).integers(0, V, size=(8, 6)).astype(np.int32)
X = np.random.default_rng(1).standard_normal((8, F)).astype(np.float32)
LIMIT = V * R // 2   # any collective this big moved other devices' rows of the (V, r) table


def vmesh(size, explicit=True):
    return meshes.mesh(size, explicit=explicit, name="vocab")


def spec(x):
    return meshes.spec_of(x)


def close(a, b, rtol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def make_embed(**kw):
    return jnn.FactorizedEmbed(V, F, R, use_bias=True, bias_init=nnx.initializers.normal(1.0),
                               rngs=nnx.Rngs(0), **kw)


def placed(make, mesh):
    """``make()``'s module built without a mesh (flax's eager sharding off: the annotation is
    only recorded) and then put where its annotations say (``nnx.get_named_sharding``): the
    same parameters as on one device, without compiling the initializers once per mesh."""
    with nnx.use_eager_sharding(False):
        module = make()
    state = nnx.state(module)
    nnx.update(module, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
    return module


@pytest.fixture(scope="module")
def reference():
    emb = make_embed()
    return emb, emb(IDS), emb.attend(X)


def loss_fn(model, ids):
    # Cross-entropy with vocabulary-split logits: logsumexp and a one-hot sum are reductions over
    # the vocabulary (indexing the logits at the targets would need them whole).
    z = model.attend(model(ids))
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.sum(z * jax.nn.one_hot(ids, V), -1))


@pytest.mark.parametrize("size", meshes.SIZES)
def test_factorized_embed_vocab_sharded(size, reference):
    ref, lookup, logits = reference
    mesh = vmesh(size)
    if size < 8:    # annotated, built without a mesh, then placed by its annotations
        emb = placed(lambda: make_embed(vocab_axis="vocab"), mesh)
    with jax.set_mesh(mesh):
        if size == 8:   # built on the mesh: flax's eager sharding places A as annotated
            emb = make_embed(vocab_axis="vocab")
        specs = nnx.get_partition_spec(nnx.state(emb, nnx.Param))
        assert specs["embedding"].get_value() == P("vocab", None)
        assert specs["projection"].get_value() == P()
        shardings = nnx.get_named_sharding(nnx.state(emb, nnx.Param), mesh)
        assert shardings["embedding"].get_value().spec == P("vocab", None)
        assert spec(emb.embedding[...]) == P("vocab")
        out, z = emb(IDS), emb.attend(X)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(lookup))
    close(z, logits)
    assert spec(z) == P(None, "vocab")
    if size == 8:
        # a batch split over the vocabulary's own axis: the lookup keeps it, attend gathers
        # the (|x|, r) queries (not the table) and splits the logits by vocabulary
        with jax.set_mesh(mesh):
            out_b = emb(meshes.rows(IDS, mesh, "vocab"))
            z_b = emb.attend(meshes.rows(X, mesh, "vocab"))
        np.testing.assert_array_equal(np.asarray(out_b), np.asarray(lookup))
        close(z_b, logits)
        assert spec(out_b) == P("vocab") and spec(z_b) == P(None, "vocab")
        A, B, b = emb.embedding[...], emb.projection[...], emb.bias[...]
        for what, fn, args in (("lookup", jnn._math.factorized_lookup, (IDS, A, B, b)),
                               ("attend", jnn._math.factorized_attend, (X, A, B, b))):
            # lower + compile of the jitted function reuses the program that just ran
            found = _sharding.collectives(fn.lower(*args).compile().as_text())
            assert all(int(np.prod(c.shape)) < LIMIT for c in found), (what, found)


def test_training_step_with_sharded_parameters(reference):
    # The functional form of an nnx.jit step (split, jax.jit, merge: what nnx.jit does), so that
    # the one compiled program is both inspected and run.
    ref = reference[0]
    mesh = jax.make_mesh((2, 4), ("data", "vocab"), axis_types=(AxisType.Explicit,) * 2)
    ids = meshes.rows(IDS, mesh, "data")              # the batch split over the other axis
    emb = placed(lambda: make_embed(vocab_axis="vocab"), mesh)
    with jax.set_mesh(mesh):
        opt = nnx.Optimizer(emb, optax.sgd(0.5), wrt=nnx.Param)
        graphdef, state = nnx.split((emb, opt))

        @jax.jit
        def step(state, ids):
            model, opt = nnx.merge(graphdef, state)
            loss, grads = nnx.value_and_grad(loss_fn)(model, ids)
            opt.update(model, grads)
            return loss, grads, nnx.state((model, opt))

        program = step.lower(state, ids).compile()
        loss, grads, state = program(state, ids)
        emb, _ = nnx.merge(graphdef, state)
        assert spec(grads["embedding"].get_value()) == P("vocab")
        assert spec(emb.embedding[...]) == P("vocab")
    # forward and backward move (|ids|, r) rows and (|x|, r) products, never the (V, r) table
    big = [c for c in _sharding.collectives(program.as_text())
           if int(np.prod(c.shape)) >= LIMIT]
    assert not big, big
    ref_loss, ref_grads = nnx.jit(nnx.value_and_grad(loss_fn))(ref, IDS)
    close(loss, ref_loss)
    close(grads["embedding"].get_value(), ref_grads["embedding"].get_value(), 1e-4)
    close(grads["projection"].get_value(), ref_grads["projection"].get_value(), 1e-4)


def test_auto_mesh(reference):
    _, lookup, logits = reference
    mesh = vmesh(4, explicit=False)
    emb = placed(lambda: make_embed(vocab_axis="vocab"), mesh)
    with jax.set_mesh(mesh):
        assert spec(emb.embedding[...]) == P("vocab")
        out, z = emb(IDS), emb.attend(X)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(lookup))
    close(z, logits)
    assert spec(z) == P(None, "vocab")


def test_no_mesh_and_bad_split():
    # Without vocab_axis there is no annotation at all; with one, an uneven split is rejected.
    emb = jnn.FactorizedEmbed(V, F, R, rngs=nnx.Rngs(0))
    assert "out_sharding" not in emb.embedding.get_metadata()
    with jax.set_mesh(vmesh(8)):
        with pytest.raises(ValueError, match="pad the vocabulary"):
            jnn.FactorizedEmbed(60, F, R, vocab_axis="vocab", rngs=nnx.Rngs(0))
        with pytest.raises(ValueError, match="embedding_0"):
            jnn.AdaptiveEmbed((20, V), F, vocab_axis="vocab", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="vocab_axis"):
        jnn.FactorizedEmbed(V, F, R, vocab_axis=3, rngs=nnx.Rngs(0))


def test_from_factors_places_annotated_codes_on_the_mesh():
    A = np.tile(np.eye(R, dtype=np.float32), (V // R, 1))
    B = np.ones((R, F), np.float32)
    assert jnn.FactorizedEmbed.from_factors(A, B).vocab_axis is None
    with jax.set_mesh(vmesh(8)):
        emb = jnn.FactorizedEmbed.from_factors(A, B, vocab_axis="vocab")
    assert spec(emb.embedding[...]) == P("vocab")
    np.testing.assert_array_equal(np.asarray(emb.table()), A @ B)


def test_adaptive_embed_vocab_sharded():
    cut = (64, V)
    ref = jnn.AdaptiveEmbed(cut, F, rngs=nnx.Rngs(0))
    mesh = vmesh(8)
    emb = placed(lambda: jnn.AdaptiveEmbed(cut, F, vocab_axis="vocab", rngs=nnx.Rngs(0)), mesh)
    with jax.set_mesh(mesh):
        specs = nnx.get_partition_spec(nnx.state(emb, nnx.Param))
        assert specs["embedding_1"].get_value() == P("vocab", None)
        assert spec(emb.embedding_0[...]) == P("vocab") == spec(emb.embedding_1[...])
        out, z = emb(IDS), emb.attend(X)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref(IDS)))
    close(z, ref.attend(X))
    assert spec(z) == P(None, "vocab")


def _low_rank_table(k=6):
    rng = np.random.default_rng(2)
    T = rng.standard_normal((V, k)) @ (np.diag(2.0 ** -np.arange(k)) * 10) @ \
        rng.standard_normal((k, F))
    return (T + 0.01 * rng.standard_normal((V, F))).astype(np.float32)


# The randomized SVD (key=...) takes the same path here as the exact one; its sharded kernel is
# tested against the unsharded one in tests/sharded/test_svd.py.
@pytest.mark.parametrize("method", ["svd", "pca"])
def test_from_table_follows_the_table(method):
    T = _low_rank_table()
    ref = jnn.FactorizedEmbed.from_table(T, R, method=method)
    emb = jnn.FactorizedEmbed.from_table(meshes.rows(T, vmesh(8), "vocab"), R, method=method)
    assert emb.vocab_axis == "vocab"
    assert spec(emb.embedding[...]) == P("vocab")
    assert nnx.get_partition_spec(emb.embedding).get_value() == P("vocab", None)
    close(emb.table(), ref.table(), 1e-4)


@meshes.slow   # the sharded nmf itself: tests/sharded/test_nonnegative.py
def test_from_table_nmf():
    T = np.abs(_low_rank_table())
    opts = {"solver": "hals", "max_iter": 20}
    ref = jnn.FactorizedEmbed.from_table(T, R, method="nmf", nmf_options=opts)
    emb = jnn.FactorizedEmbed.from_table(meshes.rows(T, vmesh(4), "vocab"), R, method="nmf",
                                         nmf_options=opts)
    assert spec(emb.embedding[...]) == P("vocab")
    close(emb.table(), ref.table(), 1e-3)


def test_rank_rules_read_a_sharded_table_without_gathering_it():
    T = meshes.rows(_low_rank_table(), vmesh(8), "vocab")
    for centred in (False, True):
        close(jnn._build.singular_values(T, centred),
              jnn._build.singular_values(np.asarray(T), centred), 1e-4)
    # What crosses devices: the stacked (F, F) R factors of the 8 blocks (TSQR) and the column
    # sums; nothing that grows with V (here 8 F^2 = V F / 2, at a real V far below it).
    mesh, axes = jnn._math.vocab_split(T)
    found = meshes.collectives(lambda t: jnn._build._sharded_singular_values(t, True, mesh, axes),
                               T)
    assert found and max(int(np.prod(c.shape)) for c in found) <= 8 * F * F, found


def test_adaptive_from_table_follows_the_table():
    # band 1 is a (V, F) table at rank F // 4 = R: the SVDs compiled for FactorizedEmbed serve
    T = np.concatenate([_low_rank_table(), _low_rank_table()[::-1]])
    cut = (V, 2 * V)
    ref = jnn.AdaptiveEmbed.from_table(T, cut)
    emb = jnn.AdaptiveEmbed.from_table(meshes.rows(T, vmesh(8), "vocab"), cut)
    assert emb.vocab_axis == "vocab"
    assert spec(emb.embedding_0[...]) == P("vocab") == spec(emb.embedding_1[...])
    ids = np.arange(0, 2 * V, 7, dtype=np.int32)
    close(emb(ids), ref(ids), 1e-4)
    with pytest.raises(ValueError, match="multiple of 8"):
        jnn.AdaptiveEmbed.from_table(meshes.rows(T, vmesh(8), "vocab"), (60, 2 * V))


def test_from_table_under_jit():
    T = meshes.rows(_low_rank_table(), vmesh(8), "vocab")
    ref = jnn.FactorizedEmbed.from_table(np.asarray(T), R).table()

    @jax.jit
    def compress(t):
        return jnn.FactorizedEmbed.from_table(t, R).table()

    close(compress(T), ref, 1e-4)


def test_linen_twin():
    # Linen's nn.Partitioned applies its annotation as a sharding constraint, which meshes with
    # explicit axes treat as an assertion: the Linen recipe (init under jit with out_shardings)
    # takes auto axes.
    mesh = vmesh(8, explicit=False)
    ref = jlinen.FactorizedEmbed(V, F, R)
    ref_vars = ref.init(jax.random.key(0), IDS)
    model = jlinen.FactorizedEmbed(V, F, R, vocab_axis="vocab")
    with jax.set_mesh(mesh):
        abstract = jax.eval_shape(model.init, jax.random.key(0), IDS)
        specs = linen.get_partition_spec(abstract)
        assert specs["params"]["embedding"] == P("vocab", None)
        shardings = linen.get_sharding(specs, mesh)
        variables = jax.jit(model.init, out_shardings=shardings)(jax.random.key(0), IDS)
        table = linen.unbox(variables)["params"]["embedding"]
        assert spec(table) == P("vocab")
        out = model.apply(variables, IDS)
        z = model.apply(variables, X, method="attend")
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref.apply(ref_vars, IDS)))
    close(z, ref.apply(ref_vars, X, method="attend"))
    assert spec(z) == P(None, "vocab")
    # factors split by rows (as from_table returns them) are boxed with their axis
    module, variables = jlinen.FactorizedEmbed.from_factors(table,
                                                            ref_vars["params"]["projection"])
    assert module.vocab_axis == "vocab"
    assert linen.get_partition_spec(variables)["params"]["embedding"] == P("vocab", None)
