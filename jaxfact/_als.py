"""Alternating-least-squares kernels shared by :mod:`jaxfact.explicit_feedback` and
:mod:`jaxfact.implicit_feedback` (private).

Observations are grouped by segment (a user or an item) into padded pieces of a fixed width
(:func:`layout`), so that per-segment sums of outer products become batched dense products; every
segment's regularized least-squares problem is then solved at once, exactly (:func:`ridge_solve`,
batched Cholesky) or by a few conjugate-gradient steps (:func:`ridge_cg`, :func:`batched_cg`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

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


def ridge_solve(lay: Layout, X: jax.Array, y: jax.Array, lam: jax.Array, n_seg: int,
                chunk: int) -> jax.Array:
    """For every segment s: solve (sum_{j in s} x_j x_j^T + lam n_s I) w_s = sum_{j in s} x_j y_j.

    X (nnz, d) and y (nnz,) are per-rating features and targets. Segments without ratings get 0.
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
    # A segment with no ratings has G = 0 and b = 0: solve I w = 0 instead of a singular system.
    diag = jnp.where(n_s > 0, lam * n_s, jnp.ones((), X.dtype))
    A = G + diag[:, None, None] * jnp.eye(d, dtype=X.dtype)[None]
    L = jnp.linalg.cholesky(A)
    return jax.scipy.linalg.cho_solve((L, True), b[..., None])[..., 0]


def batched_cg(apply: Callable[[jax.Array], jax.Array], b: jax.Array, x0: jax.Array,
               steps: int) -> jax.Array:
    """``steps`` conjugate-gradient steps on A_s x_s = b_s for every row s at once, from x0.

    ``apply(V)`` returns the rows A_s v_s. Each row's quadratic 1/2 x^T A x - b^T x never increases;
    a row whose residual is exactly 0 stays where it is (its step sizes would be 0 / 0)."""
    r = b - apply(x0)

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
             w0: jax.Array, cg_steps: int) -> jax.Array:
    """Like :func:`ridge_solve`, by ``cg_steps`` CG steps from w0: each product with the
    systems costs two batched contractions over the pieces, O(nnz d), no Gram matrix."""
    d = X.shape[1]
    Xp = jnp.concatenate([X, jnp.zeros((1, d), X.dtype)])[lay.idx]   # (pieces, width, d)
    yp = jnp.concatenate([y, jnp.zeros((1,), y.dtype)])[lay.idx]
    owner = jnp.minimum(lay.owner, n_seg - 1)  # unused pieces hold zeros only
    n_s = lay.counts.astype(X.dtype)
    diag = jnp.where(n_s > 0, lam * n_s, jnp.ones((), X.dtype))  # no ratings: I w = 0

    def seg(V):
        return jax.ops.segment_sum(V, lay.owner, num_segments=n_seg, indices_are_sorted=True)

    def apply(V):
        t = jnp.einsum("pld,pd->pl", Xp, V[owner])
        return diag[:, None] * V + seg(jnp.einsum("pl,pld->pd", t, Xp))

    b = seg(jnp.einsum("pl,pld->pd", yp, Xp))
    return batched_cg(apply, b, w0, cg_steps)


def als_half(lay: Layout, mu: jax.Array, own_bias: jax.Array, own_F: jax.Array,
             other_bias: jax.Array, other_F: jax.Array, other_idx: jax.Array, values: jax.Array,
             lam: jax.Array, n_own: int, chunk: int, cg_steps: int | None, biased: bool = True
             ) -> tuple[jax.Array, jax.Array]:
    """One half-step of biased ALS: the other side fixed, every own (bias, factors) row refitted.

    Per-rating features are x = (1, f_other) and targets r - mu - b_other. Unbiased: the constant
    feature is 0, so the ridge solution keeps the bias at exactly 0."""
    one = jnp.full((other_idx.shape[0], 1), 1.0 if biased else 0.0, other_F.dtype)
    X = jnp.concatenate([one, other_F[other_idx]], 1)
    y = values - mu - other_bias[other_idx]
    if cg_steps is None:
        w = ridge_solve(lay, X, y, lam, n_own, chunk)
    else:
        w0 = jnp.concatenate([own_bias[:, None], own_F], 1)
        w = ridge_cg(lay, X, y, lam, n_own, w0, cg_steps)
    return w[:, 0], w[:, 1:]
