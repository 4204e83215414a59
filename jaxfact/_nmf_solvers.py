"""NMF's outer loops: alternating half-steps (:mod:`jaxfact._nmf_steps`) for the Frobenius loss
and multiplicative updates for the Kullback-Leibler divergence, both on the one iteration driver
(:mod:`jaxfact._solver`), with the stopping rule every NMF solver shares.

Everything here assumes validated input. Factors are held as ``Wt = W.T`` (k, m) and ``H``
(k, n); the data as :class:`jaxfact._nmf_init.Data`.

Row-sharded X: :func:`solve` runs inside a ``shard_map`` body (:func:`solve_sharded`) with
``axes`` the mesh axes the rows are split over; every sum over rows (the objective, the gradient
norms of the stopping rule, the W step's tests) is psum'd, so the loop runs the same iterations
on every device.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jax.sharding import PartitionSpec as P

from jaxfact import linop
from jaxfact import _solver
from jaxfact._nmf_init import (Reg, data_scale, dot_t, dot_tn, n_shards, optimal_scale, prepare,
                               psum, scale_start, scale_x, total)
from jaxfact._nmf_steps import (Split, data_grad, full_grad, hals_update, half_h, half_w,
                                inner_repetitions, mu_update, pg_half_step, proj_norm_sq)

__all__ = []  # private module

_SUB_TOL_FLOOR = 1e-3   # Lin's tol_W = tol_H = max(1e-3, tol) * ||grad f(W1, H1)||
# The stopping rule reads the objective's decrease over this many iterations (and the same
# number before them, for the rate).
_WINDOW = 5
# ... and holds when the extrapolated decrease is below this fraction of tol * objective: the
# extrapolation is geometric, and NMF's tails slow down faster than that. With 1 (no margin) a
# restart from a converged result gained up to 1.03 tol on small test problems; with 0.25 at
# most 0.33 tol, for 5-10% more iterations (pg, hals).
_MARGIN = 0.25
# Objective changes within this many ulps of the objective's scale are rounding, not progress.
_NOISE_ULPS = 16


class Fit(NamedTuple):
    Wt: Any        # (k, m)
    H: Any         # (k, n)
    loss: Any      # ()
    n_iter: Any    # () int32
    status: Any    # () int32, a Status
    history: Any   # (max_iter,), NaN after n_iter


def solve(X, mask, Wt, H, tol, reg, *, solver, beta_loss, max_iter, update_H, rescale,
          axes=None):
    """Fits on ``X / s`` (s = :func:`data_scale`) and returns the fit in X's units.

    ``rescale``: the start is ours (a named init, or nmf_transform's constant W), so it is first
    moved to the optimal scalar multiple for this loss and mask (:func:`scale_start`). A start
    given by the user is used as given. ``axes``: inside a ``shard_map`` body, the mesh axes the
    rows of X (and mask, and the columns of Wt) are split over.
    """
    s = data_scale(X, mask, axes)
    r = jnp.sqrt(s)  # exact: s is a power of 4
    data = prepare(scale_x(X, 1 / s), mask, axes)
    Wt, H = Wt / r, H / r
    # The objective is homogeneous: D(sX, sWH) = s^2 D(X, WH) (Frobenius) or s D(X, WH) (KL),
    # while the penalties on W = r W' scale as r (L1) and s (L2): divide them accordingly.
    unit = s * s if beta_loss == "frobenius" else s
    reg = Reg(reg.l1W * r / unit, reg.l2W * s / unit, reg.l1H * r / unit, reg.l2H * s / unit)
    if rescale:
        Wt, H = scale_start(data, Wt, H, beta_loss, update_H=update_H, axes=axes)
    if beta_loss == "kullback-leibler":
        fit = fit_kl(data, Wt, H, tol, reg, max_iter=max_iter, update_H=update_H, axes=axes)
    else:
        fit = fit_frobenius(data, Wt, H, tol, reg, solver=solver, max_iter=max_iter,
                            update_H=update_H, axes=axes)
    return Fit(fit.Wt * r, fit.H * r, fit.loss * unit, fit.n_iter, fit.status, fit.history * unit)


@partial(jax.jit, static_argnames=("solver", "beta_loss", "max_iter", "update_H", "rescale",
                                   "mesh", "axes"))
def solve_sharded(X, mask, Wt, H, tol, reg, *, solver, beta_loss, max_iter, update_H, rescale,
                  mesh, axes):
    """:func:`solve` on X (m, n) whose rows are split over ``axes`` of ``mesh`` (the mask's rows
    and Wt's columns likewise; H replicated): one ``shard_map`` over the whole fit. ``Wt=None``:
    a constant start (nmf_transform's). Returns the :class:`Fit` with Wt split by columns and
    everything else replicated."""
    rows, cols = P(axes, None), P(None, axes)
    k = H.shape[0]

    def body(X, mask, Wt, H, tol, reg):
        if Wt is None:  # nmf_transform's constant start, made where the rows live
            Wt = jnp.ones((k, X.shape[0]), X.dtype)
        return solve(X, mask, Wt, H, tol, reg, solver=solver, beta_loss=beta_loss,
                     max_iter=max_iter, update_H=update_H, rescale=rescale, axes=axes)

    # check_vma=False: the loop carries replicated values (H, the objective, the status) that
    # are computed from psum'd pieces, next to the device-varying Wt; they are equal on every
    # device by construction, which the type checker cannot see through while_loop carries.
    return jax.shard_map(
        body, mesh=mesh,
        in_specs=(rows, None if mask is None else rows, None if Wt is None else cols, P(), P(),
                  P()),
        out_specs=Fit(cols, P(), P(), P(), P(), P()), check_vma=False)(X, mask, Wt, H, tol, reg)


def _settled(state, loss0, tol, noise):
    """The objective part of every solver's stopping rule, after ``state.n_iter`` iterations.

    With ``D`` the decrease over the last ``_WINDOW`` iterations and ``q`` its ratio to the
    decrease over the ``_WINDOW`` before (a rate, clipped to [0, 1]), the decrease still to come
    if the objective keeps falling at that rate is at most ``D / (1 - q)``: the rule holds when
    that is ``<= tol * loss``, or when D is within rounding (``noise``) of the objective. Over
    a window, the estimate is not fooled by one iteration that happens to move little (pg's
    inexact subproblem solves do that). Before ``2 * _WINDOW`` iterations the missing values are
    the start's objective: then q = 0 and D is all the decrease so far.
    """
    it = state.n_iter
    loss = state.history[it - 1]
    a = _solver.objective_at(state, it - _WINDOW, loss0)
    b = _solver.objective_at(state, it - 2 * _WINDOW, loss0)
    d, d_prev = a - loss, b - a
    ok = d_prev > noise
    q = jnp.where(ok, jnp.clip(d / jnp.where(ok, d_prev, 1), 0, 1), 0)
    return (d <= noise) | (d <= _MARGIN * tol * loss * (1 - q))


def _penalty(Wt, H, reg, update_H, axes=None):
    p = reg.l1W * total(Wt, axes) + 0.5 * reg.l2W * total(Wt * Wt, axes)
    if update_H:
        p = p + reg.l1H * jnp.sum(H) + 0.5 * reg.l2H * jnp.sum(H * H)
    return p


def _locked_sq(g, Y, axes=None):
    """Squared norm of the projected gradient on Y's zero entries (those with g < 0 would
    lower the objective by growing, which multiplicative updates cannot do)."""
    return total(jnp.where((Y == 0) & (g < 0), g, 0) ** 2, axes)


def _measure(data, hw, hh, Wt, H, reg, update_H, axes=None):
    """Objective, squared projected-gradient norm, squared gradient norm and the squared
    projected gradient on zero entries at (Wt, H), from the half-step products."""
    gwd = data_grad(hw, Wt, Split(y=axes))
    fit_term = 0.5 * data.x_sq - 0.5 * total(Wt * hw.C, axes) + 0.5 * total(Wt * gwd, axes)
    # max(0, .): the expanded form can round below zero at an exact fit.
    loss = jnp.maximum(fit_term, 0) + _penalty(Wt, H, reg, update_H, axes)
    gw = gwd + hw.l1 + hw.l2 * Wt
    pg_sq = proj_norm_sq(gw, Wt, axes)
    full_sq = total(gw * gw, axes)
    locked_sq = _locked_sq(gw, Wt, axes)
    if update_H:
        gh = full_grad(hh, H, Split(o=axes))
        pg_sq = pg_sq + proj_norm_sq(gh, H)
        full_sq = full_sq + jnp.sum(gh * gh)
        locked_sq = locked_sq + _locked_sq(gh, H)
    return loss, pg_sq, full_sq, locked_sq


def direct_frobenius(data, Wt, H, reg, update_H, axes=None):
    """1/2 sum(M (X - WH)^2) + penalties, summed entrywise for dense X (no cancellation)."""
    R = data.X - dot_tn(Wt, H)
    sq = R * R if data.M is None else data.M * R * R
    return 0.5 * total(sq, axes) + _penalty(Wt, H, reg, update_H, axes)


def _scaled_half(h, r):
    """The half-step problem at the other factor times r, from the one at the factor (its
    products with A scale by r, its Gram by r^2)."""
    return h._replace(C=h.C * r, G=None if h.G is None else h.G * (r * r),
                      O=None if h.O is None else h.O * r)


class _FroIterate(NamedTuple):
    """The iterate of the Frobenius solvers, with what their stopping rule reads."""

    Wt: Any       # (k, m)
    H: Any        # (k, n)
    hw: Any       # Half: the next W step's products, formed at (Wt, H)
    tol_w: Any    # () Lin's subproblem tolerances
    tol_h: Any
    grad_sq: Any  # () the stopping rule's gradient: squared grad^P (pg, hals) or on zeros (mu)
    c_sq: Any     # () ||C||^2 of the last half-steps: rounding of the gradient is ~eps ||C||


@partial(jax.jit, static_argnames=("solver", "max_iter", "update_H", "axes"))
def fit_frobenius(data, Wt, H, tol, reg, *, solver, max_iter, update_H, axes=None):
    """Alternating updates of Wt then H until the stopping rule or ``max_iter`` outer steps.

    Every solver stops, after at least one iteration, when the objective has settled
    (:func:`_settled`); pg and hals also need Lin's (2007, eq. 15) projected-gradient condition
    ``||grad^P f(W, H)|| <= tol ||grad f(W0', H0')||``, where (W0', H0') is the start moved to its
    optimal scalar multiple (:func:`scale_start`): the gradient at a badly scaled start is
    large, and a rule relative to it would pass at once. ``history`` holds the objective
    (penalties included) after each iteration.
    """
    k = Wt.shape[0]
    dtype = Wt.dtype
    eps = jnp.finfo(dtype).eps
    # mu's stopping rule rests on the objective alone, which the expanded form
    # 1/2 ||X||^2 - <W, X H^T> + 1/2 <W^T W, H H^T> resolves only to ~eps ||X||^2: for dense X,
    # mu sums the residual instead (one more product per iteration). pg and hals keep the
    # expanded form; where it cannot resolve the decrease, their gradient condition decides.
    direct = solver == "mu" and data.X is not None
    rep_w, rep_h = inner_repetitions(data, k, n_shards(axes))
    split_w, split_h = Split(y=axes), Split(o=axes)
    # The products with A at the start serve the optimal scale, the reference gradient at the
    # scaled start (the products there are scalar multiples of these) and the first W step.
    hw = half_w(data, H, reg)
    hh = half_h(data, Wt, reg, axes) if update_H else None
    c = optimal_scale(data, Wt, H, "frobenius", axes, cw=hw.C)
    if update_H:
        r = jnp.sqrt(c)
        Wr, Hr, hw_r, hh_r = Wt * r, H * r, _scaled_half(hw, r), _scaled_half(hh, r)
    else:
        Wr, Hr, hw_r, hh_r = Wt * c, H, hw, None
    _, _, full_sq, _ = _measure(data, hw_r, hh_r, Wr, Hr, reg, update_H, axes)
    ref_grad = jnp.sqrt(full_sq)
    sub_tol = jnp.maximum(_SUB_TOL_FLOOR, tol) * ref_grad
    loss0 = (direct_frobenius(data, Wt, H, reg, update_H, axes) if direct else
             _measure(data, hw, hh, Wt, H, reg, update_H, axes)[0])
    # Rounding level of the objective: entrywise sums are good to ~eps * loss, the expanded form
    # to ~eps * ||X||^2.
    noise_base = 0.0 if direct else 0.5 * data.x_sq

    def half_step(half, F, tol_f, rep, sp):
        # One half-step of the chosen solver on factor F; Lin's rule tightens a subproblem's
        # tolerance tenfold when it needed no step.
        if solver == "pg":
            return pg_half_step(half, F, tol_f, sp)
        if solver == "hals":
            return hals_update(half, F, rep, sp), tol_f
        return mu_update(half, F, sp), tol_f

    def update(s, n_iter):
        Wt, tol_w = half_step(s.hw, s.Wt, s.tol_w, rep_w, split_w)
        H, tol_h, hh = s.H, s.tol_h, None
        if update_H:
            hh = half_h(data, Wt, reg, axes)
            H, tol_h = half_step(hh, H, tol_h, rep_h, split_h)
        hw = half_w(data, H, reg)
        loss, pg_sq, _, locked_sq = _measure(data, hw, hh, Wt, H, reg, update_H, axes)
        c_sq = total(hw.C * hw.C, axes) + (jnp.sum(hh.C * hh.C) if update_H else 0.0)
        if direct:
            loss = direct_frobenius(data, Wt, H, reg, update_H, axes)
        # pg and hals: Lin's condition. mu: its iterates cannot leave 0, so a settled objective
        # may sit at a point where zeros should grow (e.g. nndsvd's zeros): not converged.
        grad_sq = locked_sq if solver == "mu" else pg_sq
        return _FroIterate(Wt, H, hw, tol_w, tol_h, grad_sq, c_sq), loss, None

    def stop(state):
        loss = state.history[state.n_iter - 1]
        noise = _NOISE_ULPS * eps * (loss + noise_base)
        # The gradient O O^T Y - C cancels terms of the size of C: rounding leaves ~eps ||C||.
        grad_floor_sq = (_NOISE_ULPS * eps) ** 2 * state.iterate.c_sq
        done = _settled(state, loss0, tol, noise)
        done = done & (state.iterate.grad_sq <= (tol * ref_grad) ** 2 + grad_floor_sq)
        return _solver.status_of(done)

    zero = jnp.zeros((), dtype)
    start = _FroIterate(Wt, H, hw, sub_tol, sub_tol, zero, zero)
    state = _solver.run(update, stop, _solver.start(start, max_iter=max_iter, dtype=dtype))
    Wt, H = state.iterate.Wt, state.iterate.H
    loss = (direct_frobenius(data, Wt, H, reg, update_H, axes) if data.X is not None
            else state.history[state.n_iter - 1])
    return Fit(Wt, H, loss, state.n_iter, state.status, state.history)


def _kl_terms(x, wh):
    """x log(x / wh) - x + wh >= 0 entrywise (0 log 0 = 0); wh is clipped at eps."""
    pos = x > 0
    return jnp.where(pos, x * jnp.log(jnp.where(pos, x, 1) / wh), 0) - x + wh


def _kl_loss(data, WHs, Wt, H, reg, update_H, axes=None):
    """sum(M (X log(X / WH) - X + WH)) + penalties, summed as non-negative terms where possible
    (the expanded form loses all digits in float32 near convergence). WH is clipped at eps, as
    in scikit-learn (the kernels see X / data_scale(X), so eps is relative to max(X))."""
    eps = jnp.finfo(Wt.dtype).eps
    wh = jnp.maximum(WHs, eps)
    if data.S is None:  # dense: every entry's term is >= 0
        term = _kl_terms(data.X, wh)
        div = total(term if data.M is None else data.M * term, axes)
    else:  # sparse: the stored entries' terms, plus WH summed over the entries not stored
        S = data.S
        if data.M is None:
            wh_sum = jnp.sum(jnp.sum(Wt, axis=1) * jnp.sum(H, axis=1))
        else:
            wh_sum = jnp.sum(data.M * dot_tn(Wt, H))
        div = jnp.sum(S.wv * _kl_terms(S.xv, wh)) + jnp.maximum(wh_sum - jnp.sum(S.wv * wh), 0)
    return div + _penalty(Wt, H, reg, update_H, axes)


def _mu_kl(Y, num, den, l1, l2):
    """Lee & Seung (2001), Theorem 2: Y <- Y * (O (A / WH)^T) / (O M^T), penalties added below."""
    den = den + l1 + l2 * Y
    ok = den > 0
    return jnp.where(ok, Y * num / jnp.where(ok, den, 1), 0)


def _kl_num_w(data, Wt, H, WHs):
    """``H (A / WH)^T`` (k, m) from WH at A's entries (WHs)."""
    eps = jnp.finfo(Wt.dtype).eps
    if data.S is not None:
        R = data.S.with_vals(data.S.vals / jnp.maximum(WHs, eps))
        return linop.matmul(R, H.T).T
    return dot_t(H, data.A / jnp.maximum(WHs, eps))


def _kl_num_h(data, Wt, H, axes=None):
    """``Wt (A / WH)`` (k, n) and WH at A's entries."""
    eps = jnp.finfo(Wt.dtype).eps
    if data.St is not None:
        WHt = linop.sample(data.St, H, Wt)
        R = data.St.with_vals(data.St.vals / jnp.maximum(WHt, eps))
        return linop.matmul(R, Wt.T).T
    return psum(Wt @ (data.A / jnp.maximum(dot_tn(Wt, H), eps)), axes)


def _wh(data, Wt, H):
    return linop.sample(data.S, Wt, H) if data.S is not None else dot_tn(Wt, H)


class _KLIterate(NamedTuple):
    """The iterate of the KL solver, with what its stopping rule reads."""

    Wt: Any
    H: Any
    WHs: Any        # W H at A's entries (dense: all of W H)
    locked_sq: Any  # () squared gradient on zero entries that should grow (one update behind)
    num_sq: Any     # () squared norm of the updates' numerators: the gradient's rounding scale


@partial(jax.jit, static_argnames=("max_iter", "update_H", "axes"))
def fit_kl(data, Wt, H, tol, reg, *, max_iter, update_H, axes=None):
    """Multiplicative updates for the generalized Kullback-Leibler divergence D(X || WH), with
    the stopping rule of :func:`fit_frobenius` for "mu". ``history`` holds the divergence
    (penalties included) after each iteration.

    The zero-locking test reads the gradient ``den - num (+ penalties)`` each update computes
    anyway, so it lags the iterate by one update; the reference is the gradient at the start
    moved to its optimal scalar multiple.
    """
    dtype = Wt.dtype
    eps = jnp.finfo(dtype).eps
    WHs = _wh(data, Wt, H)
    loss0 = _kl_loss(data, WHs, Wt, H, reg, update_H, axes)
    # Sparse X: the divergence subtracts sum(WH) at the stored entries from its total.
    total_s = jnp.sum(data.S.vals) if data.S is not None else 0.0

    def den_w(H):
        return jnp.sum(H, axis=1)[:, None] if data.M is None else dot_t(H, data.M)

    def den_h(Wt):
        return psum(jnp.sum(Wt, axis=1)[:, None] if data.M is None else dot_t(Wt, data.Mt),
                    axes)

    def grad(Y, num, den, l1, l2):
        return den + l1 + l2 * Y - num

    Wr, Hr = scale_start(data, Wt, H, "kullback-leibler", update_H=update_H, axes=axes)
    ref_sq = total(grad(Wr, _kl_num_w(data, Wr, Hr, _wh(data, Wr, Hr)), den_w(Hr), reg.l1W,
                        reg.l2W) ** 2, axes)
    if update_H:
        ref_sq = ref_sq + jnp.sum(grad(Hr, _kl_num_h(data, Wr, Hr, axes), den_h(Wr), reg.l1H,
                                       reg.l2H) ** 2)

    def update(s, n_iter):
        Wt, H = s.Wt, s.H
        num, den = _kl_num_w(data, Wt, H, s.WHs), den_w(H)
        locked_sq = _locked_sq(grad(Wt, num, den, reg.l1W, reg.l2W), Wt, axes)
        num_sq = total(num * num, axes)
        Wt = _mu_kl(Wt, num, den, reg.l1W, reg.l2W)
        if update_H:
            num, den = _kl_num_h(data, Wt, H, axes), den_h(Wt)
            locked_sq = locked_sq + _locked_sq(grad(H, num, den, reg.l1H, reg.l2H), H)
            num_sq = num_sq + jnp.sum(num * num)
            H = _mu_kl(H, num, den, reg.l1H, reg.l2H)
        WHs = _wh(data, Wt, H)
        loss = _kl_loss(data, WHs, Wt, H, reg, update_H, axes)
        return _KLIterate(Wt, H, WHs, locked_sq, num_sq), loss, None

    def stop(state):
        loss = state.history[state.n_iter - 1]
        done = _settled(state, loss0, tol, _NOISE_ULPS * eps * (loss + total_s))
        # Multiplicative updates cannot grow a zero entry: see fit_frobenius.
        it = state.iterate
        done = done & (it.locked_sq <= tol**2 * ref_sq + (_NOISE_ULPS * eps) ** 2 * it.num_sq)
        return _solver.status_of(done)

    zero = jnp.zeros((), dtype)
    start = _KLIterate(Wt, H, WHs, zero, zero)
    state = _solver.run(update, stop, _solver.start(start, max_iter=max_iter, dtype=dtype))
    it = state.iterate
    return Fit(it.Wt, it.H, state.history[state.n_iter - 1], state.n_iter, state.status,
               state.history)
