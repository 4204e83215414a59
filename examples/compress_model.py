"""Compress a trained language model's embedding, fine-tune briefly, compare before and after.

The workflow of embedding factorization, end to end, with :func:`jaxfact.nn.compress`:

1. train a small language model with a full, tied input/output embedding (``nnx.Embed``, the
   output logits are ``embed.attend(h)``) on the Lee corpus (300 news documents shipped with
   gensim; 240 to train, 30 to validate, 30 to test);
2. sweep the rank k of the embedding with :func:`jaxfact.nn.rank_sweep` (one SVD, one compiled
   evaluation for every k) and read the validation perplexity right after compression;
3. compress at several k with :func:`jaxfact.nn.compress` (the tie survives: the model keeps
   calling ``embed.attend``), fine-tune each for a few steps, and choose k on the validation
   split; the full model gets the same extra steps, for a fair comparison;
4. print perplexity on train, validation and test, the train/test gap, parameters and the time
   per training step, before and after;
5. the same for a Linen model, with :func:`jaxfact.nn.linen.compress_params` and
   :func:`jaxfact.nn.linen.swap_modules`.

The model predicts each word from the previous ``C`` words: ``logits = E^T tanh(W [e_1..e_C])``
with the embedding E tied to the output. Run: ``python examples/compress_model.py`` (about half a
minute on 2 CPU cores).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx

import jaxfact
from jaxfact import datasets
from jaxfact.nn import compress, rank_sweep
from jaxfact.nn import linen as jln

C, D, BATCH = 4, 64, 256                 # context words, model width, batch size
STEPS, TUNE_STEPS, LR, TUNE_LR = 600, 100, 1e-2, 2e-3
SWEEP_KS, TUNE_KS = (4, 8, 16, 24, 32, 48), (8, 16, 32)


def load(min_count: int = 2):
    docs = datasets.load_lee_corpus()
    train_docs, valid_docs, test_docs = docs[:240], docs[240:270], docs[270:]
    vocab = jaxfact.build_vocab(train_docs, min_count=min_count)
    V = len(vocab.words) + 1   # id 0 is <unk>, words follow by frequency

    def ngrams(split):
        ids = np.asarray(jaxfact.encode_corpus(split, vocab), np.int64) + 1
        win = np.lib.stride_tricks.sliding_window_view(ids, C + 1)
        return jnp.asarray(win[:, :C], jnp.int32), jnp.asarray(win[:, C], jnp.int32)

    return ngrams(train_docs), ngrams(valid_docs), ngrams(test_docs), V


# ------------------------------------------------------------------------------------------------
# NNX


class ContextLM(nnx.Module):
    def __init__(self, V: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(V, D, rngs=rngs)
        self.mix = nnx.Linear(C * D, D, rngs=rngs)

    def __call__(self, ctx):
        h = self.embed(ctx).reshape(ctx.shape[0], C * D)
        return self.embed.attend(jnp.tanh(self.mix(h)))


def nnx_loss(model, ctx, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(ctx), y).mean()


@nnx.jit
def nnx_step(model, opt, ctx, y):
    loss, grads = nnx.value_and_grad(nnx_loss)(model, ctx, y)
    opt.update(model, grads)
    return loss


@nnx.jit
def nnx_ppl(model, ctx, y):
    return jnp.exp(nnx_loss(model, ctx, y))


def nnx_train(model, data, steps, lr, seed):
    (ctx, y) = data
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)
    idx = np.random.default_rng(seed).integers(0, len(y), (steps, BATCH))
    jax.block_until_ready(nnx_step(model, opt, ctx[idx[0]], y[idx[0]]))     # compiles
    t0 = time.perf_counter()
    for i in idx[1:]:
        loss = nnx_step(model, opt, ctx[i], y[i])
    jax.block_until_ready(loss)
    return (time.perf_counter() - t0) / max(steps - 1, 1) * 1e3


def n_params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def evaluate_nnx(name, k, model, splits, ms):
    train, valid, test = (float(nnx_ppl(model, *s)) for s in splits)
    embed = n_params(model.embed)
    return dict(name=name, k=k, params=n_params(model), embed=embed, train=train, valid=valid,
                test=test, ms=ms)


def run_nnx(train, valid, test, V):
    splits = (train_subset(train), valid, test)
    model = ContextLM(V, rngs=nnx.Rngs(0))
    nnx_train(model, train, STEPS, LR, seed=0)
    sweep = rank_sweep(model, SWEEP_KS, lambda m: nnx_ppl(m, *valid))    # k on validation
    rows = []
    full = nnx.clone(model)
    ms = nnx_train(full, train, TUNE_STEPS, TUNE_LR, seed=1)
    rows.append(evaluate_nnx("nnx.Embed (full)", D, full, splits, ms))
    for k in TUNE_KS:
        small, report = compress(model, rank=k)
        assert report.layers[0].kind == "Embed -> FactorizedEmbed"
        ms = nnx_train(small, train, TUNE_STEPS, TUNE_LR, seed=1)
        rows.append(evaluate_nnx("FactorizedEmbed", k, small, splits, ms))
    return sweep, rows


def train_subset(data, n=8000):
    """A fixed random sample of training n-grams, for the training perplexity."""
    idx = np.random.default_rng(123).choice(len(data[1]), n, replace=False)
    return data[0][idx], data[1][idx]


# ------------------------------------------------------------------------------------------------
# Linen


class LinenContextLM(nn.Module):
    embed: nn.Module      # layers to be swapped are fields (see jaxfact.nn.linen.swap_modules)
    mix: nn.Module

    def __call__(self, ctx):
        h = self.embed(ctx).reshape(ctx.shape[0], C * D)
        return self.embed.attend(jnp.tanh(self.mix(h)))


def linen_train(model, params, data, steps, lr, seed):
    ctx, y = data
    tx = optax.adam(lr)

    def loss(p, c, t):
        logits = model.apply({"params": p}, c)
        return optax.softmax_cross_entropy_with_integer_labels(logits, t).mean()

    @jax.jit
    def step(p, s, c, t):
        value, grads = jax.value_and_grad(loss)(p, c, t)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    state = tx.init(params)
    idx = np.random.default_rng(seed).integers(0, len(y), (steps, BATCH))
    params, state, value = step(params, state, ctx[idx[0]], y[idx[0]])
    jax.block_until_ready(value)
    t0 = time.perf_counter()
    for i in idx[1:]:
        params, state, value = step(params, state, ctx[i], y[i])
    jax.block_until_ready(value)
    ms = (time.perf_counter() - t0) / max(steps - 1, 1) * 1e3
    ppl = jax.jit(lambda p, c, t: jnp.exp(loss(p, c, t)))
    return params, ms, ppl


def evaluate_linen(name, k, params, ppl, splits, ms):
    train, valid, test = (float(ppl(params, *s)) for s in splits)
    size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    return dict(name=name, k=k, params=size(params), embed=size(params["embed"]), train=train,
                valid=valid, test=test, ms=ms)


def run_linen(train, valid, test, V):
    splits = (train_subset(train), valid, test)
    model = LinenContextLM(nn.Embed(V, D), nn.Dense(D))
    params = model.init(jax.random.key(0), train[0][:2])["params"]
    params, _, _ = linen_train(model, params, train, STEPS, LR, seed=0)
    full, ms, ppl = linen_train(model, params, train, TUNE_STEPS, TUNE_LR, seed=1)
    rows = [evaluate_linen("nn.Embed (full)", D, full, ppl, splits, ms)]
    for k in TUNE_KS:
        small_params, modules, _ = jln.compress_params(params, ["embed"], rank=k)
        small = jln.swap_modules(model, modules)
        tuned, ms, ppl = linen_train(small, small_params, train, TUNE_STEPS, TUNE_LR, seed=1)
        rows.append(evaluate_linen("FactorizedEmbed", k, tuned, ppl, splits, ms))
    return rows


# ------------------------------------------------------------------------------------------------


def print_rows(title, rows):
    best = min((r for r in rows if r["name"] != rows[0]["name"]), key=lambda r: r["valid"])
    print(f"\n{title}: after {TUNE_STEPS} more Adam steps each (lr {TUNE_LR}); k chosen on "
          f"validation: k = {best['k']}")
    print("| embedding | k | params | embedding params | train ppl | valid ppl | test ppl | "
          "gap (test - train) | ms/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " (chosen)" if r is best else ""
        print(f"| {r['name']}{mark} | {r['k']} | {r['params']} | {r['embed']} | {r['train']:.1f} "
              f"| {r['valid']:.1f} | {r['test']:.1f} | {r['test'] - r['train']:.1f} | "
              f"{r['ms']:.2f} |")


def main():
    t0 = time.perf_counter()
    train, valid, test, V = load()
    print(f"Lee corpus: {len(train[1])} / {len(valid[1])} / {len(test[1])} train / valid / test "
          f"predictions, vocabulary {V} (with <unk>); context {C} words, d = {D}, tied "
          f"embedding; {STEPS} Adam steps of {BATCH} (lr {LR}); train ppl on "
          f"{len(train_subset(train)[1])} training n-grams")
    sweep, rows = run_nnx(train, valid, test, V)
    print("\nNNX rank sweep right after compression (one SVD, one compiled evaluation; metric = "
          "validation perplexity, no fine-tuning):")
    print(sweep)
    print_rows("NNX (jaxfact.nn.compress)", rows)
    print_rows("Linen (jaxfact.nn.linen.compress_params)", run_linen(train, valid, test, V))
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
