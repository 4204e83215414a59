"""Several starts of a non-convex solver at once, and the best of them.

Non-convex factorizations (NMF, biased MF) reach different local minima from different starts.
All of jaxfact's solvers are pure functions of a ``key``, so restarts are one ``jax.vmap``::

    keys = jax.random.split(jax.random.key(0), 8)
    runs = jax.vmap(lambda k: jaxfact.nmf(X, 10, init="random", key=k))(keys)
    best = jaxfact.best_run(runs)

The batched runs share every matrix product (one batched product instead of eight calls), and
the batched ``while_loop`` runs until the slowest restart stops: finished runs keep their result
but are still computed (and discarded) at each later iteration.
A start must depend on the key: NMF's default ``init="nndsvda"`` is deterministic (``nmf``
warns), so use ``init="random"`` or ``"nndsvdar"``. SoftImpute is convex: its random start only
seeds the subspace iteration, and restarts agree to the tolerance.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxfact.completion import CompletionResult
from jaxfact.explicit_feedback import BiasedMFResult
from jaxfact.nonnegative import NMFResult

__all__ = ["best_run"]


def best_run(results: Any, *, scores: Any = None) -> Any:
    """The run with the lowest final objective from a batch of runs (leading axis = restarts).

    The objective is ``loss`` for an :class:`NMFResult` and the last entry of ``history`` (the
    objective after the final iteration) for a :class:`CompletionResult` (SoftImpute, WLRA; for
    SVT, whose objective is that of its constrained problem, pass ``scores=results.residual``) or
    a :class:`BiasedMFResult`; any other batch of results needs ``scores``.
    Works under ``jit`` (the index is traced).

    Args:
      results: a result NamedTuple whose fields have a leading axis of length R (e.g. from
        ``jax.vmap`` over keys).
      scores: optional (R,) scores to minimize instead (e.g. a held-out error).

    Returns:
      The same NamedTuple without the leading axis: the best run.

    Example::

      >>> X = jax.random.uniform(jax.random.key(0), (20, 12))
      >>> keys = jax.random.split(jax.random.key(1), 4)
      >>> runs = jax.vmap(lambda k: jaxfact.nmf(X, 3, init="random", key=k, solver="hals",
      ...                                       max_iter=50))(keys)
      >>> best = best_run(runs)
      >>> print(best.W.shape, bool(best.loss == runs.loss.min()))
      (20, 3) True
    """
    fn = "best_run"
    if scores is None:
        if isinstance(results, NMFResult):
            scores = results.loss
        elif isinstance(results, (CompletionResult, BiasedMFResult)):
            last = jnp.maximum(results.n_iter - 1, 0)
            scores = jnp.take_along_axis(results.history, last[..., None], axis=-1)[..., 0]
        else:
            raise TypeError(f"{fn}: `results` must be an NMFResult, CompletionResult or "
                            f"BiasedMFResult batch, or `scores` must be given; got "
                            f"{type(results).__name__}")
    scores = jnp.asarray(scores)
    leaves = jax.tree.leaves(results)
    if scores.ndim != 1 or any(leaf.ndim < 1 or leaf.shape[0] != scores.shape[0]
                               for leaf in leaves):
        raise ValueError(f"{fn}: `results` must be a batch of runs (every field with a leading "
                         f"axis of length len(scores)); got scores of shape {scores.shape} and "
                         f"field shapes {[tuple(leaf.shape) for leaf in leaves]}")
    # NaN scores (diverged runs) never win.
    i = jnp.argmin(jnp.where(jnp.isnan(scores), jnp.inf, scores))
    return jax.tree.map(lambda a: a[i], results)
