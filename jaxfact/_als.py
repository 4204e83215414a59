"""Alternating-least-squares kernels shared by :mod:`jaxfact.explicit_feedback` and
:mod:`jaxfact.implicit_feedback` (private).

Observations are grouped by segment (a user or an item) into padded pieces of a fixed width
(:func:`layout`), so that per-segment sums of outer products become batched dense products; every
segment's regularized least-squares problem is then solved at once, exactly (:func:`ridge_solve`,
batched Cholesky) or by a few conjugate-gradient steps (:func:`ridge_cg`, :func:`batched_cg`).
For concrete observations, :func:`chunk_layout` (host side) also packs whole segments into
chunks of one shape, so that a solver can finish a chunk's segments while their rows are in cache.

Sharded ratings (:func:`shard_events`): the events are grouped on the host by the user block that
owns them (:func:`group_by_block`, zero-weight padding for uneven blocks), so that each shard
solves its own users' systems; the item side's sums over events are completed across the shards
by a reduce-scatter (exact solves) or a psum (CG products) that the kernels here take as an
argument.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxfact import _sharding
from jaxfact.linop import stable_argsort

__all__ = []  # private module

CHUNK = 256  # pieces per step of the Gram-matrix scan of ridge_solve


class Layout(NamedTuple):
    """Ratings grouped by segment (user or item) into padded pieces of `width` slots, so that
    per-segment sums of outer products become batched dense products."""

    idx: jax.Array     # (n_pieces, width) int32, rating index per slot, nnz for an empty slot
    owner: jax.Array   # (n_pieces,) int32, the segment of each piece (n_seg for unused pieces)
    counts: jax.Array  # (n_seg,) int32, ratings per segment


class CGState(NamedTuple):
    """The state of :func:`batched_cg`, one row per system."""

    x: jax.Array   # (n_seg, d) iterate
    r: jax.Array   # (n_seg, d) residual b - A x
    p: jax.Array   # (n_seg, d) search direction
    rs: jax.Array  # (n_seg,) squared residual norm


def piece_width(nnz: int, n_seg: int) -> int:
    """About half the mean segment length, a power of two in [8, 64]: padding wastes < width
    slots per segment, and wider pieces mean fewer partial Gram matrices to add up."""
    w = 8
    while w < 64 and 2 * w <= nnz / max(n_seg, 1) / 2:
        w *= 2
    return w


def layout(seg: jax.Array, n_seg: int, chunk: int) -> Layout:
    """The :class:`Layout` of observations whose segments are ``seg`` (nnz,), with a number of
    pieces that is a multiple of ``chunk``."""
    nnz = seg.shape[0]
    width = piece_width(nnz, n_seg)
    n_pieces = nnz // width + n_seg + 1      # sum_s ceil(c_s / width) <= nnz / width + n_seg
    n_pieces = -(-n_pieces // chunk) * chunk  # a whole number of chunks
    order = jnp.argsort(seg, stable=True).astype(jnp.int32)
    seg_sorted = seg[order]
    counts = jnp.bincount(seg, length=n_seg).astype(jnp.int32)
    starts = jnp.cumsum(counts) - counts
    pos = jnp.arange(nnz, dtype=jnp.int32) - starts[seg_sorted]
    n_of = (counts + width - 1) // width
    piece_start = jnp.cumsum(n_of) - n_of
    piece = (piece_start[seg_sorted] + pos // width).astype(jnp.int32)
    idx = jnp.full((n_pieces, width), nnz, jnp.int32).at[piece, pos % width].set(order)
    owner = jnp.full((n_pieces,), n_seg, jnp.int32).at[piece].set(seg_sorted)
    return Layout(idx, owner, counts)


class Chunks(NamedTuple):
    """Observations grouped by segment into chunks of whole segments (:func:`chunk_layout`), so
    that every segment's whole iterative solve can run on one chunk at a time, in cache."""

    event: np.ndarray  # (n_chunks, pieces, width) int32, observation per slot, nnz when empty
    local: np.ndarray  # (n_chunks, pieces) int32, the piece's segment within its chunk, sorted
    segs: np.ndarray   # (n_chunks, per_chunk) int32, the chunk's segments (n_seg when unused)
    where: np.ndarray  # (n_seg,) int32, segment s is row where[s] of the chunks' (per_chunk) rows


