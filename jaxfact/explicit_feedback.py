"""Biased matrix factorization of explicit feedback (ratings): Koren, Bell & Volinsky (2009).

A rating matrix is known only at its observed entries ``(rows, cols, values)``; users and items get
embeddings ``p_u``, ``q_i`` and biases ``b_u``, ``b_i`` such that ``mu + b_u + b_i + p_u . q_i``
predicts the rating. Two solvers fit the same objective: alternating least squares, which solves
every user's (then every item's) regularized least-squares problem exactly and at once, and the
stochastic gradient descent of the paper with Surprise's defaults, run as stratified SGD: ratings
that share no user and no item are updated at once (Gemulla et al. 2011).

Predictions come from :func:`jaxfact.predict`. Implicit feedback (clicks, plays) is in
:mod:`jaxfact.implicit_feedback`; held-out splits are in :mod:`jaxfact.interactions` and error and
ranking metrics in :mod:`jaxfact.metrics`.

Scaling out: ratings sharded along the event axis over a mesh give user factors and biases split
by user blocks and replicated item factors; ALS moves only the items' normal equations (or CG
products) between devices (see :func:`biased_mf`, "Sharding"). SGD runs on one device.
"""

from __future__ import annotations

import warnings
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P_

from jaxfact import _als
from jaxfact import _checks
from jaxfact import _implicit_diff as _implicit
from jaxfact import _solver
from jaxfact import factored

__all__ = ["BiasedMFResult", "biased_mf"]


class BiasedMFResult(NamedTuple):
    """A biased matrix factorization ``r_ui ~= mu + b_u + b_i + p_u . q_i``.

    ``P`` and ``Q`` are deprecated read-only names of ``user_factors`` and ``item_factors``.
    """

    mu: jax.Array            # (), the global mean of the training ratings
    user_bias: jax.Array     # (m,), b_u
    item_bias: jax.Array     # (n,), b_i
    user_factors: jax.Array  # (m, k), user factors p_u as rows
    item_factors: jax.Array  # (n, k), item factors q_i as rows
    n_iter: jax.Array        # () int32, ALS iterations or SGD epochs run
    converged: jax.Array     # () bool, status == Status.CONVERGED
    history: jax.Array       # (max_iter,), J / n_ratings after each iteration; NaN after n_iter
    status: jax.Array        # () int32, a jaxfact.Status

    @property
    def P(self) -> jax.Array:
        """Deprecated: ``user_factors``."""
        _checks.warn_renamed("BiasedMFResult", "P", "user_factors")
        return self.user_factors

    @property
    def Q(self) -> jax.Array:
        """Deprecated: ``item_factors``."""
        _checks.warn_renamed("BiasedMFResult", "Q", "item_factors")
        return self.item_factors


# ------------------------------------------------------------------------------------------------
# Public functions


