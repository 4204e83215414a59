"""svt, soft_impute and soft_impute_path on observed entries split over 1, 2, 4 and 8 devices.

The entries (rows, cols, values) come split along their one axis; the functions group them by
row blocks of n1 / p rows (padding each block with zero-weight entries to the largest count), U
comes back split by rows, S and Vt replicated. Sharded and unsharded runs do the same arithmetic
up to the order of sums (psums of per-shard partial sums) and the QR of the row side (TSQR
instead of one Householder QR, the same subspace): in float32 the factors agree to ~1e-5 after a
few iterations of these well-conditioned problems; tolerances 1e-4 (relative to the largest
value) leave a margin of ten.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxfact import _completion, _sharding, completion
from tests.sharded import meshes

M_ROWS, N_COLS, RANK = 64, 24, 3


def _problem(seed=0, m=M_ROWS, n=N_COLS, frac=0.4):
    """Observed entries of a rank-3 matrix; the first eighth of the rows fully observed, so the
    row blocks hold very different counts (padded with zero-weight entries)."""
    rng = np.random.default_rng(seed)
    M = (rng.standard_normal((m, 3)) @ rng.standard_normal((3, n))).astype(np.float32)
    observed = rng.random((m, n)) < frac
    observed[: m // 8] = True
    r, c = np.nonzero(observed)
    keep = r.size - r.size % 8        # JAX splits an axis only evenly
    r, c = r[:keep].astype(np.int32), c[:keep].astype(np.int32)
    return r, c, M[r, c]


ENTRIES = _problem()
_REFS = {}


def _ref(fn, **kw):
    """The one-device result, computed once per settings."""
    key = (fn.__name__, tuple(sorted((k, str(v)) for k, v in kw.items())))
    if key not in _REFS:
        _REFS[key] = fn(*ENTRIES, (M_ROWS, N_COLS), **kw)
    return _REFS[key]


def _split(mesh, *arrays):
    return tuple(meshes.rows(a, mesh) for a in arrays)


def _close(res, ref, atol=1e-4):
    scale = float(np.max(np.abs(np.asarray(ref.S))))
    np.testing.assert_allclose(np.asarray(res.S), np.asarray(ref.S), atol=atol * scale)
    Z = np.asarray(res.U) * np.asarray(res.S)[..., None, :] @ np.asarray(res.Vt)
    Zr = np.asarray(ref.U) * np.asarray(ref.S)[..., None, :] @ np.asarray(ref.Vt)
    np.testing.assert_allclose(Z, Zr, atol=atol * scale)
    assert int(np.max(res.n_iter)) == int(np.max(ref.n_iter))
    np.testing.assert_allclose(np.asarray(res.history), np.asarray(ref.history), rtol=1e-4)


def _shardings(res, batch=False):
    lead = (None,) if batch else ()
    assert meshes.spec_of(res.U) == P(*lead, "data")
    assert meshes.spec_of(res.S) == P() and meshes.spec_of(res.Vt) == P()


SI = dict(lam=0.5, rank=RANK, tol=0.0, max_iter=6)


@pytest.mark.parametrize("size", meshes.SIZES)
def test_soft_impute_matches_one_device(size, explicit=True):
    counts = np.bincount(ENTRIES[0] // (M_ROWS // 8), minlength=8)
    assert counts.max() > 2 * counts.min()      # uneven blocks: padding is exercised
    res = completion.soft_impute(*_split(meshes.mesh(size, explicit=explicit), *ENTRIES),
                                 (M_ROWS, N_COLS), **SI)
    _close(res, _ref(completion.soft_impute, **SI))
    _shardings(res)


def test_soft_impute_under_outer_jit():
    # Traced entries (explicit mesh: the sharding is in their type): every device receives the
    # entries once and keeps its block's.
    args = _split(meshes.mesh(2), *ENTRIES)
    res = jax.jit(lambda r, c, v: completion.soft_impute(r, c, v, (M_ROWS, N_COLS), **SI))(*args)
    _close(res, _ref(completion.soft_impute, **SI))
    _shardings(res)


@pytest.mark.parametrize("size,explicit", [(2, True), (8, False)])
def test_soft_impute_path_matches_one_device(size, explicit):
    # (soft_impute_path runs soft_impute's body; 8 devices here on an auto mesh, Mesh(devices,
    # names), as older code builds it: compiled programs are few, the suite's time is theirs.)
    kw = dict(lams=np.asarray([4.0, 1.0], np.float32), rank=RANK, tol=0.0, max_iter=4)
    res = completion.soft_impute_path(*_split(meshes.mesh(size, explicit=explicit), *ENTRIES),
                                      (M_ROWS, N_COLS), **kw)
    _close(res, _ref(completion.soft_impute_path, **kw))
    _shardings(res, batch=True)


# A buffer of 4 fills at once (rank 3 and 5 values below tau): it doubles, on the devices too.
SVT = dict(max_iter=6, buffer_size=4)


@pytest.mark.parametrize("size", (2, 8) if meshes.SLOW else (8,))
def test_svt_matches_one_device(size):
    ref = _ref(completion.svt, **SVT)
    res = completion.svt(*_split(meshes.mesh(size), *ENTRIES), (M_ROWS, N_COLS), **SVT)
    assert res.S.shape == ref.S.shape
    _close(res, ref)
    np.testing.assert_allclose(np.asarray(res.residual_history),
                               np.asarray(ref.residual_history), rtol=1e-4)
    _shardings(res)


def test_rows_not_divisible_by_devices_raise():
    args = _split(meshes.mesh(8), *ENTRIES)
    with pytest.raises(ValueError, match="divisible by 8"):
        completion.soft_impute(*args, (M_ROWS - 4, N_COLS), **SI)
    with pytest.raises(ValueError, match=r"shape=\(64, 24\)"):
        completion.svt(*args, (M_ROWS - 4, N_COLS))


def test_no_large_collective():
    # Per subspace pass only the (n2, K) psum of Y^T Q and TSQR's (p K, K) stack of R factors
    # cross devices, per iteration a few scalars: nothing of m K / 2 elements (a gathered
    # row-side basis or the entries) appears in the compiled program.
    m, n, k = M_ROWS, N_COLS, RANK
    mesh = meshes.mesh(8)
    split = _split(mesh, *ENTRIES)
    entries = _completion.group_entries(*split, m, completion._entries_layout("t", *split, (m, n)))
    rep = lambda a: meshes.shard(jnp.asarray(a), mesh, P())
    args = (entries, meshes.rows(jnp.zeros((m, k), jnp.float32), mesh),
            rep(jnp.zeros((k,), jnp.float32)), rep(jnp.zeros((n, k), jnp.float32)),
            jax.random.key(0), rep(jnp.float32(SI["lam"])), rep(jnp.float32(SI["tol"])))
    completion.soft_impute(*split, (m, n), **SI)     # compiled once (cached if run before)
    hlo = _completion.soft_impute_sharded.lower(
        *args, mesh=mesh, axes=("data",), replicated=False, shape=(m, n),
        max_iter=SI["max_iter"], n_power=1, fresh=True, path=False).compile().as_text()
    found = _sharding.collectives(hlo)
    assert not [c for c in found if np.prod(c.shape) >= m * k // 2], found
    assert any(c.shape == (n, k) for c in found)   # the Y^T Q psum
    assert any(c.shape == (8 * k, k) for c in found)   # TSQR's stack


def test_grad_of_split_entries_raises():
    # No implicit gradient for split entries: a clear TypeError, not a failure deep in JAX.
    rs, cs, vs = _split(meshes.mesh(2), *ENTRIES)
    f = lambda v: jnp.sum(completion.soft_impute(rs, cs, v, (M_ROWS, N_COLS), **SI).S)
    with pytest.raises(TypeError, match="runs under jit only"):
        jax.grad(f)(vs)
    g = lambda v: jnp.sum(completion.svt(rs, cs, v, (M_ROWS, N_COLS), **SVT).S)
    with pytest.raises(TypeError, match="runs under jit only"):
        jax.grad(g)(vs)
