"""User and item embeddings from interactions: biased MF on ratings, implicit ALS on counts.

Run: ``python examples/recommend.py`` (about half a minute on a laptop CPU).

1. Ratings: a synthetic 1-5 star matrix (:func:`jaxfact.synthetic_ratings`), 80/20 split; held-out
   RMSE of the global mean, and of biased MF fitted by ALS and by SGD (Koren et al. 2009).
2. Implicit feedback: play counts in which users favour a genre; implicit ALS (Hu et al. 2008), precision@10 and NDCG@10 of each user's held-out items, against a
   popularity ranking.
3. The item embeddings: nearest items by cosine similarity, and whether they share the genre.
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxfact as jf

key = jax.random.key(0)
n_users, n_items = 1000, 600
data = jf.synthetic_ratings(n_users=n_users, n_items=n_items, n_ratings=60_000, rank=10, seed=0)
train, test = jf.train_test_split(*data, test_fraction=0.2, key=key)
shape = (n_users, n_items)

# --- 1. explicit ratings ---------------------------------------------------------------------
print(f"{n_users} users x {n_items} items, {len(data.rows)} ratings; held-out RMSE:")
mean_pred = jnp.full(test.values.shape, jnp.mean(train.values))
print(f"  global mean             {float(jf.rmse(mean_pred, test.values)):.4f}")
als = jf.biased_mf(*train, shape, 10, lam=0.1, solver="als", max_iter=15, key=key)
print(f"  biased MF, ALS (k=10)   "
      f"{float(jf.rmse(jf.predict_ratings(als, test.rows, test.cols, clip=(1, 5)), test.values)):.4f}"
      f"   ({int(als.n_iter)} iterations)")
sgd = jf.biased_mf(*train, shape, 10, solver="sgd", max_iter=20, key=key)  # Surprise's defaults
print(f"  biased MF, SGD (k=10)   "
      f"{float(jf.rmse(jf.predict_ratings(sgd, test.rows, test.cols, clip=(1, 5)), test.values)):.4f}"
      f"   (20 epochs)")

# --- 2. implicit feedback ----------------------------------------------------------------------
# Play counts with taste: items belong to 8 genres, each user plays mostly (80%) items of one
# favourite genre, popular items more often; counts are geometric.
rng = np.random.default_rng(1)
n_genres = 8
genre = rng.integers(0, n_genres, n_items)
fav = rng.integers(0, n_genres, n_users)
pop = 1.0 / np.arange(1, n_items + 1) ** 0.7
pairs = set()
for u in range(n_users):
    in_genre = np.flatnonzero(genre == fav[u])
    for _ in range(30):
        pool = in_genre if rng.random() < 0.8 else np.arange(n_items)
        pairs.add((u, int(rng.choice(pool, p=pop[pool] / pop[pool].sum()))))
u_idx, i_idx = np.array(sorted(pairs), dtype=np.int32).T
plays = rng.geometric(0.3, u_idx.size).astype(np.float32)
train, test = jf.train_test_split(u_idx, i_idx, plays, test_fraction=0.2, key=key)
print(f"implicit feedback: {u_idx.size} (user, item, plays) triples, {n_genres} genres")
imp = jf.implicit_als(*train, shape, 16, alpha=40.0, lam=0.1, max_iter=15, key=key)
X, Y = imp.user_factors, imp.item_factors
popularity = jnp.zeros(n_items).at[train.cols].add(1.0)
pop_X, pop_Y = jnp.ones((n_users, 1)), popularity[:, None]  # every user gets the same ranking
for name, (U, V) in {"implicit ALS (k=16)": (X, Y), "most popular": (pop_X, pop_Y)}.items():
    p = jf.precision_at_k(U, V, test, k=10, exclude=train)
    nd = jf.ndcg_at_k(U, V, test, k=10, exclude=train)
    print(f"  {name:22s}  precision@10 {float(p):.4f}   NDCG@10 {float(nd):.4f}")

# --- 3. nearest items by cosine of item embeddings --------------------------------------------
unit = Y / jnp.maximum(jnp.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
cos = unit @ unit.T
print("nearest items by cosine of the implicit-ALS item embeddings:")
for item in np.asarray(jnp.argsort(-popularity)[jnp.array([40, 120, 240])]):  # mid-popular
    near = np.asarray(jnp.argsort(-cos[item])[1:6])
    sims = ", ".join(f"{j} ({float(cos[item, j]):.2f})" for j in near)
    same = int(np.sum(genre[near] == genre[item]))
    print(f"  item {item:3d} (genre {genre[item]}): {sims}; {same}/5 of the same genre")
