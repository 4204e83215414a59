"""Embeddings from implicit feedback: weighted ALS of Hu, Koren & Volinsky (2008).

Counts (plays, clicks, purchases) say how confident we are that a user likes an item, not how much:
every user-item pair gets a preference ``p_ui = 1[count > 0]`` and a confidence
``c_ui = 1 + alpha * count``, and user and item embeddings are fitted to all m x n preferences,
weighted by confidence. The unobserved pairs are handled in closed form (through ``Y^T Y``), so the
m x n matrix is never formed.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxfact import _checks
from jaxfact.ratings import _batched_cg, _layout

__all__ = ["ImplicitALSResult", "implicit_als", "implicit_loss"]


class ImplicitALSResult(NamedTuple):
    """User and item embeddings whose products ``X @ Y.T`` score preferences."""

    user_factors: jax.Array  # (m, k), x_u as rows
    item_factors: jax.Array  # (n, k), y_i as rows
    n_iter: jax.Array        # () int32, ALS iterations run
    converged: jax.Array     # () bool, relative decrease of the loss fell below `tol`
    history: jax.Array       # (max_iter,), loss / (m n) after each iteration; NaN after n_iter


def implicit_als(rows: Any, cols: Any, counts: Any, shape: tuple[int, int], rank: int, *,
                 alpha: Any = 40.0, lam: Any = 0.01, max_iter: int = 15, key: Any = None,
                 cg_steps: int = 3, tol: Any = 0.0, init_std: Any = 0.01) -> ImplicitALSResult:
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

    Cost per iteration: O(nnz k cg_steps + (m + n) k^2 cg_steps) time, O((m + n) k + nnz k)
    memory; the m x n matrix is never formed. With ``cg_steps >= k`` the updates are the exact
    solves of eq. 4 (up to rounding).

    Args:
      rows, cols: (nnz,) integer user and item indices of the non-zero counts, each pair once.
      counts: (nnz,) non-negative float counts r_ui.
      shape: (m, n).
      rank: k >= 1.
      alpha: confidence slope (Hu et al. use 40); traced.
      lam: L2 penalty >= 0; traced.
      max_iter: ALS iterations (user step + item step).
      key: ``jax.random`` key for the initial factors (N(0, init_std^2)).
      cg_steps: conjugate-gradient steps per update (``implicit``'s default is 3).
      tol: stop when ``(L_prev - L) <= tol * L_prev``; 0 (default) runs all iterations.
      init_std: standard deviation of the initial factors.

    Returns:
      :class:`ImplicitALSResult`; score items for user u with ``Y @ X[u]``.

    Example::

      >>> res = implicit_als(users, items, plays, (n_users, n_items), 64, key=jax.random.key(0))
      >>> scores = res.item_factors @ res.user_factors[0]       # rank items for user 0
      >>> top10 = jnp.argsort(-scores)[:10]

    References:
      Y. Hu, Y. Koren, C. Volinsky. Collaborative filtering for implicit feedback datasets.
      ICDM 2008, Section 4 (eqs. 3-5).
      G. Takacs, I. Pilaszy, D. Tikk. Applications of the conjugate gradient method for implicit
      feedback collaborative filtering. RecSys 2011.

    Deviations: the paper solves eq. 4 exactly (O(k^3) per user); conjugate gradient with a few
    warm-started steps is the usual large-scale substitute and converges to the same fixed points.
    """
    fn = "implicit_als"
    rows, cols, counts, (m, n) = _checks.check_observed(fn, rows, cols, counts, shape,
                                                        values_name="counts")
    _checks.check_nonnegative(fn, "counts", counts)
    rank = _checks.check_int(fn, "rank", rank, low=1)
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    cg_steps = _checks.check_int(fn, "cg_steps", cg_steps, low=1)
    alpha = _checks.check_real(fn, "alpha", alpha, low=0.0)
    lam = _checks.check_real(fn, "lam", lam, low=0.0)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    init_std = _checks.check_real(fn, "init_std", init_std, low=0.0, low_open=True)
    key = _checks.check_key(fn, key, why="it draws the initial factors")
    dtype = counts.dtype
    hyper = tuple(jnp.asarray(h, dtype) for h in (alpha, lam, tol, init_std))
    return _implicit_als(rows, cols, counts, hyper, key, shape=(m, n), rank=rank,
                         max_iter=max_iter, cg_steps=cg_steps)


def implicit_loss(user_factors: Any, item_factors: Any, rows: Any, cols: Any, counts: Any, *,
                  alpha: Any = 40.0, lam: Any = 0.01) -> jax.Array:
    """The loss L of :func:`implicit_als` for given factors, divided by m n.

    Uses ``sum_{u,i} (x_u . y_i)^2 = trace((X^T X)(Y^T Y))`` plus a correction on the observed
    pairs, so it costs O(nnz k + (m + n) k^2) and never forms X Y^T.

    Example::

      >>> implicit_loss(res.user_factors, res.item_factors, users, items, plays)
    """
    fn = "implicit_loss"
    X = _checks.as_float_array(fn, "user_factors", user_factors)
    Y = _checks.as_float_array(fn, "item_factors", item_factors)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{fn}: `user_factors` and `item_factors` must have the same number of "
                         f"columns; got {X.shape} and {Y.shape}")
    rows, cols, counts, _ = _checks.check_observed(fn, rows, cols, counts, (X.shape[0], Y.shape[0]),
                                                   values_name="counts")
    return _loss(X, Y, rows, cols, counts.astype(X.dtype), jnp.asarray(alpha, X.dtype),
                 jnp.asarray(lam, X.dtype))


