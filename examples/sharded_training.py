"""Training a tiny language model whose factorized embedding is split over the vocabulary.

Eight host devices form a 2 x 4 mesh: ``data`` splits the batch, ``vocab`` splits the vocabulary.
The model is a token embedding, one MLP block and tied output logits, with
``jaxfact.nn.FactorizedEmbed(V, D, r, vocab_axis="vocab")``: its V x r codes ``A`` carry flax's
partitioning metadata, so building the model under ``jax.set_mesh`` stores each device's block of
V / 4 rows only; the r x D projection and the MLP are replicated. Lookups gather rows where they
live (a psum of the looked-up rows), ``attend`` returns logits split over the vocabulary, and the
loss is computed from them without ever gathering them (log-sum-exp and a one-hot sum are
reductions over the vocabulary). A few ``nnx.jit`` Adam steps on a synthetic next-token task
print the loss; the parameter shardings, the bytes of ``A`` each device holds and the
collectives of one compiled step are printed too. Last, ``FactorizedEmbed.from_table``
compresses a full table split over the vocabulary, keeping the split.

Run: ``python examples/sharded_training.py`` (about 10 s on 2 CPU cores).
"""

from __future__ import annotations

import os

# Eight CPU devices stand in for eight accelerators; this must happen before JAX starts.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxfact import _sharding  # noqa: E402
from jaxfact.nn import FactorizedEmbed  # noqa: E402

V, D, RANK, T, BATCH, STEPS = 4096, 64, 16, 16, 32, 30


class TinyLM(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.embed = FactorizedEmbed(V, D, RANK, vocab_axis="vocab", rngs=rngs)
        self.ln = nnx.LayerNorm(D, rngs=rngs)
        self.up = nnx.Linear(D, 4 * D, rngs=rngs)
        self.down = nnx.Linear(4 * D, D, rngs=rngs)

    def __call__(self, ids):
        h = self.embed(ids)
        h = h + self.down(nnx.gelu(self.up(self.ln(h))))
        return self.embed.attend(h)                  # (batch, T, V), split over "vocab"


def loss_fn(model, ids, targets):
    z = model(ids)
    picked = jnp.sum(z * jax.nn.one_hot(targets, V, dtype=z.dtype), axis=-1)
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - picked)


@nnx.jit
def train_step(model, optimizer, ids, targets):
    loss, grads = nnx.value_and_grad(loss_fn)(model, ids, targets)
    optimizer.update(model, grads)
    return loss


def batches(mesh, seed=0):
    """Sequences of a fixed random permutation walk (next = perm[current]): a model that learns
    the permutation drives the loss to 0."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(V)
    while True:
        start = rng.integers(0, V, size=BATCH)
        seq = np.empty((BATCH, T + 1), np.int32)
        seq[:, 0] = start
        for t in range(T):
            seq[:, t + 1] = perm[seq[:, t]]
        split = NamedSharding(mesh, P("data", None))
        yield jax.device_put(seq[:, :-1], split), jax.device_put(seq[:, 1:], split)


def main():
    mesh = jax.make_mesh((2, 4), ("data", "vocab"))
    with jax.set_mesh(mesh):
        model = TinyLM(rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

        specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
        print("annotated partition specs (nnx.get_partition_spec):")
        print(f"  embed.embedding  {specs['embed']['embedding'].get_value()}")
        print(f"  embed.projection {specs['embed']['projection'].get_value()}")
        A = model.embed.embedding[...]
        print(f"embed.embedding {A.shape} is stored as {A.sharding.spec}: each device holds "
              f"{A.addressable_shards[0].data.shape} ({A.addressable_shards[0].data.nbytes} "
              f"of {A.nbytes} bytes)")

        data = batches(mesh)
        ids, targets = next(data)
        compiled = train_step.lower(model, optimizer, ids, targets).compile()
        moved = _sharding.collectives(compiled.as_text())
        print(f"one training step communicates {sum(c.nbytes for c in moved)} bytes in "
              f"{len(moved)} collectives; the largest: "
              f"{max(moved, key=lambda c: c.nbytes) if moved else None}")

        for i in range(STEPS):
            loss = train_step(model, optimizer, ids, targets)
            if i % 10 == 0 or i == STEPS - 1:
                print(f"step {i:3d}  loss {float(loss):.3f}")
            ids, targets = next(data)

        logits = model(ids)
        print(f"logits {logits.shape} are split as {logits.sharding.spec}; "
              f"embed.embedding is still {model.embed.embedding[...].sharding.spec}")

    # A full (V, D) table split over the vocabulary (say, a trained nnx.Embed's) compresses where
    # its rows live: the exact SVD runs on the row blocks (a TSQR, then the SVD of the D x D R
    # factor) and the codes come back split.
    table = jax.device_put(jax.random.normal(jax.random.key(1), (V, D)),
                           NamedSharding(mesh, P("vocab", None)))
    small = FactorizedEmbed.from_table(table, RANK)
    print(f"from_table on a {table.sharding.spec} table: embedding "
          f"{small.embedding[...].sharding.spec}, vocab_axis={small.vocab_axis!r}")


if __name__ == "__main__":
    main()
