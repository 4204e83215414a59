"""Flax embedding modules built on low-rank factors.

* :class:`FactorizedEmbed`: ALBERT's factorized embedding, table ``A @ B (+ b)``, built from scratch
  or from a trained table (``from_table``, by SVD, PCA or NMF) or from factors (``from_factors``).
* :class:`AdaptiveEmbed`: Baevski & Auli's adaptive input, frequency bands of decreasing width.

These are Flax NNX modules; :mod:`jaxfact.nn.linen` has Linen twins with the same names,
arguments, parameters and outputs. Both call the same pure functions of (parameters, ids).
"""

from jaxfact.nn._nnx import AdaptiveEmbed
from jaxfact.nn._nnx import FactorizedEmbed

__all__ = [
    "AdaptiveEmbed",
    "FactorizedEmbed",
]
