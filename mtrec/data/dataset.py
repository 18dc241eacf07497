"""Build the pipeline's input examples: labels, negatives, features, splits, validation.

Rules (also in the README):
- An observed rating is an interaction: click = 1; purchase = 1 when rating >= 4.
- Non-interactions are sampled per user with a seed (4 per positive by default) from items
  the user never rated: click = 0, purchase = 0, rating absent. Each gets the timestamp of
  the positive it was drawn for, so it lands in the same split.
- Splits are by time: eval is the most recent ``eval_fraction`` of interactions, valid the
  most recent ``valid_fraction`` of what is left, train the rest. In the explicit split mode
  the given train and eval files are used as they are (valid is carved from train).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from mtrec import names as F
from mtrec.data import movielens
from mtrec.errors import DataError

log = logging.getLogger(__name__)

MANIFEST = "dataset.json"
# The schema of the examples written here, shipped in the package (the Kubeflow image too).
CURATED_SCHEMA = str(Path(__file__).parent / "schema" / "schema.pbtxt")
FORMAT_VERSION = 4  # Part of every fingerprint: bump when what is written changes.
REQUIRED_COLUMNS = (F.USER_ID, F.ITEM_ID, F.CLICK, F.PURCHASE)
OPTIONAL_DEFAULTS: dict[str, object] = {F.RATING: np.nan, **F.MISSING_DEFAULTS}
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


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How interactions become labelled, split examples."""

    negatives_per_positive: int = 4
    purchase_min_rating: float = 4.0
    eval_fraction: float = 0.1
    valid_fraction: float = 0.1
    cold_user_max_interactions: int = F.COLD_USER_MAX_INTERACTIONS
    seed: int = 42

    def __post_init__(self) -> None:
        if self.negatives_per_positive < 0:
            raise ValueError("negatives_per_positive must be >= 0")
        for name in ("eval_fraction", "valid_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1)")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What build_* wrote: the directory ImportExampleGen reads, and its summary."""

    root: str
    manifest: dict

    def slices_at_least(self, min_examples: int) -> tuple[tuple[str, str], ...]:
        """(feature, value) slices with at least ``min_examples`` eval examples."""
        counts = self.manifest.get("eval_slice_counts", {})
        return tuple(
            (key, value)
            for key, by_value in sorted(counts.items())
            for value, count in sorted(by_value.items())
            if count >= min_examples
        )

    @property
    def baseline_rating_rmse(self) -> float | None:
        """Eval RMSE of predicting the training mean rating (None without ratings)."""
        return self.manifest.get("eval_global_mean_rmse")


# ----------------------------------------------------------------------------- labels


def label_ratings(ratings: pd.DataFrame, purchase_min_rating: float) -> pd.DataFrame:
    """Observed ratings become positives: click = 1, purchase = rating >= threshold."""
    out = ratings[[F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP]].copy()
    out[F.CLICK] = 1
    out[F.PURCHASE] = (out[F.RATING] >= purchase_min_rating).astype(np.int64)
    return out


def sample_negatives(
    positives: pd.DataFrame,
    all_items: np.ndarray,
    per_positive: int,
    seed: int,
    exclude: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Draw ``per_positive`` never-rated items per positive, per user, reproducibly.

    Items come without replacement while the user has enough unrated items, so a pair is
    rarely repeated; heavy users fall back to sampling with replacement. ``exclude`` holds
    every known (user, item) interaction, when it is wider than ``positives``.
    """
    columns = [F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP, F.CLICK, F.PURCHASE]
    if per_positive == 0 or positives.empty:
        return pd.DataFrame(columns=columns)
    rng = np.random.default_rng(seed)
    known = exclude if exclude is not None else positives
    rated_by_user = {
        user: np.unique(group.to_numpy()) for user, group in known.groupby(F.USER_ID)[F.ITEM_ID]
    }
    users, items, stamps = [], [], []
    for user, group in positives.sort_values([F.USER_ID, F.TIMESTAMP]).groupby(F.USER_ID):
        candidates = np.setdiff1d(all_items, rated_by_user.get(user, np.empty(0)))
        if candidates.size == 0:
            continue
        wanted = len(group) * per_positive
        picked = rng.choice(candidates, size=wanted, replace=wanted > candidates.size)
        users.append(np.full(wanted, user))
        items.append(picked)
        stamps.append(np.repeat(group[F.TIMESTAMP].to_numpy(), per_positive))
    negatives = pd.DataFrame(
        {
            F.USER_ID: np.concatenate(users),
            F.ITEM_ID: np.concatenate(items),
            F.TIMESTAMP: np.concatenate(stamps),
        }
    )
    negatives[F.RATING] = np.nan
    negatives[F.CLICK] = 0
    negatives[F.PURCHASE] = 0
    return negatives[columns]


