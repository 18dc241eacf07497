"""The data component's Beam job: raw logs in, labelled, split, shuffled tf.Examples out.

Rules (also in the README):
- An observed rating is an interaction: click = 1; purchase = 1 when rating >= 4.
- Non-interactions are sampled per user (4 per positive by default) from items the user never
  rated: click = 0, purchase = 0, rating absent. Each takes the timestamp (and split) of the
  positive it was drawn for. The draw is seeded by the seed and the user id only, so it does
  not depend on how the work is partitioned.
- Splits are by time: eval is the most recent ``eval_fraction`` of interactions, valid the
  most recent ``valid_fraction`` of what is left, train the rest. Cutoffs come from Beam's
  approximate quantiles (rank error at most 1/10,000 of the rows). Explicit train and eval
  files are used as given; valid is carved from train (by time; per user for u1-style
  ratings, whose split is random in time: each user's latest ratings, or with
  ``valid_split`` "random" a seeded random share, held out as the eval file is).
- Your own logs keep their labels; nothing is sampled.
- Every row carries the user's history (``names.HISTORY``): the items the user clicked
  strictly before the row's timestamp, most recent first, at most ``HISTORY_LENGTH``, never
  the row's own item. With explicit train and eval files every train row counts as before
  each eval row, and eval rows are in no one's history. A sampled non-interaction has the
  history of the positive it was drawn for.

Everything streams, on Beam's local runner as well (``spill``): a worker holds one bucket of
users' interactions, or one bucket of the shuffled output, at a time, plus the item and user
side tables and per-item counts (sized by the catalog, not the rows). Buckets are sized by the
input's bytes. Each bucket of the shuffled output is one file, so which examples each file
holds, in which order, depends on the inputs and the settings alone, not on the runner or how
many workers it has.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import functools
import gzip
import hashlib
import itertools
import json
import logging
import math
import operator
import os
import struct
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
import google_crc32c
import numpy as np

from mtrec import local_beam
from mtrec import names as F
from mtrec.data import parse, spill
from mtrec.data import source as S
from mtrec.data.config import SUMMARY_FILE, DataConfig, DataSummary
from mtrec.data.parse import Row, RowError
from mtrec.errors import DataError, PipelineError
from mtrec.files import output_folder

log = logging.getLogger(__name__)

FORMAT_VERSION = 7  # Part of every fingerprint: bump when what is written changes.
ERRORS_FILE = "errors.json"
SPILL_DIR = "spill"  # Bucket files (``spill``) under the scratch folder, removed after the job.
SPLIT = "_split"  # Internal row keys, never written.
ROLE = "_role"
SAMPLED = "_sampled"  # Set on sampled non-interactions: every other row was read from input.
# Runs of the job before a run that lost rows (see ``check_tally``) fails the component.
JOB_ATTEMPTS = 2
QUANTILES = 10_000
# Buckets of users (and of shuffled output, per split): one per this much input, within bounds.
BUCKET_INPUT_BYTES = 2**20
BUCKETS_AT_LEAST, BUCKETS_AT_MOST = 16, 512  # A writer opens 3x the most (3 splits).
GZIP_RATIO = 4  # Text bytes per byte of a gzipped input, for the estimate.
ENCODE_BATCH = 1000
# zlib's fastest level: 4x the speed of Beam's default (6) on these examples, ~20% larger.
GZIP_LEVEL = 1
HIDDEN = ("_", ".")  # Files in an input folder that are not data (Hadoop's convention).
ERRORS_SHOWN = 5
# A problem of the whole input, reported after any bad row (errors sort by file and row).
AFTER_ROWS = 2**62
TIME_SPLIT_NEEDS_TIMES = "a time-based split needs a timestamp column with distinct values"
# Item popularity by training clicks: at most the first bound is "cold", then "mid".
ITEM_POPULARITY_BOUNDS = ((20, "cold"), (100, "mid"))
AGE_BUCKETS = (
    (1, "under 18"),
    (18, "18-24"),
    (25, "25-34"),
    (35, "35-44"),
    (45, "45-49"),
    (50, "50-55"),
    (56, "56+"),
)


# ----------------------------------------------------------------------------- inputs


def resolve_files(base: str, roles: Mapping[str, str]) -> dict[str, list[str]]:
    """The files behind each role's pattern, sorted, but for hidden ones (names starting
    with '_' or '.', e.g. a job's _SUCCESS or a manifest); a pattern matching none is an
    error."""
    import tensorflow as tf

    files = {}
    for role, pattern in roles.items():
        path = os.path.join(base, pattern)
        found = sorted(
            p
            for p in tf.io.gfile.glob(path)
            if not os.path.basename(p).startswith(HIDDEN) and not tf.io.gfile.isdir(p)
        )
        if not found:
            raise DataError(f"{path}: no such file")
        files[role] = found
    return files


def check_inputs(kind: str, files: Mapping[str, list[str]]) -> None:
    """What can be checked before the Beam job, cheaply: every logs CSV has a header that
    names the required columns and is not empty."""
    if kind != S.LOGS:
        return
    for paths in files.values():
        for path in paths:
            if S.is_tfrecord(path):
                continue
            try:
                with _bytes(path) as handle:
                    header = handle.readline().decode("utf-8-sig", errors="replace")
            except S.GZIP_ERRORS as err:
                if not S.is_gzipped_text(path):
                    raise
                raise DataError(f"{path}: not a readable gzip-compressed CSV ({err})") from None
            if not header.strip():
                raise DataError(f"{path}: the file is empty")
            columns = [c.strip() for c in next(csv.reader([header]))]
            parse.check_log_columns(columns, path)


def fingerprint(*parts: object) -> str:
    """A short hash of what decides the examples."""
    digest = hashlib.sha256(f"{FORMAT_VERSION}/{F.HISTORY_LENGTH}".encode())
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def files_fingerprint(files: Mapping[str, list[str]]) -> str:
    """Path, size and modification time of every input file (as TFX's ExampleGen driver)."""
    import tensorflow as tf

    listing = []
    for role, paths in sorted(files.items()):
        for path in paths:
            stat = tf.io.gfile.stat(path)
            listing.append((role, path, stat.length, stat.mtime_nsec))
    return fingerprint(listing)


@contextlib.contextmanager
def _bytes(path: str) -> Iterator[Any]:
    """A file's bytes as a stream, decompressed as it is read for a ``.csv.gz``."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as handle:
        if S.is_gzipped_text(path):
            with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                yield unzipped
        else:
            yield handle


def _lines(path: str, encoding: str = "utf-8-sig") -> Iterator[str]:
    """A file's lines; UTF-8 by default, a byte-order mark (Excel's "CSV UTF-8") dropped."""
    with _bytes(path) as stream:
        for raw in stream:
            yield raw.decode(encoding)


class _ReadFile(beam.DoFn):
    """One input file's records as rows (tagged with their role), bad ones as RowErrors,
    and, tagged, how many rows it read (for ``check_tally``)."""

    ERRORS = "errors"
    READ = "read"

    def __init__(self, kind: str, layout: str, role: str) -> None:
        self._kind, self._layout, self._role = kind, layout, role

    def process(self, path: str) -> Iterator[Any]:
        read = 0
        try:
            for record in self._records(path):
                if isinstance(record, RowError):
                    yield beam.pvalue.TaggedOutput(self.ERRORS, record)
                else:
                    record[ROLE] = self._role
                    read += 1
                    yield record
        except UnicodeDecodeError as err:
            yield beam.pvalue.TaggedOutput(self.ERRORS, RowError(path, 0, f"not UTF-8 text: {err}"))
        except S.GZIP_ERRORS as err:
            if not S.is_gzipped_text(path):
                raise
            yield beam.pvalue.TaggedOutput(  # A .csv.gz cut short or damaged.
                self.ERRORS, RowError(path, AFTER_ROWS, f"not a readable gzip file: {err}")
            )
        yield beam.pvalue.TaggedOutput(self.READ, read)

    def _records(self, path: str) -> Iterator[Row | RowError]:
        if self._role == S.USERS:
            return parse.user_rows(path, _lines(path), self._layout)
        if self._role == S.ITEMS:
            encoding = "latin-1" if self._layout == S.GROUPLENS else "utf-8-sig"
            return parse.item_rows(path, _lines(path, encoding), self._layout)
        if self._kind != S.LOGS:
            return parse.ratings_rows(path, _lines(path))
        if S.is_tfrecord(path):
            return _tfrecord_rows(path)
        return parse.csv_rows(path, _lines(path))


def _tfrecord_rows(path: str) -> Iterator[Row | RowError]:
    import tensorflow as tf

    compression = "GZIP" if path.endswith(".gz") else ""
    count = 0
    try:
        for count, record in enumerate(
            tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator(),
            start=1,
        ):
            try:
                yield parse.example_row(record, count)
            except parse.RowProblemError as problem:
                yield RowError(path, count, str(problem))
    except (tf.errors.OpError, ValueError) as err:
        message = getattr(err, "message", str(err))
        yield RowError(path, count + 1, f"not a readable TFRecord file of tf.Examples: {message}")
        return
    if count == 0:
        yield RowError(path, 0, "the file has no data rows")


# ----------------------------------------------------------------------------- per user


def label(row: Row, purchase_min_rating: float) -> Row:
    """An observed rating becomes a positive: click 1, purchase when rated high enough."""
    row[F.CLICK] = 1
    row[F.PURCHASE] = int(row[F.RATING] >= purchase_min_rating)
    return row


RANDOM_VALID_NEEDS_RATINGS = (
    "valid_split 'random' applies to explicit train and eval ratings (--train-ratings and "
    "--eval-ratings); a time split's valid is its latest interactions"
)
# user_rng's stream for the random valid split (0 and 1: train and eval negatives).
VALID_STREAM = 2


def user_rng(seed: int, user: int, stream: int) -> np.random.Generator:
    """A generator for one user's draws: a function of the seed and the user id only."""
    return np.random.default_rng([seed & 0xFFFFFFFF, user & 0xFFFFFFFFFFFF, stream])


