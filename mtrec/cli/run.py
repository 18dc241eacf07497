"""`mtrec run`: the whole pipeline, raw logs to pushed model, with the local runner."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mtrec.cli.common import (
    DEFAULT_OUTPUT,
    add_evaluation_args,
    checked,
    evaluation_settings,
    log,
    schema_choice,
)
from mtrec.cli.data import add_data_args, data_config, data_source
from mtrec.errors import MtrecError, PipelineError
from mtrec.pipeline.config import DEFAULT_KEEP_VERSIONS, DEFAULT_PIPELINE_NAME, DEFAULT_WINDOW

if TYPE_CHECKING:  # Heavy modules are imported lazily so that --help stays instant.
    from mtrec.data.source import DataSource
    from mtrec.pipeline.config import PipelineConfig
    from mtrec.results.store import RunSummary


def cmd_run(args: argparse.Namespace) -> int:
    from mtrec.models.hparams import ModelConfig
    from mtrec.pipeline import local_runner
    from mtrec.pipeline.config import ContinuousSettings, PipelineConfig
    from mtrec.results import store as results

    output_dir = Path(args.output_dir).resolve()
    overrides = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("learning_rate", args.learning_rate),
            ("distribution", args.distribution),
        )
        if v is not None
    }
    model = checked(
        ModelConfig.from_dict,
        {**ModelConfig().to_dict(), **model_overrides(args.model_config), **overrides},
    )  # Checked before any work.
    using_movielens = not (args.train_file or args.interactions or args.logs)
    schema = schema_choice(args, curated=using_movielens)
    evaluation = evaluation_settings(args)
    data = data_config(args)
    source, spans = continuous_source(args)
    config = checked(
        PipelineConfig,
        pipeline_name=args.pipeline_name,
        pipeline_root=str(output_dir / "pipeline_root"),
        source=source,
        serving_model_dir=str(output_dir / "serving_model"),
        data=data,
        model=model,
        evaluation=evaluation,
        schema=schema,
        beam_pipeline_args=tuple(args.beam_arg)
        if args.beam_arg
        else local_runner.default_beam_args(input_bytes(source, args.window)),
        enable_cache=not args.no_cache,
        keep_versions=args.keep_versions,
        **request_logs(args.request_logs),
    )
    failed: list[int | None] = []
    for span in spans:
        if args.logs:
            config = dataclasses.replace(
                config,
                continuous=checked(
                    ContinuousSettings,
                    span=span,
                    window=args.window,
                    warm_start=not args.cold_start,
                ),
            )
            log.info(
                "Running pipeline '%s' on %s, span %s",
                config.pipeline_name,
                source.base,
                "newest" if span is None else span,
            )
        else:
            log.info("Running pipeline '%s' on %s", config.pipeline_name, source.base)
        try:
            _run_once(config, output_dir)
        except MtrecError as err:
            if len(spans) == 1:
                raise
            # Catching up over a range: a bad span stops its own run, not the next ones.
            print(f"Span {span}: {err}")
            failed.append(span)
            continue
        summary = results.latest_run(
            results.open_store(local_runner.metadata_path(output_dir)), config.pipeline_name
        )
        print(format_summary(summary))
    if failed:
        raise PipelineError(
            f"the run of span(s) {', '.join(map(str, failed))} failed (see above); "
            "the other spans ran"
        )
    return 0


def request_logs(directory: str | None) -> dict[str, str]:
    """--request-logs: the folder and its files' fingerprint (no log file is an error)."""
    if not directory:
        return {}
    from mtrec.components.request_skew import logs_fingerprint

    path = str(Path(directory).resolve())
    return {"request_logs": path, "request_logs_fingerprint": logs_fingerprint(path)}


def _run_once(config: PipelineConfig, output_dir: Path) -> None:
    """One local pipeline run; a component's failure becomes one line."""
    import tensorflow as tf

    from mtrec.pipeline import local_runner

    try:
        local_runner.run(config, output_dir)
    except (RuntimeError, ValueError, OSError, tf.errors.OpError) as err:
        # What a component raises on bad data or a failed step (Beam wraps its workers'
        # errors in RuntimeError): its root cause in one line. mtrec's own errors pass as is.
        log.debug("component failure", exc_info=True)
        raise PipelineError(f"pipeline failed in a component: {_root_cause(err)}") from None


