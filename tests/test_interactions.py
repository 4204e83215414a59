"""Tests for jaxfact.interactions: held-out splits and the synthetic ratings generator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from jaxfact import Ratings, synthetic_ratings, train_test_split


def _small(seed=10, m=30, n=20, density=0.4):
    rng = np.random.default_rng(seed)
    r, c = np.nonzero(rng.random((m, n)) < density)
    return r.astype(np.int32), c.astype(np.int32), rng.normal(3.0, 1.0, r.size)


def test_train_test_split_partitions():
    r, c, v = _small()
    train, test = train_test_split(r, c, v.astype(np.float32), test_fraction=0.25,
                                   key=jax.random.key(0))
    assert isinstance(train, Ratings) and isinstance(test, Ratings)
    assert test.rows.shape[0] == round(0.25 * r.size)
    both = sorted(zip(np.r_[train.rows, test.rows].tolist(), np.r_[train.cols, test.cols].tolist()))
    assert both == sorted(zip(r.tolist(), c.tolist()))


def test_synthetic_ratings_shape_and_scale():
    d = synthetic_ratings(n_users=200, n_items=100, n_ratings=3000, rank=5, key=jax.random.key(0))
    assert d.rows.shape == (3000,) and d.values.dtype == np.float32
    assert len(set(zip(d.rows.tolist(), d.cols.tolist()))) == 3000
    assert set(np.unique(d.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_synthetic_ratings_key_and_deprecated_seed():
    kw = dict(n_users=60, n_items=40, n_ratings=500, rank=3)
    a = synthetic_ratings(key=jax.random.key(7), **kw)
    # A threefry key(s) seeds NumPy with s: the same data as the former seed=s.
    with pytest.warns(DeprecationWarning, match=r"synthetic_ratings: `seed` is renamed `key`"):
        b = synthetic_ratings(seed=7, **kw)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = synthetic_ratings(key=jax.random.PRNGKey(7), **kw)  # a legacy uint32[2] key
    np.testing.assert_array_equal(c.values, a.values)
    d = synthetic_ratings(key=jax.random.key(8), **kw)
    assert not np.array_equal(d.rows, a.rows)
    with pytest.raises(ValueError, match=r"synthetic_ratings: `key` is required"):
        synthetic_ratings(**kw)
    with pytest.raises(TypeError, match=r"synthetic_ratings: give `key` only"):
        synthetic_ratings(key=jax.random.key(7), seed=7, **kw)
    with pytest.raises(TypeError, match=r"synthetic_ratings: `key` must be concrete"):
        jax.jit(lambda k: synthetic_ratings(key=k, **kw).values)(jax.random.key(0))


def test_errors():
    r, c, v = _small(seed=11)
    v = v.astype(np.float32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"train_test_split: `test_fraction` must be a finite"):
        train_test_split(r, c, v, test_fraction=1.0, key=key)
    with pytest.raises(ValueError, match=r"train_test_split: `values` must be finite; got 1 NaN"):
        train_test_split(r, c, np.r_[v[:-1], np.nan].astype(np.float32), test_fraction=0.5,
                         key=key)
    with pytest.raises(ValueError, match=r"train_test_split: `rows` must be non-negative"):
        train_test_split(np.r_[r[:-1], -1].astype(np.int32), c, v, test_fraction=0.5, key=key)
    with pytest.raises(ValueError, match=r"train_test_split: `rows`, `cols` and `values` must"):
        train_test_split(r[:-1], c, v, test_fraction=0.5, key=key)
    with pytest.raises(ValueError, match=r"train_test_split: `key` is required"):
        train_test_split(r, c, v, test_fraction=0.5, key=None)


def test_checks_true_stages_value_checks_under_jit():
    r, c, v = _small(seed=12)
    v = v.astype(np.float32)
    f = checkify.checkify(jax.jit(lambda v: train_test_split(
        r, c, v, test_fraction=0.2, key=jax.random.key(0), checks=True)[1].values))
    assert f(v)[0].get() is None
    bad = v.copy()
    bad[4] = np.inf
    with pytest.raises(Exception, match=r"train_test_split: `values` must be finite"):
        f(bad)[0].throw()
