"""Flax Linen twins of :mod:`jaxfact.nn`'s NNX modules.

Same names, the same arguments (as dataclass fields), the same parameter names and shapes, and the
same outputs for the same parameters: both call :mod:`jaxfact.nn._math`. ``attend`` is a method
(``module.apply(variables, x, method="attend")``).

Compressing a trained Linen model takes :func:`compress_params` (new parameters and the module
definitions to use) and :func:`swap_modules` (the model with those modules swapped in).

Example:
  >>> class TiedLM(nn.Module):
  ...     embed: nn.Module
  ...     def __call__(self, ids):
  ...         return self.embed.attend(self.embed(ids))
  >>> model, ids = TiedLM(nn.Embed(100, 16)), jnp.arange(5)
  >>> variables = model.init(jax.random.key(0), ids)
  >>> params, modules, report = compress_params(variables["params"], ["embed"], rank=4)
  >>> small = swap_modules(model, modules)
  >>> small.apply({"params": params}, ids).shape, report.params_after   # 100*4 + 4*16
  ((5, 100), 464)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.core import unfreeze
from flax.linen.linear import default_embed_init
from flax.linen.linear import default_kernel_init

from jaxfact import _checks
from jaxfact.nn import _build
from jaxfact.nn import _math
from jaxfact.nn._compress import METHODS as COMPRESS_METHODS
from jaxfact.nn._compress import CompressReport
from jaxfact.nn._compress import LayerReport

__all__ = ["FactorizedEmbed", "FactorizedLinear", "AdaptiveEmbed", "compress_params",
           "swap_modules"]

default_projection_init = nn.initializers.variance_scaling(1.0, "fan_out", "normal")
Dtype = Any


class FactorizedEmbed(nn.Module):
    """Linen twin of :class:`jaxfact.nn.FactorizedEmbed`: table ``A @ B (+ b)``, never formed.

    Parameters ``embedding`` (V, r), ``projection`` (r, F) and, with ``use_bias``, ``bias`` (F,):
    ``V r + r F (+ F)`` in all. ``from_factors`` and ``from_table`` return
    ``(module, variables)``.

    Sharding: with ``vocab_axis``, ``embedding`` is created by ``nn.with_partitioning(init,
    (vocab_axis, None))``, so ``init`` returns it boxed in ``nn.Partitioned`` and
    ``nn.get_partition_spec(variables)`` gives ``P(vocab_axis, None)`` (the usual Linen recipe:
    ``jax.jit(model.init, out_shardings=nn.get_sharding(specs, mesh))``). Lookup and ``attend``
    communicate as the NNX module's. ``from_factors``/``from_table`` box ``embedding`` the same
    way when the input's rows are split (or ``vocab_axis`` is given). Linen applies a box's
    annotation as a sharding constraint, which a mesh with explicit axes treats as an
    assertion: initialize Linen models on a mesh with auto axes (``AxisType.Auto``).

    Example:
      >>> emb = FactorizedEmbed(1000, 64, 8)
      >>> variables = emb.init(jax.random.key(0), jnp.zeros((2,), jnp.int32))
      >>> emb.apply(variables, jnp.ones((2, 64)), method="attend").shape
      (2, 1000)
    """

    num_embeddings: int
    features: int
    rank: int
    use_bias: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Callable = default_embed_init
    projection_init: Callable = default_projection_init
    bias_init: Callable = nn.initializers.zeros_init()
    vocab_axis: Any = None

    def setup(self):
        shape = _math.check_factorized_args("FactorizedEmbed", self.num_embeddings,
                                            self.features, self.rank)
        axis = _math.check_vocab_axis("FactorizedEmbed", self.vocab_axis,
                                      {"embedding": shape[0]})
        inits = _partitioned({"embedding": self.embedding_init,
                              "projection": self.projection_init, "bias": self.bias_init},
                             _math.vocab_sharding(axis, ["embedding"]))
        p = _init_params(self, _math.low_rank_shapes(_math.EMBED_PARAMS, *shape, self.use_bias),
                         inits)
        self.embedding, self.projection, self.bias = p["embedding"], p["projection"], p["bias"]

    def __call__(self, ids: jax.Array) -> jax.Array:
        ids = _math.check_ids("FactorizedEmbed", ids, self.num_embeddings)
        return _math.factorized_lookup(ids, self.embedding, self.projection, self.bias,
                                       dtype=self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        x = _math.check_query("FactorizedEmbed.attend", x, self.features)
        return _math.factorized_attend(x, self.embedding, self.projection, self.bias,
                                       dtype=self.dtype)

    @classmethod
    def from_factors(cls, A: Any, B: Any, bias: Any = None, *, dtype: Dtype | None = None,
                     param_dtype: Dtype | None = None, vocab_axis: Any = "infer",
                     ) -> tuple["FactorizedEmbed", dict]:
        """``(module, variables)`` whose table is ``A @ B (+ bias)`` (``vocab_axis`` as in
        :meth:`jaxfact.nn.FactorizedEmbed.from_factors`)."""
        args, kw, params = _build.factor_params("FactorizedEmbed.from_factors", A, B, bias,
                                                param_dtype)
        axis = _math.vocab_axis_of(A, vocab_axis)
        return cls(*args, **kw, dtype=dtype, vocab_axis=axis), {"params": _box(params, axis)}

    @classmethod
    def from_table(cls, table: Any, rank: Any, *, method: str = "svd", key: Any = None,
                   nmf_options: dict | None = None, dtype: Dtype | None = None,
                   param_dtype: Dtype | None = None, checks: bool = False,
                   vocab_axis: Any = "infer") -> tuple["FactorizedEmbed", dict]:
        """``(module, variables)`` compressing ``table``; see
        :meth:`jaxfact.nn.FactorizedEmbed.from_table`."""
        args, kw, params = _build.table_params(
            "FactorizedEmbed.from_table", table, rank, method=method, key=key,
            nmf_options=nmf_options, param_dtype=param_dtype, checks=checks)
        axis = _math.vocab_axis_of(table, vocab_axis)
        return cls(*args, **kw, dtype=dtype, vocab_axis=axis), {"params": _box(params, axis)}


class FactorizedLinear(nn.Module):
    """Linen twin of :class:`jaxfact.nn.FactorizedLinear`: ``y = (x @ A) @ B (+ b)``.

    Parameters ``kernel_a`` (in, r), ``kernel_b`` (r, out) and, with ``use_bias``, ``bias``
    (out,). Unlike ``nn.Dense`` it takes ``in_features`` explicitly (the NNX twin's arguments).
    ``from_factors`` and ``from_kernel`` return ``(module, variables)``.
    """

    in_features: int
    out_features: int
    rank: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    kernel_a_init: Callable = default_kernel_init
    kernel_b_init: Callable = default_kernel_init
    bias_init: Callable = nn.initializers.zeros_init()

    def setup(self):
        shape = _math.check_linear_args("FactorizedLinear", self.in_features, self.out_features,
                                        self.rank)
        inits = {"kernel_a": self.kernel_a_init, "kernel_b": self.kernel_b_init,
                 "bias": self.bias_init}
        p = _init_params(self, _math.low_rank_shapes(_math.LINEAR_PARAMS, *shape, self.use_bias),
                         inits)
        self.kernel_a, self.kernel_b, self.bias = p["kernel_a"], p["kernel_b"], p["bias"]

    def __call__(self, x: jax.Array) -> jax.Array:
        x = _math.check_query("FactorizedLinear", x, self.in_features)
        return _math.factorized_dense(x, self.kernel_a, self.kernel_b, self.bias,
                                      dtype=self.dtype, precision=self.precision)

    @classmethod
    def from_factors(cls, A: Any, B: Any, bias: Any = None, *, dtype: Dtype | None = None,
                     param_dtype: Dtype | None = None, precision: Any = None,
                     ) -> tuple["FactorizedLinear", dict]:
        """``(module, variables)`` computing ``(x @ A) @ B (+ bias)``."""
        args, kw, params = _build.factor_params("FactorizedLinear.from_factors", A, B, bias,
                                                param_dtype, _build.LINEAR_NAMES)
        return cls(*args, **kw, dtype=dtype, precision=precision), {"params": params}

    @classmethod
    def from_kernel(cls, kernel: Any, rank: Any, *, bias: Any = None, method: str = "svd",
                    key: Any = None, nmf_options: dict | None = None, dtype: Dtype | None = None,
                    param_dtype: Dtype | None = None, precision: Any = None,
                    checks: bool = False) -> tuple["FactorizedLinear", dict]:
        """``(module, variables)`` compressing ``kernel``; see
        :meth:`jaxfact.nn.FactorizedLinear.from_kernel`."""
        args, kw, params = _build.table_params(
            "FactorizedLinear.from_kernel", kernel, rank, method=method, key=key,
            nmf_options=nmf_options, param_dtype=param_dtype, checks=checks, bias=bias,
            names=_build.LINEAR_NAMES)
        return cls(*args, **kw, dtype=dtype, precision=precision), {"params": params}


class AdaptiveEmbed(nn.Module):
    """Linen twin of :class:`jaxfact.nn.AdaptiveEmbed` (Baevski & Auli 2019).

    Parameters ``embedding_i`` (size_i, d_i) and ``projection_i`` (d_i, F) (none for the head band
    unless ``head_projection``): ``sum_i size_i d_i + sum_{i>0} d_i F``. ``from_table`` returns
    ``(module, variables)``. With ``vocab_axis`` each ``embedding_i`` is partitioned
    ``(vocab_axis, None)`` as in :class:`FactorizedEmbed`.
    """

    cutoffs: Sequence[int]
    features: int
    factor: float = 4
    num_embeddings: int | None = None
    head_projection: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Callable = default_embed_init
    projection_init: Callable = default_projection_init
    vocab_axis: Any = None

    def setup(self):
        cutoffs, F, factor = _math.check_adaptive_args("AdaptiveEmbed", self.cutoffs,
                                                       self.features, self.factor,
                                                       self.num_embeddings)
        self._cut = cutoffs
        shapes = _math.adaptive_shapes(cutoffs, F, factor, self.head_projection)
        bands = {f"embedding_{i}": hi - lo for i, (lo, hi) in
                 enumerate(zip((0,) + cutoffs[:-1], cutoffs))}
        axis = _math.check_vocab_axis("AdaptiveEmbed", self.vocab_axis, bands)
        inits = _partitioned({name: self.embedding_init if name.startswith("embedding")
                              else self.projection_init for name in shapes},
                             _math.vocab_sharding(axis, list(bands)))
        self._E, self._P = _math.adaptive_bands(_init_params(self, shapes, inits), len(cutoffs))

    def __call__(self, ids: jax.Array) -> jax.Array:
        ids = _math.check_ids("AdaptiveEmbed", ids, self._cut[-1])
        return _math.adaptive_lookup(ids, self._E, self._P, self._cut, dtype=self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        x = _math.check_query("AdaptiveEmbed.attend", x, self.features)
        return _math.adaptive_attend(x, self._E, self._P, dtype=self.dtype)

    @classmethod
    def from_table(cls, table: Any, cutoffs: Sequence[int], *, factor: float = 4,
                   head_projection: bool = False, key: Any = None, dtype: Dtype | None = None,
                   param_dtype: Dtype | None = None, checks: bool = False,
                   vocab_axis: Any = "infer") -> tuple["AdaptiveEmbed", dict]:
        """``(module, variables)`` converting a trained table into adaptive bands; see
        :meth:`jaxfact.nn.AdaptiveEmbed.from_table`."""
        bands = _build.adaptive_from_table("AdaptiveEmbed.from_table", table, cutoffs, factor,
                                           head_projection, key, param_dtype, checks)
        return _adaptive_from_bands(cls, bands, head_projection, dtype,
                                    _math.vocab_axis_of(table, vocab_axis))


def _init_params(module, shapes, inits):
    """The parameters named in ``shapes`` (None where the shape is None), created in order."""
    params = {"bias": None}
    for name, shape in shapes.items():
        params[name] = None if shape is None else module.param(name, inits[name], shape,
                                                                module.param_dtype)
    return params


def _adaptive_from_bands(cls, bands, head_projection, dtype, vocab_axis=None):
    module = cls(bands.cutoffs, bands.features, factor=bands.factor,
                 head_projection=head_projection, dtype=dtype, param_dtype=bands.param_dtype,
                 vocab_axis=vocab_axis)
    return module, {"params": _box(bands.params, vocab_axis)}


def _partitioned(inits, sharding):
    """The initializers, those named in ``sharding`` wrapped by ``nn.with_partitioning``."""
    return {name: nn.with_partitioning(init, sharding[name]) if name in sharding else init
            for name, init in inits.items()}


def _box(params, vocab_axis):
    """``params`` with each table (``embedding``, ``embedding_i``) boxed in ``nn.Partitioned``
    by rows over ``vocab_axis``, as ``init`` returns them; unchanged without ``vocab_axis``."""
    if vocab_axis is None:
        return params
    return {name: nn.Partitioned(value, names=(vocab_axis, None))
            if name.startswith("embedding") else value for name, value in params.items()}



def compress_params(params: Any, module_paths: str | Sequence[str], *, rank: Any = None,
                    method: str = "svd", key: Any = None, nmf_options: dict | None = None,
                    cutoffs: Sequence[int] | None = None, factor: float = 4,
                    dtype: Dtype | None = None) -> tuple[dict, dict[str, nn.Module],
                                                         CompressReport]:
    """Compresses the ``nn.Embed`` / ``nn.Dense`` parameters at ``module_paths`` of a Linen model.

    The Linen counterpart of :func:`jaxfact.nn.compress`, on a parameter tree: each path's
    ``{"embedding": T}`` (an ``nn.Embed``) becomes :class:`FactorizedEmbed`'s ``{"embedding": A,
    "projection": B (, "bias": mu)}`` (or :class:`AdaptiveEmbed`'s bands with
    ``method="adaptive"``), and each ``{"kernel": K (, "bias": b)}`` (an ``nn.Dense``) becomes
    :class:`FactorizedLinear`'s ``{"kernel_a": A, "kernel_b": B (, "bias": b)}``; everything else
    is returned unchanged (the input is not modified).

    A Linen model's layers are fixed by its class, so the new parameters need the new module
    definitions: they are returned by path, and :func:`swap_modules` puts them into a model whose
    replaced layers are dataclass fields (``embed: nn.Module``), the recipe that keeps weight
    tying (``self.embed.attend(h)`` calls the new module's ``attend``). Layers created inside
    ``setup``/``@nn.compact`` cannot be swapped from outside: build the model with the returned
    modules instead. A Linen parameter tree records no sharing, so a tie made by reading
    ``embed``'s parameters from another module (rather than calling ``embed.attend``) cannot be
    detected here: after the swap such a model would read the (V, r) codes ``embedding`` of
    :class:`FactorizedEmbed` where it expects the (V, F) table.

    Args:
      params: the model's ``"params"`` collection, or a whole variables dict holding one (the
        other collections are passed through).
      module_paths: "/"-separated paths of the layers to replace (``"encoder/embed"``), or tuples.
      rank, method, key, nmf_options, cutoffs, factor: as in :func:`jaxfact.nn.compress`.
      dtype: computation dtype of the new modules (Linen parameters do not record it).

    Returns:
      ``(new_params, modules, report)``: the parameters in the same layout as ``params``, a dict
      path -> module definition, and a :class:`jaxfact.nn.CompressReport`.

    See the module's example.
    """
    fn = "compress_params"
    if not isinstance(params, Mapping):
        raise TypeError(f"{fn}: `params` must be a Linen parameter dict; got "
                        f"{type(params).__name__}")
    tree = unfreeze(params)
    wrapped = set(tree) == {"params"} or ("params" in tree and isinstance(tree["params"], Mapping)
                                          and not _is_layer(tree["params"]))
    root = tree["params"] if wrapped else tree
    method = _checks.check_choice(fn, "method", method, COMPRESS_METHODS)
    rank = _build.check_rank_option(fn, rank, method, cutoffs)
    if key is not None:
        key = _checks.check_key(fn, key)
    paths = _check_paths(fn, module_paths)
    before = _count(root)
    modules, reports = {}, []
    for i, path in enumerate(paths):
        parent, name, leaf = _lookup(fn, root, path)
        where = f" (layer {path!r})"
        layer_key = None if key is None else jax.random.fold_in(key, i)
        kind = _is_layer(leaf)
        if kind is None:
            raise ValueError(f"{fn}: `module_paths` entry {path!r} holds parameters "
                             f"{sorted(leaf)}; expected an nn.Embed ({{'embedding'}}) or an "
                             f"nn.Dense ({{'kernel'}} or {{'kernel', 'bias'}})")
        if kind == "linear" and method in ("pca", "adaptive"):
            raise ValueError(_build.linear_method_message(fn, path, method, arg="module_paths",
                                                          layer="nn.Dense"))
        W = leaf["embedding"] if kind == "embed" else leaf["kernel"]
        param_dtype = jnp.asarray(W).dtype
        size = sum(int(np.size(v)) for v in leaf.values())
        if method == "adaptive":
            if jnp.shape(W)[0] != cutoffs[-1]:
                raise ValueError(f"{fn}: `cutoffs` must end at the vocabulary size "
                                 f"{jnp.shape(W)[0]} of layer {path!r}; got {tuple(cutoffs)}")
            bands = _build.adaptive_from_table(fn, W, cutoffs, factor, False, layer_key,
                                               param_dtype)
            module, variables = _adaptive_from_bands(AdaptiveEmbed, bands, False, dtype)
            new = variables["params"]
            approx = module.apply(variables, jnp.arange(jnp.shape(W)[0]))
            err = float(jnp.linalg.norm(approx - W) / max(float(jnp.linalg.norm(W)), 1e-300))
            report = LayerReport(path, "Embed -> AdaptiveEmbed", tuple(jnp.shape(W)),
                                 tuple(_math.band_dims(module.cutoffs, module.features,
                                                       module.factor)),
                                 size, _count(new), err, tuple(float(e) for e in bands.errors))
        else:
            f = _build.factorize(fn, W, _build.rank_for_layer(fn, rank, path), method, layer_key,
                                 nmf_options, where=where,
                                 name="table" if kind == "embed" else "kernel",
                                 methods=(_build.METHODS if kind == "embed"
                                          else _build.KERNEL_METHODS))
            if kind == "embed":
                module, variables = FactorizedEmbed.from_factors(
                    f.A, f.B, f.bias, dtype=dtype, param_dtype=param_dtype)
                label = "Embed -> FactorizedEmbed"
            else:
                module, variables = FactorizedLinear.from_factors(
                    f.A, f.B, leaf.get("bias"), dtype=dtype, param_dtype=param_dtype)
                label = "Dense -> FactorizedLinear"
            new = variables["params"]
            err = float(jnp.sqrt(f.residual) / jnp.where(f.norm > 0, f.norm, 1))
            report = LayerReport(path, label, tuple(jnp.shape(W)), int(f.A.shape[1]), size,
                                 _count(new), err)
        parent[name] = new
        modules[path] = module
        reports.append(report)
    return tree, modules, CompressReport(tuple(reports), before, _count(root))


def swap_modules(model: nn.Module, modules: Mapping[str, nn.Module]) -> nn.Module:
    """A copy of the Linen ``model`` with the submodule at each path replaced by ``modules[path]``.

    Each path's segments must be dataclass fields holding submodules (``embed: nn.Module``,
    ``block: nn.Module`` then ``dense: nn.Module`` inside it): the model is rebuilt by
    ``clone(field=...)``, so the parameter paths stay the same and the outputs of
    :func:`compress_params` apply as they are.
    """
    fn = "swap_modules"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: `model` must be a flax.linen.Module; got {type(model).__name__}")
    for path, new in modules.items():
        model = _swap_path(fn, model, tuple(path.split("/")), new, path)
    return model


def _swap_path(fn, module, parts, new, path):
    name = parts[0]
    fields = {f.name for f in dataclasses.fields(module)} - {"parent", "name"}
    if name not in fields or not isinstance(getattr(module, name), nn.Module):
        raise ValueError(
            f"{fn}: cannot replace {path!r}: {type(module).__name__} has no submodule field "
            f"{name!r} (its fields: {sorted(fields)}). Layers made in setup or @nn.compact are "
            f"fixed by the class; declare the layer as a field, e.g. `{name}: nn.Module`, and "
            f"pass nn.Embed(...) / nn.Dense(...) when building the model")
    if len(parts) == 1:
        return module.clone(**{name: new.clone(name=None, parent=None)})
    return module.clone(**{name: _swap_path(fn, getattr(module, name), parts[1:], new, path)})


def _is_layer(leaf):
    if not isinstance(leaf, Mapping):
        return None
    keys = set(leaf)
    if keys == {"embedding"} and np.ndim(leaf["embedding"]) == 2:
        return "embed"
    if keys in ({"kernel"}, {"kernel", "bias"}) and np.ndim(leaf["kernel"]) == 2:
        return "linear"
    return None


def _check_paths(fn, module_paths):
    items = [module_paths] if isinstance(module_paths, (str, tuple)) else module_paths
    if not isinstance(items, Sequence) or not items:
        raise ValueError(f"{fn}: `module_paths` must name at least one layer, e.g. ['embed'] or "
                         f"['encoder/embed']; got {module_paths!r}")
    paths = []
    for p in items:
        if isinstance(p, tuple):
            p = "/".join(str(x) for x in p)
        if not isinstance(p, str) or not p:
            raise TypeError(f"{fn}: `module_paths` entries must be '/'-separated strings; got "
                            f"{p!r}")
        paths.append(p)
    return paths


def _lookup(fn, root, path):
    node, parent, name = root, None, None
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(f"{fn}: `module_paths` entry {path!r} is not in `params`; its "
                             f"layers are {_layer_paths(root)}")
        parent, name, node = node, part, node[part]
    return parent, name, node


def _layer_paths(tree, prefix=""):
    out = []
    for k, v in tree.items():
        if _is_layer(v):
            out.append(prefix + k)
        elif isinstance(v, Mapping):
            out.extend(_layer_paths(v, prefix + k + "/"))
    return out


def _count(tree):
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))
