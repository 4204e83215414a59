"""Argument validation shared by every public function.

Each public function of jaxfact is a thin wrapper that validates its arguments here and then calls a
jitted kernel that assumes valid input. Checks come in two tiers:

* shapes, dtypes and static options are always checked, in Python, and raise ``ValueError`` or
  ``TypeError``;
* values (finite, non-negative, in range) are checked when the array is concrete; under an outer
  ``jax.jit`` or ``jax.vmap`` the array is a tracer and those checks are skipped, unless the
  function was called with ``checks=True``: then they are staged with
  ``jax.experimental.checkify.check``, and the caller wraps the jitted function with
  ``checkify.checkify`` to receive them (``err.throw()`` raises ``JaxRuntimeError``).

Every message names the function, the argument, what was expected and what was given, e.g.
``truncated_svd: `rank` must be an integer in [1, 3]; got 5``.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jax.experimental import sparse as jsparse

__all__ = []  # private module


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values that can be inspected on the host (not a tracer)."""
    leaves = jax.tree_util.tree_leaves(x)
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


def eager():
    """Context in which jnp operations on concrete arrays run now, even inside a ``jit`` trace.

    Value checks run on concrete inputs only, but a concrete array closed over by a jitted function
    is still concrete inside its trace, where plain ``jnp`` operations would be staged into the
    trace (and ``bool()`` of their result fails). Under this context they are evaluated on the
    array's device and only the small answer comes to the host.
    """
    return jax.ensure_compile_time_eval()


def on_host(x: Any) -> bool:
    """True for a NumPy array or a JAX array whose buffers are in host memory (CPU devices):
    NumPy then reads it without a copy, and a check costs no compiled program."""
    if isinstance(x, np.ndarray):
        return True
    devices = getattr(x, "devices", None)
    try:
        return (isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
                and x.is_fully_addressable and all(d.platform == "cpu" for d in devices()))
    except Exception:  # pragma: no cover - exotic array types
        return False


def value_range(x: Any) -> tuple[Any, Any]:
    """(min, max) of a concrete, non-empty array as Python scalars, also inside a trace."""
    if on_host(x):
        a = np.asarray(x)
        return a.min().item(), a.max().item()
    with eager():
        return jnp.min(x).item(), jnp.max(x).item()


def _describe(x: Any) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"an array of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def is_scipy_sparse(x: Any) -> bool:
    """True for a SciPy sparse matrix or array (without importing SciPy)."""
    return hasattr(x, "tocoo") and hasattr(x, "nnz") and not isinstance(x, jsparse.JAXSparse)


def as_float_array(fn: str, name: str, x: Any, *, ndim: int | None = 2,
                   sparse_hint: str = "a function that accepts sparse input") -> jax.Array:
    """Converts ``x`` to a real floating JAX array of the given ndim, or raises.

    Integer, boolean and complex inputs raise ``TypeError`` (cast them yourself, so that the
    precision is your choice), and so do sparse matrices, with ``sparse_hint`` saying what to use
    instead. The input is never modified: JAX arrays are immutable and NumPy arrays are copied to
    the device.
    """
    if isinstance(x, jsparse.JAXSparse) or is_scipy_sparse(x):
        kind = (f"a sparse {type(x).__name__} matrix" if isinstance(x, jsparse.JAXSparse)
                else f"a SciPy sparse {type(x).__name__}")
        densify = "todense()" if isinstance(x, jsparse.JAXSparse) else "toarray()"
        raise TypeError(f"{fn}: `{name}` must be a dense array here; got {kind}. Use "
                        f"{sparse_hint}, or densify it with `{name}.{densify}`.")
    if not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise TypeError(f"{fn}: `{name}` must be an array; got {type(x).__name__}") from e
    check_float_dtype(fn, name, x.dtype)
    if ndim is not None and len(x.shape) != ndim:
        raise ValueError(f"{fn}: `{name}` must be {ndim}-D; got {_describe(x)}")
    return jnp.asarray(x)


def check_nonempty(fn: str, name: str, x: Any) -> None:
    """Raises ``ValueError`` if an array has a zero-length axis."""
    if 0 in tuple(x.shape):
        raise ValueError(f"{fn}: `{name}` is empty (shape {tuple(x.shape)}); it needs at least "
                         f"one row and one column")


