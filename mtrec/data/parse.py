"""Read raw records one at a time, check them, and name the file and row of any bad one.

The data component's Beam readers call these; a bad record becomes a ``RowError`` that the
component reports as one line (``<file>: <problem>``) after its Beam job, never a traceback.
Rows are dicts of the canonical columns (``names.EXAMPLE_COLUMNS`` before the slice columns).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from mtrec import names as F
from mtrec.data import source as S
from mtrec.data.movielens import GROUPLENS_GENRES
from mtrec.errors import DataError

Row = dict[str, object]

REQUIRED_COLUMNS = (F.USER_ID, F.ITEM_ID, F.CLICK, F.PURCHASE)
RATINGS_COLUMNS = (F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP)
# What a log row lacks gets the shared missing-value defaults; an absent rating is unknown.
OPTIONAL_DEFAULTS: dict[str, object] = {F.RATING: None, **F.MISSING_DEFAULTS}
_TITLE_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


class RowError(NamedTuple):
    """A bad record: its file, its 1-based data row (0: the file as a whole), the problem."""

    path: str
    row: int
    message: str

    def as_error(self) -> DataError:
        return DataError(f"{self.path}: {self.message}")


class RowProblemError(ValueError):
    """A record's problem, before the reader adds its file and row."""


# ----------------------------------------------------------------------------- values


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    text = text.strip()
    return text or None


def _number(column: str, value: object, row: int) -> float | int | None:
    """A numeric cell (None when empty), or a RowProblemError naming the column and row."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = _text(value)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise RowProblemError(
            f"column '{column}' must be numeric; row {row} has {text!r}"
        ) from None


def _integer(column: str, value: float | int, row: int) -> int:
    """An integer column's value, which a tf.Example's int64 list must hold."""
    if isinstance(value, float) and (not math.isfinite(value) or value != math.floor(value)):
        raise RowProblemError(f"column '{column}' must hold integers; row {row} has {value!r}")
    if not F.INT64_MIN <= value <= F.INT64_MAX:
        raise RowProblemError(
            f"column '{column}' must hold 64-bit integers; row {row} has {int(value)}"
        )
    return int(value)


# ----------------------------------------------------------------------------- your logs


def check_log_columns(columns: list[str], path: str) -> None:
    """A logs file's header must name every required column."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing required column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}"
        )


def log_row(raw: Mapping[str, object], row: int) -> Row:
    """One labelled interaction of your own logs, typed and checked, defaults filled."""
    out: Row = {}
    for column in (*F.INT_COLUMNS, *F.FLOAT_COLUMNS):
        if column in raw:
            out[column] = _number(column, raw[column], row)
    for column in (F.USER_ID, F.ITEM_ID, F.CLICK, F.PURCHASE):
        if out.get(column) is None:
            raise RowProblemError(f"column '{column}' is empty on row {row}")
    for column in F.INT_COLUMNS:
        if out.get(column) is not None:
            out[column] = _integer(column, out[column], row)
    for label in (F.CLICK, F.PURCHASE):
        if out[label] not in (0, 1):
            raise RowProblemError(f"label '{label}' must be 0 or 1; row {row} has {out[label]}")
    rating = out.get(F.RATING)
    if rating is not None and (not math.isfinite(rating) or rating <= 0):
        raise RowProblemError(
            f"label 'rating' must be a positive number or empty (unknown); row {row} has {rating}"
        )
    for column in F.STRING_COLUMNS:
        if column in raw and column in OPTIONAL_DEFAULTS:
            out[column] = _text(raw[column])
    for column, default in OPTIONAL_DEFAULTS.items():
        if out.get(column) is None:
            out[column] = default
    out[F.RATING] = float(rating) if rating is not None else None
    return out


def csv_rows(path: str, lines: Iterator[str]) -> Iterator[Row | RowError]:
    """Every data row of a logs CSV, or a RowError for a bad one (reading goes on)."""
    reader = csv.reader(lines)
    header = [c.strip() for c in next(reader, [])]
    count = 0
    for count, fields in enumerate(reader, start=1):
        if not fields:
            continue
        try:
            if len(fields) > len(header):
                raise RowProblemError(
                    f"row {count} has {len(fields)} fields, the header {len(header)}"
                )
            yield log_row(dict(zip(header, fields, strict=False)), count)
        except RowProblemError as problem:
            yield RowError(path, count, str(problem))
    if count == 0:
        yield RowError(path, 0, "the file has no data rows")


def example_row(serialized: bytes, row: int) -> Row:
    """A tf.Example of your logs as a row (its first value per feature), checked."""
    import tensorflow as tf  # Deferred: only this input format needs TensorFlow.

    example = tf.train.Example.FromString(serialized)
    raw: dict[str, object] = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if values:
            raw[key] = values[0]
    return log_row(raw, row)


# ----------------------------------------------------------------------------- ratings


