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

X may be dense or sparse (BCOO, BCSR, SciPy sparse, :class:`jaxfact.linop.SparseMatrix`,
:class:`jaxfact.linop.ObservedMatrix`; text counts are sparse); a sparse X is never densified:
every product with it costs O(nnz * k).

Sharding: a dense X split by rows over a mesh (``NamedSharding(mesh, P("data", None))``) is
factorized where it lives: each device updates its rows of W from its rows of X, and only the
(k, n) product ``W^T X``, the (k, k) Gram ``W^T W`` and scalars (the objective, the norms of the
stopping rule) are summed across devices; W comes back split like X, H replicated.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxfact import _checks
from jaxfact import _implicit_diff as _implicit
from jaxfact import _nmf_input as _in
from jaxfact import linop
from jaxfact._nmf_init import initialize, initialize_sharded, svd_is_randomized
from jaxfact._nmf_solvers import solve, solve_sharded
from jaxfact._solver import Status

__all__ = ["NMFResult", "nmf", "nmf_init", "nmf_transform"]


class NMFResult(NamedTuple):
    """A non-negative factorization ``X ~= W @ H`` and how the solver got there."""

    W: jax.Array          # (m, k), >= 0
    H: jax.Array          # (k, n), >= 0
    loss: jax.Array       # (), the objective at (W, H), penalties included
    n_iter: jax.Array     # () int32, outer iterations done (each updates W, then H)
    converged: jax.Array  # () bool, status == Status.CONVERGED
    history: jax.Array    # (max_iter,), the objective after each iteration; NaN after n_iter
    status: jax.Array     # () int32, a Status: how the run ended


