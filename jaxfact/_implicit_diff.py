"""Gradients through converged solutions of iterative solvers, by implicit differentiation.

A solver returns ``z*`` with ``F(z*, theta) = 0`` (a fixed point ``T(z) - z`` or a stationarity /
KKT condition). By the implicit function theorem ``dz* = -(dF/dz)^{-1} dF/dtheta dtheta``, so the
vector-Jacobian product of a cotangent ``g`` is ``theta_bar = -(dF/dtheta)^T u`` with
``(dF/dz)^T u = g``. The backward pass solves that linear system matrix-free (products with
``(dF/dz)^T`` are ``jax.vjp`` of F at the solution) by GMRES or CG, so its memory is that of a few
copies of the solution, whatever the number of forward iterations; the forward ``while_loop`` runs
under ``stop_gradient``. Where the solution is not unique (NMF's scaling, the rotations of a
factorization) the system is singular but consistent for losses that are invariant to that
freedom, and the Krylov solvers return a solution whose ``theta_bar`` does not depend on which.

Reverse mode only (``jax.grad``, ``jax.vjp``); ``jax.jvp`` / ``jacfwd`` through a solver raise.

References:
  M. Blondel et al. Efficient and modular implicit differentiation. NeurIPS 2022 (``custom_root``).
  E. J. Candès, C. A. Sing-Long, J. D. Trzasko. Unbiased risk estimates for singular value
  thresholding and spectral estimators. IEEE Trans. Signal Process. 61(19), 2013 (Theorem IV.3:
  the derivative of a spectral function such as singular value thresholding).
  J. Townsend. Differentiating the singular value decomposition. 2016 (truncated SVD derivative).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxfact import _linalg

__all__ = ["ImplicitDiff"]


class ImplicitDiff(NamedTuple):
    """How the backward pass of a solver's implicit gradient solves its linear system.

    Pass as ``diff=ImplicitDiff(...)`` to a differentiable solver (``diff=None`` uses these
    defaults). Cost of the backward pass: one linearization of the solver's optimality map at the
    solution plus at most ``max_iter`` products with its transpose (each about one forward
    iteration); memory independent of the forward ``max_iter``. Reverse-mode differentiation
    through the unrolled iterations would instead store every iterate: memory O(max_iter * size
    of the state), and ``lax.while_loop`` does not allow it at all.

    Fields:
      tol: relative residual ``||A^T u - g|| / ||g||`` at which the backward solve stops;
        None: ``eps ** 0.75`` of the dtype in float64 (2e-12), ``sqrt(eps)`` in float32
        (3e-4: rounding keeps Krylov residuals from going much lower).
      max_iter: cap on products with the system's transpose (matrix-vector products).
      solver: "gmres", "cg" (symmetric systems only), or None for the solver's own choice (CG for
        the stationarity conditions of biased MF and the SVD subspaces, GMRES otherwise).
      restart: GMRES restart length.
      strict: if True, gradients are NaN when the backward solve ends with a relative residual
        above ``10 * tol`` (not converged within ``max_iter``). If False (default) the best
        solution found is used. To find out whether a backward pass converged, repeat it with
        ``strict=True`` and test the gradients with ``jnp.isfinite``. NaN is the signal because
        the gradient is the only output of a backward pass: the result (with its ``status``) has
        been returned before the gradient is asked for, and a VJP can return nothing else.
    """

    tol: float | None = None
    max_iter: int = 500
    solver: str | None = None
    restart: int = 30
    strict: bool = False


def check_diff(fn: str, diff: Any) -> ImplicitDiff:
    """Validates a ``diff=`` option (None or an :class:`ImplicitDiff`)."""
    if diff is None:
        return ImplicitDiff()
    if not isinstance(diff, ImplicitDiff):
        raise TypeError(f"{fn}: `diff` must be None or a jaxfact.ImplicitDiff; got "
                        f"{type(diff).__name__}")
    if diff.tol is not None and not (isinstance(diff.tol, (int, float)) and diff.tol > 0):
        raise ValueError(f"{fn}: `diff.tol` must be a positive number or None; got {diff.tol!r}")
    if not (isinstance(diff.max_iter, int) and diff.max_iter >= 1):
        raise ValueError(f"{fn}: `diff.max_iter` must be an integer >= 1; got {diff.max_iter!r}")
    if not (isinstance(diff.restart, int) and diff.restart >= 1):
        raise ValueError(f"{fn}: `diff.restart` must be an integer >= 1; got {diff.restart!r}")
    if diff.solver not in (None, "gmres", "cg"):
        raise ValueError(f"{fn}: `diff.solver` must be 'gmres', 'cg' or None; got "
                         f"{diff.solver!r}")
    return diff


# ------------------------------------------------------------------------------------------------
# Linear solves and the generic root rule


def _tree_vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _solve(matvec, b, opts, symmetric):
    """Solves ``matvec(x) = b`` by CG or GMRES; returns (x, relative residual)."""
    leaves = jax.tree.leaves(b)
    dtype = leaves[0].dtype
    eps = float(jnp.finfo(dtype).eps)
    tol = opts.tol if opts.tol is not None else (eps ** 0.75 if eps < 1e-10 else eps ** 0.5)
    solver = opts.solver or ("cg" if symmetric else "gmres")
    if solver == "cg":
        x, _ = jax.scipy.sparse.linalg.cg(matvec, b, tol=tol, maxiter=opts.max_iter)
    else:
        restart = min(opts.restart, opts.max_iter)
        x, _ = jax.scipy.sparse.linalg.gmres(matvec, b, tol=tol, restart=restart,
                                             maxiter=math.ceil(opts.max_iter / restart),
                                             solve_method="incremental")
    # A (near-)singular, inconsistent system (a loss that is not well defined) can break the
    # Krylov recurrences: keep the last finite answer's scale out of the gradients.
    x = jax.tree.map(lambda a: jnp.where(jnp.isfinite(a), a, 0), x)
    r = jax.tree.map(jnp.subtract, matvec(x), b)
    nb = jnp.sqrt(_tree_vdot(b, b))
    resid = jnp.sqrt(_tree_vdot(r, r)) / jnp.where(nb > 0, nb, 1)
    return x, resid, tol


def _finish(grads, resid, tol, opts):
    if not opts.strict:
        return grads
    ok = resid <= 10 * tol
    return jax.tree.map(lambda a: None if a is None else jnp.where(ok, a, jnp.nan), grads)


def _adjoint(F, z, theta, aux, g, opts, symmetric):
    """theta_bar for the cotangent g of the root z of F(., theta, aux)."""
    _, vjp_z = jax.vjp(lambda z_: F(z_, theta, aux), z)
    u, resid, tol = _solve(lambda v: vjp_z(v)[0], g, opts, symmetric)
    _, vjp_t = jax.vjp(lambda t: F(z, t, aux), theta)
    (theta_bar,) = vjp_t(jax.tree.map(jnp.negative, u))
    return _finish(theta_bar, resid, tol, opts)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def root(F, opts, symmetric, z, theta, aux):
    """Returns ``z`` (a root of ``F(., theta, aux)``, computed without gradients) with the VJP
    of the implicit function theorem with respect to ``theta``. ``aux`` gets no gradient."""
    return z


def _root_fwd(F, opts, symmetric, z, theta, aux):
    return z, (z, theta, aux)


def _root_bwd(F, opts, symmetric, res, g):
    z, theta, aux = res
    return None, _adjoint(F, z, theta, aux, g, opts, symmetric), None


root.defvjp(_root_fwd, _root_bwd)


# ------------------------------------------------------------------------------------------------
# Singular value thresholding with its spectral derivative


def _shrunk(s, lam, k):
    keep = jnp.arange(s.shape[0]) < k
    return jnp.where(keep, jnp.maximum(s - lam, 0), 0), (keep & (s > lam)).astype(s.dtype)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def svt(M, lam, k):
    """``U diag(f(s)) Vt`` with ``f(s_i) = max(s_i - lam, 0)`` for the top k values, 0 beyond:
    singular value thresholding after a rank-k truncation, dense, with a derivative that is
    finite at repeated singular values (Candès, Sing-Long & Trzasko 2013, Theorem IV.3)."""
    U, s, Vt = jnp.linalg.svd(M, full_matrices=False)
    f, _ = _shrunk(s, lam, k)
    return (U * f[None, :]) @ Vt


@svt.defjvp
def _svt_jvp(k, primals, tangents):
    # d[U f(S) V^T] = U (G_s o sym(dP) + G_a o asym(dP)) V^T + (I - U U^T) dM V diag(f/s) V^T
    #                 + U diag(f/s) U^T dM (I - V V^T) - dlam U diag(f') V^T,
    # dP = U^T dM V, G_s = (f_i - f_j) / (s_i - s_j) (f' at ties), G_a = (f_i + f_j) / (s_i + s_j).
    (M, lam), (dM, dlam) = primals, tangents
    U, s, Vt = jnp.linalg.svd(M, full_matrices=False)
    V = Vt.T
    f, fp = _shrunk(s, lam, k)
    dP = U.T @ dM @ V
    si, sj = s[:, None], s[None, :]
    diff = si - sj
    tied = jnp.abs(diff) <= _linalg.tie_tolerance(s)
    g_sym = jnp.where(tied, 0.5 * (fp[:, None] + fp[None, :]),
                      (f[:, None] - f[None, :]) / jnp.where(tied, 1, diff))
    ssum = si + sj
    g_asym = jnp.where(ssum > 0, (f[:, None] + f[None, :]) / jnp.where(ssum > 0, ssum, 1), 0)
    core = g_sym * (0.5 * (dP + dP.T)) + g_asym * (0.5 * (dP - dP.T))
    f_over_s = jnp.where(s > 0, f / jnp.where(s > 0, s, 1), 0)
    dMV = dM @ V
    UtdM = U.T @ dM
    left = (dMV - U @ (U.T @ dMV)) * f_over_s[None, :]        # (I - U U^T) dM V diag(f/s)
    right = (UtdM - (UtdM @ V) @ Vt) * f_over_s[:, None]  # diag(f/s) U^T dM (I - V V^T)
    out = (U @ core + left - (U * fp[None, :]) * dlam) @ Vt + U @ right
    return svt(M, lam, k), out


# ------------------------------------------------------------------------------------------------
# Derivative of top-k singular triplets (exact truncated SVD at the found factors)


def svd_vjp(X, U, s, V, gU, gs, gV, opts):
    """X_bar for cotangents of the top-k triplets (U (m, k), s (k,), V (n, k)) of dense X.

    The components outside span(U) (resp. span(V)) of dU satisfy, column by column,
    ``(s_i^2 - P X X^T P) y_i = P (dX v_i s_i + X dX^T u_i)`` with P = I - U U^T: a symmetric
    system, positive definite when s_k > s_{k+1}, solved by CG with products with X only. When
    X has rank k (a completed matrix) it reduces to the thin-SVD formula ``P dX V / S``.
    Components with s_i = 0 (unused buffer slots) carry no gradient.
    """
    keep = s > 0
    gU, gV = jnp.where(keep[None, :], gU, 0), jnp.where(keep[None, :], gV, 0)
    gs = jnp.where(keep, gs, 0)
    s2 = jnp.where(keep, s * s, 1)[None, :]
    keep = keep[None, :]

    def perp(B, Y):
        return Y - B @ (B.T @ Y)

    def op_u(Y):
        return jnp.where(keep, Y * s2 - perp(U, X @ (X.T @ perp(U, Y))), Y)

    def op_v(Y):
        return jnp.where(keep, Y * s2 - perp(V, X.T @ (X @ perp(V, Y))), Y)

    zu, ru, tol = _solve(op_u, perp(U, gU), opts, True)
    zv, rv, _ = _solve(op_v, perp(V, gV), opts, True)

    def lin(dX):
        dP = U.T @ dX @ V
        om_u, om_v = _linalg.subspace_rotations(dP, s, s.shape[0])
        bu = perp(U, dX @ (V * s[None, :]) + X @ (dX.T @ U))
        bv = perp(V, dX.T @ (U * s[None, :]) + X.T @ (dX @ V))
        return U @ om_u, bu, jnp.diagonal(dP), V @ om_v, bv

    _, vjp = jax.vjp(lin, jnp.zeros_like(X))
    (gX,) = vjp((gU, zu, gs, gV, zv))
    return _finish(gX, jnp.maximum(ru, rv), tol, opts)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def svd_factors(U, S, Vt, X, opts):
    """Returns the top-k triplets (U, S, Vt) of dense X found by any method, with the gradient of
    the exact truncated SVD at those factors (not that of the method that found them)."""
    return U, S, Vt


def _svd_factors_fwd(U, S, Vt, X, opts):
    return (U, S, Vt), (U, S, Vt, X)


def _svd_factors_bwd(opts, res, g):
    U, S, Vt, X = res
    gU, gS, gVt = g
    gX = svd_vjp(X, U, S, Vt.T, gU, gS, gVt.T, opts)
    return None, None, None, gX


svd_factors.defvjp(_svd_factors_fwd, _svd_factors_bwd)


# ------------------------------------------------------------------------------------------------
# Low-rank fixed points (SoftImpute, WLRA) whose solution is returned as factors


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def factored_fixed_point(T, opts, U, S, Vt, theta, aux):
    """Returns the factors of the fixed point ``Z = T(Z, theta, aux)``, ``Z = U diag(S) Vt``, with
    the implicit gradient w.r.t. ``theta``. The dense Z is formed in the backward pass only."""
    return U, S, Vt


def _ffp_fwd(T, opts, U, S, Vt, theta, aux):
    return (U, S, Vt), (U, S, Vt, theta, aux)


def _ffp_bwd(T, opts, res, g):
    U, S, Vt, theta, aux = res
    gU, gS, gVt = g
    Z = (U * S[None, :]) @ Vt
    gZ = svd_vjp(Z, U, S, Vt.T, gU, gS, gVt.T, opts)
    F = partial(_fixed_point_residual, T)
    return None, None, None, _adjoint(F, Z, theta, aux, gZ, opts, False), None


def _fixed_point_residual(T, z, theta, aux):
    return T(z, theta, aux) - z


factored_fixed_point.defvjp(_ffp_fwd, _ffp_bwd)


def soft_impute_map(Z, theta, aux, *, k):
    """SoftImpute's step ``D_lam(P_Omega(X) + P_Omega^perp(Z))`` on a dense Z (rank cap k)."""
    values, lam = theta
    rows, cols = aux
    M = Z.at[rows, cols].add(values - Z[rows, cols])
    return svt(M, lam, k)


