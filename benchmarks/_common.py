"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np


def block(x: Any) -> Any:
    return jax.block_until_ready(x)


def timeit(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 1) -> float:
    """Best wall-clock seconds of ``repeat`` calls after ``warmup`` calls (JAX results are waited
    for, so compile time is excluded once warmed up)."""
    for _ in range(warmup):
        block(fn())
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        block(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one call (compile time included for a fresh JAX function) and its result."""
    t0 = time.perf_counter()
    out = block(fn())
    return time.perf_counter() - t0, out


def gemm_rate(n: int = 2000, dtype=np.float32) -> float:
    """The machine's dense matrix-multiply rate in FLOP/s, measured with XLA (the floor that
    matmul-bound algorithms are compared to)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    seconds = timeit(lambda: f(a, b), repeat=5)
    return 2 * n**3 / seconds


def blas_threads() -> str:
    """The BLAS libraries NumPy/SciPy (the peers) run on and their thread counts."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return "BLAS threads unknown (threadpoolctl not installed)"
    libs = [f"{i.get('internal_api', '?')} {i.get('num_threads', '?')} threads"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "BLAS: " + (", ".join(sorted(set(libs))) or "none loaded")


def machine() -> str:
    """One line: CPU, cores, the peers' BLAS threads, JAX version and device."""
    dev = jax.devices()[0]
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{blas_threads()}, JAX {jax.__version__} on {dev.platform} ({dev.device_kind}, "
            f"{jax.device_count()} device(s))")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    cells = [list(map(str, header))] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
