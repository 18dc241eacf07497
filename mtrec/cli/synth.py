"""`mtrec data synth`: realistic synthetic interaction logs, as CSV shards in the
bring-your-own contract (or one folder per span, tastes drifting), for benchmarks and tests
at any size (mtrec.data.synth)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mtrec.cli.common import checked
from mtrec.errors import MtrecError

_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000}
SPAN_DAYS = 7


def row_count(text: str) -> int:
    """'2000', '2_000', '100k' or '3M' as an integer."""
    match = re.fullmatch(r"(\d[\d_]*)([kKmM]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r} (e.g. 100000, 100k, 3M)")
    return int(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mtrec.data import synth

    if args.spans is None and (args.drift is not None or args.span_days is not None):
        raise MtrecError("--drift and --span-days need --spans")
    options = {"days": args.span_days or SPAN_DAYS} if args.spans is not None else {}
    config = checked(
        synth.SynthConfig,
        rows=args.rows,
        seed=args.seed,
        shards=args.shards,
        users=args.users,
        items=args.items,
        **options,
    )
    try:
        if args.spans is not None:
            drift = 1.0 if args.drift is None else args.drift
            spans = checked(synth.write_spans, Path(args.output), config, args.spans, drift)
        else:
            logs = synth.write_logs(Path(args.output), config)
    except OSError as err:
        raise MtrecError(f"{args.output}: cannot write the logs: {err.strerror or err}") from None
    if args.spans is not None:
        print(
            f"Wrote {len(spans)} spans of {args.rows:,} rows ({config.days} days each; "
            f"{spans[0].logs.users:,} users, {spans[0].logs.items:,} items), tastes drifting "
            f"{spans[0].drift:g} -> {spans[-1].drift:g}:"
        )
        print(Path(args.output) / f"{synth.span_name(1)} .. {synth.span_name(len(spans))}")
        return 0
    print(
        f"Wrote {logs.rows:,} rows ({logs.users:,} users, {logs.items:,} items) "
        f"in {len(logs.files)} files:"
    )
    print(Path(args.output) / f"part-*-of-{config.shards:05d}.csv")
    return 0


def add_parser(data_commands: argparse._SubParsersAction) -> None:
    """data synth."""
    synth = data_commands.add_parser(
        "synth",
        help="write realistic synthetic interaction logs (CSV shards)",
        description="Write synthetic interaction logs in the bring-your-own CSV contract: "
        "power-law users and items, side features, and click, purchase and rating labels "
        "with a learnable signal. Deterministic given --seed. Rows are written in chunks, so "
        "memory grows with --users and --items only.",
    )
    synth.add_argument(
        "--rows", type=row_count, required=True, help="rows to write, e.g. 100000, 100k, 3M"
    )
    synth.add_argument(
        "--output", required=True, help="directory for part-NNNNN-of-NNNNN.csv (replaced)"
    )
    synth.add_argument("--seed", type=int, default=0, help="default 0")
    synth.add_argument("--shards", type=int, default=4, help="CSV files to write (default 4)")
    synth.add_argument("--users", type=int, help="distinct users (default rows/50, 100-1M)")
    synth.add_argument("--items", type=int, help="distinct items (default rows/200, 50-200k)")
    synth.add_argument(
        "--spans",
        type=int,
        help="continuous-training logs: this many folders span-0001/ ... under --output, "
        "each of --rows rows (and --shards files) over the next --span-days days",
    )
    synth.add_argument(
        "--drift",
        type=float,
        help="with --spans: how far tastes move by the last span, from 0 (none) to 1 "
        "(a new, independent draw; the default), linearly over the spans",
    )
    synth.add_argument("--span-days", type=int, help=f"with --spans (default {SPAN_DAYS})")
    synth.set_defaults(func=cmd_data_synth)
