"""Compressing a trained Flax NNX model in one call, and sweeping the rank without recompiling.

:func:`compress` walks the module graph of an NNX model, replaces each selected ``nnx.Embed``
(and ``nnx.Linear``) by its factorized twin built from the trained weights, and reports per layer
what was kept and lost. :func:`rank_sweep` factorizes once at the largest rank and evaluates every
smaller rank from slices of those factors.
"""

from __future__ import annotations

import fnmatch
from functools import partial
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import graphlib

from jaxfact import _checks
from jaxfact.nn import _build
from jaxfact.nn import _math
from jaxfact.nn._nnx import AdaptiveEmbed
from jaxfact.nn._nnx import FactorizedEmbed
from jaxfact.nn._nnx import FactorizedLinear
from jaxfact.nn._nnx import adaptive_from_table

__all__ = ["LayerReport", "CompressReport", "RankSweep", "compress", "rank_sweep"]

METHODS = ("svd", "pca", "nmf", "adaptive")


class LayerReport(NamedTuple):
    """What :func:`compress` did to one layer."""

    path: str                     # "/"-joined attribute path in the model, e.g. "blocks/0/mlp"
    kind: str                     # e.g. "Embed -> FactorizedEmbed"
    shape: tuple[int, int]        # the original table (V, F) or kernel (in, out)
    rank: int | tuple[int, ...]   # k (the band widths for an AdaptiveEmbed)
    params_before: int
    params_after: int
    error: float                  # ||T - T_k||_F / ||T||_F of the table or kernel
    band_errors: tuple[float, ...] = ()   # per band, for method="adaptive"


