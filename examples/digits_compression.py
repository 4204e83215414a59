"""Before and after input factorization: a Flax NNX classifier on scikit-learn's digits.

The 8x8 digit images (64 pixels) are fed to the same small MLP raw and after compression to k
numbers per image by three factorizations fitted on the training images only:

* SVD-k: coordinates on the top-k right singular vectors (uncentred), ``X V_k``;
* PCA-k: coordinates on the top-k principal components (centred), ``(X - mean) V_k``;
* NMF-k: non-negative codes W on k non-negative parts H (``X ~= W H``), test codes by
  ``nmf_transform`` with H fixed.

For each k the table gives test and train accuracy, the train/test gap, the classifier's
parameters (and the factorization's own), and the training time; the k chosen by
``energy_rank(S, 0.9)`` and by Gavish & Donoho's ``optimal_hard_threshold`` are marked. Figures:
accuracy against k, and the SVD components beside the NMF parts.

Run: ``python examples/digits_compression.py`` (under a minute on 2 CPU cores). PNGs go to
``examples/out/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxfact
from jaxfact.datasets import load_digits

OUT = Path(__file__).resolve().parent / "out"
HIDDEN = 64
STEPS = 300
LR = 1e-2


class MLP(nnx.Module):
    def __init__(self, d_in: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(d_in, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def split(seed: int = 0, test_fraction: float = 0.3):
    d = load_digits()
    X = d.images / 16.0
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    te, tr = order[:n_test], order[n_test:]
    return X[tr], d.labels[tr], X[te], d.labels[te]


_TRAINERS: dict = {}


def _trainer(d_in: int):
    """A jitted full-batch Adam run of STEPS steps for inputs of width d_in (compiled once)."""
    if d_in in _TRAINERS:
        return _TRAINERS[d_in]
    tx = optax.adam(LR)

    def init(key):
        model = MLP(d_in, rngs=nnx.Rngs(params=key))
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        return nnx.split((model, opt))

    @jax.jit
    def fit(key, X, y):
        gdef, state = init(key)

        def loss_fn(model):
            logits = model(X)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        def body(_, state):
            model, opt = nnx.merge(gdef, state)
            grads = nnx.grad(loss_fn)(model)
            opt.update(model, grads)
            return nnx.state((model, opt))

        state = jax.lax.fori_loop(0, STEPS, body, state)
        model, _ = nnx.merge(gdef, state)
        return nnx.state(model)

    @jax.jit
    def accuracy(params, Xtr, ytr, Xte, yte):   # (test, train), one compilation for both
        model = nnx.merge(gdef_model, params)
        return (jnp.mean(jnp.argmax(model(Xte), -1) == yte),
                jnp.mean(jnp.argmax(model(Xtr), -1) == ytr))

    gdef_model, _ = nnx.split(MLP(d_in, rngs=nnx.Rngs(0)))
    _TRAINERS[d_in] = (fit, accuracy)
    return fit, accuracy


def train_and_score(Ztr, ytr, Zte, yte, seeds=(0, 1)):
    """Mean test/train accuracy over seeds, and the (post-compile) training seconds per run."""
    # Standardize with the training statistics (guarded: a constant feature gets scale 1).
    mu, sd = Ztr.mean(0), Ztr.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    Ztr, Zte = (Ztr - mu) / sd, (Zte - mu) / sd
    fit, accuracy = _trainer(Ztr.shape[1])
    Ztr, Zte = jnp.asarray(Ztr, jnp.float32), jnp.asarray(Zte, jnp.float32)
    # Compile once per input shape, outside the timing (the cache keeps the compiled run).
    shape_key = ("compiled",) + Ztr.shape
    if shape_key not in _TRAINERS:
        _TRAINERS[shape_key] = fit.lower(jax.random.key(0), Ztr, jnp.asarray(ytr)).compile()
    fit = _TRAINERS[shape_key]
    test, train, seconds = [], [], []
    for s in seeds:
        t0 = time.perf_counter()
        params = jax.block_until_ready(fit(jax.random.key(s), Ztr, jnp.asarray(ytr)))
        seconds.append(time.perf_counter() - t0)
        te, tr = accuracy(params, Ztr, ytr, Zte, yte)
        test.append(float(te))
        train.append(float(tr))
    return float(np.mean(test)), float(np.mean(train)), float(np.mean(seconds))


def mlp_params(d_in: int) -> int:
    return d_in * HIDDEN + HIDDEN + HIDDEN * 10 + 10


def full_factorizations(Xtr):
    """All 64 SVD and PCA components of the training images, computed once: the rank-k ones are
    their first k (a thin SVD is nested), so each k needs no new factorization or compilation."""
    return jaxfact.truncated_svd(Xtr, 64), jaxfact.pca(Xtr, 64)


def compress(method: str, k: int, Xtr, Xte, full=None):
    """(train codes, test codes, the factorization's parameters, the basis (k, 64))."""
    svd_full, pca_full = full if full is not None else full_factorizations(Xtr)
    if method == "svd":
        Vt = np.asarray(svd_full.Vt[:k])
        return Xtr @ Vt.T, Xte @ Vt.T, k * 64, Vt
    if method == "pca":
        comps = np.asarray(pca_full.components[:k])
        mean = np.asarray(pca_full.mean)
        return (Xtr - mean) @ comps.T, (Xte - mean) @ comps.T, k * 64 + 64, comps
    from jaxfact.nonnegative import nmf, nmf_transform
    res = nmf(Xtr, k, solver="hals", max_iter=200)
    Wte = nmf_transform(res, Xte, solver="hals", max_iter=200).W
    return np.asarray(res.W), np.asarray(Wte), k * 64, np.asarray(res.H)


def nmf_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("jaxfact.nonnegative") is not None


def chosen_ranks(Xtr):
    """k by energy_rank(90%) and by the optimal hard threshold, for SVD (uncentred) and PCA."""
    S = np.linalg.svd(Xtr, compute_uv=False)
    Sc = np.linalg.svd(Xtr - Xtr.mean(0), compute_uv=False)
    return {
        "svd": {"energy 90%": jaxfact.energy_rank(S, 0.9),
                "hard threshold": jaxfact.optimal_hard_threshold(S, Xtr.shape)},
        "pca": {"energy 90%": jaxfact.energy_rank(Sc, 0.9),
                "hard threshold": jaxfact.optimal_hard_threshold(Sc, Xtr.shape)},
    }


def run(ks=(2, 4, 8, 16, 32), nmf_ks=(4, 8, 16, 32), seeds=(0, 1), rank_rules: bool = True):
    """Runs the sweep; returns (rows, chosen ranks, bases for the figure, seconds).

    With ``rank_rules`` the k chosen by energy_rank and optimal_hard_threshold join the sweep.
    """
    Xtr, ytr, Xte, yte = split()
    chosen = chosen_ranks(Xtr)
    full = full_factorizations(Xtr)
    rows = []
    t0 = time.perf_counter()
    test, train, sec = train_and_score(Xtr, ytr, Xte, yte, seeds)
    rows.append(dict(method="raw", k=64, test=test, train=train, gap=train - test,
                     params=mlp_params(64), fact_params=0, seconds=sec, mark=""))
    bases = {}
    methods = ["svd", "pca"] + (["nmf"] if nmf_available() else [])
    for method in methods:
        marks = {}
        for name, k in chosen.get(method, {}).items():
            if rank_rules or k in ks:
                marks.setdefault(k, []).append(name)
        sweep = sorted(set(nmf_ks if method == "nmf" else ks) | set(marks))
        for k in sweep:
            Ztr, Zte, fparams, basis = compress(method, k, Xtr, Xte, full)
            if k == 16:
                bases[method] = basis
            test, train, sec = train_and_score(Ztr, ytr, Zte, yte, seeds)
            rows.append(dict(method=method.upper(), k=k, test=test, train=train,
                             gap=train - test, params=mlp_params(k), fact_params=fparams,
                             seconds=sec, mark=", ".join(marks.get(k, []))))
    elapsed = time.perf_counter() - t0
    return rows, chosen, bases, elapsed


def print_table(rows):
    header = ["input", "k", "test acc", "train acc", "gap", "MLP params", "factor params",
              "train s", "k chosen by"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['method']} | {r['k']} | {r['test']:.4f} | {r['train']:.4f} | "
              f"{r['gap']:+.4f} | {r['params']} | {r['fact_params']} | {r['seconds']:.3f} | "
              f"{r['mark']} |")


