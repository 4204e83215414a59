"""How jaxfact follows the sharding of its inputs, and the collectives its sharded kernels use.

The sharding model (README, "Scaling out"): the user shards the data, e.g.
``jax.device_put(X, NamedSharding(mesh, P("data", None)))``, and calls the same function. A public
function reads the input's sharding with :func:`layout_of` (from the array itself, or from its type
under an outer ``jit`` when the mesh has explicit axes, ``jax.make_mesh``'s default) and, when the
rows (or, for some functions, the columns) are split over some mesh axes, runs a kernel written
with ``jax.shard_map``: each device works on its own block of rows and only small matrices cross
devices (``psum`` of Gram matrices and of ``l x n`` products, an all-gather of ``l x l`` R
factors). Outputs along the sharded dimension come back sharded the same way; everything else is
replicated.

Inputs that are not sharded (one device, replicated, a NumPy array) take the single-device
kernels unchanged. A sharding a kernel cannot use (both dimensions split, or the wrong one) is
resharded once, with a ``UserWarning`` that names the argument and the bytes moved
(:func:`rows_or_reshard`): never a silent all-gather of the whole matrix.

Helpers here run inside ``shard_map`` bodies, with ``axes`` the mesh axis names the rows are split
over: :func:`gram`, :func:`normalize_rows`, :func:`tsqr`, :func:`flip`, :func:`shard_index`.
:func:`collectives` and :func:`peak_bytes` read what a compiled program communicates and holds
(tests and ``python -m benchmarks scale`` use them).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxfact import _linalg

__all__ = []  # private module


class Layout(NamedTuple):
    """Where one dimension of an array is split: over ``axes`` of ``mesh`` (``size`` shards)."""

    mesh: Any                 # jax.sharding.Mesh, or AbstractMesh under an outer jit
    axes: tuple[str, ...]     # mesh axis names the dimension is split over, in order
    dim: int                  # 0: rows are split; 1: columns are split

    @property
    def size(self) -> int:
        return int(np.prod([self.mesh.shape[a] for a in self.axes]))

    def spec(self, ndim: int = 2, dim: int | None = None) -> P:
        """The PartitionSpec splitting ``dim`` (default: this layout's) of an ndim array."""
        parts = [None] * ndim
        parts[self.dim if dim is None else dim] = (self.axes[0] if len(self.axes) == 1
                                                   else self.axes)
        return P(*parts)


def _sharding_of(x: Any):
    if isinstance(x, jax.core.Tracer):
        try:
            return jax.typeof(x).sharding
        except Exception:  # pragma: no cover - tracers without a sharding in their type
            return None
    if isinstance(x, jax.Array):
        try:
            return x.sharding
        except Exception:  # pragma: no cover - deleted or donated arrays
            return None
    return None


def _split_axes(mesh, entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    # Axes of size 1 count too: under explicit axes a dimension named after one is typed as split
    # (a contraction over it needs its out_sharding), so it takes the sharded kernels (on one
    # device they cost the same).
    return (entry,) if isinstance(entry, str) else tuple(entry)


def check_platforms(fn: str, name: str, mesh: Any) -> None:
    """ValueError when the devices of a concrete mesh are not all of one platform."""
    if isinstance(mesh, jax.sharding.Mesh):   # an AbstractMesh has one platform
        check_same_platform(fn, name, list(mesh.devices.flat))


def check_same_platform(fn: str, name: str, devices: list[Any]) -> None:
    platforms = sorted({d.platform for d in devices})
    if len(platforms) > 1:
        raise ValueError(f"{fn}: `{name}` is sharded over a mesh that mixes devices of different "
                         f"platforms ({', '.join(platforms)}); collectives need one platform. "
                         f"Build the mesh from jax.devices('<platform>').")


def layout_of(fn: str, name: str, x: Any) -> tuple[Layout | None, Layout | None]:
    """(rows, cols): the layouts of dimensions 0 and 1 of a 2-D array, None where not split.

    Reads ``x.sharding`` (a concrete array) or ``jax.typeof(x).sharding`` (a tracer, under an
    outer ``jit`` with a mesh of explicit axes). Arrays without a ``NamedSharding`` (NumPy, a
    single device, an auto-sharded tracer) give ``(None, None)``: the single-device kernels
    run and XLA's sharding propagation decides the rest.
    """
    sharding = _sharding_of(x)
    if not isinstance(sharding, NamedSharding) or getattr(x, "ndim", 0) < 1:
        return None, None
    mesh = sharding.mesh
    if getattr(mesh, "empty", False):
        return None, None
    spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
    rows = _split_axes(mesh, spec[0])
    cols = _split_axes(mesh, spec[1]) if x.ndim > 1 else ()
    if rows or cols:
        check_platforms(fn, name, mesh)
    return (Layout(mesh, rows, 0) if rows else None,
            Layout(mesh, cols, 1) if cols else None)


def place(x: Any, mesh: Any, spec: P) -> Any:
    """x laid out as ``spec`` on ``mesh``: ``device_put`` for a concrete array; for a traced one a
    ``reshard`` (explicit axes: the layout is part of its type) or a sharding constraint (auto)."""
    sharding = NamedSharding(mesh, spec)
    if not isinstance(x, jax.core.Tracer):
        return jax.device_put(x, sharding)
    explicit = all(t == jax.sharding.AxisType.Explicit for t in getattr(mesh, "axis_types", ()))
    if explicit:  # a bare PartitionSpec would need a mesh context (jax.set_mesh)
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def reshard(x: Any, layout: Layout) -> Any:
    """x resharded to ``layout`` (its dimension split, the others replicated)."""
    return place(x, layout.mesh, layout.spec(x.ndim))


def one_device(x: Any) -> Any:
    """``x`` without the type of a one-device mesh, for kernels that mix it with unsplit arrays:
    an array split over a mesh axis of size 1 is whole on one device, but under explicit axes its
    type still says "split". Its one shard is the array (no copy)."""
    sharding = _sharding_of(x)
    if (not isinstance(sharding, NamedSharding) or sharding.mesh.size != 1
            or all(p is None for p in sharding.spec)):
        return x
    if isinstance(x, jax.core.Tracer):
        return place(x, sharding.mesh, P())
    return jax.device_put(x, jax.sharding.SingleDeviceSharding(sharding.mesh.devices.flat[0]))


def rows_or_reshard(fn: str, name: str, x: Any, *, allow_cols: bool = False
                    ) -> tuple[Any, Layout | None]:
    """The layout a row kernel uses for ``x``, resharding once (with a warning) where needed.

    Returns ``(x, layout)``: ``layout`` is None for an unsharded ``x``; ``layout.dim`` is 0 for
    rows split, or 1 for columns split when ``allow_cols`` (the kernel then works on ``x.T``).
    Both dimensions split, or columns split where only rows are allowed, is resharded by rows
    with a ``UserWarning`` naming the bytes moved.
    """
    return split_or_reshard(fn, name, x, (0, 1) if allow_cols else (0,))


def split_or_reshard(fn: str, name: str, x: Any, dims: tuple[int, ...] = (0,)
                     ) -> tuple[Any, Layout | None]:
    """As :func:`rows_or_reshard`, with ``dims`` the dimensions a kernel can take split, in order
    of preference: any other sharding is resharded to split ``dims[0]``, with a warning."""
    rows, cols = layout_of(fn, name, x)
    found = [lay for lay in (rows, cols) if lay is not None]
    if not found:
        return x, None
    if len(found) == 1 and found[0].dim in dims:
        return x, found[0]
    axes = tuple(a for lay in found for a in lay.axes)
    target = Layout(found[0].mesh, axes, dims[0])
    given = P(rows.axes if rows else None, cols.axes if cols else None)
    what = ("both its dimensions" if len(found) == 2
            else "its columns" if found[0].dim == 1 else "its rows")
    work = "rows" if dims[0] == 0 else "columns"
    nbytes = int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
    warnings.warn(
        f"{fn}: `{name}` of shape {tuple(x.shape)} is sharded along {what} ({given}); {fn} "
        f"splits this work by {work}, so `{name}` is resharded once to {target.spec()}, moving "
        f"up to {nbytes:,} bytes between devices. Shard `{name}` with NamedSharding(mesh, "
        f"{target.spec()}) to avoid this.", UserWarning, stacklevel=4)
    return reshard(x, target), target


# ------------------------------------------------------------------------------------------------
# Collectives inside shard_map bodies (``axes``: the mesh axes the rows are split over)


def shard_index(axes: tuple[str, ...]) -> jax.Array:
    """This shard's position along the split dimension, 0 <= i < size."""
    return jax.lax.axis_index(axes)


def gram(At: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    """``A^T A`` (l, l) of a row-split A whose local block is given transposed, At (l, m_local)."""
    return jax.lax.psum(jnp.matmul(At, At.T, precision=jax.lax.Precision.HIGHEST), axes)


def _cholesky_qr_rows(Yt, shift, axes):
    G = gram(Yt, axes)
    G = G + (shift * jnp.trace(G) + jnp.finfo(Yt.dtype).tiny) * jnp.eye(G.shape[0], dtype=G.dtype)
    R = jnp.linalg.cholesky(G, upper=True)
    # R^-T Yt as one product with the (l, l) R^-1 (as _linalg._cholesky_qr): XLA's CPU triangular
    # solve over m_local right-hand sides is LAPACK's, several times slower, and wakes OpenBLAS's
    # threads, which then spin on the cores XLA's products need.
    return jnp.matmul(_linalg.inv_upper(R).T, Yt, precision=jax.lax.Precision.HIGHEST)


def normalize_rows(Yt: jax.Array, axes: tuple[str, ...], m: int) -> jax.Array:
    """``_linalg.normalize_rows`` (shifted CholeskyQR3) of Yt (l, m) whose columns are split:
    Yt is the local (l, m_local) block, m the global column count. Crosses devices: three
    (l, l) Gram matrices and an (l,) row maximum."""
    l = Yt.shape[0]
    eps = jnp.finfo(Yt.dtype).eps
    # (pmax has no derivative; the scaling does not change the row space.)
    peak = jax.lax.pmax(jax.lax.stop_gradient(jnp.max(jnp.abs(Yt), axis=1, keepdims=True)), axes)
    Yt = Yt / jnp.where(peak > 0, peak, 1)
    Qt = _cholesky_qr_rows(Yt, 11 * (m * l + l * (l + 1)) * eps, axes)
    Qt = _cholesky_qr_rows(Qt, l * eps, axes)
    return _cholesky_qr_rows(Qt, l * eps, axes)


def tsqr(A: jax.Array, axes: tuple[str, ...]) -> tuple[jax.Array, jax.Array]:
    """Tall-skinny QR of a row-split A (m, l): local block A (m_local, l) -> (Q_local, R).

    Householder QR of each block, a psum of the ``size`` small R factors stacked (size * l * l
    entries) and one QR of their stack (Demmel, Grigori, Hoemmen & Langou 2012). Q is
    orthonormal to working precision also for a rank-deficient A; R (l, l) is replicated."""
    m_local, l = A.shape
    Q1, R1 = jnp.linalg.qr(A, mode="reduced")          # (m_local, r), (r, l), r = min(m_local, l)
    r = R1.shape[0]
    # The stack of every block's R, (size * r, l), replicated: each shard writes its block into
    # zeros and a psum adds them (an all-gather would do the same work but leaves its result typed
    # as varying across the shards).
    i = shard_index(axes)
    size = jax.lax.psum(1, axes)
    Rs = jax.lax.psum(jax.lax.dynamic_update_slice_in_dim(
        jnp.zeros((size * r, l), A.dtype), R1, i * r, axis=0), axes)
    Q2, R = jnp.linalg.qr(Rs, mode="reduced")           # (size * r, l), (l, l)
    Q2_local = jax.lax.dynamic_slice_in_dim(Q2, i * r, r, axis=0)
    return Q1 @ Q2_local, R


def flip(U: jax.Array, S: jax.Array, Vt: jax.Array, axes: tuple[str, ...]):
    """``_linalg.flip`` (u-based) with U row-split: the sign of the largest |entry| of each
    column, the first such entry in global row order as ``jnp.argmax`` picks it."""
    k = U.shape[1]
    Us = jax.lax.stop_gradient(U)   # the signs are piecewise constant (pmax has no derivative)
    idx = jnp.argmax(jnp.abs(Us), axis=0)
    local_max = jnp.abs(Us[idx, jnp.arange(k)])
    local_sign = jnp.sign(Us[idx, jnp.arange(k)])
    best = jax.lax.pmax(local_max, axes)
    me = shard_index(axes)
    size = jax.lax.psum(1, axes)
    winner = jax.lax.pmin(jnp.where(local_max == best, me, size), axes)
    signs = jax.lax.psum(jnp.where(me == winner, local_sign, 0), axes)
    signs = jnp.where(signs == 0, 1, signs).astype(U.dtype)
    return U * signs[None, :], S, Vt * signs[:, None]


def take(a: jax.Array, idx: jax.Array) -> jax.Array:
    """``a[idx]`` (rows of a 1-D or 2-D array at integer positions), replicated. When a's rows are
    split, each device reads the positions it holds and a psum of the ``idx.shape + a.shape[1:]``
    result assembles them: only the rows asked for cross devices."""
    rows, cols = layout_of("take", "a", a) if a.ndim in (1, 2) else (None, None)
    if rows is None or cols is not None:
        return a[idx]
    m_local = a.shape[0] // rows.size

    def body(a, idx):
        local = idx - shard_index(rows.axes) * m_local
        mine = (local >= 0) & (local < m_local)
        got = a[jnp.clip(local, 0, m_local - 1)]
        mask = mine.reshape(mine.shape + (1,) * (a.ndim - 1))
        return jax.lax.psum(jnp.where(mask, got, 0), rows.axes)

    return jax.shard_map(body, mesh=rows.mesh, in_specs=(rows.spec(a.ndim), P()),
                         out_specs=P())(a, idx)


# ------------------------------------------------------------------------------------------------
# What a compiled program communicates and holds

_COLLECTIVE = re.compile(
    r"=\s*(?P<type>\(?[a-z0-9]+\[[^=]*?)\s+(?P<op>all-gather|all-reduce|all-to-all|"
    r"reduce-scatter|collective-permute|collective-broadcast)(?:-start)?\(")
_COMMENT = re.compile(r"/\*.*?\*/")
_ARRAY = re.compile(r"(?P<dtype>[a-z]+[0-9]*)\[(?P<dims>[0-9,]*)\]")


_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
             "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}


class Collective(NamedTuple):
    """One collective of a compiled program: its op, the result's dtype and shape, bytes."""

    op: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def collectives(hlo_text: str) -> list[Collective]:
    """The collectives of a compiled program's HLO text (``compiled.as_text()``), one entry per
    result array (a tuple-shaped collective gives one per element). ``*-done`` halves of async
    pairs are not counted twice."""
    found = []
    for line in hlo_text.splitlines():
        # XLA annotates long tuple types with /*index=5*/ comments; their "=" would end the type.
        match = _COLLECTIVE.search(_COMMENT.sub("", line))
        if match is None:
            continue
        for arr in _ARRAY.finditer(match.group("type")):
            dtype = arr.group("dtype")
            if dtype in ("token",):
                continue
            shape = tuple(int(d) for d in arr.group("dims").split(",") if d)
            itemsize = _ITEMSIZE.get(dtype, 4)
            found.append(Collective(match.group("op"), dtype, shape,
                                    int(np.prod(shape, dtype=np.int64)) * itemsize))
    return found


_HEADER = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[^\s(]+)\s.*\{\s*$")
_CALLS = re.compile(r"(?P<kind>body|condition|calls|to_apply|branch_computations)="
                    r"(?P<names>\{[^}]*\}|%?[^\s,)]+)")


def loop_collectives(hlo_text: str) -> list[Collective]:
    """The collectives of a compiled program that sit inside ``while`` loops (each counted once):
    what one iteration of every loop moves, setup and final steps left out."""
    comps: dict[str, list[str]] = {}
    current = None
    for line in hlo_text.splitlines():
        if current is None:
            header = _HEADER.match(line)
            if header and not line.startswith(" "):
                current = header.group("name")
                comps[current] = []
        elif line.startswith("}"):
            current = None
        else:
            comps[current].append(line)

    def callees(name, kinds):
        for line in comps.get(name, ()):
            for call in _CALLS.finditer(_COMMENT.sub("", line)):
                if call.group("kind") in kinds:
                    yield from (n.strip().lstrip("%") for n in
                                call.group("names").strip("{}").split(","))

    roots = {c for name in comps for c in callees(name, ("body", "condition"))}
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(callees(name, ("body", "condition", "calls", "to_apply",
                                       "branch_computations")))
    return collectives("\n".join(line for name in seen for line in comps.get(name, ())))


def peak_bytes(compiled: Any) -> int:
    """Peak device memory of a compiled program (arguments, outputs and temporaries), per
    device, from ``compiled.memory_analysis()``."""
    mem = compiled.memory_analysis()
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes
               + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
