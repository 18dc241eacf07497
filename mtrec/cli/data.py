"""`mtrec data fetch` and `mtrec data build`: MovieLens-100K and the pipeline's examples."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from mtrec.cli import synth
from mtrec.cli.common import DEFAULT_OUTPUT, checked
from mtrec.data.config import VALID_SPLITS
from mtrec.errors import MtrecError

if TYPE_CHECKING:  # Heavy modules are imported lazily so that --help stays instant.
    from mtrec.data.build import DataConfig
    from mtrec.data.source import DataSource


def data_config(args: argparse.Namespace) -> DataConfig:
    """Labelling and splitting options, checked."""
    from mtrec.data.build import DataConfig

    if args.valid_split == "random" and not args.train_ratings:
        raise MtrecError("--valid-split random applies to --train-ratings/--eval-ratings only")
    return checked(
        DataConfig,
        negatives_per_positive=args.negatives,
        eval_fraction=args.eval_fraction,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
        valid_split=args.valid_split,
    )


def data_source(args: argparse.Namespace) -> DataSource:
    """The raw inputs chosen on the command line (MovieLens-100K, fetched, by default)."""
    from mtrec.data import movielens, source

    if bool(args.train_file) != bool(args.eval_file):
        raise MtrecError(
            "--train-file and --eval-file go together "
            "(or use --interactions FILE for a time split)"
        )
    if bool(args.train_ratings) != bool(args.eval_ratings):
        raise MtrecError("--train-ratings and --eval-ratings go together")
    if args.train_file or args.interactions:
        return source.logs(args.interactions, args.train_file, args.eval_file)
    directory = args.movielens_dir or str(movielens.fetch())
    if args.train_ratings:
        return source.ratings(args.train_ratings, args.eval_ratings, directory)
    return source.movielens(directory)


def add_data_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("data source (default: MovieLens-100K, fetched)")
    source.add_argument(
        "--movielens-dir",
        help="local MovieLens-100K directory "
        "(GroupLens u.data/u.user/u.item or RecBole ml-100k.* layout)",
    )
    source.add_argument(
        "--interactions",
        help="your own interactions: a CSV (.csv.gz: gzipped) or TFRecord file, or a folder "
        "of them, split by time (see README: data contract)",
    )
    source.add_argument(
        "--train-ratings",
        help="explicit split of MovieLens-style ratings "
        "(user_id,item_id,rating,timestamp CSV), e.g. u1.base; side features "
        "from MovieLens-100K",
    )
    source.add_argument(
        "--eval-ratings",
        help="the eval ratings of that split, e.g. u1.test " "(seen only by the Evaluator)",
    )
    source.add_argument("--train-file", help="explicit split: train interactions file")
    source.add_argument("--eval-file", help="explicit split: eval interactions file")
    rules = parser.add_argument_group("labelling and splitting")
    rules.add_argument(
        "--negatives", type=int, default=4, help="sampled non-interactions per positive (default 4)"
    )
    rules.add_argument(
        "--eval-fraction",
        type=float,
        default=0.1,
        help="most recent share of interactions held out for eval (default 0.1)",
    )
    rules.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="most recent share of train used for early stopping (default 0.1)",
    )
    rules.add_argument(
        "--valid-split",
        choices=VALID_SPLITS,
        default="latest",
        help="with --train-ratings: valid is each user's latest ratings (default), or a "
        "random share of them held out like the eval file (for a split random in time, "
        "as u1-u5)",
    )
    rules.add_argument("--seed", type=int, default=42)


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from mtrec.data import movielens

    print(movielens.fetch(Path(args.cache_dir) if args.cache_dir else None))
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    from mtrec.data import build

    root, summary = build.run(
        data_source(args),
        data_config(args),
        str(Path(args.output_dir) / "data"),
        args.beam_arg or (),
    )
    print(f"Examples written to {root}")
    print(json.dumps(summary.splits, indent=2))
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """data fetch, data build."""
    data = commands.add_parser("data", help="fetch MovieLens-100K or build pipeline examples")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = data_commands.add_parser("fetch", help="download MovieLens-100K into the cache")
    fetch.add_argument("--cache-dir", help="default: $MTREC_CACHE_DIR or ~/.cache/mtrec")
    fetch.set_defaults(func=cmd_data_fetch)
    build = data_commands.add_parser(
        "build",
        help="run the pipeline's data component alone: labelled, split examples",
    )
    build.add_argument("--output-dir", default=DEFAULT_OUTPUT)
    add_data_args(build)
    build.add_argument(
        "--beam-arg", action="append", metavar="ARG", help="Beam pipeline option, repeatable"
    )
    build.set_defaults(func=cmd_data_build)
    synth.add_parser(data_commands)
