"""svt, soft_impute and soft_impute_path on observed entries split over 1, 2, 4 and 8 devices.

The entries (rows, cols, values) come split along their one axis; the functions group them by
row blocks of n1 / p rows (padding each block with zero-weight entries to the largest count), U
comes back split by rows, S and Vt replicated. Sharded and unsharded runs do the same arithmetic
up to the order of sums (psums of per-shard partial sums) and the QR of the row side (TSQR
instead of one Householder QR, the same subspace): in float32 the factors agree to ~1e-5 after a
few iterations of these well-conditioned problems; tolerances 1e-4 (relative to the largest
value) leave a margin of ten.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxfact import _completion, completion
from tests.sharded import meshes

M_ROWS, N_COLS, RANK = 64, 24, 4


def _problem(seed=0, m=M_ROWS, n=N_COLS, frac=0.5, skew=False):
    rng = np.random.default_rng(seed)
    M = (rng.standard_normal((m, 3)) @ rng.standard_normal((3, n))).astype(np.float32)
    observed = rng.random((m, n)) < frac
    if skew:   # the first rows fully observed, the rest sparsely: very uneven blocks
        observed[: m // 8] = True
        observed[m // 8:] &= rng.random((m - m // 8, n)) < 0.3
    r, c = np.nonzero(observed)
    keep = r.size - r.size % 8        # JAX splits an axis only evenly
    r, c = r[:keep].astype(np.int32), c[:keep].astype(np.int32)
    return r, c, M[r, c]


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
def test_soft_impute_matches_one_device(size):
    r, c, v = _problem()
    ref = completion.soft_impute(r, c, v, (M_ROWS, N_COLS), **SI)
    res = completion.soft_impute(*_split(meshes.mesh(size), r, c, v), (M_ROWS, N_COLS), **SI)
    _close(res, ref)
    if size > 1:
        _shardings(res)


def test_soft_impute_uneven_blocks_auto_mesh_and_warm_start():
    # Row blocks of very different entry counts (padded with zero-weight entries), an auto mesh
    # (Mesh(devices, names)), and a warm start from a sharded result.
    r, c, v = _problem(1, skew=True)
    counts = np.bincount(r // (M_ROWS // 4), minlength=4)
    assert counts.max() > 2 * counts.min()
    ref = completion.soft_impute(r, c, v, (M_ROWS, N_COLS), **SI)
    mesh = meshes.mesh(4, explicit=False)
    res = completion.soft_impute(*_split(mesh, r, c, v), (M_ROWS, N_COLS), **SI)
    _close(res, ref)
    _shardings(res)
    warm = completion.soft_impute(*_split(mesh, r, c, v), (M_ROWS, N_COLS), **SI, warm_start=res)
    warm_ref = completion.soft_impute(r, c, v, (M_ROWS, N_COLS), **SI, warm_start=ref)
    _close(warm, warm_ref)


def test_soft_impute_under_outer_jit():
    # Traced entries (explicit mesh: the sharding is in their type): every device receives the
    # entries once and keeps its block's.
    r, c, v = _problem()
    ref = completion.soft_impute(r, c, v, (M_ROWS, N_COLS), **SI)
    args = _split(meshes.mesh(2), r, c, v)
    res = jax.jit(lambda r, c, v: completion.soft_impute(r, c, v, (M_ROWS, N_COLS), **SI))(*args)
    _close(res, ref)
    _shardings(res)


@pytest.mark.parametrize("size", (2, 8))
def test_soft_impute_path_matches_one_device(size):
    r, c, v = _problem(2)
    lams = jnp.asarray([4.0, 1.0], jnp.float32)
    kw = dict(lams=lams, rank=RANK, tol=0.0, max_iter=4)
    ref = completion.soft_impute_path(r, c, v, (M_ROWS, N_COLS), **kw)
    res = completion.soft_impute_path(*_split(meshes.mesh(size), r, c, v), (M_ROWS, N_COLS),
                                      **kw)
    _close(res, ref)
    _shardings(res, batch=True)


SVT = dict(max_iter=8, buffer_size=8)


@pytest.mark.parametrize("size", (2, 8))
def test_svt_matches_one_device(size):
    r, c, v = _problem(3, frac=0.6)
    ref = completion.svt(r, c, v, (M_ROWS, N_COLS), **SVT)
    res = completion.svt(*_split(meshes.mesh(size), r, c, v), (M_ROWS, N_COLS), **SVT)
    assert res.S.shape == ref.S.shape
    _close(res, ref)
    np.testing.assert_allclose(np.asarray(res.residual_history),
                               np.asarray(ref.residual_history), rtol=1e-4)
    _shardings(res)


def test_svt_buffer_growth():
    # A buffer of 4 fills at once (rank 3 + 5 values below tau): it doubles, on the devices.
    r, c, v = _problem(3, frac=0.6)
    kw = dict(max_iter=4, buffer_size=4)
    ref = completion.svt(r, c, v, (M_ROWS, N_COLS), **kw)
    res = completion.svt(*_split(meshes.mesh(2), r, c, v), (M_ROWS, N_COLS), **kw)
    assert res.S.shape == ref.S.shape
    np.testing.assert_allclose(np.asarray(res.S), np.asarray(ref.S),
                               atol=1e-4 * float(ref.S[0]))
    _shardings(res)


def test_rows_not_divisible_by_devices_raise():
    r, c, v = _problem()
    args = _split(meshes.mesh(8), r, c, v)
    with pytest.raises(ValueError, match="divisible by 8"):
        completion.soft_impute(*args, (M_ROWS - 4, N_COLS), **SI)
    with pytest.raises(ValueError, match=r"shape=\(64, 24\)"):
        completion.svt(*args, (M_ROWS - 4, N_COLS))


def test_no_large_collective():
    # Per iteration only (n2, K) psums, TSQR's (p K, K) stack and scalars cross devices: nothing
    # of m K / 2 elements (a gathered row-side basis) appears in the compiled program.
    m, n, k = 256, 16, 3
    r, c, v = _problem(4, m=m, n=n, frac=0.3)
    mesh = meshes.mesh(8)
    layout = completion._entries_layout("t", *_split(mesh, r, c, v), (m, n))
    entries = _completion.group_entries(r, c, v, m, layout)
    U0 = meshes.rows(jnp.zeros((m, k), jnp.float32), mesh)
    rep = lambda a: meshes.shard(jnp.asarray(a), mesh, P())
    args = (entries, U0, rep(jnp.zeros((k,), jnp.float32)), rep(jnp.zeros((n, k), jnp.float32)),
            jax.random.key(0), rep(jnp.float32(0.5)), rep(jnp.float32(0.0)))
    kernel = lambda *a: _completion.soft_impute_sharded(
        *a, mesh=mesh, axes=("data",), replicated=False, shape=(m, n), max_iter=3, n_power=1,
        fresh=True, path=False)
    found = meshes.assert_no_large_collective(kernel, args, limit=m * k // 2, what="soft_impute")
    assert any(c.shape == (n, k) for c in found)   # the Y^T Q psum is there
