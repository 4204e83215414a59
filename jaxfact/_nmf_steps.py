"""NMF's half-steps: one alternating update of a factor, by projected gradient (Lin 2007),
HALS sweeps (Cichocki & Phan 2009; Gillis & Glineur 2012) or multiplicative updates (Lee &
Seung 2001).

Everything here assumes validated input. Factors are held as ``Wt = W.T`` (k, m) and ``H``
(k, n), so that both half-steps of the alternating scheme are the same problem on rows:

    min_{Y >= 0}  1/2 ||A_o - Y^T O||^2 (weighted by the mask)  + l1 sum(Y) + l2/2 ||Y||^2

with ``Y = Wt, O = H`` for the W step and ``Y = H, O = Wt`` for the H step. Without a mask such a
half-step only needs the k x k Gram matrix ``G = O O^T`` and the cross product ``C = O A_o^T``
(Lin 2007; Gillis & Glineur 2012), which are formed once per half-step and reused by every inner
iteration. With a mask the half-step works with ``O`` and the mask itself (O(m n k) per inner
iteration).

Row-sharded X (the kernels then run inside a ``shard_map`` body, one block of rows per device):
the columns of ``Wt`` are split, H is replicated. The W step's problem is then local to each
device (its Y, C and mask are the local columns; G = H H^T is replicated) except for sums over
Y's entries (norms, step tests), and the H step's products contract over the split dimension
(G = Wt Wt^T and C = Wt A are psum'd once per half-step; with a mask, every product with O is).
:class:`Split` says which, for each half-step; ``Split()`` (nothing split) is the single-device
computation, operation for operation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

from jaxfact._nmf_init import cross_h, cross_w, dot_t, dot_tn, psum, total

__all__ = []  # private module

# Lin (2007), Section 4 and his nmf.m: step shrink/grow factor and sufficient-decrease constant.
_BETA = 0.1
_SIGMA = 0.01
_MAX_TRIALS = 20        # step-size trials per projected-gradient iteration
_MAX_SUBPROBLEM = 1000  # projected-gradient iterations per subproblem
_PG_REL = 0.1           # a subproblem's tolerance is at most this times its start's grad^P
# A subproblem may also end once a step lowers its objective by less than this times its first
# step did (Gillis & Glineur's 2012 inner stopping rule, delta, applied to Lin's steps; their
# delta for HALS). 0 would be Lin's solve alone.
_PG_DELTA = 0.1
# Gillis & Glineur (2012), Section 3: inner repetitions floor(1 + alpha * rho), stopped once a
# sweep changes the factor by less than delta times the first sweep's change.
_GG_ALPHA = 0.5
_GG_DELTA = 0.1


# ------------------------------------------------------------------------------------------------
# One half-step problem: min_{Y >= 0} q(Y), Y (k, p)


class Split(NamedTuple):
    """Mesh axes a half-step's dimensions are split over (None: not split; static)."""

    y: Any = None  # Y's columns (p): the W step on row-split X
    o: Any = None  # O's columns (q), the dimension the products with O contract: the H step


UNSPLIT = Split()


class Half(NamedTuple):
    """A half-step least-squares problem in Y (k, p); G or (O, MT) describes its Hessian."""

    C: Any   # (k, p) cross product O A_o^T
    G: Any   # (k, k) Gram O O^T (unmasked) or None
    O: Any   # (k, q) the other factor (masked) or None
    MT: Any  # (p, q) the mask in this orientation (masked) or None
    l1: Any
    l2: Any


def half_w(data, H, reg):
    """The W step's problem at H."""
    C = cross_w(data, H)
    if data.M is None:
        return Half(C, H @ H.T, None, None, reg.l1W, reg.l2W)
    return Half(C, None, H, data.M, reg.l1W, reg.l2W)


def half_h(data, Wt, reg, axes=None):
    """The H step's problem at Wt (the columns of Wt split over ``axes``: C and G psum'd)."""
    C = cross_h(data, Wt, axes)
    if data.M is None:
        return Half(C, psum(Wt @ Wt.T, axes), None, None, reg.l1H, reg.l2H)
    return Half(C, None, Wt, data.Mt, reg.l1H, reg.l2H)


def _hess_data(h, Y, sp=UNSPLIT):
    """The data part of the Hessian applied to Y: G Y, or O (MT * (Y^T O))^T with a mask."""
    if h.G is not None:
        return h.G @ Y
    return psum(dot_t(h.O, h.MT * dot_tn(Y, h.O)), sp.o)