def biased_mf(rows: Any, cols: Any, values: Any, shape: tuple[int, int], rank: int, *,
              lam: Any = 0.02, solver: str = "als", max_iter: int = 20, tol: Any = None,
              key: Any = None, lr: Any = 0.005, init_std: Any = 0.1,
              warm_start: Any = None, cg_steps: int | None = None,
              biased: bool = True, diff: _implicit.ImplicitDiff | None = None,
              checks: bool = False, init: Any = None,
              sgd_blocks: int | None = None) -> BiasedMFResult:
    """Biased matrix factorization of a partially observed rating matrix.

    Minimizes, over the observed set K (eq. 5 of Koren et al. 2009, the penalty inside the sum)::

        J = sum_{(u,i) in K} (r_ui - mu - b_u - b_i - p_u . q_i)^2
                             + lam (b_u^2 + b_i^2 + ||p_u||^2 + ||q_i||^2)

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
    * ``solver="sgd"``: the paper's updates, e = r_ui - r^_ui and
      ``b_u += lr (e - lam b_u)``, ``b_i += lr (e - lam b_i)``,
      ``p_u += lr (e q_i - lam p_u)``, ``q_i += lr (e p_u - lam q_i)``;
      the defaults (lr 0.005, lam 0.02, 20 epochs, factors ~ N(0, 0.1), zero biases) are
      Surprise's. Each epoch visits every rating once, in the order of the distributed SGD of
      Gemulla et al. (2011) (DSGD): users and items are dealt once per call into ``sgd_blocks``
      groups each (about as many ratings per group, at random otherwise), which cuts the ratings
      into ``sgd_blocks**2`` blocks; a stratum is ``sgd_blocks`` blocks that share no user and
      no item, and its blocks are updated at once, one rating of each block per step (vectorized
      over the blocks), their ratings in a random order fixed per call, each epoch from a new
      random starting point and with the strata in a new random order. Because the blocks of a
      stratum are disjoint, an epoch is exactly the sequential SGD that visits the ratings in
      that order (:func:`dsgd_schedule`). ``sgd_blocks=1`` is the plain sequential SGD, one
      rating per step, in the order
      ``jax.random.permutation(jax.random.fold_in(key, epoch), nnz)``. (Surprise visits the
      ratings in the same order, user by user, every epoch.) Cost: O(|K| k) per epoch;
      about |K| / (sgd_blocks * fill) sequential steps, fill ~ 0.6-0.95 the mean block size
      over the largest of its stratum.

    Args:
      rows, cols: (nnz,) integer user and item indices of the observed ratings, each pair once.
      values: (nnz,) float ratings.
      shape: (m, n), the numbers of users and items.
      rank: k in [1, min(m, n)], the embedding dimension.
      lam: L2 penalty, > 0 for ALS, >= 0 for SGD (traced).
      solver: ``"als"`` or ``"sgd"``.
      max_iter: ALS iterations or SGD epochs (Surprise: 20).
      tol: stop (``Status.CONVERGED``) when ``(J_prev - J) <= tol * J_prev``; 0 runs all
        ``max_iter`` iterations. Default 1e-4 for ALS and 0 for SGD (all epochs, as Surprise does).
      key: ``jax.random`` key for the initial factors and the SGD order; required unless
        ``warm_start`` is given with ``solver="als"`` (ALS itself draws nothing).
      lr: SGD learning rate (traced).
      init_std: standard deviation of the initial factors (traced).
      warm_start: start from a previous :class:`BiasedMFResult` of the same shape and rank, or
        from its factors ``(user_bias, item_bias, user_factors, item_factors)``; ``mu`` is
        recomputed from ``values``.
      cg_steps: ALS only. None (default) solves each ridge problem exactly; an integer runs that
        many conjugate-gradient steps on it instead, warm-started at the current (b, p) (the
        ALS-CG of Takacs, Pilaszy & Tikk 2011): O(|K| k cg_steps + (m + n) k cg_steps) per
        iteration, no Gram matrices, J still never increases; ``cg_steps >= k + 1`` is exact.
      biased: True (default) fits ``mu + b_u + b_i + p_u . q_i``; False fits the plain
        ``p_u . q_i`` (mu, b_u, b_i held at 0), like Surprise's ``SVD(biased=False)``: the
        "basic matrix factorization model" of Koren et al., eq. (2).
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).
      checks: under an outer ``jit``, also check that ``values`` (and ``warm_start``) are finite
        and the indices in range, with ``jax.experimental.checkify`` (wrap the jitted caller in
        ``checkify.checkify``). Concrete inputs are always checked.
      init: deprecated name of ``warm_start``.
      sgd_blocks: SGD only: the number of user (and item) groups of the stratified order, in
        [1, min(m, n)]; 1 is the sequential SGD. None (default): the largest power of two up to
        64 that leaves at least 4 users and 4 items per group and 16 ratings per block on
        average (1 for very small problems). The held-out error does not depend on it beyond
        the run-to-run spread of SGD (the order is a random one either way); larger values
        mean fewer, wider steps.

    Returns:
      :class:`BiasedMFResult`. ``history[t]`` is the objective J after iteration t + 1 divided by
      the number of ratings ``nnz`` (NaN after ``n_iter``); ``status`` is ``Status.CONVERGED``
      (the ``tol`` test held), ``MAX_ITER`` or ``DIVERGED`` (J not finite), and
      ``converged == (status == Status.CONVERGED)``.

    Differentiable (reverse mode, ``solver="als"``) w.r.t. ``values`` and ``lam`` by implicit
    differentiation of the stationarity condition ``grad J = 0`` at the returned factors (CG on
    the Hessian of J, products O(|K| k) each, memory independent of ``max_iter``). J is invariant
    to rotating the user and item factors together, so losses of the predictions
    (:func:`jaxfact.predict`, biases, ``user_factors @ item_factors.T``) are well defined and the
    raw factors are not. Assumes the fit converged.

    Example:

      >>> rows = jnp.array([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32)
      >>> cols = jnp.array([0, 1, 1, 2, 0, 2, 1, 2], jnp.int32)
      >>> ratings = jnp.array([5.0, 3.0, 4.0, 1.0, 4.0, 2.0, 2.0, 5.0])
      >>> res = biased_mf(rows, cols, ratings, (4, 3), 2, lam=0.1, key=jax.random.key(0))
      >>> res.user_factors.shape, res.item_factors.shape
      ((4, 2), (3, 2))
      >>> r_hat = jaxfact.predict(res, rows, cols, clip=(1, 5))
      >>> print(bool(jaxfact.rmse(r_hat, ratings) < 1.0))
      True

    References:
      Y. Koren, R. Bell, C. Volinsky. Matrix factorization techniques for recommender systems.
      IEEE Computer 42(8), 2009. Eq. (5) (objective), "Learning algorithms" (SGD and ALS updates).
      R. Gemulla, E. Nijkamp, P. J. Haas, Y. Sismanis. Large-scale matrix factorization with
      distributed stochastic gradient descent. KDD 2011 (stratified SGD, DSGD).
      N. Hug. Surprise: a Python library for recommender systems. JOSS 2020 (``SVD`` defaults).

    Sharding: ``rows``, ``cols`` and ``values`` may be split along the event axis over one or
    more mesh axes (``jax.device_put(values, NamedSharding(mesh, P("data")))``), in any order;
    a log whose length does not divide into the shards may be padded with events
    ``rows == cols == -1``, which are dropped. The events are grouped on the host, once per
    call, by the user block that owns them (users ``[d m/p, (d + 1) m/p)`` on shard d; blocks
    with fewer events are padded with zero-weight events). Each shard then solves its users'
    systems from its own events. ``user_factors`` and ``user_bias`` come back split by user
    blocks, ``P(axes, None)`` and ``P(axes)``; ``item_factors``, ``item_bias``, ``mu`` and the
    rest are replicated. Per iteration the items' normal equations, (n, k+1, k+1) and
    (n, k+1), are reduce-scattered by item block, each shard solves its block, and the
    (n, k+1) solutions are all-gathered (with ``cg_steps``: ``cg_steps + 1`` psums of
    (n, k+1)), plus a scalar psum; nothing of the users' size. ``m`` must be divisible by the
    number of shards (ValueError otherwise); ``solver="sgd"`` runs on one device and rejects sharded
    ratings (ValueError); traced sharded events (under an outer ``jit``) cannot be grouped on
    the host: they are replicated, with a UserWarning, and the single-device kernel runs on
    every device. Sharded fits are not differentiable (gradients need traced ratings, which
    take that replicated path). Unsharded input runs as before.

    Deviations: ``mu`` is the training mean, not a learned parameter (as in Surprise). The ALS
    penalty is weighted by the number of ratings so that both solvers minimize the same J.
    """
    fn = "biased_mf"
    if init is not None:
        if warm_start is not None:
            raise TypeError(f"{fn}: give `warm_start` only (`init` is its deprecated name)")
        _checks.warn_renamed(fn, "init", "warm_start")
        warm_start = init
    rows, cols, values, split = _als.event_sharding(fn, rows, cols, values)
    rows, cols, values, (m, n) = _checks.check_observed(fn, rows, cols, values, shape,
                                                        checks=checks)
    solver = _checks.check_choice(fn, "solver", solver, ("als", "sgd"))
    if split is not None and solver == "sgd":
        raise ValueError(
            f"{fn}: solver='sgd' runs its strata of ratings one after another on one device, "
            f"so it cannot be split over devices, and the ratings are sharded "
            f"({P_(split.axes)}). Use solver='als' (it splits the users' systems by shard), or "
            f"pass unsharded arrays (e.g. np.asarray(values)) to run SGD on one device.")
    events = _als.shard_events(fn, rows, cols, values, m, split)
    rank = _checks.check_rank(fn, rank, (m, n))
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
    if sgd_blocks is None:
        sgd_blocks = _auto_blocks(rows.shape[0], m, n)
    else:
        sgd_blocks = _checks.check_int(fn, "sgd_blocks", sgd_blocks, low=1, high=min(m, n))
    dtype = values.dtype
    if warm_start is not None:
        start = _warm_start(fn, warm_start, m, n, rank, dtype, checks)
    if solver == "sgd" or warm_start is None:
        key = _checks.check_key(fn, key, why="it draws the initial factors and the SGD order")
    if warm_start is None and events is None:
        start, key = _draw_start(key, jnp.asarray(init_std, dtype), shape=(m, n), rank=rank,
                                 dtype=jnp.dtype(dtype))
    elif warm_start is None:  # P0 drawn where its rows live (threefry is partitionable)
        kp, kq, key = jax.random.split(key, 3)
        P0 = init_std * _normal_on(NamedSharding(events.mesh, P_(events.axes)), (m, rank),
                                   jnp.dtype(dtype))(kp)
        start = _Factors(jnp.zeros((m,), dtype), jnp.zeros((n,), dtype), P0,
                         init_std * jax.random.normal(kq, (n, rank), dtype))
    if not biased:
        start = start._replace(user_bias=jnp.zeros((m,), dtype), item_bias=jnp.zeros((n,), dtype))
    diff = _implicit.check_diff(fn, diff)
    lam_in = jnp.asarray(lam, dtype)
    sg = jax.lax.stop_gradient
    hyper = tuple(sg(jnp.asarray(h, dtype)) for h in (lam, tol, lr))
    start = sg(start)
    if solver == "als" and events is not None:
        user, rep = (NamedSharding(events.mesh, s) for s in (P_(events.axes), P_()))
        start = _Factors(*jax.device_put(start, _Factors(user, rep, user, rep)))
        # Concrete events only (traced ones took the single-device path), so there is nothing
        # to differentiate and no implicit gradient to attach.
        return _biased_als_sharded(events.rows, events.cols, events.values, events.weights,
                                   start, hyper, mesh=events.mesh, axes=events.axes,
                                   shape=(m, n), max_iter=max_iter, cg_steps=cg_steps,
                                   biased=biased)
    if solver == "als":
        res = _biased_als(rows, cols, sg(values), start, hyper, shape=(m, n), max_iter=max_iter,
                          cg_steps=cg_steps, biased=biased)
        return _implicit.biased_mf(res, rows, cols, values, lam_in, (m, n), _objective, diff,
                                   biased=biased)
    return _biased_sgd(rows, cols, values, start, hyper, key, shape=(m, n), max_iter=max_iter,
                       biased=biased, blocks=sgd_blocks)