def nmf(X: Any, rank: int, *, solver: str = "pg", init: str = "nndsvda", key: Any = None,
        max_iter: int = 200, tol: float = 1e-4, mask: Any = None,
        beta_loss: str = "frobenius", alpha_W: float = 0.0, alpha_H: float = 0.0,
        l1_ratio: float = 0.0, warm_start: Any = None,
        diff: _implicit.ImplicitDiff | None = None, checks: bool = False,
        W_init: Any = None, H_init: Any = None) -> NMFResult:
    """Non-negative matrix factorization ``X ~= W @ H``, ``W (m, k) >= 0``, ``H (k, n) >= 0``.

    Minimizes ``D(X, WH) + penalties`` (see the module docstring) by alternating updates of W and
    H, starting from an NNDSVD or random initialization (:func:`nmf_init`) or from
    ``warm_start``.

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
      step, his code) and 0.1 times its own projected gradient at its start, or once a step
      lowers the subproblem's objective by less than 0.1 times its first step did (Gillis &
      Glineur's 2012 inner rule, which Lin's method does not have: without it, ill-conditioned
      subproblems take hundreds of slow steps each), or after 1000 iterations (his code). Cost per outer iteration: two products with X (O(nnz k)) and
      O((m + n) k^2) per inner iteration: ``W^T X`` and ``W^T W`` are formed once per
      subproblem, and each step-size trial costs one k x k product, which also updates the
      gradient.
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
    ``converged=True`` (``status == Status.CONVERGED``) means that a restart from the result
    (``warm_start=res``) lowers the objective by at most about ``tol`` relatively; ``tol = 0`` runs ``max_iter``
    iterations. Multiplicative updates converge slowly: "mu" often needs more than the default
    ``max_iter`` for ``tol = 1e-4``, and then says ``converged=False`` (``Status.MAX_ITER``). A
    NaN or infinite objective stops the run with ``Status.DIVERGED``.

    Units: the fit does not depend on the scale of X (``nmf(c * X)`` returns ``sqrt(c)`` times
    the factors, up to rounding, for any c the dtype can hold): the kernels work on X divided by
    a power of 4 near ``max(mask * X)``, an exact operation, with penalties rescaled to match.

    Penalties follow scikit-learn's ``NMF``: ``l1_W = alpha_W * l1_ratio * n``, ``l2_W = alpha_W *
    (1 - l1_ratio) * n``, ``l1_H = alpha_H * l1_ratio * m``, ``l2_H = alpha_H * (1 - l1_ratio) * m``
    (there ``alpha_H`` defaults to ``"same"``; here to 0).

    With a ``mask`` (boolean, or non-negative weights of X's shape) the loss is summed over
    ``mask * loss_ij``: entries with weight 0 are missing values and do not influence the fit.
    The masked solvers work with dense (m, n) arrays: O(m n k) per inner iteration.

    A sparse X is laid out on the host, by rows and by columns in padded blocks (duplicate
    entries summed), so that every product with it is a gather loop, O(nnz k); under an outer
    ``jit`` it stays in coordinate form (segment sums; entries must then be unique). A BCOO,
    BCSR or SciPy matrix is laid out again at every call; a :class:`jaxfact.linop.SparseMatrix`
    is used as it is. For several calls on one matrix (``nmf`` at several ranks or solvers,
    ``nmf_transform``, :func:`jaxfact.randomized_svd`, :func:`jaxfact.word_vectors`) build it
    once with :func:`jaxfact.linop.as_operator` and pass that (second example below): the
    layout costs about as much as a few iterations.

    Sharding: a dense X may be split by rows over any mesh axes (``NamedSharding(mesh,
    P("data", None))``, concrete or, under an outer ``jit``, on a mesh with explicit axes);
    ``mask`` is then placed like X (a device array split otherwise is resharded, with a
    ``UserWarning``), a ``warm_start`` W like X and H replicated. All solvers and both losses
    run in one ``shard_map``: W (m, k) comes back split like X (``P("data", None)``), H,
    ``loss``, ``history`` and the rest replicated, and the result equals the unsharded one up to
    the order of floating-point sums (the stopping rule reads psum'd values, the same on every
    device). Per outer iteration the devices sum (``psum``) the (k, n) product ``W^T (M * X)``,
    the (k, k) Gram ``W^T W`` (unmasked) and a few scalars (objective, gradient norms; "hals"
    one more per sweep, "pg" a few per step trial of its W subproblems); with a mask, the H
    step's Hessian products are psums too ((k, n) per "pg"/"mu" step, (n,) per "hals" row).
    Measured ("hals", k = 10, n = 1000, float32): 40,428 bytes per iteration plus 4 per extra
    sweep, against the (k n + k^2) * 4 = 40,400 of the two products.
    The random start draws the full W from ``key`` and keeps each device's rows (the same start
    as on one device); the NNDSVD starts use a tall-skinny QR of X (exact SVD; it sums
    ``p min(m / p, n) n`` entries of R factors once) or, with a key and min(m, n) > 256, the
    sharded randomized SVD. X sharded along its columns, or along both dimensions, is resharded
    by rows once with a ``UserWarning``. Sparse X is not sharded: it runs on one device.

    Args:
      X: (m, n) non-negative, finite, floating array, or a sparse matrix: a
        ``jax.experimental.sparse`` BCOO or BCSR, a SciPy sparse matrix, a
        :class:`jaxfact.linop.SparseMatrix` or a :class:`jaxfact.linop.ObservedMatrix` (a
        :class:`jaxfact.linop.LinearOperator` is rejected: NMF reads the entries of X). float16
        and bfloat16 X is factorized in float32; W and H are returned in X's dtype, ``loss``
        and ``history`` in float32.
      rank: k, 1 <= k <= min(m, n).
      solver: "pg", "mu" or "hals".
      init: "nndsvda" (zeros of NNDSVD filled with ``sqrt(mean(X) / k)``), "nndsvd", "nndsvdar"
        (zeros filled with small random values) or "random" (see :func:`nmf_init`); ignored when
        ``warm_start`` is given. With a mask, the initialization is computed from
        ``mask * X``; the start is then scaled by the scalar c minimizing the loss of
        ``c W0 H0`` (for the loss and mask in use).
      key: ``jax.random`` key. Required for "random" and "nndsvdar", and for the NNDSVD starts
        of sparse X (a randomized SVD). Without a key the SVD of dense X is exact (deterministic,
        O(m n min(m, n))); with a key, dense X with min(m, n) > 256 gets the faster randomized
        SVD of :func:`nmf_init`, whose start depends on the key.
      max_iter: cap on outer iterations (static: it fixes the length of ``history``).
      tol: relative tolerance of the stopping rule, on the objective still to come (see above;
        traced: changing it does not recompile).
      mask: optional (m, n) boolean or non-negative weights.
      beta_loss: "frobenius" or "kullback-leibler" (the latter with ``solver="mu"`` only).
      alpha_W, alpha_H: penalty strengths >= 0; l1_ratio in [0, 1] mixes L1 (1) and L2 (0).
      warm_start: start from this earlier result: an :class:`NMFResult` or a pair ``(W, H)`` of
        (m, k) and (k, n) non-negative factors, used as given (not rescaled). "mu" rejects an
        all-zero factor, every solver W = H = 0.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).
      checks: under an outer ``jit``, also check that X (and the mask and start) are finite and
        non-negative, with ``jax.experimental.checkify`` (wrap the jitted caller in
        ``checkify.checkify``).
      W_init, H_init: deprecated, use ``warm_start=(W_init, H_init)``.

    Returns:
      ``NMFResult(W, H, loss, n_iter, converged, history, status)``: ``history[i]`` is the
      objective (``loss``'s, penalties included) after iteration i + 1, NaN after ``n_iter``.

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

    Restarts: ``init="nndsvda"`` / ``"nndsvd"`` are deterministic without a key; for several
    random starts use ``init="random"`` (or "nndsvdar") under ``jax.vmap`` over keys and keep the
    best with :func:`jaxfact.best_run` (a warning is raised when a key is given with a start that
    does not depend on it).

    Raises:
      ValueError: negative or non-finite entries (checked with NumPy when X is concrete, also when
        it is captured by a function under ``jax.jit``), rank out of range, an all-zero start,
        unknown solver/init/beta_loss, "random"/"nndsvdar" init (or NNDSVD of sparse X) without
        a key, a mask or initial factor of the wrong shape, KL with a solver other than "mu".
      TypeError: non-floating X, or X a ``linop.LinearOperator``.

    Example:
      >>> X = jnp.abs(jax.random.normal(jax.random.key(0), (60, 40)))
      >>> res = nmf(X, 5, solver="hals", tol=1e-3)
      >>> res.W.shape, res.H.shape
      ((60, 5), (5, 40))
      >>> bool(res.converged), Status(int(res.status)).name
      (True, 'CONVERGED')

      A sparse matrix laid out once and used twice (the NNDSVD start of sparse X is a
      randomized SVD, so it needs a key):

      >>> import scipy.sparse as sp
      >>> counts = sp.random(200, 80, density=0.05, random_state=0, format="csr")
      >>> Xs = linop.as_operator(counts.astype(np.float32))   # the host layout, built once
      >>> topics = nmf(Xs, 4, solver="hals", key=jax.random.key(0))
      >>> codes = nmf_transform(topics, Xs, solver="hals")      # the same layout, not rebuilt
      >>> topics.W.shape, codes.W.shape
      ((200, 4), (200, 4))

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
    are taken at the current (W, H) and the reference at the optimally scaled start; his
    subproblems have no stalled-progress stop. HALS keeps a column at 0 once it is 0 (scikit-learn's cd does the same)
    rather than flooring it at a small positive value as Gillis & Glineur do.
    """
    fn = "nmf"
    X, out_dtype = _in.check_X(fn, X, checks)
    X, layout = _in.row_layout(fn, X)
    m, n = X.shape
    rank = _checks.check_rank(fn, rank, (m, n))
    solver, beta_loss, max_iter, tol = _in.check_solver(fn, solver, beta_loss, max_iter, tol)
    reg = _in.regularization(fn, (m, n), alpha_W, alpha_H, l1_ratio, X.dtype)
    mask = _in.like_rows(fn, "mask", _in.check_mask(fn, mask, (m, n), X.dtype, checks), layout,
                         given=mask)
    start = _in.warm_start_factors(fn, warm_start, W_init, H_init)
    diff = _implicit.check_diff(fn, diff)
    if start is not None:
        W0 = _in.check_factor(fn, "warm_start.W", start[0], (m, rank), X.dtype, checks)
        H0 = _in.check_factor(fn, "warm_start.H", start[1], (rank, n), X.dtype, checks)
        _in.check_start(fn, solver, W0, H0)
        W0, H0 = _in.place(W0, layout), _in.place(H0, layout, replicated=True)
    else:
        if (key is not None and init in ("nndsvd", "nndsvda")
                and not svd_is_randomized(X, key_given=True)):
            warnings.warn(f"{fn}: init={init!r} is deterministic on this X (exact SVD), so "
                          f"`key` does not change the start: runs with different keys (e.g. "
                          f"under jax.vmap) are identical. Use init='random' or 'nndsvdar' for "
                          f"random restarts.", stacklevel=2)
        # Missing entries (weight 0) must not steer the start either: initialize from mask * X.
        # The start carries no gradient (the implicit gradient is taken at the solution).
        Xs = jax.lax.stop_gradient(X if mask is None else linop.masked(X, mask))
        W0, H0 = _init(fn, Xs, rank, init, key, layout)
    sg = jax.lax.stop_gradient
    args = (sg(X), mask, sg(W0.T), sg(H0), jnp.asarray(tol, X.dtype), sg(reg))
    opts = dict(solver=solver, beta_loss=beta_loss, max_iter=max_iter, rescale=start is None)
    if layout is None:
        fit = _nmf_kernel(*args, **opts)
    else:
        fit = solve_sharded(*args, **opts, update_H=True, mesh=layout.mesh, axes=layout.axes)
    W, H = fit.Wt.T, fit.H
    if isinstance(X, jax.Array):
        W, H = _implicit.nmf(W, H, X, reg, mask, beta_loss, diff)
    return NMFResult(W.astype(out_dtype), H.astype(out_dtype), fit.loss, fit.n_iter,
                     fit.status == Status.CONVERGED, fit.history, fit.status)


