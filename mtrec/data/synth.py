"""Realistic synthetic interaction logs in the bring-your-own contract (README, "Bring your own
data"), written as CSV shards ``part-00000-of-00004.csv`` that a Beam reader reads in parallel.
The scale benchmark and the tests use them at sizes MovieLens does not reach.

What makes them realistic:
- users and items are drawn by power laws (Zipf-Mandelbrot): a few heavy users and popular
  items, and a long tail of light users and rare items;
- each user keeps one age, gender, occupation and zip prefix, each item one title, year and
  genre list, across all its rows;
- rows are impressions in time order: ``click`` follows a relevance made of latent user and
  item factors, item quality, user bias, gender x genre, occupation x genre and age x year
  affinities (so ids and side features both carry signal); ``purchase`` happens on some
  clicks only, the more relevant the likelier; ``rating`` is given on some clicks and empty
  otherwise.

It streams: only the user and item tables live in memory (sized by users and items, not
rows), and rows are generated and written one chunk at a time. Every random draw of a row is a
hash of (seed, stream, row number), so the output depends on the seed only, never on the
chunk size.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mtrec import names as F
from mtrec.files import output_folder

# The columns written, in the order of the pipeline's examples (slice-only columns left out).
COLUMNS: tuple[str, ...] = (
    F.USER_ID,
    F.ITEM_ID,
    F.RATING,
    F.CLICK,
    F.PURCHASE,
    F.TIMESTAMP,
    *F.USER_FEATURES,
    *F.ITEM_FEATURES,
)
MANIFEST = "_synth.json"  # A leading underscore: file-pattern readers skip it.
SPANS_MANIFEST = "_spans.json"  # Beside the span folders, for continuous-training logs.
SHARD_PATTERN = re.compile(r"part-\d{5}-of-\d{5}\.csv")
# Span folders as TFX ExampleGen's {SPAN} spec reads them: any digits, zero-padding allowed.
SPAN_PATTERN = re.compile(r"span-(\d+)")
# What a span writer (here or mtrec.data.spans) puts in a span folder, and replaces.
SPAN_FILE_PATTERN = re.compile(r"part-\d{5}(-of-\d{5})?\.csv|_synth\.json")
DAY_S = 86_400
CHUNK_ROWS = 100_000
MAX_CHUNK_ROWS = 5_000_000
# Default table sizes grow with the rows, sub-linearly once capped.
ROWS_PER_USER, MIN_USERS, MAX_USERS = 50, 100, 1_000_000
ROWS_PER_ITEM, MIN_ITEMS, MAX_ITEMS = 200, 50, 200_000
START_TIMESTAMP = 1_600_000_000  # 2020-09-13.

# Genres and occupations with MovieLens-100K's names and roughly its mix.
GENRE_WEIGHTS: dict[str, int] = {
    "Action": 251,
    "Adventure": 135,
    "Animation": 42,
    "Children's": 122,
    "Comedy": 505,
    "Crime": 109,
    "Documentary": 50,
    "Drama": 725,
    "Fantasy": 22,
    "Film-Noir": 24,
    "Horror": 92,
    "Musical": 56,
    "Mystery": 61,
    "Romance": 247,
    "Sci-Fi": 101,
    "Thriller": 251,
    "War": 71,
    "Western": 27,
}
GENRES = tuple(GENRE_WEIGHTS)
OCCUPATION_WEIGHTS: dict[str, int] = {
    "administrator": 79,
    "artist": 28,
    "doctor": 7,
    "educator": 95,
    "engineer": 67,
    "entertainment": 18,
    "executive": 32,
    "healthcare": 16,
    "homemaker": 7,
    "lawyer": 12,
    "librarian": 51,
    "marketing": 26,
    "none": 9,
    "other": 105,
    "programmer": 66,
    "retired": 14,
    "salesman": 12,
    "scientist": 31,
    "student": 196,
    "technician": 27,
    "writer": 45,
}
OCCUPATIONS = tuple(OCCUPATION_WEIGHTS)
# Title words: an adjective, then a noun that often hints at the item's main genre, so title
# tokens carry some signal as real titles do.
ADJECTIVES = (
    "Silent Last Broken Golden Hidden Lost Dark Bright Final Wild Secret Little Long Burning "
    "Cold Crimson Endless First Forgotten Frozen Gentle Hollow Lonely Midnight Perfect Quiet "
    "Restless Savage Shattered Strange Sweet True Wicked Young Electric Distant Eternal"
).split()
NOUNS = "Road City River Night Summer Dream Story Game House World Heart Shadow Light".split()
GENRE_NOUNS: dict[str, tuple[str, ...]] = {
    "Action": ("Strike", "Fury", "Mission", "Target"),
    "Adventure": ("Quest", "Journey", "Island", "Treasure"),
    "Animation": ("Toon", "Kingdom", "Friends"),
    "Children's": ("Puppy", "Birthday", "Playground"),
    "Comedy": ("Wedding", "Vacation", "Roommates", "Party"),
    "Crime": ("Heist", "Gangster", "Detective", "Alibi"),
    "Documentary": ("Truth", "Planet", "Report"),
    "Drama": ("Family", "Letter", "Promise", "Season"),
    "Fantasy": ("Dragon", "Wizard", "Sword"),
    "Film-Noir": ("Dame", "Streets", "Fog"),
    "Horror": ("Curse", "Blood", "Haunting", "Scream"),
    "Musical": ("Song", "Melody", "Dance"),
    "Mystery": ("Riddle", "Clue", "Puzzle"),
    "Romance": ("Love", "Kiss", "Romance", "Valentine"),
    "Sci-Fi": ("Galaxy", "Robot", "Planet", "Star"),
    "Thriller": ("Conspiracy", "Witness", "Hostage"),
    "War": ("Battle", "Soldier", "Front"),
    "Western": ("Outlaw", "Frontier", "Saddle"),
}
LATENT_DIM = 8
FACTOR_SD = float(np.sqrt(0.8 / np.sqrt(LATENT_DIM)))  # Taste dot products of about 0.8 std.
GENDER_GENRE_SD = 0.8
OCCUPATION_GENRE_SD = 0.35
GENRE_TREND_SD = 0.6
# Logit offsets: about a quarter of impressions are clicked, a quarter of clicks purchased.
CLICK_BASE = -1.3
PURCHASE_BASE = -2.2
# Row streams: each random quantity of a row has its own stream of hashed draws.
_USER, _ITEM, _CLICK, _PURCHASE, _RATED, _NOISE_A, _NOISE_B = range(7)
_TABLES = 100  # The stream the user and item tables are drawn from.
_DRIFT = 101  # The stream of the second draw of tastes that spans drift toward.


def default_users(rows: int) -> int:
    """Users for ``rows`` rows: one per 50 rows, within [100, 1,000,000]."""
    return int(np.clip(rows // ROWS_PER_USER, MIN_USERS, MAX_USERS))


def default_items(rows: int) -> int:
    """Items for ``rows`` rows: one per 200 rows, within [50, 200,000]."""
    return int(np.clip(rows // ROWS_PER_ITEM, MIN_ITEMS, MAX_ITEMS))


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """What to generate. ``users``/``items`` default to sizes that grow with ``rows``;
    ``user_skew``/``item_skew`` are the power-law exponents of activity and popularity."""

    rows: int
    seed: int = 0
    shards: int = 4
    users: int | None = None
    items: int | None = None
    start: int = START_TIMESTAMP
    days: int = 365
    user_skew: float = 1.0
    item_skew: float = 1.2
    chunk_rows: int = CHUNK_ROWS

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(f"rows must be at least 1, got {self.rows}")
        if not 1 <= self.shards <= self.rows:
            raise ValueError(f"shards must be between 1 and rows ({self.rows}), got {self.shards}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("users", "items"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.days < 1 or self.start < 0:
            raise ValueError("days must be at least 1 and start >= 0")
        if not 1 <= self.chunk_rows <= MAX_CHUNK_ROWS:  # A chunk's CSV text stays under 2 GB.
            raise ValueError(f"chunk_rows must be between 1 and {MAX_CHUNK_ROWS:,}")
        if self.user_skew < 0 or self.item_skew < 0:
            raise ValueError("user_skew and item_skew must be >= 0")

    @property
    def n_users(self) -> int:
        return self.users if self.users is not None else default_users(self.rows)

    @property
    def n_items(self) -> int:
        return self.items if self.items is not None else default_items(self.rows)

    def shard_bounds(self) -> list[tuple[int, int]]:
        """Each shard's [first, end) rows: contiguous, so each file is a span of time."""
        cuts = [k * self.rows // self.shards for k in range(self.shards + 1)]
        return list(itertools.pairwise(cuts))


@dataclasses.dataclass(frozen=True)
class SynthLogs:
    """What ``write_logs`` wrote: the shard files and their row counts, in order."""

    files: tuple[Path, ...]
    rows_per_file: tuple[int, ...]
    users: int
    items: int

    @property
    def rows(self) -> int:
        return sum(self.rows_per_file)


@dataclasses.dataclass(frozen=True)
class Catalog:
    """The user and item tables, row i being id i + 1 (ids are not activity ranks). The
    hidden parts (factors, quality, affinities) decide the labels; tests read them too."""

    user_cdf: np.ndarray  # Cumulative activity, to draw users by inverse CDF.
    item_cdf: np.ndarray
    user_factors: np.ndarray  # (users, LATENT_DIM)
    item_factors: np.ndarray  # (items, LATENT_DIM)
    user_bias: np.ndarray
    item_quality: np.ndarray
    item_buyability: np.ndarray  # Purchase propensity beyond relevance (price, stock).
    user_gender: np.ndarray  # 0 = F, 1 = M.
    user_occupation: np.ndarray  # Index into OCCUPATIONS.
    user_age_z: np.ndarray
    item_year_z: np.ndarray
    item_genre_mix: np.ndarray  # (items, genres): the item's genres, rows summing to 1.
    gender_genre: np.ndarray  # (2, genres) affinity.
    occupation_genre: np.ndarray  # (occupations, genres) affinity.
    user_text: pa.Array  # "age,gender,occupation,zip_prefix" per user.
    item_text: pa.Array  # "genres,year,title" per item.
    center: float = 0.0  # The mean relevance of an impression, taken out of relevance().
    # Everyone's taste per genre, beyond gender and occupation: none at first; spans drift
    # toward one (a genre comes into fashion, another goes out).
    genre_trend: np.ndarray | None = None


def _power_law_cdf(n: int, skew: float, flat: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-Mandelbrot weights (rank + flat * n)^-skew, shuffled over the ids, cumulated.
    The offset flattens the head, and scales with n so the shape does not depend on size."""
    ranks = np.arange(1, n + 1, dtype=np.float64)
    weights = (ranks + flat * n) ** -skew
    cdf = np.cumsum(weights[rng.permutation(n)])
    return cdf / cdf[-1]


def _zip_prefixes(n: int, rng: np.random.Generator) -> np.ndarray:
    """US-style 3-digit prefixes, leading zeros kept, and about 3% Canadian-style 'T8H'."""
    digits = np.char.zfill(rng.integers(0, 1000, n).astype(str), 3)
    letters = np.array(list("ABCEGHJKLMNPRSTVXY"))
    canadian = np.char.add(
        np.char.add(rng.choice(letters, n), rng.integers(0, 10, n).astype(str)),
        rng.choice(letters, n),
    )
    return np.where(rng.random(n) < 0.03, canadian, digits)


def _item_genres(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each item's main genre and genre flags: the main one plus 0-2 more, by popularity."""
    weights = np.array(list(GENRE_WEIGHTS.values()), dtype=np.float64)
    weights /= weights.sum()
    main = rng.choice(len(GENRES), n, p=weights)
    # Extra genres without replacement, by the Gumbel top-k trick (vectorised).
    keys = np.log(weights) + rng.gumbel(size=(n, len(GENRES)))
    keys[np.arange(n), main] = -np.inf
    order = np.argsort(-keys, axis=1)
    extra = rng.choice(3, n, p=[0.45, 0.4, 0.15])
    flags = np.zeros((n, len(GENRES)), dtype=bool)
    flags[np.arange(n), main] = True
    for k in (0, 1):
        chosen = extra > k
        flags[np.flatnonzero(chosen), order[chosen, k]] = True
    return main, flags


def _genre_strings(flags: np.ndarray) -> np.ndarray:
    """Genre flags as 'Action|Comedy' strings, built once per distinct combination."""
    codes = flags.astype(np.int64) @ (1 << np.arange(flags.shape[1], dtype=np.int64))
    unique, inverse = np.unique(codes, return_inverse=True)
    names = [
        F.GENRE_SEPARATOR.join(g for j, g in enumerate(GENRES) if code >> j & 1) for code in unique
    ]
    return np.array(names, dtype=object)[inverse]


def _titles(main: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """'Adjective Noun' titles, the noun hinting at the main genre 60% of the time, and a
    sequel number on some."""
    n = len(main)
    adjectives = np.array(ADJECTIVES)[rng.integers(0, len(ADJECTIVES), n)]
    vocabulary = np.array([*NOUNS, *(w for g in GENRES for w in GENRE_NOUNS[g])])
    nouns = rng.integers(0, len(NOUNS), n)  # Indices into the vocabulary.
    hinted = rng.random(n) < 0.6
    picks = rng.random(n)
    first = len(NOUNS)
    for index, genre in enumerate(GENRES):
        rows = np.flatnonzero(hinted & (main == index))
        nouns[rows] = first + (picks[rows] * len(GENRE_NOUNS[genre])).astype(int)
        first += len(GENRE_NOUNS[genre])
    titles = np.char.add(np.char.add(adjectives, " "), vocabulary[nouns])
    sequel = rng.random(n) < 0.08
    numbers = np.char.add(" ", rng.integers(2, 5, n).astype(str))
    return np.where(sequel, np.char.add(titles, numbers), titles)


def _zscore(values: np.ndarray) -> np.ndarray:
    return ((values - values.mean()) / max(float(values.std()), 1e-6)).astype(np.float32)


def _joined(*columns: object) -> pa.Array:
    """Columns (arrays or lists of strings) joined by commas, one CSV fragment per row."""
    strings = [pc.cast(pa.array(column), pa.string()) for column in columns]
    return pc.binary_join_element_wise(*strings, ",")


def make_catalog(config: SynthConfig) -> Catalog:
    """Draw the user and item tables for ``config`` (deterministic given its seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _TABLES]))
    n_users, n_items = config.n_users, config.n_items
    user_cdf = _power_law_cdf(n_users, config.user_skew, 0.01, rng)
    item_cdf = _power_law_cdf(n_items, config.item_skew, 0.003, rng)

    gender = (rng.random(n_users) < 0.6).astype(np.int8)
    occupation_p = np.array(list(OCCUPATION_WEIGHTS.values()), dtype=np.float64)
    occupation = rng.choice(len(OCCUPATIONS), n_users, p=occupation_p / occupation_p.sum())
    age = np.clip(np.rint(14 + rng.gamma(2.5, 8.0, n_users)), 13, 85).astype(np.int64)
    zips = _zip_prefixes(n_users, rng)

    main, flags = _item_genres(n_items, rng)
    end = datetime.datetime.fromtimestamp(config.start + config.days * 86_400, datetime.UTC)
    year = np.clip(end.year - np.rint(rng.exponential(12.0, n_items)), 1920, end.year)
    year = year.astype(np.int64)
    titles = _titles(main, rng)

    popularity = np.diff(item_cdf, prepend=0.0)
    catalog = Catalog(
        user_cdf=user_cdf,
        item_cdf=item_cdf,
        user_factors=rng.normal(0.0, FACTOR_SD, (n_users, LATENT_DIM)).astype(np.float32),
        item_factors=rng.normal(0.0, FACTOR_SD, (n_items, LATENT_DIM)).astype(np.float32),
        user_bias=rng.normal(0.0, 0.4, n_users).astype(np.float32),
        # Popular items are a little better on average.
        item_quality=(0.2 * _zscore(np.log(popularity)) + rng.normal(0.0, 0.45, n_items)).astype(
            np.float32
        ),
        item_buyability=rng.normal(0.0, 0.5, n_items).astype(np.float32),
        user_gender=gender,
        user_occupation=occupation,
        user_age_z=_zscore(age.astype(np.float64)),
        item_year_z=_zscore(year.astype(np.float64)),
        item_genre_mix=(flags / flags.sum(axis=1, keepdims=True)).astype(np.float32),
        gender_genre=rng.normal(0.0, GENDER_GENRE_SD, (2, len(GENRES))).astype(np.float32),
        occupation_genre=rng.normal(
            0.0, OCCUPATION_GENRE_SD, (len(OCCUPATIONS), len(GENRES))
        ).astype(np.float32),
        user_text=_joined(
            age, np.array(["F", "M"])[gender], np.array(OCCUPATIONS)[occupation], zips
        ),
        item_text=_joined(_genre_strings(flags), year, titles),
    )
    return _centred(catalog, rng)


def _centred(catalog: Catalog, rng: np.random.Generator) -> Catalog:
    """Centre relevance on a sample of impressions, so label rates hardly vary with the seed
    (or the drift)."""
    sample = rng.random((2, 20_000))
    n_users, n_items = len(catalog.user_cdf), len(catalog.item_cdf)
    users = np.minimum(np.searchsorted(catalog.user_cdf, sample[0], side="right"), n_users - 1)
    items = np.minimum(np.searchsorted(catalog.item_cdf, sample[1], side="right"), n_items - 1)
    catalog = dataclasses.replace(catalog, center=0.0)
    return dataclasses.replace(catalog, center=float(relevance(catalog, users, items).mean()))


def drifted(catalog: Catalog, seed: int, drift: float) -> Catalog:
    """``catalog`` with tastes moved ``drift`` (0 to 1) of the way to a second, independent
    draw: user factors, gender x genre and occupation x genre affinities, and everyone's
    taste per genre (none at drift 0). Items stay."""
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be between 0 and 1, got {drift}")
    if drift == 0.0:
        return catalog
    rng = np.random.default_rng(np.random.SeedSequence([seed, _DRIFT]))
    # Rotating from one draw to the other (cos, sin) keeps the spread of the tastes.
    angle = drift * np.pi / 2.0
    old, new = np.float32(np.cos(angle)), np.float32(np.sin(angle))

    def toward(values: np.ndarray, sd: float) -> np.ndarray:
        return old * values + new * rng.normal(0.0, sd, values.shape).astype(np.float32)

    moved = dataclasses.replace(
        catalog,
        user_factors=toward(catalog.user_factors, FACTOR_SD),
        gender_genre=toward(catalog.gender_genre, GENDER_GENRE_SD),
        occupation_genre=toward(catalog.occupation_genre, OCCUPATION_GENRE_SD),
        genre_trend=toward(np.zeros(len(GENRES), np.float32), GENRE_TREND_SD),
    )
    return _centred(moved, rng)


def relevance(catalog: Catalog, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """How much each user (table row) likes each item, centred on 0 over impressions: the
    click logit is CLICK_BASE + relevance."""
    mix = catalog.item_genre_mix[items]
    side = np.einsum("ij,ij->i", catalog.gender_genre[catalog.user_gender[users]], mix)
    side += np.einsum("ij,ij->i", catalog.occupation_genre[catalog.user_occupation[users]], mix)
    # Younger users lean to newer items, older ones to older items.
    side -= 0.3 * catalog.user_age_z[users] * catalog.item_year_z[items]
    if catalog.genre_trend is not None:
        side += mix @ catalog.genre_trend
    taste = np.einsum("ij,ij->i", catalog.user_factors[users], catalog.item_factors[items])
    bias = catalog.user_bias[users] + catalog.item_quality[items]
    return taste + side + bias - np.float32(catalog.center)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _uniform(seed: int, stream: int, rows: np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per row number: SplitMix64 of (stream key, row), so a row's
    draws depend on the seed and the row only, whatever the chunks."""
    key = np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0]
    z = (rows + key) * _GOLDEN
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate(config: SynthConfig, catalog: Catalog, first: int, end: int) -> dict[str, np.ndarray]:
    """Rows [first, end) as arrays: user and item table rows, labels (rating NaN when
    unknown) and timestamps."""
    rows = np.arange(first, end, dtype=np.uint64)
    seed = config.seed
    users = np.searchsorted(catalog.user_cdf, _uniform(seed, _USER, rows), side="right")
    items = np.searchsorted(catalog.item_cdf, _uniform(seed, _ITEM, rows), side="right")
    users = np.minimum(users, len(catalog.user_cdf) - 1)
    items = np.minimum(items, len(catalog.item_cdf) - 1)
    score = relevance(catalog, users, items)
    click = _uniform(seed, _CLICK, rows) < _sigmoid(CLICK_BASE + score)
    buy = _sigmoid(PURCHASE_BASE + score + catalog.item_buyability[items])
    purchase = click & (_uniform(seed, _PURCHASE, rows) < buy)
    # Buyers rate more often; the rating follows relevance with noise (Box-Muller normal).
    rated = click & (_uniform(seed, _RATED, rows) < np.where(purchase, 0.6, 0.3))
    noise = np.sqrt(-2.0 * np.log1p(-_uniform(seed, _NOISE_A, rows)))
    noise *= np.cos(2.0 * np.pi * _uniform(seed, _NOISE_B, rows))
    stars = np.clip(np.rint(3.0 + 0.6 * score + 0.9 * noise), 1, 5)
    # Integer arithmetic: exact, so a time range cut at a row boundary holds its rows' times.
    seconds = config.days * DAY_S
    timestamp = config.start + (rows * np.uint64(seconds) // np.uint64(config.rows)).astype(
        np.int64
    )
    return {
        "users": users,
        "items": items,
        F.RATING: np.where(rated, stars, np.nan),
        F.CLICK: click.astype(np.int8),
        F.PURCHASE: purchase.astype(np.int8),
        F.TIMESTAMP: timestamp,
    }


def _csv_chunk(chunk: dict[str, np.ndarray], catalog: Catalog) -> pa.Buffer:
    """The chunk's CSV lines as one buffer, joined by Arrow (strings never need quoting)."""
    users, items = chunk["users"], chunk["items"]
    numbers = [
        pa.array(users + 1),
        pa.array(items + 1),
        pa.array(chunk[F.RATING], mask=np.isnan(chunk[F.RATING])).cast(pa.int64()),
        pa.array(chunk[F.CLICK]),
        pa.array(chunk[F.PURCHASE]),
        pa.array(chunk[F.TIMESTAMP]),
    ]
    lines = pc.binary_join_element_wise(
        *(pc.cast(values, pa.string()) for values in numbers),
        catalog.user_text.take(pa.array(users)),
        catalog.item_text.take(pa.array(items)),
        ",",
        null_handling="replace",
        null_replacement="",
    )
    lines = pc.binary_join_element_wise(lines, "", "\n")  # Each line ends with a newline.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1)
    data = lines.buffers()[2]
    return data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _chunks(config: SynthConfig, first: int, end: int) -> Iterator[tuple[int, int]]:
    """[start, stop) row ranges of at most ``chunk_rows``: what is in memory at once."""
    for start in range(first, end, config.chunk_rows):
        yield start, min(start + config.chunk_rows, end)


def shard_name(index: int, shards: int) -> str:
    """Hadoop/Beam-style shard names, which sort in row (and time) order."""
    return f"part-{index:05d}-of-{shards:05d}.csv"


def write_logs(out_dir: str | os.PathLike, config: SynthConfig) -> SynthLogs:
    """Write ``config.rows`` rows as ``config.shards`` CSV files under ``out_dir``, plus a
    manifest (``_synth.json``). Shard files of an earlier run there are replaced, so no stale
    shard is read along with the new ones; other files are left alone."""
    out = output_folder(out_dir)
    return _write_folder(out, config, make_catalog(config), config.shard_bounds(), {})


def _write_folder(
    out: Path,
    config: SynthConfig,
    catalog: Catalog,
    bounds: list[tuple[int, int]],
    extra: dict[str, object],
) -> SynthLogs:
    """Rows [first, end) of ``bounds`` as one shard file each, replacing the shards and the
    manifest there (``extra`` added to it)."""
    header = ",".join(COLUMNS) + "\n"
    shards = len(bounds)
    written: list[Path] = []
    counts: list[int] = []
    try:
        for index, (first, end) in enumerate(bounds):
            path = out / f".{shard_name(index, shards)}.tmp"
            written.append(path)
            with open(path, "wb") as stream:
                stream.write(header.encode())
                for start, stop in _chunks(config, first, end):
                    stream.write(_csv_chunk(generate(config, catalog, start, stop), catalog))
            counts.append(end - first)
        for old in out.iterdir():
            if SHARD_PATTERN.fullmatch(old.name) or old.name == MANIFEST:
                old.unlink()
        files = tuple(path.rename(out / path.name[1:-4]) for path in written)
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    manifest = {
        "config": dataclasses.asdict(config),
        **extra,
        "users": config.n_users,
        "items": config.n_items,
        "columns": list(COLUMNS),
        "files": [{"name": p.name, "rows": n} for p, n in zip(files, counts, strict=True)],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return SynthLogs(files, tuple(counts), config.n_users, config.n_items)


# ----------------------------------------------------------------------------- spans


@dataclasses.dataclass(frozen=True)
class SpanLogs:
    """One span folder ``write_spans`` wrote: its number, drift, [start, end) seconds."""

    span: int
    drift: float
    start: int
    end: int
    logs: SynthLogs


def span_name(span: int) -> str:
    """A span's folder: ``span-0003`` (zero-padded, so folders sort in time order)."""
    return f"span-{span:04d}"


def span_drifts(spans: int, drift: float) -> list[float]:
    """Each span's drift: 0 for the first, rising linearly to ``drift`` for the last."""
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be between 0 and 1, got {drift}")
    return [drift * k / (spans - 1) if spans > 1 else 0.0 for k in range(spans)]


def clear_spans(out: Path) -> None:
    """Remove what span writers put in ``out``'s span folders (shards, manifests), and each
    folder left empty, so no stale span is read with new ones; other files stay."""
    for folder in out.iterdir():
        if not (folder.is_dir() and SPAN_PATTERN.fullmatch(folder.name)):
            continue
        for path in folder.iterdir():
            if path.is_file() and SPAN_FILE_PATTERN.fullmatch(path.name):
                path.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
    (out / SPANS_MANIFEST).unlink(missing_ok=True)


def write_spans(
    out_dir: str | os.PathLike, config: SynthConfig, spans: int, drift: float = 1.0
) -> list[SpanLogs]:
    """Continuous-training logs: ``spans`` folders ``span-0001/`` ... under ``out_dir``, each
    ``config`` (its rows, shards and days) over the next time range. One catalog throughout,
    tastes drifting linearly from the first span's to ``drift`` of the way to another draw."""
    if spans < 1:
        raise ValueError(f"spans must be at least 1, got {spans}")
    drifts = span_drifts(spans, drift)
    out = output_folder(out_dir)
    # The whole stream as one config, so every row has its own draws and its exact time;
    # the tables keep the sizes of one span's config.
    stream = dataclasses.replace(
        config,
        rows=config.rows * spans,
        days=config.days * spans,
        users=config.n_users,
        items=config.n_items,
    )
    base = make_catalog(stream)
    clear_spans(out)
    written: list[SpanLogs] = []
    for index, share in enumerate(drifts):
        offset = index * config.rows
        bounds = [(offset + a, offset + b) for a, b in config.shard_bounds()]
        start = config.start + index * config.days * DAY_S
        span = index + 1
        extra = {"span": span, "drift": share, "start": start, "end": start + config.days * DAY_S}
        folder = out / span_name(span)
        folder.mkdir(exist_ok=True)  # It may hold files of its own.
        logs = _write_folder(folder, stream, drifted(base, config.seed, share), bounds, extra)
        written.append(SpanLogs(span, share, start, start + config.days * DAY_S, logs))
    manifest = {
        "config": dataclasses.asdict(config),
        "spans": spans,
        "drift": drift,
        "folders": [
            {
                "name": span_name(s.span),
                "span": s.span,
                "drift": s.drift,
                "start": s.start,
                "end": s.end,
                "rows": s.logs.rows,
            }
            for s in written
        ],
    }
    (out / SPANS_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return written
