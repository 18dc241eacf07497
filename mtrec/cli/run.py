"""`mtrec run`: the whole pipeline, raw logs to pushed model, with the local runner."""

from __future__ import annotations

import argparse
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

if TYPE_CHECKING:  # Heavy modules are imported lazily so that --help stays instant.
    from mtrec.data.source import DataSource
    from mtrec.results.store import RunSummary


def cmd_run(args: argparse.Namespace) -> int:
    from mtrec.models.hparams import ModelConfig
    from mtrec.pipeline import local_runner
    from mtrec.pipeline.config import PipelineConfig
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
    using_movielens = not (args.train_file or args.interactions)  # Incl. --train-ratings.
    schema = schema_choice(args, curated=using_movielens)
    evaluation = evaluation_settings(args)
    data = data_config(args)
    source = data_source(args)
    config = PipelineConfig(
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
        else local_runner.default_beam_args(input_bytes(source)),
        enable_cache=not args.no_cache,
    )
    log.info("Running pipeline '%s' on %s", config.pipeline_name, source.base)
    import tensorflow as tf

    try:
        local_runner.run(config, output_dir)
    except (RuntimeError, ValueError, OSError, tf.errors.OpError) as err:
        # What a component raises on bad data or a failed step (Beam wraps its workers'
        # errors in RuntimeError): its root cause in one line. mtrec's own errors pass as is.
        log.debug("component failure", exc_info=True)
        raise PipelineError(f"pipeline failed in a component: {_root_cause(err)}") from None
    summary = results.latest_run(
        results.open_store(local_runner.metadata_path(output_dir)), config.pipeline_name
    )
    print(format_summary(summary))
    return 0


def input_bytes(data_source: DataSource) -> int | None:
    """The raw inputs' total size (None when remote), to pick the Beam running mode."""
    from mtrec.data import build, source

    if source.is_remote(data_source.base):
        return None
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
    from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME

    run = commands.add_parser("run", help="run the whole pipeline with the local runner")
    run.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT,
        help="pipeline root, MLMD SQLite, examples and pushed models "
        f"(default ./{DEFAULT_OUTPUT})",
    )
    run.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME)
    add_data_args(run)
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
