"""Compressing a trained Flax NNX model in one call.

:func:`compress` walks the module graph of an NNX model, replaces each selected ``nnx.Embed``
(and ``nnx.Linear``) by its factorized twin built from the trained weights, and reports per layer
what was kept and lost.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxfact import _checks
from jaxfact.nn import _build
from jaxfact.nn import _graph
from jaxfact.nn._nnx import AdaptiveEmbed
from jaxfact.nn._nnx import FactorizedEmbed
from jaxfact.nn._nnx import FactorizedLinear
from jaxfact.nn._nnx import adaptive_from_bands

__all__ = ["LayerReport", "CompressReport", "compress"]

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
      key: ``None`` (the default) for exact, deterministic SVD / PCA, or a ``jax.random`` key for
        randomized ones (and NMF's random initializations), folded in per layer.
      nmf_options: keyword arguments for :func:`jaxfact.nmf` (method="nmf").
      cutoffs, factor: the bands of ``method="adaptive"`` (see :class:`AdaptiveEmbed`).

    Returns:
      ``(new_model, report)``: the compressed clone and a :class:`CompressReport` (per layer:
      path, shape, rank, parameters before and after, relative error ``||T - T_k|| / ||T||``,
      band errors for "adaptive"); ``print(report)`` gives a Markdown table.

    ``compress`` runs on the host (it rewires the module graph and reads each layer's error as a
    Python float), never under ``jit``, so the weights are concrete and their values (finite,
    non-negative for "nmf") are always checked: it has no ``checks`` option.

    Raises:
      ValueError: no layer to replace, an ``include`` pattern matching nothing, a rank above a
        layer's ``min(shape)`` or a float rank outside (0, 1), NMF on a signed table, a shared
        parameter that the swap would untie; each message names the argument and the layer path.

    Example:
      >>> class TiedLM(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.embed = nnx.Embed(100, 16, rngs=rngs)
      ...         self.mix = nnx.Linear(16, 16, rngs=rngs)
      ...     def __call__(self, ids):
      ...         return self.embed.attend(self.mix(self.embed(ids)))
      >>> small, report = compress(TiedLM(nnx.Rngs(0)), rank=4)     # every nnx.Embed
      >>> type(small.embed).__name__, small(jnp.arange(3)).shape
      ('FactorizedEmbed', (3, 100))
      >>> print(report)
      | layer | replaced | shape | rank | params before | params after | rel. error |
      |---|---|---|---|---|---|---|
      | embed | Embed -> FactorizedEmbed | 100 x 16 | 4 | 1600 | 464 | 0.7... |
      | (model) | | | | 1872 | 736 | |
    """
    fn = "compress"
    if not isinstance(model, nnx.Module):
        raise TypeError(f"{fn}: `model` must be a flax.nnx.Module; got {type(model).__name__} "
                        f"(for Linen parameters use jaxfact.nn.linen.compress_params)")
    method = _checks.check_choice(fn, "method", method, METHODS)
    rank = _build.check_rank_option(fn, rank, method, cutoffs)
    if key is not None:
        key = _checks.check_key(fn, key)
    targets = _graph.select(fn, model, include, method)
    before = _graph.count_params(model)
    reports, news = [], []
    for i, t in enumerate(targets):
        layer_key = None if key is None else jax.random.fold_in(key, i)
        layer_rank = _build.rank_for_layer(fn, rank, [r[0] for r in t.refs])
        new, report = _replace_layer(fn, t, layer_rank, method, layer_key, nmf_options, cutoffs,
                                     factor)
        news.append(new)
        reports.append(report)
    model = nnx.clone(model)
    for t, new in zip(_graph.rebind(targets, model), news):
        _graph.swap(t, new)
    return model, CompressReport(tuple(reports), before, _graph.count_params(model))


def _replace_layer(fn, t, rank, method, key, nmf_options, cutoffs, factor):
    W, bias = _graph.weights(t)
    where = f" (layer {t.path!r})"
    layer = t.layer
    if method == "adaptive":
        if W.shape[0] != (cutoffs[-1] if cutoffs else None):
            raise ValueError(f"{fn}: `cutoffs` must end at the vocabulary size {W.shape[0]} of "
                             f"layer {t.path!r}; got {tuple(cutoffs)}")
        bands = _build.adaptive_from_table(fn, W, cutoffs, factor, False, key,
                                           layer.param_dtype)
        new = adaptive_from_bands(AdaptiveEmbed, bands, False, layer.dtype)
        errors = tuple(float(e) for e in bands.errors)
        total = float(np.sqrt(sum(float(jnp.sum(jnp.square(_band(new, i) - W[lo:hi])))
                                  for i, (lo, hi) in enumerate(_bands(new.cutoffs)))) /
                      max(float(jnp.linalg.norm(W)), np.finfo(np.float64).tiny))
        return new, LayerReport(t.path, "Embed -> AdaptiveEmbed", tuple(W.shape), new.dims,
                                _graph.count_params(layer), new.num_params, total, errors)
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
                            _graph.count_params(layer), new.num_params, err)


def _bands(cutoffs):
    return list(zip((0,) + tuple(cutoffs[:-1]), cutoffs))


def _band(module, i):
    E = getattr(module, f"embedding_{i}")[...]
    P = getattr(module, f"projection_{i}")
    return E if P is None else E @ P[...]