class CompressReport(NamedTuple):
    """Per-layer reports and the whole model's parameter count before and after."""

    layers: tuple[LayerReport, ...]
    params_before: int
    params_after: int

    def __str__(self) -> str:
        lines = ["| layer | replaced | shape | rank | params before | params after | rel. error |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.layers:
            err = f"{r.error:.4f}" + (f" (bands {', '.join(f'{e:.3f}' for e in r.band_errors)})"
                                      if r.band_errors else "")
            lines.append(f"| {r.path} | {r.kind} | {r.shape[0]} x {r.shape[1]} | {r.rank} | "
                         f"{r.params_before} | {r.params_after} | {err} |")
        lines.append(f"| (model) | | | | {self.params_before} | {self.params_after} | |")
        return "\n".join(lines)


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


# ------------------------------------------------------------------------------------------------
# Public functions


def compress(model: nnx.Module, *, rank: Any = None, method: str = "svd",
             include: str | Sequence[str] = "embed", key: Any = None,
             nmf_options: dict | None = None, cutoffs: Sequence[int] | None = None,
             factor: float = 4) -> tuple[nnx.Module, CompressReport]:
    """Replaces the embeddings (and linear layers) of a trained NNX model by factorized ones.

    Walks the module graph of ``model`` (attributes, ``nnx.List``, ``nnx.Dict``), and replaces each
    selected layer by its low-rank twin built from the trained weights:

    * ``nnx.Embed`` (table T, V x F) -> :class:`FactorizedEmbed` with ``A @ B (+ b) ~= T``
      (:meth:`FactorizedEmbed.from_table`), or -> :class:`AdaptiveEmbed` with
      ``method="adaptive"`` (:meth:`AdaptiveEmbed.from_table`; rows must be sorted by frequency);
    * ``nnx.Linear`` (kernel K, in x out) -> :class:`FactorizedLinear` with ``A @ B ~= K`` and
      the bias kept (:meth:`FactorizedLinear.from_kernel`).

    The input model is not modified (it is cloned first). A layer referenced from several places
    (``self.head = self.embed``) is replaced by one new layer at all of them, and a model whose
    output calls ``embed.attend(h)`` keeps calling it (every replacement has ``attend``): tying
    survives. A parameter shared *outside* its layer (e.g. ``self.w = self.embed.embedding``) can
    not follow the swap, so it raises. Each layer keeps its ``dtype`` and ``param_dtype``.

    Args:
      model: a trained ``nnx.Module``.
      rank: k for every selected layer: an int (at most ``min`` of each layer's shape), a float
        in (0, 1) (per layer, the smallest k keeping that share of ``sum(S**2)``, as
        scikit-learn's ``PCA(n_components=0.9)``) or ``"gavish-donoho"`` (per layer, the optimal
        hard threshold for an unknown noise level); or a dict from layer-path glob patterns to
        those (``{"embed": 64, "blocks/*": 0.9}``; the first matching pattern wins). Not used
        with ``method="adaptive"``.
      method: "svd" (best rank-k approximation), "pca" (centred, plus the mean row as a bias;
        embeddings only), "nmf" (non-negative tables only) or "adaptive" (embeddings only).
      include: what to replace: ``"embed"`` (every ``nnx.Embed``), ``"linear"`` (every
        ``nnx.Linear``), ``"all"``, or glob patterns on layer paths (``"blocks/*/mlp"``), or a
        sequence mixing these. Each pattern must match at least one layer.
      key: ``jax.random`` key: randomized SVD, or NMF's initialization (folded in per layer).
      nmf_options: keyword arguments for :func:`jaxfact.nmf` (method="nmf").
      cutoffs, factor: the bands of ``method="adaptive"`` (see :class:`AdaptiveEmbed`).

    Returns:
      ``(new_model, report)``: the compressed clone and a :class:`CompressReport` (per layer:
      path, shape, rank, parameters before and after, relative error ``||T - T_k|| / ||T||``,
      band errors for "adaptive"); ``print(report)`` gives a Markdown table.

    Raises:
      ValueError: no layer to replace, an ``include`` pattern matching nothing, a rank above a
        layer's ``min(shape)`` or a float rank outside (0, 1), NMF on a signed table, a shared
        parameter that the swap would untie; each message names the argument and the layer path.

    Example::

      >>> small, report = compress(model, rank=32)                 # every nnx.Embed
      >>> small, report = compress(model, rank=0.9, include="all")  # and every nnx.Linear
      >>> print(report)
    """
    fn = "compress"
    if not isinstance(model, nnx.Module):
        raise TypeError(f"{fn}: `model` must be a flax.nnx.Module; got {type(model).__name__} "
                        f"(for Linen parameters use jaxfact.nn.linen.compress_params)")
    method = _checks.check_choice(fn, "method", method, METHODS)
    rank = _check_rank_for(fn, rank, method, cutoffs)
    if key is not None:
        key = _checks.check_key(fn, key)
    targets = _select(fn, model, include, method)
    before = _count_params(model)
    reports, news = [], []
    for i, t in enumerate(targets):
        layer_key = None if key is None else jax.random.fold_in(key, i)
        layer_rank = _rank_of(fn, rank, [r[0] for r in t.refs])
        new, report = _replace_layer(fn, t, layer_rank, method, layer_key, nmf_options, cutoffs,
                                     factor)
        news.append(new)
        reports.append(report)
    model = nnx.clone(model)
    for t, new in zip(_rebind(targets, model), news):
        _swap(t, new)
    return model, CompressReport(tuple(reports), before, _count_params(model))


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

    Example::

      >>> sweep = rank_sweep(model, [8, 16, 32, 64], nnx.jit(valid_accuracy))   # one compile
      >>> sweep = rank_sweep(table, [8, 16, 32], lambda emb: spearman(emb(word_ids)))
      >>> print(sweep)
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
        targets = _select(fn, model, include, method)
        layers = []
        for i, t in enumerate(targets):
            where = f" (layer {t.path!r})"
            layer_key = None if key is None else jax.random.fold_in(key, i)
            layers.append((t, _Sweeper(fn, _weights(t)[0], kmax, method, layer_key, nmf_options,
                                       where, "table" if t.kind == "embed" else "kernel")))
        before = _count_params(model)
        rows = []
        for k in ranks:
            clone = nnx.clone(model)
            targets_k = _rebind(targets, clone)
            params, errs = before, []
            for (t, sweeper), tk in zip(layers, targets_k):
                new, err = sweeper.at(k, padded, t)
                _swap(tk, new)
                params += _layer_params(t.kind, t.layer, k, method == "pca") - \
                    _count_params(t.layer)
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


# ------------------------------------------------------------------------------------------------
# Walking the module graph


class _Target(NamedTuple):
    path: str                                 # the first path at which the layer was found
    kind: str                                 # "embed" or "linear"
    layer: Any
    refs: tuple[tuple[str, Any, Any], ...]    # every (path, parent, key) that holds the layer


def _edges(root):
    """Every (path, parent, key, child) reference in the graph, shared children repeated, in
    attribute order; only into modules, containers and variables."""
    out, seen = [], set()

    def visit(node, path):
        if id(node) in seen:
            return
        seen.add(id(node))
        impl = graphlib.get_node_impl(node)
        if impl is None:
            return
        items = list(impl.node_dict(node).items())
        if isinstance(node, nnx.Module):
            # Definition order (flax sorts the keys), so a shared layer is named where it was made.
            order = {k: i for i, k in enumerate(vars(node))}
            items.sort(key=lambda kv: order.get(kv[0], len(order)))
        for key, child in items:
            if isinstance(key, str) and key.startswith("_pytree__"):
                continue
            if isinstance(child, nnx.Variable):
                out.append((path + (key,), node, key, child))
            elif isinstance(child, nnx.Pytree) or isinstance(child, (list, tuple, dict)):
                out.append((path + (key,), node, key, child))
                visit(child, path + (key,))

    visit(root, ())
    return out


def _join(path):
    return "/".join(str(p) for p in path)


_KINDS = {"embed": ("embed",), "linear": ("linear",), "all": ("embed", "linear")}


def _select(fn, model, include, method):
    edges = _edges(model)
    found: dict[int, _Target] = {}
    for path, parent, key, child in edges:
        kind = "embed" if type(child) is nnx.Embed else "linear" if type(child) is nnx.Linear \
            else None
        if kind is None:
            continue
        t = found.get(id(child))
        ref = (_join(path), parent, key)
        found[id(child)] = _Target(_join(path), kind, child, (ref,)) if t is None else \
            t._replace(refs=t.refs + (ref,))
    candidates = list(found.values())
    if not candidates:
        raise ValueError(f"{fn}: `model` has no nnx.Embed or nnx.Linear layer to replace "
                         f"(model type {type(model).__name__})")
    items = (include,) if isinstance(include, str) else tuple(include) \
        if isinstance(include, Sequence) else None
    if not items or not all(isinstance(p, str) for p in items):
        raise TypeError(f"{fn}: `include` must be 'embed', 'linear', 'all', a glob pattern on "
                        f"layer paths, or a sequence of these; got {include!r}")
    listing = ", ".join(f"{t.path!r} ({'Embed' if t.kind == 'embed' else 'Linear'})"
                        for t in candidates)
    chosen = []
    for item in items:
        if item in _KINDS:
            hit = [t for t in candidates if t.kind in _KINDS[item]]
        else:
            hit = [t for t in candidates if any(fnmatch.fnmatchcase(r[0], item) for r in t.refs)]
        if not hit:
            raise ValueError(f"{fn}: `include` entry {item!r} matches no layer; the model's "
                             f"replaceable layers are {listing}")
        chosen.extend(t for t in hit if all(t.layer is not c.layer for c in chosen))
    if method in ("pca", "adaptive"):
        for t in chosen:
            if t.kind == "linear":
                raise ValueError(_pca_linear_message(fn, t.path, method))
    chosen = [t for t in candidates if any(t.layer is c.layer for c in chosen)]  # graph order
    _check_ties(fn, edges, chosen)
    return chosen


def _rebind(targets, clone):
    """The same targets in a clone of the model (found by path: a clone has new objects, and
    its attributes are not in the original's order)."""
    edges = {_join(path): (parent, key, child) for path, parent, key, child in _edges(clone)}
    out = []
    for t in targets:
        refs = tuple((path,) + edges[path][:2] for path, _, _ in t.refs)
        out.append(t._replace(layer=edges[t.path][2], refs=refs))
    return out


def _pca_linear_message(fn, path, method="pca"):
    why = ("a kernel's mean row would be multiplied by sum(x), which no bias represents"
           if method == "pca" else "adaptive bands are an embedding layout")
    return (f"{fn}: method={method!r} applies to embeddings only ({why}), but `include` selects "
            f"the nnx.Linear at {path!r}; use method='svd' or leave that layer out of `include`")


def _check_ties(fn, edges, chosen):
    """A parameter of a replaced layer that is also referenced elsewhere would keep the old dense
    weights there: the tie would silently break."""
    for t in chosen:
        own = {id(v) for v in vars(t.layer).values() if isinstance(v, nnx.Variable)}
        for path, parent, key, child in edges:
            if isinstance(child, nnx.Variable) and id(child) in own and parent is not t.layer:
                raise ValueError(
                    f"{fn}: the parameter of layer {t.path!r} is also referenced at "
                    f"{_join(path)!r}; replacing the layer would untie them (that reference "
                    f"would keep the dense weights). Tie through the layer itself (e.g. "
                    f"`logits = self.embed.attend(h)`), or leave {t.path!r} out of `include`")


def _swap(target, new):
    for path, parent, key in target.refs:
        impl = graphlib.get_node_impl(parent)
        if getattr(impl, "set_key", None) is None:
            raise ValueError(f"compress: the layer at {path!r} sits in an immutable "
                             f"{type(parent).__name__}; hold layers in attributes, nnx.List or "
                             f"nnx.Dict so they can be replaced")
        impl.set_key(parent, key, new)


def _count_params(module):
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param))))