def predict_ratings(result: Any, rows: Any, cols: Any, *,
                    clip: tuple[float, float] | None = None) -> jax.Array:
    """Deprecated alias of :func:`jaxfact.predict` (removed in the next release)."""
    warnings.warn("predict_ratings is renamed `jaxfact.predict`; `predict_ratings` will be "
                  "removed in the next release", DeprecationWarning, stacklevel=2)
    return factored.predict(result, rows, cols, clip=clip)


# ------------------------------------------------------------------------------------------------
# Validation helpers


@partial(jax.jit, static_argnames=("shape", "rank", "dtype"))
def _draw_start(key, init_std, *, shape, rank, dtype):
    """Zero biases and factors ~ N(0, init_std^2), from two keys split off ``key``; returns them
    and the third key. One compiled program (drawn eagerly, each op would compile its own)."""
    m, n = shape
    kp, kq, key = jax.random.split(key, 3)
    return _Factors(jnp.zeros((m,), dtype), jnp.zeros((n,), dtype),
                    init_std * jax.random.normal(kp, (m, rank), dtype),
                    init_std * jax.random.normal(kq, (n, rank), dtype)), key


def _auto_blocks(nnz: int, m: int, n: int) -> int:
    """DSGD's default number of user (and item) groups: the largest power of two up to
    ``_MAX_BLOCKS`` that leaves at least 4 users and 4 items per group and ``_MIN_BLOCK`` ratings
    per block on average (1, the sequential SGD, below that)."""
    b = 1
    while (2 * b <= _MAX_BLOCKS and 8 * b <= min(m, n)
           and nnz >= _MIN_BLOCK * (2 * b) ** 2):
        b *= 2
    return b