def check_svd_result(fn: str, name: str, result: Any, *, batched: bool = False
                     ) -> tuple[Any, Any, Any]:
    """Validates a factored matrix given as a result whose first three fields are (U, S, Vt)
    (``SVDResult``, ``CompletionResult``, or a plain tuple): U (m, k), S (k,), Vt (k, n), floating
    point; with ``batched``, leading batch axes shared by all three are allowed. Returns them."""
    what = "a (U, S, Vt) triple such as an SVDResult"
    if hasattr(result, "shape") or not isinstance(result, (tuple, list)):
        raise TypeError(f"{fn}: `{name}` must be {what}; got {_describe(result)}")
    if len(result) < 3:
        raise TypeError(f"{fn}: `{name}` must be {what}; got a {type(result).__name__} of "
                        f"{len(result)} element(s)")
    factors = []
    for field, x, nd in (("U", result[0], 2), ("S", result[1], 1), ("Vt", result[2], 2)):
        if not hasattr(x, "dtype"):
            x = np.asarray(x)
        check_float_dtype(fn, f"{name}.{field}", x.dtype)
        if len(x.shape) != nd and not (batched and len(x.shape) > nd):
            raise ValueError(f"{fn}: `{name}.{field}` must be {nd}-D"
                             f"{' (after batch axes)' if batched else ''}; got {_describe(x)}")
        factors.append(x)
    U, S, Vt = factors
    batch = U.shape[:-2]
    if U.shape[-1] != S.shape[-1] or Vt.shape[-2] != S.shape[-1] or \
            S.shape[:-1] != batch or Vt.shape[:-2] != batch:
        raise ValueError(f"{fn}: `{name}` factors must have shapes (m, k), (k,), (k, n)"
                         f"{' after common batch axes' if batched else ''}; got "
                         f"{tuple(U.shape)}, {tuple(S.shape)}, {tuple(Vt.shape)}")
    return U, S, Vt


def check_float_dtype(fn: str, name: str, dtype: Any) -> None:
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{fn}: `{name}` must be real floating point; got complex dtype {dtype}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: `{name}` must be floating point; got dtype {dtype}. "
                        f"Cast it first, e.g. `{name}.astype(jnp.float32)`.")


def check_finite(fn: str, name: str, x: Any, checks: bool = False) -> None:
    """Raises ``ValueError`` if a concrete array holds NaN or Inf; for tracers, stages a checkify
    check when ``checks`` is true and does nothing otherwise."""
    data = x.data if isinstance(x, jsparse.BCOO) else x
    if not is_concrete(x):
        if checks:
            checkify.check(jnp.all(jnp.isfinite(data)), f"{fn}: `{name}` must be finite")
        return
    if on_host(data):   # NumPy reads it in place: no program to compile
        a = np.asarray(data)
        if np.isfinite(a).all():
            return
        n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        raise ValueError(f"{fn}: `{name}` must be finite; got {n_nan} NaN and {n_inf} Inf entries")
    with eager():
        if bool(jnp.all(jnp.isfinite(data))):
            return
        n_nan = int(jnp.sum(jnp.isnan(data)))
        n_inf = int(jnp.sum(jnp.isinf(data)))
    raise ValueError(f"{fn}: `{name}` must be finite; got {n_nan} NaN and {n_inf} Inf entries")


def check_nonnegative(fn: str, name: str, x: Any, checks: bool = False) -> None:
    """Raises ``ValueError`` if a concrete array has negative entries; for tracers, stages a
    checkify check when ``checks`` is true and does nothing otherwise."""
    data = x.data if isinstance(x, jsparse.BCOO) else x
    if not is_concrete(x):
        if checks:
            checkify.check(jnp.all(data >= 0), f"{fn}: `{name}` must be non-negative")
        return
    with eager():
        if not data.size or bool(jnp.all(data >= 0)):
            return
        low = float(jnp.min(data))
    raise ValueError(f"{fn}: `{name}` must be non-negative; got minimum {low}")