def sample_negatives(
    catalog: np.ndarray, exclude: set[int], wanted: int, rng: np.random.Generator
) -> list[int]:
    """``wanted`` items of ``catalog`` (sorted, unique) outside ``exclude``, without
    replacement while there are enough; a heavy user falls back to drawing with replacement."""
    if wanted <= 0 or catalog.size == 0:
        return []
    excluded = int(np.isin(catalog, np.fromiter(exclude, dtype=np.int64)).sum()) if exclude else 0
    available = catalog.size - excluded
    if available <= 0:
        return []
    if (excluded + wanted) * 2 > catalog.size:  # Dense: draw from the explicit candidates.
        candidates = catalog[~np.isin(catalog, np.fromiter(exclude, dtype=np.int64))]
        return rng.choice(candidates, size=wanted, replace=wanted > candidates.size).tolist()
    picked: list[int] = []
    seen = set(exclude)
    while len(picked) < wanted:
        for item in catalog[rng.integers(0, catalog.size, size=2 * (wanted - len(picked)) + 8)]:
            item = int(item)
            if item not in seen:
                seen.add(item)
                picked.append(item)
                if len(picked) == wanted:
                    break
    return picked


def _stable_unit(*parts: object) -> float:
    """A number in [0, 1) from ``parts``, the same in every process (unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


class _PerUser(beam.DoFn):
    """Each user of one bucket in turn (``spill``): assign splits, sample negatives, add the
    history, mark the user cold or warm."""

    def __init__(self, kind: str, config: DataConfig) -> None:
        self._kind, self._config = kind, config

    def process(
        self, bucket: tuple[int, list[str]], cutoffs: Mapping[str, Any], catalog: Any
    ) -> Iterator[Row]:
        by_user: dict[int, list[Row]] = {}
        for row in spill.read(bucket[1]):
            by_user.setdefault(row[F.USER_ID], []).append(row)
        catalog = np.asarray(catalog)
        for user in sorted(by_user):
            yield from self._user(user, by_user.pop(user), cutoffs, catalog)

    def _user(
        self, user: int, grouped: list[Row], cutoffs: Mapping[str, Any], catalog: np.ndarray
    ) -> Iterator[Row]:
        config = self._config
        # A total order, so the draws do not depend on the order the runner delivers rows in.
        rows = sorted(
            grouped,
            key=lambda r: (r[F.TIMESTAMP], r[F.ITEM_ID], r[ROLE], r[F.CLICK], r[F.RATING] or 0),
        )
        explicit = self._kind == S.RATINGS
        held_valid = explicit and config.valid_split == "random"
        if explicit:
            self._split_ratings(rows, config.valid_fraction, held_valid, config.seed, user)
        else:
            for row in rows:
                row[SPLIT] = _split_by_time(row, cutoffs, config)
        if self._kind != S.LOGS and config.negatives_per_positive:
            rows += self._negatives(user, rows, catalog)
        add_history(rows, explicit=explicit, held_valid=held_valid)
        train_clicks = sum(1 for r in rows if r[SPLIT] == F.TRAIN and r[F.CLICK] == 1)
        activity = "cold" if train_clicks <= config.cold_user_max_interactions else "warm"
        for row in rows:
            row[F.USER_ACTIVITY] = activity
            yield row

    @staticmethod
    def _split_ratings(
        rows: list[Row], fraction: float, random: bool, seed: int, user: int
    ) -> None:
        """Explicit split; valid is ``fraction`` of this user's train ratings (at least one
        for a user with two or more): the most recent, with every row from that time on, or
        with ``random`` a seeded draw of them (the same for a user and seed on any runner)."""
        train = [r for r in rows if r[ROLE] == S.TRAIN]
        keep = max(1, math.floor(fraction * len(train))) if len(train) >= 2 else 0
        cutoff = min(r[F.TIMESTAMP] for r in train[-keep:]) if keep else math.inf
        drawn: set[int] = set()
        if random and keep:
            picks = user_rng(seed, user, VALID_STREAM).choice(len(train), keep, replace=False)
            drawn = {id(train[i]) for i in picks.tolist()}
        for row in rows:
            if row[ROLE] == S.EVAL:
                row[SPLIT] = F.EVAL
            elif random:
                row[SPLIT] = F.VALID if id(row) in drawn else F.TRAIN
            else:
                row[SPLIT] = F.VALID if row[F.TIMESTAMP] >= cutoff else F.TRAIN

    def _negatives(self, user: int, rows: list[Row], catalog: np.ndarray) -> list[Row]:
        """``negatives_per_positive`` never-rated items per positive: train ones avoid the
        items rated in train; eval ones (an explicit eval file) avoid every rated item."""
        per = self._config.negatives_per_positive
        out = []
        groups = ((S.TRAIN, [r for r in rows if r[ROLE] != S.EVAL]),)
        if self._kind == S.RATINGS:
            groups += ((S.EVAL, [r for r in rows if r[ROLE] == S.EVAL]),)
        rated: set[int] = set()
        for stream, positives in enumerate(group for _, group in groups):
            rated |= {r[F.ITEM_ID] for r in positives}
            if not positives:
                continue
            rng = user_rng(self._config.seed, user, stream)
            items = sample_negatives(catalog, rated, per * len(positives), rng)
            for index, item in enumerate(items):
                positive = positives[index // per]
                out.append(
                    {
                        F.USER_ID: user,
                        F.ITEM_ID: item,
                        F.RATING: None,
                        F.TIMESTAMP: positive[F.TIMESTAMP],
                        F.CLICK: 0,
                        F.PURCHASE: 0,
                        ROLE: positive[ROLE],
                        SPLIT: positive[SPLIT],
                        SAMPLED: True,
                    }
                )
        return out


def history_token(row: Row) -> str:
    """A history entry: the item id, with ":rating" where the rating is known."""
    rating = row.get(F.RATING)
    token = str(row[F.ITEM_ID])
    return token if rating is None else f"{token}{F.HISTORY_RATING_SEPARATOR}{rating:g}"


def add_history(rows: list[Row], explicit: bool, held_valid: bool = False) -> None:
    """Set each of one user's rows' history (see the module docstring). ``explicit``: the
    rows come from explicit train/eval files, whose eval rows see every train row.
    ``held_valid`` (a random valid split of explicit train ratings): valid rows are held out
    as eval rows are, each seeing every train row and in no train or valid row's history;
    eval rows still see them."""

    def held(row: Row) -> bool:
        return explicit and (row[ROLE] == S.EVAL or (held_valid and row[SPLIT] == F.VALID))

    clicks = sorted((r for r in rows if r[F.CLICK] == 1), key=lambda r: r[F.TIMESTAMP])
    seen = [r for r in clicks if not held(r)]  # What train (and held valid) rows see.
    stamps = [r[F.TIMESTAMP] for r in seen]
    lists = {False: _History(seen)}
    if explicit:  # Eval rows see every train-file row, a held valid one included.
        lists[True] = (
            _History([r for r in clicks if r[ROLE] != S.EVAL]) if held_valid else lists[False]
        )
    # The history of a row whose item the user never clicked depends on its time only:
    # shared by the negatives drawn for one positive (most of the rows).
    unclicked: dict[tuple[bool, int], str] = {}
    for row in rows:
        evaluated = explicit and row[ROLE] == S.EVAL
        history = lists[evaluated]
        before = len(history.items) if held(row) else bisect.bisect_left(stamps, row[F.TIMESTAMP])
        item = row[F.ITEM_ID]
        if item in history.clicked:
            row[F.HISTORY] = _recent(history.tokens, history.items, before, item)
        elif (evaluated, before) in unclicked:
            row[F.HISTORY] = unclicked[evaluated, before]
        else:
            row[F.HISTORY] = unclicked[evaluated, before] = _recent(
                history.tokens, history.items, before, item
            )


class _History:
    """One user's clicks in time order, as ``_recent`` reads them."""

    def __init__(self, clicks: list[Row]) -> None:
        self.tokens = [history_token(r) for r in clicks]
        self.items = [r[F.ITEM_ID] for r in clicks]
        self.clicked = set(self.items)


