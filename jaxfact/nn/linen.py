"""Flax Linen twins of :mod:`jaxfact.nn`'s NNX modules.

Same names, the same arguments (as dataclass fields), the same parameter names and shapes, and the
same outputs for the same parameters: both call :mod:`jaxfact.nn._math`. ``attend`` is a method::

  >>> emb = FactorizedEmbed(1000, 64, 8)
  >>> variables = emb.init(jax.random.key(0), jnp.zeros((2,), jnp.int32))
  >>> logits = emb.apply(variables, jnp.ones((2, 64)), method="attend")
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen.linear import default_embed_init

from jaxfact.nn import _build
from jaxfact.nn import _math

__all__ = ["FactorizedEmbed", "AdaptiveEmbed"]

default_projection_init = nn.initializers.variance_scaling(1.0, "fan_out", "normal")
Dtype = Any


class FactorizedEmbed(nn.Module):
    """Linen twin of :class:`jaxfact.nn.FactorizedEmbed`: table ``A @ B (+ b)``, never formed.

    Parameters ``embedding`` (V, r), ``projection`` (r, F) and, with ``use_bias``, ``bias`` (F,):
    ``V r + r F (+ F)`` in all. ``from_table`` returns ``(module, variables)``.
    """

    num_embeddings: int
    features: int
    rank: int
    use_bias: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Callable = default_embed_init
    projection_init: Callable = default_projection_init
    bias_init: Callable = nn.initializers.zeros_init()

    def setup(self):
        V, F, r = _math.check_factorized_args("FactorizedEmbed", self.num_embeddings,
                                              self.features, self.rank)
        self.embedding = self.param("embedding", self.embedding_init, (V, r), self.param_dtype)
        self.projection = self.param("projection", self.projection_init, (r, F), self.param_dtype)
        self.bias = self.param("bias", self.bias_init, (F,), self.param_dtype) \
            if self.use_bias else None

    def __call__(self, ids: jax.Array) -> jax.Array:
        ids = _math.check_ids("FactorizedEmbed", ids, self.num_embeddings)
        return _math.factorized_lookup(ids, self.embedding, self.projection, self.bias,
                                       dtype=self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        x = _math.check_query("FactorizedEmbed.attend", x, self.features)
        return _math.factorized_attend(x, self.embedding, self.projection, self.bias,
                                       dtype=self.dtype)

    @classmethod
    def from_factors(cls, A: Any, B: Any, bias: Any = None, *, dtype: Dtype | None = None,
                     param_dtype: Dtype | None = None) -> tuple["FactorizedEmbed", dict]:
        """``(module, variables)`` whose table is ``A @ B (+ bias)``."""
        A, B, bias = _build.check_factors("FactorizedEmbed.from_factors", A, B, bias)
        param_dtype = A.dtype if param_dtype is None else param_dtype
        module = cls(A.shape[0], B.shape[1], A.shape[1], use_bias=bias is not None, dtype=dtype,
                     param_dtype=param_dtype)
        params = {"embedding": jnp.asarray(A, param_dtype),
                  "projection": jnp.asarray(B, param_dtype)}
        if bias is not None:
            params["bias"] = jnp.asarray(bias, param_dtype)
        return module, {"params": params}

    @classmethod
    def from_table(cls, table: Any, rank: int, *, method: str = "svd", key: Any = None,
                   nmf_options: dict | None = None, dtype: Dtype | None = None,
                   param_dtype: Dtype | None = None) -> tuple["FactorizedEmbed", dict]:
        """``(module, variables)`` compressing ``table``; see
        :meth:`jaxfact.nn.FactorizedEmbed.from_table`."""
        A, B, bias = _build.factors_from_table("FactorizedEmbed.from_table", table, rank, method,
                                               key, nmf_options)
        return cls.from_factors(A, B, bias, dtype=dtype, param_dtype=param_dtype)


class AdaptiveEmbed(nn.Module):
    """Linen twin of :class:`jaxfact.nn.AdaptiveEmbed` (Baevski & Auli 2019).

    Parameters ``embedding_i`` (size_i, d_i) and ``projection_i`` (d_i, F) (none for the head band
    unless ``head_projection``): ``sum_i size_i d_i + sum_{i>0} d_i F``.
    """

    cutoffs: Sequence[int]
    features: int
    factor: float = 4
    num_embeddings: int | None = None
    head_projection: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Callable = default_embed_init
    projection_init: Callable = default_projection_init

    def setup(self):
        cutoffs, F, factor = _math.check_adaptive_args("AdaptiveEmbed", self.cutoffs,
                                                       self.features, self.factor,
                                                       self.num_embeddings)
        self._cut = cutoffs
        dims = _math.band_dims(cutoffs, F, factor)
        E, P = [], []
        lo = 0
        for i, (hi, d) in enumerate(zip(cutoffs, dims)):
            E.append(self.param(f"embedding_{i}", self.embedding_init, (hi - lo, d),
                                self.param_dtype))
            if _math.band_has_projection(i, d, F, self.head_projection):
                P.append(self.param(f"projection_{i}", self.projection_init, (d, F),
                                    self.param_dtype))
            else:
                P.append(None)
            lo = hi
        self._E = E
        self._P = P

    def __call__(self, ids: jax.Array) -> jax.Array:
        ids = _math.check_ids("AdaptiveEmbed", ids, self._cut[-1])
        return _math.adaptive_lookup(ids, self._E, self._P, self._cut, dtype=self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        x = _math.check_query("AdaptiveEmbed.attend", x, self.features)
        return _math.adaptive_attend(x, self._E, self._P, dtype=self.dtype)