def check_int(fn: str, name: str, value: Any, *, low: int | None = None,
              high: int | None = None) -> int:
    """Checks that ``value`` is a Python/NumPy integer in [low, high] and returns it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, (jax.Array, np.ndarray)) and value.shape == () and \
                jnp.issubdtype(value.dtype, jnp.integer) and is_concrete(value):
            value = int(value)
        else:
            raise TypeError(f"{fn}: `{name}` must be a Python int (it fixes array shapes, so it "
                            f"cannot be traced); got {_describe(value)}")
    value = int(value)
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{fn}: `{name}` must be an integer in [{lo}, {hi}]; got {value}")
    return value


def check_rank(fn: str, rank: Any, shape: tuple[int, ...], name: str = "rank") -> int:
    return check_int(fn, name, rank, low=1, high=min(shape[-2:]))


def check_real(fn: str, name: str, value: Any, *, low: float | None = None,
               high: float | None = None, low_open: bool = False, high_open: bool = False) -> Any:
    """Checks a real hyper-parameter; concrete values are range-checked, tracers pass through."""
    if isinstance(value, bool):
        raise TypeError(f"{fn}: `{name}` must be a real number; got {value!r}")
    if isinstance(value, (jax.Array, np.ndarray)):
        if value.shape != ():
            raise ValueError(f"{fn}: `{name}` must be a scalar; got {_describe(value)}")
        if not is_concrete(value):
            return value
        v = float(value)
    elif isinstance(value, numbers.Real):
        v = float(value)
    else:
        raise TypeError(f"{fn}: `{name}` must be a real number; got {_describe(value)}")
    bad = not np.isfinite(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{fn}: `{name}` must be a finite number in {lb}{lo}, {hi}{rb}; got {v}")
    return value


def check_choice(fn: str, name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{fn}: `{name}` must be one of {valid}; got {value!r}")
    return value


def check_key(fn: str, key: Any, *, why: str = "") -> jax.Array:
    """Checks a ``jax.random`` key (new-style typed key or legacy uint32[2])."""
    if key is None:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{fn}: `key` is required{reason}; pass e.g. `key=jax.random.key(0)`")
    if not hasattr(key, "dtype"):
        raise TypeError(f"{fn}: `key` must be a jax.random key; got {_describe(key)}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{fn}: `key` must be a single key; got a key array of shape {key.shape}")
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return key
    raise TypeError(f"{fn}: `key` must be a jax.random key, e.g. `jax.random.key(0)`; "
                    f"got {_describe(key)}")


def check_same_shape(fn: str, name: str, x: Any, shape: tuple[int, ...], other: str) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{fn}: `{name}` must have the shape of `{other}`, {tuple(shape)}; "
                         f"got shape {tuple(x.shape)}")


def check_shape2(fn: str, shape: Any, name: str = "shape") -> tuple[int, int]:
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2):
        raise ValueError(f"{fn}: `{name}` must be a pair (n_rows, n_cols); got {shape!r}")
    m = check_int(fn, f"{name}[0]", shape[0], low=1)
    n = check_int(fn, f"{name}[1]", shape[1], low=1)
    return m, n


def check_observed(fn: str, rows: Any, cols: Any, values: Any, shape: Any, *,
                   values_name: str = "values", checks: bool = False
                   ) -> tuple[jax.Array, jax.Array, jax.Array, tuple[int, int]]:
    """Validates an observed-entries matrix given as (rows, cols, values, shape).

    Raises for: non-integer indices, non-float values, lengths that differ, an empty set of
    observations, negative or out-of-range indices, duplicate (row, col) pairs and NaN/Inf values.
    With ``checks``, traced indices and values get staged range and finiteness checks.
    """
    m, n = check_shape2(fn, shape)
    arrays = {}
    for name, a in (("rows", rows), ("cols", cols)):
        if not hasattr(a, "dtype"):
            a = np.asarray(a)
        if not jnp.issubdtype(a.dtype, jnp.integer):
            raise TypeError(f"{fn}: `{name}` must hold integer indices; got dtype {a.dtype}")
        if len(a.shape) != 1:
            raise ValueError(f"{fn}: `{name}` must be 1-D; got {_describe(a)}")
        arrays[name] = a
    values = as_float_array(fn, values_name, values, ndim=1)
    lengths = {len(arrays["rows"]), len(arrays["cols"]), values.shape[0]}
    if len(lengths) != 1:
        raise ValueError(f"{fn}: `rows`, `cols` and `{values_name}` must have the same length; got "
                         f"{len(arrays['rows'])}, {len(arrays['cols'])} and {values.shape[0]}")
    if values.shape[0] == 0:
        raise ValueError(f"{fn}: no observed entries; `rows`, `cols` and `{values_name}` are empty")
    if is_concrete((arrays["rows"], arrays["cols"])):
        r = np.asarray(arrays["rows"]).astype(np.int64)
        c = np.asarray(arrays["cols"]).astype(np.int64)
        for name, idx, size in (("rows", r, m), ("cols", c, n)):
            check_index_range(fn, name, idx, size)
        flat = r * n + c
        _, first = np.unique(flat, return_index=True)
        if first.size != flat.size:
            dup = np.setdiff1d(np.arange(flat.size), first)[0]
            raise ValueError(f"{fn}: duplicate observed entry (row {r[dup]}, col {c[dup]}); each "
                             f"(row, col) pair may appear once (sum or average duplicates first)")
    else:
        for name, size in (("rows", m), ("cols", n)):
            check_index_range(fn, name, arrays[name], size, checks)
    check_finite(fn, values_name, values, checks)
    rows_j = jnp.asarray(arrays["rows"], dtype=jnp.int32)
    cols_j = jnp.asarray(arrays["cols"], dtype=jnp.int32)
    return rows_j, cols_j, values, (m, n)


def check_index_range(fn: str, name: str, idx: Any, size: int, checks: bool = False) -> None:
    """Raises ``ValueError`` if a concrete integer index array has entries outside [0, size - 1]
    (one message for every function that takes indices); for tracers, stages a checkify check
    with the same message when ``checks`` is true and does nothing otherwise."""
    if not getattr(idx, "size", 1):
        return
    if not is_concrete(idx):
        if checks:
            lo, hi = jnp.min(idx), jnp.max(idx)
            checkify.check((lo >= 0) & (hi < size), f"{fn}: `{name}` must be in [0, {size - 1}]; "
                           f"got values in [{{lo}}, {{hi}}]", lo=lo, hi=hi)
        return
    lo, hi = value_range(idx)
    if lo < 0 or hi >= size:
        raise ValueError(f"{fn}: `{name}` must be in [0, {size - 1}]; got values in [{lo}, {hi}]")


def check_factors(fn: str, name: str, factors: Any, shape: tuple[int, int], dtype: Any,
                  expected: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Validates a (U, S, Vt) triple (e.g. a result) of an (n1, n2) matrix and returns it in
    ``dtype``; ``expected`` says in the message what ``name`` may be."""
    n1, n2 = shape
    try:
        U, S, Vt = factors[0], factors[1], factors[2]
    except (TypeError, IndexError) as e:
        raise TypeError(f"{fn}: `{name}` must be {expected}; got {type(factors).__name__}") from e
    U = as_float_array(fn, f"{name}.U", U).astype(dtype)
    S = as_float_array(fn, f"{name}.S", S, ndim=1).astype(dtype)
    Vt = as_float_array(fn, f"{name}.Vt", Vt).astype(dtype)
    j = S.shape[0]
    if U.shape != (n1, j) or Vt.shape != (j, n2):
        raise ValueError(f"{fn}: `{name}` factors must have shapes ({n1}, k), (k,), (k, {n2}); "
                         f"got {U.shape}, {S.shape}, {Vt.shape}")
    return U, S, Vt