# ------------------------------------------------------------------------------------------------
# Kernels (assume valid input)


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


def _cg_update(F, G, layout, other, conf_m1, pref_c, lam, cg_steps):
    """cg_steps CG steps on (G^T G + lam I + G^T (C - I) G) f = G^T C p for every row of F at
    once, warm-started at F.

    The observations of each row are laid out in padded pieces (``layout``, see
    :func:`jaxfact.ratings._layout`): the rows of G they touch are gathered once, and every
    product with the system is two batched contractions over the pieces plus a sorted segment sum
    over pieces, instead of a gather and a scatter of nnz rows. ``other``, ``conf_m1`` and
    ``pref_c`` are per observation, padded with one trailing entry for empty slots (confidence 0).

    Returns the new F and ``sum_obs [c (p - s)^2 - s^2]`` at the new F (s = f . g), the observed
    part of the loss.
    """
    n_own, k = F.shape
    GtG = G.T @ G + lam * jnp.eye(k, dtype=F.dtype)
    Gp = G[other[layout.idx]]                    # (pieces, width, k), gathered once per update
    cm1 = conf_m1[layout.idx]                    # (pieces, width), 0 in empty slots
    pc = pref_c[layout.idx]
    owner = jnp.minimum(layout.owner, n_own - 1)  # unused pieces: any row, all their weights are 0

    def seg(V):
        # Unused pieces carry owner == n_own and are dropped by segment_sum.
        return jax.ops.segment_sum(V, layout.owner, num_segments=n_own, indices_are_sorted=True)

    def dots(V):
        return jnp.einsum("plk,pk->pl", Gp, V[owner])

    def apply(V):
        return V @ GtG + seg(jnp.einsum("pl,plk->pk", cm1 * dots(V), Gp))

    b = seg(jnp.einsum("pl,plk->pk", pc, Gp))    # G^T C^u p(u)
    F = _batched_cg(apply, b, F, cg_steps)
    s_obs = dots(F)
    # c (p - s)^2 - s^2 with c = 1 + cm1 and p = 1[count > 0] (pc = c p); 0 in empty slots.
    valid = layout.idx < other.shape[0] - 1
    c = jnp.where(valid, 1 + cm1, 0)
    pref = jnp.where(pc > 0, 1, 0).astype(F.dtype)
    observed = jnp.sum(c * (pref - s_obs) ** 2 - jnp.where(valid, s_obs**2, 0))
    return F, observed


@partial(jax.jit, static_argnames=("shape", "rank", "max_iter", "cg_steps"))
def _implicit_als(rows, cols, counts, hyper, key, *, shape, rank, max_iter, cg_steps):
    m, n = shape
    alpha, lam, tol, init_std = hyper
    dtype = counts.dtype
    kx, ky = jax.random.split(key)
    X = init_std * jax.random.normal(kx, (m, rank), dtype)
    Y = init_std * jax.random.normal(ky, (n, rank), dtype)
    # The observations grouped by user and by item in padded pieces; index nnz is an empty slot.
    user_layout = _layout(rows, m, 1)
    item_layout = _layout(cols, n, 1)
    pad = lambda a: jnp.concatenate([a, jnp.zeros((1,), a.dtype)])
    conf_m1 = pad(alpha * counts)                                 # c_ui - 1 on observed pairs
    pref_c = pad(jnp.where(counts > 0, 1 + alpha * counts, 0))   # c_ui p_ui
    rows_p, cols_p = pad(rows), pad(cols)

    def cond(state):
        it, _, _, done = state[:4]
        return (it < max_iter) & ~done

    def body(state):
        it, L_prev, history, _, X, Y = state
        X, _ = _cg_update(X, Y, user_layout, cols_p, conf_m1, pref_c, lam, cg_steps)
        Y, observed = _cg_update(Y, X, item_layout, rows_p, conf_m1, pref_c, lam, cg_steps)
        L = (jnp.sum((X.T @ X) * (Y.T @ Y)) + observed
             + lam * (jnp.sum(X**2) + jnp.sum(Y**2))) / (float(m) * float(n))
        done = (tol > 0) & ((L_prev - L) <= tol * L_prev)
        return it + 1, L, history.at[it].set(L), done, X, Y

    L0 = _loss(X, Y, rows, cols, counts, alpha, lam)
    history = jnp.full((max_iter,), jnp.nan, dtype)
    it, _, history, done, X, Y = lax.while_loop(
        cond, body, (jnp.int32(0), L0, history, jnp.array(False), X, Y))
    return ImplicitALSResult(X, Y, it, done, history)
