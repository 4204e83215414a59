"""jaxfact: input embedding factorization in JAX.

Pure, jit-compiled functions that turn embedding tables and data matrices into compact low-rank
factors (truncated and randomized SVD, PCA, NMF, matrix completion, weighted low-rank
approximation), and Flax modules that put those factors to work (:mod:`jaxfact.nn`).
"""

from jaxfact import datasets
from jaxfact import nn
from jaxfact._implicit_diff import ImplicitDiff
from jaxfact._solver import Status
from jaxfact.completion import CompletionResult
from jaxfact.completion import soft_impute
from jaxfact.completion import soft_impute_path
from jaxfact.completion import svt
from jaxfact.explicit_feedback import BiasedMFResult
from jaxfact.explicit_feedback import biased_mf
from jaxfact.explicit_feedback import predict_ratings  # deprecated alias of predict, not in __all__
from jaxfact.factored import predict
from jaxfact.factored import reconstruct
from jaxfact.implicit_feedback import ImplicitALSResult
from jaxfact.implicit_feedback import implicit_als
from jaxfact.implicit_feedback import implicit_loss
from jaxfact.interactions import Ratings
from jaxfact.interactions import synthetic_ratings
from jaxfact.interactions import train_test_split
from jaxfact.linop import LinearOperator
from jaxfact.linop import ObservedMatrix
from jaxfact.metrics import mae
from jaxfact.metrics import ndcg_at_k
from jaxfact.metrics import precision_at_k
from jaxfact.metrics import rmse
from jaxfact.nonnegative import NMFResult
from jaxfact.nonnegative import nmf
from jaxfact.nonnegative import nmf_init
from jaxfact.nonnegative import nmf_transform
from jaxfact.rank import energy_rank
from jaxfact.rank import hard_threshold
from jaxfact.rank import optimal_hard_threshold
from jaxfact.restarts import best_run
from jaxfact.svd import PCAResult
from jaxfact.svd import SVDResult
from jaxfact.svd import pca
from jaxfact.svd import pca_transform
from jaxfact.svd import randomized_svd
from jaxfact.svd import singular_value_shrink
from jaxfact.svd import svd_flip
from jaxfact.svd import truncated_svd
from jaxfact.text import Vocabulary
from jaxfact.text import build_vocab
from jaxfact.text import cooccurrence
from jaxfact.text import encode_corpus
from jaxfact.text import ppmi
from jaxfact.text import word_vectors
from jaxfact.weighted import wlra

__version__ = "0.2.0.dev0"

__all__ = [
    "BiasedMFResult",
    "CompletionResult",
    "ImplicitALSResult",
    "ImplicitDiff",
    "LinearOperator",
    "NMFResult",
    "ObservedMatrix",
    "PCAResult",
    "Ratings",
    "SVDResult",
    "Status",
    "Vocabulary",
    "best_run",
    "biased_mf",
    "build_vocab",
    "cooccurrence",
    "datasets",
    "encode_corpus",
    "energy_rank",
    "hard_threshold",
    "implicit_als",
    "implicit_loss",
    "mae",
    "ndcg_at_k",
    "nmf",
    "nmf_init",
    "nmf_transform",
    "nn",
    "optimal_hard_threshold",
    "pca",
    "pca_transform",
    "ppmi",
    "precision_at_k",
    "predict",
    "randomized_svd",
    "reconstruct",
    "rmse",
    "singular_value_shrink",
    "soft_impute",
    "soft_impute_path",
    "svd_flip",
    "svt",
    "synthetic_ratings",
    "train_test_split",
    "truncated_svd",
    "wlra",
    "word_vectors",
]
