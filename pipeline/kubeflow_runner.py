"""Kubeflow runner: compiles the same pipeline to a KFP v2 / Vertex pipeline-spec JSON."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf_keras).

from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline

DEFAULT_IMAGE = "ghcr.io/mtrec/mtrec:latest"


def compile_pipeline(config: PipelineConfig, image: str, output_file: str) -> str:
    """Write the pipeline spec for ``config`` (paths must be visible to the cluster)."""
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_file)),
        output_filename=os.path.basename(output_file))
    runner.run(create_pipeline(config))
    return output_file
