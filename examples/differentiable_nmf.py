"""An NMF layer inside a Flax NNX classifier, trained end to end through ``nmf_transform``.

Each 8x8 digit x (64 pixels in [0, 1]) is encoded by its non-negative codes against a basis H of
k = 16 non-negative parts, ``w(x) = argmin_{w >= 0} 1/2 ||x - w H||^2 + alpha/2 ||w||^2``
(:func:`jaxfact.nmf_transform`), and a linear layer classifies the codes. Two models, same
architecture and training budget:

* fixed basis: H from :func:`jaxfact.nmf` of the training images, only the linear layer trained;
* end to end: H (kept positive as ``softplus(raw)``) trained together with the linear layer, its
  gradient coming from implicit differentiation of the NNLS solution (the KKT conditions at the
  converged codes), not from unrolled solver iterations.

Prints the held-out accuracy of each.

    python examples/differentiable_nmf.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxfact as jf
from jaxfact.datasets import load_digits

K = 16
STEPS = 150
BATCH = 128
ALPHA = 1e-3   # a small L2 penalty on the codes keeps them unique
DIFF = jf.ImplicitDiff(tol=1e-4, max_iter=60)   # 4 digits of gradient are plenty for Adam


class NMFCodes(nnx.Module):
    """Non-negative codes of the input against a non-negative basis H = softplus(raw)."""

    def __init__(self, H0, *, trainable):
        raw = jnp.log(jnp.expm1(jnp.maximum(H0, 1e-3)))   # softplus^-1
        self.raw = nnx.Param(raw) if trainable else nnx.Variable(raw)

    def __call__(self, x):
        H = jax.nn.softplus(self.raw[...])
        return jf.nmf_transform(H, x, solver="hals", max_iter=50, tol=1e-4, alpha_W=ALPHA,
                                diff=DIFF).W


class Classifier(nnx.Module):
    def __init__(self, H0, *, trainable, rngs):
        self.codes = NMFCodes(H0, trainable=trainable)
        self.head = nnx.Linear(K, 10, rngs=rngs)

    def __call__(self, x):
        w = self.codes(x)
        return self.head(w / (jnp.mean(w) + 1e-6))


def train(model, X, y, key):
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xb, yb):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    n = X.shape[0]
    for i in range(STEPS):
        idx = jax.random.choice(jax.random.fold_in(key, i), n, (BATCH,), replace=False)
        loss = step(model, optimizer, X[idx], y[idx])
    return float(loss)


def main():
    digits = load_digits()
    X = jnp.asarray(digits.images) / 16.0
    y = jnp.asarray(digits.labels)
    perm = np.random.default_rng(0).permutation(X.shape[0])
    tr, te = perm[:1400], perm[1400:]
    H0 = jf.nmf(X[tr], K, solver="hals", max_iter=200).H
    print(f"digits: {len(tr)} training, {len(te)} test images; NMF basis of {K} parts; "
          f"{STEPS} Adam steps of {BATCH} images")
    print(f"{'model':<26} {'train loss':>10} {'test accuracy':>13} {'seconds':>8}")
    for name, trainable in (("fixed NMF basis", False), ("NMF basis trained e2e", True)):
        t0 = time.perf_counter()
        model = Classifier(H0, trainable=trainable, rngs=nnx.Rngs(0))
        loss = train(model, X[tr], y[tr], jax.random.key(1))
        acc = float(jnp.mean(jnp.argmax(model(X[te]), -1) == y[te]))
        print(f"{name:<26} {loss:10.4f} {acc:13.3f} {time.perf_counter() - t0:8.1f}")


if __name__ == "__main__":
    main()
