"""Kernels behind :func:`jaxfact.nmf`: initializations and the "pg", "mu" and "hals" solvers.

Everything here assumes validated input. Factors are held as ``Wt = W.T`` (k, m) and ``H``
(k, n), so that both half-steps of the alternating scheme are the same problem on rows:

    min_{Y >= 0}  1/2 ||A_o - Y^T O||^2 (weighted by the mask)  + l1 sum(Y) + l2/2 ||Y||^2

with ``Y = Wt, O = H`` for the W step and ``Y = H, O = Wt`` for the H step. Without a mask such a
half-step only needs the k x k Gram matrix ``G = O O^T`` and the cross product ``C = O A_o^T``
(Lin 2007; Gillis & Glineur 2012), which are formed once per half-step and reused by every inner
iteration. With a mask the half-step works with ``O`` and the mask itself (O(m n k) per inner
iteration).

The data term is held as ``A = M * X`` (``X`` when there is no mask), dense, or sparse by rows
and by columns (:class:`jaxfact.linop.SparseMatrix`) so that both ``O A^T`` products read rows.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxfact import _linalg
from jaxfact import linop

__all__ = []  # private module

# Lin (2007), Section 4 and his nmf.m: step shrink/grow factor and sufficient-decrease constant.
_BETA = 0.1
_SIGMA = 0.01
_MAX_TRIALS = 20        # step-size trials per projected-gradient iteration
_MAX_SUBPROBLEM = 1000  # projected-gradient iterations per subproblem
_SUB_TOL_FLOOR = 1e-3   # tol_W = tol_H = max(1e-3, tol) * ||grad f(W1, H1)||
_PG_REL = 0.1           # and at most this times the projected gradient at the subproblem's start
# Gillis & Glineur (2012), Section 3: inner repetitions floor(1 + alpha * rho), stopped once a
# sweep changes the factor by less than delta times the first sweep's change.
_GG_ALPHA = 0.5
_GG_DELTA = 0.1
# nndsvd zeroes entries below this times sqrt(s_1), the scale of the factors' entries
# (scikit-learn zeroes below an absolute 1e-6, which erases every entry of small-valued X).
_NNDSVD_EPS = 1e-6
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


class Data(NamedTuple):
    """The matrix to factorize, in the forms the kernels read (a pytree)."""

    A: Any     # (m, n) dense M * X (X without a mask), or None when X is sparse
    X: Any     # (m, n) dense X, or None
    S: Any     # Sparse (m, n) by rows, values M * X, or None when X is dense
    St: Any    # Sparse (n, m): the same entries by columns, or None
    M: Any     # (m, n) dense weights, or None
    Mt: Any    # (n, m) = M.T, or None
    x_sq: Any  # sum(M * X**2)


class Reg(NamedTuple):
    """Penalties ``l1 * sum(Y) + l2 / 2 * ||Y||^2`` of each factor (scikit-learn's scaling)."""

    l1W: Any
    l2W: Any
    l1H: Any
    l2H: Any


# ------------------------------------------------------------------------------------------------
# Data preparation and products


def prepare(X, mask):
    """Builds :class:`Data` from dense or :class:`SparseX` X and an optional dense mask."""
    Mt = None if mask is None else mask.T
    if isinstance(X, linop.SparseMatrix):
        S = linop.apply_mask(X.S, mask)
        St = linop.apply_mask(X.St, Mt)
        return Data(None, None, S, St, mask, Mt, jnp.sum(S.vals * S.xv))
    A = X if mask is None else mask * X
    return Data(A, X, None, None, mask, Mt, jnp.sum(A * X))


def data_scale(X, mask=None):
    """A power of 4 near max(M * X) (1 for M * X = 0), so that ``X / s`` has entries of order 1
    where they count (entries with weight 0 play no part in the fit, so not in s either).

    The kernels run on ``X / s`` with factors ``W / sqrt(s)``, ``H / sqrt(s)``: dividing by a
    power of 4 is exact in binary floating point (so is the square root), so the scaled problem
    is the same problem, and no intermediate (squared gradients, Gram matrices, the objective)
    under- or overflows for X of any magnitude the dtype can hold.
    """
    if isinstance(X, linop.SparseMatrix):
        top = jnp.max(linop.apply_mask(X.S, mask).vals, initial=0)
    else:
        top = jnp.max(X if mask is None else mask * X, initial=0)
    ok = (top > 0) & jnp.isfinite(top)
    e = jnp.round(0.5 * jnp.log2(jnp.where(ok, top, 1))).astype(jnp.int32)
    return jnp.ldexp(jnp.ones((), X.dtype), 2 * e)


def scale_x(X, f):
    """``f * X`` for dense or :class:`SparseX` X."""
    if isinstance(X, linop.SparseMatrix):
        return linop.SparseMatrix(X.S.scaled(f), X.St.scaled(f))
    return X * f


def _dot_t(a, b):
    """``a @ b.T`` for dense a (k, q), b (p, q) -> (k, p), without forming the transpose."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())))


def _dot_tn(a, b):
    """``a.T @ b`` for a (k, p), b (k, q) -> (p, q)."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())))


def cross_w(data, H):
    """``H A^T`` (k, m): the cross product of the W step."""
    if data.S is not None:
        return linop.matmul(data.S, H.T).T
    return _dot_t(H, data.A)


def cross_h(data, Wt):
    """``Wt A`` (k, n): the cross product of the H step."""
    if data.St is not None:
        return linop.matmul(data.St, Wt.T).T
    return Wt @ data.A


# ------------------------------------------------------------------------------------------------
# Initializations (Boutsidis & Gallopoulos 2008; scikit-learn's `_initialize_nmf`)


def _mean(X):
    m, n = X.shape
    return linop.total(X) / (m * n)


@partial(jax.jit, static_argnames=("rank", "init"))
def initialize(X, key, *, rank, init):
    """(W (m, k), H (k, n)) for init in "random", "nndsvd", "nndsvda", "nndsvdar", scaled by the
    scalar c that minimizes ``||X - c W H||_F`` (computed on ``X / data_scale(X)``)."""
    s = data_scale(X)
    Xn = scale_x(X, 1 / s)
    W, H = _named_start(Xn, key, rank, init)
    Wt, H = scale_start(prepare(Xn, None), W.T, H, "frobenius", update_H=True)
    r = jnp.sqrt(s)
    return Wt.T * r, H * r


def _named_start(X, key, rank, init):
    m, n = X.shape
    dtype = X.dtype
    # sqrt(mean(X) / k): entries of this size give W H entries of about mean(X) (scikit-learn's
    # scale for random factors). scikit-learn fills nndsvd's zeros with mean(X) itself, which
    # makes the start's products scale like mean(X)^2, i.e. depend on the units of X.
    fill = jnp.sqrt(_mean(X) / rank)
    if init == "random":
        kw, kh = jax.random.split(key)
        W = fill * jnp.abs(jax.random.normal(kw, (m, rank), dtype))
        H = fill * jnp.abs(jax.random.normal(kh, (rank, n), dtype))
        return W, H
    U, S, Vt = _init_svd(X, key, rank)
    W, H = _nndsvd(U, S, Vt)
    if init == "nndsvda":
        W = jnp.where(W == 0, fill, W)
        H = jnp.where(H == 0, fill, H)
    elif init == "nndsvdar":
        kw, kh = jax.random.split(key)
        W = jnp.where(W == 0, jnp.abs(fill * jax.random.normal(kw, W.shape, dtype) / 100), W)
        H = jnp.where(H == 0, jnp.abs(fill * jax.random.normal(kh, H.shape, dtype) / 100), H)
    return W, H


def optimal_scale(data, Wt, H, beta_loss):
    """The scalar c >= 0 minimizing the data term D(X, c W H): for the Frobenius loss
    ``<M X, WH> / sum(M (WH)^2)``, for KL ``sum(M X) / sum(M WH)``; 1 when undefined (W H = 0 or
    X = 0)."""
    if beta_loss == "frobenius":
        num = jnp.sum(Wt * cross_w(data, H))  # <A, W H>, A = M * X
        if data.M is None:
            den = jnp.sum((Wt @ Wt.T) * (H @ H.T))
        else:
            WH = _dot_tn(Wt, H)
            den = jnp.sum(data.M * WH * WH)
    else:
        num = jnp.sum(data.S.vals) if data.S is not None else jnp.sum(data.A)
        if data.M is None:
            den = jnp.sum(jnp.sum(Wt, axis=1) * jnp.sum(H, axis=1))
        else:
            den = jnp.sum(data.M * _dot_tn(Wt, H))
    ok = (num > 0) & (den > 0)
    return jnp.where(ok, num / jnp.where(ok, den, 1), 1)


def scale_start(data, Wt, H, beta_loss, *, update_H):
    """(Wt, H) times the optimal scalar (split as sqrt on each factor; on Wt alone when H is
    fixed): the best start along the ray through (W, H), whatever the units of X."""
    c = optimal_scale(data, Wt, H, beta_loss)
    if not update_H:
        return Wt * c, H
    r = jnp.sqrt(c)
    return Wt * r, H * r


def _init_svd(X, key, rank):
    m, n = X.shape
    if not isinstance(X, linop.SparseMatrix) and min(m, n) <= 256:
        U, S, Vt = _linalg.svd_thin(X)
        return U[:, :rank], S[:rank], Vt[:rank]
    # scikit-learn's randomized_svd defaults: 10 oversamples, 7 power iterations for small ranks.
    n_iter = 7 if rank < 0.1 * min(m, n) else 4
    return _linalg.randomized_svd(X, key, rank=rank, n_samples=min(rank + 10, m, n), n_iter=n_iter)


def _nndsvd(U, S, Vt):
    """Boutsidis & Gallopoulos (2008), Table 1: each singular pair split into its positive and
    negative parts; the part with the larger norm product is kept. Vectorized over components."""
    x, y = U, Vt.T                                   # (m, k), (n, k)
    xp, xn = jnp.maximum(x, 0), jnp.maximum(-x, 0)
    yp, yn = jnp.maximum(y, 0), jnp.maximum(-y, 0)
    nxp, nxn = jnp.linalg.norm(xp, axis=0), jnp.linalg.norm(xn, axis=0)
    nyp, nyn = jnp.linalg.norm(yp, axis=0), jnp.linalg.norm(yn, axis=0)
    mp, mn = nxp * nyp, nxn * nyn
    use_p = mp > mn
    u_num = jnp.where(use_p, xp, xn)
    v_num = jnp.where(use_p, yp, yn)
    u_den = jnp.where(use_p, nxp, nxn)
    v_den = jnp.where(use_p, nyp, nyn)
    sigma = jnp.where(use_p, mp, mn)
    # A zero part (norm 0) gives a zero column, not 0/0.
    u = jnp.where(u_den > 0, u_num / jnp.where(u_den > 0, u_den, 1), 0)
    v = jnp.where(v_den > 0, v_num / jnp.where(v_den > 0, v_den, 1), 0)
    lbd = jnp.sqrt(S * sigma)
    W = lbd * u
    H = (lbd * v).T
    # The leading pair of a non-negative matrix is one-signed (Perron-Frobenius): take |.|.
    W = W.at[:, 0].set(jnp.sqrt(S[0]) * jnp.abs(U[:, 0]))
    H = H.at[0].set(jnp.sqrt(S[0]) * jnp.abs(Vt[0]))
    floor = _NNDSVD_EPS * jnp.sqrt(S[0])
    W = jnp.where(W < floor, 0, W)
    H = jnp.where(H < floor, 0, H)
    return W, H


# ------------------------------------------------------------------------------------------------
# One half-step problem: min_{Y >= 0} q(Y), Y (k, p)


class Half(NamedTuple):
    """A half-step least-squares problem in Y (k, p); G or (O, MT) describes its Hessian."""

    C: Any   # (k, p) cross product O A_o^T
    G: Any   # (k, k) Gram O O^T (unmasked) or None
    O: Any   # (k, q) the other factor (masked) or None
    MT: Any  # (p, q) the mask in this orientation (masked) or None
    l1: Any
    l2: Any


def half_w(data, Wt, H, reg, C=None):
    C = cross_w(data, H) if C is None else C
    if data.M is None:
        return Half(C, H @ H.T, None, None, reg.l1W, reg.l2W)
    return Half(C, None, H, data.M, reg.l1W, reg.l2W)


def half_h(data, Wt, H, reg):
    C = cross_h(data, Wt)
    if data.M is None:
        return Half(C, Wt @ Wt.T, None, None, reg.l1H, reg.l2H)
    return Half(C, None, Wt, data.Mt, reg.l1H, reg.l2H)


def _hess_data(h, Y):
    """The data part of the Hessian applied to Y: G Y, or O (MT * (Y^T O))^T with a mask."""
    if h.G is not None:
        return h.G @ Y
    return _dot_t(h.O, h.MT * _dot_tn(Y, h.O))


def data_grad(h, Y):
    return _hess_data(h, Y) - h.C


def full_grad(h, Y):
    return data_grad(h, Y) + h.l1 + h.l2 * Y


def quad(h, d):
    """<d, Hessian d> of the half-step objective."""
    if h.G is not None:
        dq = jnp.sum(d * (h.G @ d))
    else:
        dq = jnp.sum(h.MT * _dot_tn(d, h.O) ** 2)
    return dq + h.l2 * jnp.sum(d * d)


def proj_norm_sq(g, Y):
    """Squared norm of the projected gradient: components with g < 0 or Y > 0 (Lin 2007, eq. 6)."""
    return jnp.sum(jnp.where((g < 0) | (Y > 0), g, 0) ** 2)


# -- Lin (2007): projected gradient with the Armijo-type search of his Algorithm 4 (nlssubprob) --


def pg_subproblem(h, Y, tol):
    """Solves one half-step to ``||grad^P|| < tol`` by Lin's projected gradient.

    Returns (Y, iterations); iterations == 1 means no step was needed.
    """

    def step(Y, g, alpha):
        def trial(s):
            t, alpha, Yp, Yout, decr, _ = s
            Yn = jnp.maximum(Y - alpha * g, 0)
            d = Yn - Y
            suff = (1 - _SIGMA) * jnp.sum(g * d) + 0.5 * quad(h, d) < 0
            decr = jnp.where(t == 0, ~suff, decr)
            Yp = jnp.where(t == 0, Y, Yp)
            # Decreasing: accept the first step that passes. Increasing: grow while it passes and
            # the projected point still moves; then take the last passing point.
            stop_inc = ~suff | jnp.all(Yp == Yn)
            fin = jnp.where(decr, suff, stop_inc)
            Yout = jnp.where(decr, jnp.where(suff, Yn, Yout), jnp.where(stop_inc, Yp, Yout))
            new_alpha = jnp.where(decr, jnp.where(suff, alpha, alpha * _BETA),
                                  jnp.where(stop_inc, alpha, alpha / _BETA))
            Yp = jnp.where(decr | stop_inc, Yp, Yn)
            return t + 1, new_alpha, Yp, Yout, decr, fin

        s = (jnp.int32(0), alpha, Y, Y, jnp.bool_(True), jnp.bool_(False))
        _, alpha, _, Yout, _, _ = lax.while_loop(
            lambda s: (s[0] < _MAX_TRIALS) & ~s[5], trial, s)
        return Yout, alpha

    def body(s):
        Y, alpha, it, _ = s
        g = full_grad(h, Y)
        done = proj_norm_sq(g, Y) <= tol**2
        Y, alpha = lax.cond(done, lambda: (Y, alpha), lambda: step(Y, g, alpha))
        return Y, alpha, it + 1, done

    s = (Y, jnp.ones((), Y.dtype), jnp.int32(0), jnp.bool_(False))
    Y, _, it, _ = lax.while_loop(lambda s: (s[2] < _MAX_SUBPROBLEM) & ~s[3], body, s)
    return Y, it


def pg_half_step(h, Y, tol):
    """One half-step of "pg": Lin's subproblem solve, to the smaller of his tolerance ``tol``
    and ``_PG_REL`` times the projected gradient at the half-step's start.

    Lin's tolerance is absolute (a fraction of the gradient at the start of the run), divided
    by 10 when a subproblem needs no step. Late in a run it lets each subproblem stop after a
    step or two, and the objective then creeps down at a rate set by that tolerance, not by the
    problem: a run can look settled while tighter solves would still lower the objective (by
    4e-4 relatively on a 30 x 20 rank-4 matrix with tol = 1e-4). The relative part makes every
    half-step remove a fixed fraction of its block's projected gradient.

    Returns (Y, tol) with Lin's tolerance for the next time.
    """
    pn0 = jnp.sqrt(proj_norm_sq(full_grad(h, Y), Y))
    Y, it = pg_subproblem(h, Y, jnp.minimum(tol, _PG_REL * pn0))
    return Y, jnp.where(it == 1, 0.1 * tol, tol)


# -- Cichocki & Phan (2009) HALS, with Gillis & Glineur (2012) inner repetitions --


def _safe_div(num, den):
    # den == 0 only when a component's other factor is all zero: leave the entry unchanged there.
    ok = den > 0
    return ok, num / jnp.where(ok, den, 1)


def hals_sweep(h, Y):
    """One pass of exact coordinate minimization over the k rows of Y. Returns (Y, ||dY||^2)."""
    k = Y.shape[0]
    if h.G is not None:
        def body(j, s):
            Y, dsq = s
            g = h.G[j]
            y = Y[j]
            num = h.C[j] - g @ Y + g[j] * y - h.l1
            ok, val = _safe_div(num, g[j] + h.l2)
            ynew = jnp.where(ok, jnp.maximum(val, 0), y)
            return Y.at[j].set(ynew), dsq + jnp.sum((ynew - y) ** 2)
        return lax.fori_loop(0, k, body, (Y, jnp.zeros((), Y.dtype)))

    # Masked: keep Q = MT * (Y^T O) (p, q) current as rows change; O(p q) per row.
    Q = h.MT * _dot_tn(Y, h.O)

    def body(j, s):
        Y, Q, dsq = s
        o = h.O[j]
        y = Y[j]
        wsq = h.MT @ (o * o)
        num = h.C[j] - Q @ o + y * wsq - h.l1
        ok, val = _safe_div(num, wsq + h.l2)
        ynew = jnp.where(ok, jnp.maximum(val, 0), y)
        Q = Q + h.MT * jnp.outer(ynew - y, o)
        return Y.at[j].set(ynew), Q, dsq + jnp.sum((ynew - y) ** 2)

    Y, _, dsq = lax.fori_loop(0, k, body, (Y, Q, jnp.zeros((), Y.dtype)))
    return Y, dsq


def hals_update(h, Y, max_inner):
    """Up to ``max_inner`` sweeps on one half-step (Gillis & Glineur 2012, Algorithm 2), stopping
    once a sweep moves Y by less than delta times the first sweep did."""
    Y, d0 = hals_sweep(h, Y)

    def body(s):
        Y, _, l = s
        Y, d = hals_sweep(h, Y)
        return Y, d, l + 1

    def cond(s):
        return (s[2] < max_inner) & (s[1] > _GG_DELTA**2 * d0)

    Y, _, _ = lax.while_loop(cond, body, (Y, d0, jnp.int32(1)))
    return Y


def inner_repetitions(data, k):
    """Sweeps per half-step, floor(1 + alpha * rho), where rho = 1 + (K + q k) / (p (k + 1))
    compares the cost of the products with A (K = nnz) to that of one sweep (Gillis & Glineur
    2012, Section 3). Returns (for W, for H)."""
    if data.M is not None:
        return 1, 1  # with a mask a sweep costs as much as a product: nothing to amortize
    m, n = data.M.shape if data.M is not None else (
        data.A.shape if data.A is not None else data.S.shape)
    nnz = data.S.nnz if data.S is not None else m * n
    rho_w = 1 + (nnz + n * k) // (m * (k + 1))
    rho_h = 1 + (nnz + m * k) // (n * (k + 1))
    return int(1 + _GG_ALPHA * rho_w), int(1 + _GG_ALPHA * rho_h)


def mu_update(h, Y):
    """Lee & Seung (2001), Theorem 1, with penalties in the denominator (scikit-learn):
    Y <- Y * C / (Hess Y + l1 + l2 Y); 0/0 (a zero row of the other factor) gives 0."""
    den = _hess_data(h, Y) + h.l1 + h.l2 * Y
    ok = den > 0
    return jnp.where(ok, Y * h.C / jnp.where(ok, den, 1), 0)


# ------------------------------------------------------------------------------------------------
# Outer loops


class Fit(NamedTuple):
    Wt: Any        # (k, m)
    H: Any         # (k, n)
    loss: Any      # ()
    n_iter: Any    # () int32
    converged: Any  # () bool
    history: Any   # (max_iter,), NaN after n_iter


def solve(X, mask, Wt, H, tol, reg, *, solver, beta_loss, max_iter, update_H, rescale):
    """Fits on ``X / s`` (s = :func:`data_scale`) and returns the fit in X's units.

    ``rescale``: the start is ours (a named init, or nmf_transform's constant W), so it is first
    moved to the optimal scalar multiple for this loss and mask (:func:`scale_start`). A start
    given by the user is used as given.
    """
    s = data_scale(X, mask)
    r = jnp.sqrt(s)  # exact: s is a power of 4
    data = prepare(scale_x(X, 1 / s), mask)
    Wt, H = Wt / r, H / r
    # The objective is homogeneous: D(sX, sWH) = s^2 D(X, WH) (Frobenius) or s D(X, WH) (KL),
    # while the penalties on W = r W' scale as r (L1) and s (L2): divide them accordingly.
    unit = s * s if beta_loss == "frobenius" else s
    reg = Reg(reg.l1W * r / unit, reg.l2W * s / unit, reg.l1H * r / unit, reg.l2H * s / unit)
    if rescale:
        Wt, H = scale_start(data, Wt, H, beta_loss, update_H=update_H)
    if beta_loss == "kullback-leibler":
        fit = fit_kl(data, Wt, H, tol, reg, max_iter=max_iter, update_H=update_H)
    else:
        fit = fit_frobenius(data, Wt, H, tol, reg, solver=solver, max_iter=max_iter,
                            update_H=update_H)
    return Fit(fit.Wt * r, fit.H * r, fit.loss * unit, fit.n_iter, fit.converged, fit.history * unit)


def _settled(history, it, loss0, loss, tol, noise):
    """The objective part of every solver's stopping rule, after ``it`` iterations.

    With ``D`` the decrease over the last ``_WINDOW`` iterations and ``q`` its ratio to the
    decrease over the ``_WINDOW`` before (a rate, clipped to [0, 1]), the decrease still to come
    if the objective keeps falling at that rate is at most ``D / (1 - q)``: the rule holds when
    that is ``<= tol * loss``, or when D is within rounding (``noise``) of the objective. Over
    a window, the estimate is not fooled by one iteration that happens to move little (pg's
    inexact subproblem solves do that). Before ``2 * _WINDOW`` iterations the missing values are
    the start's objective: then q = 0 and D is all the decrease so far.
    """

    def at(j):  # objective after j iterations
        return jnp.where(j <= 0, loss0, history[jnp.maximum(j - 1, 0)])

    a, b = at(it - _WINDOW), at(it - 2 * _WINDOW)
    d, d_prev = a - loss, b - a
    ok = d_prev > noise
    q = jnp.where(ok, jnp.clip(d / jnp.where(ok, d_prev, 1), 0, 1), 0)
    return (d <= noise) | (d <= _MARGIN * tol * loss * (1 - q))


def _penalty(Wt, H, reg, update_H):
    p = reg.l1W * jnp.sum(Wt) + 0.5 * reg.l2W * jnp.sum(Wt * Wt)
    if update_H:
        p = p + reg.l1H * jnp.sum(H) + 0.5 * reg.l2H * jnp.sum(H * H)
    return p


def _locked_sq(g, Y):
    """Squared norm of the projected gradient on Y's zero entries (those with g < 0 would
    lower the objective by growing, which multiplicative updates cannot do)."""
    return jnp.sum(jnp.where((Y == 0) & (g < 0), g, 0) ** 2)


def _measure(data, hw, hh, Wt, H, reg, update_H):
    """Objective, squared projected-gradient norm, squared gradient norm and the squared
    projected gradient on zero entries at (Wt, H), from the half-step products."""
    gwd = data_grad(hw, Wt)
    fit_term = 0.5 * data.x_sq - 0.5 * jnp.sum(Wt * hw.C) + 0.5 * jnp.sum(Wt * gwd)
    # max(0, .): the expanded form can round below zero at an exact fit.
    loss = jnp.maximum(fit_term, 0) + _penalty(Wt, H, reg, update_H)
    gw = gwd + hw.l1 + hw.l2 * Wt
    pg_sq = proj_norm_sq(gw, Wt)
    full_sq = jnp.sum(gw * gw)
    locked_sq = _locked_sq(gw, Wt)
    if update_H:
        gh = full_grad(hh, H)
        pg_sq = pg_sq + proj_norm_sq(gh, H)
        full_sq = full_sq + jnp.sum(gh * gh)
        locked_sq = locked_sq + _locked_sq(gh, H)
    return loss, pg_sq, full_sq, locked_sq


def direct_frobenius(data, Wt, H, reg, update_H):
    """1/2 sum(M (X - WH)^2) + penalties, summed entrywise for dense X (no cancellation)."""
    R = data.X - _dot_tn(Wt, H)
    sq = R * R if data.M is None else data.M * R * R
    return 0.5 * jnp.sum(sq) + _penalty(Wt, H, reg, update_H)


class _FroState(NamedTuple):
    Wt: Any       # (k, m)
    H: Any        # (k, n)
    hw: Any       # Half: the next W step's products, formed at (Wt, H)
    it: Any       # () int32, iterations done
    history: Any  # (max_iter,)
    loss: Any     # () objective at (Wt, H)
    tol_w: Any    # () Lin's subproblem tolerances
    tol_h: Any
    done: Any     # () bool


@partial(jax.jit, static_argnames=("solver", "max_iter", "update_H"))
def fit_frobenius(data, Wt, H, tol, reg, *, solver, max_iter, update_H):
    """Alternating updates of Wt then H until the stopping rule or ``max_iter`` outer steps.

    Every solver stops, after at least one iteration, when the objective has settled
    (:func:`_settled`); pg and hals also need Lin's (2007, eq. 15) projected-gradient condition
    ``||grad^P f(W, H)|| <= tol ||grad f(W0', H0')||``, where (W0', H0') is the start moved to its
    optimal scalar multiple (:func:`scale_start`): the gradient at a badly scaled start is
    large, and a rule relative to it would pass at once.
    """
    k = Wt.shape[0]
    dtype = Wt.dtype
    eps = jnp.finfo(dtype).eps
    # mu's stopping rule rests on the objective alone, which the expanded form
    # 1/2 ||X||^2 - <W, X H^T> + 1/2 <W^T W, H H^T> resolves only to ~eps ||X||^2: for dense X,
    # mu sums the residual instead (one more product per iteration). pg and hals keep the
    # expanded form; where it cannot resolve the decrease, their gradient condition decides.
    direct = solver == "mu" and data.X is not None
    rep_w, rep_h = inner_repetitions(data, k)
    Wr, Hr = scale_start(data, Wt, H, "frobenius", update_H=update_H)
    _, _, full_sq, _ = _measure(data, half_w(data, Wr, Hr, reg),
                             half_h(data, Wr, Hr, reg) if update_H else None, Wr, Hr, reg,
                             update_H)
    ref_grad = jnp.sqrt(full_sq)
    sub_tol = jnp.maximum(_SUB_TOL_FLOOR, tol) * ref_grad
    hw = half_w(data, Wt, H, reg)
    loss0 = (direct_frobenius(data, Wt, H, reg, update_H) if direct else
             _measure(data, hw, half_h(data, Wt, H, reg) if update_H else None, Wt, H, reg,
                      update_H)[0])
    # Rounding level of the objective: entrywise sums are good to ~eps * loss, the expanded form
    # to ~eps * ||X||^2.
    noise_base = 0.0 if direct else 0.5 * data.x_sq
    history = jnp.full((max_iter,), jnp.nan, dtype)

    def update(half, F, tol_f, rep):
        # One half-step of the chosen solver on factor F; Lin's rule tightens a subproblem's
        # tolerance tenfold when it needed no step.
        if solver == "pg":
            return pg_half_step(half, F, tol_f)
        if solver == "hals":
            return hals_update(half, F, rep), tol_f
        return mu_update(half, F), tol_f

    def body(s):
        Wt, tol_w = update(s.hw, s.Wt, s.tol_w, rep_w)
        H, tol_h, hh = s.H, s.tol_h, None
        if update_H:
            hh = half_h(data, Wt, H, reg)
            H, tol_h = update(hh, H, tol_h, rep_h)
        hw = half_w(data, Wt, H, reg)
        loss, pg_sq, _, locked_sq = _measure(data, hw, hh, Wt, H, reg, update_H)
        # The gradient O O^T Y - C cancels terms of the size of C: rounding leaves ~eps ||C||.
        c_sq = jnp.sum(hw.C * hw.C) + (jnp.sum(hh.C * hh.C) if update_H else 0.0)
        grad_floor_sq = (_NOISE_ULPS * eps) ** 2 * c_sq
        if direct:
            loss = direct_frobenius(data, Wt, H, reg, update_H)
        history = s.history.at[s.it].set(loss)
        noise = _NOISE_ULPS * eps * (loss + noise_base)
        done = _settled(history, s.it + 1, loss0, loss, tol, noise)
        # pg and hals: Lin's condition. mu: its iterates cannot leave 0, so a settled objective
        # may sit at a point where zeros should grow (e.g. nndsvd's zeros): not converged.
        done = done & ((locked_sq if solver == "mu" else pg_sq)
                       <= (tol * ref_grad) ** 2 + grad_floor_sq)
        return _FroState(Wt, H, hw, s.it + 1, history, loss, tol_w, tol_h, done)

    s = _FroState(Wt, H, hw, jnp.int32(0), history, loss0, sub_tol, sub_tol, jnp.bool_(False))
    s = lax.while_loop(lambda s: (s.it < max_iter) & ~s.done, body, s)
    loss = direct_frobenius(data, s.Wt, s.H, reg, update_H) if data.X is not None else s.loss
    return Fit(s.Wt, s.H, loss, s.it, s.done, s.history)


def _kl_terms(x, wh):
    """x log(x / wh) - x + wh >= 0 entrywise (0 log 0 = 0); wh is clipped at eps."""
    pos = x > 0
    return jnp.where(pos, x * jnp.log(jnp.where(pos, x, 1) / wh), 0) - x + wh


def _kl_loss(data, WHs, Wt, H, reg, update_H):
    """sum(M (X log(X / WH) - X + WH)) + penalties, summed as non-negative terms where possible
    (the expanded form loses all digits in float32 near convergence). WH is clipped at eps, as
    in scikit-learn (the kernels see X / data_scale(X), so eps is relative to max(X))."""
    eps = jnp.finfo(Wt.dtype).eps
    wh = jnp.maximum(WHs, eps)
    if data.S is None:  # dense: every entry's term is >= 0
        term = _kl_terms(data.X, wh)
        div = jnp.sum(term if data.M is None else data.M * term)
    else:  # sparse: the stored entries' terms, plus WH summed over the entries not stored
        S = data.S
        if data.M is None:
            total = jnp.sum(jnp.sum(Wt, axis=1) * jnp.sum(H, axis=1))
        else:
            total = jnp.sum(data.M * _dot_tn(Wt, H))
        div = jnp.sum(S.wv * _kl_terms(S.xv, wh)) + jnp.maximum(total - jnp.sum(S.wv * wh), 0)
    return div + _penalty(Wt, H, reg, update_H)


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
    return _dot_t(H, data.A / jnp.maximum(WHs, eps))


def _kl_num_h(data, Wt, H):
    """``Wt (A / WH)`` (k, n) and WH at A's entries."""
    eps = jnp.finfo(Wt.dtype).eps
    if data.St is not None:
        WHt = linop.sample(data.St, H, Wt)
        R = data.St.with_vals(data.St.vals / jnp.maximum(WHt, eps))
        return linop.matmul(R, Wt.T).T
    return Wt @ (data.A / jnp.maximum(_dot_tn(Wt, H), eps))


def _wh(data, Wt, H):
    return linop.sample(data.S, Wt, H) if data.S is not None else _dot_tn(Wt, H)


class _KLState(NamedTuple):
    Wt: Any
    H: Any
    WHs: Any      # W H at A's entries (dense: all of W H)
    it: Any
    history: Any
    loss: Any
    done: Any


@partial(jax.jit, static_argnames=("max_iter", "update_H"))
def fit_kl(data, Wt, H, tol, reg, *, max_iter, update_H):
    """Multiplicative updates for the generalized Kullback-Leibler divergence D(X || WH), with
    the stopping rule of :func:`fit_frobenius` for "mu".

    The zero-locking test reads the gradient ``den - num (+ penalties)`` each update computes
    anyway, so it lags the iterate by one update; the reference is the gradient at the start
    moved to its optimal scalar multiple.
    """
    dtype = Wt.dtype
    eps = jnp.finfo(dtype).eps
    WHs = _wh(data, Wt, H)
    loss0 = _kl_loss(data, WHs, Wt, H, reg, update_H)
    # Sparse X: the divergence subtracts sum(WH) at the stored entries from its total.
    total = jnp.sum(data.S.vals) if data.S is not None else 0.0
    history = jnp.full((max_iter,), jnp.nan, dtype)

    def den_w(H):
        return jnp.sum(H, axis=1)[:, None] if data.M is None else _dot_t(H, data.M)

    def den_h(Wt):
        return jnp.sum(Wt, axis=1)[:, None] if data.M is None else _dot_t(Wt, data.Mt)

    def grad(Y, num, den, l1, l2):
        return den + l1 + l2 * Y - num

    Wr, Hr = scale_start(data, Wt, H, "kullback-leibler", update_H=update_H)
    ref_sq = jnp.sum(grad(Wr, _kl_num_w(data, Wr, Hr, _wh(data, Wr, Hr)), den_w(Hr), reg.l1W,
                          reg.l2W) ** 2)
    if update_H:
        ref_sq = ref_sq + jnp.sum(grad(Hr, _kl_num_h(data, Wr, Hr), den_h(Wr), reg.l1H,
                                       reg.l2H) ** 2)

    def body(s):
        Wt, H = s.Wt, s.H
        num, den = _kl_num_w(data, Wt, H, s.WHs), den_w(H)
        locked_sq = _locked_sq(grad(Wt, num, den, reg.l1W, reg.l2W), Wt)
        floor_sq = jnp.sum(num * num)
        Wt = _mu_kl(Wt, num, den, reg.l1W, reg.l2W)
        if update_H:
            num, den = _kl_num_h(data, Wt, H), den_h(Wt)
            locked_sq = locked_sq + _locked_sq(grad(H, num, den, reg.l1H, reg.l2H), H)
            floor_sq = floor_sq + jnp.sum(num * num)
            H = _mu_kl(H, num, den, reg.l1H, reg.l2H)
        WHs = _wh(data, Wt, H)
        loss = _kl_loss(data, WHs, Wt, H, reg, update_H)
        history = s.history.at[s.it].set(loss)
        done = _settled(history, s.it + 1, loss0, loss, tol, _NOISE_ULPS * eps * (loss + total))
        # Multiplicative updates cannot grow a zero entry: see fit_frobenius.
        done = done & (locked_sq <= tol**2 * ref_sq + (_NOISE_ULPS * eps) ** 2 * floor_sq)
        return _KLState(Wt, H, WHs, s.it + 1, history, loss, done)

    s = _KLState(Wt, H, WHs, jnp.int32(0), history, loss0, jnp.bool_(False))
    s = lax.while_loop(lambda s: (s.it < max_iter) & ~s.done, body, s)
    return Fit(s.Wt, s.H, s.loss, s.it, s.done, s.history)