def warn_renamed(fn: str, old: str, new: str, *, stacklevel: int = 3) -> None:
    """A one-release ``DeprecationWarning`` for an argument renamed in the 0.2 surface (see
    CHANGELOG.md)."""
    import warnings
    warnings.warn(f"{fn}: `{old}` is renamed `{new}`; `{old}` will be removed in the next "
                  f"release", DeprecationWarning, stacklevel=stacklevel)


def check_below(fn: str, name: str, x: Any, bound: int, bound_name: str,
                checks: bool = False) -> None:
    """Raises ``ValueError`` if a concrete array has an entry >= ``bound`` (named ``bound_name``
    in the message); for tracers, stages a checkify check when ``checks`` is true."""
    if not is_concrete(x):
        if checks:
            checkify.check(jnp.all(x < bound), f"{fn}: `{name}` must be < {bound_name} = {bound}")
        return
    if not getattr(x, "size", 1):
        return
    top = value_range(x)[1]
    if top >= bound:
        raise ValueError(f"{fn}: `{name}` must be < {bound_name} = {bound}; got {top}")


def check_user_item_factors(fn: str, X: Any, Y: Any, *, prefix: str = "",
                            checks: bool | None = False) -> tuple[jax.Array, jax.Array]:
    """User factors X (m, k) and item factors Y (n, k) as float arrays with the same k; finite
    (checked when concrete, staged when ``checks``) unless ``checks`` is None."""
    X = as_float_array(fn, f"{prefix}user_factors", X)
    Y = as_float_array(fn, f"{prefix}item_factors", Y)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{fn}: `{prefix}user_factors` and `{prefix}item_factors` must have the "
                         f"same number of columns; got {X.shape} and {Y.shape}")
    if checks is not None:
        check_finite(fn, f"{prefix}user_factors", X, checks)
        check_finite(fn, f"{prefix}item_factors", Y, checks)
    return X, Y


def check_warm_start(fn: str, warm_start: Any, fields: tuple[str, ...],
                     shapes: tuple[tuple[int, ...], ...], what: str, dtype: Any,
                     checks: bool = False) -> list[jax.Array]:
    """A warm start given as a result with ``fields`` or as a tuple of those arrays (in that
    order), each checked against its shape, finite, and returned in ``dtype``; ``what`` names
    the result type in the message."""
    if all(hasattr(warm_start, f) for f in fields):
        parts = tuple(getattr(warm_start, f) for f in fields)
    elif isinstance(warm_start, (tuple, list)) and len(warm_start) == len(fields) and \
            not hasattr(warm_start, "_fields"):
        parts = tuple(warm_start)
    else:
        raise TypeError(f"{fn}: `warm_start` must be {what} or a tuple ({', '.join(fields)}); "
                        f"got {type(warm_start).__name__}")
    out = []
    for name, a, shp in zip(fields, parts, shapes):
        a = as_float_array(fn, f"warm_start.{name}", a, ndim=len(shp))
        check_same_shape(fn, f"warm_start.{name}", a, shp, "the model")
        check_finite(fn, f"warm_start.{name}", a, checks)
        out.append(a.astype(dtype))
    return out
