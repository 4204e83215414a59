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

    Example:
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
      vocab_axis: mesh axis name (or tuple of names, or a logical name mapped by flax's axis
        rules) to split the vocabulary over; None (the default) adds no annotation.
      rngs: ``nnx.Rngs`` for the initializers.

    Sharding:
      With ``vocab_axis``, ``A`` carries flax's partitioning metadata ``out_sharding =
      (vocab_axis, None)`` (``B`` and ``b`` none: replicated), so ``nnx.get_partition_spec``
      and ``nnx.get_named_sharding`` give ``P(vocab_axis, None)``, and a module built under
      ``jax.set_mesh(mesh)`` holds its ``A`` split by rows (flax's eager sharding). V must be a
      multiple of the number of devices on those axes. Lookup: each device gathers the ids in
      its block of rows and one ``psum`` of the ``(|ids|, r)`` rows combines them (the ids keep
      their own split on other mesh axes). ``attend``: ``(x B^T) A^T`` gives logits split over
      the vocabulary, ``P(..., vocab_axis)``; nothing crosses devices (a batch split over the
      same axis is first gathered: ``|x| r`` numbers); its gradient sums an ``(|x|, r)``
      product over the vocabulary shards. With the batch split over another axis (data
      parallel), the gradient of each device's block of ``A`` is summed over that axis twice, once
      for the lookup (inside its ``shard_map``) and once for ``attend``: ``2 (V / p) r`` numbers
      per step where one sum would do. Without a mesh nothing changes.

    References:
      Z. Lan et al. ALBERT: A lite BERT for self-supervised learning of language representations.
      ICLR 2020, Section 3.1 ("factorized embedding parameterization").
    """

    def __init__(self, num_embeddings: int, features: int, rank: int, *, use_bias: bool = False,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 embedding_init=default_embed_init, projection_init=default_projection_init,
                 bias_init=nnx.initializers.zeros_init(), vocab_axis: Any = None,
                 rngs: nnx.Rngs):
        num_embeddings, features, rank = _math.check_factorized_args(
            "FactorizedEmbed", num_embeddings, features, rank)
        self.vocab_axis = _math.check_vocab_axis("FactorizedEmbed", vocab_axis,
                                                 {"embedding": num_embeddings})
        self.num_embeddings = num_embeddings
        self.features = features
        self.rank = rank
        self.use_bias = bool(use_bias)
        self.dtype = dtype
        self.param_dtype = param_dtype
        inits = {"embedding": embedding_init, "projection": projection_init, "bias": bias_init}
        shapes = _math.low_rank_shapes(_math.EMBED_PARAMS, num_embeddings, features, rank,
                                       self.use_bias)
        _init_params(self, shapes, inits, param_dtype, rngs,
                     _math.vocab_sharding(self.vocab_axis, ["embedding"]))
        if not self.use_bias:
            self.bias = None

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
                     param_dtype: Dtype | None = None, vocab_axis: Any = "infer",
                     ) -> "FactorizedEmbed":
        """A module whose table is ``A @ B (+ bias)``, for factors the user already has.

        Args:
          A: (V, r) codes. B: (r, F) projection. bias: optional (F,) row added to every embedding.
          dtype: computation dtype. param_dtype: storage dtype (default: ``A``'s dtype).
          vocab_axis: as in the constructor; ``"infer"`` (the default) takes the mesh axes that
            split the rows of ``A`` (None for an unsharded ``A``). Given explicitly under
            ``jax.set_mesh``, ``A`` is put on that split.

        Example:
          >>> U, S, Vt = jnp.linalg.svd(jnp.ones((6, 4)), full_matrices=False)
          >>> emb = FactorizedEmbed.from_factors(U[:, :2] * S[None, :2], Vt[:2])
          >>> emb(jnp.array([0, 5])).round(3)
          Array([[1., 1., 1., 1.],
                 [1., 1., 1., 1.]], dtype=float32)
        """
        args, kw, params = _build.factor_params("FactorizedEmbed.from_factors", A, B, bias,
                                                param_dtype)
        axis = _math.vocab_axis_of(A, vocab_axis)
        return _with_params(lambda: cls(*args, **kw, dtype=dtype, vocab_axis=axis,
                                        rngs=nnx.Rngs(0)), params)

    @classmethod
    def from_table(cls, table: Any, rank: Any, *, method: str = "svd", key: Any = None,
                   nmf_options: dict | None = None, dtype: Dtype | None = None,
                   param_dtype: Dtype | None = None, checks: bool = False,
                   vocab_axis: Any = "infer") -> "FactorizedEmbed":
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
          key: ``None`` (the default) for the exact, deterministic SVD / PCA, or a ``jax.random``
            key for the randomized one; with "nmf" it goes to :func:`jaxfact.nmf` (only its
            random initializations need one).
          nmf_options: extra keyword arguments for :func:`jaxfact.nmf` (``solver``,
            ``max_iter``, ...); an unknown key raises ``TypeError`` and ``rank``/``key``/``X``/
            ``checks`` (set by this method) raise ``ValueError``, each naming the key.
          dtype, param_dtype: as in the constructor (param_dtype defaults to the table's dtype).
          checks: under an outer ``jit``, also check that the table is finite (and non-negative
            for "nmf"), with ``jax.experimental.checkify`` (wrap the jitted caller in
            ``checkify.checkify``).
          vocab_axis: as in :meth:`from_factors`; ``"infer"`` (the default) follows the table.

        Sharding: a table split by rows (``P("vocab", None)``) is factored where its rows live,
        by the sharded :func:`jaxfact.truncated_svd`, :func:`jaxfact.randomized_svd`,
        :func:`jaxfact.pca` or :func:`jaxfact.nmf` (their docstrings say what crosses devices):
        ``A`` comes back split like the table's rows and annotated with that axis, ``B`` and the
        bias replicated. The module equals the unsharded one's to the factorization's tolerance.

        Example:
          >>> table = jax.random.normal(jax.random.key(0), (1000, 64))
          >>> emb = FactorizedEmbed.from_table(table, 8, method="pca")
          >>> emb.num_params   # 1000 * 8 + 8 * 64 + 64
          8576
        """
        args, kw, params = _build.table_params(
            "FactorizedEmbed.from_table", table, rank, method=method, key=key,
            nmf_options=nmf_options, param_dtype=param_dtype, checks=checks)
        axis = _math.vocab_axis_of(table, vocab_axis)
        return _with_params(lambda: cls(*args, **kw, dtype=dtype, vocab_axis=axis,
                                        rngs=nnx.Rngs(0)), params)


class FactorizedLinear(nnx.Module):
    """Low-rank linear layer ``y = (x @ A) @ B (+ b)``: ``nnx.Linear`` with its kernel factored.

    ``A`` (``kernel_a``, in x r) and ``B`` (``kernel_b``, r x out) replace the (in, out) kernel;
    the product is never formed. Parameters: ``in r + r out (+ out)`` against ``in out (+ out)``,
    and O(r (in + out)) time per input row. ``from_kernel`` builds the layer from a trained
    kernel: the best rank-r approximation by truncated SVD (Eckart & Young), or NMF factors.

    Example:
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
        inits = {"kernel_a": kernel_a_init, "kernel_b": kernel_b_init, "bias": bias_init}
        shapes = _math.low_rank_shapes(_math.LINEAR_PARAMS, in_features, out_features, rank,
                                       self.use_bias)
        _init_params(self, shapes, inits, param_dtype, rngs, {})
        if not self.use_bias:
            self.bias = None

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
        args, kw, params = _build.factor_params("FactorizedLinear.from_factors", A, B, bias,
                                                param_dtype, _build.LINEAR_NAMES)
        return _with_params(lambda: cls(*args, **kw, dtype=dtype, precision=precision,
                                        rngs=nnx.Rngs(0)), params)

    @classmethod
    def from_kernel(cls, kernel: Any, rank: Any, *, bias: Any = None, method: str = "svd",
                    key: Any = None, nmf_options: dict | None = None, dtype: Dtype | None = None,
                    param_dtype: Dtype | None = None, precision: Any = None,
                    checks: bool = False) -> "FactorizedLinear":
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
          method, key, nmf_options, checks: as in :meth:`FactorizedEmbed.from_table`.
          dtype, param_dtype, precision: as in the constructor (param_dtype defaults to the
            kernel's dtype).

        Example:
          >>> dense = nnx.Linear(256, 128, rngs=nnx.Rngs(0))
          >>> low = FactorizedLinear.from_kernel(dense.kernel[...], 16, bias=dense.bias[...])
          >>> low.kernel().shape, low.num_params   # 256*16 + 16*128 + 128
          ((256, 128), 6272)
        """
        args, kw, params = _build.table_params(
            "FactorizedLinear.from_kernel", kernel, rank, method=method, key=key,
            nmf_options=nmf_options, param_dtype=param_dtype, checks=checks, bias=bias,
            names=_build.LINEAR_NAMES)
        return _with_params(lambda: cls(*args, **kw, dtype=dtype, precision=precision,
                                        rngs=nnx.Rngs(0)), params)


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

    Example:
      >>> emb = AdaptiveEmbed((100, 1000, 5000), 64, rngs=nnx.Rngs(0))
      >>> emb(jnp.array([3, 500, 4999])).shape, emb.attend(jnp.ones((64,))).shape
      ((3, 64), (5000,))

    Args:
      cutoffs: strictly increasing band ends; the last is the vocabulary size.
      features: output dimension F.
      factor: dimension divisor per band (>= 1; 4 in the paper).
      num_embeddings: optional vocabulary size, checked against ``cutoffs[-1]``.
      head_projection: give the head band a (F, F) projection too (fairseq does).
      dtype, param_dtype, embedding_init, projection_init, vocab_axis, rngs: as in
        :class:`FactorizedEmbed`.

    Sharding:
      With ``vocab_axis`` every band table ``E_i`` is annotated ``(vocab_axis, None)`` and split
      by rows under a mesh (each band's size must be a multiple of the number of devices), the
      projections replicated. Lookup gathers each band where its rows live (one ``psum`` of
      ``(|ids|, d_i)`` rows per band). ``attend``'s band blocks are split over the vocabulary;
      putting them in id order (a concatenation) moves the logits themselves (XLA gathers the
      blocks: O(|x| V) per device), not the tables.

    References:
      A. Baevski, M. Auli. Adaptive input representations for neural language modeling. ICLR 2019,
      Section 3 and Figure 1.
    """

    def __init__(self, cutoffs: Sequence[int], features: int, *, factor: float = 4,
                 num_embeddings: int | None = None, head_projection: bool = False,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 embedding_init=default_embed_init, projection_init=default_projection_init,
                 vocab_axis: Any = None, rngs: nnx.Rngs):
        cutoffs, features, factor = _math.check_adaptive_args("AdaptiveEmbed", cutoffs, features,
                                                              factor, num_embeddings)
        bands = {f"embedding_{i}": hi - lo for i, (lo, hi) in
                 enumerate(zip((0,) + cutoffs[:-1], cutoffs))}
        self.vocab_axis = _math.check_vocab_axis("AdaptiveEmbed", vocab_axis, bands)
        self.cutoffs = cutoffs
        self.features = features
        self.factor = factor
        self.num_embeddings = cutoffs[-1]
        self.head_projection = bool(head_projection)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.dims = tuple(_math.band_dims(cutoffs, features, factor))
        shapes = _math.adaptive_shapes(cutoffs, features, factor, self.head_projection)
        inits = {name: embedding_init if name.startswith("embedding") else projection_init
                 for name in shapes}
        _init_params(self, shapes, inits, param_dtype, rngs,
                     _math.vocab_sharding(self.vocab_axis, list(bands)))

    def _bands(self):
        n = len(self.cutoffs)
        names = [f"{kind}_{i}" for i in range(n) for kind in ("embedding", "projection")]
        params = {name: getattr(self, name) for name in names}
        return _math.adaptive_bands({k: p[...] for k, p in params.items() if p is not None}, n)

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
                   param_dtype: Dtype | None = None, checks: bool = False,
                   vocab_axis: Any = "infer") -> "AdaptiveEmbed":
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
          key: ``None`` (the default) for exact SVDs of the bands, or a ``jax.random`` key for
            randomized ones.
          dtype, param_dtype: as in the constructor (param_dtype defaults to the table's dtype).
          checks: under an outer ``jit``, also check that the table is finite, with
            ``jax.experimental.checkify`` (wrap the jitted caller in ``checkify.checkify``).
          vocab_axis: as in :meth:`FactorizedEmbed.from_factors`; ``"infer"`` (the default)
            follows the table: a table split by rows gives band tables split the same way (each
            band re-split from the table's shards, then factored by the sharded SVD), so each
            band's size must be a multiple of the number of devices.

        Example:
          >>> table = jax.random.normal(jax.random.key(0), (5000, 64))
          >>> emb = AdaptiveEmbed.from_table(table, (100, 1000, 5000))
          >>> emb.dims
          (64, 16, 4)
        """
        bands = _build.adaptive_from_table("AdaptiveEmbed.from_table", table, cutoffs, factor,
                                           head_projection, key, param_dtype, checks)
        return adaptive_from_bands(cls, bands, head_projection, dtype,
                                   _math.vocab_axis_of(table, vocab_axis))


def adaptive_from_bands(cls, bands: _build.AdaptiveBands, head_projection: bool,
                        dtype: Dtype | None, vocab_axis: Any = None) -> AdaptiveEmbed:
    """The module holding the bands of :func:`jaxfact.nn._build.adaptive_from_table`."""
    return _with_params(lambda: cls(bands.cutoffs, bands.features, factor=bands.factor,
                                    head_projection=head_projection, dtype=dtype,
                                    param_dtype=bands.param_dtype, vocab_axis=vocab_axis,
                                    rngs=nnx.Rngs(0)),
                        bands.params)


def _init_params(module, shapes, inits, param_dtype, rngs, sharding):
    # In the order of `shapes`, so each initializer draws the same key as it always has.
    # `sharding` maps a parameter name to its flax partitioning annotation (out_sharding);
    # an initializer wrapped by nnx.with_partitioning keeps its own.
    for name, shape in shapes.items():
        meta = {"out_sharding": sharding[name]} if name in sharding else {}
        value = None if shape is None else nnx.Param(inits[name](rngs.params(), shape,
                                                                 param_dtype), **meta)
        setattr(module, name, value)



def _with_params(make, params):
    """``make()``'s module (built abstractly: nothing is initialized, so the key is unused) with
    its parameters set to ``params``. An annotated parameter is put on its annotated split when
    a mesh is set (``jax.set_mesh``), as flax's eager sharding does at construction; without a
    mesh it keeps the value's own sharding."""
    with nnx.use_eager_sharding(False):   # an abstract module needs no mesh
        module = nnx.eval_shape(make)
    mesh = jax.sharding.get_abstract_mesh()
    for name, value in params.items():
        var = getattr(module, name)
        spec = nnx.get_partition_spec(var).get_value()
        if not mesh.empty and spec != jax.sharding.PartitionSpec() and \
                nnx.using_eager_sharding():
            value = jax.sharding.reshard(value, spec) if mesh.are_all_axes_explicit else \
                jax.device_put(value, jax.sharding.NamedSharding(jax.sharding.get_mesh(), spec))
        var.set_value(value)
    return module