def wlra_map(Z, theta, aux, *, k):
    """WLRA's proximal-gradient step ``D_lam(LRA_k(W X + (1 - W) Z))``, W = weights / max."""
    X, weights, lam = theta
    W = weights / jnp.max(weights)
    X = jnp.where(W > 0, X, 0)
    return svt(Z + W * (X - Z), lam, k)


def soft_impute(result, rows, cols, values, lam, max_rank, opts):
    """Attaches implicit gradients w.r.t. (values, lam) to a SoftImpute result."""
    T = partial(soft_impute_map, k=max_rank)
    U, S, Vt = factored_fixed_point(T, opts, result.U, result.S, result.Vt, (values, lam),
                                    (rows, cols))
    return result._replace(U=U, S=S, Vt=Vt)


def soft_impute_path(path, rows, cols, values, lams, max_rank, opts):
    """The same for each fit of a path (each lambda's solution does not depend on its start)."""
    T = partial(soft_impute_map, k=max_rank)
    one = lambda U, S, Vt, lam: factored_fixed_point(T, opts, U, S, Vt, (values, lam),
                                                     (rows, cols))
    U, S, Vt = jax.vmap(one, in_axes=(0, 0, 0, 0))(path.U, path.S, path.Vt, lams)
    return path._replace(U=U, S=S, Vt=Vt)


