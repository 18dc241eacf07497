"""`mtrec compile-kubeflow`: the same pipeline as a Kubeflow Pipelines v2 / Vertex spec."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from mtrec.cli.common import add_evaluation_args, checked, evaluation_settings, schema_choice
from mtrec.cli.data import add_data_args, data_config, data_source
from mtrec.errors import MtrecError
from mtrec.pipeline.config import DEFAULT_KEEP_VERSIONS

if TYPE_CHECKING:
    from mtrec.data.source import DataSource

DEFAULT_MOVIELENS_DIR = "ml-100k"
SPAN_SPEC = re.compile(r"span-\{SPAN(:\d+)?\}")  # TFX's span spec, with its width if any.
OTHER_SOURCES = ("movielens_dir", "interactions", "train_ratings", "train_file", "eval_file")


def cmd_compile_kubeflow(args: argparse.Namespace) -> int:
    from mtrec.models.hparams import ModelConfig
    from mtrec.pipeline import kubeflow_runner
    from mtrec.pipeline.config import ContinuousSettings, PipelineConfig

    if args.window is not None:
        raise MtrecError(
            "--window: Kubeflow V2 compiles no span-window resolver, so on Kubeflow each run "
            "trains on the span it ingests (see README: Kubeflow)"
        )
    root = args.pipeline_root.rstrip("/")
    continuous = None
    if args.logs:
        source = logs_source(args)
        continuous = ContinuousSettings(warm_start=not args.cold_start)
    else:
        if args.cold_start or args.span_digits is not None:
            raise MtrecError("--cold-start and --span-digits go with --logs DIR")
        if not (args.movielens_dir or args.interactions or args.train_file or args.train_ratings):
            args.movielens_dir = f"{root}/{DEFAULT_MOVIELENS_DIR}"  # Uploaded there (README).
        source = data_source(args)
    config = checked(
        PipelineConfig,
        pipeline_name=args.pipeline_name,
        pipeline_root=f"{root}/pipeline_root",
        source=source,
        serving_model_dir=args.serving_model_dir or f"{root}/serving_model",
        data=data_config(args),
        model=checked(ModelConfig, distribution=args.distribution),
        evaluation=evaluation_settings(args),
        schema=schema_choice(args, curated=not (args.train_file or args.interactions or args.logs)),
        beam_pipeline_args=tuple(args.beam_arg or ()),
        continuous=continuous,
        keep_versions=args.keep_versions,
    )
    path = kubeflow_runner.compile_pipeline(config, args.image, args.output)
    print(f"Pipeline spec written to {path} (image {args.image})")
    if continuous is not None:
        print(
            f"Runtime parameter '{kubeflow_runner.SPAN_PARAMETER}': "
            f"'{kubeflow_runner.LATEST_SPAN}' (the default) ingests the newest span in "
            f"{config.source.base}, a number ingests that span"
        )
    return 0


def logs_source(args: argparse.Namespace) -> DataSource:
    """--logs: the logs by span, the only data source (a remote folder is read only where
    the pipeline runs); with --span-digits, folders zero-padded to that many digits."""
    import dataclasses

    from mtrec.data import source

    if any(getattr(args, name) for name in OTHER_SOURCES):
        raise MtrecError(
            "--logs takes the place of --movielens-dir, --interactions, --train-ratings "
            "and --train-file: give one data source"
        )
    logs = source.spans(args.logs)
    if args.span_digits is None:
        return logs
    if not 1 <= args.span_digits <= 9:
        raise MtrecError(f"--span-digits must be 1 to 9, got {args.span_digits}")
    padded = f"span-{{SPAN:{args.span_digits}}}"
    patterns = tuple((role, SPAN_SPEC.sub(padded, p)) for role, p in logs.patterns)
    return dataclasses.replace(logs, patterns=patterns)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """compile-kubeflow."""
    from mtrec.models.hparams import STRATEGIES
    from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME

    kfp = commands.add_parser(
        "compile-kubeflow", help="compile the pipeline to a Kubeflow/Vertex pipeline spec"
    )
    kfp.add_argument("--image", required=True, help="container image with mtrec installed")
    kfp.add_argument(
        "--pipeline-root",
        required=True,
        help="e.g. gs://bucket/mtrec; MovieLens-100K is read from <pipeline-root>/"
        f"{DEFAULT_MOVIELENS_DIR} unless a data source option says otherwise",
    )
    kfp.add_argument("--serving-model-dir", help="default: <pipeline-root>/serving_model")
    kfp.add_argument(
        "--distribution",
        choices=STRATEGIES,
        default="multi_worker_mirrored",
        help="tf.distribute strategy for the Trainer; the cluster comes from "
        "TF_CONFIG (default: multi_worker_mirrored)",
    )
    kfp.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME)
    kfp.add_argument("--beam-arg", action="append", metavar="ARG")
    kfp.add_argument(
        "--output",
        default="kubeflow_pipeline.json",
        help="a .json file holds the PipelineJob (Vertex AI); a .yaml file the PipelineSpec, "
        "the package KFP's client takes (default: kubeflow_pipeline.json)",
    )
    kfp.add_argument(
        "--keep-versions",
        type=int,
        default=DEFAULT_KEEP_VERSIONS,
        help="pushed model versions kept in the serving folder; older ones are removed "
        f"once a new one is in place (default {DEFAULT_KEEP_VERSIONS})",
    )
    add_data_args(kfp)
    spans = kfp.add_argument_group(
        "continuous training (logs laid out as DIR/span-<number>/, one folder per day or week)"
    )
    spans.add_argument(
        "--logs",
        metavar="DIR",
        help="your logs by span, e.g. gs://bucket/logs: each run ingests one span (the spec's "
        "runtime parameter 'span': 'latest' by default, or a number), trains on it "
        "warm-started from the latest blessed model, evaluates on its newest share",
    )
    spans.add_argument(
        "--span-digits",
        type=int,
        metavar="N",
        help="span folders zero-padded to N digits, e.g. 4 for span-0001/ (TFX needs the "
        "width to find a span by number, and a remote DIR is not read here)",
    )
    spans.add_argument("--window", type=int, help=argparse.SUPPRESS)  # An error: see above.
    spans.add_argument(
        "--cold-start",
        action="store_true",
        help="train from scratch in every run instead of from the latest blessed model",
    )
    add_evaluation_args(kfp)
    kfp.set_defaults(func=cmd_compile_kubeflow)
