"""`mtrec score` and `mtrec recommend`: a pushed model over files, without a server.

Input files are CSV (every value read as text), JSON Lines (.jsonl) or TFRecord files of
tf.Example (.tfrecord, .tfrecord.gz gzip-compressed, as the pipeline writes its examples).
Rows stream through in batches; serving/offline.py types each value by the model's raw
feature spec, so how a value looks ("551", 1995.0) never decides its type.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mtrec import names as F
from mtrec.cli.common import DEFAULT_OUTPUT
from mtrec.errors import DataError, MtrecError

BATCH = 4096
FORMATS_HELP = (
    "CSV with a header, JSON Lines (.jsonl: one object per line) or TFRecord of tf.Example "
    "(.tfrecord, .tfrecord.gz gzip-compressed, e.g. the pipeline's examples; their labels "
    "are ignored)"
)
ID_SPEC = {F.USER_ID: "int64", F.ITEM_ID: "int64"}


class RowFile:
    """Rows of one input file as dicts of raw values, numbered as its format counts them
    (CSV: data row, JSON Lines: line, TFRecord: record), with every column seen."""

    def __init__(self, path: str, required: tuple[str, ...], what: str) -> None:
        self.path = Path(path)
        self.required = required
        self.what = what
        self.columns: set[str] = set()
        if not self.path.is_file():
            raise MtrecError(f"{self.path}: no such file")
        name = self.path.name.lower()
        if name.endswith((".tfrecord", ".tfrecord.gz")):
            self.kind, self.unit = "tfrecord", "record"
        elif name.endswith(".jsonl"):
            self.kind, self.unit = "jsonl", "line"
        else:
            self.kind, self.unit = "csv", "row"
        self._chunks = self._open_csv() if self.kind == "csv" else None

    def where(self, number: int) -> str:
        return f"{self.path}, {self.unit} {number}"

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        reader = {"csv": self._csv_rows, "jsonl": self._jsonl_rows, "tfrecord": self._tf_rows}
        for number, row in reader[self.kind]():
            self.columns.update(row)
            yield number, row

    def batches(self, size: int = BATCH) -> Iterator[list[tuple[int, dict[str, Any]]]]:
        batch: list[tuple[int, dict[str, Any]]] = []
        for item in self.rows():
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def note_ignored(self, used: set[str]) -> None:
        """One note on stderr for the columns no model input reads (known pipeline columns,
        such as labels and slices, are left out silently)."""
        ignored = sorted(self.columns - used - set(F.EXAMPLE_COLUMNS))
        if ignored:
            print(
                f"mtrec: note: {self.path}: ignored column(s) {', '.join(ignored)}: "
                "not features of the model",
                file=sys.stderr,
            )

    # ---------------------------------------------------------------------------- formats

    def _csv_error(self, err: Exception) -> MtrecError:
        return MtrecError(f"{self.path}: not a readable CSV ({str(err).splitlines()[0]})")

    def _open_csv(self) -> Iterator[Any]:
        """Chunks of the CSV, every value as text; the header is checked here, at once."""
        import pandas as pd

        options = {"dtype": str, "keep_default_na": False, "encoding": "utf-8"}
        try:
            columns = [str(c).strip() for c in pd.read_csv(self.path, nrows=0, **options)]
            chunks = pd.read_csv(self.path, chunksize=BATCH, **options)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise self._csv_error(err) from None
        missing = [c for c in self.required if c not in columns]
        if missing:
            raise MtrecError(
                f"{self.path}: {self.what} needs column(s) {', '.join(missing)}; "
                f"found {', '.join(columns) or 'none'}"
            )
        return chunks

    def _csv_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        import pandas as pd

        number = 0
        try:
            for chunk in self._chunks or ():
                chunk.columns = [str(c).strip() for c in chunk.columns]
                for row in chunk.to_dict("records"):
                    number += 1
                    yield number, row
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise self._csv_error(err) from None

    def _jsonl_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            with open(self.path, encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DataError(f"{self.where(number)}: not JSON ({err.msg})") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{self.where(number)}: not a JSON object")
                    yield number, row
        except UnicodeDecodeError as err:
            raise DataError(f"{self.path}: not UTF-8 text ({err.reason})") from None

    def _tf_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        import tensorflow as tf
        from google.protobuf.message import DecodeError

        compression = "GZIP" if self.path.name.lower().endswith(".gz") else ""
        records = tf.data.TFRecordDataset(str(self.path), compression_type=compression)
        number = 0
        try:
            for record in records:
                number += 1
                try:
                    example = tf.train.Example.FromString(record.numpy())
                except DecodeError:
                    raise DataError(f"{self.where(number)}: not a tf.Example") from None
                row: dict[str, Any] = {}
                for key, feature in example.features.feature.items():
                    kind = feature.WhichOneof("kind")
                    values = list(getattr(feature, kind).value) if kind else []
                    if values:  # No value: the feature is missing.
                        row[key] = values[0] if len(values) == 1 else values
                yield number, row
        except tf.errors.OpError as err:
            raise DataError(
                f"{self.path}: not a readable TFRecord file of tf.Examples "
                f"({err.message.strip().splitlines()[0]})"
            ) from None


class MovieLensJoin:
    """MovieLens-100K's side features by id (--join-movielens), for score (users and items)
    and recommend (users only). They replace a row's own values for the ids MovieLens
    knows; a row with an id it does not know keeps its own values (or their defaults)."""

    def __init__(self, items: bool) -> None:
        from mtrec.data import movielens

        tables = movielens.load(movielens.fetch())
        self.sides = [(F.USER_ID, self._by_id(tables.users, F.USER_ID, F.USER_FEATURES))]
        if items:
            self.sides.append((F.ITEM_ID, self._by_id(tables.items, F.ITEM_ID, F.ITEM_FEATURES)))

    @staticmethod
    def _by_id(table: Any, key: str, features: tuple[str, ...]) -> dict[int, dict[str, Any]]:
        columns = [c for c in features if c in table.columns]
        return {int(row[key]): {c: row[c] for c in columns} for row in table.to_dict("records")}

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        joined = dict(row)
        for key, table in self.sides:
            joined.update(table.get(row[key], {}))
        return joined


def _typed(
    source: RowFile,
    batch: list[tuple[int, dict[str, Any]]],
    spec: dict[str, str],
    join: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    """The batch typed by the model's spec; joined features are typed as well."""
    from mtrec.serving.offline import coerce_row

    rows = []
    for number, raw in batch:
        where = source.where(number)
        row = coerce_row(raw, spec, where)
        if join is not None:
            row = coerce_row(join(row), spec, where)
        rows.append(row)
    return rows


