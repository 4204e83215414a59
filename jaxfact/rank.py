"""Choosing the rank k of a low-rank approximation from singular values.

Two rules:

* :func:`energy_rank`: the smallest k that keeps a given share of the energy ``sum(S**2)``
  (scikit-learn's ``PCA(n_components=0.95)``);
* :func:`optimal_hard_threshold`: Gavish & Donoho (2014)'s optimal hard threshold for a matrix of
  low rank plus white noise, with known or unknown noise level, for any aspect ratio.

Both return a Python ``int`` for concrete input (a rank fixes array shapes, so it must be known on
the host); under ``jit`` they return a traced int32 scalar.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfact import _checks

__all__ = ["energy_rank", "optimal_hard_threshold", "hard_threshold"]


def energy_rank(S: Any, energy: float, *, checks: bool = False) -> int:
    """Smallest k with ``sum(S[:k]**2) >= energy * sum(S**2)``.

    ``S`` holds singular values in descending order (all of them, for the share to mean the share
    of the whole matrix); an increasing pair raises ``ValueError`` (when S is concrete). The rule
    squares its input, so pass singular values, not variances: for PCA pass
    ``singular_values`` (of the centred data), or ``jnp.sqrt(explained_variance)``, which is
    proportional to them. Passing ``explained_variance`` itself would square the variances and
    keep too few components.

    Args:
      S: (r,) non-negative singular values, non-increasing.
      energy: share to keep, in (0, 1].
      checks: under an outer ``jit``, also check that S is finite and non-negative, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      k in [1, r]. An all-zero S gives 1.

    Example::

      >>> energy_rank(jnp.array([3.0, 2.0, 1.0]), 0.9)   # 9 + 4 = 13 >= 0.9 * 14
      2
    """
    fn = "energy_rank"
    S = _checks.as_float_array(fn, "S", S, ndim=1)
    if S.shape[0] == 0:
        raise ValueError(f"{fn}: `S` must hold at least one singular value; got shape {S.shape}")
    energy = _checks.check_real(fn, "energy", energy, low=0.0, high=1.0, low_open=True)
    _checks.check_finite(fn, "S", S, checks)
    _checks.check_nonnegative(fn, "S", S, checks)
    if _checks.is_concrete(S) and S.shape[0] > 1:
        with _checks.eager():
            rises = jnp.nonzero(S[1:] > S[:-1], size=1, fill_value=-1)[0]
            i = int(rises[0])
            if i >= 0:
                raise ValueError(f"{fn}: `S` must be non-increasing (singular values in "
                                 f"descending order); got S[{i + 1}] = {float(S[i + 1])} > "
                                 f"S[{i}] = {float(S[i])}. Sort it: `jnp.sort(S)[::-1]`")
    k = _energy_rank(S, jnp.asarray(energy, S.dtype))
    return int(k) if _checks.is_concrete(k) else k


def hard_threshold(S: Any, shape: tuple[int, int], sigma: Any = None, *,
                   checks: bool = False) -> jax.Array:
    """Gavish & Donoho's optimal hard threshold tau for an (m, n) matrix (see
    :func:`optimal_hard_threshold`, whose arguments it takes)."""
    fn = "hard_threshold"
    S, beta, big = _threshold_args(fn, S, shape, sigma, checks)
    return _threshold(S, beta, big, sigma)


def optimal_hard_threshold(S: Any, shape: tuple[int, int], sigma: Any = None, *,
                           checks: bool = False) -> int:
    """Rank chosen by the optimal hard threshold of Gavish & Donoho (2014).

    For ``Y = X + sigma Z`` (m x n, X of low rank, Z white noise of unit variance) keeping the
    singular values above ``tau`` is optimal among hard thresholds in asymptotic mean squared error
    (at most 3 n r sigma^2 for square matrices, against 5 n r sigma^2 for the truncated SVD at the
    true rank). With ``beta = min(m, n) / max(m, n)``:

    * known noise: ``tau = lambda*(beta) sqrt(max(m, n)) sigma`` with
      ``lambda*(beta) = sqrt(2 (beta + 1) + 8 beta / ((beta + 1) + sqrt(beta**2 + 14 beta + 1)))``
      (their Eq. 11; ``4 / sqrt(3)`` for square matrices);
    * unknown noise (``sigma=None``): ``tau = omega(beta) * median(S)`` with
      ``omega(beta) = lambda*(beta) / sqrt(mu_beta)``, ``mu_beta`` the median of the
      Marchenko-Pastur distribution, computed here numerically (not by their cubic fit, Eq. 5);
      ``omega(1) = 2.858``. This rule needs all ``min(m, n)`` singular values in S.

    Args:
      S: singular values of Y, descending.
      shape: (m, n), the shape of Y.
      sigma: the noise standard deviation per entry, or None to estimate it from the median.
      checks: under an outer ``jit``, also check that S is finite and non-negative, with
        ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).

    Returns:
      The number of singular values strictly above tau (0 when none is).

    Example::

      >>> signal = jnp.outer(jnp.arange(1.0, 41.0), jnp.ones(30)) / 5   # rank 1, norm ~ 64
      >>> Y = signal + jax.random.normal(jax.random.key(0), (40, 30))
      >>> optimal_hard_threshold(jnp.linalg.svd(Y, compute_uv=False), Y.shape)
      1
      >>> optimal_hard_threshold(jnp.linalg.svd(Y, compute_uv=False), Y.shape, sigma=1.0)
      1

    References:
      M. Gavish, D. L. Donoho. The optimal hard threshold for singular values is 4/sqrt(3).
      IEEE Trans. Inf. Theory 60(8), 2014.
    """
    fn = "optimal_hard_threshold"
    S, beta, big = _threshold_args(fn, S, shape, sigma, checks)
    tau = _threshold(S, beta, big, sigma)
    k = jnp.sum(S > tau).astype(jnp.int32)
    return int(k) if _checks.is_concrete(k) else k


# ------------------------------------------------------------------------------------------------


@jax.jit
def _energy_rank(S, energy):
    cum = jnp.cumsum(S**2)
    total = cum[-1]
    # Relative slack of a few ulps so that energy=1 is met by the full sum despite rounding.
    target = energy * total * (1 - 4 * jnp.finfo(S.dtype).eps)
    k = jnp.sum(cum < target) + 1
    return jnp.where(total > 0, jnp.minimum(k, S.shape[0]), 1).astype(jnp.int32)


def _threshold_args(fn, S, shape, sigma, checks):
    S = _checks.as_float_array(fn, "S", S, ndim=1)
    m, n = _checks.check_shape2(fn, shape)
    _checks.check_finite(fn, "S", S, checks)
    _checks.check_nonnegative(fn, "S", S, checks)
    small, big = min(m, n), max(m, n)
    if S.shape[0] == 0 or S.shape[0] > small:
        raise ValueError(f"{fn}: `S` must hold between 1 and min(shape) = {small} singular values; "
                         f"got {S.shape[0]}")
    if sigma is None:
        if S.shape[0] != small:
            raise ValueError(f"{fn}: with `sigma=None` the noise level is estimated from the median "
                             f"of all singular values, so `S` must hold all min(shape) = {small} of "
                             f"them; got {S.shape[0]}. Pass the full spectrum or a known `sigma`.")
    else:
        _checks.check_real(fn, "sigma", sigma, low=0.0)
    return S, small / big, big


def lambda_star(beta: float) -> float:
    """Gavish & Donoho's Eq. (11): the known-noise threshold coefficient."""
    return float(np.sqrt(2 * (beta + 1) + 8 * beta / ((beta + 1) + np.sqrt(beta**2 + 14 * beta + 1))))