_MAX_BLOCKS = 64
_MIN_BLOCK = 16


@lru_cache(maxsize=None)
def _normal_on(sharding, shape, dtype):
    """A jitted standard normal draw of ``shape`` laid out as ``sharding`` (each device draws its
    own rows: threefry is partitionable), compiled once per (sharding, shape, dtype)."""
    return jax.jit(lambda k: jax.random.normal(k, shape, dtype), out_shardings=sharding)


def _warm_start(fn, warm_start, m, n, rank, dtype, checks):
    """A warm start (a BiasedMFResult or its four factor arrays), validated, as _Factors."""
    return _Factors(*_checks.check_warm_start(
        fn, warm_start, ("user_bias", "item_bias", "user_factors", "item_factors"),
        ((m,), (n,), (m, rank), (n, rank)), "a BiasedMFResult", dtype, checks))


# ------------------------------------------------------------------------------------------------
# Kernels (assume valid input)


class _Factors(NamedTuple):
    """The ALS iterate: biases and factors of users and items."""

    user_bias: jax.Array     # (m,)
    item_bias: jax.Array     # (n,)
    user_factors: jax.Array  # (m, k)
    item_factors: jax.Array  # (n, k)


class _Table(NamedTuple):
    """The SGD iterate: users and items in one buffer (see :func:`_sgd_table`)."""

    rows: jax.Array  # (m + n, width): user rows (b_u, 1, p_u, 0...), item rows (1, b_i, q_i, 0...)