def wlra(result, X, weights, lam, rank, opts):
    """Attaches implicit gradients w.r.t. (X, weights, lam) to a WLRA result."""
    T = partial(wlra_map, k=rank)
    U, S, Vt = factored_fixed_point(T, opts, result.U, result.S, result.Vt, (X, weights, lam),
                                    None)
    return result._replace(U=U, S=S, Vt=Vt)


# ------------------------------------------------------------------------------------------------
# Non-negative least squares and NMF (KKT conditions on the active set)


def _nmf_objective(W, H, theta, mask):
    X, l1W, l2W, l1H, l2H = theta
    R = W @ H - X
    if mask is not None:
        R = R * jnp.sqrt(mask)
    return (0.5 * jnp.sum(R * R) + l1W * jnp.sum(W) + 0.5 * l2W * jnp.sum(W * W)
            + l1H * jnp.sum(H) + 0.5 * l2H * jnp.sum(H * H))


def _kkt(y, grad, lipschitz):
    # Free entries (y - grad / L > 0, the projected-gradient step keeps them positive) satisfy
    # grad = 0; the others stay at 0. The free set is read at the solution (no derivative).
    free = (y - grad / lipschitz) > 0
    return jnp.where(free, grad, y)


def _nmf_kkt(z, theta, mask):
    W, H = z
    gW, gH = jax.grad(_nmf_objective, argnums=(0, 1))(W, H, theta, mask)
    mmax = 1.0 if mask is None else jnp.max(mask)
    _, l1W, l2W, l1H, l2H = theta
    # Step sizes only classify the entries (free or held at 0); they are not differentiated.
    LW = jax.lax.stop_gradient(mmax * jnp.sum(H * H) + l2W)
    LH = jax.lax.stop_gradient(mmax * jnp.sum(W * W) + l2H)
    return _kkt(W, gW, LW), _kkt(H, gH, LH)


