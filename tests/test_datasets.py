"""Tests of jaxfact.datasets: the loaders read real data shipped by installed packages."""

import numpy as np
import pytest

from jaxfact import datasets


def test_load_digits():
    d = datasets.load_digits()
    assert d.images.shape == (1797, 64) and d.images.dtype == np.float32
    assert d.labels.shape == (1797,) and d.labels.dtype == np.int32
    assert d.images.min() == 0 and d.images.max() == 16
    np.testing.assert_array_equal(np.unique(d.labels), np.arange(10))


@pytest.mark.parametrize("loader,n,top", [(datasets.load_wordsim353, 353, 10.0),
                                          (datasets.load_simlex999, 999, 10.0)])
def test_similarity_pairs(loader, n, top):
    pairs = loader()
    assert len(pairs.word1) == len(pairs.word2) == pairs.score.shape[0] == n
    assert 0 <= pairs.score.min() and pairs.score.max() <= top
    assert all(w == w.lower() and w for w in pairs.word1 + pairs.word2)


def test_wordsim353_known_pair():
    pairs = datasets.load_wordsim353()
    i = [(a, b) for a, b in zip(pairs.word1, pairs.word2)].index(("tiger", "cat"))
    assert pairs.score[i] == pytest.approx(7.35)


def test_load_analogies():
    sections = datasets.load_analogies()
    assert sum(len(q) for q in sections.values()) == 19544
    assert ("athens", "greece", "baghdad", "iraq") in sections["capital-common-countries"]


def test_load_lee_corpus_and_tokenize():
    docs = datasets.load_lee_corpus()
    assert len(docs) == 300
    n = sum(map(len, docs))
    assert 50_000 < n < 70_000
    assert datasets.tokenize("Don't STOP, 3 times!") == ["don't", "stop", "times"]