def data_grad(h, Y, sp=UNSPLIT):
    return _hess_data(h, Y, sp) - h.C


def full_grad(h, Y, sp=UNSPLIT):
    return data_grad(h, Y, sp) + h.l1 + h.l2 * Y


def quad(h, d, sp=UNSPLIT):
    """<d, Hessian d> of the half-step objective."""
    if h.G is not None:
        dq = total(d * (h.G @ d), sp.y)
    else:
        # Entries (p, q): one of the two dimensions may be split.
        dq = psum(total(h.MT * dot_tn(d, h.O) ** 2, sp.y), sp.o)
    return dq + h.l2 * total(d * d, sp.y)


def proj_norm_sq(g, Y, axes=None):
    """Squared norm of the projected gradient: components with g < 0 or Y > 0 (Lin 2007, eq. 6).
    ``axes``: Y's columns are split over them."""
    return total(jnp.where((g < 0) | (Y > 0), g, 0) ** 2, axes)


def _all(x, axes):
    """``jnp.all(x)`` over every shard of ``axes``."""
    if axes is None:
        return jnp.all(x)
    return lax.pmin(jnp.all(x).astype(jnp.int32), axes) > 0


# -- Lin (2007): projected gradient with the Armijo-type search of his Algorithm 4 (nlssubprob) --


class _Trial(NamedTuple):
    """State of the step search of one projected-gradient iteration."""

    t: Any          # () int32, trials done
    alpha: Any      # () the step to try next (the accepted one once finished)
    last: Any       # (k, p) last point that passed, while the step grows
    out: Any        # (k, p) the point to take
    gd_last: Any    # (k, p) G (last - Y), unmasked only (else None)
    gd_out: Any     # (k, p) G (out - Y), unmasked only (else None)
    shrinking: Any  # () bool, the first trial failed: shrink until one passes
    finished: Any   # () bool


class _Sub(NamedTuple):
    """State of one projected-gradient subproblem solve."""

    Y: Any      # (k, p)
    g: Any      # (k, p) the gradient at Y
    alpha: Any  # () step, carried over between iterations
    it: Any     # () int32, iterations done (the last one only tests the tolerance)
    done: Any   # () bool, the tolerance held
    dec0: Any   # () the first step's decrease of the subproblem objective
    dec: Any    # () the last step's decrease