@lru_cache(maxsize=256)
def marchenko_pastur_median(beta: float) -> float:
    """Median of the Marchenko-Pastur law with aspect ratio beta in (0, 1] (variance 1)."""
    lo, hi = (1 - np.sqrt(beta)) ** 2, (1 + np.sqrt(beta)) ** 2
    # x = lo + (hi - lo)(1 - cos t)/2 removes the square-root endpoint singularities of the density
    # sqrt((hi - x)(x - lo)) / (2 pi beta x), leaving a smooth integrand on [0, pi]; the midpoint
    # rule never evaluates the 0/0 at t = 0 when lo = 0 (beta = 1).
    edges = np.linspace(0.0, np.pi, 40001)
    t = (edges[1:] + edges[:-1]) / 2
    half = (hi - lo) / 2
    x_mid = lo + half * (1 - np.cos(t))
    dens = (half * np.sin(t)) ** 2 / (2 * np.pi * beta * x_mid)
    cdf = np.concatenate([[0.0], np.cumsum(dens * np.diff(edges))])
    x = lo + half * (1 - np.cos(edges))
    cdf /= cdf[-1]  # no atom at 0 for beta <= 1; normalize the small quadrature error away
    return float(np.interp(0.5, cdf, x))


def omega(beta: float) -> float:
    """Gavish & Donoho's unknown-noise coefficient lambda*(beta) / sqrt(mu_beta)."""
    return lambda_star(beta) / np.sqrt(marchenko_pastur_median(beta))


def _threshold(S, beta, big, sigma):
    beta = round(float(beta), 12)
    if sigma is None:
        return omega(beta) * jnp.median(S)
    return lambda_star(beta) * np.sqrt(big) * jnp.asarray(sigma, S.dtype)