def nmf_transform(result: Any, X: Any, *, solver: str = "pg", max_iter: int = 200,
                  tol: float = 1e-4, mask: Any = None, beta_loss: str = "frobenius",
                  alpha_W: float = 0.0, l1_ratio: float = 0.0,
                  diff: _implicit.ImplicitDiff | None = None,
                  checks: bool = False) -> NMFResult:
    """Non-negative codes ``W = argmin_{W >= 0} D(X, W H) + penalty(W)`` for new rows, H fixed.

    This embeds unseen data in a fitted NMF basis (scikit-learn's ``NMF.transform``). The problem
    is convex; it is solved by the W half-steps of the chosen solver (see :func:`nmf`), from a
    constant W scaled to minimize the loss, until the solver's stopping rule or ``max_iter``.
    float16/bfloat16 X is handled in float32 and W returned in X's dtype.

    Args:
      result: the basis: an :class:`NMFResult` (its H) or a (k, n) non-negative array H.
      X: (m, n) non-negative dense array or sparse matrix (the forms :func:`nmf` accepts).
      solver, max_iter, tol, mask, beta_loss, alpha_W, l1_ratio: as in :func:`nmf`.
      diff: settings of the implicit gradient's backward solve (:class:`ImplicitDiff`).
      checks: under an outer ``jit``, also check that X and H are finite and non-negative, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      ``NMFResult(W, H, loss, n_iter, converged, history, status)``: W (m, k) the codes, H the
      fixed basis (in X's dtype), ``loss`` the objective at W (penalty on W included),
      ``history`` the objective after each iteration (NaN after ``n_iter``), ``status`` and
      ``converged`` as in :func:`nmf`.

    Sharding: as in :func:`nmf`: a dense X split by rows (and a mask split the same way) gives
    W split by rows, the rest replicated (H is replicated first if it is not). Each device
    solves for its own rows; per iteration the devices sum only scalars (the objective and the
    stopping rule's norms; "hals" one more per sweep, "pg" a few per step trial), with or
    without a mask.

    Differentiable (reverse mode, dense X, Frobenius loss) w.r.t. ``X``, ``H`` and ``alpha_W``
    by implicit differentiation of the KKT conditions of this convex problem at the returned W
    (the gradient vanishes on the free entries, the others stay 0): GMRES on the free set, each
    product O(m k n); memory independent of ``max_iter``. Assumes the solve converged (tight
    ``tol``; "pg" or "hals", which reach exact zeros).

    Example:
      >>> X = jnp.abs(jax.random.normal(jax.random.key(0), (60, 40)))
      >>> res = nmf(X[:50], 4, solver="hals")
      >>> codes = nmf_transform(res, X[50:], solver="hals")
      >>> codes.W.shape, bool((codes.W >= 0).all())
      ((10, 4), True)
    """
    fn = "nmf_transform"
    H = result.H if isinstance(result, NMFResult) else result
    X, out_dtype = _in.check_X(fn, X, checks)
    X, layout = _in.row_layout(fn, X)
    m, n = X.shape
    H = _checks.as_float_array(fn, "H", H)
    if H.shape[1] != n:
        raise ValueError(f"{fn}: `H` must have {n} columns (the columns of `X`); got shape "
                         f"{tuple(H.shape)}")
    if H.shape[0] > n:  # e.g. the former order nmf_transform(X, H) with a tall X
        raise ValueError(f"{fn}: the basis `H` must be (k, n) with k <= n = {n}; got shape "
                         f"{tuple(H.shape)}. The arguments are (result, X): "
                         f"nmf_transform(X, H) is now nmf_transform(H, X)")
    _in.check_values(fn, "H", H, checks)
    H = H.astype(X.dtype)
    solver, beta_loss, max_iter, tol = _in.check_solver(fn, solver, beta_loss, max_iter, tol)
    reg = _in.regularization(fn, (m, n), alpha_W, 0.0, l1_ratio, X.dtype)
    mask = _in.like_rows(fn, "mask", _in.check_mask(fn, mask, (m, n), X.dtype, checks), layout,
                         given=mask)
    diff = _implicit.check_diff(fn, diff)
    sg = jax.lax.stop_gradient
    tol = jnp.asarray(tol, X.dtype)
    opts = dict(solver=solver, beta_loss=beta_loss, max_iter=max_iter)
    if layout is None:
        H = _in.place(H, None)
        fit = _transform_kernel(sg(X), mask, sg(H), tol, sg(reg), **opts)
    else:
        # Wt=None: the constant start of _transform_kernel, made on each device for its rows.
        H = _in.place(H, layout, replicated=True)
        fit = solve_sharded(sg(X), mask, None, sg(H), tol, sg(reg), **opts, update_H=False,
                            rescale=True, mesh=layout.mesh, axes=layout.axes)
    W = fit.Wt.T
    if isinstance(X, jax.Array):
        W = _implicit.nmf_transform(W, X, H, reg, mask, beta_loss, diff)
    return NMFResult(W.astype(out_dtype), H.astype(out_dtype), fit.loss, fit.n_iter,
                     fit.status == Status.CONVERGED, fit.history, fit.status)


