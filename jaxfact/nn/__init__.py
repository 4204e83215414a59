"""Flax embedding modules built on low-rank factors.

* :class:`FactorizedEmbed`: ALBERT's factorized embedding, table ``A @ B (+ b)``, built from scratch
  or from a trained table (``from_table``, by SVD, PCA or NMF) or from factors (``from_factors``).
* :class:`AdaptiveEmbed`: Baevski & Auli's adaptive input, frequency bands of decreasing width
  (``from_table`` converts a trained table band by band).
* :class:`FactorizedLinear`: ``y = (x @ A) @ B (+ b)``, a low-rank ``nnx.Linear`` (``from_kernel``).
* :func:`compress`: replaces the ``nnx.Embed`` (and ``nnx.Linear``) layers of a trained model by
  factorized ones, keeping weight tying, and reports what each layer kept and lost.
* :func:`rank_sweep`: evaluates many ranks from one factorization, without recompiling.

These are Flax NNX modules; :mod:`jaxfact.nn.linen` has Linen twins with the same names,
arguments, parameters and outputs. Both call the same pure functions of (parameters, ids).

Sharding: ``vocab_axis="vocab"`` annotates the (V, r) codes (and AdaptiveEmbed's band tables) with
flax's partitioning metadata, rows over that mesh axis; under ``jax.set_mesh`` they are stored
split (``nnx.get_partition_spec`` / ``nn.get_partition_spec`` read the annotation). Lookups gather
rows where they live (a psum of the looked-up rows), ``attend`` returns logits split over the
vocabulary, and ``from_table`` on a row-split table factors it where it lives and returns
row-split codes. Without ``vocab_axis`` and without a sharded table nothing changes.
"""

from jaxfact.nn._compress import CompressReport
from jaxfact.nn._compress import LayerReport
from jaxfact.nn._compress import compress
from jaxfact.nn._sweep import RankSweep
from jaxfact.nn._sweep import rank_sweep
from jaxfact.nn._nnx import AdaptiveEmbed
from jaxfact.nn._nnx import FactorizedEmbed
from jaxfact.nn._nnx import FactorizedLinear

__all__ = [
    "AdaptiveEmbed",
    "CompressReport",
    "FactorizedEmbed",
    "FactorizedLinear",
    "LayerReport",
    "RankSweep",
    "compress",
    "rank_sweep",
]