# ------------------------------------------------------------------------------------------------
# One layer


def _check_rank_for(fn, rank, method, cutoffs):
    if method == "adaptive":
        if rank is not None:
            raise ValueError(f"{fn}: method='adaptive' takes its band widths from `cutoffs` and "
                             f"`factor`; leave `rank` unset (got {rank!r})")
        if cutoffs is None:
            raise ValueError(f"{fn}: method='adaptive' needs `cutoffs` (band ends, the last the "
                             f"vocabulary size)")
        return None
    if rank is None:
        raise ValueError(f"{fn}: `rank` is required: an int, a float in (0, 1) or "
                         f"'gavish-donoho'")
    if cutoffs is not None:
        raise ValueError(f"{fn}: `cutoffs` only applies to method='adaptive'; got "
                         f"method={method!r}")
    if isinstance(rank, Mapping):
        if not rank or not all(isinstance(p, str) for p in rank):
            raise TypeError(f"{fn}: `rank` as a dict maps layer-path glob patterns to ranks, "
                            f"e.g. {{'embed': 64, 'blocks/*': 0.9}}; got {rank!r}")
        return {p: _build.check_rank_rule(fn, r) for p, r in rank.items()}
    return _build.check_rank_rule(fn, rank)


def _rank_of(fn, rank, paths):
    """A layer's rank: ``rank`` itself, or the first entry of a dict whose pattern matches one of
    the layer's paths (a shared layer has several)."""
    if not isinstance(rank, dict):
        return rank
    paths = (paths,) if isinstance(paths, str) else tuple(paths)
    for pattern, r in rank.items():
        if any(fnmatch.fnmatchcase(p, pattern) for p in paths):
            return r
    raise ValueError(f"{fn}: `rank` gives no rank for layer {paths[0]!r}: none of its patterns "
                     f"{list(rank)} matches that path (add one, or leave the layer out of "
                     f"`include`)")


