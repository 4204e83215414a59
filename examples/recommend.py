"""User and item embeddings from interactions: biased MF on ratings, implicit ALS on positives.

Run: ``python examples/recommend.py`` (under a minute on a laptop CPU).

The data are MovieLens-100k (:func:`jaxfact.datasets.load_movielens`: GroupLens' zip in the
cache, the copy that ships in ``recbole``, or a download) when they can be had, and otherwise a
synthetic MovieLens-shaped matrix (:func:`jaxfact.synthetic_ratings`); the first line printed
says which.

1. Ratings, 80/20 split: held-out RMSE of the global mean and of biased MF fitted by ALS and by
   SGD (Koren et al. 2009).
2. Implicit feedback, ratings >= 4 as positives: implicit ALS (Hu et al. 2008), precision@10 and
   NDCG@10 of each user's held-out positives, against a most-popular ranking.
3. The item embeddings: nearest items by cosine similarity (with titles and genres on MovieLens).
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxfact as jf
from jaxfact.datasets import load_movielens


def load():
    """(users, items, ratings, shape, titles, genres, description)."""
    try:
        ml = load_movielens("100k")
    except OSError as e:   # offline, no cached or installed copy
        n_users, n_items = 943, 1682
        data = jf.synthetic_ratings(n_users=n_users, n_items=n_items, n_ratings=100_000,
                                    key=jax.random.key(0))
        return (*data, (n_users, n_items), None, None,
                f"synthetic ratings (MovieLens-100k unavailable: {str(e).splitlines()[0][:80]}...)")
    return (ml.users, ml.items, ml.ratings, ml.shape, ml.titles, ml.genres,
            f"MovieLens-100k from {ml.source}")


users, items, ratings, shape, titles, genres, what = load()
print(f"data: {what}")
key = jax.random.key(0)
train, test = jf.train_test_split(users, items, ratings, test_fraction=0.2, key=key)

# --- 1. explicit ratings ---------------------------------------------------------------------
print(f"{shape[0]} users x {shape[1]} items, {len(ratings)} ratings; held-out RMSE:")
mean_pred = jnp.full(test.values.shape, jnp.mean(train.values))
print(f"  global mean             {float(jf.rmse(mean_pred, test.values)):.4f}")
als = jf.biased_mf(*train, shape, 20, lam=0.1, solver="als", max_iter=15, key=key)
print(f"  biased MF, ALS (k=20)   "
      f"{float(jf.rmse(jf.predict(als, test.rows, test.cols, clip=(1, 5)), test.values)):.4f}"
      f"   ({int(als.n_iter)} iterations)")
sgd = jf.biased_mf(*train, shape, 20, solver="sgd", max_iter=20, key=key)  # Surprise's defaults
print(f"  biased MF, SGD (k=20)   "
      f"{float(jf.rmse(jf.predict(sgd, test.rows, test.cols, clip=(1, 5)), test.values)):.4f}"
      f"   (20 epochs)")

# --- 2. implicit feedback ----------------------------------------------------------------------
pos = np.asarray(ratings) >= 4
ones = np.ones(int(pos.sum()), np.float32)
itrain, itest = jf.train_test_split(np.asarray(users)[pos], np.asarray(items)[pos], ones,
                                    test_fraction=0.2, key=key)
print(f"implicit feedback: {int(pos.sum())} positives (ratings >= 4), 80/20 split")
imp = jf.implicit_als(*itrain, shape, 32, alpha=5.0, lam=0.1, max_iter=15, key=key)
X, Y = imp.user_factors, imp.item_factors
popularity = jnp.zeros(shape[1]).at[itrain.cols].add(1.0)
pop_X, pop_Y = jnp.ones((shape[0], 1)), popularity[:, None]  # every user gets the same ranking
for name, (U, V) in {"implicit ALS (k=32)": (X, Y), "most popular": (pop_X, pop_Y)}.items():
    p = jf.precision_at_k(U, V, itest, k=10, exclude=itrain)
    nd = jf.ndcg_at_k(U, V, itest, k=10, exclude=itrain)
    print(f"  {name:22s}  precision@10 {float(p):.4f}   NDCG@10 {float(nd):.4f}")
if titles is None:
    print("  (synthetic data: which items a user rates depends on popularity only, not on taste,"
          " so the most-popular list is hard to beat here; on MovieLens ALS wins)")

# --- 3. nearest items by cosine of item embeddings --------------------------------------------
unit = Y / jnp.maximum(jnp.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
cos = unit @ unit.T
print("nearest items by cosine of the implicit-ALS item embeddings:")
for item in np.asarray(jnp.argsort(-popularity)[jnp.array([0, 10, 40])]):
    near = np.asarray(jnp.argsort(-cos[item])[1:6])
    if titles is None:
        sims = ", ".join(f"{j} ({float(cos[item, j]):.2f})" for j in near)
        print(f"  item {item}: {sims}")
        continue
    shared = sum(bool(set(genres[j]) & set(genres[item])) for j in near)
    print(f"  {titles[item]} [{', '.join(genres[item])}]:")
    print("     " + "; ".join(f"{titles[j]} ({float(cos[item, j]):.2f})" for j in near)
          + f"  -- {shared}/5 share a genre")
