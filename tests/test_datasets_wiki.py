"""Test of jaxfact.datasets.load_wikipedia_sample (gensim's shortened Wikipedia dump)."""

import pytest

from jaxfact import datasets

pytest.importorskip("gensim")


def test_load_wikipedia_sample():
    docs = datasets.load_wikipedia_sample()
    n = sum(map(len, docs))
    assert 100 <= len(docs) <= 206 and 400_000 <= n <= 550_000
    assert all(len(d) >= 50 for d in docs)
    text = " ".join(docs[0][:2000])
    assert "{{" not in text and "[[" not in text and "&lt;" not in text
    assert all(t == t.lower() and t.replace("'", "").isalpha() for d in docs for t in d[:100])
    assert "anarchism" in {t for d in docs for t in d}  # the dump starts with that article
