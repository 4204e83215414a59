"""jaxfact: input embedding factorization in JAX.

Pure, jit-compiled functions that turn embedding tables and data matrices into compact low-rank
factors (truncated and randomized SVD, PCA, NMF, matrix completion, weighted low-rank
approximation), and Flax modules that put those factors to work (:mod:`jaxfact.nn`).
"""

from jaxfact.linop import LinearOperator
from jaxfact.linop import ObservedMatrix
from jaxfact.nmf import NMFResult
from jaxfact.nmf import nmf
from jaxfact.nmf import nmf_init
from jaxfact.nmf import nmf_transform
from jaxfact.rank import energy_rank
from jaxfact.rank import hard_threshold
from jaxfact.rank import optimal_hard_threshold
from jaxfact.svd import PCAResult
from jaxfact.svd import SVDResult
from jaxfact.svd import pca
from jaxfact.svd import pca_transform
from jaxfact.svd import randomized_svd
from jaxfact.svd import reconstruct
from jaxfact.svd import singular_value_shrink
from jaxfact.svd import svd_flip
from jaxfact.svd import truncated_svd

__version__ = "0.1.0"

__all__ = [
    "LinearOperator",
    "NMFResult",
    "ObservedMatrix",
    "PCAResult",
    "SVDResult",
    "energy_rank",
    "hard_threshold",
    "nmf",
    "nmf_init",
    "nmf_transform",
    "optimal_hard_threshold",
    "pca",
    "pca_transform",
    "randomized_svd",
    "reconstruct",
    "singular_value_shrink",
    "svd_flip",
    "truncated_svd",
]
