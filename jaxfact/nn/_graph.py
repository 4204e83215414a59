"""The module graph of an NNX model: finding its ``nnx.Embed`` / ``nnx.Linear`` layers (with every
reference to each, so that a shared layer is replaced everywhere) and swapping them.

Used by :func:`jaxfact.nn.compress` and :func:`jaxfact.nn.rank_sweep`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx
from flax.nnx import graphlib

from jaxfact.nn import _build
from jaxfact.nn import _math

__all__ = []


class Target(NamedTuple):
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


def select(fn, model, include, method):
    edges = _edges(model)
    found: dict[int, Target] = {}
    for path, parent, key, child in edges:
        kind = "embed" if type(child) is nnx.Embed else "linear" if type(child) is nnx.Linear \
            else None
        if kind is None:
            continue
        t = found.get(id(child))
        ref = (_join(path), parent, key)
        found[id(child)] = Target(_join(path), kind, child, (ref,)) if t is None else \
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
                raise ValueError(_build.linear_method_message(fn, t.path, method))
    chosen = [t for t in candidates if any(t.layer is c.layer for c in chosen)]  # graph order
    _check_ties(fn, edges, chosen)
    return chosen


def rebind(targets, clone):
    """The same targets in a clone of the model (found by path: a clone has new objects, and
    its attributes are not in the original's order)."""
    edges = {_join(path): (parent, key, child) for path, parent, key, child in _edges(clone)}
    out = []
    for t in targets:
        refs = tuple((path,) + edges[path][:2] for path, _, _ in t.refs)
        out.append(t._replace(layer=edges[t.path][2], refs=refs))
    return out


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


def swap(target, new):
    for path, parent, key in target.refs:
        impl = graphlib.get_node_impl(parent)
        if getattr(impl, "set_key", None) is None:
            raise ValueError(f"compress: the layer at {path!r} sits in an immutable "
                             f"{type(parent).__name__}; hold layers in attributes, nnx.List or "
                             f"nnx.Dict so they can be replaced")
        impl.set_key(parent, key, new)


def count_params(module):
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param))))


def weights(t: Target) -> tuple[Any, Any]:
    """The layer's table or kernel, and its bias (None for an embedding)."""
    if t.kind == "embed":
        return t.layer.embedding[...], None
    bias = None if t.layer.bias is None else t.layer.bias[...]
    return t.layer.kernel[...], bias


def layer_params(kind: str, layer: Any, k: int, pca: bool) -> int:
    """Parameters of the rank-k replacement of ``layer``."""
    if kind == "embed":
        return _math.factorized_param_count(layer.num_embeddings, layer.features, k, pca)
    return _math.linear_param_count(layer.in_features, layer.out_features, k, layer.use_bias)

