"""Interaction logs laid out for continuous training: one folder per span, ``span-{SPAN}/``
(TFX ExampleGen's span spec: any digits, zero-padding allowed), each holding CSV files in the
bring-your-own contract (README, "Bring your own data").

``write_movielens_spans`` cuts MovieLens-100K by time into such spans (a week each by
default), ratings turned into impressions; ``mtrec.data.synth.write_spans`` writes synthetic
ones whose tastes drift. ``find_spans`` lists the span folders of a logs directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mtrec import names as F
from mtrec.data import movielens, synth
from mtrec.data.config import DataConfig
from mtrec.errors import DataError
from mtrec.files import output_folder

MOVIELENS_FILE = "part-00000.csv"
MIN_SPAN_RATINGS = 200  # Fewer ratings than this cannot be split: merged into the next span.
WEEK_DAYS = 7


def find_spans(logs_dir: str | os.PathLike) -> dict[int, Path]:
    """Span number -> its folder under ``logs_dir``, in span order (``span-3`` and
    ``span-0003`` are both span 3; two folders for one span are an error)."""
    found: dict[int, Path] = {}
    for folder in sorted(Path(logs_dir).iterdir()):
        match = synth.SPAN_PATTERN.fullmatch(folder.name)
        if not (match and folder.is_dir()):
            continue
        span = int(match.group(1))
        if span in found:
            raise DataError(f"{logs_dir}: span {span} twice: {found[span].name}, {folder.name}")
        found[span] = folder
    return dict(sorted(found.items()))


def span_files(folder: str | os.PathLike) -> list[Path]:
    """The data files of a span folder, as a reader takes them: not hidden (``.``), not
    metadata (``_``)."""
    return sorted(
        p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(("_", "."))
    )


def cut_weeks(timestamps: np.ndarray, days: int, min_rows: int) -> np.ndarray:
    """Each timestamp's span, 1, 2, ...: periods of ``days`` from the first timestamp, a
    period with fewer than ``min_rows`` rows merged into the next one (the last into the
    one before), so spans are consecutive numbers and each has ``min_rows`` or more."""
    if timestamps.size == 0:
        return np.zeros(0, dtype=np.int64)
    period = (timestamps - timestamps.min()) // (days * synth.DAY_S)
    periods, counts = np.unique(period, return_counts=True)
    span_of: dict[int, int] = {}
    span, pending, open_periods = 1, 0, []
    for value, count in zip(periods.tolist(), counts.tolist(), strict=True):
        open_periods.append(value)
        pending += count
        if pending >= min_rows:
            span_of |= dict.fromkeys(open_periods, span)
            span, pending, open_periods = span + 1, 0, []
    # A short tail joins the last span (or is the only one).
    span_of |= dict.fromkeys(open_periods, max(span - 1, 1))
    lookup = np.array([span_of[p] for p in periods.tolist()])
    return lookup[np.searchsorted(periods, period)]


def sample_unrated(
    users: np.ndarray, rated: pd.DataFrame, items: np.ndarray, per_row: int, seed: int
) -> np.ndarray:
    """``per_row`` items per entry of ``users``, uniform over ``items``, each one the user
    never rated (in ``rated``); -1 where the user rated every item. Deterministic by seed."""
    rng = np.random.default_rng(seed)
    items = np.unique(items)
    size = int(items.max()) + 1
    codes = np.unique(
        rated[F.USER_ID].to_numpy(np.int64) * size + rated[F.ITEM_ID].to_numpy(np.int64)
    )
    rated_count = rated.groupby(F.USER_ID)[F.ITEM_ID].nunique()
    full = set(rated_count.index[rated_count.to_numpy() >= items.size].tolist())
    owners = np.repeat(users.astype(np.int64), per_row)
    picked = np.full(owners.size, -1, dtype=np.int64)
    todo = np.flatnonzero(~np.isin(owners, list(full)))
    while todo.size:
        draws = items[rng.integers(0, items.size, todo.size)]
        hit = np.isin(owners[todo] * size + draws, codes)
        picked[todo[~hit]] = draws[~hit]
        todo = todo[hit]
    return picked.reshape(users.size, per_row)


def movielens_impressions(
    tables: movielens.MovieLensTables, negatives: int, seed: int
) -> pd.DataFrame:
    """Every rating as a clicked impression (purchased at DataConfig's purchase_min_rating
    or above), followed by ``negatives`` unclicked impressions of items the user never
    rated, at the same time; in time order, side features joined, columns in synth.COLUMNS
    order (unknown side features left empty: the contract's defaults)."""
    ratings = tables.ratings.sort_values(
        [F.TIMESTAMP, F.USER_ID, F.ITEM_ID], kind="stable"
    ).reset_index(drop=True)
    n = len(ratings)
    purchase_min = DataConfig().purchase_min_rating
    positives = pd.DataFrame(
        {
            F.USER_ID: ratings[F.USER_ID].to_numpy(),
            F.ITEM_ID: ratings[F.ITEM_ID].to_numpy(),
            F.RATING: ratings[F.RATING].to_numpy(dtype=float),
            F.CLICK: 1,
            F.PURCHASE: (ratings[F.RATING].to_numpy() >= purchase_min).astype(int),
            F.TIMESTAMP: ratings[F.TIMESTAMP].to_numpy(),
            "_order": np.arange(n) * (negatives + 1),
        }
    )
    frames = [positives]
    if negatives > 0:
        catalog = np.union1d(tables.items[F.ITEM_ID].to_numpy(), ratings[F.ITEM_ID].to_numpy())
        drawn = sample_unrated(ratings[F.USER_ID].to_numpy(), ratings, catalog, negatives, seed)
        keep = drawn.ravel() >= 0
        source = np.repeat(np.arange(n), negatives)[keep]
        frames.append(
            pd.DataFrame(
                {
                    F.USER_ID: positives[F.USER_ID].to_numpy()[source],
                    F.ITEM_ID: drawn.ravel()[keep],
                    F.RATING: np.nan,
                    F.CLICK: 0,
                    F.PURCHASE: 0,
                    F.TIMESTAMP: positives[F.TIMESTAMP].to_numpy()[source],
                    "_order": (
                        source * (negatives + 1) + np.tile(np.arange(1, negatives + 1), n)[keep]
                    ),
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True).sort_values("_order", kind="stable")
    users = tables.users.drop_duplicates(F.USER_ID).set_index(F.USER_ID)
    items = tables.items.drop_duplicates(F.ITEM_ID).set_index(F.ITEM_ID)
    rows = rows.join(users[list(F.USER_FEATURES)], on=F.USER_ID)
    rows = rows.join(items[list(F.ITEM_FEATURES)], on=F.ITEM_ID)
    for column in (F.RATING, F.AGE, F.YEAR):  # Whole numbers print without ".0".
        values = rows[column]
        if values.dropna().mod(1).eq(0).all():
            rows[column] = values.round().astype("Int64")
    return rows[list(synth.COLUMNS)].reset_index(drop=True)


def write_movielens_spans(
    movielens_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    days: int = WEEK_DAYS,
    negatives: int = 4,
    seed: int = 42,
    min_ratings: int = MIN_SPAN_RATINGS,
) -> list[int]:
    """MovieLens-100K as continuous-training logs: ``span-0001/part-00000.csv`` ... under
    ``out_dir``, one per ``days`` of ratings (a short one merged into the next), each rating
    an impression plus ``negatives`` sampled ones. Returns the span numbers."""
    if days < 1 or negatives < 0 or min_ratings < 1:
        raise ValueError("days and min_ratings must be at least 1, negatives at least 0")
    rows = movielens_impressions(movielens.load(Path(movielens_dir)), negatives, seed)
    positives = rows[F.CLICK].to_numpy() == 1
    # Spans are cut on the ratings; each rating's negatives share its time, hence its span.
    stamps = rows[F.TIMESTAMP].to_numpy(np.int64)
    span_of_rating = cut_weeks(stamps[positives], days, min_ratings)
    span_of_row = span_of_rating[np.cumsum(positives) - 1]
    out = output_folder(out_dir)
    synth.clear_spans(out)
    folders = []
    for span in np.unique(span_of_row).tolist():
        part = rows[span_of_row == span]
        folder = out / synth.span_name(span)
        folder.mkdir(exist_ok=True)
        temporary = folder / f".{MOVIELENS_FILE}.tmp"
        part.to_csv(temporary, index=False)
        temporary.rename(folder / MOVIELENS_FILE)
        folders.append(
            {
                "name": folder.name,
                "span": span,
                "start": int(part[F.TIMESTAMP].min()),
                "end": int(part[F.TIMESTAMP].max()) + 1,
                "rows": len(part),
                "ratings": int(part[F.CLICK].sum()),
            }
        )
    manifest = {
        "source": str(Path(movielens_dir).resolve()),
        "days": days,
        "negatives": negatives,
        "seed": seed,
        "min_ratings": min_ratings,
        "columns": list(synth.COLUMNS),
        "folders": folders,
    }
    (out / synth.SPANS_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return [f["span"] for f in folders]
