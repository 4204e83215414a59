"""One iteration driver for every iterative solver, and one way to say how a solve ended.

Every solver of jaxfact (NMF, SVT, SoftImpute, WLRA, biased MF, implicit ALS) is a
``lax.while_loop`` over a :class:`State`: the solver's own iterate (a NamedTuple with named fields),
the number of iterations done, the objective after each iteration and a :class:`Status`. A solver
supplies two functions:

* ``update(iterate, n_iter) -> (iterate, objective, record)``: one iteration. ``objective`` is a
  scalar, stored in ``history[n_iter]``; ``record`` is ``None`` or a pytree of scalars stored in
  ``trace`` the same way (e.g. the rank of the iterate);
* ``stop(state) -> status``: after the update, with ``state.n_iter`` already counting it and
  ``state.history`` holding its objective: ``Status.RUNNING`` to go on, or the reason to stop.

The driver stops with ``Status.MAX_ITER`` after ``max_iter`` iterations and with
``Status.DIVERGED`` as soon as the objective is not finite, whatever ``stop`` says, so that no
solver can report a NaN objective as converged.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Status"]


class Status(enum.IntEnum):
    """How an iterative solve ended: the ``status`` field of every solver's result.

    ``result.status`` is an int32 array (a pytree leaf, so it passes through ``jit`` and ``vmap``);
    compare it with the members (``res.status == Status.CONVERGED``) or name it with
    ``Status(int(res.status))``. ``result.converged`` is ``status == Status.CONVERGED``.

    Members:
      RUNNING: the solve has not ended (never in a returned result).
      CONVERGED: the solver's stopping rule held; each solver's docstring says what it tests.
      MAX_ITER: ``max_iter`` iterations ran without the stopping rule holding.
      DIVERGED: the objective became NaN or Inf, or grew past the solver's divergence bound
        (SVT: a relative residual above 1e5, as in the paper's code).
      BUFFER_FULL: the rank buffer filled and could not grow (SVT under an outer ``jit``, where
        its buffer has a fixed size): the iterate is the last one that fitted.
    """

    RUNNING = 0
    CONVERGED = 1
    MAX_ITER = 2
    DIVERGED = 3
    BUFFER_FULL = 4


class State(NamedTuple):
    """The loop state every solver runs on."""

    iterate: Any         # the solver's own NamedTuple of iterates
    n_iter: jax.Array    # () int32, iterations done
    history: jax.Array   # (max_iter,) objective after each iteration; NaN after n_iter
    trace: Any           # None, or a pytree of (max_iter,) per-iteration records (-1 / NaN after)
    status: jax.Array    # () int32, a Status


def _empty(x: Any, max_iter: int) -> jax.Array:
    x = jnp.asarray(x)
    fill = jnp.nan if jnp.issubdtype(x.dtype, jnp.inexact) else -1
    return jnp.full((max_iter,), fill, x.dtype)


def start(iterate: Any, *, max_iter: int, dtype: Any, record: Any = None) -> State:
    """The state before the first iteration. ``record`` is an example of ``update``'s record
    (its structure and dtypes), or None."""
    trace = None if record is None else jax.tree.map(lambda r: _empty(r, max_iter), record)
    return State(iterate, jnp.zeros((), jnp.int32), jnp.full((max_iter,), jnp.nan, dtype), trace,
                 jnp.asarray(Status.RUNNING, jnp.int32))


def run(update: Callable, stop: Callable, state: State) -> State:
    """Iterates ``update`` from ``state`` until ``stop`` (or the driver's own rules) end it.

    ``state`` is :func:`start`'s (or any State whose status is RUNNING).
    """
    max_iter = state.history.shape[0]

    def body(s: State) -> State:
        iterate, objective, record = update(s.iterate, s.n_iter)
        objective = jnp.asarray(objective, s.history.dtype)
        history = s.history.at[s.n_iter].set(objective)
        trace = s.trace
        if trace is not None:
            trace = jax.tree.map(lambda h, r: h.at[s.n_iter].set(jnp.asarray(r, h.dtype)),
                                 trace, record)
        s = State(iterate, s.n_iter + 1, history, trace, s.status)
        status = jnp.asarray(stop(s), jnp.int32)
        status = jnp.where(jnp.isfinite(objective), status, Status.DIVERGED)
        status = jnp.where((status == Status.RUNNING) & (s.n_iter >= max_iter), Status.MAX_ITER,
                           status)
        return s._replace(status=status.astype(jnp.int32))

    return jax.lax.while_loop(lambda s: s.status == Status.RUNNING, body, state)


def objective_at(state: State, j: Any, objective0: Any) -> jax.Array:
    """The objective after ``j`` iterations (``objective0``, the start's, for ``j <= 0``)."""
    return jnp.where(j <= 0, objective0, state.history[jnp.maximum(j - 1, 0)])


def relative_decrease_below(state: State, tol: Any, objective0: Any) -> jax.Array:
    """True when the last iteration lowered the objective by at most ``tol`` times its previous
    value: ``f_prev - f <= tol * f_prev`` (``tol = 0`` never holds, so every iteration runs)."""
    f = state.history[state.n_iter - 1]
    f_prev = objective_at(state, state.n_iter - 1, objective0)
    return (tol > 0) & (f_prev - f <= tol * jnp.maximum(f_prev, 0))


def status_of(done: Any) -> jax.Array:
    """``Status.CONVERGED`` where ``done`` holds, else ``Status.RUNNING``."""
    return jnp.where(done, Status.CONVERGED, Status.RUNNING).astype(jnp.int32)
