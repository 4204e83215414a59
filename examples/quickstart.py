"""Compress a noisy low-rank matrix: randomized SVD, rank by the optimal hard threshold.

Run: python examples/quickstart.py
"""

import jax
import jax.numpy as jnp

import jaxfact as jf

# A 2000 x 500 "embedding table" of rank 12 plus white noise of standard deviation 0.5.
key_u, key_v, key_noise, key_svd = jax.random.split(jax.random.key(0), 4)
m, n, true_rank, sigma = 2000, 500, 12, 0.5
signal = jax.random.normal(key_u, (m, true_rank)) @ jax.random.normal(key_v, (true_rank, n))
X = signal + sigma * jax.random.normal(key_noise, (m, n))

# Choose k from the full spectrum (Gavish & Donoho 2014: unknown noise level, median rule)...
S_all = jnp.linalg.svd(X, compute_uv=False)
k = jf.optimal_hard_threshold(S_all, X.shape)
k_energy = jf.energy_rank(S_all, 0.9)

# ...then compress with a randomized SVD of that rank.
U, S, Vt = jf.randomized_svd(X, k, key=key_svd)
X_k = jf.reconstruct((U, S, Vt))

rel_err = float(jnp.linalg.norm(X - X_k) / jnp.linalg.norm(X))
denoise = float(jnp.linalg.norm(signal - X_k) / jnp.linalg.norm(signal))
noisy = float(jnp.linalg.norm(signal - X) / jnp.linalg.norm(signal))
stored = U.size + S.size + Vt.size
print(f"rank chosen by the optimal hard threshold: {k} (true rank {true_rank}); "
      f"by 90% energy: {k_energy}")
print(f"relative error to X:              {rel_err:.4f}")
print(f"relative error to the clean signal: {denoise:.4f} (X itself: {noisy:.4f})")
print(f"compression: {m * n} -> {stored} numbers ({m * n / stored:.1f}x smaller)")