def ratings_rows(path: str, lines: Iterator[str]) -> Iterator[Row | RowError]:
    """MovieLens-style ratings: a CSV with the header user_id,item_id,rating,timestamp, or
    headerless tab-separated lines as in u.data and u1.base. Ratings lie in [1, 5]."""
    first = next(lines, "")
    if not first.strip():
        yield RowError(path, 0, "the file is empty")
        return
    delimiter = "\t" if "\t" in first else ","
    cells = [c.strip().split(":")[0] for c in first.rstrip("\r\n").split(delimiter)]
    if all(_looks_numeric(c) for c in cells):
        header = list(RATINGS_COLUMNS)
        lines = _chain(first, lines)
    else:
        header = cells
        missing = [c for c in RATINGS_COLUMNS if c not in header]
        if missing:
            yield RowError(
                path,
                0,
                f"a ratings file needs the columns {','.join(RATINGS_COLUMNS)}; "
                f"missing {', '.join(missing)}",
            )
            return
    count = 0
    for count, fields in enumerate(csv.reader(lines, delimiter=delimiter), start=1):
        try:
            yield rating_row(dict(zip(header, fields, strict=False)), count)
        except RowProblemError as problem:
            yield RowError(path, count, str(problem))
    if count == 0:
        yield RowError(path, 0, "the file has no data rows")


def rating_row(raw: Mapping[str, object], row: int) -> Row:
    """An observed rating: a positive example (click 1, purchase set later), checked."""
    values = {}
    for column in RATINGS_COLUMNS:
        value = _number(column, raw.get(column), row)
        if value is None:
            raise RowProblemError(f"column '{column}' must be numeric; row {row} has ''")
        values[column] = value
    if not 1 <= values[F.RATING] <= 5:
        raise RowProblemError(f"ratings must lie in [1, 5]; row {row} has {values[F.RATING]:g}")
    return {
        F.USER_ID: _integer(F.USER_ID, values[F.USER_ID], row),
        F.ITEM_ID: _integer(F.ITEM_ID, values[F.ITEM_ID], row),
        F.RATING: float(values[F.RATING]),
        F.TIMESTAMP: _integer(F.TIMESTAMP, values[F.TIMESTAMP], row),
    }


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


# ----------------------------------------------------------------------------- side files


def user_rows(path: str, lines: Iterator[str], layout: str) -> Iterator[Row | RowError]:
    """MovieLens users: user_id, age, gender, occupation and the zip code's first 3 chars."""
    for count, fields in _side_records(lines, layout):
        try:
            record = dict(
                zip(("user_id", "age", "gender", "occupation", "zip_code"), fields, strict=False)
            )
            yield {
                F.USER_ID: _integer(F.USER_ID, _number(F.USER_ID, record["user_id"], count), count),
                F.AGE: _integer(F.AGE, _number(F.AGE, record.get("age"), count) or 0, count),
                F.GENDER: _text(record.get("gender")) or F.MISSING_DEFAULTS[F.GENDER],
                F.OCCUPATION: _text(record.get("occupation")) or F.MISSING_DEFAULTS[F.OCCUPATION],
                F.ZIP_PREFIX: (_text(record.get("zip_code")) or "").upper()[:3]
                or F.MISSING_DEFAULTS[F.ZIP_PREFIX],
            }
        except (RowProblemError, KeyError) as problem:
            yield RowError(path, count, str(problem) or f"row {count} is malformed")


def item_rows(path: str, lines: Iterator[str], layout: str) -> Iterator[Row | RowError]:
    """MovieLens items: item_id, title (without its year), year (0: unknown), genres."""
    for count, fields in _side_records(lines, layout):
        try:
            if layout == S.GROUPLENS:
                flags = fields[5 : 5 + len(GROUPLENS_GENRES)]
                genres = [g for g, on in zip(GROUPLENS_GENRES, flags, strict=False) if on == "1"]
                title = _TITLE_YEAR.sub("", fields[1])
                year_text = fields[2].strip()[-4:]
            else:
                genres = fields[3].split() if len(fields) > 3 else []
                title, year_text = fields[1], fields[2]
            year = _number(F.YEAR, year_text, count) if _looks_numeric(year_text) else None
            yield {
                F.ITEM_ID: _integer(F.ITEM_ID, _number(F.ITEM_ID, fields[0], count), count),
                F.TITLE: title.strip(),
                F.YEAR: int(year) if year else 0,
                F.GENRES: F.GENRE_SEPARATOR.join(genres),
            }
        except (RowProblemError, IndexError) as problem:
            yield RowError(path, count, str(problem) or f"row {count} is malformed")


def _side_records(lines: Iterator[str], layout: str) -> Iterator[tuple[int, list[str]]]:
    """(row, fields) of a side file: '|'-separated (GroupLens) or a TSV with a header."""
    if layout == S.RECBOLE:
        next(lines, None)
        records = (line.rstrip("\r\n").split("\t") for line in lines)
    else:
        records = (line.rstrip("\r\n").split("|") for line in lines)
    for count, fields in enumerate(records, start=1):
        if any(f.strip() for f in fields):
            yield count, fields