def _load_model(path: str) -> tuple[Path, Any]:
    from mtrec.serving import offline

    model_dir = offline.resolve_model_dir(path)
    return model_dir, offline.load(model_dir)


@contextlib.contextmanager
def _csv_output(path: str, columns: list[str]) -> Iterator[csv.DictWriter]:
    """A CSV written row by row; it replaces ``path`` only when complete, and an error
    leaves neither a half-written output nor its staging file."""
    from mtrec.files import staged_file

    with staged_file(path) as staging:
        try:
            with open(staging, "w", newline="", encoding="utf-8") as file:
                writer = csv.DictWriter(file, columns)
                writer.writeheader()
                yield writer
        except BaseException:
            staging.unlink(missing_ok=True)
            raise


def cmd_score(args: argparse.Namespace) -> int:
    from mtrec.serving import offline

    source = RowFile(args.input, (F.USER_ID, F.ITEM_ID), "scoring")
    model_dir, model = _load_model(args.model)
    spec = offline.raw_feature_spec(model)
    join = MovieLensJoin(items=True) if args.join_movielens else None
    pairs = 0
    with _csv_output(args.output, [F.USER_ID, F.ITEM_ID, *F.HEADS]) as output:
        for batch in source.batches():
            rows = _typed(source, batch, spec, join)
            scores = offline.score_rows(model, rows)
            pairs += len(rows)
            output.writerows(
                [
                    {F.USER_ID: r[F.USER_ID], F.ITEM_ID: r[F.ITEM_ID], **s}
                    for r, s in zip(rows, scores, strict=True)
                ]
            )
    source.note_ignored(set(spec))
    print(f"Scored {pairs} pairs with {model_dir}; wrote {args.output}")
    return 0