def _weights(t):
    if t.kind == "embed":
        return t.layer.embedding[...], None
    bias = None if t.layer.bias is None else t.layer.bias[...]
    return t.layer.kernel[...], bias


def _layer_params(kind, layer, k, pca):
    if kind == "embed":
        return _math.factorized_param_count(layer.num_embeddings, layer.features, k, pca)
    return _math.linear_param_count(layer.in_features, layer.out_features, k, layer.use_bias)


def _replace_layer(fn, t, rank, method, key, nmf_options, cutoffs, factor):
    W, bias = _weights(t)
    where = f" (layer {t.path!r})"
    layer = t.layer
    if method == "adaptive":
        if W.shape[0] != (cutoffs[-1] if cutoffs else None):
            raise ValueError(f"{fn}: `cutoffs` must end at the vocabulary size {W.shape[0]} of "
                             f"layer {t.path!r}; got {tuple(cutoffs)}")
        new, errors = adaptive_from_table(AdaptiveEmbed, fn, W, cutoffs, factor, False, key,
                                          layer.dtype, layer.param_dtype)
        total = float(np.sqrt(sum(float(jnp.sum(jnp.square(_band(new, i) - W[lo:hi])))
                                  for i, (lo, hi) in enumerate(_bands(new.cutoffs)))) /
                      max(float(jnp.linalg.norm(W)), np.finfo(np.float64).tiny))
        return new, LayerReport(t.path, "Embed -> AdaptiveEmbed", tuple(W.shape), new.dims,
                                _count_params(layer), new.num_params, total, errors)
    if t.kind == "embed":
        f = _build.factorize(fn, W, rank, method, key, nmf_options, where=where)
        new = FactorizedEmbed.from_factors(f.A, f.B, f.bias, dtype=layer.dtype,
                                           param_dtype=layer.param_dtype)
        kind = "Embed -> FactorizedEmbed"
    else:
        f = _build.factorize(fn, W, rank, method, key, nmf_options, where=where, name="kernel",
                             methods=_build.KERNEL_METHODS)
        new = FactorizedLinear.from_factors(f.A, f.B, bias, dtype=layer.dtype,
                                            param_dtype=layer.param_dtype,
                                            precision=layer.precision)
        kind = "Linear -> FactorizedLinear"
    err = float(jnp.sqrt(f.residual) / jnp.where(f.norm > 0, f.norm, 1))
    return new, LayerReport(t.path, kind, tuple(W.shape), int(f.A.shape[1]),
                            _count_params(layer), new.num_params, err)