def nmf_init(X: Any, rank: int, *, init: str = "nndsvda", key: Any = None,
             checks: bool = False) -> tuple[jax.Array, jax.Array]:
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

    The SVD of dense X is exact (deterministic) without a key, or when min(m, n) <= 256; with a
    key, larger dense X gets a randomized SVD (10 oversamples, scikit-learn's power
    iterations; :func:`jaxfact.randomized_svd`), and so does sparse X, which is never densified
    and therefore needs a key for the NNDSVD starts. For sparse X the power iterations (at most
    scikit-learn's count) stop early once the top-k singular subspace has converged to
    rounding: after 1-3 of them when the spectrum has a gap after the k-th value.

    Sharding: a dense X split by rows gives W split the same way and H replicated, the same
    start as on one device (see :func:`nmf`).

    Args:
      X: (m, n) non-negative dense array or sparse matrix (the forms :func:`nmf` accepts).
      rank: k.
      init: "nndsvda", "nndsvd", "nndsvdar" or "random".
      key: ``jax.random`` key (required for "random" and "nndsvdar", and for sparse X).
      checks: under an outer ``jit``, also check that X is finite and non-negative, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Example:
      >>> X = jnp.abs(jax.random.normal(jax.random.key(0), (60, 40)))
      >>> W0, H0 = nmf_init(X, 10, init="nndsvd")
      >>> W0.shape, H0.shape, bool((W0 >= 0).all() & (H0 >= 0).all())
      ((60, 10), (10, 40), True)
    """
    fn = "nmf_init"
    X, out_dtype = _in.check_X(fn, X, checks)
    X, layout = _in.row_layout(fn, X)
    rank = _checks.check_rank(fn, rank, X.shape)
    W, H = _init(fn, X, rank, init, key, layout)
    return W.astype(out_dtype), H.astype(out_dtype)


def _init(fn, X, rank, init, key, layout=None):
    init = _checks.check_choice(fn, "init", init, _in.INITS)
    if init in ("random", "nndsvdar"):
        key = _checks.check_key(fn, key, why=f"init={init!r} draws random values")
    elif isinstance(X, linop.SparseMatrix):
        key = _checks.check_key(fn, key, why=f"init={init!r} of a sparse X computes a "
                                             f"randomized SVD")
    elif key is not None:
        key = _checks.check_key(fn, key)
    if layout is not None:
        return initialize_sharded(X, key, rank=rank, init=init, mesh=layout.mesh,
                                  axes=layout.axes)
    return initialize(X, key, rank=rank, init=init)


# ------------------------------------------------------------------------------------------------
# Kernels


@partial(jax.jit, static_argnames=("solver", "beta_loss", "max_iter", "rescale"))
def _nmf_kernel(X, mask, Wt, H, tol, reg, *, solver, beta_loss, max_iter, rescale):
    return solve(X, mask, Wt, H, tol, reg, solver=solver, beta_loss=beta_loss,
                 max_iter=max_iter, update_H=True, rescale=rescale)


@partial(jax.jit, static_argnames=("solver", "beta_loss", "max_iter"))
def _transform_kernel(X, mask, H, tol, reg, *, solver, beta_loss, max_iter):
    m = X.shape[0]
    k = H.shape[0]
    # A constant start, moved to its optimal scalar multiple by the solver.
    Wt = jnp.ones((k, m), X.dtype)
    return solve(X, mask, Wt, H, tol, reg, solver=solver, beta_loss=beta_loss,
                 max_iter=max_iter, update_H=False, rescale=True)
