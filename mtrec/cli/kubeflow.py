"""`mtrec compile-kubeflow`: the same pipeline as a Kubeflow Pipelines v2 / Vertex spec."""

from __future__ import annotations

import argparse

from mtrec.cli.common import add_evaluation_args, checked, evaluation_settings, schema_choice
from mtrec.cli.data import add_data_args, data_config, data_source

DEFAULT_MOVIELENS_DIR = "ml-100k"


def cmd_compile_kubeflow(args: argparse.Namespace) -> int:
    from mtrec.models.hparams import ModelConfig
    from mtrec.pipeline import kubeflow_runner
    from mtrec.pipeline.config import PipelineConfig

    root = args.pipeline_root.rstrip("/")
    if not (args.movielens_dir or args.interactions or args.train_file or args.train_ratings):
        args.movielens_dir = f"{root}/{DEFAULT_MOVIELENS_DIR}"  # Uploaded there (README).
    config = PipelineConfig(
        pipeline_name=args.pipeline_name,
        pipeline_root=f"{root}/pipeline_root",
        source=data_source(args),
        serving_model_dir=args.serving_model_dir or f"{root}/serving_model",
        data=data_config(args),
        model=checked(ModelConfig, distribution=args.distribution),
        evaluation=evaluation_settings(args),
        schema=schema_choice(args, curated=not (args.train_file or args.interactions)),
        beam_pipeline_args=tuple(args.beam_arg or ()),
    )
    path = kubeflow_runner.compile_pipeline(config, args.image, args.output)
    print(f"Pipeline spec written to {path} (image {args.image})")
    return 0


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
    kfp.add_argument("--output", default="kubeflow_pipeline.json")
    add_data_args(kfp)
    add_evaluation_args(kfp)
    kfp.set_defaults(func=cmd_compile_kubeflow)