def chunk_width(nnz: int, n_seg: int) -> int:
    """About a third of the mean segment length, a power of two in [4, 32]."""
    w = 4
    while w < 32 and 2 * w <= nnz / max(n_seg, 1) / 3:
        w *= 2
    return w


def chunk_layout(seg: Any, n_seg: int, slots: int, width: int | None = None,
                 min_cap: int = 1) -> Chunks:
    """Host side (NumPy, concrete ``seg`` (nnz,) only): the observations of each segment in
    pieces of :func:`chunk_width` slots, the segments (in order, empty ones included) packed
    greedily into chunks of ``max(slots // width, most pieces of one segment)`` pieces and at
    most that many segments, so that no segment straddles two chunks. Every chunk has the same
    shape; unused pieces and slots are padding (observation nnz, the chunk's last segment).
    When everything fits in one chunk, its shape depends on ``(nnz, n_seg)`` only (as
    :func:`layout`'s does), so that a jitted caller is not recompiled for every data set.
    ``width`` (default :func:`chunk_width`) and ``min_cap`` (fewest pieces per chunk) let two
    layouts share a shape (:func:`paired_chunk_layouts`)."""
    seg = np.asarray(seg).astype(np.int64)
    nnz = seg.size
    width = chunk_width(nnz, n_seg) if width is None else width
    counts = np.bincount(seg, minlength=n_seg)
    n_of = -(-counts // width)                              # pieces per segment
    cap = max(slots // width, int(n_of.max(initial=1)), min_cap)  # pieces (and segments) per chunk
    end = np.cumsum(n_of)
    if end[-1] <= cap and n_seg <= cap:  # one chunk, shaped by (nnz, n_seg) only: no recompiles
        cap = nnz // width + n_seg + 1
    first, s, base = [], 0, 0
    while s < n_seg:  # one pass per chunk: the segments whose pieces still fit
        first.append(s)
        e = min(int(np.searchsorted(end, base + cap, side="right")), s + cap)
        s, base = e, int(end[e - 1])
    first = np.asarray(first, np.int64)
    n_chunks = first.size
    chunk_of = np.repeat(np.arange(n_chunks), np.diff(np.append(first, n_seg)))
    per_chunk = int(np.bincount(chunk_of).max())
    local_seg = np.arange(n_seg) - first[chunk_of]
    piece0 = (end - n_of) - (end - n_of)[first][chunk_of] + chunk_of * cap  # first piece of s
    order = stable_argsort(seg)
    seg_sorted = seg[order]
    pos = np.arange(nnz) - (np.cumsum(counts) - counts)[seg_sorted]
    event = np.full((n_chunks * cap, width), nnz, np.int32)
    event[piece0[seg_sorted] + pos // width, pos % width] = order
    local = np.full(n_chunks * cap, per_chunk - 1, np.int32)
    owner = np.repeat(np.arange(n_seg), n_of)
    local[piece0[owner] + np.arange(owner.size) - (end - n_of)[owner]] = local_seg[owner]
    segs = np.full((n_chunks, per_chunk), n_seg, np.int32)
    segs[chunk_of, local_seg] = np.arange(n_seg)
    where = (chunk_of * per_chunk + local_seg).astype(np.int32)
    return Chunks(event.reshape(n_chunks, cap, width), local.reshape(n_chunks, cap), segs, where)


def paired_chunk_layouts(seg_a: Any, n_a: int, seg_b: Any, n_b: int, slots: int
                         ) -> tuple[Chunks, np.ndarray]:
    """The :func:`chunk_layout` of the same observations by two segmentations (users and items),
    padded to one shape and stacked, so that one program updates either side: ``event`` (2, C,
    pieces, width), ``local`` (2, C, pieces), ``segs`` (2, C, per_chunk), ``where`` (2, R) with
    R = max(n_a, n_b), and the number of chunks in use per side (2,). Padding chunks are never
    run; rows past a side's segments read row C * per_chunk (a zero row the caller appends)."""
    seg_a, seg_b = (np.asarray(x).astype(np.int64) for x in (seg_a, seg_b))
    width = chunk_width(seg_a.size, max(n_a, n_b))
    most = max(int(np.bincount(x).max(initial=1)) for x in (seg_a, seg_b))
    pair = [chunk_layout(x, n, slots, width, -(-most // width))
            for x, n in ((seg_a, n_a), (seg_b, n_b))]
    n_chunks = np.array([c.event.shape[0] for c in pair])
    C = int(n_chunks.max())
    cap = max(c.event.shape[1] for c in pair)
    S = max(c.segs.shape[1] for c in pair)
    R = max(n_a, n_b)
    out = []
    for c, n in zip(pair, (n_a, n_b)):
        ci, pi, si = c.event.shape[0], c.event.shape[1], c.segs.shape[1]
        event = np.full((C, cap, width), seg_a.size, np.int32)
        event[:ci, :pi] = c.event
        local = np.full((C, cap), S - 1, np.int32)
        local[:ci, :pi] = c.local
        local[:ci, pi:] = np.maximum(c.local[:, -1:], 0)  # padding pieces: still sorted
        segs = np.full((C, S), R, np.int32)
        segs[:ci, :si] = np.where(c.segs == n, R, c.segs)
        where = np.full(R, C * S, np.int32)
        where[:n] = c.where // si * S + c.where % si
        out.append(Chunks(event, local, segs, where))
    return Chunks(*(np.stack(a) for a in zip(*out))), n_chunks


def ridge_solve(lay: Layout, X: jax.Array, y: jax.Array, lam: jax.Array, n_seg: int,
                chunk: int, scatter: tuple[tuple[str, ...], int] | None = None) -> jax.Array:
    """For every segment s: solve (sum_{j in s} x_j x_j^T + lam n_s I) w_s = sum_{j in s} x_j y_j.

    X (nnz, d) and y (nnz,) are per-rating features and targets. Segments without ratings get 0.
    ``scatter = (axes, p)`` (inside a shard_map body whose events are split over ``axes``, p
    shards): the shards' partial normal equations (G, b) are added up by a reduce-scatter over
    blocks of segments, each shard solves its block, and an all-gather of the (n_seg, d)
    solutions gives every shard all of them: half the bytes of an all-reduce of G, and 1/p of
    the solves. ``lay.counts`` must then be the global counts.
    """
    d = X.shape[1]
    Xz = jnp.concatenate([X, jnp.zeros((1, d), X.dtype)])  # row nnz: the padding slot
    yz = jnp.concatenate([y, jnp.zeros((1,), y.dtype)])
    n_chunks = lay.idx.shape[0] // chunk

    def body(acc, c):
        G, b = acc
        idx = lax.dynamic_slice_in_dim(lay.idx, c * chunk, chunk)
        own = lax.dynamic_slice_in_dim(lay.owner, c * chunk, chunk)
        Xp = Xz[idx]                                   # (chunk, width, d)
        Gp = jnp.einsum("pla,plb->pab", Xp, Xp)        # partial Gram matrices, batched GEMM
        bp = jnp.einsum("pla,pl->pa", Xp, yz[idx])
        G = G.at[own].add(Gp, mode="drop", indices_are_sorted=True)
        b = b.at[own].add(bp, mode="drop", indices_are_sorted=True)
        return (G, b), None

    init = (jnp.zeros((n_seg, d, d), X.dtype), jnp.zeros((n_seg, d), X.dtype))
    (G, b), _ = lax.scan(body, init, jnp.arange(n_chunks))
    n_s = lay.counts.astype(X.dtype)
    if scatter is None:
        return _solve_normal(G, b, n_s, lam)
    axes, p = scatter
    pad = -n_seg % p  # whole blocks: the padding segments have G = 0, b = 0, n_s = 0: w = 0
    G, b, n_s = (jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])
                 for a in (G, b, n_s))
    G, b = (lax.psum_scatter(a, axes, scatter_dimension=0, tiled=True) for a in (G, b))
    n_s = lax.dynamic_slice_in_dim(n_s, lax.axis_index(axes) * G.shape[0], G.shape[0])
    w = lax.all_gather(_solve_normal(G, b, n_s, lam), axes, axis=0, tiled=True)
    return w[:n_seg]


def _solve_normal(G: jax.Array, b: jax.Array, n_s: jax.Array, lam: jax.Array) -> jax.Array:
    d = G.shape[-1]
    # A segment with no ratings has G = 0 and b = 0: solve I w = 0 instead of a singular system.
    diag = jnp.where(n_s > 0, lam * n_s, jnp.ones((), G.dtype))
    A = G + diag[:, None, None] * jnp.eye(d, dtype=G.dtype)[None]
    L = jnp.linalg.cholesky(A)
    return jax.scipy.linalg.cho_solve((L, True), b[..., None])[..., 0]


def batched_cg(apply: Callable[[jax.Array], jax.Array], b: jax.Array | None, x0: jax.Array,
               steps: int, r0: jax.Array | None = None) -> jax.Array:
    """``steps`` conjugate-gradient steps on A_s x_s = b_s for every row s at once, from x0.

    ``apply(V)`` returns the rows A_s v_s. Each row's quadratic 1/2 x^T A x - b^T x never increases;
    a row whose residual is exactly 0 stays where it is (its step sizes would be 0 / 0).
    ``r0``, if given, is the initial residual b - A x0 (and ``b`` is not used): sharded callers
    complete it with one psum instead of two."""
    r = b - apply(x0) if r0 is None else r0

    def step(_, s: CGState) -> CGState:
        Ap = apply(s.p)
        pAp = jnp.sum(s.p * Ap, axis=1)
        ok = pAp > 0
        a = jnp.where(ok, s.rs / jnp.where(ok, pAp, 1), 0)
        x = s.x + a[:, None] * s.p
        r = s.r - a[:, None] * Ap
        rs_new = jnp.sum(r * r, axis=1)
        pos = s.rs > 0
        beta = jnp.where(pos, rs_new / jnp.where(pos, s.rs, 1), 0)
        return CGState(x, r, r + beta[:, None] * s.p, rs_new)

    return lax.fori_loop(0, steps, step, CGState(x0, r, r, jnp.sum(r * r, axis=1))).x


def ridge_cg(lay: Layout, X: jax.Array, y: jax.Array, lam: jax.Array, n_seg: int,
             w0: jax.Array, cg_steps: int, reduce: Callable | None = None) -> jax.Array:
    """Like :func:`ridge_solve`, by ``cg_steps`` CG steps from w0: each product with the
    systems costs two batched contractions over the pieces, O(nnz d), no Gram matrix.
    ``reduce`` (a psum) adds up every shard's part of each product and of the right-hand side."""
    d = X.shape[1]
    Xp = jnp.concatenate([X, jnp.zeros((1, d), X.dtype)])[lay.idx]   # (pieces, width, d)
    yp = jnp.concatenate([y, jnp.zeros((1,), y.dtype)])[lay.idx]
    owner = jnp.minimum(lay.owner, n_seg - 1)  # unused pieces hold zeros only
    n_s = lay.counts.astype(X.dtype)
    diag = jnp.where(n_s > 0, lam * n_s, jnp.ones((), X.dtype))  # no ratings: I w = 0

    def seg(V):
        out = jax.ops.segment_sum(V, lay.owner, num_segments=n_seg, indices_are_sorted=True)
        return out if reduce is None else reduce(out)

    def apply(V):
        t = jnp.einsum("pld,pd->pl", Xp, V[owner])
        return diag[:, None] * V + seg(jnp.einsum("pl,pld->pd", t, Xp))

    if reduce is None:
        b = seg(jnp.einsum("pl,pld->pd", yp, Xp))
        return batched_cg(apply, b, w0, cg_steps)
    # Sharded: b and the event part of A w0 are both sums over the shards' events, so the
    # initial residual b - A w0 takes one psum.
    t = jnp.einsum("pld,pd->pl", Xp, w0[owner])
    r0 = seg(jnp.einsum("pl,pld->pd", yp - t, Xp)) - diag[:, None] * w0
    return batched_cg(apply, None, w0, cg_steps, r0=r0)


def als_half(lay: Layout, mu: jax.Array, own_bias: jax.Array, own_F: jax.Array,
             other_bias: jax.Array, other_F: jax.Array, other_idx: jax.Array, values: jax.Array,
             lam: jax.Array, n_own: int, chunk: int, cg_steps: int | None, biased: bool = True,
             weights: jax.Array | None = None,
             scatter: tuple[tuple[str, ...], int] | None = None
             ) -> tuple[jax.Array, jax.Array]:
    """One half-step of biased ALS: the other side fixed, every own (bias, factors) row refitted.

    Per-rating features are x = (1, f_other) and targets r - mu - b_other. Unbiased: the constant
    feature is 0, so the ridge solution keeps the bias at exactly 0. Sharded (see
    :func:`group_by_block`): ``weights`` (nnz,) zeroes the padding events' features and targets;
    ``scatter = (axes, p)`` adds up the shards' normal equations (:func:`ridge_solve`) or CG
    products (a psum over ``axes``); ``lay.counts`` must then be global."""
    one = jnp.full((other_idx.shape[0], 1), 1.0 if biased else 0.0, other_F.dtype)
    X = jnp.concatenate([one, other_F[other_idx]], 1)
    y = values - mu - other_bias[other_idx]
    if weights is not None:
        X, y = X * weights[:, None], y * weights
    if cg_steps is None:
        w = ridge_solve(lay, X, y, lam, n_own, chunk, scatter)
    else:
        w0 = jnp.concatenate([own_bias[:, None], own_F], 1)
        reduce = None if scatter is None else partial(lax.psum, axis_name=scatter[0])
        w = ridge_cg(lay, X, y, lam, n_own, w0, cg_steps, reduce)
    return w[:, 0], w[:, 1:]


# ------------------------------------------------------------------------------------------------
# Ratings sharded along the event axis: grouped by the user block that owns them


class Events(NamedTuple):
    """Events grouped by user block for a sharded ALS kernel: shard d of each (p * c,) array
    holds the c events of users [d m/p, (d + 1) m/p), padded with zero-weight events."""

    rows: jax.Array     # (p * c,) int32, the user index within its block
    cols: jax.Array     # (p * c,) int32
    values: jax.Array   # (p * c,) float
    weights: jax.Array  # (p * c,) 1 for an event, 0 for padding
    mesh: Any           # the events' mesh
    axes: tuple         # mesh axes the events (and the user factors) are split over
    size: int           # p, the number of user blocks


def group_by_block(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, m: int, p: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Host side: the events ordered by user block (users [d m/p, (d + 1) m/p) form block d),
    each block padded to the largest block's count c with zero-weight events (user 0 of the
    block, item 0, value 0). Returns (local rows, cols, values, weights, each (p * c,), and
    whether that is the input unchanged, i.e. it was grouped and even already)."""
    m_loc = m // p
    block = rows // m_loc
    counts = np.bincount(block, minlength=p)
    c = max(int(counts.max()), 1)
    nnz = rows.shape[0]
    if c * p == nnz and np.all(block == np.repeat(np.arange(p), c)):
        return (rows - block * m_loc).astype(np.int32), cols, values, np.ones_like(values), True
    order = np.argsort(block, kind="stable")
    b = block[order]
    slot = b * c + np.arange(nnz) - (np.cumsum(counts) - counts)[b]
    out_r = np.zeros(p * c, np.int32)
    out_c = np.zeros(p * c, np.int32)
    out_v = np.zeros(p * c, values.dtype)
    out_w = np.zeros(p * c, values.dtype)
    out_r[slot] = rows[order] - b * m_loc
    out_c[slot] = cols[order]
    out_v[slot] = values[order]
    out_w[slot] = 1
    return out_r, out_c, out_v, out_w, False


def _event_layout(fn: str, name: str, x: Any) -> Any:
    """``_sharding.layout_of(...)[0]``; for a tracer whose type holds an AbstractMesh (an outer
    jit, explicit axes), read without the platform check, which needs concrete devices."""
    try:
        return _sharding.layout_of(fn, name, x)[0]
    except ValueError:
        if not isinstance(x, jax.core.Tracer):
            raise
    sharding = _sharding._sharding_of(x)
    entry = sharding.spec[0] if len(sharding.spec) else None
    names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    axes = tuple(a for a in names if sharding.mesh.shape[a] > 1)
    return _sharding.Layout(sharding.mesh, axes, 0) if axes else None


def unsplit(x: Any) -> Any:
    """x with no dimension split: replicated on its mesh (or on the one device of a one-device
    mesh); x itself when it is not sharded."""
    sharding = _sharding._sharding_of(x)
    if not isinstance(sharding, NamedSharding) or all(e is None for e in sharding.spec):
        return x
    if isinstance(x, jax.core.Tracer):
        return _sharding.place(x, sharding.mesh, P())
    if sharding.mesh.size == 1:  # as a single-device array: the same compiled kernel
        return jax.device_put(x, jax.sharding.SingleDeviceSharding(sharding.mesh.devices.flat[0]))
    return jax.device_put(x, NamedSharding(sharding.mesh, P()))


def event_sharding(fn: str, rows: Any, cols: Any, values: Any, values_name: str = "values"):
    """How an ALS solver takes its events, read before they are validated:
    ``(rows, cols, values, layout)``.

    ``layout`` is None when no event array is split: the arrays go to today's single-device
    kernels (unchanged, or on one device when their mesh has one). Under an outer ``jit``
    (traced events) they cannot be grouped on the host: they are replicated, with a
    UserWarning, and ``layout`` is None too. Otherwise ``layout`` says where the events (and the
    user factors) are split, and events with ``rows == cols == -1`` are padding, dropped here on
    the host: a log whose length does not divide into the shards is padded that way."""
    names = (values_name, "rows", "cols")
    arrays = (values, rows, cols)
    found = [(name, _event_layout(fn, name, a)) for name, a in zip(names, arrays)]
    split = [(name, lay) for name, lay in found if lay is not None]
    if not split:
        # Split over mesh axes of size 1 only (a one-device mesh): its type still says "split",
        # which the single-device kernels' sorts reject under explicit axes; drop it.
        return (*(unsplit(a) for a in (rows, cols, values)), None)
    name, lay = split[0]
    others = [nm for nm, ly in split[1:] if (ly.mesh, ly.axes) != (lay.mesh, lay.axes)]
    if others:
        warnings.warn(
            f"{fn}: `{name}` and `{'`, `'.join(others)}` are split differently; {fn} follows "
            f"`{name}` ({lay.spec(1)}) and groups every event by user block, so the others' "
            f"sharding only changes what is moved. Split `rows`, `cols` and `{values_name}` "
            f"alike.", UserWarning, stacklevel=3)
    if any(isinstance(a, jax.core.Tracer) for a in arrays):
        nbytes = sum(int(np.prod(np.shape(a))) * jnp.dtype(a.dtype).itemsize for a in arrays)
        warnings.warn(
            f"{fn}: `{name}` is sharded ({lay.spec(1)}) but traced (under jit, grad or vmap): "
            f"the events cannot be grouped by user block on the host, so all {nbytes:,} bytes "
            f"of events are replicated and every device runs the whole fit. Call {fn} outside "
            f"jit to split the work.", UserWarning, stacklevel=3)
        return (*(_sharding.place(a, lay.mesh, P()) for a in (rows, cols, values)), None)
    for nm, a in zip(names, arrays):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            raise ValueError(f"{fn}: `{nm}` spans several processes; sharded ratings are grouped "
                             f"by user block on the host, which needs every event in one "
                             f"process: multi-process event logs are not supported yet.")
    r, c = np.asarray(rows), np.asarray(cols)
    pad = (r == -1) & (c == -1)
    if pad.any():
        keep = ~pad
        return r[keep], c[keep], np.asarray(values)[keep], lay
    return rows, cols, values, lay


def shard_events(fn: str, rows: Any, cols: Any, values: Any, m: int, layout: Any,
                 values_name: str = "values") -> Events | None:
    """The :class:`Events` of validated events split as ``layout`` (from
    :func:`event_sharding`; None gives None), grouped by user block on the host. The user
    factors come back split like the events, so m must be divisible by the number of shards
    (ValueError otherwise)."""
    if layout is None:
        return None
    lay, p = layout, layout.size
    if m % p:
        raise ValueError(
            f"{fn}: the events are split over {p} shards ({lay.spec(1)}) and the user factors "
            f"come back split the same way by user blocks, but m = {m} users do not divide into "
            f"{p} blocks. Give shape=({-(-m // p) * p}, n) (users without ratings get zero "
            f"factors) or use a mesh axis whose size divides {m}.")
    r, c, v, w, same = group_by_block(np.asarray(rows), np.asarray(cols), np.asarray(values),
                                      m, p)
    spec = NamedSharding(lay.mesh, P(lay.axes))
    names = (values_name, "rows", "cols")
    if same and all(_event_layout(fn, nm, a) == lay for nm, a in zip(names, (values, rows, cols))):
        c, v = cols, values
    else:
        c, v = jax.device_put(c, spec), jax.device_put(v, spec)
    return Events(jax.device_put(r, spec), c, v, jax.device_put(w, spec), lay.mesh, lay.axes, p)
