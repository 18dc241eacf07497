"""`mtrec inspect` and `mtrec report`: what the latest evaluation says (``--history``: what
every run did)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from mtrec.cli.common import DEFAULT_OUTPUT, checked
from mtrec.cli.skew import add_check_args, run_check
from mtrec.errors import MtrecError

if TYPE_CHECKING:  # Heavy modules are imported lazily so that --help stays instant.
    from mtrec.results.inspection import Inspection
    from mtrec.results.store import HistoryRow


def _metadata_path(args: argparse.Namespace) -> str:
    """The MLMD database of --output-dir."""
    from mtrec.pipeline import local_runner

    return local_runner.metadata_path(Path(args.output_dir).resolve())


def _load_inspection(args: argparse.Namespace) -> Inspection:
    """The evaluation named by --evaluation, or the latest evaluated run's, via MLMD."""
    from mtrec.results import inspection
    from mtrec.results import store as results

    rule = checked(
        inspection.FlagRule,
        auc_margin=args.auc_margin,
        rmse_ratio=args.rmse_ratio,
        min_count=args.min_count,
    )
    try:
        if args.evaluation:
            return inspection.inspect_evaluation(args.evaluation, rule=rule)
        store = results.open_store(_metadata_path(args))
        run = results.latest_run(store, args.pipeline_name, evaluated=True)
        return inspection.inspect_evaluation(run.evaluation_uri, run=run, rule=rule)
    except (FileNotFoundError, LookupError) as err:  # No MLMD database, no (evaluated) run.
        raise MtrecError(f"{err.args[0] if err.args else err}") from None


def _load_history(args: argparse.Namespace) -> list[HistoryRow]:
    """Every run of --pipeline-name in --output-dir's MLMD (none with --evaluation)."""
    from mtrec.results.inspection import load_history

    if args.evaluation:
        return []
    return load_history(_metadata_path(args), args.pipeline_name)


def cmd_inspect(args: argparse.Namespace) -> int:
    from mtrec.results.inspection import format_history, format_text, history_json

    if args.history:
        if args.evaluation:
            raise MtrecError("--history reads the runs from MLMD: drop --evaluation")
        rows = _load_history(args)
        print(
            json.dumps(history_json(rows), indent=2)
            if args.format == "json"
            else format_history(rows)
        )
        return 0
    found = _load_inspection(args)
    print(
        json.dumps(found.to_json(), indent=2)
        if args.format == "json"
        else format_text(found, thresholds=args.thresholds)
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mtrec.results.report import write_report

    found = _load_inspection(args)
    check = run_check(args) if args.requests else None
    path = write_report(found, args.html, history=_load_history(args), skew=check)
    print(f"Report written to {path}")
    return 0


def _add_inspect_args(parser: argparse.ArgumentParser) -> None:
    from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME
    from mtrec.results.inspection import FlagRule

    source = parser.add_argument_group("which evaluation (default: the latest run's, via MLMD)")
    source.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT,
        help=f"the pipeline's output directory (default ./{DEFAULT_OUTPUT})",
    )
    source.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME)
    source.add_argument(
        "--evaluation",
        metavar="DIR",
        help="an Evaluator output (ModelEvaluation artifact) directory instead",
    )
    flags = parser.add_argument_group("flagging slices much worse than overall")
    rule = FlagRule()
    flags.add_argument(
        "--auc-margin",
        type=float,
        default=rule.auc_margin,
        help=f"AUC this far below overall (default {rule.auc_margin})",
    )
    flags.add_argument(
        "--rmse-ratio",
        type=float,
        default=rule.rmse_ratio,
        help=f"RMSE this many times overall (default {rule.rmse_ratio})",
    )
    flags.add_argument(
        "--min-count",
        type=int,
        default=rule.min_count,
        help=f"smallest slice that can be flagged (default {rule.min_count})",
    )


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """inspect, report."""
    inspect = commands.add_parser(
        "inspect",
        help="print blessing, failed thresholds, headline metrics, then metrics per head "
        "and slice",
    )
    _add_inspect_args(inspect)
    inspect.add_argument("--format", choices=("text", "json"), default="text")
    inspect.add_argument(
        "--history",
        action="store_true",
        help="one line per run of the pipeline instead: spans trained and evaluated on, "
        "warm or cold start, headline metrics, blessing, pushed version",
    )
    inspect.add_argument(
        "--thresholds",
        action="store_true",
        help="list every threshold with its value and outcome, not only the failed ones "
        "(text; JSON always has them all)",
    )
    inspect.set_defaults(func=cmd_inspect)

    report = commands.add_parser(
        "report",
        help="write a self-contained HTML report (with two or more runs in MLMD, also their "
        "headline metrics across runs; with --requests, serving against training "
        "distributions)",
    )
    report.add_argument(
        "--html", required=True, metavar="OUT", help="the report file to write, e.g. report.html"
    )
    _add_inspect_args(report)
    add_check_args(
        report,
        "request logs (*.tfrecord, searched recursively), as for `mtrec skew`: adds their "
        "distributions against training's",
        required=False,
        output_dir=False,
    )
    report.set_defaults(func=cmd_report)