def _objective(mu, bu, bi, P, Q, rows, cols, values, lam):
    """J of eq. (5) divided by the number of ratings (the penalty weighted by n_u and n_i)."""
    return jnp.mean(_objective_terms(mu, bu, bi, P, Q, rows, cols, values, lam))


def _objective_terms(mu, bu, bi, P, Q, rows, cols, values, lam):
    """J's term of each rating."""
    e = values - (mu + bu[rows] + bi[cols] + jnp.sum(P[rows] * Q[cols], axis=-1))
    pen = bu[rows] ** 2 + bi[cols] ** 2 + jnp.sum(P[rows] ** 2 + Q[cols] ** 2, axis=-1)
    return e**2 + lam * pen


def _result(mu, f: _Factors, state: _solver.State) -> BiasedMFResult:
    return BiasedMFResult(mu, f.user_bias, f.item_bias, f.user_factors, f.item_factors,
                          state.n_iter, state.status == _solver.Status.CONVERGED, state.history,
                          state.status)


@partial(jax.jit, static_argnames=("shape", "max_iter", "cg_steps", "biased"))
def _biased_als(rows, cols, values, start, hyper, *, shape, max_iter, cg_steps, biased=True):
    m, n = shape
    lam, tol, _ = hyper
    mu = jnp.mean(values) if biased else jnp.zeros((), values.dtype)
    user_layout = _als.layout(rows, m, _als.CHUNK)
    item_layout = _als.layout(cols, n, _als.CHUNK)

    def update(f: _Factors, _):
        bu, P = _als.als_half(user_layout, mu, f.user_bias, f.user_factors, f.item_bias,
                              f.item_factors, cols, values, lam, m, _als.CHUNK, cg_steps, biased)
        bi, Q = _als.als_half(item_layout, mu, f.item_bias, f.item_factors, bu, P, rows, values,
                              lam, n, _als.CHUNK, cg_steps, biased)
        f = _Factors(bu, bi, P, Q)
        return f, _objective(mu, *f, rows, cols, values, lam), None

    J0 = _objective(mu, *start, rows, cols, values, lam)

    def stop(state):
        return _solver.status_of(_solver.relative_decrease_below(state, tol, J0))

    state = _solver.run(update, stop, _solver.start(start, max_iter=max_iter, dtype=values.dtype))
    return _result(mu, state.iterate, state)


