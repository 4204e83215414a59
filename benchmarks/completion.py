"""Matrix completion: jaxfact's ``svt`` against a SciPy/PROPACK implementation of the same
algorithm, and ``soft_impute`` against a dense NumPy SoftImpute.

SVT problems are the paper's (Cai, Candès & Shen 2010, section 5.1.2): M = M_L M_R^T with n x r
Gaussian factors, m = 6 d_r entries observed uniformly at random (d_r = r (2n - r)), tau = 5n,
delta = 1.2 n^2 / m, tol = 1e-4. Times are one run each, compile time included.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

# ------------------------------------------------------------------------------------------------
# Problems and references (also used by paper_repro/cai2010.py)


def random_problem(n: int, r: int, ratio: float, seed: int = 0, n2: int | None = None):
    """The paper's random completion problem: factors (n x r, n2 x r) and ``ratio * d_r`` entries
    sampled uniformly without replacement, sorted row-major.

    Returns (rows, cols, values, ML, MR)."""
    n2 = n if n2 is None else n2
    rng = np.random.default_rng(seed)
    ML = rng.standard_normal((n, r))
    MR = rng.standard_normal((n2, r))
    m = int(round(ratio * r * (n + n2 - r)))
    flat = np.sort(rng.choice(n * n2, size=m, replace=False))
    rows = (flat // n2).astype(np.int32)
    cols = (flat % n2).astype(np.int32)
    values = np.einsum("ij,ij->i", ML[rows], MR[cols])
    return rows, cols, values, ML, MR


def relative_error(U, S, Vt, ML, MR) -> float:
    """||U diag(S) Vt - ML MR^T||_F / ||ML MR^T||_F from the factors, in float64, without forming
    an n x n array: both matrices are written in the orthonormal bases of [U, ML] and [V, MR]."""
    U, S, V = (np.asarray(a, np.float64) for a in (U, S, np.asarray(Vt).T))
    QL = np.linalg.qr(np.hstack([U, ML]))[0]
    QR = np.linalg.qr(np.hstack([V, MR]))[0]
    X = ((QL.T @ U) * S) @ (V.T @ QR)
    M = (QL.T @ ML) @ (MR.T @ QR)
    return float(np.linalg.norm(X - M) / np.linalg.norm(M))


def svt_scipy(rows, cols, values, shape, *, tau=None, delta=None, tol=1e-4, max_iter=500,
              incre=5, seed=0):
    """SVT exactly as in section 5.1.1 of the paper, with PROPACK partial SVDs (svds).

    Kicking start Y = k0 delta P(M); at step k, s_k = r_{k-1} + 1 singular values, grown by
    ``incre`` until the smallest computed one is <= tau. Returns (U, S, Vt, n_iter, residuals,
    ranks)."""
    n1, n2 = shape
    m = len(values)
    tau = 5 * math.sqrt(n1 * n2) if tau is None else tau
    delta = 1.2 * n1 * n2 / m if delta is None else delta
    rng = np.random.default_rng(seed)
    P = sp.csr_matrix((values, (rows, cols)), shape=shape)
    order = np.lexsort((cols, rows))              # csr data order
    # PROPACK's default Krylov cap (10 k) is too small for clustered top singular values.
    norm_pm = svds(P, k=1, solver="propack", return_singular_vectors=False, rng=rng,
                   maxiter=200)[0]
    k0 = math.ceil(tau / (delta * norm_pm))
    norm_b = np.linalg.norm(values)
    y = k0 * delta * values
    r = 0
    residuals, ranks = [], []
    kmax = min(shape) - 1
    for _ in range(max_iter):
        Y = sp.csr_matrix((y[order], P.indices, P.indptr), shape=shape)
        s = min(r + 1, kmax)
        while True:
            U, S, Vt = svds(Y, k=s, solver="propack", rng=rng, maxiter=max(10 * s, 200))
            U, S, Vt = U[:, ::-1], S[::-1], Vt[::-1]    # svds returns them ascending
            if S[-1] <= tau or s == kmax:
                break
            s = min(s + incre, kmax)
        r = int(np.sum(S > tau))
        U, S, Vt = U[:, :r], S[:r] - tau, Vt[:r]
        x = np.einsum("ij,j,ij->i", U[rows], S, Vt.T[cols])
        res = np.linalg.norm(x - values) / norm_b
        residuals.append(res)
        ranks.append(r)
        if res <= tol or res > 1e5:
            break
        y += delta * (values - x)
    return U, S, Vt, len(residuals), np.array(residuals), np.array(ranks)


def soft_impute_numpy(rows, cols, values, shape, *, lam, tol, max_iter, max_rank=None):
    """Dense SoftImpute (Mazumder, Hastie & Tibshirani 2010, Algorithm 1) with full SVDs:
    Z <- D_lam(P(X) + P_perp(Z)) until ||Z_old - Z||_F^2 / ||Z_old||_F^2 < tol."""
    X = np.zeros(shape)
    X[rows, cols] = values
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    Z = np.zeros(shape)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        U, s, Vt = np.linalg.svd(np.where(mask, X, Z), full_matrices=False)
        s = np.maximum(s - lam, 0)
        if max_rank is not None:
            s[max_rank:] = 0
        Z_new = (U * s) @ Vt
        change = np.sum((Z_new - Z) ** 2) / max(np.sum(Z**2), 1e-300)
        Z = Z_new
        if change < tol:
            break
    obj = 0.5 * np.sum((Z[rows, cols] - values) ** 2) + lam * np.sum(s)
    return Z, obj, n_iter


# ------------------------------------------------------------------------------------------------
# The benchmark


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]


def _listen_compile_events():
    import jax
    if getattr(_listen_compile_events, "done", False):
        return

    def listener(event, duration, **kwargs):
        if event in _COMPILE_EVENTS:
            _compile_seconds[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    _listen_compile_events.done = True


def _timed(fn):
    """(seconds, seconds of them spent tracing, lowering and compiling, result) of one call."""
    from benchmarks._common import time_once
    _listen_compile_events()
    before = _compile_seconds[0]
    seconds, out = time_once(fn)
    return seconds, _compile_seconds[0] - before, out


_CACHED_RUN = """
import sys, time
import jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
import jaxfact
from benchmarks.completion import random_problem
n, r, ratio = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rows, cols, values, _, _ = random_problem(n, r, ratio, 0)
vals32 = jnp.asarray(values, jnp.float32)
t0 = time.perf_counter()
jax.block_until_ready(jaxfact.svt(rows, cols, vals32, (n, n)))
print(time.perf_counter() - t0)
"""


def _svt_cached_first_call(n, r, ratio) -> float:
    """Seconds of svt's first call in a new process whose persistent compilation cache (a
    temporary directory) a previous process filled: cold, but nothing to compile."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as cache:
        args = [sys.executable, "-c", _CACHED_RUN, cache, str(n), str(r), str(ratio)]
        for _ in range(2):   # the first process fills the cache, the second reads it
            out = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True,
                                 check=True)
    return float(out.stdout.split()[-1])


