"""Learning a regularization strength by gradient descent through the solver.

SoftImpute's ``lam`` and biased MF's ``lam`` are tuned on a validation split of a synthetic rating
matrix in two ways: the classical grid search (SoftImpute's warm-started ``soft_impute_path``, a
batch of ALS fits for biased MF), and gradient descent on ``log(lam)`` with Optax (Adam), where
the gradient of the validation loss comes from implicit differentiation of the converged solver
(one solve and one backward pass per step, each solve warm-started from the previous one). Prints
the validation and test RMSE of both, and the number of solves each needed.

    python examples/tune_lambda.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxfact as jf

SHAPE = (200, 150)
STEPS = 6   # gradient steps (one solve each), against a grid of 12 values
GRID = 12
# A gradient to ~3 digits is all Adam needs: a loose, cheap backward solve.
DIFF = jf.ImplicitDiff(tol=1e-3, max_iter=100)


def rmse(pred, split):
    return float(jnp.sqrt(jnp.mean((pred - split.values) ** 2)))


def descend(fit, val_loss, lam0, lr, data):
    """Adam on log(lam): ``fit(lam, warm, data)`` solves, ``val_loss(result, data)`` scores.
    Returns the final lam and result and the number of solves. The data are arguments of the
    jitted step (not captured constants), so they are not baked into the compiled program."""
    # A decaying step: Adam's first steps have size ~lr whatever the gradient's scale, and a
    # handful of solves leave no room for oscillation around the optimum.
    opt = optax.adam(optax.exponential_decay(lr, 1, 0.6))

    @jax.jit
    def step(log_lam, state, warm, data):
        def loss(log_lam):
            res = fit(jnp.exp(log_lam), warm, data)
            return val_loss(res, data), res
        (_, res), g = jax.value_and_grad(loss, has_aux=True)(log_lam)
        updates, state = opt.update(g, state)
        return optax.apply_updates(log_lam, updates), state, res

    log_lam = jnp.log(jnp.asarray(lam0, jnp.float32))
    state = opt.init(log_lam)
    res = fit(jnp.exp(log_lam), None, data)  # the first solve, cold
    for _ in range(STEPS):
        log_lam, state, res = step(log_lam, state, res, data)
    res = fit(jnp.exp(log_lam), res, data)   # the solution at the final lam
    return float(jnp.exp(log_lam)), res, STEPS + 2


def main():
    data = jf.synthetic_ratings(n_users=SHAPE[0], n_items=SHAPE[1], n_ratings=8_000, rank=5,
                                noise=0.5, key=jax.random.key(0))
    k1, k2 = jax.random.split(jax.random.key(0))
    train, rest = jf.train_test_split(*data, test_fraction=0.3, key=k1)
    val, test = jf.train_test_split(*rest, test_fraction=0.5, key=k2)
    mu = jnp.mean(train.values)
    centred = train.values - mu
    print(f"ratings {SHAPE[0]} x {SHAPE[1]}: {train.values.size} train, {val.values.size} "
          f"validation, {test.values.size} test")
    rows = []

    # SoftImpute: grid along the regularization path, then gradient descent.
    si_kw = dict(rank=30, tol=1e-6, max_iter=300, diff=DIFF)
    lam_max = float(jf.randomized_svd(jf.ObservedMatrix(train.rows, train.cols, centred, SHAPE),
                                      1, key=jax.random.key(1)).S[0])
    lams = lam_max * jnp.geomspace(1.0, 0.02, GRID)
    t0 = time.perf_counter()
    path = jf.soft_impute_path(train.rows, train.cols, centred, SHAPE, lams=lams, **si_kw)
    val_rmse = jnp.sqrt(jnp.mean((jf.predict(path, val.rows, val.cols) + mu - val.values) ** 2,
                                 axis=-1))
    i = int(jnp.argmin(val_rmse))
    best = jax.tree.map(lambda a: a[i], path)
    t_grid = time.perf_counter() - t0
    rows.append(("SoftImpute", "grid (path)", float(lams[i]),
                 rmse(jf.predict(best, val.rows, val.cols) + mu, val),
                 rmse(jf.predict(best, test.rows, test.cols) + mu, test), len(lams), t_grid))

    def si_fit(lam, warm, d):
        return jf.soft_impute(d[0].rows, d[0].cols, d[0].values - d[2], SHAPE, lam=lam,
                              warm_start=warm, **si_kw)

    def si_loss(res, d):
        return jnp.mean((jf.predict(res, d[1].rows, d[1].cols) + d[2] - d[1].values) ** 2)

    t0 = time.perf_counter()
    lam, res, solves = descend(si_fit, si_loss, lam_max / 4, 0.5, (train, val, mu))
    rows.append(("SoftImpute", "gradient (Adam)", lam,
                 rmse(jf.predict(res, val.rows, val.cols) + mu, val),
                 rmse(jf.predict(res, test.rows, test.cols) + mu, test), solves,
                 time.perf_counter() - t0))

    # Biased MF (ALS): a batch of fits over a grid, then gradient descent.
    mf_kw = dict(key=jax.random.key(2), max_iter=50, tol=1e-6, diff=DIFF)
    mf_lams = jnp.geomspace(0.005, 1.0, GRID)
    t0 = time.perf_counter()
    fits = jax.vmap(lambda lam: jf.biased_mf(*train, SHAPE, 5, lam=lam, **mf_kw))(mf_lams)
    val_rmse = jax.vmap(lambda r: jnp.sqrt(jnp.mean(
        (jf.predict(r, val.rows, val.cols) - val.values) ** 2)))(fits)
    i = int(jnp.argmin(val_rmse))
    best = jax.tree.map(lambda a: a[i], fits)
    rows.append(("biased MF", "grid (batched)", float(mf_lams[i]),
                 rmse(jf.predict(best, val.rows, val.cols), val),
                 rmse(jf.predict(best, test.rows, test.cols), test), len(mf_lams),
                 time.perf_counter() - t0))

    def mf_fit(lam, warm, d):
        return jf.biased_mf(*d[0], SHAPE, 5, lam=lam, warm_start=warm, **mf_kw)

    def mf_loss(res, d):
        return jnp.mean((jf.predict(res, d[1].rows, d[1].cols) - d[1].values) ** 2)

    t0 = time.perf_counter()
    lam, res, solves = descend(mf_fit, mf_loss, 0.3, 0.5, (train, val, mu))
    rows.append(("biased MF", "gradient (Adam)", lam,
                 rmse(jf.predict(res, val.rows, val.cols), val),
                 rmse(jf.predict(res, test.rows, test.cols), test), solves,
                 time.perf_counter() - t0))

    print(f"{'model':<11} {'search':<16} {'lam':>8} {'val RMSE':>9} {'test RMSE':>9} "
          f"{'solves':>6} {'seconds':>8}")
    for model, how, lam, v, t, n, s in rows:
        print(f"{model:<11} {how:<16} {lam:8.4g} {v:9.4f} {t:9.4f} {n:6d} {s:8.1f}")
    for a, b in ((rows[0], rows[1]), (rows[2], rows[3])):
        print(f"{a[0]}: gradient / grid validation RMSE = {b[3] / a[3]:.4f}, "
              f"test RMSE = {b[4] / a[4]:.4f}, solves {b[5]} vs {a[5]}")


if __name__ == "__main__":
    main()
