"""Tests of jaxfact.datasets: the loaders read real data shipped by installed packages, and
MovieLens through its cache, download and checksum."""

import hashlib
import re
import zipfile

import numpy as np
import pytest

from jaxfact import _movielens
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


# ------------------------------------------------------------------------------------------------
# MovieLens: parsers on small files in each format, the cache, the download and its checksum

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n196\t5\t5\t1\n"
U_ITEM = ("5|Copycat (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|1|0|1|0|0|0|0|0|0|0|1|0|0\n"
          "242|Kolya (1996)|24-Jan-1997||http://y|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
          "302|Misérables, Les (1995)|01-Jan-1995||http://z|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n")
RATINGS_DAT = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
MOVIES_DAT = ("661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
              "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
              "3952::Contender, The (2000)::Drama|Thriller\n")
INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
        "267\tunkonwn\tunkonwn\tunknown\n")


def _zip(path, folder, files, encoding="latin-1"):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(f"{folder}/{name}", text.encode(encoding))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def movielens_spec(monkeypatch):
    """Points a variant at a test zip: returns set(variant, url, sha256). recbole's copy is hidden
    so that the cache and download paths are the ones exercised."""
    monkeypatch.setattr(_movielens, "recbole_ml100k", lambda: None)

    def point(variant, url, sha):
        spec = _movielens.VARIANTS[variant]
        monkeypatch.setitem(_movielens.VARIANTS, variant, spec._replace(url=url, sha256=sha))
    return point


def test_movielens_100k_from_cache(tmp_path, movielens_spec):
    sha = _zip(tmp_path / "ml-100k.zip", "ml-100k", {"u.data": U_DATA, "u.item": U_ITEM})
    movielens_spec("100k", "file:///nowhere", sha)
    ml = datasets.load_movielens("100k", data_home=tmp_path)
    np.testing.assert_array_equal(ml.user_ids, [22, 186, 196])
    np.testing.assert_array_equal(ml.item_ids, [5, 242, 302])
    np.testing.assert_array_equal(ml.users, [2, 1, 0, 2])
    np.testing.assert_array_equal(ml.items, [1, 2, 1, 0])
    np.testing.assert_array_equal(ml.ratings, [3, 3, 1, 5])
    np.testing.assert_array_equal(ml.timestamps, [881250949, 891717742, 878887116, 1])
    assert ml.users.dtype == ml.items.dtype == np.int32 and ml.ratings.dtype == np.float32
    assert ml.timestamps.dtype == np.int64 and ml.shape == (3, 3)
    assert ml.titles == ["Copycat (1995)", "Kolya (1996)", "Misérables, Les (1995)"]
    assert ml.genres == [("Crime", "Drama", "Thriller"), ("Comedy",), ("unknown",)]
    assert ml.source == str(tmp_path / "ml-100k.zip")


def test_movielens_1m_from_cache(tmp_path, movielens_spec):
    sha = _zip(tmp_path / "ml-1m.zip", "ml-1m", {"ratings.dat": RATINGS_DAT,
                                                 "movies.dat": MOVIES_DAT})
    movielens_spec("1m", "file:///nowhere", sha)
    ml = datasets.load_movielens("1m", data_home=tmp_path)
    np.testing.assert_array_equal(ml.item_ids, [661, 1193])   # 3952 has no rating: no index
    np.testing.assert_array_equal(ml.users, [0, 0, 1])
    np.testing.assert_array_equal(ml.items, [1, 0, 1])
    np.testing.assert_array_equal(ml.ratings, [5, 3, 4])
    assert ml.titles == ["James and the Giant Peach (1996)",
                         "One Flew Over the Cuckoo's Nest (1975)"]
    assert ml.genres == [("Animation", "Children's", "Musical"), ("Drama",)]