def figures(rows, bases, out: Path = OUT, prefix: str = "digits"):
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    raw = next(r for r in rows if r["method"] == "raw")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = {"SVD": "C0", "PCA": "C1", "NMF": "C2"}
    for method, color in colors.items():
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        k = [r["k"] for r in rs]
        ax.plot(k, [r["test"] for r in rs], "o-", color=color, label=f"{method} test")
        ax.plot(k, [r["train"] for r in rs], "--", color=color, alpha=0.6, label=f"{method} train")
        for r in rs:
            if r["mark"]:
                ax.annotate(r["mark"], (r["k"], r["test"]), textcoords="offset points",
                            xytext=(0, -14 if method == "SVD" else 9), ha="center",
                            fontsize=7, color=color)
    ax.axhline(raw["test"], color="k", lw=1, label="raw pixels test (k = 64)")
    ax.axhline(raw["train"], color="k", lw=1, ls="--", label="raw pixels train")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (numbers per image; raw = 64)")
    ax.set_ylabel("accuracy")
    ax.set_title("Digits MLP: accuracy against input size k")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    acc_path = out / f"{prefix}_accuracy_vs_k.png"
    fig.savefig(acc_path, dpi=120)
    plt.close(fig)

    parts_path = None
    if bases:
        names = [m for m in ("svd", "nmf") if m in bases]
        fig, axes = plt.subplots(len(names), 8, figsize=(8, 1.15 * len(names) + 0.4))
        axes = np.atleast_2d(axes)
        for row, m in enumerate(names):
            for j in range(8):
                a = axes[row, j]
                img = bases[m][j].reshape(8, 8)
                lim = np.abs(img).max() or 1.0
                if m == "svd":
                    a.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
                else:
                    a.imshow(img, cmap="Greys", vmin=0, vmax=lim)
                a.set_xticks([])
                a.set_yticks([])
            axes[row, 0].set_ylabel({"svd": "SVD", "nmf": "NMF"}[m], fontsize=9)
        fig.suptitle("First 8 of 16 SVD components (signed, holistic) and NMF parts (non-negative)",
                     fontsize=9)
        fig.tight_layout()
        parts_path = out / f"{prefix}_svd_vs_nmf_parts.png"
        fig.savefig(parts_path, dpi=120)
        plt.close(fig)
    return acc_path, parts_path


def main():
    t0 = time.perf_counter()
    rows, chosen, bases, _ = run()
    print("Digits (1797 images, 8x8): MLP 64 hidden units, full-batch Adam, 300 steps; "
          "mean of 2 seeds; 70/30 split")
    print_table(rows)
    print(f"\nrank rules on the training images: {chosen}")
    if not nmf_available():
        print("(NMF rows skipped: this install has no jaxfact.nonnegative)")
    paths = figures(rows, bases)
    print("wrote " + ", ".join(str(p) for p in paths if p))
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