def _bench_svt(n, r, ratio, seed=0):
    import jax
    import jax.numpy as jnp
    import jaxfact

    rows, cols, values, ML, MR = random_problem(n, r, ratio, seed)
    t0 = time.perf_counter()
    U, S, Vt, it_ref, _, ranks = svt_scipy(rows, cols, values, (n, n))
    t_ref = time.perf_counter() - t0
    err_ref = relative_error(U, S, Vt, ML, MR)
    jax.clear_caches()
    vals32 = jnp.asarray(values, jnp.float32)
    run = lambda: jaxfact.svt(rows, cols, vals32, (n, n))
    t_cold, t_compile, res = _timed(run)
    t_warm, _, _ = _timed(run)
    t_cached = _svt_cached_first_call(n, r, ratio)
    err = relative_error(res.U, res.S, res.Vt, ML, MR)
    return ([n, r, len(values), "jaxfact.svt (float32)", int(res.n_iter), err, t_cold, t_compile,
             t_warm, t_cached, t_cold / t_ref, t_warm / t_ref, t_cached / t_ref],
            [n, r, len(values), "SciPy svds(propack)", it_ref, err_ref, t_ref, 0.0, t_ref, t_ref,
             1.0, 1.0, 1.0])


def _bench_soft_impute(n, r, seed=0):
    import jax
    import jax.numpy as jnp
    import jaxfact
    from benchmarks._common import time_once

    rng = np.random.default_rng(seed)
    rows, cols, values, ML, MR = random_problem(n, r, 0.0, seed)  # factors only
    m = n * n // 5
    flat = np.sort(rng.choice(n * n, size=m, replace=False))
    rows, cols = (flat // n).astype(np.int32), (flat % n).astype(np.int32)
    values = np.einsum("ij,ij->i", ML[rows], MR[cols]) + 0.5 * rng.standard_normal(m)
    lam = 0.1 * np.linalg.norm(sp.csr_matrix((values, (rows, cols)), (n, n)).toarray(), 2)
    tol, max_iter, k = 1e-5, 300, 4 * r
    t0 = time.perf_counter()
    _, obj_ref, it_ref = soft_impute_numpy(rows, cols, values, (n, n), lam=lam, tol=tol,
                                           max_iter=max_iter)
    t_ref = time.perf_counter() - t0
    jax.clear_caches()
    vals32 = jnp.asarray(values, jnp.float32)
    t_ours, res = time_once(lambda: jaxfact.soft_impute(
        rows, cols, vals32, (n, n), lam=float(lam), rank=k, tol=tol, max_iter=max_iter))
    x = np.einsum("ij,j,ji->i", np.asarray(res.U, np.float64)[rows], np.asarray(res.S, np.float64),
                  np.asarray(res.Vt, np.float64)[:, cols])
    obj = 0.5 * np.sum((x - values) ** 2) + lam * np.sum(np.asarray(res.S, np.float64))
    return ([n, len(values), "jaxfact.soft_impute (float32)", int(res.n_iter), obj / obj_ref - 1,
             t_ours, t_ours / t_ref],
            [n, len(values), "dense NumPy SoftImpute", it_ref, 0.0, t_ref, 1.0])


def main(quick: bool = False) -> None:
    from benchmarks._common import table

    sizes = [1000] if quick else [1000, 5000]
    rows = []
    for n in sizes:
        rows.extend(_bench_svt(n, 10, 6.0))
    print("SVT, paper's problems (r = 10, m = 6 d_r, tau = 5n, delta = 1.2 n^2/m, tol = 1e-4). "
          "cold: the first call (after jax.clear_caches()), compile time included, and of it "
          "'compile' tracing, lowering and XLA compilation (jax.monitoring events); warm: a "
          "second call in the same process; cached: the first call in a new process whose "
          "persistent compilation cache a previous process filled (see docs: compilation-cache). "
          "Ratios to SciPy's one run; 'time ratio' is the cold one")
    print(table(["n", "r", "m", "solver", "iterations", "rel. error", "cold s", "compile s",
                 "warm s", "cached s", "time ratio", "warm ratio", "cached ratio"], rows))
    print()
    rows = []
    # One size: the dense reference's full SVDs take minutes at n = 2000 on 2 cores.
    for n in [1000]:
        rows.extend(_bench_soft_impute(n, 5))
    print("SoftImpute, rank-5 signal plus noise, 20% of the entries observed, "
          "lam = 0.1 ||P(X)||_2, tol = 1e-5, max_rank = 20; objective gap relative to the dense "
          "float64 solution; one run each, compile time included")
    print(table(["n", "m", "solver", "iterations", "objective gap", "seconds", "time ratio"], rows))
