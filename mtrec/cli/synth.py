"""`mtrec data synth`: realistic synthetic interaction logs, as CSV shards in the
bring-your-own contract, for benchmarks and tests at any size (mtrec.data.synth)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mtrec.cli.common import checked
from mtrec.errors import MtrecError

_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000}


def row_count(text: str) -> int:
    """'2000', '2_000', '100k' or '3M' as an integer."""
    match = re.fullmatch(r"(\d[\d_]*)([kKmM]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r} (e.g. 100000, 100k, 3M)")
    return int(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mtrec.data import synth

    config = checked(
        synth.SynthConfig,
        rows=args.rows,
        seed=args.seed,
        shards=args.shards,
        users=args.users,
        items=args.items,
    )
    try:
        logs = synth.write_logs(Path(args.output), config)
    except OSError as err:
        raise MtrecError(f"{args.output}: cannot write the logs: {err.strerror or err}") from None
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
    synth.set_defaults(func=cmd_data_synth)
