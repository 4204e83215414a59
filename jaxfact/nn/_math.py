"""The math of jaxfact's embedding layers, once, as pure functions of (parameters, ids).

The NNX modules (:mod:`jaxfact.nn`) and their Linen twins (:mod:`jaxfact.nn.linen`) only hold
parameters and call these functions, so both give the same outputs for the same parameters, and a
user can call the functions directly on any pytree of arrays (inside ``jax.jit``, ``vmap``,
``grad``).

Factorized embedding (Lan et al. 2020, ALBERT, Section 3.1): the (V, F) table is ``A @ B (+ b)``
with ``A`` (V, r) and ``B`` (r, F).

Factorized linear layer: ``y = (x @ A) @ B (+ b)`` with ``A`` (in, r) and ``B`` (r, out), the
low-rank counterpart of a dense kernel (in, out); O(r (in + out)) per input row instead of
O(in out).

Adaptive input (Baevski & Auli 2019, Section 3): the vocabulary is cut into bands
``[c_{i-1}, c_i)``; band i has its own table ``E_i`` (c_i - c_{i-1}, d_i), ``d_i = F // factor**i``,
and a bias-free projection ``P_i`` (d_i, F) to the model dimension.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxfact import _checks
from jaxfact import _sharding

__all__ = []  # private module; the modules in jaxfact.nn are the public face


# ------------------------------------------------------------------------------------------------
# Validation shared by the NNX and Linen shells


def check_ids(fn: str, ids: Any, num_embeddings: int) -> jax.Array:
    """Integer ids of any shape; concrete ids must lie in [0, num_embeddings)."""
    if not hasattr(ids, "dtype"):
        ids = np.asarray(ids)
    if ids.dtype == bool or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{fn}: `ids` must be an integer array of token ids; got dtype "
                        f"{ids.dtype}. Cast it first, e.g. `ids.astype(jnp.int32)`.")
    if _checks.is_concrete(ids) and np.size(ids):
        host = np.asarray(ids)   # on the host: also right for a concrete array closed over by jit
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= num_embeddings:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{fn}: `ids` must be in [0, {num_embeddings}) (the vocabulary size); "
                             f"got {bad}")
    return jnp.asarray(ids)


def check_query(fn: str, x: Any, features: int) -> jax.Array:
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    _checks.check_float_dtype(fn, "x", x.dtype)
    if len(x.shape) == 0 or x.shape[-1] != features:
        raise ValueError(f"{fn}: `x` must have a last axis of size features = {features}; got "
                         f"shape {tuple(x.shape)}")
    return jnp.asarray(x)


def check_factorized_args(fn: str, num_embeddings: Any, features: Any, rank: Any) -> tuple:
    num_embeddings = _checks.check_int(fn, "num_embeddings", num_embeddings, low=1)
    features = _checks.check_int(fn, "features", features, low=1)
    rank = _checks.check_int(fn, "rank", rank, low=1, high=min(num_embeddings, features))
    return num_embeddings, features, rank


def check_linear_args(fn: str, in_features: Any, out_features: Any, rank: Any) -> tuple:
    in_features = _checks.check_int(fn, "in_features", in_features, low=1)
    out_features = _checks.check_int(fn, "out_features", out_features, low=1)
    rank = _checks.check_int(fn, "rank", rank, low=1, high=min(in_features, out_features))
    return in_features, out_features, rank


def check_adaptive_args(fn: str, cutoffs: Any, features: Any, factor: Any,
                        num_embeddings: Any = None) -> tuple[tuple[int, ...], int, float]:
    """Validates AdaptiveEmbed's arguments; returns (cutoffs, features, factor)."""
    features = _checks.check_int(fn, "features", features, low=1)
    if isinstance(cutoffs, (str, bytes)) or not isinstance(cutoffs, Sequence) or not cutoffs:
        raise ValueError(f"{fn}: `cutoffs` must be a non-empty sequence of increasing ints ending "
                         f"at the vocabulary size, e.g. (20000, 60000, 267735); got {cutoffs!r}")
    cut = []
    for c in cutoffs:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise ValueError(f"{fn}: `cutoffs` must hold Python ints; got {cutoffs!r}")
        cut.append(int(c))
    if cut[0] < 1 or any(b <= a for a, b in zip(cut, cut[1:])):
        raise ValueError(f"{fn}: `cutoffs` must be strictly increasing positive ints (each band "
                         f"non-empty); got {tuple(cut)}")
    if num_embeddings is not None:
        num_embeddings = _checks.check_int(fn, "num_embeddings", num_embeddings, low=1)
        if cut[-1] != num_embeddings:
            raise ValueError(f"{fn}: `cutoffs` must end at the vocabulary size num_embeddings = "
                             f"{num_embeddings}; got {tuple(cut)}")
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or \
            not np.isfinite(factor) or factor < 1:
        raise ValueError(f"{fn}: `factor` must be a finite number >= 1 (each band's dimension is "
                         f"features // factor**i); got {factor!r}")
    dims = band_dims(tuple(cut), features, factor)
    if min(dims) < 1:
        raise ValueError(f"{fn}: `cutoffs` define {len(cut)} bands but features // factor**i is 0 "
                         f"from band {dims.index(0)} on (features={features}, factor={factor}); "
                         f"use fewer bands or a smaller factor")
    return tuple(cut), features, float(factor)


