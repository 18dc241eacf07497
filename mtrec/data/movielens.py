"""Fetch and parse the real MovieLens-100K in either of its two published layouts.

Sources, tried in order: the GroupLens archive, then the copy shipped inside the PyPI wheel
``recbole==1.2.1`` (fetched with ``pip download --no-deps``; RecBole itself is never
installed). A local directory in the GroupLens layout (u.data, u.user, u.item) or the
RecBole atomic layout (ml-100k.inter/.user/.item) is accepted as well.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd

from mtrec import names as F
from mtrec.data import source as S
from mtrec.errors import DataError
from mtrec.files import output_folder

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/"
RECBOLE_FILES = tuple(S.MOVIELENS_FILES[S.RECBOLE].values())
GROUPLENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
EXPECTED_COUNTS = {"ratings": 100_000, "users": 943, "items": 1_682}

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MovieLensTables:
    """The three MovieLens tables in canonical column names.

    ratings: user_id, item_id, rating, timestamp (original u.data order).
    users: user_id, age, gender, occupation, zip_prefix.
    items: item_id, title, year (NaN when unknown), genres (joined by GENRE_SEPARATOR).
    """

    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame


def default_cache_dir() -> Path:
    """Where fetched data is cached: $MTREC_CACHE_DIR, else the XDG cache directory."""
    if os.environ.get("MTREC_CACHE_DIR"):
        return Path(os.environ["MTREC_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(xdg) / "mtrec"


def fetch(cache_dir: Path | None = None, timeout_s: float = 20.0) -> Path:
    """Return a directory holding MovieLens-100K, downloading it once into the cache."""
    cache_dir = Path(cache_dir or default_cache_dir())
    for cached in (cache_dir / "ml-100k", cache_dir / "ml-100k-recbole"):
        if S.detect_layout(cached):
            log.info("MovieLens-100K: using cached copy in %s", cached)
            return cached
    output_folder(cache_dir)
    try:
        return _fetch_grouplens(cache_dir, timeout_s)
    except OSError as err:  # URLError, timeouts and DNS failures are all OSErrors.
        log.warning(
            "GroupLens archive unreachable (%s); falling back to %s", err, RECBOLE_REQUIREMENT
        )
    return _fetch_recbole(cache_dir)


def _fetch_grouplens(cache_dir: Path, timeout_s: float) -> Path:
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout_s) as response:
        payload = response.read()
    target = cache_dir / "ml-100k"
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            archive.extractall(tmp)
        shutil.move(os.path.join(tmp, "ml-100k"), target)
    log.info("MovieLens-100K: fetched from GroupLens into %s", target)
    return target


def _fetch_recbole(cache_dir: Path) -> Path:
    target = cache_dir / "ml-100k-recbole"
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            RECBOLE_REQUIREMENT,
            "-d",
            tmp,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if result.returncode != 0 or not wheels:
            raise DataError(
                "could not fetch MovieLens-100K: GroupLens is unreachable and "
                f"'pip download {RECBOLE_REQUIREMENT}' failed: {result.stderr.strip()[-500:]}"
            )
        staging = Path(tmp) / "ml-100k"
        staging.mkdir()
        with zipfile.ZipFile(wheels[0]) as archive:
            for name in RECBOLE_FILES:
                (staging / name).write_bytes(archive.read(RECBOLE_PREFIX + name))
        shutil.move(str(staging), target)  # A complete directory appears in one step.
    log.info("MovieLens-100K: extracted from the %s wheel into %s", RECBOLE_REQUIREMENT, target)
    return target


def load(directory: Path) -> MovieLensTables:
    """Parse a MovieLens-100K directory in either layout into canonical tables."""
    directory = Path(directory)
    layout = S.detect_layout(directory)
    if layout == S.GROUPLENS:
        tables = _load_grouplens(directory)
    elif layout == S.RECBOLE:
        tables = _load_recbole(directory)
    else:
        raise S.not_movielens(directory)
    counts = {
        "ratings": len(tables.ratings),
        "users": len(tables.users),
        "items": len(tables.items),
    }
    if counts != EXPECTED_COUNTS:
        log.warning(
            "%s: counts %s differ from MovieLens-100K's %s", directory, counts, EXPECTED_COUNTS
        )
    return tables


def _zip_prefix(zip_codes: pd.Series) -> pd.Series:
    return zip_codes.astype(str).str.strip().str.upper().str[:3]


def _load_grouplens(directory: Path) -> MovieLensTables:
    ratings = pd.read_csv(
        directory / "u.data",
        sep="\t",
        header=None,
        names=[F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP],
    )
    users = pd.read_csv(
        directory / "u.user",
        sep="|",
        header=None,
        dtype={4: str},
        names=[F.USER_ID, F.AGE, F.GENDER, F.OCCUPATION, "zip_code"],
    )
    item_cols = [F.ITEM_ID, "raw_title", "release_date", "video_date", "url", *GROUPLENS_GENRES]
    items = pd.read_csv(
        directory / "u.item", sep="|", header=None, names=item_cols, encoding="latin-1"
    )
    flags = items[list(GROUPLENS_GENRES)].to_numpy().astype(bool)
    genres = [
        F.GENRE_SEPARATOR.join(g for g, on in zip(GROUPLENS_GENRES, row, strict=False) if on)
        for row in flags
    ]
    year = pd.to_numeric(items["release_date"].astype(str).str[-4:], errors="coerce")
    title = items["raw_title"].astype(str).str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)
    return MovieLensTables(
        ratings=ratings,
        users=_finish_users(users),
        items=pd.DataFrame(
            {F.ITEM_ID: items[F.ITEM_ID], F.TITLE: title, F.YEAR: year, F.GENRES: genres}
        ),
    )


def _load_recbole(directory: Path) -> MovieLensTables:
    def read(name: str) -> pd.DataFrame:
        frame = pd.read_csv(directory / name, sep="\t", dtype=str, keep_default_na=False)
        frame.columns = [c.split(":")[0] for c in frame.columns]  # "user_id:token" -> "user_id"
        return frame

    inter = read("ml-100k.inter")
    ratings = pd.DataFrame(
        {
            F.USER_ID: inter["user_id"].astype(int),
            F.ITEM_ID: inter["item_id"].astype(int),
            F.RATING: inter["rating"].astype(float),
            F.TIMESTAMP: inter["timestamp"].astype(float).astype(int),
        }
    )
    users = read("ml-100k.user").astype({"user_id": int, "age": int})
    items = read("ml-100k.item")
    genres = [F.GENRE_SEPARATOR.join(g.split()) for g in items["class"]]
    return MovieLensTables(
        ratings=ratings,
        users=_finish_users(users),
        items=pd.DataFrame(
            {
                F.ITEM_ID: items["item_id"].astype(int),
                F.TITLE: items["movie_title"],
                F.YEAR: pd.to_numeric(items["release_year"], errors="coerce"),
                F.GENRES: genres,
            }
        ),
    )


def _finish_users(users: pd.DataFrame) -> pd.DataFrame:
    out = users[[F.USER_ID, F.AGE, F.GENDER, F.OCCUPATION]].copy()
    out[F.ZIP_PREFIX] = _zip_prefix(users["zip_code"])
    return out