def _recent(tokens: list[str], items: list[int], before: int, item: int) -> str:
    """The history text: the newest ``HISTORY_LENGTH`` of the first ``before`` tokens whose
    item is not ``item``, most recent first."""
    picked: list[str] = []
    start = before
    while len(picked) < F.HISTORY_LENGTH and start > 0:  # ``item`` took places: look further.
        stop, start = start, max(0, start - (F.HISTORY_LENGTH - len(picked)))
        earlier = zip(tokens[start:stop], items[start:stop], strict=True)
        picked = [t for t, i in earlier if i != item] + picked
    return F.HISTORY_SEPARATOR.join(reversed(picked[-F.HISTORY_LENGTH :]))


def _split_by_time(row: Row, cutoffs: Mapping[str, Any], config: DataConfig) -> str:
    if row[ROLE] == S.EVAL:
        return F.EVAL
    stamp = row[F.TIMESTAMP]
    if cutoffs.get("eval") is not None and stamp > cutoffs["eval"]:
        return F.EVAL
    if cutoffs.get("distinct", True):
        return F.VALID if stamp > cutoffs["valid"] else F.TRAIN
    # Explicit files without timestamps: a seeded random share of train.
    held_out = _stable_unit(config.seed, row[F.USER_ID], row[F.ITEM_ID], stamp) < (
        config.valid_fraction
    )
    return F.VALID if held_out else F.TRAIN


