"""Flax NNX embedding modules: thin shells that hold parameters and call :mod:`jaxfact.nn._math`."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import default_embed_init
from flax.nnx.nn.linear import default_kernel_init

from jaxfact.nn import _build
from jaxfact.nn import _math

__all__ = ["FactorizedEmbed", "FactorizedLinear", "AdaptiveEmbed", "default_projection_init"]

# B (rank, features) ~ N(0, 1/features): with A's rows of unit expected norm (flax's default
# embedding init), the entries of A @ B have variance 1/features, the scale of an nnx.Embed table.
default_projection_init = nnx.initializers.variance_scaling(1.0, "fan_out", "normal")

Dtype = Any


class FactorizedEmbed(nnx.Module):
    """Factorized embedding (ALBERT): the (V, F) table is ``A @ B (+ b)``, never formed.

    ``A`` (``embedding``, V x r) holds a rank-r code per token and ``B`` (``projection``, r x F)
    maps codes to the model dimension, as ALBERT's factorized embedding parameterization
    (Lan et al. 2020, Section 3.1: O(V x H) parameters become O(V x E + E x H)).

    * ``__call__(ids)``: ``A[ids] @ B (+ b)``, (..., F); O(|ids| r F) time.
    * ``attend(x)``: tied logits ``x @ (A B + 1 b^T)^T = (x @ B^T) @ A^T + x . b``, (..., V);
      O(|x| r (F + V)) time, never the V x F table.

    Parameters: ``V r + r F`` (``+ F`` with ``use_bias``). ALBERT-base's V = 30000, F = 768,
    r = 128 gives 3 938 304 against 23 040 000 for a full table.

    Ids outside [0, V) raise ``ValueError`` when concrete; under ``jit`` they cannot be checked and
    give NaN rows (like ``flax.nnx.Embed``), negative ids included.

    Example::

      >>> emb = FactorizedEmbed(1000, 64, 8, rngs=nnx.Rngs(0))
      >>> emb(jnp.array([[1, 2, 3]])).shape, emb.attend(jnp.ones((2, 64))).shape
      ((1, 3, 64), (2, 1000))

    Args:
      num_embeddings: vocabulary size V.
      features: output dimension F.
      rank: inner dimension r (ALBERT's E), 1 <= r <= min(V, F).
      use_bias: add a learned row ``b`` (F,) to every embedding (set by ``from_table(method="pca")``
        to the column mean).
      dtype: computation dtype (default: the parameters' dtype, promoted with the query's in
        ``attend``); ``jnp.bfloat16`` works.
      param_dtype: storage dtype of the parameters.
      embedding_init: initializer of ``A`` (default: flax's embedding init, unit-norm rows).
      projection_init: initializer of ``B`` (default: N(0, 1/F)).
      bias_init: initializer of ``b`` (default: zeros).
      rngs: ``nnx.Rngs`` for the initializers.

    References:
      Z. Lan et al. ALBERT: A lite BERT for self-supervised learning of language representations.
      ICLR 2020, Section 3.1 ("factorized embedding parameterization").
    """

    def __init__(self, num_embeddings: int, features: int, rank: int, *, use_bias: bool = False,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 embedding_init=default_embed_init, projection_init=default_projection_init,
                 bias_init=nnx.initializers.zeros_init(), rngs: nnx.Rngs):
        fn = "FactorizedEmbed"
        num_embeddings, features, rank = _math.check_factorized_args(fn, num_embeddings, features,
                                                                     rank)
        self.num_embeddings = num_embeddings
        self.features = features
        self.rank = rank
        self.use_bias = bool(use_bias)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.embedding = nnx.Param(embedding_init(rngs.params(), (num_embeddings, rank),
                                                  param_dtype))
        self.projection = nnx.Param(projection_init(rngs.params(), (rank, features), param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (features,), param_dtype)) \
            if self.use_bias else None

    def _bias(self):
        return None if self.bias is None else self.bias[...]

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Embeds integer ids of any shape: (...) -> (..., features)."""
        ids = _math.check_ids("FactorizedEmbed", ids, self.num_embeddings)
        return _math.factorized_lookup(ids, self.embedding[...], self.projection[...],
                                       self._bias(), dtype=self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output logits over the vocabulary: (..., features) -> (..., num_embeddings)."""
        x = _math.check_query("FactorizedEmbed.attend", x, self.features)
        return _math.factorized_attend(x, self.embedding[...], self.projection[...],
                                       self._bias(), dtype=self.dtype)

    def table(self) -> jax.Array:
        """The dense (V, F) table ``A @ B (+ b)``; O(V F) memory, for inspection and small V."""
        return _math.factorized_table(self.embedding[...], self.projection[...], self._bias())

    @property
    def num_params(self) -> int:
        """``V r + r F (+ F)``."""
        return _math.factorized_param_count(self.num_embeddings, self.features, self.rank,
                                            self.use_bias)

    @classmethod
    def from_factors(cls, A: Any, B: Any, bias: Any = None, *, dtype: Dtype | None = None,
                     param_dtype: Dtype | None = None) -> "FactorizedEmbed":
        """A module whose table is ``A @ B (+ bias)``, for factors the user already has.

        Args:
          A: (V, r) codes. B: (r, F) projection. bias: optional (F,) row added to every embedding.
          dtype: computation dtype. param_dtype: storage dtype (default: ``A``'s dtype).

        Example::

          >>> emb = FactorizedEmbed.from_factors(U * S, Vt)
        """
        fn = "FactorizedEmbed.from_factors"
        A, B, bias = _build.check_factors(fn, A, B, bias)
        param_dtype = A.dtype if param_dtype is None else param_dtype
        V, r = A.shape
        F = B.shape[1]
        module = nnx.eval_shape(lambda: cls(V, F, r, use_bias=bias is not None, dtype=dtype,
                                             param_dtype=param_dtype, rngs=nnx.Rngs(0)))
        module.embedding.set_value(jnp.asarray(A, param_dtype))
        module.projection.set_value(jnp.asarray(B, param_dtype))
        if bias is not None:
            module.bias.set_value(jnp.asarray(bias, param_dtype))
        return module

    @classmethod
    def from_table(cls, table: Any, rank: int, *, method: str = "svd", key: Any = None,
                   nmf_options: dict | None = None, dtype: Dtype | None = None,
                   param_dtype: Dtype | None = None) -> "FactorizedEmbed":
        """Compresses a trained (V, F) table into a rank-``rank`` :class:`FactorizedEmbed`.

        * ``method="svd"``: the best rank-k approximation ``U_k S_k V_k^T`` (Eckart & Young),
          exact by :func:`jaxfact.truncated_svd` (``key=None``) or by
          :func:`jaxfact.randomized_svd` (given ``key``); ``A = U S^(1/2)``, ``B = S^(1/2) V^T``.
        * ``method="pca"``: the best rank-k approximation of the centred table plus its column mean
          ``mu`` as the bias, by :func:`jaxfact.pca`: never worse than "svd" at the same rank, for
          ``F`` more parameters (the seed's PCA-versus-SVD distinction).
        * ``method="nmf"``: non-negative parts ``W H`` by :func:`jaxfact.nmf` (``table`` must be
          non-negative); options such as ``solver`` or ``max_iter`` go in ``nmf_options``.

        Cost: O(V F min(V, F)) for the exact SVD/PCA, O(V F k) for the randomized one.

        Args:
          table: (V, F) real array, finite (non-negative for "nmf").
          rank: k, 1 <= k <= min(V, F); or a float in (0, 1), the smallest k keeping that share
            of ``sum(S**2)`` (of the centred table for "pca", as scikit-learn's
            ``PCA(n_components=0.9)``); or ``"gavish-donoho"``, the optimal hard threshold for
            an unknown noise level (:func:`jaxfact.optimal_hard_threshold`). Both rules read
            all singular values of the table (one extra O(V F min(V, F)) pass).
          method: "svd", "pca" or "nmf".
          key: ``jax.random`` key: randomized SVD/PCA, or the NMF initialization's randomness.
          nmf_options: extra keyword arguments for :func:`jaxfact.nmf` (``solver``,
            ``max_iter``, ...); an unknown key raises ``TypeError`` and ``rank``/``key``/``X``
            (set by this method) raise ``ValueError``, each naming the key.
          dtype, param_dtype: as in the constructor (param_dtype defaults to the table's dtype).

        Example::

          >>> table = jax.random.normal(jax.random.key(0), (1000, 64))
          >>> emb = FactorizedEmbed.from_table(table, 8, method="pca")
          >>> emb.num_params   # 1000 * 8 + 8 * 64 + 64
          8576
        """
        A, B, bias = _build.factors_from_table("FactorizedEmbed.from_table", table, rank, method,
                                               key, nmf_options)
        return cls.from_factors(A, B, bias, dtype=dtype, param_dtype=param_dtype)


class FactorizedLinear(nnx.Module):
    """Low-rank linear layer ``y = (x @ A) @ B (+ b)``: ``nnx.Linear`` with its kernel factored.

    ``A`` (``kernel_a``, in x r) and ``B`` (``kernel_b``, r x out) replace the (in, out) kernel;
    the product is never formed. Parameters: ``in r + r out (+ out)`` against ``in out (+ out)``,
    and O(r (in + out)) time per input row. ``from_kernel`` builds the layer from a trained
    kernel: the best rank-r approximation by truncated SVD (Eckart & Young), or NMF factors.

    Example::

      >>> layer = FactorizedLinear(512, 256, 32, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((4, 512))).shape, layer.num_params   # 512*32 + 32*256 + 256
      ((4, 256), 24832)

    Args:
      in_features, out_features: as in ``nnx.Linear``.
      rank: inner dimension r, 1 <= r <= min(in_features, out_features).
      use_bias: add a learned bias ``b`` (out,) (default True, as ``nnx.Linear``).
      dtype: computation dtype (default: promoted from the input and parameters).
      param_dtype: storage dtype of the parameters.
      precision: ``jax.lax.Precision`` of both products.
      kernel_a_init, kernel_b_init: initializers of ``A`` and ``B`` (default: LeCun normal for
        both, so that ``x @ A`` and ``(x @ A) @ B`` keep unit variance, as ``nnx.Linear``'s output).
      bias_init: initializer of ``b`` (default: zeros).
      rngs: ``nnx.Rngs`` for the initializers.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, *, use_bias: bool = True,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 precision: Any = None, kernel_a_init=default_kernel_init,
                 kernel_b_init=default_kernel_init, bias_init=nnx.initializers.zeros_init(),
                 rngs: nnx.Rngs):
        in_features, out_features, rank = _math.check_linear_args(
            "FactorizedLinear", in_features, out_features, rank)
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.use_bias = bool(use_bias)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.kernel_a = nnx.Param(kernel_a_init(rngs.params(), (in_features, rank), param_dtype))
        self.kernel_b = nnx.Param(kernel_b_init(rngs.params(), (rank, out_features), param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) \
            if self.use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """(..., in_features) -> (..., out_features)."""
        x = _math.check_query("FactorizedLinear", x, self.in_features)
        bias = None if self.bias is None else self.bias[...]
        return _math.factorized_dense(x, self.kernel_a[...], self.kernel_b[...], bias,
                                      dtype=self.dtype, precision=self.precision)

    def kernel(self) -> jax.Array:
        """The dense (in, out) kernel ``A @ B``, for inspection."""
        return self.kernel_a[...] @ self.kernel_b[...]

    @property
    def num_params(self) -> int:
        """``in r + r out (+ out)``."""
        return _math.linear_param_count(self.in_features, self.out_features, self.rank,
                                        self.use_bias)

    @classmethod
    def from_factors(cls, A: Any, B: Any, bias: Any = None, *, dtype: Dtype | None = None,
                     param_dtype: Dtype | None = None, precision: Any = None,
                     ) -> "FactorizedLinear":
        """A layer computing ``(x @ A) @ B (+ bias)`` for factors A (in, r), B (r, out)."""
        A, B, bias = _build.check_factors("FactorizedLinear.from_factors", A, B, bias,
                                          names=("in_features", "out_features"))
        param_dtype = A.dtype if param_dtype is None else param_dtype
        (n_in, r), n_out = A.shape, B.shape[1]
        module = nnx.eval_shape(lambda: cls(n_in, n_out, r, use_bias=bias is not None,
                                            dtype=dtype, param_dtype=param_dtype,
                                            precision=precision, rngs=nnx.Rngs(0)))
        module.kernel_a.set_value(jnp.asarray(A, param_dtype))
        module.kernel_b.set_value(jnp.asarray(B, param_dtype))
        if bias is not None:
            module.bias.set_value(jnp.asarray(bias, param_dtype))
        return module

    @classmethod
    def from_kernel(cls, kernel: Any, rank: Any, *, bias: Any = None, method: str = "svd",
                    key: Any = None, nmf_options: dict | None = None, dtype: Dtype | None = None,
                    param_dtype: Dtype | None = None, precision: Any = None,
                    ) -> "FactorizedLinear":
        """Compresses a trained (in, out) kernel (and its bias, kept as is) to rank ``rank``.

        * ``method="svd"``: ``A = U S^(1/2)``, ``B = S^(1/2) V^T`` of the truncated SVD, the best
          rank-k kernel in Frobenius and spectral norm, so ``||x K - x A B|| <= s_{k+1} ||x||``;
          exact (``key=None``) or randomized (given ``key``).
        * ``method="nmf"``: non-negative factors of a non-negative kernel (``nmf_options`` as in
          :meth:`FactorizedEmbed.from_table`).

        PCA is not offered: the column mean of a kernel would be multiplied by ``sum(x)``, which
        no bias can represent.

        Args:
          kernel: (in, out) real array (``nnx.Linear.kernel``, ``nn.Dense``'s ``kernel``).
          rank: k in [1, min(in, out)], a float in (0, 1) (the smallest k keeping that share of
            ``sum(S**2)``) or ``"gavish-donoho"`` (optimal hard threshold, unknown noise).
          bias: optional (out,) bias of the original layer.
          method, key, nmf_options: see above.
          dtype, param_dtype, precision: as in the constructor (param_dtype defaults to the
            kernel's dtype).

        Example::

          >>> dense = nnx.Linear(256, 128, rngs=nnx.Rngs(0))
          >>> low = FactorizedLinear.from_kernel(dense.kernel[...], 16, bias=dense.bias[...])
        """
        fn = "FactorizedLinear.from_kernel"
        f = _build.factorize(fn, kernel, rank, method, key, nmf_options, name="kernel",
                             methods=_build.KERNEL_METHODS)
        if param_dtype is None:
            param_dtype = jnp.asarray(kernel).dtype
        return cls.from_factors(f.A, f.B, bias, dtype=dtype, param_dtype=param_dtype,
                                precision=precision)


class AdaptiveEmbed(nnx.Module):
    """Adaptive input embedding (Baevski & Auli 2019): frequent ids get wide vectors, rare narrow.

    Ids are sorted by frequency (id 0 the most frequent). Band i covers ids
    ``[cutoffs[i-1], cutoffs[i])`` (``cutoffs[-1]`` is the vocabulary size V) with its own table
    ``E_i`` of dimension ``d_i = features // factor**i`` and a bias-free projection ``P_i``
    (d_i, features). The head band (d_0 = features) has no projection unless
    ``head_projection=True``.

    * ``__call__(ids)``: the band's row projected to ``features``; every band is computed for every
      id under a mask, so the cost is O(|ids| sum_i d_i F) (ids times bands, independent of V), no
      Python loop runs over tokens, and gradients from ids in band i reach only ``E_i`` and ``P_i``.
    * ``attend(x)``: full-vocabulary logits with the bands' weights tied to the input,
      ``[(x P_0^T) E_0^T, (x P_1^T) E_1^T, ...]``, (..., V).

    Parameters: ``sum_i size_i d_i + sum_{i>0} d_i F`` (plus ``F^2`` with ``head_projection``).
    For WikiText-103's cutoffs (20000, 60000, V) with features 1024 and factor 4 the band
    dimensions are (1024, 256, 64).

    Deviation from the paper: the paper ties these weights to an adaptive *softmax* whose tail
    clusters are only evaluated when needed; ``attend`` computes all V logits (an exact softmax
    over the tied weights), which is simpler and exact but costs O(V) per query. Ids outside
    [0, V) raise ``ValueError`` when concrete and give NaN rows under ``jit``.

    Example::

      >>> emb = AdaptiveEmbed((100, 1000, 5000), 64, rngs=nnx.Rngs(0))
      >>> emb(jnp.array([3, 500, 4999])).shape, emb.attend(jnp.ones((64,))).shape
      ((3, 64), (5000,))

    Args:
      cutoffs: strictly increasing band ends; the last is the vocabulary size.
      features: output dimension F.
      factor: dimension divisor per band (>= 1; 4 in the paper).
      num_embeddings: optional vocabulary size, checked against ``cutoffs[-1]``.
      head_projection: give the head band a (F, F) projection too (fairseq does).
      dtype, param_dtype, embedding_init, projection_init, rngs: as in :class:`FactorizedEmbed`.

    References:
      A. Baevski, M. Auli. Adaptive input representations for neural language modeling. ICLR 2019,
      Section 3 and Figure 1.
    """

    def __init__(self, cutoffs: Sequence[int], features: int, *, factor: float = 4,
                 num_embeddings: int | None = None, head_projection: bool = False,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 embedding_init=default_embed_init, projection_init=default_projection_init,
                 rngs: nnx.Rngs):
        fn = "AdaptiveEmbed"
        cutoffs, features, factor = _math.check_adaptive_args(fn, cutoffs, features, factor,
                                                              num_embeddings)
        self.cutoffs = cutoffs
        self.features = features
        self.factor = factor
        self.num_embeddings = cutoffs[-1]
        self.head_projection = bool(head_projection)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.dims = tuple(_math.band_dims(cutoffs, features, factor))
        lo = 0
        for i, (hi, d) in enumerate(zip(cutoffs, self.dims)):
            setattr(self, f"embedding_{i}",
                    nnx.Param(embedding_init(rngs.params(), (hi - lo, d), param_dtype)))
            if _math.band_has_projection(i, d, features, self.head_projection):
                setattr(self, f"projection_{i}",
                        nnx.Param(projection_init(rngs.params(), (d, features), param_dtype)))
            else:
                setattr(self, f"projection_{i}", None)
            lo = hi

    def _bands(self):
        E = [getattr(self, f"embedding_{i}")[...] for i in range(len(self.cutoffs))]
        P = [getattr(self, f"projection_{i}") for i in range(len(self.cutoffs))]
        return E, [None if p is None else p[...] for p in P]

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Embeds integer ids of any shape: (...) -> (..., features)."""
        ids = _math.check_ids("AdaptiveEmbed", ids, self.num_embeddings)
        E, P = self._bands()
        return _math.adaptive_lookup(ids, E, P, self.cutoffs, dtype=self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied full-vocabulary logits: (..., features) -> (..., num_embeddings)."""
        x = _math.check_query("AdaptiveEmbed.attend", x, self.features)
        E, P = self._bands()
        return _math.adaptive_attend(x, E, P, dtype=self.dtype)

    @property
    def num_params(self) -> int:
        """``sum_i size_i d_i + sum_{i with projection} d_i F``."""
        return _math.adaptive_param_count(self.cutoffs, self.features, self.factor,
                                          self.head_projection)

    @classmethod
    def from_table(cls, table: Any, cutoffs: Sequence[int], *, factor: float = 4,
                   head_projection: bool = False, key: Any = None, dtype: Dtype | None = None,
                   param_dtype: Dtype | None = None) -> "AdaptiveEmbed":
        """Converts a trained (V, F) table, rows sorted by frequency, into adaptive bands.

        Band i's table and projection are the truncated SVD of that band's rows at rank
        ``d_i = F // factor**i``: ``E_i = U S^(1/2)``, ``P_i = S^(1/2) V^T``, the best rank-d_i
        approximation of the band (Eckart & Young), so frequent ids keep more of their vector.
        The head band (``d_0 = F``, no projection) is copied exactly. A band with fewer rows
        than ``d_i`` is exact, its extra columns zero. ``jaxfact.nn.compress(...,
        method="adaptive")`` reports each band's relative error.

        Cost: one SVD per band, O(size_i F min(size_i, F)) (randomized, O(size_i F d_i), with
        ``key``).

        Args:
          table: (V, F) real array, finite.
          cutoffs, factor, head_projection: as in the constructor (``cutoffs[-1]`` must be V).
          key: optional ``jax.random`` key for randomized SVDs of the bands.
          dtype, param_dtype: as in the constructor (param_dtype defaults to the table's dtype).

        Example::

          >>> table = jax.random.normal(jax.random.key(0), (5000, 64))
          >>> emb = AdaptiveEmbed.from_table(table, (100, 1000, 5000))
          >>> emb.dims
          (64, 16, 4)
        """
        module, _ = adaptive_from_table(cls, "AdaptiveEmbed.from_table", table, cutoffs, factor,
                                        head_projection, key, dtype, param_dtype)
        return module


def adaptive_from_table(cls, fn, table, cutoffs, factor, head_projection, key, dtype,
                        param_dtype):
    """``(module, band_errors)``; see :meth:`AdaptiveEmbed.from_table`."""
    b = _build.adaptive_from_table(fn, table, cutoffs, factor, head_projection, key, param_dtype)
    module = nnx.eval_shape(lambda: cls(b.cutoffs, b.features, factor=b.factor,
                                        head_projection=head_projection, dtype=dtype,
                                        param_dtype=b.param_dtype, rngs=nnx.Rngs(0)))
    for i, (e, p) in enumerate(zip(b.E, b.P)):
        getattr(module, f"embedding_{i}").set_value(e)
        if p is not None:
            getattr(module, f"projection_{i}").set_value(p)
    return module, b.errors