def continuous_source(args: argparse.Namespace) -> tuple[DataSource, list[int | None]]:
    """The data source, and the spans to run one after the other: ``[None]`` (the newest
    span, or no spans at all) unless --span or --spans names them."""
    from mtrec.data import source

    if not args.logs:
        if args.span is not None or args.spans or args.cold_start or args.window is not None:
            raise MtrecError("--span, --spans, --window and --cold-start go with --logs DIR")
        return data_source(args), [None]
    others = ("movielens_dir", "interactions", "train_ratings", "train_file")
    if any(getattr(args, name) for name in others):
        raise MtrecError(
            "--logs takes the place of --movielens-dir, --interactions, --train-ratings "
            "and --train-file: give one data source"
        )
    if args.span is not None and args.spans:
        raise MtrecError("give --span N or --spans FIRST-LAST, not both")
    args.window = DEFAULT_WINDOW if args.window is None else args.window
    logs = source.spans(args.logs)
    if args.spans:
        return logs, list(span_range(args.spans))
    return logs, [args.span]


def span_range(text: str) -> range:
    """--spans: ``FIRST-LAST`` (inclusive) or one span number."""
    first, _, last = text.partition("-")
    try:
        start, end = int(first), int(last or first)
    except ValueError:
        raise MtrecError(f"--spans must be FIRST-LAST, e.g. 3-6; got {text!r}") from None
    if start < 0 or end < start:
        raise MtrecError(f"--spans must be FIRST-LAST with FIRST <= LAST; got {text!r}")
    return range(start, end + 1)


def input_bytes(data_source: DataSource, window: int | None = None) -> int | None:
    """The raw inputs' total size (None when remote), to pick the Beam running mode; for logs
    by span, the newest ``window`` + 1 spans' (what one run reads)."""
    from mtrec.data import build, source

    if source.is_remote(data_source.base):
        return None
    if window is not None:
        folders = sorted(
            source.span_folders(data_source.base),
            key=lambda name: int(source.SPAN_NAME.match(name).group(1)),
        )[-(window + 1) :]
        paths = (Path(data_source.base, name).rglob("*") for name in folders)
        return sum(f.stat().st_size for found in paths for f in found if f.is_file())
    files = build.resolve_files(data_source.base, data_source.roles)
    return sum(os.path.getsize(path) for paths in files.values() for path in paths)


def model_overrides(text: str | None) -> dict:
    """--model-config: a JSON object (or a file holding one) of ModelConfig fields."""
    if not text:
        return {}
    source = Path(text)
    raw = source.read_text() if source.is_file() else text
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as err:
        raise MtrecError(
            f"--model-config must be a JSON object or a file with one: {err}"
        ) from None
    if not isinstance(values, dict):
        raise MtrecError(
            "--model-config must be a JSON object, e.g. "
            '\'{"architecture": "mmoe", "esmm": true}\''
        )
    return values


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