def pg_subproblem(h, Y, tol, sp=UNSPLIT, delta=_PG_DELTA):
    """Solves one half-step by Lin's projected gradient until ``||grad^P|| < tol``, or (with
    ``delta > 0``) a step lowers the subproblem's objective by less than ``delta`` times the
    first step did, or ``_MAX_SUBPROBLEM`` (Lin's 1000) iterations. ``delta`` defaults to
    ``_PG_DELTA`` (0.1); ``delta=0`` is Lin's solve alone.

    The delta test is Gillis & Glineur's (2012) inner stopping rule, here on the decrease of
    each accepted step. With Lin's tolerance alone a subproblem on an ill-conditioned Gram
    matrix (a product of uniform factors: condition ~75) takes ~350 slow steps per outer
    iteration, ~14 times the cost of the outer iteration's products with X. A fixed cap on the
    steps (Gillis & Glineur's ``1 + rho``) left small problems far from converged after 2000
    outer iterations, because there a product costs no more than a step. The delta test follows
    progress, not problem size. With delta = 0.1, pg's time to scikit-learn cd's error on the
    benchmark's nearly low-rank 2000 x 1000 problem fell from 3.2x cd's to 1.2x (quiet 2-core
    CPU). On lin2007's quick synthetic problem, 2000 iterations took 2.6 s instead of
    ~30 s, and pg stayed 80x and 7500x below mu at equal time. The outer stopping rule is
    unchanged (Lin's condition and a settled objective), so a run still reports converged only
    where it is.

    Unmasked (``h.G`` given), a step costs one k x k product per trial: the product ``G d``
    that the sufficient-decrease test forms for the accepted step also updates the gradient,
    ``g + G d + l2 d`` (instead of forming ``G Y`` again).

    Returns (Y, iterations); iterations == 1 means no step was needed.
    """
    gram = h.G is not None

    def step(Y, g, alpha):
        def trial(s):
            Yn = jnp.maximum(Y - s.alpha * g, 0)
            d = Yn - Y
            if gram:
                gd = h.G @ d
                dq = total(d * gd, sp.y) + h.l2 * total(d * d, sp.y)
            else:
                gd, dq = None, quad(h, d, sp)
            suff = (1 - _SIGMA) * total(g * d, sp.y) + 0.5 * dq < 0
            shrinking = jnp.where(s.t == 0, ~suff, s.shrinking)
            last = jnp.where(s.t == 0, Y, s.last)
            # Shrinking: accept the first step that passes. Growing: grow while it passes and
            # the projected point still moves; then take the last passing point.
            stop_growing = ~suff | _all(last == Yn, sp.y)
            finished = jnp.where(shrinking, suff, stop_growing)
            take_new = shrinking & suff
            take_last = ~shrinking & stop_growing
            out = jnp.where(take_new, Yn, jnp.where(take_last, last, s.out))
            alpha = jnp.where(shrinking, jnp.where(suff, s.alpha, s.alpha * _BETA),
                              jnp.where(stop_growing, s.alpha, s.alpha / _BETA))
            keep_last = shrinking | stop_growing
            new_last = jnp.where(keep_last, last, Yn)
            gd_out = gd_last = None
            if gram:
                gd_prev = jnp.where(s.t == 0, 0, s.gd_last)  # last == Y at the first trial
                gd_out = jnp.where(take_new, gd, jnp.where(take_last, gd_prev, s.gd_out))
                gd_last = jnp.where(keep_last, gd_prev, gd)
            return _Trial(s.t + 1, alpha, new_last, out, gd_last, gd_out, shrinking, finished)

        z = jnp.zeros_like(Y) if gram else None
        s = _Trial(jnp.int32(0), alpha, Y, Y, z, z, jnp.bool_(True), jnp.bool_(False))
        s = lax.while_loop(lambda s: (s.t < _MAX_TRIALS) & ~s.finished, trial, s)
        d = s.out - Y
        gnew = g + s.gd_out + h.l2 * d if gram else full_grad(h, s.out, sp)
        dec = jnp.zeros((), Y.dtype)
        if delta > 0:  # the accepted step's decrease of the subproblem objective
            dq = (total(d * s.gd_out, sp.y) + h.l2 * total(d * d, sp.y)) if gram else \
                quad(h, d, sp)
            dec = -(total(g * d, sp.y) + 0.5 * dq)
        return s.out, gnew, s.alpha, dec

    def body(s):
        done = proj_norm_sq(s.g, s.Y, sp.y) <= tol**2
        # Progress has slowed to delta of the first step's: the rest of this subproblem is
        # better spent on the other factor (the iteration after a stalled step only tests).
        if delta > 0:
            done = done | ((s.it >= 2) & (s.dec < delta * s.dec0))
        Y, g, alpha, dec = lax.cond(done, lambda: (s.Y, s.g, s.alpha, s.dec),
                                    lambda: step(s.Y, s.g, s.alpha))
        dec0 = jnp.where(s.it == 0, dec, s.dec0)
        return _Sub(Y, g, alpha, s.it + 1, done, dec0, dec)

    z = jnp.zeros((), Y.dtype)
    s = _Sub(Y, full_grad(h, Y, sp), jnp.ones((), Y.dtype), jnp.int32(0), jnp.bool_(False), z, z)
    s = lax.while_loop(lambda s: (s.it < _MAX_SUBPROBLEM) & ~s.done, body, s)
    return s.Y, s.it


def pg_half_step(h, Y, tol, sp=UNSPLIT):
    """One half-step of "pg": Lin's subproblem solve (:func:`pg_subproblem`), to the smaller of
    his tolerance ``tol`` and ``_PG_REL`` times the projected gradient at the half-step's start,
    or until its steps stall (``_PG_DELTA``), in at most ``_MAX_SUBPROBLEM``
    iterations (Lin's 1000).

    Lin's tolerance is absolute (a fraction of the gradient at the start of the run), divided
    by 10 when a subproblem needs no step. Late in a run it lets each subproblem stop after a
    step or two, and the objective then creeps down at a rate set by that tolerance, not by the
    problem: a run can look settled while tighter solves would still lower the objective (by
    4e-4 relatively on a 30 x 20 rank-4 matrix with tol = 1e-4). The relative part makes every
    half-step remove a fixed fraction of its block's projected gradient.

    Returns (Y, tol) with Lin's tolerance for the next time.
    """
    pn0 = jnp.sqrt(proj_norm_sq(full_grad(h, Y, sp), Y, sp.y))
    Y, it = pg_subproblem(h, Y, jnp.minimum(tol, _PG_REL * pn0), sp)
    return Y, jnp.where(it == 1, 0.1 * tol, tol)


# -- Cichocki & Phan (2009) HALS, with Gillis & Glineur (2012) inner repetitions --


