"""`mtrec score` and `mtrec recommend`: a pushed model over files, without a server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mtrec import names as F
from mtrec.cli.common import DEFAULT_OUTPUT
from mtrec.errors import MtrecError


def _read_table(path: str, required: tuple[str, ...], what: str) -> Any:
    """A CSV as a DataFrame with ``required`` columns, or one clear error."""
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise MtrecError(f"{file}: no such file")
    try:
        frame = pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise MtrecError(f"{file}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MtrecError(
            f"{file}: {what} needs column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns)) or 'none'}"
        )
    for column in (c for c in (F.USER_ID, F.ITEM_ID) if c in frame.columns):
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise MtrecError(f"{file}: column '{column}' must hold integer ids")
    return frame


def _with_movielens_features(frame: Any, join: bool) -> Any:
    """Join MovieLens-100K's user and item side features by id (--join-movielens)."""
    if not join:
        return frame
    from mtrec.data import dataset, movielens

    tables = movielens.load(movielens.fetch())
    joined = dataset.join_features(frame, tables.users, tables.items)
    return joined


def _load_model(path: str) -> tuple[Path, Any]:
    from mtrec.serving import offline

    try:
        model_dir = offline.resolve_model_dir(path)
    except FileNotFoundError as err:
        raise MtrecError(str(err)) from None
    return model_dir, offline.load(model_dir)


def _write_rows(rows: list[dict], path: str) -> None:
    import pandas as pd

    from mtrec.files import staged_file

    with staged_file(path) as staging:  # Never a half-written output.
        pd.DataFrame(rows).to_csv(staging, index=False)


def cmd_score(args: argparse.Namespace) -> int:
    from mtrec.serving import offline

    pairs = _read_table(args.input, (F.USER_ID, F.ITEM_ID), "scoring")
    model_dir, model = _load_model(args.model)
    frame = _with_movielens_features(pairs, args.join_movielens)
    rows = frame.to_dict("records")
    scores = offline.score_rows(model, rows)
    _write_rows(
        [
            {F.USER_ID: int(r[F.USER_ID]), F.ITEM_ID: int(r[F.ITEM_ID]), **s}
            for r, s in zip(rows, scores, strict=True)
        ],
        args.output,
    )
    print(f"Scored {len(rows)} pairs with {model_dir}; wrote {args.output}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from mtrec.serving import offline

    if args.k < 1:
        raise MtrecError("--k must be at least 1")
    users = _read_table(args.users, (F.USER_ID,), "recommending")
    seen: dict[int, set[int]] = {}
    if args.exclude_seen:
        ratings = _read_table(args.exclude_seen, (F.USER_ID, F.ITEM_ID), "--exclude-seen")
        for user, item in zip(ratings[F.USER_ID], ratings[F.ITEM_ID], strict=True):
            seen.setdefault(int(user), set()).add(int(item))
    model_dir, model = _load_model(args.model)
    frame = users
    if args.join_movielens:
        from mtrec.data import movielens

        tables = movielens.load(movielens.fetch())
        frame = users.merge(tables.users, on=F.USER_ID, how="left", suffixes=("", "_ml"))
    try:
        rows = offline.recommend_rows(model, frame.to_dict("records"), args.k, seen)
    except ValueError as err:
        raise MtrecError(f"{model_dir}: {err}") from None
    _write_rows(rows, args.output)
    print(f"Wrote top-{args.k} items for {len(users)} users to {args.output} ({model_dir})")
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
        help="CSV with user_id,item_id (and any "
        "feature columns: age, gender, occupation, zip_prefix, genres, year, "
        "title)",
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
        help="CSV with user_id (and any of age, gender, occupation, " "zip_prefix)",
    )
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument(
        "--exclude-seen",
        metavar="RATINGS",
        help="CSV of user_id,item_id[,...]: items each user already has",
    )
    recommend.add_argument("--output", required=True, help="CSV to write")
    recommend.add_argument(
        "--join-movielens", action="store_true", help="add MovieLens-100K's user features by id"
    )
    recommend.set_defaults(func=cmd_recommend)