def format_summary(summary: RunSummary) -> str:
    """The end-of-run report: components (and cache hits), blessing, push, metrics."""
    lines = [f"Pipeline run {summary.run_id}", f"  {'component':<32}{'state':<10}{'seconds':>8}"]
    lines += [f"  {c.node:<32}{c.state:<10}{c.seconds:>8.1f}" for c in summary.components]
    cached = summary.cached_nodes
    if cached:
        lines.append(
            f"Reused {len(cached)} cached component(s) from an earlier run: " + ", ".join(cached)
        )
    if summary.infra_blessed is not None:
        verdict = "INFRA_BLESSED" if summary.infra_blessed else "NOT infra-blessed"
        lines.append(f"ServingValidator: {verdict}: {summary.infra_reason}")
    if summary.blessed and summary.pushed_to:
        lines.append(f"Model BLESSED and pushed to {summary.pushed_to}")
    elif summary.blessed:
        lines.append("Model BLESSED but NOT pushed: the ServingValidator refused it")
    else:
        lines.append("Model NOT blessed: nothing was pushed. Failed thresholds:")
        lines += [f"  - {line}" for line in summary.failed_thresholds[:15]]
        if len(summary.failed_thresholds) > 15:
            lines.append(f"  ... and {len(summary.failed_thresholds) - 15} more")
    if summary.data_warning:
        lines.append(summary.data_warning)
    if summary.skewed_features:
        lines.append(
            "Serving skew: the request logs drifted from the training data on "
            + ", ".join(summary.skewed_features)
            + " (mtrec skew --requests DIR for the distances)"
        )
    elif summary.skewed_features is not None:
        lines.append("Serving skew: none; the request logs match the training data")
    lines.append("Eval metrics (overall slice):")
    for head, values in summary.metrics.items():
        shown = "  ".join(f"{k}={v:.4f}" for k, v in values.items())
        lines.append(f"  {head:<9}{shown}")
    if summary.rating_baseline is not None:
        lines.append(
            "  (rating baseline: predicting the training mean gives "
            f"RMSE {summary.rating_baseline:.4f})"
        )
    return "\n".join(lines)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """run."""
    from mtrec.models.hparams import STRATEGIES, ModelConfig

    run = commands.add_parser("run", help="run the whole pipeline with the local runner")
    run.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT,
        help="pipeline root, MLMD SQLite, examples and pushed models "
        f"(default ./{DEFAULT_OUTPUT})",
    )
    run.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME)
    add_data_args(run)
    spans = run.add_argument_group(
        "continuous training (logs laid out as DIR/span-<number>/, one folder per day or week)"
    )
    spans.add_argument(
        "--logs",
        metavar="DIR",
        help="your own logs, one folder per span (span-1/, span-2/... or span-0001/...): "
        "ingest one span, train on the spans before it, evaluate on it",
    )
    spans.add_argument("--span", type=int, help="the span to ingest (default: the newest)")
    spans.add_argument(
        "--spans",
        metavar="FIRST-LAST",
        help="run once per span, in order, e.g. 3-6 (each run warm-starts from the last)",
    )
    spans.add_argument(
        "--window",
        type=int,
        help=f"spans trained on, the ones before the ingested span (default {DEFAULT_WINDOW})",
    )
    spans.add_argument(
        "--cold-start",
        action="store_true",
        help="train from scratch instead of from the last blessed model's weights",
    )
    run.add_argument(
        "--request-logs",
        metavar="DIR",
        help="request logs of the served model (the server's logging_config output): "
        "profiled against this run's training data and recorded in MLMD, as `mtrec skew` "
        "does",
    )
    run.add_argument(
        "--keep-versions",
        type=int,
        default=DEFAULT_KEEP_VERSIONS,
        help="pushed model versions kept in the serving folder; older ones are removed "
        f"once a new one is in place (default {DEFAULT_KEEP_VERSIONS})",
    )
    run.add_argument("--epochs", type=int, help=f"default {ModelConfig.epochs}")
    run.add_argument("--batch-size", type=int, help=f"default {ModelConfig.batch_size}")
    run.add_argument(
        "--learning-rate",
        type=float,
        help=f"Adam learning rate (default {ModelConfig.learning_rate})",
    )
    run.add_argument(
        "--model-config",
        metavar="JSON",
        help="model options as a JSON object or file, e.g. "
        '\'{"architecture": "mmoe", "loss_balancing": "uncertainty", '
        '"esmm": true}\' (see models/hparams.py)',
    )
    run.add_argument(
        "--distribution",
        choices=STRATEGIES,
        help="tf.distribute strategy for the Trainer (default: default)",
    )
    add_evaluation_args(run)
    run.add_argument(
        "--beam-arg",
        action="append",
        metavar="ARG",
        help="Beam pipeline option, repeatable (replaces the DirectRunner default), "
        "e.g. --beam-arg=--runner=FlinkRunner",
    )
    run.add_argument("--no-cache", action="store_true", help="re-run every component")
    run.set_defaults(func=cmd_run)
