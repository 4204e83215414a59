"""jaxfact: input embedding factorization in JAX.

Pure, jit-compiled functions that turn embedding tables and data matrices into compact low-rank
factors (truncated and randomized SVD, PCA, NMF, matrix completion, weighted low-rank
approximation), and Flax modules that put those factors to work (:mod:`jaxfact.nn`).
"""

from jaxfact.completion import CompletionResult
from jaxfact.completion import predict
from jaxfact.completion import soft_impute
from jaxfact.completion import soft_impute_path
from jaxfact.completion import svt
from jaxfact.linop import LinearOperator
from jaxfact.linop import ObservedMatrix
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
from jaxfact.weighted import wlra

__version__ = "0.1.0"

__all__ = [
    "CompletionResult",
    "LinearOperator",
    "ObservedMatrix",
    "PCAResult",
    "SVDResult",
    "energy_rank",
    "hard_threshold",
    "optimal_hard_threshold",
    "pca",
    "pca_transform",
    "predict",
    "randomized_svd",
    "reconstruct",
    "singular_value_shrink",
    "soft_impute",
    "soft_impute_path",
    "svd_flip",
    "svt",
    "truncated_svd",
    "wlra",
]