def _check_beta(fn, beta_loss):
    if beta_loss != "frobenius":
        raise ValueError(f"{fn}: implicit gradients are implemented for beta_loss='frobenius'; "
                         f"got {beta_loss!r} (wrap the call in jax.lax.stop_gradient to use it "
                         f"inside a differentiated function)")


def _codes_F(W, theta, mask):
    X, H, l1, l2 = theta
    zero = jnp.zeros((), W.dtype)
    return _nmf_kkt((W, H), (X, l1, l2, zero, zero), mask)[0]


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _codes(beta_loss, opts, W, X, H, l1W, l2W, mask):
    return W


def _codes_fwd(beta_loss, opts, W, X, H, l1W, l2W, mask):
    return W, (W, X, H, l1W, l2W, mask)


def _codes_bwd(beta_loss, opts, res, g):
    _check_beta("nmf_transform", beta_loss)
    W, X, H, l1W, l2W, mask = res
    gX, gH, gl1, gl2 = _adjoint(_codes_F, W, (X, H, l1W, l2W), mask, g, opts, False)
    return None, gX, gH, gl1, gl2, None


_codes.defvjp(_codes_fwd, _codes_bwd)


def nmf_transform(W, X, H, reg, mask, beta_loss, opts):
    """Codes W of ``min_{W >= 0} D(X, W H) + penalty(W)`` with H fixed, with implicit gradients
    w.r.t. X, H and the W penalties: the KKT conditions on the active set, in W only."""
    return _codes(beta_loss, opts, W, X, H, reg.l1W, reg.l2W, mask)


