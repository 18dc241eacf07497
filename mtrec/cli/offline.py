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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mtrec import names as F
from mtrec.cli.common import DEFAULT_OUTPUT
from mtrec.cli.rows import FORMATS_HELP, RowFile
from mtrec.errors import MtrecError

ID_SPEC = {F.USER_ID: "int64", F.ITEM_ID: "int64"}
# Output names that promise a format these commands do not write (they write plain CSV).
OTHER_OUTPUT_FORMATS = (".gz", ".jsonl", ".json", ".tfrecord")


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


def _check_csv_output(path: str) -> None:
    """Refuse, before any work, an output named as another format (e.g. ``.jsonl`` or
    ``.csv.gz``): a reader of that name would fail on the plain CSV written into it."""
    suffix = next((s for s in OTHER_OUTPUT_FORMATS if str(path).lower().endswith(s)), None)
    if suffix:
        raise MtrecError(f"--output {path}: the output is plain CSV; name it .csv, not {suffix}")


@contextlib.contextmanager
def _csv_output(path: str, columns: list[str]) -> Iterator[csv.DictWriter]:
    """A CSV written row by row; it replaces ``path`` only when complete, and an error
    leaves neither a half-written output nor its staging file."""
    from mtrec.files import staged_file

    with staged_file(path) as staging, open(staging, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        yield writer


def cmd_score(args: argparse.Namespace) -> int:
    from mtrec.serving import offline

    _check_csv_output(args.output)
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
    _check_csv_output(args.output)
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
        "features age, gender, occupation, zip_prefix, history, genres, year, title, each "
        "typed as the model reads it; history is the user's earlier items, newest first, as "
        "'item[:rating]' tokens split by spaces (e.g. '50:5 172 133:4'); an empty or NaN value "
        "means unknown (as in training); other columns are ignored",
    )
    score.add_argument("--output", required=True, help="CSV to write (plain, not gzipped)")
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
        help=f"users: {FORMATS_HELP}. Columns: user_id and any of age, gender, occupation, "
        "zip_prefix, history (the user's earlier items, newest first, e.g. '50:5 172 133:4': "
        "a user the model never saw is ranked by it, and its items are left out unless "
        "--exclude-seen is given); empty or NaN: unknown; other columns are ignored",
    )
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument(
        "--exclude-seen",
        metavar="RATINGS",
        help="CSV (or .jsonl, .tfrecord[.gz]) of user_id,item_id[,...]: items each user "
        "already has",
    )
    recommend.add_argument("--output", required=True, help="CSV to write (plain, not gzipped)")
    recommend.add_argument(
        "--join-movielens", action="store_true", help="add MovieLens-100K's user features by id"
    )
    recommend.set_defaults(func=cmd_recommend)
