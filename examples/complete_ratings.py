"""Complete a ratings matrix with SoftImpute along a path of lambdas.

MovieLens-100k (943 users x 1682 movies, 6% observed; :func:`jaxfact.datasets.load_movielens`)
when it can be had, otherwise a synthetic 2000 x 1000 matrix of rank-8 "tastes" plus noise with
15% of its entries observed; the first line printed says which. The observed ratings are split into
training and held-out sets, centred by the training mean; ``soft_impute_path`` fits the whole
lambda path (warm starts, one compilation) and the held-out RMSE picks lambda.

Run: ``python examples/complete_ratings.py`` (well under a minute on a laptop CPU).
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxfact
from jaxfact.datasets import load_movielens

rng = np.random.default_rng(0)
try:
    ml = load_movielens("100k")
    users, items, ratings, shape = ml.users, ml.items, ml.ratings, ml.shape
    print(f"data: MovieLens-100k from {ml.source}")
    noise_note = "ratings are integers 1-5"
except OSError as e:   # offline, no cached or installed copy
    n_users, n_items, rank, frac = 2000, 1000, 8, 0.15
    tastes = rng.standard_normal((n_users, rank)) @ rng.standard_normal((rank, n_items)) / np.sqrt(rank)
    flat = rng.choice(n_users * n_items, int(frac * n_users * n_items), replace=False)
    users, items = (flat // n_items).astype(np.int32), (flat % n_items).astype(np.int32)
    ratings = (tastes[users, items] + 0.3 * rng.standard_normal(flat.size)).astype(np.float32)
    shape = (n_users, n_items)
    print(f"data: synthetic rank-8 matrix (MovieLens-100k unavailable: {str(e)[:80]}...)")
    noise_note = "noise level 0.3"

test = rng.random(len(ratings)) < 0.1
train = ~test
mean = float(np.mean(ratings[train]))
centred = (np.asarray(ratings, np.float32) - mean)
print(f"{shape[0]} x {shape[1]}, {int(train.sum())} training and {int(test.sum())} held-out ratings")

# The smallest lambda that gives Z = 0 is the top singular value of the observed matrix.
observed = jaxfact.ObservedMatrix(jnp.asarray(users[train]), jnp.asarray(items[train]),
                                  jnp.asarray(centred[train]), shape)
lam_max = float(jaxfact.randomized_svd(observed, 1, key=jax.random.key(0)).S[0])
lams = lam_max * jnp.geomspace(0.5, 0.01, 8)

path = jaxfact.soft_impute_path(users[train], items[train], centred[train], shape, lams=lams,
                                rank=24, tol=1e-5, max_iter=200)
pred = mean + np.asarray(jaxfact.predict(path, users[test], items[test]))   # (len(lams), n_test)
rmse = np.sqrt(np.mean((pred - ratings[test]) ** 2, axis=1))

print(f"{'lambda':>10} {'rank':>5} {'iters':>6} {'train rel. resid':>17} {'held-out RMSE':>14}")
for i, lam in enumerate(np.asarray(lams)):
    print(f"{lam:10.2f} {int(jnp.sum(path.S[i] > 0)):5d} {int(path.n_iter[i]):6d} "
          f"{float(path.residual[i]):17.4f} {rmse[i]:14.4f}")
best = int(np.argmin(rmse))
print(f"best lambda {float(lams[best]):.2f}: held-out RMSE {rmse[best]:.4f} "
      f"({noise_note}; predicting the training mean gives "
      f"{np.sqrt(np.mean((ratings[test] - mean) ** 2)):.4f})")