def _factors_F(z, theta, mask):
    X, r = theta
    return _nmf_kkt(z, (X, r.l1W, r.l2W, r.l1H, r.l2H), mask)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _factors(beta_loss, opts, W, H, X, reg, mask):
    return W, H


def _factors_fwd(beta_loss, opts, W, H, X, reg, mask):
    return (W, H), (W, H, X, reg, mask)


def _factors_bwd(beta_loss, opts, res, g):
    _check_beta("nmf", beta_loss)
    W, H, X, reg, mask = res
    gX, greg = _adjoint(_factors_F, (W, H), (X, reg), mask, g, opts, False)
    return None, None, gX, greg, None


_factors.defvjp(_factors_fwd, _factors_bwd)


def nmf(W, H, X, reg, mask, beta_loss, opts):
    """(W, H) of a converged NMF, with implicit gradients w.r.t. X and the penalties (reg)."""
    return _factors(beta_loss, opts, W, H, X, reg, mask)


# ------------------------------------------------------------------------------------------------
# Biased matrix factorization (stationarity of the ALS objective)


def biased_mf(result, rows, cols, values, lam, shape, objective, opts, *, biased=True):
    """Attaches implicit gradients w.r.t. (values, lam) to an ALS fit: the root of grad J = 0.

    ``objective(mu, bu, bi, P, Q, rows, cols, values, lam)`` is the solver's J. Users or items
    without ratings do not enter J; the solver sets them to 0, and so does the root here. Without
    biases (``biased=False``) mu, b_u and b_i are held at 0: their equations are ``b = 0``."""
    m, n = shape
    empty = (jnp.bincount(rows, length=m) == 0, jnp.bincount(cols, length=n) == 0)

    def F(z, theta, aux):
        values_, lam_ = theta
        rows_, cols_, (eu, ei) = aux
        if biased:
            mu = jnp.mean(values_)
            g = jax.grad(lambda z_: objective(mu, *z_, rows_, cols_, values_, lam_))(z)
            pins = (eu, ei, eu[:, None], ei[:, None])
            return tuple(gi + jnp.where(p, zi, 0) for gi, zi, p in zip(g, z, pins))
        bu, bi, P, Q = z
        gP, gQ = jax.grad(lambda P_, Q_: objective(jnp.zeros((), P_.dtype), jnp.zeros_like(bu),
                                                    jnp.zeros_like(bi), P_, Q_, rows_, cols_,
                                                    values_, lam_), argnums=(0, 1))(P, Q)
        return (bu, bi, gP + jnp.where(eu[:, None], P, 0), gQ + jnp.where(ei[:, None], Q, 0))

    z = (result.user_bias, result.item_bias, result.user_factors, result.item_factors)
    bu, bi, P, Q = root(F, opts, True, z, (values, lam), (rows, cols, empty))
    mu = jnp.mean(values) if biased else jnp.zeros_like(result.mu)
    return result._replace(mu=mu, user_bias=bu, item_bias=bi, user_factors=P, item_factors=Q)