def _bands(cutoffs):
    return list(zip((0,) + tuple(cutoffs[:-1]), cutoffs))


def _band(module, i):
    E = getattr(module, f"embedding_{i}")[...]
    P = getattr(module, f"projection_{i}")
    return E if P is None else E @ P[...]


# ------------------------------------------------------------------------------------------------
# Rank sweeps


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
        tail = jnp.concatenate([jnp.cumsum(jnp.square(f.S)[::-1])[::-1], jnp.zeros((1,))])
        norm = float(f.norm) if float(f.norm) > 0 else 1.0
        self.errors = np.sqrt(np.maximum(float(f.residual) + np.asarray(tail, np.float64), 0))
        self.errors = self.errors / norm      # errors[k] is the error at rank k

    def _nmf_setup(self, table, key, nmf_options, name):
        from jaxfact.nonnegative import nmf_init
        options = _build.check_nmf_options(self.fn, nmf_options)
        for bad in ("warm_start", "W_init", "H_init"):
            if bad in options:
                raise ValueError(f"{self.fn}: `nmf_options` must not contain {bad!r} in a rank "
                                 f"sweep: each rank starts from the leading components of one "
                                 f"initialization at the largest rank")
        _build.check_finite_at(self.fn, name, table, self.where)
        _build._check_nonnegative_table(self.fn, name, table, self.where)
        init = options.pop("init", "nndsvda")
        # NNDSVD's component j depends on the j-th singular triplet only, so the rank-k start is
        # the first k components of the rank-K one.
        self.W0, self.H0 = nmf_init(table, self.kmax, init=init, key=key)
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
        from jaxfact.nonnegative import nmf
        mask = jnp.arange(self.kmax) < k
        W0 = jnp.where(mask, self.W0, 0)
        H0 = jnp.where(mask[:, None], self.H0, 0)
        res = nmf(self.table, self.kmax, warm_start=(W0, H0), **self.options)
        A, B = _build._balance_nmf(res.W, res.H)
        residual, norm = _build._residual(self.table, A, B, None)
        return A, B, None, float(jnp.sqrt(residual) / jnp.where(norm > 0, norm, 1))


@jax.jit
def _mask_components(A, B, k):
    # k is traced: one compilation serves every rank.
    keep = jnp.arange(A.shape[1]) < k
    return jnp.where(keep, A, 0), jnp.where(keep[:, None], B, 0)
