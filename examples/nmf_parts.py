"""Non-negative parts of handwritten digits: NMF of scikit-learn's 8x8 digits with each solver.

Each image (64 pixels, 0..16) is approximated by a non-negative mix of k = 16 non-negative "parts"
(rows of H): strokes and blobs rather than the signed eigen-images of PCA (Lee & Seung 1999).
Prints the relative error ||X - WH|| / ||X|| and the time of each solver, how sparse the parts
are, and the error of codes for unseen images from ``nmf_transform``. Writes nothing.

    python examples/nmf_parts.py
"""

import time

import jax
import numpy as np

import jaxfact
from jaxfact.datasets import load_digits

K = 16


def main():
    X = load_digits().images                       # (1797, 64) float32
    train, test = X[:1500], X[1500:]
    norm = np.linalg.norm(train)
    print(f"digits: {train.shape[0]} training images, {test.shape[0]} held out, rank {K}")
    for solver in ("hals", "pg", "mu"):
        t0 = time.perf_counter()
        res = jax.block_until_ready(jaxfact.nmf(train, K, solver=solver, max_iter=300, tol=1e-5))
        seconds = time.perf_counter() - t0
        W, H = np.asarray(res.W), np.asarray(res.H)
        err = np.linalg.norm(train - W @ H) / norm
        zeros = np.mean(H < 1e-6 * H.max())
        W_new = np.asarray(jaxfact.nmf_transform(res, test, solver=solver).W)
        test_err = np.linalg.norm(test - W_new @ H) / np.linalg.norm(test)
        print(f"{solver:>5}: relative error {err:.4f} ({int(res.n_iter)} iterations, "
              f"converged={bool(res.converged)}, {seconds:.2f} s incl. compile), "
              f"{zeros:.0%} of part pixels are 0, held-out error {test_err:.4f}")
    # One part as an 8x8 picture, in text.
    part = H[int(np.argmax((H > 0).sum(1) < 40))].reshape(8, 8)
    print("a part (8x8, '#' = strong, '+' = weak):")
    for row in part / part.max():
        print("  " + "".join("#" if v > 0.5 else "+" if v > 0.1 else "." for v in row))


if __name__ == "__main__":
    main()