# ----------------------------------------------------------------------------- features


def item_popularity(clicks: int) -> str:
    """'cold' (<= 20 training clicks), 'mid' (<= 100) or 'popular'."""
    for upper, name in ITEM_POPULARITY_BOUNDS:
        if clicks <= upper:
            return name
    return "popular"


def age_bucket(age: int) -> str:
    """MovieLens-1M style age groups; 'unknown' for a missing (<= 0) age."""
    name = "unknown"
    for lower, bucket in AGE_BUCKETS:
        if age >= lower:
            name = bucket
    return name


def genre_list(genres: str) -> list[str]:
    """Joined genres as a list; an item without genres is in the 'unknown' slice."""
    return [g for g in str(genres).split(F.GENRE_SEPARATOR) if g] or ["unknown"]


def finish_row(
    row: Row, users: Mapping[int, Row], items: Mapping[int, Row], popularity: Mapping[int, int]
) -> Row:
    """Join side features (defaults where unknown) and add the slice-only columns."""
    row.update(users.get(row[F.USER_ID], {}))
    row.update(items.get(row[F.ITEM_ID], {}))
    for column, default in F.MISSING_DEFAULTS.items():
        if row.get(column) is None:
            row[column] = default
    row[F.ITEM_POPULARITY] = item_popularity(popularity.get(row[F.ITEM_ID], 0))
    row[F.AGE_BUCKET] = age_bucket(int(row[F.AGE]))
    row[F.GENRE] = genre_list(row[F.GENRES])
    return row


# ----------------------------------------------------------------------------- writing


def record_batch(rows: list[Row]) -> Any:
    """One list column per example column (single values but the genre list); an unknown
    rating is a null list, so the tf.Example has no rating feature."""
    import pyarrow as pa

    binary = pa.large_list(pa.large_binary())
    arrays = []
    for column in F.EXAMPLE_COLUMNS:
        values = [r[column] for r in rows]
        if column in F.STRING_LIST_COLUMNS:
            arrays.append(pa.array([[v.encode() for v in vs] for vs in values], type=binary))
        elif column in F.INT_COLUMNS:
            arrays.append(pa.array([[int(v)] for v in values], type=pa.large_list(pa.int64())))
        elif column in F.FLOAT_COLUMNS:
            arrays.append(
                pa.array(
                    [None if v is None else [v] for v in values], type=pa.large_list(pa.float32())
                )
            )
        else:
            arrays.append(pa.array([[str(v).encode()] for v in values], type=binary))
    return pa.RecordBatch.from_arrays(arrays, list(F.EXAMPLE_COLUMNS))


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated and offset."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frames(records: Iterable[bytes]) -> bytes:
    """Records framed as in a TFRecord file: length, its masked CRC, data, its masked CRC."""
    parts = []
    for record in records:
        length = struct.pack("<Q", len(record))
        parts += (
            length,
            struct.pack("<I", _masked_crc32c(length)),
            record,
            struct.pack("<I", _masked_crc32c(record)),
        )
    return b"".join(parts)