def _seen_items(path: str) -> dict[int, set[int]]:
    from mtrec.serving.offline import coerce_row

    source = RowFile(path, (F.USER_ID, F.ITEM_ID), "--exclude-seen")
    seen: dict[int, set[int]] = {}
    for number, raw in source.rows():
        row = coerce_row(raw, ID_SPEC, source.where(number))
        seen.setdefault(row[F.USER_ID], set()).add(row[F.ITEM_ID])
    return seen


def cmd_recommend(args: argparse.Namespace) -> int:
    from mtrec.serving import offline

    if args.k < 1:
        raise MtrecError("--k must be at least 1")
    source = RowFile(args.users, (F.USER_ID,), "recommending")
    seen = _seen_items(args.exclude_seen) if args.exclude_seen else {}
    model_dir, model = _load_model(args.model)
    try:
        spec = offline.user_feature_spec(model)
    except MtrecError as err:
        raise MtrecError(f"{model_dir}: {err}") from None
    join = MovieLensJoin(items=False) if args.join_movielens else None
    columns = [F.USER_ID, "rank", F.ITEM_ID, "score", *F.HEADS]
    users = 0
    with _csv_output(args.output, columns) as output:
        for batch in source.batches():
            rows = _typed(source, batch, spec, join)
            output.writerows(offline.recommend_rows(model, rows, args.k, seen))
            users += len(rows)
    source.note_ignored(set(spec))
    print(f"Wrote top-{args.k} items for {users} users to {args.output} ({model_dir})")
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """score, recommend."""
    score = commands.add_parser("score", help="score user_id,item_id pairs with a pushed model")
    score.add_argument(
        "--model",
        default=f"{DEFAULT_OUTPUT}/serving_model",
        help="a pushed version folder, or the push folder (its latest version)",
    )
    score.add_argument(
        "--input",
        required=True,
        help=f"pairs to score: {FORMATS_HELP}. Columns: user_id, item_id and any of the "
        "features age, gender, occupation, zip_prefix, genres, year, title, each typed as the "
        "model reads it; an empty or NaN value means unknown (as in training); other columns "
        "are ignored",
    )
    score.add_argument("--output", required=True, help="CSV to write")
    score.add_argument(
        "--join-movielens",
        action="store_true",
        help="add MovieLens-100K's user and item features by id",
    )
    score.set_defaults(func=cmd_score)

    recommend = commands.add_parser("recommend", help="top-k items per user, with head scores")
    recommend.add_argument(
        "--model",
        default=f"{DEFAULT_OUTPUT}/serving_model",
        help="a pushed version folder, or the push folder",
    )
    recommend.add_argument(
        "--users",
        required=True,
        help="users: CSV with a header, JSON Lines (.jsonl: one object per line) or "
        "TFRecord of tf.Example (.tfrecord, .tfrecord.gz), with "
        "user_id and any of age, gender, occupation, zip_prefix (empty or NaN: unknown); "
        "other columns are ignored",
    )
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument(
        "--exclude-seen",
        metavar="RATINGS",
        help="CSV (or .jsonl, .tfrecord[.gz]) of user_id,item_id[,...]: items each user "
        "already has",
    )
    recommend.add_argument("--output", required=True, help="CSV to write")
    recommend.add_argument(
        "--join-movielens", action="store_true", help="add MovieLens-100K's user features by id"
    )
    recommend.set_defaults(func=cmd_recommend)