@partial(jax.jit, static_argnames=("shape", "max_iter", "cg_steps", "biased", "mesh", "axes"))
def _biased_als_sharded(rows, cols, values, weights, start, hyper, *, mesh, axes, shape, max_iter,
                        cg_steps, biased=True):
    """:func:`_biased_als` on events grouped by user block (:func:`_als.group_by_block`): each
    shard solves its users' systems from its own events; the items' normal equations (or, with
    ``cg_steps``, each CG product) are added up over the shards (reduce-scatter, solve by item
    block, all-gather; or psum), so every shard ends with all item factors (replicated)."""
    m, n = shape
    p = int(np.prod([mesh.shape[a] for a in axes]))
    m_loc = m // p
    psum = partial(lax.psum, axis_name=axes)

    def body(rows, cols, values, w, start, hyper):
        lam, tol, _ = hyper
        total = psum(jnp.sum(w))
        mu = psum(jnp.sum(w * values)) / total if biased else jnp.zeros((), values.dtype)
        count = lambda seg, size: jnp.bincount(seg, weights=w, length=size).astype(jnp.int32)
        user_layout = _als.layout(rows, m_loc, _als.CHUNK)._replace(counts=count(rows, m_loc))
        item_layout = _als.layout(cols, n, _als.CHUNK)._replace(counts=psum(count(cols, n)))

        def objective(f: _Factors):
            return psum(jnp.sum(w * _objective_terms(mu, *f, rows, cols, values, lam))) / total

        def update(f: _Factors, _):
            bu, P = _als.als_half(user_layout, mu, f.user_bias, f.user_factors, f.item_bias,
                                  f.item_factors, cols, values, lam, m_loc, _als.CHUNK, cg_steps,
                                  biased, weights=w)
            bi, Q = _als.als_half(item_layout, mu, f.item_bias, f.item_factors, bu, P, rows,
                                  values, lam, n, _als.CHUNK, cg_steps, biased, weights=w,
                                  scatter=(axes, p))
            f = _Factors(bu, bi, P, Q)
            return f, objective(f), None

        J0 = objective(start)

        def stop(state):
            return _solver.status_of(_solver.relative_decrease_below(state, tol, J0))

        state = _solver.run(update, stop, _solver.start(start, max_iter=max_iter,
                                                        dtype=values.dtype))
        return _result(mu, state.iterate, state)

    ev, rep = P_(axes), P_()
    factors = _Factors(P_(axes), rep, P_(axes, None), rep)
    out = BiasedMFResult(rep, P_(axes), rep, P_(axes, None), rep, rep, rep, rep, rep)
    # check_vma=False: the shared _als kernels (scans, CG) start from replicated zeros whose
    # carries become device-varying; every psum here is of a device-varying partial sum.
    return jax.shard_map(body, mesh=mesh, in_specs=(ev, ev, ev, ev, factors, rep),
                         out_specs=out, check_vma=False)(rows, cols, values, weights, start,
                                                         hyper)


def _sgd_table(start: _Factors, biased: bool):
    """(W, mask): users and items in one buffer, each row (b_u, 1, p_u, 0...) for a user and
    (1, b_i, q_i, 0...) for an item, so that row_u . row_i = b_u + b_i + p_u . q_i and one
    gather and one scatter per step do the whole update in place (two separate buffers make XLA
    copy them at every step). ``mask`` (2, width) keeps the constant 1s, the zero padding (and,
    unbiased, the biases) fixed."""
    bu, bi, P, Q = start
    m, k = P.shape
    n = Q.shape[0]
    dtype = P.dtype
    pad = -(k + 2) % 8  # rows of a multiple of 8 floats: faster row gathers and scatters
    W = jnp.concatenate([
        jnp.concatenate([bu[:, None], jnp.ones((m, 1), dtype), P, jnp.zeros((m, pad), dtype)], 1),
        jnp.concatenate([jnp.ones((n, 1), dtype), bi[:, None], Q, jnp.zeros((n, pad), dtype)], 1)])
    mask = jnp.ones((2, k + 2 + pad), dtype).at[0, 1].set(0).at[1, 0].set(0).at[:, k + 2:].set(0)
    if not biased:  # the biases stay at their start, 0
        mask = mask.at[0, 0].set(0).at[1, 1].set(0)
    return W, mask