class _GzipWriter:
    """A gzip stream at ``GZIP_LEVEL`` over an open binary file (which its caller closes)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS | 16)

    def write(self, data: bytes) -> None:
        self._raw.write(self._compressor.compress(data))

    def finish(self) -> None:
        self._raw.write(self._compressor.flush())


def _user_bucket(row: Row, buckets: int) -> int:
    """The bucket of the row's user: a multiplicative hash, the same in every process."""
    return ((row[F.USER_ID] * 0x9E3779B1) & 0xFFFFFFFF) * buckets >> 32


def _shuffle_key(row: Row, seed: int) -> tuple[float, Row]:
    """(sort key, row): the key a hash of the row, the same on every runner."""
    key = _stable_unit(
        seed, row[F.USER_ID], row[F.ITEM_ID], row[F.TIMESTAMP], row[F.CLICK], row[SPLIT]
    )
    return key, row


def _shuffle_bucket(pair: tuple[float, Row], buckets: int) -> int:
    """Buckets of the shuffled output: ``buckets`` per split, each a range of sort keys."""
    key, row = pair
    return F.SPLITS.index(row[SPLIT]) * buckets + int(key * buckets)


def _in_key_order(paths: list[str]) -> list[Row]:
    """A shuffle bucket's rows by sort key; rows that share one (the same event logged twice)
    by their contents, so that the order never depends on the order the files were read in."""
    ordered: list[Row] = []
    pairs = sorted(spill.read(paths), key=operator.itemgetter(0))
    for _, group in itertools.groupby(pairs, key=operator.itemgetter(0)):
        rows = [row for _, row in group]
        if len(rows) > 1:
            rows.sort(key=lambda row: repr(sorted(row.items())))
        ordered += rows
    return ordered


class _WriteBucket(beam.DoFn):
    """One bucket of the shuffled output: its rows in sort-key order, each finished
    (``finish_row``), encoded by tfx_bsl's C++ encoder and written as one gzipped TFRecord
    file named by the bucket (``Split-<name>/data_tfrecord-BBBBB-of-NNNNN.gz``, ExampleGen's
    layout). So each file's examples and their order depend on the data and the settings
    alone, not on the runner or its workers, and a retried bucket writes the same file again.
    Yields the finished rows and, tagged, (split, (rows written, of them read from input)) for
    ``check_tally``."""

    COUNTS = "counts"

    def __init__(self, output_uri: str, temp_dir: str, buckets: int) -> None:
        self._output_uri, self._temp_dir, self._buckets = output_uri, temp_dir, buckets

    def setup(self) -> None:
        import tensorflow as tf
        from tfx_bsl.coders import example_coder

        self._encoder = example_coder.RecordBatchToExamplesEncoder()
        tf.io.gfile.makedirs(self._temp_dir)

    def process(
        self,
        bucket: tuple[int, list[str]],
        users: Mapping[int, Row],
        items: Mapping[int, Row],
        popularity: Mapping[int, int],
    ) -> Iterator[Any]:
        import tensorflow as tf

        split, index = divmod(bucket[0], self._buckets)
        name = F.SPLITS[split]
        rows = [finish_row(row, users, items, popularity) for row in _in_key_order(bucket[1])]
        temp = os.path.join(self._temp_dir, f"{name}-{index}-{uuid.uuid4().hex}.gz")
        with tf.io.gfile.GFile(temp, "wb") as raw:
            out = _GzipWriter(raw)
            for start in range(0, len(rows), ENCODE_BATCH):
                batch = record_batch(rows[start : start + ENCODE_BATCH])
                out.write(tfrecord_frames(self._encoder.encode(batch)))
            out.finish()
        final = os.path.join(
            self._output_uri,
            f"Split-{name}",
            f"data_tfrecord-{index:05d}-of-{self._buckets:05d}.gz",
        )
        tf.io.gfile.makedirs(os.path.dirname(final))
        tf.io.gfile.rename(temp, final, overwrite=True)
        read = sum(1 for row in rows if not row.get(SAMPLED))
        yield beam.pvalue.TaggedOutput(self.COUNTS, (name, (len(rows), read)))
        yield from rows


# ----------------------------------------------------------------------------- summary


