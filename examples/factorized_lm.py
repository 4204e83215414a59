"""A tiny Flax NNX language model with a full, factorized or adaptive tied embedding.

One pre-norm Transformer block (d = 64, 4 heads, causal) on the Lee corpus (270 documents to
train, 30 to validate; words seen at least twice, the rest mapped to ``<unk>``). The input
embedding and the output layer are tied (``logits = embed.attend(h)``) and are one of:

* ``nnx.Embed`` (V x 64, the baseline);
* ``jaxfact.nn.FactorizedEmbed`` at ranks 8, 16 and 32 (ALBERT);
* ``jaxfact.nn.AdaptiveEmbed`` with bands (500, 2000, V) of widths 64, 16, 4 (Baevski & Auli).

Every model gets the same budget: the same batches (16 sequences of 32 tokens), 200 Adam steps.
The table gives embedding and total parameters, validation perplexity and the time per training
step (after compilation).

Run: ``python examples/factorized_lm.py`` (under a minute on 2 CPU cores).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxfact
from jaxfact import datasets
from jaxfact.nn import AdaptiveEmbed, FactorizedEmbed

D, T, BATCH, STEPS, LR = 64, 32, 16, 200, 3e-3


def load(min_count: int = 2, n_valid_docs: int = 30):
    docs = datasets.load_lee_corpus()
    train_docs, valid_docs = docs[:-n_valid_docs], docs[-n_valid_docs:]
    vocab = jaxfact.build_vocab(train_docs, min_count=min_count)
    # Id 0 is <unk> (out-of-vocabulary words, frequent as a class); words follow by frequency,
    # the order AdaptiveEmbed's bands assume.
    train = jaxfact.encode_corpus(train_docs, vocab) + 1
    valid = jaxfact.encode_corpus(valid_docs, vocab) + 1
    return train.astype(np.int32), valid.astype(np.int32), len(vocab.words) + 1


def windows(ids: np.ndarray) -> np.ndarray:
    n = (len(ids) - 1) // T
    return np.stack([ids[i * T:i * T + T + 1] for i in range(n)])   # (n, T + 1)


class TinyLM(nnx.Module):
    def __init__(self, embed, *, rngs: nnx.Rngs):
        self.embed = embed
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (T, D)))
        self.ln1 = nnx.LayerNorm(D, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=4, in_features=D, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(D, rngs=rngs)
        self.up = nnx.Linear(D, 4 * D, rngs=rngs)
        self.down = nnx.Linear(4 * D, D, rngs=rngs)
        self.ln_f = nnx.LayerNorm(D, rngs=rngs)

    def __call__(self, ids):
        x = self.embed(ids) + self.pos[...][: ids.shape[-1]]
        x = x + self.attn(self.ln1(x), mask=nnx.make_causal_mask(ids))
        x = x + self.down(nnx.gelu(self.up(self.ln2(x))))
        return self.embed.attend(self.ln_f(x))


def make_embeddings(V: int):
    cut = (500, 2000, V)
    return {
        "nnx.Embed (full)": lambda r: nnx.Embed(V, D, rngs=r),
        "FactorizedEmbed r=8": lambda r: FactorizedEmbed(V, D, 8, rngs=r),
        "FactorizedEmbed r=16": lambda r: FactorizedEmbed(V, D, 16, rngs=r),
        "FactorizedEmbed r=32": lambda r: FactorizedEmbed(V, D, 32, rngs=r),
        f"AdaptiveEmbed {cut[:2]}": lambda r: AdaptiveEmbed(cut, D, factor=4, rngs=r),
    }


def loss_fn(model, batch):
    logits = model(batch[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()


@nnx.jit
def train_step(model, opt, batch):
    loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
    opt.update(model, grads)
    return loss


@nnx.jit
def eval_loss(model, batches):
    return jnp.mean(jax.vmap(lambda b: loss_fn(model, b[None]))(batches))


def n_params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def run(steps: int = STEPS, names=None):
    train, valid, V = load()
    train_w, valid_w = windows(train), jnp.asarray(windows(valid))
    rng = np.random.default_rng(0)
    batches = jnp.asarray(train_w[rng.integers(0, len(train_w), (steps, BATCH))])
    rows = []
    for name, make in make_embeddings(V).items():
        if names is not None and name not in names:
            continue
        rngs = nnx.Rngs(0)
        model = TinyLM(make(rngs), rngs=rngs)
        opt = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)
        jax.block_until_ready(train_step(model, opt, batches[0]))   # compile (counts as step 1)
        t0 = time.perf_counter()
        for i in range(1, steps):
            loss = train_step(model, opt, batches[i])
        jax.block_until_ready(loss)
        step_ms = (time.perf_counter() - t0) / max(steps - 1, 1) * 1e3
        ppl = float(jnp.exp(eval_loss(model, valid_w)))
        rows.append(dict(name=name, embed=n_params(model.embed), total=n_params(model),
                         ppl=ppl, train_ppl=float(jnp.exp(loss)), ms=step_ms))
    return rows, V, len(train), len(valid)


def main():
    t0 = time.perf_counter()
    rows, V, n_train, n_valid = run()
    print(f"Lee corpus: {n_train} training tokens, {n_valid} validation tokens, vocabulary {V} "
          f"(with <unk>); 1 Transformer block, d = {D}, context {T}; {STEPS} Adam steps of "
          f"{BATCH} x {T} tokens")
    print("| tied embedding | embedding params | total params | valid ppl | last train ppl "
          "| ms/step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['embed']} | {r['total']} | {r['ppl']:.1f} | "
              f"{r['train_ppl']:.1f} | {r['ms']:.1f} |")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