def test_movielens_recbole_format(tmp_path, monkeypatch):
    (tmp_path / "a.inter").write_text(INTER, encoding="utf8")
    (tmp_path / "a.item").write_text(ITEM, encoding="utf8")
    monkeypatch.setattr(_movielens, "recbole_ml100k",
                        lambda: (tmp_path / "a.inter", tmp_path / "a.item"))
    ml = datasets.load_movielens("100k", data_home=tmp_path / "empty")
    np.testing.assert_array_equal(ml.user_ids, [22, 186, 196])
    np.testing.assert_array_equal(ml.item_ids, [242, 302])
    np.testing.assert_array_equal(ml.users, [2, 1, 0])
    np.testing.assert_array_equal(ml.items, [0, 1, 0])
    np.testing.assert_array_equal(ml.ratings, [3, 3, 1])
    np.testing.assert_array_equal(ml.timestamps, [881250949, 891717742, 878887116])
    assert ml.titles == ["Kolya (1996)", "L.A. Confidential (1997)"]
    assert ml.genres == [("Comedy",), ("Crime", "Film-Noir", "Mystery", "Thriller")]
    assert ml.source == str(tmp_path / "a.inter")


def test_movielens_download_once_then_cache(tmp_path, movielens_spec):
    src = tmp_path / "publisher" / "ml-100k.zip"
    src.parent.mkdir()
    sha = _zip(src, "ml-100k", {"u.data": U_DATA, "u.item": U_ITEM})
    movielens_spec("100k", src.as_uri(), sha)
    home = tmp_path / "cache"
    ml = datasets.load_movielens("100k", data_home=home)
    assert (home / "ml-100k.zip").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in home.iterdir()) == ["ml-100k.zip"]   # no partial file left
    src.unlink()                      # the second load reads the cache, not the network
    again = datasets.load_movielens("100k", data_home=home)
    np.testing.assert_array_equal(again.ratings, ml.ratings)


def test_movielens_checksum_mismatch(tmp_path, movielens_spec):
    src = tmp_path / "ml-100k.zip"
    _zip(src, "ml-100k", {"u.data": U_DATA, "u.item": U_ITEM})
    movielens_spec("100k", src.as_uri(), "0" * 64)
    home = tmp_path / "cache"
    with pytest.raises(OSError, match="load_movielens: .*SHA-256 .* expected 0{64}"):
        datasets.load_movielens("100k", data_home=home)
    assert list(home.iterdir()) == []                  # nothing kept from a bad download
    # A file put in the cache by hand is checked too.
    (home / "ml-100k.zip").write_bytes(src.read_bytes())
    with pytest.raises(OSError, match="delete it and load again"):
        datasets.load_movielens("100k", data_home=home)


def test_movielens_offline_error_says_where(tmp_path, movielens_spec):
    movielens_spec("1m", (tmp_path / "missing.zip").as_uri(), "0" * 64)
    where = str(tmp_path / "cache" / "ml-1m.zip")
    with pytest.raises(OSError, match="could not download .*put it at " + re.escape(where)):
        datasets.load_movielens("1m", data_home=tmp_path / "cache")
    with pytest.raises(OSError, match="download_if_missing is False.*put it at"):
        datasets.load_movielens("1m", data_home=tmp_path / "cache", download_if_missing=False)


def test_movielens_bad_arguments(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"load_movielens: `variant` must be one of \['100k', "
                                         r"'1m'\]; got '10m'"):
        datasets.load_movielens("10m")
    with pytest.raises(TypeError, match="load_movielens: `data_home` must be a path"):
        datasets.load_movielens("100k", data_home=3)
    monkeypatch.setenv("JAXFACT_DATA", str(tmp_path))
    assert datasets.get_data_home() == tmp_path
    assert datasets.get_data_home(tmp_path / "x") == tmp_path / "x"


@pytest.mark.skipif(_movielens.recbole_ml100k() is None,
                    reason="needs the ml-100k copy in recbole: pip install --no-deps recbole")
def test_movielens_100k_real(tmp_path):
    ml = datasets.load_movielens("100k", data_home=tmp_path)   # empty cache: recbole's copy
    assert len(ml.ratings) == 100_000 and ml.shape == (943, 1682)
    np.testing.assert_array_equal(ml.user_ids, np.arange(1, 944))
    np.testing.assert_array_equal(ml.item_ids, np.arange(1, 1683))
    np.testing.assert_array_equal(np.bincount(ml.ratings.astype(int))[1:],
                                  [6110, 11370, 27145, 34174, 21201])   # stars 1..5
    assert (ml.users[0], ml.items[0], ml.ratings[0], ml.timestamps[0]) == (195, 241, 3, 881250949)
    assert ml.titles[0] == "Toy Story (1995)"
    assert ml.genres[0] == ("Animation", "Children's", "Comedy")
    assert min(np.bincount(ml.users)) >= 20     # every user rated at least 20 movies