def _sgd_step(W, u, i, r, mu, lr, lam, mask):
    """The paper's update of the ratings (u, i, r), each (b,), at once; no two share a user or an
    item. ``i`` indexes W's item rows (item + m). Returns the (2 b, k + 2) new rows and their
    indices (users first)."""
    idx = jnp.concatenate([u, i])
    G = W[idx].reshape(2, u.shape[0], -1)              # (2, b, k + 2): user rows, item rows
    e = r - mu - jnp.sum(G[0] * G[1], axis=-1)
    G = G + lr * mask[:, None, :] * (e[None, :, None] * G[::-1] - lam * G)
    return G.reshape(2 * u.shape[0], -1), idx


def dsgd_schedule(key, rows, cols, shape, blocks, epochs):
    """The order in which the stratified SGD visits the ratings (Gemulla et al. 2011's DSGD),
    all drawn from ``key`` at once.

    Blocks, once per call: users and items are dealt at random into ``blocks`` groups each, with
    about as many ratings in every group (:func:`_deal`); block (o, g) holds the ratings of user
    group g and item group (g + o) mod blocks, so that the ``blocks`` blocks of one offset o (a
    stratum) share no user and no item. Inside a block the ratings are in a random order.
    Epochs: epoch e visits the strata in the random order ``strata[e]``; in stratum o, step t
    updates, for every g with t < count[o, g] at once, the rating
    ``order[start[o, g] + (t + shift[e, o, g]) mod count[o, g]]``: each block's ratings in
    their order, cyclically from a random first one. So an epoch visits every rating once, and
    it is the sequential SGD that visits, stratum after stratum and step after step, the
    blocks' t-th ratings in the order g = 0, 1, ...

    Returns (order, start, count, strata, shift): ``order`` (nnz,) the rating indices sorted by
    (o, g, random); ``start[o, g]``, ``count[o, g]`` (blocks, blocks) where block (o, g) lies in
    ``order``; ``strata`` (epochs, blocks); ``shift`` (epochs, blocks, blocks).
    """
    m, n = shape
    b = blocks
    nnz = rows.shape[0]
    # One draw of random bits for everything (each jax.random call adds its own threefry code
    # to the compiled program): ties of users, of items, of ratings, names of the groups, and
    # each epoch's order of the strata and shifts.
    sizes = [m, n, nnz, b, b, epochs * b]
    bits = jax.random.bits(key, (sum(sizes) + epochs * b * b,), jnp.uint32)
    tie_u, tie_i, rand, name_u, name_i, perm, sh = jnp.split(bits, np.cumsum(sizes))
    gu = _deal(tie_u, name_u, rows, m, b)   # group of each user
    gi = _deal(tie_i, name_i, cols, n, b)   # group of each item
    g = gu[rows]
    block = ((gi[cols] - g) % b) * b + g
    _, _, order = lax.sort((block, rand, jnp.arange(nnz, dtype=jnp.int32)), num_keys=2)
    count = jnp.bincount(block, length=b * b).astype(jnp.int32).reshape(b, b)
    start = (jnp.cumsum(count) - count.ravel()).reshape(b, b)
    strata = jnp.argsort(perm.reshape(epochs, b), axis=1).astype(jnp.int32)
    shift = sh.reshape(epochs, b, b) % jnp.maximum(count, 1).astype(jnp.uint32)[None]
    return order, start, count, strata, shift.astype(jnp.int32)


