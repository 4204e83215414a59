"""Loaders for the small real data sets that examples, tests and reproductions use.

Nothing is downloaded: every data set ships inside an installed package, and a loader whose package
is missing raises ``ImportError`` naming the extra that installs it.

* :func:`load_digits`: scikit-learn's 1797 8x8 handwritten digits (``pip install jaxfact[repro]``
  or any scikit-learn).
* :func:`load_wordsim353`, :func:`load_simlex999`, :func:`load_analogies`,
  :func:`load_lee_corpus`: word-similarity pairs, analogy questions and a 300-document news corpus
  from the gensim wheel's test data (read in place; gensim is LGPL-2.1).
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["Digits", "SimilarityPairs", "load_digits", "load_wordsim353", "load_simlex999",
           "load_analogies", "load_lee_corpus", "tokenize"]


class Digits(NamedTuple):
    images: np.ndarray  # (1797, 64) float32, pixel intensities 0..16
    labels: np.ndarray  # (1797,) int32, 0..9


class SimilarityPairs(NamedTuple):
    word1: list[str]
    word2: list[str]
    score: np.ndarray  # (n,) float64, human similarity judgements


def load_digits() -> Digits:
    """scikit-learn's bundled digits: 1797 images of 8x8 pixels, 10 classes (UCI optdigits)."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as e:
        raise ImportError("load_digits needs scikit-learn, which ships the data: "
                          "`pip install 'jaxfact[repro]'` (or `pip install scikit-learn`)") from e
    d = _load()
    return Digits(d.data.astype(np.float32), d.target.astype(np.int32))


def _gensim_test_data() -> Path:
    try:
        root = importlib.resources.files("gensim")
    except ModuleNotFoundError as e:
        raise ImportError("this loader reads data that ships in the gensim wheel: "
                          "`pip install 'jaxfact[repro]'` (or `pip install gensim`)") from e
    return Path(str(root)) / "test" / "test_data"


def _load_pairs(name: str) -> SimilarityPairs:
    w1, w2, score = [], [], []
    with open(_gensim_test_data() / name, encoding="utf8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            a, b, s = line.rstrip("\n").split("\t")[:3]
            w1.append(a.lower())
            w2.append(b.lower())
            score.append(float(s))
    return SimilarityPairs(w1, w2, np.asarray(score))


def load_wordsim353() -> SimilarityPairs:
    """WordSim353 (Finkelstein et al. 2002): 353 word pairs with mean human similarity 0..10."""
    return _load_pairs("wordsim353.tsv")


def load_simlex999() -> SimilarityPairs:
    """SimLex-999 (Hill, Reichart & Korhonen 2015): 999 pairs scored for similarity 0..10."""
    return _load_pairs("simlex999.txt")


def load_analogies() -> dict[str, list[tuple[str, str, str, str]]]:
    """Mikolov et al. (2013)'s 19 544 analogy questions ``a : b :: c : d``, by section name."""
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    current = None
    with open(_gensim_test_data() / "questions-words.txt", encoding="utf8") as f:
        for line in f:
            if line.startswith(":"):
                current = line[1:].strip()
                sections[current] = []
            elif line.strip() and current is not None:
                a, b, c, d = line.lower().split()
                sections[current].append((a, b, c, d))
    return sections


_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cases and splits on anything that is not a letter (keeping inner apostrophes)."""
    return _TOKEN.findall(text.lower())


def load_lee_corpus() -> list[list[str]]:
    """The Lee background corpus (Lee, Pincombe & Welsh 2005): 300 news documents (~60k tokens),
    one list of lower-cased tokens per document."""
    with open(_gensim_test_data() / "lee_background.cor", encoding="utf8") as f:
        return [tokenize(line) for line in f if line.strip()]
