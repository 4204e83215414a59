"""Non-negative matrix factorization: ``X ~= W @ H`` with ``W, H >= 0``.

Three solvers, one objective (plus optional penalties, in scikit-learn's parametrization)::

    min_{W, H >= 0}  D(X, W H) + l1_W ||W||_1 + l2_W / 2 ||W||_F^2 + l1_H ||H||_1 + l2_H / 2 ||H||_F^2

with ``D = 1/2 ||X - W H||_F^2`` ("frobenius") or the generalized Kullback-Leibler divergence
``sum(X log(X / WH) - X + WH)`` ("kullback-leibler"), optionally weighted entrywise by a mask.

* ``"pg"``: alternating non-negative least squares, each subproblem solved by projected gradient
  with an Armijo-type step search (Lin 2007).
* ``"mu"``: multiplicative updates (Lee & Seung 2001), the only solver for the KL divergence.
* ``"hals"``: hierarchical alternating least squares (Cichocki & Phan 2009), repeating the cheap
  column sweeps on the products of each half-step (Gillis & Glineur 2012).

X may be dense or a ``jax.experimental.sparse.BCOO`` matrix (text counts are sparse); a sparse X
is never densified: every product with it costs O(nnz * k).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from jaxfact import _checks
from jaxfact import _implicit_diff as _implicit
from jaxfact import _nmf_solvers as _s
from jaxfact import linop

__all__ = ["NMFResult", "nmf", "nmf_init", "nmf_transform"]

SOLVERS = ("pg", "mu", "hals")
INITS = ("nndsvda", "nndsvd", "nndsvdar", "random")
BETA_LOSSES = ("frobenius", "kullback-leibler")


class NMFResult(NamedTuple):
    """A non-negative factorization ``X ~= W @ H`` and how the solver got there."""

    W: jax.Array          # (m, k), >= 0
    H: jax.Array          # (k, n), >= 0
    loss: jax.Array       # (), the objective at (W, H), penalties included
    n_iter: jax.Array     # () int32, outer iterations done (each updates W, then H)
    converged: jax.Array  # () bool, True when the stopping rule (not max_iter) ended the run
    history: jax.Array    # (max_iter,), the objective after each iteration; NaN after n_iter


# ------------------------------------------------------------------------------------------------
# Public functions


def nmf(X: Any, rank: int, *, solver: str = "pg", init: str = "nndsvda", key: Any = None,
        max_iter: int = 200, tol: float = 1e-4, mask: Any = None,
        beta_loss: str = "frobenius", alpha_W: float = 0.0, alpha_H: float = 0.0,
        l1_ratio: float = 0.0, W_init: Any = None, H_init: Any = None,
        diff: _implicit.ImplicitDiff | None = None) -> NMFResult:
    """Non-negative matrix factorization ``X ~= W @ H``, ``W (m, k) >= 0``, ``H (k, n) >= 0``.

    Minimizes ``D(X, WH) + penalties`` (see the module docstring) by alternating updates of W and
    H, starting from an NNDSVD or random initialization (:func:`nmf_init`) or from
    ``W_init, H_init``.

    Solvers (one outer iteration updates W, then H):

    * ``"pg"`` (Lin 2007, Section 4, "alternating non-negative least squares using projected
      gradients"): each subproblem ``min_{H >= 0} 1/2 ||X - W H||^2`` is solved by projected
      gradient steps ``H <- P+[H - a grad]``; the step a starts at 1 in each subproblem, is carried
      over between its iterations, shrinks (x beta = 0.1) until the sufficient decrease
      ``f(new) - f(H) <= sigma <grad, new - H>``, sigma = 0.01, holds, or grows (/ beta) while it
      still holds, at most 20 trials. Lin's stopping condition is
      ``||grad^P f(W, H)|| <= tol ||grad f(W0', H0')||`` (his eq. 15), with (W0', H0') the start
      moved to its optimal scalar multiple; each subproblem stops at the smaller of
      ``max(1e-3, tol) ||grad f(W0', H0')||`` (divided by 10 whenever a subproblem needs no
      step, his code) and 0.1 times its own projected gradient at its start, or after 1000
      iterations. Cost per outer iteration: two products with X (O(nnz k)) and
      O((m + n) k^2) per inner iteration.
    * ``"mu"`` (Lee & Seung 2001, Theorems 1 and 2): ``H <- H * (W^T X) / (W^T W H)`` for the
      Frobenius loss and ``H <- H * (W^T (X / WH)) / (W^T 1)`` for KL; the objective never
      increases. Its updates cannot move an entry away from 0: a Frobenius run whose zero entries
      would lower the objective by growing (e.g. from ``init="nndsvd"``) is not converged. O(nnz
      k) per iteration.
    * ``"hals"`` (Cichocki & Phan 2009; Gillis & Glineur 2012, Algorithm 2): exact coordinate
      minimization over one column of W (row of H) at a time, with the products ``X H^T`` and
      ``H H^T`` formed once per half-step and up to ``floor(1 + 0.5 rho)`` sweeps over them,
      stopped when a sweep changes the factor by less than 0.1 times the first sweep. Same
      stopping rule as "pg".

    Stopping rule (every solver, after at least one iteration): with D the decrease of the
    objective over the last 5 iterations and q its ratio to the decrease over the 5 before, the
    decrease from 5 iterations ago to the limit, were it to continue at that rate,
    ``D / (1 - q)``, is at most ``tol / 4`` times the objective (or D is within rounding of
    it); pg and hals also need Lin's condition above (up to rounding). So
    ``converged=True`` means that a restart from the result (``W_init=res.W, H_init=res.H``)
    lowers the objective by at most about ``tol`` relatively; ``tol = 0`` runs ``max_iter``
    iterations. Multiplicative updates converge slowly: "mu" often needs more than the default
    ``max_iter`` for ``tol = 1e-4``, and then says ``converged=False``.

    Units: the fit does not depend on the scale of X (``nmf(c * X)`` returns ``sqrt(c)`` times
    the factors, up to rounding, for any c the dtype can hold): the kernels work on X divided by
    a power of 4 near ``max(mask * X)``, an exact operation, with penalties rescaled to match.

    Penalties follow scikit-learn's ``NMF``: ``l1_W = alpha_W * l1_ratio * n``, ``l2_W = alpha_W *
    (1 - l1_ratio) * n``, ``l1_H = alpha_H * l1_ratio * m``, ``l2_H = alpha_H * (1 - l1_ratio) * m``
    (there ``alpha_H`` defaults to ``"same"``; here to 0).

    With a ``mask`` (boolean, or non-negative weights of X's shape) the loss is summed over
    ``mask * loss_ij``: entries with weight 0 are missing values and do not influence the fit.
    The masked solvers work with dense (m, n) arrays: O(m n k) per inner iteration.

    A sparse X is laid out once per call, on the host, by rows and by columns in padded blocks
    (duplicate entries summed), so that every product with it is a gather loop, O(nnz k); under
    an outer ``jit`` it stays in coordinate form (segment sums; entries must then be unique).

    Args:
      X: (m, n) non-negative, finite, floating array or ``jax.experimental.sparse.BCOO`` (a SciPy
        sparse matrix is converted to BCOO). float16 and bfloat16 X is factorized in float32;
        W and H are returned in X's dtype, ``loss`` and ``history`` in float32.
      rank: k, 1 <= k <= min(m, n).
      solver: "pg", "mu" or "hals".
      init: "nndsvda" (zeros of NNDSVD filled with ``sqrt(mean(X) / k)``), "nndsvd", "nndsvdar"
        (zeros filled with small random values) or "random" (see :func:`nmf_init`); ignored when
        ``W_init, H_init`` are given. With a mask, the initialization is computed from
        ``mask * X``; the start is then scaled by the scalar c minimizing the loss of
        ``c W0 H0`` (for the loss and mask in use).
      key: ``jax.random`` key, needed for "random" and "nndsvdar", and used by the randomized SVD
        of large or sparse X (``jax.random.key(0)`` when omitted).
      max_iter: cap on outer iterations (static: it fixes the length of ``history``).
      tol: relative tolerance of the stopping rule, on the objective still to come (see above;
        traced: changing it does not recompile).
      mask: optional (m, n) boolean or non-negative weights.
      beta_loss: "frobenius" or "kullback-leibler" (the latter with ``solver="mu"`` only).
      alpha_W, alpha_H: penalty strengths >= 0; l1_ratio in [0, 1] mixes L1 (1) and L2 (0).
      W_init, H_init: (m, k) and (k, n) non-negative starting factors (both or neither), used
        as given (not rescaled). "mu" rejects an all-zero factor, every solver W = H = 0.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).

    Returns:
      ``NMFResult(W, H, loss, n_iter, converged, history)``.

    Differentiable (reverse mode, dense X, Frobenius loss) w.r.t. ``X``, ``alpha_W``, ``alpha_H``
    (and ``mask``-free or masked fits) by implicit differentiation of the KKT conditions at the
    returned (W, H): gradient zero on the positive entries, zero entries held at zero (strict
    complementarity assumed). Well defined only for losses invariant to NMF's freedom
    ``(W D P, P^T D^-1 H)`` (positive diagonal D, permutation P): losses of ``W @ H`` always;
    losses of W (or H) after a fixed normalization such as unit column norms only where the
    factorization is locally unique, i.e. W and H have enough zeros that no mixing
    ``(W R, R^-1 H)`` other than scaling keeps them non-negative (every column of W and row of
    H has a zero where another is positive). With strictly positive factors W itself is not
    determined, and neither are raw W and H without penalties (they can be rescaled freely; L2
    penalties, ``alpha > 0, l1_ratio < 1``, fix the scale): their gradients are meaningless,
    which ``diff=ImplicitDiff(strict=True)`` reports as NaN (the backward system is singular
    and inconsistent). Use a
    solver that reaches exact zeros ("pg" or "hals"; "mu" only approaches them) and a tight
    ``tol``. Backward: GMRES with O((m + n) k n) products; memory independent of ``max_iter``.

    Restarts: ``init="nndsvda"`` / ``"nndsvd"`` are deterministic; for several random starts use
    ``init="random"`` (or "nndsvdar") under ``jax.vmap`` over keys and keep the best with
    :func:`jaxfact.best_run` (a warning is raised when a key is given with a deterministic init).

    Raises:
      ValueError: negative or non-finite entries (checked with NumPy when X is concrete, also when
        it is captured by a function under ``jax.jit``), rank out of range, an all-zero start,
        unknown solver/init/beta_loss, "random"/"nndsvdar" init without a key, a mask or initial
        factor of the wrong shape, KL with a solver other than "mu".
      TypeError: non-floating X.

    Example::

      >>> X = jnp.abs(jax.random.normal(jax.random.key(0), (60, 40)))
      >>> res = nmf(X, 5, solver="hals")
      >>> res.W.shape, res.H.shape
      ((60, 5), (5, 40))

    References:
      C.-J. Lin. Projected gradient methods for non-negative matrix factorization. Neural
      Computation 19:2756-2779, 2007. D. D. Lee, H. S. Seung. Algorithms for non-negative matrix
      factorization. NIPS 13, 2001. A. Cichocki, A.-H. Phan. Fast local algorithms for large scale
      nonnegative matrix and tensor factorizations. IEICE Trans. 92-A, 2009. N. Gillis,
      F. Glineur. Accelerated multiplicative updates and hierarchical ALS algorithms for
      nonnegative matrix factorization. Neural Computation 24(4), 2012. C. Boutsidis,
      E. Gallopoulos. SVD based initialization: a head start for nonnegative matrix
      factorization. Pattern Recognition 41, 2008.

    Deviations: scikit-learn's mu compares the decrease over 10 iterations with the error at the
    start; here the decrease still to come is estimated (see the stopping rule). Lin's run also
    stops on a time limit (not here: use ``max_iter``); his outer stopping test uses the gradient
    of W from before the H update and the gradient at the start as given, here both gradients
    are taken at the current (W, H) and the reference at the optimally scaled start. HALS keeps a column at 0 once it is 0 (scikit-learn's cd does the same)
    rather than flooring it at a small positive value as Gillis & Glineur do.
    """
    fn = "nmf"
    X, out_dtype = _check_X(fn, X)
    m, n = X.shape
    rank = _checks.check_rank(fn, rank, (m, n))
    solver, beta_loss, max_iter, tol = _check_solver(fn, solver, beta_loss, max_iter, tol)
    reg = _regularization(fn, (m, n), alpha_W, alpha_H, l1_ratio, X.dtype)
    mask = _check_mask(fn, mask, (m, n), X.dtype)
    if (W_init is None) != (H_init is None):
        raise ValueError(f"{fn}: give both `W_init` and `H_init` or neither; got only "
                         f"{'`W_init`' if H_init is None else '`H_init`'}")
    diff = _implicit.check_diff(fn, diff)
    if W_init is not None:
        W0 = _check_factor(fn, "W_init", W_init, (m, rank), X.dtype)
        H0 = _check_factor(fn, "H_init", H_init, (rank, n), X.dtype)
        _check_start(fn, solver, W0, H0)
    else:
        if key is not None and init in ("nndsvd", "nndsvda"):
            warnings.warn(f"{fn}: init={init!r} is deterministic, so `key` does not change the "
                          f"start: runs with different keys (e.g. under jax.vmap) are identical. "
                          f"Use init='random' or 'nndsvdar' for random restarts.", stacklevel=2)
        # Missing entries (weight 0) must not steer the start either: initialize from mask * X.
        W0, H0 = _init(fn, X if mask is None else linop.masked(X, mask), rank, init, key)
    sg = jax.lax.stop_gradient
    fit = _nmf_kernel(sg(X), mask, sg(W0.T), sg(H0), jnp.asarray(tol, X.dtype), sg(reg),
                      solver=solver, beta_loss=beta_loss, max_iter=max_iter,
                      rescale=W_init is None)
    W, H = fit.Wt.T, fit.H
    if isinstance(X, jax.Array):
        W, H = _implicit.nmf(W, H, X, reg, mask, beta_loss, diff)
    return NMFResult(W.astype(out_dtype), H.astype(out_dtype), fit.loss, fit.n_iter,
                     fit.converged, fit.history)


def nmf_transform(X: Any, H: Any, *, solver: str = "pg", max_iter: int = 200,
                  tol: float = 1e-4, mask: Any = None, beta_loss: str = "frobenius",
                  alpha_W: float = 0.0, l1_ratio: float = 0.0,
                  diff: _implicit.ImplicitDiff | None = None) -> jax.Array:
    """Non-negative codes ``W = argmin_{W >= 0} D(X, W H) + penalty(W)`` for new rows, H fixed.

    This embeds unseen data in a fitted NMF basis (scikit-learn's ``NMF.transform``). The problem
    is convex; it is solved by the W half-steps of the chosen solver (see :func:`nmf`), from a
    constant W scaled to minimize the loss, until the solver's stopping rule or ``max_iter``.
    float16/bfloat16 X is handled in float32 and W returned in X's dtype.

    Args:
      X: (m, n) non-negative dense array or BCOO.
      H: (k, n) non-negative basis, e.g. ``nmf(...).H``.
      solver, max_iter, tol, mask, beta_loss, alpha_W, l1_ratio: as in :func:`nmf`.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).

    Returns:
      W: (m, k) non-negative codes.

    Differentiable (reverse mode, dense X, Frobenius loss) w.r.t. ``X``, ``H`` and ``alpha_W``
    by implicit differentiation of the KKT conditions of this convex problem at the returned W
    (the gradient vanishes on the free entries, the others stay 0): GMRES on the free set, each
    product O(m k n); memory independent of ``max_iter``. Assumes the solve converged (tight
    ``tol``; "pg" or "hals", which reach exact zeros).

    Example::

      >>> res = nmf(X_train, 10)
      >>> W_new = nmf_transform(X_new, res.H)
    """
    fn = "nmf_transform"
    X, out_dtype = _check_X(fn, X)
    m, n = X.shape
    H = _checks.as_float_array(fn, "H", H)
    if H.shape[1] != n:
        raise ValueError(f"{fn}: `H` must have {n} columns (the columns of `X`); got shape "
                         f"{tuple(H.shape)}")
    _check_values(fn, "H", H)
    H = H.astype(X.dtype)
    rank = H.shape[0]
    solver, beta_loss, max_iter, tol = _check_solver(fn, solver, beta_loss, max_iter, tol)
    reg = _regularization(fn, (m, n), alpha_W, 0.0, l1_ratio, X.dtype)
    mask = _check_mask(fn, mask, (m, n), X.dtype)
    diff = _implicit.check_diff(fn, diff)
    sg = jax.lax.stop_gradient
    fit = _transform_kernel(sg(X), mask, sg(H), jnp.asarray(tol, X.dtype), sg(reg),
                            solver=solver, beta_loss=beta_loss, max_iter=max_iter)
    if not isinstance(X, jax.Array):
        return fit.Wt.T.astype(out_dtype)
    return _implicit.nmf_transform(fit.Wt.T, X, H, reg, mask, beta_loss, diff).astype(out_dtype)


def nmf_init(X: Any, rank: int, *, init: str = "nndsvda", key: Any = None
             ) -> tuple[jax.Array, jax.Array]:
    """Starting factors ``(W (m, k), H (k, n))`` for :func:`nmf`.

    * "nndsvd" (Boutsidis & Gallopoulos 2008, Table 1): from the top-k singular triplets
      ``(u_j, s_j, v_j)`` of X, ``W[:, j] = sqrt(s_j sigma_j) p_j`` and ``H[j] = sqrt(s_j sigma_j)
      q_j`` where ``(p_j, q_j)`` are the normalized positive parts (or negative parts, whichever
      has the larger norm product sigma_j) of ``(u_j, v_j)``; the first pair is ``|u_1|, |v_1|``.
      Entries below ``1e-6 sqrt(s_1)`` are set to 0 (scikit-learn: below 1e-6, which erases
      every entry of small-valued X). Good for sparse factors.
    * "nndsvda": the zeros of "nndsvd" replaced by ``sqrt(mean(X) / k)`` (better when zeros must
      not stick, e.g. for "mu", whose updates cannot leave 0). The paper and scikit-learn use
      mean(X), which makes ``W0 H0`` scale like mean(X)^2, so the start (and the fit) depended on
      the units of X.
    * "nndsvdar": the zeros replaced by ``|sqrt(mean(X) / k) * N(0, 1) / 100|``.
    * "random": ``sqrt(mean(X) / k) * |N(0, 1)|`` entries, scikit-learn's scaling.

    Every start is then multiplied by the scalar c minimizing ``||X - c W0 H0||_F``; computed on
    X divided by a power of 4 near max(X), so X of any magnitude gives the same start up to
    its units. float16/bfloat16 X is handled in float32, the factors returned in X's dtype.

    The SVD is exact for dense X with min(m, n) <= 256, otherwise randomized (10 oversamples,
    scikit-learn's power iterations; :func:`jaxfact.randomized_svd`), which works on BCOO X
    without densifying it.

    Args:
      X: (m, n) non-negative dense array or BCOO.
      rank: k.
      init: "nndsvda", "nndsvd", "nndsvdar" or "random".
      key: ``jax.random`` key (required for "random" and "nndsvdar"; defaults to
        ``jax.random.key(0)`` for the randomized SVD otherwise).

    Example::

      >>> W0, H0 = nmf_init(X, 10, init="nndsvd")
    """
    fn = "nmf_init"
    X, out_dtype = _check_X(fn, X)
    rank = _checks.check_rank(fn, rank, X.shape)
    W, H = _init(fn, X, rank, init, key)
    return W.astype(out_dtype), H.astype(out_dtype)


def _init(fn, X, rank, init, key):
    init = _checks.check_choice(fn, "init", init, INITS)
    if init in ("random", "nndsvdar"):
        key = _checks.check_key(fn, key, why=f"init={init!r} draws random values")
    elif key is None:
        key = jax.random.key(0)
    else:
        key = _checks.check_key(fn, key)
    return _s.initialize(X, key, rank=rank, init=init)


# ------------------------------------------------------------------------------------------------
# Validation helpers


def _check_solver(fn, solver, beta_loss, max_iter, tol):
    solver = _checks.check_choice(fn, "solver", solver, SOLVERS)
    beta_loss = _checks.check_choice(fn, "beta_loss", beta_loss, BETA_LOSSES)
    if beta_loss == "kullback-leibler" and solver != "mu":
        raise ValueError(f"{fn}: `beta_loss`='kullback-leibler' needs `solver`='mu' (pg and hals "
                         f"solve least-squares subproblems); got `solver`={solver!r}")
    max_iter = _checks.check_int(fn, "max_iter", max_iter, low=1)
    tol = _checks.check_real(fn, "tol", tol, low=0.0)
    return solver, beta_loss, max_iter, tol


# float16 and bfloat16 have too little range for the products NMF forms (the objective is a sum of
# squares of X's entries): such X is factorized in float32 and the factors returned in its dtype.
_LOW_PRECISION = (jnp.float16, jnp.bfloat16)


def _compute_dtype(dtype):
    return jnp.dtype(jnp.float32) if dtype in _LOW_PRECISION else jnp.dtype(dtype)


def _check_values(fn, name, x):
    """Finite and non-negative when ``x`` is concrete (also when it is an array captured by a
    function under ``jax.jit``: the shared checks evaluate eagerly there)."""
    _checks.check_finite(fn, name, x)
    _checks.check_nonnegative(fn, name, x)


def _check_X(fn, X):
    """X as a float32/float64 dense array or a :class:`jaxfact.linop.SparseMatrix` (values checked
    when concrete), and the dtype to return results in."""
    if hasattr(X, "tocoo") and hasattr(X, "nnz"):  # a SciPy sparse matrix or array
        X = jsparse.BCOO.from_scipy_sparse(X)
    if isinstance(X, jsparse.BCOO):
        if len(X.shape) != 2 or X.n_batch or X.n_dense:
            raise ValueError(f"{fn}: `X` must be a 2-D BCOO matrix without batch or dense "
                             f"dimensions; got shape {X.shape}")
        _checks.check_float_dtype(fn, "X", X.dtype)
        out = X.dtype
        if _compute_dtype(out) != out:
            X = jsparse.BCOO((X.data.astype(_compute_dtype(out)), X.indices), shape=X.shape)
        if _checks.is_concrete(X):
            _check_values(fn, "X", X)
        return linop.SparseMatrix.from_bcoo(X), out  # concrete: duplicates summed, ELL layout
    if isinstance(X, (linop.ObservedMatrix, linop.LinearOperator)):
        raise TypeError(f"{fn}: `X` must be a dense array or a BCOO matrix; got "
                        f"{type(X).__name__}")
    X = _checks.as_float_array(fn, "X", X)
    _check_values(fn, "X", X)
    return X.astype(_compute_dtype(X.dtype)), X.dtype


def _check_mask(fn, mask, shape, dtype):
    if mask is None:
        return None
    if isinstance(mask, jsparse.BCOO):
        raise TypeError(f"{fn}: `mask` must be a dense array of the shape of `X`; got a BCOO "
                        f"matrix (`mask.todense()`)")
    if not hasattr(mask, "dtype"):
        mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{fn}: `mask` must have the shape of `X`, {tuple(shape)}; got shape "
                         f"{tuple(mask.shape)}")
    if mask.dtype == jnp.bool_:
        return jnp.asarray(mask).astype(dtype)
    mask = _checks.as_float_array(fn, "mask", mask)
    _check_values(fn, "mask", mask)
    return mask.astype(dtype)


def _check_factor(fn, name, F, shape, dtype):
    F = _checks.as_float_array(fn, name, F)
    if tuple(F.shape) != tuple(shape):
        raise ValueError(f"{fn}: `{name}` must have shape {tuple(shape)}; got shape "
                         f"{tuple(F.shape)}")
    _check_values(fn, name, F)
    return F.astype(dtype)


def _check_start(fn, solver, W0, H0):
    """Rejects starts the solver cannot leave: multiplicative updates keep a zero factor at
    zero, and W = H = 0 is a stationary point of every solver (the gradient vanishes)."""
    if not _checks.is_concrete((W0, H0)):
        return
    zero_w, zero_h = not np.any(np.asarray(W0)), not np.any(np.asarray(H0))
    if solver == "mu" and (zero_w or zero_h):
        name = "W_init" if zero_w else "H_init"
        raise ValueError(f"{fn}: `{name}` is all zeros; multiplicative updates (solver='mu') "
                         f"cannot move a factor away from 0. Start from positive values, e.g. "
                         f"init='nndsvda' or 'random'")
    if zero_w and zero_h:
        raise ValueError(f"{fn}: `W_init` and `H_init` are all zeros, a stationary point that "
                         f"solver={solver!r} cannot leave; start from e.g. init='nndsvda'")


def _regularization(fn, shape, alpha_W, alpha_H, l1_ratio, dtype):
    m, n = shape
    alpha_W = _checks.check_real(fn, "alpha_W", alpha_W, low=0.0)
    alpha_H = _checks.check_real(fn, "alpha_H", alpha_H, low=0.0)
    l1_ratio = _checks.check_real(fn, "l1_ratio", l1_ratio, low=0.0, high=1.0)
    aW, aH, r = (jnp.asarray(v, dtype) for v in (alpha_W, alpha_H, l1_ratio))
    return _s.Reg(aW * r * n, aW * (1 - r) * n, aH * r * m, aH * (1 - r) * m)


# ------------------------------------------------------------------------------------------------
# Kernels


@partial(jax.jit, static_argnames=("solver", "beta_loss", "max_iter", "rescale"))
def _nmf_kernel(X, mask, Wt, H, tol, reg, *, solver, beta_loss, max_iter, rescale):
    return _s.solve(X, mask, Wt, H, tol, reg, solver=solver, beta_loss=beta_loss,
                    max_iter=max_iter, update_H=True, rescale=rescale)


@partial(jax.jit, static_argnames=("solver", "beta_loss", "max_iter"))
def _transform_kernel(X, mask, H, tol, reg, *, solver, beta_loss, max_iter):
    m, n = X.shape
    k = H.shape[0]
    # A constant start, moved to its optimal scalar multiple by the solver.
    Wt = jnp.ones((k, m), X.dtype)
    return _s.solve(X, mask, Wt, H, tol, reg, solver=solver, beta_loss=beta_loss,
                    max_iter=max_iter, update_H=False, rescale=True)
