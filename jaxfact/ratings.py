"""Biased matrix factorization of explicit ratings (Koren, Bell & Volinsky 2009).

A rating matrix is known only at its observed entries ``(rows, cols, values)``; users and items get
embeddings ``p_u``, ``q_i`` and biases ``b_u``, ``b_i`` such that ``mu + b_u + b_i + p_u . q_i``
predicts the rating. Two solvers fit the same objective: alternating least squares, which solves
every user's (then every item's) regularized least-squares problem exactly and at once, and the
stochastic gradient descent of the paper, one rating at a time, with Surprise's defaults.

Implicit feedback (clicks, plays) is in :mod:`jaxfact.implicit`; held-out splits and ranking metrics
are in :mod:`jaxfact.evaluation`.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxfact import _checks
from jaxfact import _implicit_diff as _implicit

__all__ = ["BiasedMFResult", "biased_mf", "predict_ratings"]


class BiasedMFResult(NamedTuple):
    """A biased matrix factorization ``r_ui ~= mu + b_u + b_i + p_u . q_i``."""

    mu: jax.Array         # (), the global mean of the training ratings
    user_bias: jax.Array  # (m,), b_u
    item_bias: jax.Array  # (n,), b_i
    P: jax.Array          # (m, k), user factors p_u as rows
    Q: jax.Array          # (n, k), item factors q_i as rows
    n_iter: jax.Array     # () int32, ALS iterations or SGD epochs run
    converged: jax.Array  # () bool, relative decrease of the objective fell below `tol`
    history: jax.Array    # (max_iter,), objective / n_ratings after each iteration; NaN after n_iter


# ------------------------------------------------------------------------------------------------
# Public functions


def biased_mf(rows: Any, cols: Any, values: Any, shape: tuple[int, int], rank: int, *,
              lam: Any = 0.02, solver: str = "als", max_iter: int = 20, tol: Any = None,
              key: Any = None, lr: Any = 0.005, init_std: Any = 0.1,
              init: BiasedMFResult | None = None, cg_steps: int | None = None,
              biased: bool = True, diff: _implicit.ImplicitDiff | None = None
              ) -> BiasedMFResult:
    """Biased matrix factorization of a partially observed rating matrix.

    Minimizes, over the observed set K (eq. 5 of Koren et al. 2009, the penalty inside the sum),

    ``J = sum_{(u,i) in K} (r_ui - mu - b_u - b_i - p_u . q_i)^2
          + lam (b_u^2 + b_i^2 + ||p_u||^2 + ||q_i||^2)``

    with ``mu`` fixed to the mean training rating. Because the penalty sits inside the sum, user u's
    terms are weighted by its number of ratings n_u: this is exactly the objective the paper's
    SGD (and Surprise's ``SVD``) descends, and the "weighted-lambda" ALS of Zhou et al. (2008).

    * ``solver="als"``: each iteration fixes the items and solves, for every user at once, the
      (k+1)-dimensional ridge problem in ``(b_u, p_u)``:
      ``(sum_i x_i x_i^T + lam n_u I) w_u = sum_i x_i (r_ui - mu - b_i)``, ``x_i = (1, q_i)``,
      then the same for items. The Gram matrices are built by padded batched products (no loop over
      users), the systems solved by batched Cholesky. J never increases. Cost per iteration:
      O(|K| k^2 + (m + n) k^3) time, O((m + n) k^2) memory; with ``cg_steps`` a few
      conjugate-gradient steps replace the exact solves, O(|K| k) per step.
    * ``solver="sgd"``: the paper's updates, one rating at a time in a random order (reshuffled
      every epoch with ``key``), e = r_ui - r^_ui and
      ``b_u += lr (e - lam b_u)``, ``b_i += lr (e - lam b_i)``,
      ``p_u += lr (e q_i - lam p_u)``, ``q_i += lr (e p_u - lam q_i)``;
      the defaults (lr 0.005, lam 0.02, 20 epochs, factors ~ N(0, 0.1), zero biases) are
      Surprise's. Cost: O(|K| k) per epoch, sequential.

    Args:
      rows, cols: (nnz,) integer user and item indices of the observed ratings, each pair once.
      values: (nnz,) float ratings.
      shape: (m, n), the numbers of users and items.
      rank: k >= 1, the embedding dimension.
      lam: L2 penalty, > 0 for ALS, >= 0 for SGD (traced).
      solver: ``"als"`` or ``"sgd"``.
      max_iter: ALS iterations or SGD epochs (Surprise: 20).
      tol: stop when ``(J_prev - J) <= tol * J_prev``; 0 runs all ``max_iter`` iterations.
        Default 1e-4 for ALS and 0 for SGD (all epochs, as Surprise does).
      key: ``jax.random`` key for the initial factors and the SGD order (required unless ``init``
        is given with ``solver="als"``).
      lr: SGD learning rate (traced).
      init_std: standard deviation of the initial factors (traced).
      init: a previous :class:`BiasedMFResult` to start from (its biases and factors; ``mu`` is
        recomputed from ``values``).
      cg_steps: ALS only. None (default) solves each ridge problem exactly; an integer runs that
        many conjugate-gradient steps on it instead, warm-started at the current (b, p) (the
        ALS-CG of Takacs, Pilaszy & Tikk 2011): O(|K| k cg_steps + (m + n) k cg_steps) per
        iteration, no Gram matrices, J still never increases; ``cg_steps >= k + 1`` is exact.
      biased: True (default) fits ``mu + b_u + b_i + p_u . q_i``; False fits the plain
        ``p_u . q_i`` (mu, b_u, b_i held at 0), like Surprise's ``SVD(biased=False)``: the
        "basic matrix factorization model" of Koren et al., eq. (2).
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).

    Returns:
      :class:`BiasedMFResult`.

    Differentiable (reverse mode, ``solver="als"``) w.r.t. ``values`` and ``lam`` by implicit
    differentiation of the stationarity condition ``grad J = 0`` at the returned factors (CG on
    the Hessian of J, products O(|K| k) each, memory independent of ``max_iter``). J is invariant
    to rotating P and Q together, so losses of the predictions (``predict_ratings``, biases,
    ``P @ Q.T``) are well defined and raw P or Q are not. Assumes the fit converged.

    Example::

      >>> res = biased_mf(rows, cols, ratings, (n_users, n_items), 20, key=jax.random.key(0))
      >>> r_hat = predict_ratings(res, test_rows, test_cols, clip=(1, 5))
      >>> float(jnp.sqrt(jnp.mean((r_hat - test_ratings) ** 2)))  # held-out RMSE

    References:
      Y. Koren, R. Bell, C. Volinsky. Matrix factorization techniques for recommender systems.
      IEEE Computer 42(8), 2009. Eq. (5) (objective), "Learning algorithms" (SGD and ALS updates).
      N. Hug. Surprise: a Python library for recommender systems. JOSS 2020 (``SVD`` defaults).

    Deviations: ``mu`` is the training mean, not a learned parameter (as in Surprise). The ALS
    penalty is weighted by the number of ratings so that both solvers minimize the same J.
    """
    fn = "biased_mf"
    rows, cols, values, (m, n) = _checks.check_observed(fn, rows, cols, values, shape)
    solver = _checks.check_choice(fn, "solver", solver, ("als", "sgd"))
    rank = _checks.check_int(fn, "rank", rank, low=1)
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    if solver == "als":
        lam = _checks.check_real(fn, "lam", lam, low=0.0, low_open=True)
    else:
        lam = _checks.check_real(fn, "lam", lam, low=0.0)
    if tol is None:
        tol = 1e-4 if solver == "als" else 0.0
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    lr = _checks.check_real(fn, "lr", lr, low=0.0, low_open=True)
    init_std = _checks.check_real(fn, "init_std", init_std, low=0.0)
    if cg_steps is not None:
        cg_steps = _checks.check_int(fn, "cg_steps", cg_steps, low=1)
    if not isinstance(biased, bool):
        raise TypeError(f"{fn}: `biased` must be True or False; got {biased!r}")
    dtype = values.dtype
    if init is not None:
        if not isinstance(init, BiasedMFResult):
            raise TypeError(f"{fn}: `init` must be a BiasedMFResult; got {type(init).__name__}")
        want = {"user_bias": (m,), "item_bias": (n,), "P": (m, rank), "Q": (n, rank)}
        for name, shp in want.items():
            _checks.check_same_shape(fn, f"init.{name}", getattr(init, name), shp, "the model")
        start = tuple(jnp.asarray(getattr(init, f), dtype) for f in want)
    if solver == "sgd" or init is None:
        key = _checks.check_key(fn, key, why="it draws the initial factors and the SGD order")
    if init is None:
        kp, kq, key = jax.random.split(key, 3)
        start = (jnp.zeros((m,), dtype), jnp.zeros((n,), dtype),
                 init_std * jax.random.normal(kp, (m, rank), dtype),
                 init_std * jax.random.normal(kq, (n, rank), dtype))
    if not biased:
        start = (jnp.zeros((m,), dtype), jnp.zeros((n,), dtype)) + tuple(start[2:])
    diff = _implicit.check_diff(fn, diff)
    lam_in = jnp.asarray(lam, dtype)
    sg = jax.lax.stop_gradient
    hyper = tuple(sg(jnp.asarray(h, dtype)) for h in (lam, tol, lr))
    start = sg(start)
    if solver == "als":
        res = _biased_als(rows, cols, sg(values), start, hyper, shape=(m, n), max_iter=max_iter,
                          cg_steps=cg_steps, biased=biased)
        return _implicit.biased_mf(res, rows, cols, values, lam_in, (m, n), _objective, diff,
                                   biased=biased)
    return _biased_sgd(rows, cols, values, start, hyper, key, shape=(m, n), max_iter=max_iter,
                       biased=biased)


def predict_ratings(result: BiasedMFResult, rows: Any, cols: Any, *, clip: tuple[float, float] | None = None
            ) -> jax.Array:
    """Predicted ratings ``mu + b_u + b_i + p_u . q_i`` at (rows[j], cols[j]), O(len(rows) k).

    Args:
      result: a :class:`BiasedMFResult`.
      rows, cols: integer index arrays of the same shape.
      clip: ``(low, high)`` to clip predictions to a rating scale (Surprise clips to it), or None.

    Example::

      >>> predict_ratings(res, jnp.array([0, 1]), jnp.array([5, 7]), clip=(1, 5))
    """
    fn = "predict_ratings"
    if not isinstance(result, BiasedMFResult):
        raise TypeError(f"{fn}: `result` must be a BiasedMFResult; got {type(result).__name__}")
    m, n = result.P.shape[0], result.Q.shape[0]
    idx = []
    for name, a, size in (("rows", rows, m), ("cols", cols, n)):
        a = jnp.asarray(a)
        if not jnp.issubdtype(a.dtype, jnp.integer):
            raise TypeError(f"{fn}: `{name}` must hold integer indices; got dtype {a.dtype}")
        if _checks.is_concrete(a) and a.size:
            lo, hi = _checks.value_range(a)
            if lo < 0 or hi >= size:
                raise ValueError(f"{fn}: `{name}` must be in [0, {size}); got values in "
                                 f"[{lo}, {hi}]")
        idx.append(a)
    if idx[0].shape != idx[1].shape:
        raise ValueError(f"{fn}: `rows` and `cols` must have the same shape; got "
                         f"{idx[0].shape} and {idx[1].shape}")
    if clip is not None:
        if not (isinstance(clip, (tuple, list)) and len(clip) == 2 and clip[0] <= clip[1]):
            raise ValueError(f"{fn}: `clip` must be a pair (low, high) with low <= high; got {clip!r}")
    out = _predict(result, idx[0], idx[1])
    if clip is not None:
        out = jnp.clip(out, clip[0], clip[1])
    return out


# ------------------------------------------------------------------------------------------------
# Kernels (assume valid input)


@jax.jit
def _predict(result, rows, cols):
    return (result.mu + result.user_bias[rows] + result.item_bias[cols]
            + jnp.sum(result.P[rows] * result.Q[cols], axis=-1))


def _objective(mu, bu, bi, P, Q, rows, cols, values, lam):
    """J of eq. (5) divided by the number of ratings (the penalty weighted by n_u and n_i)."""
    e = values - (mu + bu[rows] + bi[cols] + jnp.sum(P[rows] * Q[cols], axis=-1))
    pen = bu[rows] ** 2 + bi[cols] ** 2 + jnp.sum(P[rows] ** 2 + Q[cols] ** 2, axis=-1)
    return jnp.mean(e**2 + lam * pen)


class _Layout(NamedTuple):
    """Ratings grouped by segment (user or item) into padded pieces of `width` slots, so that
    per-segment sums of outer products become batched dense products."""

    idx: jax.Array     # (n_pieces, width) int32, rating index per slot, nnz for an empty slot
    owner: jax.Array   # (n_pieces,) int32, the segment of each piece (n_seg for unused pieces)
    counts: jax.Array  # (n_seg,) ratings per segment


def _piece_width(nnz, n_seg):
    # About half the mean segment length, a power of two in [8, 64]: padding wastes < width slots
    # per segment, and wider pieces mean fewer partial Gram matrices to add up.
    w = 8
    while w < 64 and 2 * w <= nnz / max(n_seg, 1) / 2:
        w *= 2
    return w


def _layout(seg, n_seg, chunk):
    nnz = seg.shape[0]
    width = _piece_width(nnz, n_seg)
    n_pieces = nnz // width + n_seg + 1      # sum_s ceil(c_s / width) <= nnz / width + n_seg
    n_pieces = -(-n_pieces // chunk) * chunk  # a whole number of chunks
    order = jnp.argsort(seg, stable=True).astype(jnp.int32)
    seg_sorted = seg[order]
    counts = jnp.bincount(seg, length=n_seg)
    starts = jnp.cumsum(counts) - counts
    pos = jnp.arange(nnz, dtype=jnp.int32) - starts[seg_sorted]
    n_of = (counts + width - 1) // width
    piece_start = jnp.cumsum(n_of) - n_of
    piece = (piece_start[seg_sorted] + pos // width).astype(jnp.int32)
    idx = jnp.full((n_pieces, width), nnz, jnp.int32).at[piece, pos % width].set(order)
    owner = jnp.full((n_pieces,), n_seg, jnp.int32).at[piece].set(seg_sorted)
    return _Layout(idx, owner, counts)


def _ridge_solve(layout, X, y, lam, n_seg, chunk):
    """For every segment s: solve (sum_{j in s} x_j x_j^T + lam n_s I) w_s = sum_{j in s} x_j y_j.

    X (nnz, d) and y (nnz,) are per-rating features and targets. Segments without ratings get 0.
    """
    d = X.shape[1]
    Xz = jnp.concatenate([X, jnp.zeros((1, d), X.dtype)])  # row nnz: the padding slot
    yz = jnp.concatenate([y, jnp.zeros((1,), y.dtype)])
    n_chunks = layout.idx.shape[0] // chunk

    def body(acc, c):
        G, b = acc
        idx = lax.dynamic_slice_in_dim(layout.idx, c * chunk, chunk)
        own = lax.dynamic_slice_in_dim(layout.owner, c * chunk, chunk)
        Xp = Xz[idx]                                   # (chunk, width, d)
        Gp = jnp.einsum("pla,plb->pab", Xp, Xp)        # partial Gram matrices, batched GEMM
        bp = jnp.einsum("pla,pl->pa", Xp, yz[idx])
        G = G.at[own].add(Gp, mode="drop", indices_are_sorted=True)
        b = b.at[own].add(bp, mode="drop", indices_are_sorted=True)
        return (G, b), None

    init = (jnp.zeros((n_seg, d, d), X.dtype), jnp.zeros((n_seg, d), X.dtype))
    (G, b), _ = lax.scan(body, init, jnp.arange(n_chunks))
    n_s = layout.counts.astype(X.dtype)
    # A segment with no ratings has G = 0 and b = 0: solve I w = 0 instead of a singular system.
    diag = jnp.where(n_s > 0, lam * n_s, 1.0)
    A = G + diag[:, None, None] * jnp.eye(d, dtype=X.dtype)
    L = jnp.linalg.cholesky(A)
    return jax.scipy.linalg.cho_solve((L, True), b[..., None])[..., 0]


def _batched_cg(apply, b, x0, steps):
    """``steps`` conjugate-gradient steps on A_s x_s = b_s for every row s at once, from x0.

    ``apply(V)`` returns the rows A_s v_s. Each row's quadratic 1/2 x^T A x - b^T x never increases;
    a row whose residual is exactly 0 stays where it is (its step sizes would be 0 / 0)."""
    r = b - apply(x0)

    def step(_, state):
        x, r, p, rs = state
        Ap = apply(p)
        pAp = jnp.sum(p * Ap, axis=1)
        ok = pAp > 0
        a = jnp.where(ok, rs / jnp.where(ok, pAp, 1), 0)
        x = x + a[:, None] * p
        r = r - a[:, None] * Ap
        rs_new = jnp.sum(r * r, axis=1)
        pos = rs > 0
        beta = jnp.where(pos, rs_new / jnp.where(pos, rs, 1), 0)
        return x, r, r + beta[:, None] * p, rs_new

    return lax.fori_loop(0, steps, step, (x0, r, r, jnp.sum(r * r, axis=1)))[0]


def _ridge_cg(layout, X, y, lam, n_seg, w0, cg_steps):
    """Like :func:`_ridge_solve`, by ``cg_steps`` CG steps from w0: each product with the
    systems costs two batched contractions over the pieces, O(nnz d), no Gram matrix."""
    d = X.shape[1]
    Xp = jnp.concatenate([X, jnp.zeros((1, d), X.dtype)])[layout.idx]   # (pieces, width, d)
    yp = jnp.concatenate([y, jnp.zeros((1,), y.dtype)])[layout.idx]
    owner = jnp.minimum(layout.owner, n_seg - 1)  # unused pieces hold zeros only
    n_s = layout.counts.astype(X.dtype)
    diag = jnp.where(n_s > 0, lam * n_s, 1.0)     # no ratings: I w = 0, as in _ridge_solve

    def seg(V):
        return jax.ops.segment_sum(V, layout.owner, num_segments=n_seg, indices_are_sorted=True)

    def apply(V):
        t = jnp.einsum("pld,pd->pl", Xp, V[owner])
        return diag[:, None] * V + seg(jnp.einsum("pl,pld->pd", t, Xp))

    b = seg(jnp.einsum("pl,pld->pd", yp, Xp))
    return _batched_cg(apply, b, w0, cg_steps)


def _als_half(layout, mu, own_bias, own_F, other_bias, other_F, other_idx, values, lam, n_own,
              chunk, cg_steps, biased=True):
    # Fix the other side; per-rating features x = (1, f_other) and targets r - mu - b_other.
    # Unbiased: the constant feature is 0, so the ridge solution keeps the bias at exactly 0.
    one = jnp.full((other_idx.shape[0], 1), 1.0 if biased else 0.0, other_F.dtype)
    X = jnp.concatenate([one, other_F[other_idx]], 1)
    y = values - mu - other_bias[other_idx]
    if cg_steps is None:
        w = _ridge_solve(layout, X, y, lam, n_own, chunk)
    else:
        w0 = jnp.concatenate([own_bias[:, None], own_F], 1)
        w = _ridge_cg(layout, X, y, lam, n_own, w0, cg_steps)
    return w[:, 0], w[:, 1:]


_CHUNK = 256


@partial(jax.jit, static_argnames=("shape", "max_iter", "cg_steps", "biased"))
def _biased_als(rows, cols, values, start, hyper, *, shape, max_iter, cg_steps, biased=True):
    m, n = shape
    lam, tol, _ = hyper
    mu = jnp.mean(values) if biased else jnp.zeros((), values.dtype)
    user_layout = _layout(rows, m, _CHUNK)
    item_layout = _layout(cols, n, _CHUNK)

    def step(bu, bi, P, Q):
        bu, P = _als_half(user_layout, mu, bu, P, bi, Q, cols, values, lam, m, _CHUNK, cg_steps,
                          biased)
        bi, Q = _als_half(item_layout, mu, bi, Q, bu, P, rows, values, lam, n, _CHUNK, cg_steps,
                          biased)
        return bu, bi, P, Q

    def cond(state):
        it, _, _, done = state[:4]
        return (it < max_iter) & ~done

    def body(state):
        it, J_prev, history, _, params = state
        params = step(*params)
        J = _objective(mu, *params, rows, cols, values, lam)
        done = (tol > 0) & ((J_prev - J) <= tol * J_prev)  # tol = 0: run every iteration
        return it + 1, J, history.at[it].set(J), done, params

    J0 = _objective(mu, *start, rows, cols, values, lam)
    history = jnp.full((max_iter,), jnp.nan, values.dtype)
    state = (jnp.int32(0), J0, history, jnp.array(False), start)
    it, _, history, done, (bu, bi, P, Q) = lax.while_loop(cond, body, state)
    return BiasedMFResult(mu, bu, bi, P, Q, it, done, history)


@partial(jax.jit, static_argnames=("shape", "max_iter", "biased"))
def _biased_sgd(rows, cols, values, start, hyper, key, *, shape, max_iter, biased=True):
    m, n = shape
    lam, tol, lr = hyper
    mu = jnp.mean(values) if biased else jnp.zeros((), values.dtype)
    bu, bi, P, Q = start
    k = P.shape[1]
    dtype = values.dtype
    # One buffer for users and items, each row (bias, 1, factors) for a user and (1, bias, factors)
    # for an item, so that row_u . row_i = b_u + b_i + p_u . q_i and one 2-row gather and one
    # 2-row scatter per rating do the whole update in place (two separate buffers make XLA copy
    # them at every step). `mask` keeps the constant 1s fixed.
    W = jnp.concatenate([
        jnp.concatenate([bu[:, None], jnp.ones((m, 1), dtype), P], 1),
        jnp.concatenate([jnp.ones((n, 1), dtype), bi[:, None], Q], 1)])
    mask = jnp.ones((2, k + 2), dtype).at[0, 1].set(0).at[1, 0].set(0)
    if not biased:  # the biases stay at their start, 0
        mask = mask.at[0, 0].set(0).at[1, 1].set(0)

    def rating(W, x):
        u, i, r = x
        idx = jnp.stack([u, i + m])
        G = W[idx]                                     # (2, k + 2): user row, item row
        e = r - mu - jnp.dot(G[0], G[1])
        G = G + lr * mask * (e * G[::-1] - lam * G)
        return W.at[idx].set(G, unique_indices=True), None

    def unpack(W):
        return W[:m, 0], W[m:, 1], W[:m, 2:], W[m:, 2:]

    def cond(state):
        it, _, _, done = state[:4]
        return (it < max_iter) & ~done

    def body(state):
        it, J_prev, history, _, W = state
        perm = jax.random.permutation(jax.random.fold_in(key, it), rows.shape[0])
        W, _ = lax.scan(rating, W, (rows[perm], cols[perm], values[perm]))
        J = _objective(mu, *unpack(W), rows, cols, values, lam)
        done = (tol > 0) & ((J_prev - J) <= tol * J_prev)  # tol = 0: run every iteration
        return it + 1, J, history.at[it].set(J), done, W

    J0 = _objective(mu, bu, bi, P, Q, rows, cols, values, lam)
    history = jnp.full((max_iter,), jnp.nan, dtype)
    it, _, history, done, W = lax.while_loop(
        cond, body, (jnp.int32(0), J0, history, jnp.array(False), W))
    return BiasedMFResult(mu, *unpack(W), it, done, history)