def check_vocab_axis(fn: str, vocab_axis: Any, sizes: dict[str, int]) -> Any:
    """``vocab_axis`` (None, a mesh or logical axis name, or a tuple of names) for the tables
    named in ``sizes`` (name -> rows). When a mesh is set (``jax.set_mesh``) and the names are its
    axes, each table's rows must split evenly over them (JAX rejects uneven shardings)."""
    if vocab_axis is None:
        return None
    names = (vocab_axis,) if isinstance(vocab_axis, str) else vocab_axis
    if not isinstance(names, tuple) or not names or \
            not all(isinstance(a, str) and a for a in names):
        raise TypeError(f"{fn}: `vocab_axis` must be None, a mesh axis name such as 'vocab' (or a "
                        f"logical name mapped by flax's axis rules), or a tuple of names; got "
                        f"{vocab_axis!r}")
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and all(a in mesh.shape for a in names):
        p = int(np.prod([mesh.shape[a] for a in names]))
        for name, rows in sizes.items():
            if rows % p:
                raise ValueError(
                    f"{fn}: `vocab_axis`={vocab_axis!r} splits the rows of `{name}` ({rows}) over "
                    f"{p} devices, which does not divide them (JAX needs even shards); pad the "
                    f"vocabulary (or the band, through `cutoffs`) to a multiple of {p}, or leave "
                    f"`vocab_axis` None")
    return vocab_axis


def vocab_sharding(vocab_axis: Any, names: Sequence[str]) -> dict[str, tuple]:
    """The ``out_sharding`` annotation of each (rows, cols) table in ``names``: rows over
    ``vocab_axis``, columns whole; empty without ``vocab_axis`` (no annotation at all)."""
    if vocab_axis is None:
        return {}
    return {name: (vocab_axis, None) for name in names}


def vocab_axis_of(table: Any, vocab_axis: Any = "infer") -> Any:
    """``vocab_axis`` itself, or for ``"infer"`` the mesh axis (or tuple of axes) splitting the
    rows of a sharded table (None for an unsharded one)."""
    if not (isinstance(vocab_axis, str) and vocab_axis == "infer"):
        return vocab_axis
    _, axes = vocab_split(table)
    return None if not axes else axes[0] if len(axes) == 1 else axes


