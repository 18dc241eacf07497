"""`mtrec skew`: logged serving requests against the served model's training statistics."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mtrec.cli.common import DEFAULT_OUTPUT

if TYPE_CHECKING:  # Heavy modules are imported lazily so that --help stays instant.
    from mtrec.results.skew import SkewCheck

REQUESTS_HELP = "directory of request logs (*.tfrecord, searched recursively)"
# Exit codes: 0 no skew, 1 skew found (2 is a user error, from main).
SKEW_FOUND = 1


def cmd_skew(args: argparse.Namespace) -> int:
    from mtrec.results import skew

    check = run_check(args)
    out = args.anomalies_out or os.path.join(args.requests, skew.ANOMALIES_FILE)
    skew.write_anomalies(check.result.anomalies, out)
    print(skew.format_check(check, out))
    sys.stdout.flush()
    return SKEW_FOUND if check.result.skewed else 0


def run_check(args: argparse.Namespace) -> SkewCheck:
    """The skew check of --requests as the options of ``add_check_args`` (and --output-dir,
    for the MLMD store) say; ``mtrec skew`` and ``mtrec report --requests`` share it."""
    from mtrec.results import skew

    store = None
    if args.statistics is None or args.schema is None:
        from mtrec.pipeline import local_runner
        from mtrec.results import store as results

        path = local_runner.metadata_path(Path(args.output_dir).resolve())
        if os.path.exists(path):
            store = results.open_store(path)
    return skew.check_skew(
        args.requests,
        store=store,
        statistics=args.statistics,
        schema=args.schema,
        version=args.model_version,
        split=args.split,
        linf_threshold=args.linf_threshold,
        js_threshold=args.js_threshold,
        batch_size=args.batch_size,
    )


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_check_args(
    parser: argparse.ArgumentParser,
    requests_help: str,
    required: bool = True,
    output_dir: bool = True,
) -> None:
    """The skew check's options: --requests, the training side (with --output-dir unless the
    parser has it already), the thresholds and --batch-size."""
    from mtrec.results.skew import DEFAULT_BATCH_SIZE, DEFAULT_JS_THRESHOLD, DEFAULT_LINF_THRESHOLD

    parser.add_argument("--requests", required=required, metavar="DIR", help=requests_help)
    source = parser.add_argument_group(
        "training side of the requests (default: the served model's, via the pipeline's MLMD)"
    )
    if output_dir:
        source.add_argument(
            "--output-dir",
            default=DEFAULT_OUTPUT,
            help=f"the pipeline's output directory (default ./{DEFAULT_OUTPUT})",
        )
    source.add_argument(
        "--model-version",
        type=int,
        help="compare the requests this version served (needed when the logs hold several)",
    )
    source.add_argument(
        "--statistics",
        metavar="PATH",
        help="training statistics instead: FeatureStats.pb, or an ExampleStatistics directory",
    )
    source.add_argument(
        "--schema", metavar="PATH", help="schema instead: schema.pbtxt, or a Schema directory"
    )
    source.add_argument(
        "--split", default="train", help="the statistics split to compare with (default train)"
    )
    rule = parser.add_argument_group("skew thresholds (where the schema sets no skew_comparator)")
    rule.add_argument(
        "--linf-threshold",
        type=_fraction,
        default=DEFAULT_LINF_THRESHOLD,
        help=f"L-infinity distance for categorical features (default {DEFAULT_LINF_THRESHOLD})",
    )
    rule.add_argument(
        "--js-threshold",
        type=_fraction,
        default=DEFAULT_JS_THRESHOLD,
        help=f"Jensen-Shannon divergence for numeric features (default {DEFAULT_JS_THRESHOLD})",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=DEFAULT_BATCH_SIZE,
        help=f"request examples per statistics batch (default {DEFAULT_BATCH_SIZE})",
    )


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """skew."""
    from mtrec.results.skew import ANOMALIES_FILE

    parser = commands.add_parser(
        "skew",
        help="compare logged serving requests with the served model's training statistics "
        "(exit 1 on skew)",
        description="Profile request logs (PredictionLog TFRecords) with TFDV and compare "
        "them with the training statistics of the model that served them: L-infinity for "
        "categorical features, Jensen-Shannon divergence for numeric ones, on the model's "
        "input features. Exit codes: 0 no skew, 1 skew, 2 error.",
    )
    add_check_args(parser, REQUESTS_HELP)
    parser.add_argument(
        "--anomalies-out",
        metavar="FILE",
        help=f"where to write the anomalies (text proto; default DIR/{ANOMALIES_FILE})",
    )
    parser.set_defaults(func=cmd_skew)