def _safe_div(num, den):
    # den == 0 only when a component's other factor is all zero: leave the entry unchanged there.
    ok = den > 0
    return ok, num / jnp.where(ok, den, 1)


class _Sweep(NamedTuple):
    """State of one HALS sweep over the rows of Y."""

    Y: Any    # (k, p)
    Q: Any    # (p, q) MT * (Y^T O), kept current (masked), or None
    dsq: Any  # () ||change of Y||^2 so far


def hals_sweep(h, Y, sp=UNSPLIT):
    """One pass of exact coordinate minimization over the k rows of Y. Returns (Y, ||dY||^2)."""
    k = Y.shape[0]
    if h.G is not None:
        def body(j, s):
            g = h.G[j]
            y = s.Y[j]
            num = h.C[j] - g @ s.Y + g[j] * y - h.l1
            ok, val = _safe_div(num, g[j] + h.l2)
            ynew = jnp.where(ok, jnp.maximum(val, 0), y)
            return _Sweep(s.Y.at[j].set(ynew), None, s.dsq + jnp.sum((ynew - y) ** 2))
        s = lax.fori_loop(0, k, body, _Sweep(Y, None, jnp.zeros((), Y.dtype)))
        return s.Y, psum(s.dsq, sp.y)

    # Masked: keep Q = MT * (Y^T O) (p, q) current as rows change; O(p q) per row.
    def body(j, s):
        o = h.O[j]
        y = s.Y[j]
        wsq = psum(h.MT @ (o * o), sp.o)
        num = h.C[j] - psum(s.Q @ o, sp.o) + y * wsq - h.l1
        ok, val = _safe_div(num, wsq + h.l2)
        ynew = jnp.where(ok, jnp.maximum(val, 0), y)
        Q = s.Q + h.MT * jnp.outer(ynew - y, o)
        return _Sweep(s.Y.at[j].set(ynew), Q, s.dsq + jnp.sum((ynew - y) ** 2))

    s = lax.fori_loop(0, k, body, _Sweep(Y, h.MT * dot_tn(Y, h.O), jnp.zeros((), Y.dtype)))
    return s.Y, psum(s.dsq, sp.y)


class _Sweeps(NamedTuple):
    """State of the repeated sweeps of one HALS half-step."""

    Y: Any       # (k, p)
    change: Any  # () ||change of Y||^2 in the last sweep
    sweeps: Any  # () int32, sweeps done


def hals_update(h, Y, max_inner, sp=UNSPLIT):
    """Up to ``max_inner`` sweeps on one half-step (Gillis & Glineur 2012, Algorithm 2), stopping
    once a sweep moves Y by less than delta times the first sweep did."""
    Y, d0 = hals_sweep(h, Y, sp)

    def body(s):
        Y, d = hals_sweep(h, s.Y, sp)
        return _Sweeps(Y, d, s.sweeps + 1)

    def cond(s):
        return (s.sweeps < max_inner) & (s.change > _GG_DELTA**2 * d0)

    return lax.while_loop(cond, body, _Sweeps(Y, d0, jnp.int32(1))).Y


def inner_repetitions(data, k, shards=1):
    """Sweeps per half-step, floor(1 + alpha * rho), where rho = 1 + (K + q k) / (p (k + 1))
    compares the cost of the products with A (K = nnz) to that of one sweep (Gillis & Glineur
    2012, Section 3). Returns (for W, for H). ``shards``: A holds the local block of rows of
    so many (the counts are those of the whole matrix, as on one device)."""
    if data.M is not None:
        return 1, 1  # with a mask a sweep costs as much as a product: nothing to amortize
    m, n = data.A.shape if data.A is not None else data.S.shape
    m = m * shards
    nnz = data.S.nnz if data.S is not None else m * n
    rho_w = 1 + (nnz + n * k) // (m * (k + 1))
    rho_h = 1 + (nnz + m * k) // (n * (k + 1))
    return int(1 + _GG_ALPHA * rho_w), int(1 + _GG_ALPHA * rho_h)


def mu_update(h, Y, sp=UNSPLIT):
    """Lee & Seung (2001), Theorem 1, with penalties in the denominator (scikit-learn):
    Y <- Y * C / (Hess Y + l1 + l2 Y); 0/0 (a zero row of the other factor) gives 0."""
    den = _hess_data(h, Y, sp) + h.l1 + h.l2 * Y
    ok = den > 0
    return jnp.where(ok, Y * h.C / jnp.where(ok, den, 1), 0)
