"""Embeddings from implicit feedback: weighted ALS of Hu, Koren & Volinsky (2008).

Counts (plays, clicks, purchases) say how confident we are that a user likes an item, not how much:
every user-item pair gets a preference ``p_ui = 1[count > 0]`` and a confidence
``c_ui = 1 + alpha * count``, and user and item embeddings are fitted to all m x n preferences,
weighted by confidence. The unobserved pairs are handled in closed form (through ``Y^T Y``), so the
m x n matrix is never formed.

Scaling out: counts sharded along the event axis over a mesh give user factors split by user
blocks and replicated item factors; only ``X^T X`` and the item side's CG products (n x k) cross
devices (see :func:`implicit_als`, "Sharding").
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxfact import _als
from jaxfact import _checks
from jaxfact import _sharding
from jaxfact import _solver

__all__ = ["ImplicitALSResult", "implicit_als", "implicit_loss"]


class ImplicitALSResult(NamedTuple):
    """User and item embeddings whose products ``X @ Y.T`` score preferences."""

    user_factors: jax.Array  # (m, k), x_u as rows
    item_factors: jax.Array  # (n, k), y_i as rows
    n_iter: jax.Array        # () int32, ALS iterations run
    converged: jax.Array     # () bool, status == Status.CONVERGED
    history: jax.Array       # (max_iter,), L / (m n) after each iteration; NaN after n_iter
    status: jax.Array        # () int32, a jaxfact.Status


def implicit_als(rows: Any, cols: Any, counts: Any, shape: tuple[int, int], rank: int, *,
                 alpha: Any = 40.0, lam: Any = 0.01, max_iter: int = 15, key: Any = None,
                 cg_steps: int = 3, tol: Any = 0.0, init_std: Any = 0.01,
                 warm_start: Any = None, checks: bool = False) -> ImplicitALSResult:
    """Implicit-feedback matrix factorization by alternating least squares (Hu et al. 2008).

    Minimizes over all m x n pairs

    ``L = sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + lam (sum_u ||x_u||^2 + sum_i ||y_i||^2)``,

    ``c_ui = 1 + alpha * count_ui`` and ``p_ui = 1[count_ui > 0]`` (their eqs. 1-3). With Y fixed,
    the exact user update (their eq. 4) is ``x_u = (Y^T C^u Y + lam I)^{-1} Y^T C^u p(u)`` with
    ``Y^T C^u Y = Y^T Y + Y^T (C^u - I) Y``, where ``C^u - I`` is non-zero only on u's observed
    items. Here each update is ``cg_steps`` conjugate-gradient steps on that system for all users
    at once, warm-started from the current x_u (Takacs, Pilaszy & Tikk 2011; the default solver
    of the ``implicit`` package): a product with the system costs one k x k GEMM with the
    precomputed ``Y^T Y + lam I`` plus O(nnz_u k). Then the same for items.

    Layout: each user's (item's) observations are grouped into padded pieces, and the rows of Y
    (X) they touch are gathered once per update. On the CPU, with concrete (not traced) events,
    the users (items) are packed on the host, once per call, into chunks of whole users (items)
    of about 4 MB of gathered rows, and all ``cg_steps`` steps of a chunk run while its rows are
    in cache, one chunk after another, as the ``implicit`` package loops over users. Otherwise
    (traced events, or an accelerator) every CG product is one pass over all the gathered rows,
    with no host step. Both give the same iterates up to rounding.

    Cost per iteration: O(nnz k cg_steps + (m + n) k^2 cg_steps) time, O((m + n) k + nnz k)
    memory; the m x n matrix is never formed. With ``cg_steps >= k`` the updates are the exact
    solves of eq. 4 (up to rounding) and L never increases.

    Args:
      rows, cols: (nnz,) integer user and item indices of the non-zero counts, each pair once.
      counts: (nnz,) non-negative float counts r_ui.
      shape: (m, n).
      rank: k in [1, min(m, n)].
      alpha: confidence slope (Hu et al. use 40); traced.
      lam: L2 penalty >= 0; traced.
      max_iter: ALS iterations (user step + item step).
      key: ``jax.random`` key for the initial factors (N(0, init_std^2)); required unless
        ``warm_start`` is given (ALS itself draws nothing).
      cg_steps: conjugate-gradient steps per update (``implicit``'s default is 3).
      tol: stop (``Status.CONVERGED``) when ``(L_prev - L) <= tol * L_prev``; 0 (default) runs
        all iterations.
      init_std: standard deviation of the initial factors.
      warm_start: start from a previous :class:`ImplicitALSResult` of the same shape and rank, or
        from its factors ``(user_factors, item_factors)``.
      checks: under an outer ``jit``, also check that ``counts`` are finite and non-negative and
        the indices in range, with ``jax.experimental.checkify`` (wrap the jitted caller in
        ``checkify.checkify``). Concrete inputs are always checked.

    Returns:
      :class:`ImplicitALSResult`; score items for user u with ``Y @ X[u]``. ``history[t]`` is L
      after iteration t + 1 divided by ``m n`` (NaN after ``n_iter``), as :func:`implicit_loss`
      returns it; ``status`` is ``Status.CONVERGED`` (the ``tol`` test held), ``MAX_ITER`` or
      ``DIVERGED`` (L not finite), and ``converged == (status == Status.CONVERGED)``.

    Example:

      >>> users = jnp.array([0, 0, 1, 2, 2, 3], jnp.int32)
      >>> items = jnp.array([0, 3, 1, 0, 2, 3], jnp.int32)
      >>> plays = jnp.array([3.0, 1.0, 5.0, 2.0, 1.0, 4.0])
      >>> res = implicit_als(users, items, plays, (4, 4), 2, key=jax.random.key(0))
      >>> scores = res.item_factors @ res.user_factors[0]       # rank items for user 0
      >>> scores.shape, res.history.shape
      ((4,), (15,))

    References:
      Y. Hu, Y. Koren, C. Volinsky. Collaborative filtering for implicit feedback datasets.
      ICDM 2008, Section 4 (eqs. 3-5).
      G. Takacs, I. Pilaszy, D. Tikk. Applications of the conjugate gradient method for implicit
      feedback collaborative filtering. RecSys 2011.

    Sharding: ``rows``, ``cols`` and ``counts`` may be split along the event axis over one or
    more mesh axes (``jax.device_put(counts, NamedSharding(mesh, P("data")))``), in any order;
    a log whose length does not divide into the shards may be padded with events
    ``rows == cols == -1``, which are dropped. The events are grouped on the host, once per
    call, by the user block that owns them (users ``[d m/p, (d + 1) m/p)`` on shard d; blocks
    with fewer events are padded with count-0 events, which weigh nothing). Each shard updates
    its users from its own events and the replicated ``Y^T Y``; the item update runs on every
    shard with ``X^T X`` and every CG product psum'd over the user blocks. ``user_factors``
    come back split by user blocks, ``P(axes, None)``; ``item_factors`` and the rest are
    replicated. Per iteration this moves a (k, k) psum, ``cg_steps + 1`` psums of (n, k) and
    two scalars; nothing of the users' size. ``m`` must be divisible by the number of shards
    (ValueError otherwise); traced sharded events (under an outer ``jit``) cannot be grouped on
    the host: they are replicated, with a UserWarning, and the single-device kernel runs on
    every device. Unsharded input runs as before.

    Deviations: the paper solves eq. 4 exactly (O(k^3) per user); conjugate gradient with a few
    warm-started steps is the usual large-scale substitute and converges to the same fixed points.
    """
    fn = "implicit_als"
    rows, cols, counts, split = _als.event_sharding(fn, rows, cols, counts, "counts")
    rows, cols, counts, (m, n) = _checks.check_observed(fn, rows, cols, counts, shape,
                                                        values_name="counts", checks=checks)
    _checks.check_nonnegative(fn, "counts", counts, checks)
    rank = _checks.check_rank(fn, rank, (m, n))
    events = _als.shard_events(fn, rows, cols, counts, m, split, "counts")
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    cg_steps = _checks.check_int(fn, "cg_steps", cg_steps, low=1)
    alpha = _checks.check_real(fn, "alpha", alpha, low=0.0)
    lam = _checks.check_real(fn, "lam", lam, low=0.0)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    init_std = _checks.check_real(fn, "init_std", init_std, low=0.0, low_open=True)
    dtype = counts.dtype
    if warm_start is None:
        key = _checks.check_key(fn, key, why="it draws the initial factors")
        start = None
    else:
        start = _warm_start(fn, warm_start, m, n, rank, dtype, checks)
        key = None
    hyper = tuple(jnp.asarray(h, dtype) for h in (alpha, lam, tol, init_std))
    if events is not None:
        if start is not None:
            user, rep = (NamedSharding(events.mesh, s) for s in (P(events.axes), P()))
            start = _Factors(*jax.device_put(start, _Factors(user, rep)))
        # Padding events have count 0: confidence 1 and preference 0, as if unobserved.
        return _implicit_als_sharded(events.rows, events.cols, events.values, hyper, key, start,
                                     mesh=events.mesh, axes=events.axes, shape=(m, n),
                                     rank=rank, max_iter=max_iter, cg_steps=cg_steps)
    if _checks.is_concrete((rows, cols)) and _platform(counts) == "cpu":
        # On the CPU, whole solves chunk by chunk in cache: the chunks are laid out here, once.
        slots = max(1, _CHUNK_BYTES // (4 * rank))
        chunks, n_chunks = _als.paired_chunk_layouts(rows, m, cols, n, slots)
        return _implicit_als_chunked(rows, cols, counts, hyper, key, start, chunks, n_chunks,
                                     shape=(m, n), rank=rank, max_iter=max_iter,
                                     cg_steps=cg_steps)
    return _implicit_als(rows, cols, counts, hyper, key, start, shape=(m, n), rank=rank,
                         max_iter=max_iter, cg_steps=cg_steps)


def implicit_loss(user_factors: Any, item_factors: Any, rows: Any, cols: Any, counts: Any, *,
                  alpha: Any = 40.0, lam: Any = 0.01, checks: bool = False) -> jax.Array:
    """The loss L of :func:`implicit_als` for given factors, divided by m n.

    Uses ``sum_{u,i} (x_u . y_i)^2 = trace((X^T X)(Y^T Y))`` plus a correction on the observed
    pairs, so it costs O(nnz k + (m + n) k^2) and never forms X Y^T. ``checks`` stages the value
    checks under an outer ``jit``, as in :func:`implicit_als`.

    Example:

      >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> Y = jnp.array([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
      >>> users, items = jnp.array([0, 1], jnp.int32), jnp.array([0, 2], jnp.int32)
      >>> plays = jnp.array([1.0, 2.0])
      >>> print(round(float(implicit_loss(X, Y, users, items, plays, alpha=1.0, lam=0.0)), 4))
      0.5833
    """
    fn = "implicit_loss"
    X, Y = _checks.check_user_item_factors(fn, user_factors, item_factors, checks=checks)
    rows, cols, counts, _ = _checks.check_observed(fn, rows, cols, counts, (X.shape[0], Y.shape[0]),
                                                   values_name="counts", checks=checks)
    _checks.check_nonnegative(fn, "counts", counts, checks)
    return _loss(X, Y, rows, cols, counts.astype(X.dtype), jnp.asarray(alpha, X.dtype),
                 jnp.asarray(lam, X.dtype))


# ------------------------------------------------------------------------------------------------
# Validation helpers


def _warm_start(fn, warm_start, m, n, rank, dtype, checks):
    """A warm start (an ImplicitALSResult or its two factor arrays), validated, as _Factors."""
    return _Factors(*_checks.check_warm_start(
        fn, warm_start, ("user_factors", "item_factors"), ((m, rank), (n, rank)),
        "an ImplicitALSResult", dtype, checks))


# ------------------------------------------------------------------------------------------------
# Kernels (assume valid input)


class _Factors(NamedTuple):
    """The ALS iterate."""

    user_factors: jax.Array  # (m, k)
    item_factors: jax.Array  # (n, k)


@jax.jit
def _loss(X, Y, rows, cols, counts, alpha, lam):
    s = jnp.sum(X[rows] * Y[cols], axis=-1)
    c = 1 + alpha * counts
    p = (counts > 0).astype(X.dtype)
    # All pairs as if unobserved (p = 0, c = 1), then the observed pairs corrected.
    total = jnp.sum((X.T @ X) * (Y.T @ Y))
    total = total + jnp.sum(c * (p - s) ** 2 - s**2)
    total = total + lam * (jnp.sum(X**2) + jnp.sum(Y**2))
    return total / (float(X.shape[0]) * float(Y.shape[0]))


def _draw_start(key, m, n, rank, init_std, dtype):
    """The initial factors: N(0, init_std^2) rows of X from ``split(key)[0]`` and of Y from
    ``split(key)[1]``, drawn as one (2, max(m, n), rank) batch (one random-bits program to
    compile instead of two) and cut: with JAX's default partitionable threefry the same numbers
    as ``normal(kx, (m, rank))`` and ``normal(ky, (n, rank))``, which the sharded kernel draws
    (split by the mesh, without a collective)."""
    both = jax.vmap(lambda k: jax.random.normal(k, (max(m, n), rank), dtype))(
        jax.random.split(key))
    return _Factors(init_std * both[0, :m], init_std * both[1, :n])


def _start_loss(start, rows, cols, counts, alpha, lam, tol):
    """The loss at the start, which only the ``tol`` test reads (after the first iteration): not
    computed when ``tol == 0`` (a pass over the events as long as an iteration's gathers)."""
    return jax.lax.cond(tol > 0, lambda: _loss(*start, rows, cols, counts, alpha, lam),
                        lambda: jnp.zeros((), counts.dtype))


def _cg_update(F, G, lay, other, conf_m1, pref_c, lam, cg_steps, gram=None, reduce=None):
    """cg_steps CG steps on (G^T G + lam I + G^T (C - I) G) f = G^T C p for every row of F at
    once, warm-started at F.

    The observations of each row are laid out in padded pieces (``lay``, see
    :func:`jaxfact._als.layout`): the rows of G they touch are gathered once, and every
    product with the system is two batched contractions over the pieces plus a sorted segment sum
    over pieces, instead of a gather and a scatter of nnz rows. ``other``, ``conf_m1`` and
    ``pref_c`` are per observation, padded with one trailing entry for empty slots (confidence 0).

    Returns the new F and ``sum_obs [c (p - s)^2 - s^2]`` at the new F (s = f . g), the observed
    part of the loss. Sharded (inside a shard_map body, G row-split and F replicated): ``gram``
    is the psum'd ``G^T G`` and ``reduce`` (a psum) adds up every shard's part of each product
    and of the right-hand side; the observed part returned is this shard's.
    """
    n_own, k = F.shape
    GtG = (G.T @ G if gram is None else gram) + lam * jnp.eye(k, dtype=F.dtype)
    Gp = G[other[lay.idx]]                     # (pieces, width, k), gathered once per update
    cm1 = conf_m1[lay.idx]                     # (pieces, width), 0 in empty slots
    pc = pref_c[lay.idx]
    owner = jnp.minimum(lay.owner, n_own - 1)  # unused pieces: any row, all their weights are 0

    def seg(V):
        # Unused pieces carry owner == n_own and are dropped by segment_sum.
        out = jax.ops.segment_sum(V, lay.owner, num_segments=n_own, indices_are_sorted=True)
        return out if reduce is None else reduce(out)

    def dots(V):
        return jnp.einsum("plk,pk->pl", Gp, V[owner])

    def apply(V):
        return V @ GtG + seg(jnp.einsum("pl,plk->pk", cm1 * dots(V), Gp))

    if reduce is None:
        b = seg(jnp.einsum("pl,plk->pk", pc, Gp))    # G^T C^u p(u)
        F = _als.batched_cg(apply, b, F, cg_steps)
    else:  # the initial residual b - A F in one psum: both are sums over the shards' events
        r0 = seg(jnp.einsum("pl,plk->pk", pc - cm1 * dots(F), Gp)) - F @ GtG
        F = _als.batched_cg(apply, None, F, cg_steps, r0=r0)
    s_obs = dots(F)
    # c (p - s)^2 - s^2 with c = 1 + cm1 and p = 1[count > 0] (pc = c p); 0 in empty slots.
    valid = lay.idx < other.shape[0] - 1
    c = jnp.where(valid, 1 + cm1, 0)
    pref = jnp.where(pc > 0, 1, 0).astype(F.dtype)
    observed = jnp.sum(c * (pref - s_obs) ** 2 - jnp.where(valid, s_obs**2, 0))
    return F, observed


_CHUNK_BYTES = 2**22  # the other side's rows gathered for one chunk: about 4 MB, in cache


def _platform(x):
    """The platform of the device(s) x is on (the default backend's for a NumPy array)."""
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        return next(iter(x.devices())).platform
    return jax.default_backend()


def _half_step_chunked(P, h, slots, chunks, n_chunks, lam, cg_steps):
    """:func:`_cg_update` for side h of the stacked factors P (2, R, k) (users h = 0, items
    h = 1, each padded with zero rows to R), the other side fixed, chunk by chunk (``chunks``,
    stacked :func:`jaxfact._als.paired_chunk_layouts`; ``slots`` = (other, cm1, pc) per slot of
    their pieces, stacked too). Each chunk holds whole segments, so all ``cg_steps`` CG steps of
    its rows run on the one gather of the other side's rows at the chunk's slots (about 4 MB: in
    cache) instead of ``2 cg_steps + 2`` passes over all nnz gathered rows. One program serves
    both sides (h is traced). Returns P with side h updated and, for h = 1, the observed part of
    the loss at the new factors (else 0)."""
    _, R, k = P.shape
    F, G = P[h], P[1 - h]
    other, cm1, pc = (a[h] for a in slots)
    local, segs, where = chunks.local[h], chunks.segs[h], chunks.where[h]
    per_chunk = segs.shape[1]
    GtG = G.T @ G + lam * jnp.eye(k, dtype=F.dtype)

    def chunk(c, carry):
        total, out = carry
        o, cm, p, lo, sg = (jax.lax.dynamic_index_in_dim(a, c, keepdims=False)
                            for a in (other, cm1, pc, local, segs))
        Gp = G[o]                            # (pieces, width, k), gathered once
        F0 = F[jnp.minimum(sg, R - 1)]       # unused rows: any row, never read back

        def seg(V):
            return jax.ops.segment_sum(V, lo, num_segments=per_chunk, indices_are_sorted=True)

        def dots(V):
            return jnp.einsum("plk,pk->pl", Gp, V[lo])

        def apply(V):
            return V @ GtG + seg(jnp.einsum("pl,plk->pk", cm * dots(V), Gp))

        # b - A F0 in one pass over the slots: b = G^T C p on the observed pairs.
        r0 = seg(jnp.einsum("pl,plk->pk", p - cm * dots(F0), Gp)) - F0 @ GtG
        x = _als.batched_cg(apply, None, F0, cg_steps, r0=r0)

        def observed():  # c (p - s)^2 - s^2, with c = 1 + cm1, p = 1[pc > 0]: 0 in empty slots
            s = dots(x)
            return jnp.sum((1 + cm) * (jnp.where(p > 0, 1, 0) - s) ** 2 - s**2)

        total = total + jax.lax.cond(h == 1, observed, lambda: jnp.zeros((), F.dtype))
        return total, jax.lax.dynamic_update_slice_in_dim(out, x, c * per_chunk, 0)

    out = jnp.zeros((other.shape[0] * per_chunk + 1, k), F.dtype)  # + the padding rows' zero row
    total, out = jax.lax.fori_loop(0, n_chunks[h], chunk, (jnp.zeros((), F.dtype), out))
    return P.at[h].set(out[where]), total


@partial(jax.jit, static_argnames=("shape", "rank", "max_iter", "cg_steps"))
def _implicit_als_chunked(rows, cols, counts, hyper, key, start, chunks, n_chunks, *, shape,
                          rank, max_iter, cg_steps):
    """:func:`_implicit_als` with the CG solves run chunk by chunk (:func:`_half_step_chunked`,
    one program for both sides); the chunks are laid out on the host by
    :func:`jaxfact._als.paired_chunk_layouts`."""
    m, n = shape
    R = max(m, n)
    alpha, lam, tol, init_std = hyper
    dtype = counts.dtype
    if start is None:  # drawn here, not eagerly: the same numbers as under an outer jit
        start = _draw_start(key, m, n, rank, init_std, dtype)
    pad = lambda a: jnp.concatenate([a, jnp.zeros((1,), a.dtype)])
    c = pad(counts)[chunks.event]  # per slot, once per fit; empty slots weigh 0
    other = jnp.stack([pad(cols)[chunks.event[0]], pad(rows)[chunks.event[1]]])
    slots = (other, alpha * c, jnp.where(c > 0, 1 + alpha * c, 0))

    def stacked(f: _Factors):
        return jnp.stack([jnp.pad(x, ((0, R - x.shape[0]), (0, 0))) for x in f])

    def update(f: _Factors, _):
        def half(h, carry):
            P, total = carry
            P, obs = _half_step_chunked(P, h, slots, chunks, n_chunks, lam, cg_steps)
            return P, total + obs

        P, observed = jax.lax.fori_loop(0, 2, half, (stacked(f), jnp.zeros((), dtype)))
        X, Y = P[0, :m], P[1, :n]
        L = _loss_from(X, Y, observed, lam)
        return _Factors(X, Y), L, None

    return _run(update, start, rows, cols, counts, alpha, lam, tol, max_iter, dtype)


@partial(jax.jit, static_argnames=("shape", "rank", "max_iter", "cg_steps", "mesh", "axes"))
def _implicit_als_sharded(rows, cols, counts, hyper, key, start, *, mesh, axes, shape, rank,
                          max_iter, cg_steps):
    """:func:`_implicit_als` on events grouped by user block (:func:`_als.group_by_block`,
    padding events have count 0, which is no event at all): each shard updates its users from
    its own events and the replicated Y; the item update runs on every shard with ``X^T X`` and
    each CG product psum'd over the user blocks."""
    m, n = shape
    m_loc = m // int(np.prod([mesh.shape[a] for a in axes]))
    psum = partial(jax.lax.psum, axis_name=axes)
    dtype = counts.dtype
    if start is None:  # the same numbers as _implicit_als draws, the users' split by block
        kx, ky = jax.random.split(key)  # (split by the mesh: no collective; same numbers)
        init_std = hyper[3]
        start = _Factors(init_std * jax.random.normal(kx, (m, rank), dtype),
                         init_std * jax.random.normal(ky, (n, rank), dtype))
        start = _Factors(_sharding.place(start.user_factors, mesh, P(axes, None)),
                         _sharding.place(start.item_factors, mesh, P()))

    def body(rows, cols, counts, hyper, start):
        alpha, lam, tol, _ = hyper
        user_layout = _als.layout(rows, m_loc, 1)
        item_layout = _als.layout(cols, n, 1)
        pad = lambda a: jnp.concatenate([a, jnp.zeros((1,), a.dtype)])
        conf_m1 = pad(alpha * counts)
        pref_c = pad(jnp.where(counts > 0, 1 + alpha * counts, 0))
        rows_p, cols_p = pad(rows), pad(cols)

        def loss(X, Y, XtX, observed):
            # observed and sum(X^2) in one psum of two scalars
            obs, x2 = psum(jnp.stack([observed, jnp.sum(X**2)]))
            return (jnp.sum(XtX * (Y.T @ Y)) + obs + lam * (x2 + jnp.sum(Y**2))) / (
                float(m) * float(n))

        def update(f: _Factors, _):
            X, _ = _cg_update(f.user_factors, f.item_factors, user_layout, cols_p, conf_m1,
                              pref_c, lam, cg_steps)
            XtX = psum(X.T @ X)
            Y, observed = _cg_update(f.item_factors, X, item_layout, rows_p, conf_m1, pref_c, lam,
                                     cg_steps, gram=XtX, reduce=psum)
            return _Factors(X, Y), loss(X, Y, XtX, observed), None

        X0, Y0 = start
        s = jnp.sum(X0[rows] * Y0[cols], axis=-1)
        c = 1 + alpha * counts
        p = (counts > 0).astype(dtype)
        L0 = loss(X0, Y0, psum(X0.T @ X0), jnp.sum(c * (p - s) ** 2 - s**2))

        def stop(state):
            return _solver.status_of(_solver.relative_decrease_below(state, tol, L0))

        state = _solver.run(update, stop, _solver.start(start, max_iter=max_iter, dtype=dtype))
        f = state.iterate
        return ImplicitALSResult(f.user_factors, f.item_factors, state.n_iter,
                                 state.status == _solver.Status.CONVERGED, state.history,
                                 state.status)

    ev, rep = P(axes), P()
    out = ImplicitALSResult(P(axes, None), rep, rep, rep, rep, rep)
    # check_vma=False: the shared CG and layout kernels start from replicated zeros whose carries
    # become device-varying; every psum here is of a device-varying partial sum.
    return jax.shard_map(body, mesh=mesh, in_specs=(ev, ev, ev, rep, _Factors(P(axes, None), rep)),
                         out_specs=out, check_vma=False)(rows, cols, counts, hyper, start)


@partial(jax.jit, static_argnames=("shape", "rank", "max_iter", "cg_steps"))
def _implicit_als(rows, cols, counts, hyper, key, start, *, shape, rank, max_iter, cg_steps):
    m, n = shape
    alpha, lam, tol, init_std = hyper
    dtype = counts.dtype
    if start is None:  # drawn here, not eagerly: the same numbers as under an outer jit
        start = _draw_start(key, m, n, rank, init_std, dtype)
    # The observations grouped by user and by item in padded pieces; index nnz is an empty slot.
    user_layout = _als.layout(rows, m, 1)
    item_layout = _als.layout(cols, n, 1)
    pad = lambda a: jnp.concatenate([a, jnp.zeros((1,), a.dtype)])
    conf_m1 = pad(alpha * counts)                                 # c_ui - 1 on observed pairs
    pref_c = pad(jnp.where(counts > 0, 1 + alpha * counts, 0))   # c_ui p_ui
    rows_p, cols_p = pad(rows), pad(cols)

    def update(f: _Factors, _):
        X, _ = _cg_update(f.user_factors, f.item_factors, user_layout, cols_p, conf_m1, pref_c,
                          lam, cg_steps)
        Y, observed = _cg_update(f.item_factors, X, item_layout, rows_p, conf_m1, pref_c, lam,
                                 cg_steps)
        L = _loss_from(X, Y, observed, lam)
        return _Factors(X, Y), L, None

    return _run(update, start, rows, cols, counts, alpha, lam, tol, max_iter, dtype)


def _loss_from(X, Y, observed, lam):
    """The loss / (m n) from the factors and the observed entries' correction term."""
    m, n = X.shape[0], Y.shape[0]
    return (jnp.sum((X.T @ X) * (Y.T @ Y)) + observed
            + lam * (jnp.sum(X**2) + jnp.sum(Y**2))) / (float(m) * float(n))


def _run(update, start, rows, cols, counts, alpha, lam, tol, max_iter, dtype):
    """The shared driver of both kernels: ``update`` until the relative decrease is below tol."""
    L0 = _start_loss(start, rows, cols, counts, alpha, lam, tol)

    def stop(state):
        return _solver.status_of(_solver.relative_decrease_below(state, tol, L0))

    state = _solver.run(update, stop, _solver.start(start, max_iter=max_iter, dtype=dtype))
    f = state.iterate
    return ImplicitALSResult(f.user_factors, f.item_factors, state.n_iter,
                             state.status == _solver.Status.CONVERGED, state.history, state.status)