def _deal(tie, name, seg, n_seg, b):
    """A group in [0, b) for each of n_seg segments (users or items), with about as many ratings
    in every group: segments in decreasing order of their number of ratings (ties in the random
    order of ``tie``, (n_seg,) random bits) are dealt to the groups 0, 1, ..., b - 1, b - 1,
    ..., 1, 0, 0, 1, ...; the group names are then permuted by ``argsort(name)`` ((b,) bits)."""
    count = jnp.bincount(seg, length=n_seg)
    _, _, by_count = lax.sort((-count, tie, jnp.arange(n_seg, dtype=jnp.int32)), num_keys=2)
    pos = jnp.arange(n_seg, dtype=jnp.int32) % (2 * b)
    snake = jnp.where(pos < b, pos, 2 * b - 1 - pos)
    names = jnp.argsort(name).astype(jnp.int32)
    return jnp.zeros((n_seg,), jnp.int32).at[by_count].set(names[snake])


@partial(jax.jit, static_argnames=("shape", "max_iter", "biased", "blocks"))
def _biased_sgd(rows, cols, values, start, hyper, key, *, shape, max_iter, biased=True,
                blocks=1):
    m, n = shape
    lam, tol, lr = hyper
    mu = jnp.mean(values) if biased else jnp.zeros((), values.dtype)
    dtype = values.dtype
    nnz = rows.shape[0]
    k = start.user_factors.shape[1]
    W, mask = _sgd_table(start, biased)
    b = blocks

    def rating(W, x):
        u, i, r = x
        G, idx = _sgd_step(W, u[None], i[None] + m, r[None], mu, lr, lam, mask)
        return W.at[idx].set(G, unique_indices=True), None

    def unpack(W):
        return _Factors(W[:m, 0], W[m:, 1], W[:m, 2:k + 2], W[m:, 2:k + 2])

    def sequential(W, it):
        perm = jax.random.permutation(jax.random.fold_in(key, it), nnz)
        W, _ = lax.scan(rating, W, (rows[perm], cols[perm], values[perm]))
        return W

    if b > 1:
        order, first, count, strata, shift = dsgd_schedule(key, rows, cols, (m, n), b, max_iter)
        u_s, i_s, r_s = rows[order], cols[order] + m, values[order]
        drop = m + n + jnp.arange(2 * b, dtype=jnp.int32)  # distinct out-of-range rows

    def stratified(W, it):
        def stratum(s, W):
            o = strata[it, s]
            cnt, st, sh = count[o], first[o], shift[it, o]

            def step(t, W):
                j = t + sh
                pos = st + jnp.where(j >= cnt, j - cnt, j)
                pos = jnp.minimum(pos, nnz - 1)
                G, idx = _sgd_step(W, u_s[pos], i_s[pos], r_s[pos], mu, lr, lam, mask)
                idx = jnp.where(jnp.tile(t < cnt, 2), idx, drop)
                return W.at[idx].set(G, mode="drop", unique_indices=True)

            return lax.fori_loop(0, jnp.max(cnt), step, W)

        return lax.fori_loop(0, b, stratum, W)

    def update(t: _Table, it):
        W = sequential(t.rows, it) if b == 1 else stratified(t.rows, it)
        return _Table(W), objective(W), None

    # J from the table: one gather of two rows per rating for the errors (row_u . row_i =
    # b_u + b_i + p_u . q_i), the penalty from the rating counts (no gather).
    # mask's rows are 1 exactly on the learned entries of a user's and of an item's row.
    n_u, n_i = (jnp.bincount(a, length=s).astype(dtype) for a, s in ((rows, m), (cols, n)))

    def objective(W):
        e = values - mu - jnp.sum(W[rows] * W[cols + m], axis=-1)
        pen = (n_u @ jnp.sum(W[:m] ** 2 * mask[:1], axis=-1)
               + n_i @ jnp.sum(W[m:] ** 2 * mask[1:], axis=-1))
        return (jnp.sum(e * e) + lam * pen) / nnz

    J0 = objective(W)

    def stop(state):
        return _solver.status_of(_solver.relative_decrease_below(state, tol, J0))

    state = _solver.run(update, stop, _solver.start(_Table(W), max_iter=max_iter, dtype=dtype))
    return _result(mu, unpack(state.iterate.rows), state)