def join_features(
    interactions: pd.DataFrame, users: pd.DataFrame | None, items: pd.DataFrame | None
) -> pd.DataFrame:
    """Attach user and item side features; absent ones get documented defaults."""
    out = interactions
    if users is not None:
        out = out.drop(columns=[c for c in F.USER_FEATURES if c in out.columns])
        out = out.merge(users, on=F.USER_ID, how="left")
    if items is not None:
        out = out.drop(columns=[c for c in F.ITEM_FEATURES if c in out.columns])
        out = out.merge(items, on=F.ITEM_ID, how="left")
    return fill_defaults(out)


def fill_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Add missing optional columns and fill gaps with ``names.MISSING_DEFAULTS``, so every
    example has every feature (an unknown age or year stays 0: Transform fills it)."""
    out = frame.copy()
    for column, default in OPTIONAL_DEFAULTS.items():
        if column not in out.columns:
            out[column] = default
        elif column != F.RATING:
            out[column] = out[column].fillna(default)
    return out


# ----------------------------------------------------------------------------- splits


def time_split(frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(past, recent): ``recent`` holds the latest ``fraction`` of rows by timestamp."""
    if frame[F.TIMESTAMP].nunique() <= 1:
        raise DataError("a time-based split needs a timestamp column with distinct values")
    cutoff = frame[F.TIMESTAMP].quantile(1.0 - fraction)
    recent = frame[F.TIMESTAMP] > cutoff
    return frame[~recent], frame[recent]


