"""`mtrec compile-kubeflow`: the same pipeline as a Kubeflow Pipelines v2 / Vertex spec."""

from __future__ import annotations

import argparse
import sys

from mtrec.cli.common import add_evaluation_args, checked, evaluation_settings, schema_choice


def cmd_compile_kubeflow(args: argparse.Namespace) -> int:
    from mtrec.data import dataset
    from mtrec.models.hparams import ModelConfig
    from mtrec.pipeline import kubeflow_runner
    from mtrec.pipeline.config import PipelineConfig

    root = args.pipeline_root.rstrip("/")
    examples_dir = args.examples_dir or f"{root}/data"
    # Examples built here (`mtrec data build`) say which slices are large enough to gate and
    # the rating baseline; remote ones are not read at compile time.
    info = None if "://" in examples_dir else dataset.read_info(examples_dir)
    thresholds, gated_slices = evaluation_settings(args, info)
    if info is None:
        print(
            f"Note: no examples read at {examples_dir}: thresholds are the defaults and the "
            "options given; every slice is reported, none is gated",
            file=sys.stderr,
        )
    config = PipelineConfig(
        pipeline_name=args.pipeline_name,
        pipeline_root=f"{root}/pipeline_root",
        model=checked(ModelConfig, distribution=args.distribution),
        examples_dir=examples_dir,
        serving_model_dir=args.serving_model_dir or f"{root}/serving_model",
        thresholds=thresholds,
        gated_slices=gated_slices,
        schema=schema_choice(args, curated=True),
        beam_pipeline_args=tuple(args.beam_arg or ()),
        data_fingerprint=info.manifest.get("fingerprint", "") if info else "",
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
    kfp.add_argument("--pipeline-root", required=True, help="e.g. gs://bucket/mtrec")
    kfp.add_argument(
        "--examples-dir",
        help="the examples the cluster reads (default: <pipeline-root>/data); a local folder "
        "written by `mtrec data build` also sets the gated slices and the rating baseline",
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
    add_evaluation_args(kfp)
    kfp.set_defaults(func=cmd_compile_kubeflow)