def band_dims(cutoffs: tuple[int, ...], features: int, factor: float) -> list[int]:
    """Band i's dimension ``features // factor**i`` (fairseq's ``AdaptiveInput``)."""
    return [int(features // (factor**i)) for i in range(len(cutoffs))]


def band_has_projection(i: int, dim: int, features: int, head_projection: bool) -> bool:
    # The head band keeps its own dimension == features, so its projection would be a full
    # features x features matrix that adds nothing to the expressiveness of a trainable table.
    return head_projection or i > 0 or dim != features


def factorized_param_count(num_embeddings: int, features: int, rank: int, use_bias: bool) -> int:
    """``V r + r F (+ F)``."""
    return num_embeddings * rank + rank * features + (features if use_bias else 0)


def linear_param_count(in_features: int, out_features: int, rank: int, use_bias: bool) -> int:
    """``in r + r out (+ out)``."""
    return in_features * rank + rank * out_features + (out_features if use_bias else 0)


def adaptive_param_count(cutoffs: Sequence[int], features: int, factor: float = 4,
                         head_projection: bool = False) -> int:
    """``sum_i size_i d_i + sum_{i with projection} d_i F``."""
    dims = band_dims(tuple(cutoffs), features, factor)
    starts = (0,) + tuple(cutoffs[:-1])
    total = 0
    for i, (lo, hi, d) in enumerate(zip(starts, cutoffs, dims)):
        total += (hi - lo) * d
        if band_has_projection(i, d, features, head_projection):
            total += d * features
    return total


# ------------------------------------------------------------------------------------------------
# Parameters: names and shapes, in creation order (the shells draw initializers in this order)


EMBED_PARAMS = ("embedding", "projection")   # FactorizedEmbed's A (V, r) and B (r, F)
LINEAR_PARAMS = ("kernel_a", "kernel_b")      # FactorizedLinear's A (in, r) and B (r, out)


def low_rank_shapes(names: tuple[str, str], rows: int, cols: int, rank: int,
                    use_bias: bool) -> dict[str, tuple[int, ...]]:
    """``A @ B (+ bias)``'s parameters: ``names[0]`` (rows, r), ``names[1]`` (r, cols) and
    ``bias`` (cols,); ``EMBED_PARAMS`` for FactorizedEmbed, ``LINEAR_PARAMS`` for
    FactorizedLinear."""
    shapes = {names[0]: (rows, rank), names[1]: (rank, cols)}
    if use_bias:
        shapes["bias"] = (cols,)
    return shapes


def adaptive_shapes(cutoffs: tuple[int, ...], features: int, factor: float,
                    head_projection: bool) -> dict[str, tuple[int, ...] | None]:
    """AdaptiveEmbed's parameters: per band ``embedding_i`` (size_i, d_i) then ``projection_i``
    (d_i, F), None for a band without projection."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    lo = 0
    for i, (hi, d) in enumerate(zip(cutoffs, band_dims(cutoffs, features, factor))):
        shapes[f"embedding_{i}"] = (hi - lo, d)
        shapes[f"projection_{i}"] = (d, features) if band_has_projection(
            i, d, features, head_projection) else None
        lo = hi
    return shapes


def adaptive_bands(params: Any, n_bands: int) -> tuple[list, list]:
    """``(E, P)`` band tables and projections (None where absent) from a mapping of parameters."""
    E = [params[f"embedding_{i}"] for i in range(n_bands)]
    P = [params.get(f"projection_{i}") for i in range(n_bands)]
    return E, P


# ------------------------------------------------------------------------------------------------
# Pure math (assumes validated input; works under jit, vmap, grad). Each function is jitted so
# that an eager call compiles once instead of dispatching op by op; under an outer jit it inlines.


def _result_dtype(*arrays):
    # NumPy-style promotion of the parameters and the query (e.g. bfloat16 parameters with a
    # float32 query compute in float32), also under jax_numpy_dtype_promotion="strict".
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*arrays)


def _promote(*arrays, dtype=None):
    dtype = _result_dtype(*arrays) if dtype is None else dtype
    return tuple(a.astype(dtype) for a in arrays)


def _add_row(out, row):
    """``out + row`` with the (F,) row broadcast over the leading axes of ``out`` explicitly."""
    return out + jnp.reshape(row, (1,) * (out.ndim - 1) + row.shape)


def _gather_rows(table, ids, n):
    # Out-of-range ids (only possible under jit, where they cannot be checked) give NaN rows
    # rather than a silently clamped or wrapped row, like flax's Embed; negative ids included.
    valid = (ids >= 0) & (ids < n)
    rows = take_rows(table, jnp.where(valid, ids, 0))
    return rows, valid


def take_rows(table, ids):
    """``table[ids]`` for valid ids, also when the rows of ``table`` are split over mesh axes.

    A table whose rows are split over the axes of a mesh with explicit axes (its sharding is in
    its type) cannot be indexed by ``jnp.take`` (JAX asks where the result should live). Each
    device then gathers the ids that fall in its own block of rows (zeros elsewhere) and a
    ``psum`` of the ``(|ids|, r)`` rows combines them: the table never moves, and the ids keep
    their own sharding on the other mesh axes. With auto axes (no sharding in the type) XLA's
    propagation partitions ``jnp.take`` the same way (masked local gather, all-reduce of the
    rows), and an unsharded table takes the plain ``jnp.take``.
    """
    mesh, axes = vocab_split(table)
    if not axes:
        return jnp.take(table, ids, axis=0)
    ids_spec = _spec_without(ids, axes)
    ids = _reshard_to(ids, mesh, ids_spec)
    n_local = table.shape[0] // int(np.prod([mesh.shape[a] for a in axes]))

    def body(t, i):
        local = i - _sharding.shard_index(axes) * n_local
        mine = (local >= 0) & (local < n_local)
        got = jnp.take(t, jnp.where(mine, local, 0), axis=0)
        return jax.lax.psum(jnp.where(mine[..., None], got, 0), axes)

    return jax.shard_map(body, mesh=mesh, in_specs=(PartitionSpec(axes, None), ids_spec),
                         out_specs=PartitionSpec(*ids_spec, None))(table, ids)


def vocab_split(table) -> tuple[Any, tuple[str, ...]]:
    """``(mesh, axes)``: the mesh axes splitting the rows of a 2-D
    ``table`` whose sharding is known (a concrete array, or a tracer of a mesh with explicit
    axes) while its columns are whole; ``(None, ())`` otherwise."""
    sharding = _sharding_of(table)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or getattr(mesh, "empty", True) or table.ndim != 2:
        return None, ()
    # Axes of one device count too: a table typed as split over them (explicit axes) cannot
    # take jnp.take either, and the shard_map below costs nothing there.
    rows, cols = (_names(e) for e in _spec_of(table))
    return (mesh, rows) if rows and not cols else (None, ())


def split_rows_like(x, table):
    """``x`` (rows of ``table``'s vocabulary) split by rows as ``table`` is; unchanged when
    ``table`` is not split or ``x`` already is. Factors of a row-split table come back row-split
    from the sharded factorizations; with auto axes XLA may replicate them, which this undoes
    (each device keeps its own block: nothing moves)."""
    mesh, axes = vocab_split(table)
    if not axes or vocab_split(x)[1] == axes:
        return x
    sharding = jax.sharding.NamedSharding(mesh, PartitionSpec(axes, *([None] * (x.ndim - 1))))
    if isinstance(x, jax.core.Tracer):
        return jax.sharding.reshard(x, sharding)
    return jax.device_put(x, sharding)


def _names(entry) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _sharding_of(x):
    if isinstance(x, jax.core.Tracer):
        return jax.typeof(x).sharding
    return getattr(x, "sharding", None)


def _spec_of(x) -> tuple:
    """The PartitionSpec entries of ``x`` (one per dimension; None where not split)."""
    sharding = _sharding_of(x)
    spec = tuple(getattr(sharding, "spec", ()) or ())
    if getattr(getattr(sharding, "mesh", None), "empty", True):
        spec = ()
    return spec + (None,) * (x.ndim - len(spec))


def _spec_without(x, axes) -> PartitionSpec:
    """``x``'s spec with the mesh axes in ``axes`` removed (those dimensions replicated there)."""
    out = []
    for entry in _spec_of(x):
        kept = tuple(a for a in _names(entry) if a not in axes)
        out.append(None if not kept else kept[0] if len(kept) == 1 else kept)
    return PartitionSpec(*out)


def _reshard_to(x, mesh, spec):
    """``x`` with sharding ``spec`` on ``mesh``; unchanged when it already has it. Used for the
    small operands (ids, ``|x| x r`` products) that must not be split along the vocabulary."""
    if tuple(_spec_of(x)) == tuple(spec) + (None,) * (x.ndim - len(spec)):
        return x
    return jax.sharding.reshard(x, jax.sharding.NamedSharding(mesh, spec))


@partial(jax.jit, static_argnames=("dtype",))
def factorized_lookup(ids, embedding, projection, bias=None, *, dtype=None):
    """``A[ids] @ B (+ b)``: (..., F) from ids (...). O(|ids| r F), never forms A @ B.

    Example:
      >>> A = jnp.arange(6.0).reshape(3, 2)
      >>> factorized_lookup(jnp.array([2]), A, jnp.ones((2, 4)))
      Array([[9., 9., 9., 9.]], dtype=float32)
    """
    params = (embedding, projection) + (() if bias is None else (bias,))
    params = _promote(*params, dtype=dtype)
    A, B = params[0], params[1]
    rows, valid = _gather_rows(A, ids, A.shape[0])
    out = rows @ B
    if bias is not None:
        out = _add_row(out, params[2])
    return jnp.where(valid[..., None], out, jnp.nan)


@partial(jax.jit, static_argnames=("dtype",))
def factorized_attend(x, embedding, projection, bias=None, *, dtype=None):
    """``x @ (A @ B + 1 b^T)^T = (x @ B^T) @ A^T + (x . b)``: (..., V) logits. O(|x| r (F + V))."""
    params = (x, embedding, projection) + (() if bias is None else (bias,))
    params = _promote(*params, dtype=dtype)
    x, A, B = params[:3]
    logits = _vocab_logits(x @ B.T, A)
    if bias is not None:
        # The bias row is added to every table row, so it adds x . b to every logit.
        logits = logits + _vocab_logits((x @ params[3])[..., None], A, matmul=False)
    return logits


def _vocab_logits(h, table, matmul=True):
    """``h @ table^T``: (..., V) logits, split over the vocabulary like the rows of ``table``
    (``matmul=False``: ``h`` itself, placed as the product's left operand would be).

    When a mesh axis splits both the rows of ``h`` (a batch) and those of the table (the
    vocabulary), the product cannot keep both splits; ``h`` (``|x| x r``, small) is then
    replicated over that axis, never the (V, r) table, and the logits are split by vocabulary.
    """
    mesh, axes = vocab_split(table)
    if axes:
        h = _reshard_to(h, mesh, _spec_without(h, axes))
    return h @ table.T if matmul else h


@partial(jax.jit, static_argnames=("dtype", "precision"))
def factorized_dense(x, kernel_a, kernel_b, bias=None, *, dtype=None, precision=None):
    """``(x @ A) @ B (+ b)``: (..., out) from x (..., in); O(|x| r (in + out)), never A @ B."""
    params = (x, kernel_a, kernel_b) + (() if bias is None else (bias,))
    params = _promote(*params, dtype=dtype)
    x, A, B = params[:3]
    y = jnp.matmul(jnp.matmul(x, A, precision=precision), B, precision=precision)
    return y if bias is None else _add_row(y, params[3])


def factorized_table(embedding, projection, bias=None):
    """The dense (V, F) table ``A @ B (+ b)``; O(V r F) time and O(V F) memory."""
    table = embedding @ projection
    return table if bias is None else _add_row(table, bias)


@partial(jax.jit, static_argnames=("cutoffs", "dtype"))
def adaptive_lookup(ids, embeddings, projections, cutoffs, *, dtype=None):
    """Adaptive input lookup: row ``ids - c_{i-1}`` of ``E_i``, projected by ``P_i``, for the band i
    holding each id. ``projections[i]`` may be None (identity, the head band).

    Every band is evaluated for every id with a mask (no data-dependent shapes, no Python loop
    over tokens), so the cost is O(|ids| * sum_i d_i F); the mask zeroes the cotangent of ids
    outside a band, so the gradient of a band's parameters comes from its own ids only.
    """
    leaves = list(embeddings) + [p for p in projections if p is not None]
    dtype = _result_dtype(*leaves) if dtype is None else dtype
    features = next((p.shape[1] for p in projections if p is not None), embeddings[0].shape[1])
    out = jnp.zeros(ids.shape + (features,), dtype)
    lo = 0
    for E, P, hi in zip(embeddings, projections, cutoffs):
        in_band = (ids >= lo) & (ids < hi)
        local = jnp.where(in_band, ids - lo, 0)
        rows = take_rows(E.astype(dtype), local)
        rows = jnp.where(in_band[..., None], rows, 0)
        out = out + (rows if P is None else rows @ P.astype(dtype))
        lo = hi
    valid = (ids >= 0) & (ids < cutoffs[-1])
    return jnp.where(valid[..., None], out, jnp.nan)


@partial(jax.jit, static_argnames=("dtype",))
def adaptive_attend(x, embeddings, projections, *, dtype=None):
    """Full-vocabulary logits with the input bands' weights tied: band i's block is
    ``(x @ P_i^T) @ E_i^T``; the blocks are concatenated in id order.
    O(|x| sum_i d_i (F + size_i))."""
    leaves = [x] + list(embeddings) + [p for p in projections if p is not None]
    dtype = _result_dtype(*leaves) if dtype is None else dtype
    x = x.astype(dtype)
    blocks = []
    for E, P in zip(embeddings, projections):
        h = x if P is None else x @ P.astype(dtype).T
        blocks.append(_vocab_logits(h, E.astype(dtype)))
    return jnp.concatenate(blocks, axis=-1)
