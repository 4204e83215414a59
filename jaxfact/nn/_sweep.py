"""Sweeping the rank of a table or a model from one factorization, without recompiling.

:func:`rank_sweep` factorizes once at the largest rank and evaluates every smaller rank from
slices of those factors.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxfact
from jaxfact import _checks
from jaxfact.nn import _build
from jaxfact.nn import _graph
from jaxfact.nn import _math
from jaxfact.nn._nnx import FactorizedEmbed
from jaxfact.nn._nnx import FactorizedLinear

__all__ = ["RankSweep", "rank_sweep"]


class RankSweep(NamedTuple):
    """One row per rank of :func:`rank_sweep`."""

    rank: tuple[int, ...]       # k, ascending
    params: tuple[int, ...]     # parameters at rank k (the table's, or the whole model's)
    error: tuple[float, ...]    # ||T - T_k||_F / ||T||_F (the largest over a model's layers)
    metric: tuple[Any, ...]     # evaluate(...) at rank k (None without `evaluate`)

    def __str__(self) -> str:
        lines = ["| k | params | rel. error | metric |", "|---|---|---|---|"]
        for k, p, e, m in zip(*self):
            lines.append(f"| {k} | {p} | {e:.4f} | {_fmt(m)} |")
        return "\n".join(lines)


def _fmt(m):
    if isinstance(m, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in m.items())
    if isinstance(m, (float, np.floating)) or (hasattr(m, "shape") and m.shape == ()):
        return f"{float(m):.4g}"
    return str(m)


def rank_sweep(source: Any, ranks: Sequence[int], evaluate: Callable | None = None, *,
               method: str = "svd", include: str | Sequence[str] = "embed", key: Any = None,
               nmf_options: dict | None = None, padded: bool = True) -> RankSweep:
    """Evaluates a table or a model compressed at several ranks from one factorization.

    SVD and PCA factors are nested: the rank-k truncation of the rank-K factors is the rank-k
    optimum for every k <= K. So the sweep factorizes once at ``K = max(ranks)`` (one compiled
    SVD) and slices. With ``padded=True`` (the default) every rank keeps the K-wide shapes and
    zeroes components k..K-1, so the modules handed to ``evaluate`` have the same shapes at every
    rank and a jitted ``evaluate`` compiles once; the zeroed components contribute exactly
    nothing, and stay zero under gradient descent (their gradients vanish). ``padded=False``
    hands out true rank-k modules (one compilation of ``evaluate`` per rank).

    NMF is not nested (the best rank-k factors are not a slice of the rank-K ones): each k is
    fitted separately, from the first k components of one rank-K initialization, inside a
    rank-K problem whose other components are zero (and stay zero in every solver, since their
    gradients and multiplicative updates vanish): one compiled NMF program for the whole sweep,
    at the cost of K-wide products.

    Reconstruction errors come from the singular values, ``||T - T_k||^2 = ||T - T_K||^2 +
    sum_{k < i <= K} s_i^2``, so they cost nothing per rank (NMF: one residual per fit).

    Args:
      source: a (V, F) table, or an ``nnx.Module`` whose selected layers (``include``, as in
        :func:`compress`) are all compressed at each rank.
      ranks: ints, each in [1, min(shape)] of every layer.
      evaluate: optional ``evaluate(module_or_model) -> metric`` (a number, a dict, anything):
        called with a :class:`FactorizedEmbed` (table source) or the compressed model.
      method: "svd", "pca" or "nmf".
      include, key, nmf_options: as in :func:`compress`.
      padded: see above.

    Returns:
      :class:`RankSweep` with one row per rank (ascending): k, parameters at rank k (table's,
      or whole model's), relative error (the largest over a model's layers), and the metric;
      ``print(sweep)`` gives a Markdown table.

    Example:
      >>> table = jax.random.normal(jax.random.key(0), (100, 16))
      >>> sweep = rank_sweep(table, [4, 8, 16], lambda emb: emb.rank)   # padded: one shape
      >>> sweep.rank, sweep.params, sweep.metric
      ((4, 8, 16), (464, 928, 1856), (16, 16, 16))
      >>> sweep.error[0] > sweep.error[1] > sweep.error[2], round(sweep.error[2], 4)
      (True, 0.0)
    """
    fn = "rank_sweep"
    method = _checks.check_choice(fn, "method", method, ("svd", "pca", "nmf"))
    if isinstance(ranks, (int, np.integer)) or isinstance(ranks, (str, bytes)) or \
            not isinstance(ranks, Sequence) or not ranks:
        raise ValueError(f"{fn}: `ranks` must be a non-empty sequence of ints; got {ranks!r}")
    ranks = tuple(sorted({_checks.check_int(fn, "ranks", k, low=1) for k in ranks}))
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"{fn}: `evaluate` must be callable (module -> metric); got "
                        f"{type(evaluate).__name__}")
    if key is not None:
        key = _checks.check_key(fn, key)
    kmax = ranks[-1]

    if isinstance(source, nnx.Module):
        model = source
        targets = _graph.select(fn, model, include, method)
        layers = []
        for i, t in enumerate(targets):
            where = f" (layer {t.path!r})"
            layer_key = None if key is None else jax.random.fold_in(key, i)
            name = "table" if t.kind == "embed" else "kernel"
            layers.append((t, _Sweeper(fn, _graph.weights(t)[0], kmax, method, layer_key,
                                       nmf_options, where, name)))
        before = _graph.count_params(model)
        rows = []
        for k in ranks:
            clone = nnx.clone(model)
            targets_k = _graph.rebind(targets, clone)
            params, errs = before, []
            for (t, sweeper), tk in zip(layers, targets_k):
                new, err = sweeper.at(k, padded, t)
                _graph.swap(tk, new)
                params += _graph.layer_params(t.kind, t.layer, k, method == "pca") - \
                    _graph.count_params(t.layer)
                errs.append(err)
            metric = None if evaluate is None else evaluate(clone)
            rows.append((k, params, max(errs), metric))
    else:
        sweeper = _Sweeper(fn, source, kmax, method, key, nmf_options, "", "table")
        rows = []
        for k in ranks:
            new, err = sweeper.at(k, padded, None)
            V, F = sweeper.shape
            params = _math.factorized_param_count(V, F, k, method == "pca")
            metric = None if evaluate is None else evaluate(new)
            rows.append((k, params, err, metric))
    return RankSweep(*(tuple(col) for col in zip(*rows)))


# Keywords that start NMF from given factors (the sweep sets them); "warm_start" is the name
# jaxfact.nmf takes from 0.2 on, W_init / H_init the earlier one.
_WARM_STARTS = ("warm_start", "W_init", "H_init")


class _Sweeper:
    """Factors of one table at rank K, handing out rank-k modules for k <= K."""

    def __init__(self, fn, table, kmax, method, key, nmf_options, where, name):
        self.fn, self.method, self.kmax, self.where = fn, method, kmax, where
        self.kind = "embed" if name == "table" else "linear"
        table = _checks.as_float_array(fn, name, table)
        self.shape = tuple(table.shape)
        if kmax > min(self.shape):
            raise ValueError(f"{fn}: every rank in `ranks` must be at most min{self.shape} = "
                             f"{min(self.shape)}{where}; got {kmax}")
        self.dtype = table.dtype
        if method == "nmf":
            self._nmf_setup(table, key, nmf_options, name)
            return
        f = _build.factorize(fn, table, kmax, method, key, None, where=where, name=name,
                             methods=(_build.METHODS if name == "table"
                                      else _build.KERNEL_METHODS))
        self.A, self.B, self.bias = f.A, f.B, f.bias
        # ||T - T_k||^2 = ||T - T_K||^2 + sum_{k < i <= K} s_i^2: both terms non-negative, so no
        # cancellation, unlike ||T||^2 - sum_{i <= k} s_i^2.
        tail = jnp.concatenate([jnp.cumsum(jnp.square(f.S)[::-1])[::-1],
                                jnp.zeros((1,), f.S.dtype)])
        norm = float(f.norm) if float(f.norm) > 0 else 1.0
        self.errors = np.sqrt(np.maximum(float(f.residual) + np.asarray(tail, np.float64), 0))
        self.errors = self.errors / norm      # errors[k] is the error at rank k

    def _nmf_setup(self, table, key, nmf_options, name):
        for bad in _WARM_STARTS:
            if bad in (nmf_options or {}):
                raise ValueError(f"{self.fn}: `nmf_options` must not contain {bad!r} in a rank "
                                 f"sweep: each rank starts from the leading components of one "
                                 f"initialization at the largest rank")
        options = _build.check_nmf_options(self.fn, nmf_options)
        _build.check_values(self.fn, name, table, self.where, nonnegative=True)
        init = options.pop("init", "nndsvda")
        # NNDSVD's component j depends on the j-th singular triplet only, so the rank-k start is
        # the first k components of the rank-K one.
        self.W0, self.H0 = jaxfact.nmf_init(table, self.kmax, init=init, key=key)
        self.table, self.options, self.key = table, options, key

    def at(self, k, padded, target):
        if self.method == "nmf":
            A, B, bias, err = self._nmf_at(k)
            if not padded:
                A, B = A[:, :k], B[:k]
        else:
            err = float(self.errors[k])
            bias = self.bias
            if padded:
                A, B = _mask_components(self.A, self.B, k)
            else:
                A, B = self.A[:, :k], self.B[:k]
        if self.kind == "embed":
            layer = target.layer if target is not None else None
            new = FactorizedEmbed.from_factors(
                A, B, bias, dtype=None if layer is None else layer.dtype,
                param_dtype=self.dtype if layer is None else layer.param_dtype)
        else:
            layer = target.layer
            lbias = None if layer.bias is None else layer.bias[...]
            new = FactorizedLinear.from_factors(A, B, lbias, dtype=layer.dtype,
                                                param_dtype=layer.param_dtype,
                                                precision=layer.precision)
        return new, err

    def _nmf_at(self, k):
        W0, H0 = _mask_components(self.W0, self.H0, k)
        res = jaxfact.nmf(self.table, self.kmax, warm_start=(W0, H0), **self.options)
        A, B = _build.balance_nmf(res.W, res.H)
        residual, norm = _build.residual(self.table, A, B, None)
        return A, B, None, float(jnp.sqrt(residual) / jnp.where(norm > 0, norm, 1))


@jax.jit
def _mask_components(A, B, k):
    # k is traced: one compilation serves every rank.
    keep = jnp.arange(A.shape[1]) < k
    return jnp.where(keep[None, :], A, 0), jnp.where(keep[:, None], B, 0)