def carve_validation(
    train: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the most recent part of train (a seeded random part without timestamps)."""
    if train[F.TIMESTAMP].nunique() > 1:
        return time_split(train, fraction)
    held_out = np.random.default_rng(seed).random(len(train)) < fraction
    return train[~held_out], train[held_out]


def carve_validation_per_user(
    train: pd.DataFrame, fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's most recent ``fraction`` of rated interactions, at least one for
    a user with two or more (with the negatives drawn for them): for a split that is random
    in time, such as MovieLens u1."""
    rated = train[train[F.CLICK] == 1].sort_values([F.USER_ID, F.TIMESTAMP], kind="stable")
    count = rated.groupby(F.USER_ID)[F.TIMESTAMP].transform("size")
    keep = np.where(count >= 2, np.maximum(1, np.floor(fraction * count)), 0).astype(int)
    from_end = rated.groupby(F.USER_ID).cumcount(ascending=False)
    # Each user's cutoff: the timestamp of their first held-out rating; their negatives,
    # which carry the timestamp of the rating they were drawn for, follow it.
    cutoff = rated[from_end.to_numpy() < keep].groupby(F.USER_ID)[F.TIMESTAMP].min()
    held_out = (train[F.TIMESTAMP] >= train[F.USER_ID].map(cutoff).fillna(np.inf)).to_numpy()
    return train[~held_out], train[held_out]


def add_slice_columns(splits: Mapping[str, pd.DataFrame], cold_max: int) -> dict[str, pd.DataFrame]:
    """Add the slice-only columns: age_bucket, user_activity (cold/warm by the user's
    training clicks), item_popularity (by the item's training clicks) and genre (a list)."""
    clicked = splits["train"][splits["train"][F.CLICK] == 1]
    user_clicks = clicked[F.USER_ID].value_counts()
    item_clicks = clicked[F.ITEM_ID].value_counts()
    out = {}
    for name, frame in splits.items():
        frame = frame.copy()
        counts = frame[F.USER_ID].map(user_clicks).fillna(0)
        frame[F.USER_ACTIVITY] = np.where(counts <= cold_max, "cold", "warm")
        frame[F.ITEM_POPULARITY] = item_popularity(frame[F.ITEM_ID].map(item_clicks).fillna(0))
        frame[F.AGE_BUCKET] = age_bucket(frame[F.AGE])
        frame[F.GENRE] = genre_lists(frame[F.GENRES])
        out[name] = frame
    return out


def item_popularity(clicks: pd.Series) -> np.ndarray:
    """'cold' (<= 20 training clicks), 'mid' (<= 100) or 'popular'."""
    labels = np.full(len(clicks), "popular", dtype=object)
    values = clicks.to_numpy()
    for upper, label in reversed(ITEM_POPULARITY_BOUNDS):
        labels[values <= upper] = label
    return labels


def genre_lists(genres: pd.Series) -> list[list[str]]:
    """Split joined genres into lists; an item without genres is in the 'unknown' slice."""
    return [[g for g in str(text).split(F.GENRE_SEPARATOR) if g] or ["unknown"] for text in genres]


def age_bucket(age: pd.Series) -> np.ndarray:
    """MovieLens-1M style age groups; 'unknown' for a missing (<= 0) age."""
    labels = np.full(len(age), "unknown", dtype=object)
    values = age.to_numpy()
    for lower, label in AGE_BUCKETS:
        labels[values >= lower] = label
    return labels


# ----------------------------------------------------------------------------- validation


def validate_interactions(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check a bring-your-own interactions table; return it typed, or raise DataError.

    Every message names ``source`` and the problem: no rows, a missing column, a value that
    is not a number, or a label out of range.
    """
    if frame.empty:
        raise DataError(f"{source}: the file has no data rows")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}"
        )
    out = frame.copy()
    numeric = [c for c in (*F.INT_COLUMNS, *F.FLOAT_COLUMNS) if c in out.columns]
    for column in numeric:
        values = pd.to_numeric(out[column], errors="coerce")
        bad = values.isna() & out[column].notna() & (out[column].astype(str).str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{source}: column '{column}' must be numeric; row {row + 1} "
                f"has {out[column].iloc[row]!r}"
            )
        out[column] = values
    for column in (F.USER_ID, F.ITEM_ID, F.CLICK, F.PURCHASE):
        if out[column].isna().any():
            row = int(np.flatnonzero(out[column].isna().to_numpy())[0])
            raise DataError(f"{source}: column '{column}' is empty on row {row + 1}")
        if (out[column] != np.floor(out[column])).any():
            raise DataError(f"{source}: column '{column}' must hold integers")
    for label in (F.CLICK, F.PURCHASE):
        bad = ~out[label].isin([0, 1])
        if bad.any():
            raise DataError(
                f"{source}: label '{label}' must be 0 or 1; found "
                f"{sorted(out.loc[bad, label].unique().tolist())[:5]}"
            )
    if F.RATING in out.columns:
        rated = out[F.RATING].dropna()
        if (~np.isfinite(rated)).any() or (rated <= 0).any():
            raise DataError(
                f"{source}: label 'rating' must be a positive number or empty "
                f"(unknown); found {rated[(rated <= 0) | ~np.isfinite(rated)].iloc[0]}"
            )
    return out


RATINGS_COLUMNS = (F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP)


def read_ratings(path: str | os.PathLike) -> pd.DataFrame:
    """A MovieLens-style ratings CSV (user_id,item_id,rating,timestamp), checked."""
    path = _require_file(Path(path))
    frame = _read_csv_strings(path)
    missing = [c for c in RATINGS_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: a ratings file needs the columns "
            f"{','.join(RATINGS_COLUMNS)}; missing {', '.join(missing)}"
        )
    if frame.empty:
        raise DataError(f"{path}: the file has no data rows")
    out = frame[list(RATINGS_COLUMNS)].copy()
    for column in RATINGS_COLUMNS:
        values = pd.to_numeric(out[column], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(
                f"{path}: column '{column}' must be numeric; row {row + 1} has "
                f"{out[column].iloc[row]!r}"
            )
        out[column] = values
    bad = ~out[F.RATING].between(1, 5)
    if bad.any():
        raise DataError(
            f"{path}: ratings must lie in [1, 5]; row "
            f"{int(np.flatnonzero(bad.to_numpy())[0]) + 1} has "
            f"{out[F.RATING][bad].iloc[0]:g}"
        )
    for column in (F.USER_ID, F.ITEM_ID, F.TIMESTAMP):
        out[column] = out[column].astype(np.int64)
    return out


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return path


def _read_csv_strings(path: Path) -> pd.DataFrame:
    """A CSV as strings with stripped column names (empty cells missing), or a DataError."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: malformed CSV: {str(err).strip()}") from None
    frame.columns = [c.strip() for c in frame.columns]
    return frame


def read_interactions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a bring-your-own CSV or TFRecord file and validate it (see README contract)."""
    path = _require_file(Path(path))
    if path.suffix in (".tfrecord", ".gz") or path.name.endswith((".tfrecord.gz", ".tfr")):
        frame = _read_tfrecord(path)
    else:
        frame = _read_csv_strings(path)
    return validate_interactions(frame, str(path))


def _read_tfrecord(path: Path) -> pd.DataFrame:
    import tensorflow as tf  # Deferred: only this input format needs TensorFlow.

    compression = "GZIP" if path.suffix == ".gz" else ""
    rows = []
    try:
        for record in tf.data.TFRecordDataset(str(path), compression_type=compression):
            example = tf.train.Example.FromString(record.numpy())
            row = {}
            for key, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                values = list(getattr(feature, kind).value) if kind else []
                if values:
                    value = values[0]
                    row[key] = value.decode() if isinstance(value, bytes) else value
            rows.append(row)
    except tf.errors.OpError as err:
        raise DataError(
            f"{path}: not a readable TFRecord file of tf.Examples: " f"{err.message}"
        ) from None
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- writing


def to_record_batch(frame: pd.DataFrame) -> pa.RecordBatch:
    """One list column per example column, single-valued but for the string lists; an
    unknown rating is null."""
    arrays, names = [], []
    for column in F.EXAMPLE_COLUMNS:
        values = frame[column]
        if column in F.STRING_LIST_COLUMNS:
            arrays.append(
                pa.array(
                    [[str(v) for v in row] for row in values], type=pa.large_list(pa.large_binary())
                )
            )
            names.append(column)
            continue
        if column in F.INT_COLUMNS:
            flat = pa.array(values.to_numpy().astype(np.int64))
        elif column in F.FLOAT_COLUMNS:
            flat = pa.array(values.to_numpy().astype(np.float32))
        else:
            flat = pa.array(values.astype(str).to_numpy().astype(object), type=pa.large_binary())
        offsets = pa.array(np.arange(len(frame) + 1, dtype=np.int64))
        mask = pa.array(values.isna().to_numpy()) if column in F.FLOAT_COLUMNS else None
        arrays.append(pa.LargeListArray.from_arrays(offsets, flat, mask=mask))
        names.append(column)
    return pa.RecordBatch.from_arrays(arrays, names)


def write_examples(frame: pd.DataFrame, path: Path, chunk_rows: int = 50_000) -> None:
    """Write ``frame`` as gzipped tf.Examples with the C++ encoder of tfx_bsl."""
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    encoder = example_coder.RecordBatchToExamplesEncoder()
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for start in range(0, len(frame), chunk_rows):
            for record in encoder.encode(to_record_batch(frame.iloc[start : start + chunk_rows])):
                writer.write(record)


def write_dataset(
    splits: Mapping[str, pd.DataFrame], root: Path, manifest: dict, seed: int
) -> DatasetInfo:
    """Write every split as shuffled examples plus a manifest, atomically into ``root``."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=".staging-"))
    try:
        for index, name in enumerate(F.SPLITS):
            frame = splits[name].sample(frac=1.0, random_state=seed + index)
            (staging / name).mkdir()
            write_examples(frame.reset_index(drop=True), staging / name / "data.tfrecord.gz")
        manifest = {**manifest, **summarise(splits)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return DatasetInfo(root=str(root), manifest=manifest)


def summarise(splits: Mapping[str, pd.DataFrame]) -> dict:
    """Counts per split and the global-mean rating baseline used for the RMSE threshold."""
    summary: dict = {"splits": {}}
    for name, frame in splits.items():
        summary["splits"][name] = {
            "examples": len(frame),
            "clicks": int(frame[F.CLICK].sum()),
            "purchases": int(frame[F.PURCHASE].sum()),
            "rated": int(frame[F.RATING].notna().sum()),
            "users": int(frame[F.USER_ID].nunique()),
            "items": int(frame[F.ITEM_ID].nunique()),
        }
    summary["eval_slice_counts"] = {
        key: {
            str(value): int(count)
            for value, count in splits["eval"][key].explode().value_counts().sort_index().items()
        }
        for key in F.SLICE_FEATURES
    }
    train_ratings = splits["train"][F.RATING].dropna()
    eval_ratings = splits["eval"][F.RATING].dropna()
    if len(train_ratings) and len(eval_ratings):
        mean = float(train_ratings.mean())
        summary["train_rating_mean"] = mean
        summary["eval_global_mean_rmse"] = float(np.sqrt(((eval_ratings - mean) ** 2).mean()))
    return summary


# ----------------------------------------------------------------------------- builders


def _fingerprint(*parts: object) -> str:
    digest = hashlib.sha256(str(FORMAT_VERSION).encode())
    for part in parts:
        digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


def _file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def read_info(root: str) -> DatasetInfo | None:
    """The DatasetInfo of examples written by a build_* function (a local or a gs:// path),
    or None when ``root`` holds no manifest."""
    import tensorflow as tf

    path = f"{root.rstrip('/')}/{MANIFEST}"
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as handle:
        return DatasetInfo(root=root, manifest=json.load(handle))


def _cached(root: Path, fingerprint: str) -> DatasetInfo | None:
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") == fingerprint:
            log.info("Examples for this source and config already in %s; reusing them", root)
            return DatasetInfo(root=str(root), manifest=manifest)
    return None


def build_movielens(source_dir: Path, out_dir: Path, config: DataConfig) -> DatasetInfo:
    """MovieLens-100K with derived labels, sampled negatives and a time-based split."""
    source_dir = Path(source_dir)
    files = [
        p
        for p in source_dir.iterdir()
        if p.name in (*movielens.GROUPLENS_FILES, *movielens.RECBOLE_FILES)
    ]
    fingerprint = _fingerprint("movielens-time", _file_digest(files), config)
    root = Path(out_dir) / f"movielens-{fingerprint}"
    if cached := _cached(root, fingerprint):
        return cached
    tables = movielens.load(source_dir)
    positives = label_ratings(tables.ratings, config.purchase_min_rating)
    negatives = sample_negatives(
        positives, tables.items[F.ITEM_ID].to_numpy(), config.negatives_per_positive, config.seed
    )
    examples = join_features(
        pd.concat([positives, negatives], ignore_index=True), tables.users, tables.items
    )
    rest, eval_split = time_split(examples, config.eval_fraction)
    train, valid = carve_validation(rest, config.valid_fraction, config.seed)
    splits = add_slice_columns(
        {"train": train, "valid": valid, "eval": eval_split}, config.cold_user_max_interactions
    )
    manifest = {
        "fingerprint": fingerprint,
        "source": str(source_dir),
        "mode": "time",
        "config": dataclasses.asdict(config),
    }
    return write_dataset(splits, root, manifest, config.seed)


def build_from_ratings(
    train_path: Path, eval_path: Path, source_dir: Path, out_dir: Path, config: DataConfig
) -> DatasetInfo:
    """An explicit split of MovieLens-style ratings files (e.g. u1.base / u1.test), with
    side features from the MovieLens side files and negatives sampled as by default.

    Train negatives avoid the items the user rated in the train file only, so the eval file
    is read for nothing but the eval split. Eval negatives avoid every known rating.
    Validation is each user's most recent ``valid_fraction`` of the train file.
    """
    paths = [_require_file(Path(p)) for p in (train_path, eval_path)]
    side = [
        p
        for p in Path(source_dir).iterdir()
        if p.name in (*movielens.GROUPLENS_FILES, *movielens.RECBOLE_FILES)
    ]
    fingerprint = _fingerprint("ratings", _file_digest(paths), _file_digest(side), config)
    root = Path(out_dir) / f"ratings-{fingerprint}"
    if cached := _cached(root, fingerprint):
        return cached
    tables = movielens.load(Path(source_dir))
    all_items = tables.items[F.ITEM_ID].to_numpy()
    train_pos = label_ratings(read_ratings(paths[0]), config.purchase_min_rating)
    eval_pos = label_ratings(read_ratings(paths[1]), config.purchase_min_rating)
    train_neg = sample_negatives(train_pos, all_items, config.negatives_per_positive, config.seed)
    eval_neg = sample_negatives(
        eval_pos,
        all_items,
        config.negatives_per_positive,
        config.seed + 1,
        exclude=pd.concat([train_pos, eval_pos], ignore_index=True),
    )
    train = join_features(
        pd.concat([train_pos, train_neg], ignore_index=True), tables.users, tables.items
    )
    eval_split = join_features(
        pd.concat([eval_pos, eval_neg], ignore_index=True), tables.users, tables.items
    )
    train, valid = carve_validation_per_user(train, config.valid_fraction)
    splits = add_slice_columns(
        {"train": train, "valid": valid, "eval": eval_split}, config.cold_user_max_interactions
    )
    manifest = {
        "fingerprint": fingerprint,
        "source": [str(p) for p in paths],
        "side_features": str(source_dir),
        "mode": "explicit-ratings",
        "config": dataclasses.asdict(config),
    }
    return write_dataset(splits, root, manifest, config.seed)


def build_from_files(
    train_path: Path, eval_path: Path | None, out_dir: Path, config: DataConfig
) -> DatasetInfo:
    """Bring-your-own interactions with real click/purchase labels.

    With ``eval_path`` the two files are the train and eval splits as they are (explicit
    mode); without it, ``train_path`` is split by time like the default data.
    """
    paths = [_require_file(Path(p)) for p in (train_path, eval_path) if p]
    fingerprint = _fingerprint("files", _file_digest(paths), bool(eval_path), config)
    root = Path(out_dir) / f"custom-{fingerprint}"
    if cached := _cached(root, fingerprint):
        return cached
    train = fill_defaults(read_interactions(train_path))
    if eval_path:
        eval_split = fill_defaults(read_interactions(eval_path))
        mode = "explicit"
    else:
        train, eval_split = time_split(train, config.eval_fraction)
        mode = "time"
    train, valid = carve_validation(train, config.valid_fraction, config.seed)
    splits = add_slice_columns(
        {"train": train, "valid": valid, "eval": eval_split}, config.cold_user_max_interactions
    )
    manifest = {
        "fingerprint": fingerprint,
        "source": [str(p) for p in paths],
        "mode": mode,
        "config": dataclasses.asdict(config),
    }
    return write_dataset(splits, root, manifest, config.seed)