def _sum_columns(rows: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """Column sums of equally long tuples (counts, or partial sums of them)."""
    return tuple(sum(column) for column in zip(*rows, strict=True))


@beam.ptransform_fn
def _Summarise(rows: beam.PCollection, tally: tuple[beam.PCollection, ...]) -> beam.PCollection:
    """One dict: counts per split, eval slice sizes, the training-mean rating baseline, and
    the ``tally`` of rows read and written ((key, count) pairs; see ``check_tally``)."""
    counts = (
        rows
        | "Counts"
        >> beam.Map(
            lambda r: (
                r[SPLIT],
                (1, r[F.CLICK], r[F.PURCHASE], int(r[F.RATING] is not None)),
            )
        )
        | "SumCounts" >> beam.CombinePerKey(_sum_columns)
        | "TagCounts" >> beam.Map(lambda kv: ("counts", kv))
    )
    distinct = []
    for column in (F.USER_ID, F.ITEM_ID):
        distinct.append(
            rows
            | f"Keys{column}" >> beam.Map(lambda r, c=column: (r[SPLIT], r[c]))
            | f"Distinct{column}" >> beam.Distinct()
            | f"Splits{column}" >> beam.Map(lambda kv: kv[0])
            | f"Count{column}" >> beam.combiners.Count.PerElement()
            | f"Tag{column}" >> beam.Map(lambda kv, c=column: (c, kv))
        )
    slices = (
        rows
        | "EvalOnly" >> beam.Filter(lambda r: r[SPLIT] == F.EVAL)
        | "SliceKeys"
        >> beam.FlatMap(
            lambda r: [
                (key, str(value))
                for key in F.SLICE_FEATURES
                for value in (r[key] if isinstance(r[key], list) else [r[key]])
            ]
        )
        | "CountSlices" >> beam.combiners.Count.PerElement()
        | "TagSlices" >> beam.Map(lambda kv: ("slices", kv))
    )
    train_mean = (
        rows
        | "TrainRatings"
        >> beam.FlatMap(
            lambda r: [r[F.RATING]] if r[SPLIT] == F.TRAIN and r[F.RATING] is not None else []
        )
        | "TrainMean" >> beam.combiners.Mean.Globally()
    )
    eval_moments = (  # (n, sum, sum of squares): the RMSE of the train mean needs no side input.
        rows
        | "EvalRatings"
        >> beam.FlatMap(
            lambda r: [(1, r[F.RATING], r[F.RATING] ** 2)]
            if r[SPLIT] == F.EVAL and r[F.RATING] is not None
            else []
        )
        | "EvalMoments" >> beam.CombineGlobally(_sum_columns)
    )
    means = (
        train_mean | "TagMean" >> beam.Map(lambda v: ("train_rating_mean", v)),
        eval_moments | "TagMoments" >> beam.Map(lambda v: ("eval_moments", v)),
    ) | "FlattenMeans" >> beam.Flatten()
    tallied = (
        tally
        | "FlattenTally" >> beam.Flatten()
        | "TagTally" >> beam.Map(lambda pair: ("tally", pair))
    )
    return (
        (counts, *distinct, slices, means, tallied)
        | "FlattenAll" >> beam.Flatten()
        | "ToList" >> beam.combiners.ToList()
        | "Assemble" >> beam.Map(_assemble)
    )


def _assemble(parts: list[tuple[str, Any]]) -> dict:
    splits = {
        name: dict.fromkeys(("examples", "clicks", "purchases", "rated", "users", "items"), 0)
        for name in F.SPLITS
    }
    slices: dict[str, dict[str, int]] = {key: {} for key in F.SLICE_FEATURES}
    summary: dict[str, Any] = {"train_rating_mean": None, "eval_global_mean_rmse": None}
    tally: dict[str, Any] = {"read": 0}
    moments: tuple[float, ...] = (0, 0.0, 0.0)
    for tag, value in parts:
        if tag == "counts":
            name, (examples, clicks, purchases, rated) = value
            splits[name].update(examples=examples, clicks=clicks, purchases=purchases, rated=rated)
        elif tag in (F.USER_ID, F.ITEM_ID):
            name, count = value
            splits[name]["users" if tag == F.USER_ID else "items"] = count
        elif tag == "slices":
            (key, slice_value), count = value
            slices[key][slice_value] = count
        elif tag == "train_rating_mean" and not math.isnan(value):
            summary["train_rating_mean"] = value
        elif tag == "eval_moments" and value:
            moments = value
        elif tag == "tally":
            key, count = value
            if key == "read":
                tally["read"] += count
            else:
                tally[key] = list(_sum_columns([tally.get(key, (0, 0)), count]))
    for counts in splits.values():
        counts["negatives"] = counts["examples"] - counts["clicks"]
    mean = summary["train_rating_mean"]
    if mean is not None and moments[0]:
        n, total, squares = moments
        mse = (squares - 2.0 * mean * total) / n + mean**2
        summary["eval_global_mean_rmse"] = math.sqrt(max(0.0, mse))
    return {"splits": splits, "eval_slice_counts": slices, **summary, "tally": tally}


def _write_errors(errors: list[RowError], path: str) -> None:
    if errors:
        _write_json([list(error) for error in errors], path)


def _write_json(value: Any, path: str) -> None:
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as out:
        json.dump(value, out, indent=1, sort_keys=True)


# ----------------------------------------------------------------------------- the job


def expand(
    pipeline: beam.Pipeline,
    kind: str,
    layout: str,
    files: Mapping[str, list[str]],
    config: DataConfig,
    output_uri: str,
    scratch_dir: str,
) -> None:
    """Add the whole data job to ``pipeline``: read ``files`` (role -> paths), build the
    examples, write ``Split-<name>/`` under ``output_uri`` and, in ``scratch_dir``, the
    summary (with the row tally) and the first bad records (see ``collect``)."""
    reads, errors, tally = {}, [], []
    for role, paths in sorted(files.items()):
        read = (
            pipeline
            | f"Files{role}" >> beam.Create(paths)
            | f"Spread{role}" >> beam.Reshuffle()
            | f"Read{role}"
            >> beam.ParDo(_ReadFile(kind, layout, role)).with_outputs(
                _ReadFile.ERRORS, _ReadFile.READ, main="rows"
            )
        )
        reads[role] = read.rows
        errors.append(read[_ReadFile.ERRORS])
        if role not in (S.USERS, S.ITEMS):
            tally.append(
                read[_ReadFile.READ] | f"TallyRead{role}" >> beam.Map(lambda n: ("read", n))
            )
    users = reads.pop(S.USERS, None) or (pipeline | "NoUsers" >> beam.Create([]))
    items = reads.pop(S.ITEMS, None) or (pipeline | "NoItems" >> beam.Create([]))
    interactions = tuple(reads.values()) | "Interactions" >> beam.Flatten()
    if kind != S.LOGS:
        interactions = interactions | "Label" >> beam.Map(label, config.purchase_min_rating)

    if kind == S.RATINGS:  # Explicit files, valid carved per user: no time cutoffs.
        cutoffs = pipeline | "NoCutoffs" >> beam.Create([{}])
    else:
        time_split = S.INTERACTIONS in files
        timed = interactions
        if not time_split:  # Explicit logs: valid is cut from train by time.
            timed = interactions | "TrainOnly" >> beam.Filter(lambda r: r[ROLE] == S.TRAIN)
        cutoffs = (
            timed
            | "Timestamps" >> beam.Map(lambda r: r[F.TIMESTAMP])
            | "Quantiles" >> beam.ApproximateQuantiles.Globally(QUANTILES + 1)
            | "Cutoffs" >> beam.Map(_cutoffs, time_split, config)
        )
        pattern = files.get(S.INTERACTIONS, files.get(S.TRAIN))[0]
        errors.append(
            cutoffs
            | "SameTime"
            >> beam.FlatMap(
                lambda c, p=pattern: []
                if c["distinct"] or not c["time_split"]
                else [RowError(p, AFTER_ROWS, TIME_SPLIT_NEEDS_TIMES)]
            )
        )
    catalog = (
        items
        | "ItemIds" >> beam.Map(lambda r: r[F.ITEM_ID])
        | "Catalog" >> beam.combiners.ToList()
        | "Sorted" >> beam.Map(lambda ids: np.unique(np.asarray(ids, dtype=np.int64)))
    )
    buckets = _buckets(files)
    rows = (
        interactions
        | "GroupUsers"
        >> spill.GroupThroughFiles(
            functools.partial(_user_bucket, buckets=buckets),
            os.path.join(scratch_dir, SPILL_DIR, "users"),
        )
        | "PerUser"
        >> beam.ParDo(
            _PerUser(kind, config),
            cutoffs=beam.pvalue.AsSingleton(cutoffs),
            catalog=beam.pvalue.AsSingleton(catalog),
        )
    )
    popularity = (
        rows
        | "TrainClicks"
        >> beam.FlatMap(lambda r: [r[F.ITEM_ID]] if r[SPLIT] == F.TRAIN and r[F.CLICK] == 1 else [])
        | "ItemClicks" >> beam.combiners.Count.PerElement()
    )
    finished = (
        rows
        | "ShuffleKeys" >> beam.Map(_shuffle_key, config.seed)
        | "Shuffle"
        >> spill.GroupThroughFiles(
            functools.partial(_shuffle_bucket, buckets=buckets),
            os.path.join(scratch_dir, SPILL_DIR, "shuffled"),
        )
        | "Write"
        >> beam.ParDo(
            _WriteBucket(output_uri, os.path.join(scratch_dir, SPILL_DIR, "written"), buckets),
            users=beam.pvalue.AsDict(users | "UserKeys" >> beam.Map(lambda r: (r[F.USER_ID], r))),
            items=beam.pvalue.AsDict(items | "ItemKeys" >> beam.Map(lambda r: (r[F.ITEM_ID], r))),
            popularity=beam.pvalue.AsDict(popularity),
        ).with_outputs(_WriteBucket.COUNTS, main="rows")
    )
    tally.append(finished[_WriteBucket.COUNTS])
    _ = (
        finished.rows
        | "Summarise" >> _Summarise(tuple(tally))
        | "WriteSummary" >> beam.Map(_write_json, os.path.join(scratch_dir, SUMMARY_FILE))
    )
    _ = (
        tuple(errors)
        | "Errors" >> beam.Flatten()
        | "FirstErrors" >> beam.combiners.Top.Smallest(ERRORS_SHOWN)
        | "WriteErrors" >> beam.Map(_write_errors, os.path.join(scratch_dir, ERRORS_FILE))
    )


def _buckets(files: Mapping[str, list[str]]) -> int:
    """User buckets (and shuffle buckets per split) for these inputs: one per
    ``BUCKET_INPUT_BYTES`` of interaction text, within bounds."""
    import tensorflow as tf

    total = sum(
        tf.io.gfile.stat(path).length * (GZIP_RATIO if path.endswith(".gz") else 1)
        for role, paths in files.items()
        if role not in (S.USERS, S.ITEMS)
        for path in paths
    )
    return max(BUCKETS_AT_LEAST, min(BUCKETS_AT_MOST, -(-total // BUCKET_INPUT_BYTES)))


def _cutoffs(quantiles: list[int], time_split: bool, config: DataConfig) -> dict:
    """Eval and valid cutoffs from timestamp quantiles: time split, the latest eval fraction
    is eval and the latest valid fraction of the rest valid; explicit files, valid only."""
    if not quantiles:
        return {"distinct": False, "time_split": time_split, "eval": None, "valid": None}
    last = len(quantiles) - 1
    valid_at = 1.0 - config.valid_fraction
    if time_split:
        valid_at *= 1.0 - config.eval_fraction
    return {
        "distinct": quantiles[0] != quantiles[-1],
        "time_split": time_split,
        "eval": quantiles[round((1.0 - config.eval_fraction) * last)] if time_split else None,
        "valid": quantiles[round(valid_at * last)],
    }


class RowsLostError(PipelineError):
    """The runner lost rows between reading and writing: the job's output is incomplete."""


def check_tally(tally: Mapping[str, Any] | None, summary: Mapping[str, Any]) -> None:
    """Every row read is written once: raise RowsLostError where the rows the job read, the
    rows it encoded (those read, per split) and the rows its summary counted disagree."""
    if tally is None:
        raise RowsLostError("the data job finished without its row counts: its output is partial")
    read = tally.get("read", 0)
    written = {name: tuple(tally.get(name) or (0, 0)) for name in F.SPLITS}
    kept = sum(count for _, count in written.values())
    counted = {name: summary["splits"][name]["examples"] for name in F.SPLITS}
    if kept == read and all(written[n][0] == counted[n] for n in F.SPLITS):
        return
    splits = ", ".join(f"{n} {written[n][0]:,} of {counted[n]:,}" for n in F.SPLITS)
    raise RowsLostError(
        f"the data job read {read:,} interactions but wrote {kept:,} of them (examples "
        f"written per split, of those counted: {splits}): the Beam runner lost "
        "rows; nothing was published"
    )


def collect(scratch_dir: str) -> DataSummary:
    """After the job: the first bad record as a DataError, rows lost as a RowsLostError,
    else the summary."""
    import tensorflow as tf

    errors_path = os.path.join(scratch_dir, ERRORS_FILE)
    if tf.io.gfile.exists(errors_path):
        with tf.io.gfile.GFile(errors_path) as handle:
            first = RowError(*json.load(handle)[0])
        raise first.as_error()
    summary_path = os.path.join(scratch_dir, SUMMARY_FILE)
    if not tf.io.gfile.exists(summary_path):
        raise RowsLostError("the data job finished without its summary: its output is partial")
    with tf.io.gfile.GFile(summary_path) as handle:
        values = json.load(handle)
    check_tally(values.pop("tally", None), values)
    empty = [name for name, counts in values["splits"].items() if not counts["examples"]]
    if empty:
        raise DataError(
            f"the {' and '.join(empty)} split(s) came out empty: too few interactions or "
            "timestamps for the fractions asked"
        )
    return DataSummary(**values)


def run_job(
    make_pipeline: Callable[[], beam.Pipeline],
    kind: str,
    layout: str,
    files: Mapping[str, list[str]],
    config: DataConfig,
    output_uri: str,
    scratch_dir: str,
) -> DataSummary:
    """Run the job (``expand``) on a pipeline from ``make_pipeline`` and collect its summary.
    A run the runner lost rows in is cleared and run again, up to ``JOB_ATTEMPTS`` runs."""
    import tensorflow as tf

    if config.valid_split == "random" and kind != S.RATINGS:
        raise ValueError(RANDOM_VALID_NEEDS_RATINGS)
    local_beam.flush_by_size_only()
    attempt = 1
    while True:
        for stale in (*tf.io.gfile.glob(os.path.join(output_uri, "Split-*")), scratch_dir):
            if tf.io.gfile.exists(stale):
                tf.io.gfile.rmtree(stale)
        try:
            with make_pipeline() as pipeline:
                expand(pipeline, kind, layout, files, config, output_uri, scratch_dir)
        finally:
            spill.remove(os.path.join(scratch_dir, SPILL_DIR))
        try:
            return collect(scratch_dir)
        except RowsLostError as lost:
            if attempt >= JOB_ATTEMPTS:
                raise
            attempt += 1
            log.warning("%s; running the job again (run %d of %d)", lost, attempt, JOB_ATTEMPTS)


def write_summary(summary: DataSummary, output_uri: str) -> None:
    """The summary beside the splits, for whatever reads the examples later."""
    _write_json(summary.to_dict(), os.path.join(output_uri, SUMMARY_FILE))


def run(
    data_source: S.DataSource,
    config: DataConfig,
    output_dir: str,
    beam_args: Iterable[str] = (),
) -> tuple[str, DataSummary]:
    """The data job alone, outside a pipeline (``mtrec data build``, tests, benchmarks):
    (folder with ``Split-<name>/`` and the summary, summary). The folder is named by the
    inputs' and settings' fingerprint; an existing one is reused, a new one appears whole."""
    import shutil
    import tempfile

    from apache_beam.options.pipeline_options import PipelineOptions

    files = resolve_files(data_source.base, data_source.roles)
    check_inputs(data_source.kind, files)
    digest = fingerprint(files_fingerprint(files), data_source.to_dict(), config.to_dict())
    root = os.path.join(output_dir, f"{data_source.kind}-{digest}")
    found = DataSummary.read(root) if os.path.isdir(root) else None
    if found is not None and found.fingerprint == digest:
        log.info("Examples for these inputs and settings already in %s; reusing them", root)
        return root, found
    output_folder(output_dir)
    staging = tempfile.mkdtemp(dir=output_dir, prefix=".staging-")
    try:
        summary = run_job(
            lambda: beam.Pipeline(options=PipelineOptions(list(beam_args))),
            data_source.kind,
            data_source.layout,
            files,
            config,
            os.path.join(staging, "examples"),
            os.path.join(staging, "scratch"),
        )
        summary = dataclasses.replace(summary, fingerprint=digest)
        write_summary(summary, os.path.join(staging, "examples"))
        if os.path.isdir(root):
            shutil.rmtree(root)
        os.rename(os.path.join(staging, "examples"), root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root, summary
