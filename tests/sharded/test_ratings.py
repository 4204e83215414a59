"""biased_mf and implicit_als on ratings sharded along the event axis (8 host devices).

The events are drawn so that the user blocks get uneven counts (block sizes differ, and the
last block of 8 has no events at all): the kernels then run on zero-weight padding. Tolerances:
the sharded kernels add the items' normal equations (or CG products) shard by shard, so the sums
are rounded in another order than on one device; the fit's sensitivity to that is measured by
shuffling the events on one device, which moves the factors by about as much (a few 1e-6
relative for biased_mf, a few 1e-5 for implicit_als, whose CG runs only 3 steps): rtol 1e-4
of the largest entry, 20x that sensitivity, is far below any real error (a wrong block or a
dropped event moves the factors by O(1)).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxfact
from jaxfact import _als
from jaxfact import _sharding
from jaxfact import explicit_feedback as ef
from jaxfact import implicit_feedback as imf

from . import meshes

M, N, K = 256, 12, 3
KEY = jax.random.key(0)


def _events():
    rng = np.random.default_rng(0)
    # Users 224..255 (the last block of 8) rate nothing; the others rate 1 to 7 items, so the
    # blocks hold different numbers of events.
    per_user = np.where(np.arange(M) < 224, 1 + np.arange(M) % 7, 0)
    rows = np.repeat(np.arange(M), per_user).astype(np.int32)
    cols = np.concatenate([rng.choice(N, c, replace=False) for c in per_user]).astype(np.int32)
    order = rng.permutation(rows.shape[0])  # a log in no particular order
    rows, cols = rows[order], cols[order]
    values = rng.integers(1, 6, rows.shape[0]).astype(np.float32)
    return rows, cols, values


ROWS, COLS, VALUES = _events()
NNZ = ROWS.shape[0]  # 832 = 8 * 104, so the event arrays split evenly over 1, 2, 4 or 8 devices
EXPLICIT = dict(lam=0.1, max_iter=4, key=KEY)
IMPLICIT = dict(alpha=2.0, lam=0.1, max_iter=4, init_std=0.1, key=KEY)


@pytest.fixture(scope="module")
def reference():
    # On one device, committed: a one-device mesh gives such arrays, and reuses this compile.
    args = jax.device_put((ROWS, COLS, VALUES), jax.devices()[0])
    return (jaxfact.biased_mf(*args, (M, N), K, **EXPLICIT),
            jaxfact.implicit_als(*args, (M, N), K, **IMPLICIT))


def _close(a, b, rtol=1e-4):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.max(np.abs(b))))


def _sharded(mesh, pad=0):
    """The events split over the mesh, after ``pad`` padding events (-1, -1, 0) in random places
    (a log whose length does not divide into the shards is padded so)."""
    rows, cols, values = ROWS, COLS, VALUES
    if pad:
        at = np.random.default_rng(1).choice(NNZ + pad, pad, replace=False)
        keep = np.setdiff1d(np.arange(NNZ + pad), at)
        rows, cols, values = (np.zeros(NNZ + pad, a.dtype) for a in (ROWS, COLS, VALUES))
        rows[keep], cols[keep], values[keep] = ROWS, COLS, VALUES
        rows[at], cols[at] = -1, -1
    return tuple(meshes.rows(a, mesh) for a in (rows, cols, values))


def _events_of(rows, cols, values):
    """What the solvers run on (see _als.event_sharding)."""
    rows, cols, values, split = _als.event_sharding("test", rows, cols, values)
    return _als.shard_events("test", rows, cols, values, M, split)


def _rmse(res):
    # On the host (no compile; jaxfact.predict's gathers from row-split factors are rejected by
    # explicit-axes sharding types).
    mu, bu, bi, P_, Q = (np.asarray(a) for a in res[:5])
    pred = mu + bu[ROWS] + bi[COLS] + np.sum(P_[ROWS] * Q[COLS], axis=1)
    return float(np.sqrt(np.mean((pred - VALUES) ** 2)))


# (devices, explicit axes): each sharded case is a compile of its own, so 2 and 8 devices only,
# one of them with a mesh of auto axes.
CASES = [(1, True), (2, False), (8, True)]


@pytest.mark.parametrize("size,explicit", CASES)
def test_biased_mf_matches_one_device(reference, size, explicit):
    ref = reference[0]
    # The auto-axes case runs the conjugate-gradient solver instead (one compile fewer than
    # both), with k + 1 steps: exact up to rounding, against the exact solves on one device.
    cg = None if explicit else K + 1
    mesh = meshes.mesh(size, explicit=explicit)
    # On 8 devices: a log of 832 + 8 events, 8 of them padding in random places.
    pad = 8 if size == 8 else 0
    res = jaxfact.biased_mf(*_sharded(mesh, pad), (M, N), K, cg_steps=cg, **EXPLICIT)
    for name in ("mu", "user_bias", "item_bias", "user_factors", "item_factors", "history"):
        _close(getattr(res, name), getattr(ref, name), 1e-4 if cg is None else 1e-3)
    assert int(res.n_iter) == int(ref.n_iter) and int(res.status) == int(ref.status)
    assert abs(_rmse(res) - _rmse(ref)) < 1e-5
    assert np.all(np.asarray(res.user_factors)[224:] == 0)  # users without ratings
    if size > 1:
        assert meshes.spec_of(res.user_factors) == P("data")
        assert meshes.spec_of(res.user_bias) == P("data")
        assert meshes.spec_of(res.item_factors) == P() == meshes.spec_of(res.item_bias)


@pytest.mark.parametrize("size,explicit", CASES)
def test_implicit_als_matches_one_device(reference, size, explicit):
    ref = reference[1]
    mesh = meshes.mesh(size, explicit=explicit)
    res = jaxfact.implicit_als(*_sharded(mesh, 8 if size == 8 else 0), (M, N), K, **IMPLICIT)
    for name in ("user_factors", "item_factors", "history"):
        _close(getattr(res, name), getattr(ref, name))
    assert int(res.n_iter) == int(ref.n_iter) and int(res.status) == int(ref.status)
    if size > 1:
        assert meshes.spec_of(res.user_factors) == P("data")
        assert meshes.spec_of(res.item_factors) == P()


def test_events_grouped_by_user_block_with_zero_weight_padding():
    rows, cols, values, weights, same = _als.group_by_block(ROWS, COLS, VALUES, M, 8)
    assert not same and rows.shape[0] % 8 == 0 and weights.sum() == NNZ
    c = rows.shape[0] // 8
    block = np.repeat(np.arange(8), c)
    real = weights > 0
    assert np.all(rows < M // 8)
    # Every event once, in its user's block; block 7 (no events) is all padding.
    got = sorted(zip((rows + block * (M // 8))[real], cols[real], values[real]))
    assert got == sorted(zip(ROWS, COLS, VALUES))
    assert not real[block == 7].any()
    # Already grouped and even: the input unchanged, no padding.
    r, _, _, w, same = _als.group_by_block(np.arange(16, dtype=np.int32), np.zeros(16, np.int32),
                                           np.ones(16, np.float32), 16, 4)
    assert same and np.all(w == 1) and np.array_equal(r, np.tile(np.arange(4), 4))


def test_collectives_are_item_sized():
    """Per iteration: biased_mf reduce-scatters the items' normal equations (N = 12 items
    padded to 16, 2 per shard: (2, K+1, K+1) and (2, K+1)), all-gathers the (16, K+1) solutions
    and psums J; implicit_als psums X^T X (K, K), each CG product (N, K) and two scalars.
    Nothing of the users' size (M x K) crosses devices. The kernels are lowered with the
    arguments of the 8-device fits above, so their compiled programs come from the cache."""
    mesh = meshes.mesh(8)
    ev = _events_of(*_sharded(mesh))
    user, rep = (jax.sharding.NamedSharding(mesh, s) for s in (P("data"), P()))
    start = jax.device_put(
        ef._Factors(jnp.zeros(M), jnp.zeros(N), jnp.zeros((M, K)), jnp.zeros((N, K))),
        ef._Factors(user, rep, user, rep))
    hyper = tuple(jnp.asarray(h, jnp.float32) for h in (0.1, 1e-4, 0.005, 0.1))
    static = dict(mesh=mesh, axes=ev.axes, shape=(M, N), max_iter=EXPLICIT["max_iter"])
    biased = ef._biased_als_sharded.lower(ev.rows, ev.cols, ev.values, ev.weights, start,
                                          hyper[:3], **static, cg_steps=None, biased=True)
    implicit = imf._implicit_als_sharded.lower(ev.rows, ev.cols, ev.values, hyper, KEY, None,
                                               **static, rank=K, cg_steps=3)
    limit = M * K // 2
    for what, lowered, expected in (
            ("biased_mf", biased, {("reduce-scatter", (2, K + 1, K + 1)),
                                   ("reduce-scatter", (2, K + 1)), ("all-gather", (16, K + 1)),
                                   ("all-reduce", ())}),
            ("implicit_als", implicit, {("all-reduce", (N, K)), ("all-reduce", (K, K)),
                                        ("all-reduce", (2,))})):
        found = _sharding.collectives(lowered.compile().as_text())
        big = [c for c in found if int(np.prod(c.shape)) >= limit]
        assert not big, f"{what}: collectives of >= {limit} elements: {big}"
        kinds = {(c.op, c.shape) for c in found}
        assert kinds >= expected, kinds
        # beyond those: once per call, the global item counts and scalars (mu, J at the start)
        assert all(op == "all-reduce" and len(shape) <= 1 for op, shape in kinds - expected)


def test_outer_jit_replicates_with_a_warning(reference):
    mesh = meshes.mesh(2)
    args = _sharded(mesh)
    fit = jax.jit(lambda r, c, v: jaxfact.implicit_als(r, c, v, (M, N), K, **IMPLICIT))
    with pytest.warns(UserWarning, match="traced .* replicated"):
        res = fit(*args)
    _close(res.user_factors, reference[1].user_factors)
    _close(res.item_factors, reference[1].item_factors)


def test_bad_shardings():
    mesh = meshes.mesh(8)
    rows, cols, values = _sharded(mesh)
    with pytest.raises(ValueError, match="do not divide into 8 blocks.*shape=\\(264, n\\)"):
        jaxfact.biased_mf(rows, cols, values, (M + 4, N), K, **EXPLICIT)
    with pytest.raises(ValueError, match="solver='sgd'.*cannot be split"):
        jaxfact.biased_mf(rows, cols, values, (M, N), K, solver="sgd", key=KEY)
    with pytest.raises(ValueError, match="do not divide"):
        jaxfact.implicit_als(rows, cols, values, (M + 4, N), K, **IMPLICIT)
    # Events split differently: follows `values`, says so, same answer.
    with pytest.warns(UserWarning, match="split differently"):
        ev = _events_of(meshes.rows(ROWS, meshes.mesh(2)), cols, values)
    assert ev.size == 8 and float(jnp.sum(ev.weights)) == NNZ
    # Only (-1, -1) is padding: a lone -1 index is an error, as on one device.
    bad_rows = meshes.rows(np.where(np.arange(NNZ) == 5, -1, ROWS).astype(np.int32), mesh)
    with pytest.raises(ValueError, match="`rows` must be in"):
        jaxfact.implicit_als(bad_rows, cols, values, (M, N), K, **IMPLICIT)
    # Values checks run on sharded input.
    with pytest.raises(ValueError, match="finite"):
        jaxfact.biased_mf(rows, cols, meshes.rows(np.full(NNZ, np.nan, np.float32), mesh),
                          (M, N), K, **EXPLICIT)


def test_train_test_split_of_a_sharded_log():
    key = jax.random.key(3)
    train, test = jaxfact.train_test_split(*_sharded(meshes.mesh(8)), test_fraction=0.25,
                                           key=key)
    ref_train, ref_test = jaxfact.train_test_split(ROWS, COLS, VALUES, test_fraction=0.25,
                                                   key=key)
    for got, want in zip((*train, *test), (*ref_train, *ref_test)):
        assert np.array_equal(np.asarray(got), np.asarray(want))
        assert meshes.spec_of(got) == P()
