"""Kubeflow runner: compiles the same pipeline to a KFP v2 / Vertex pipeline-spec JSON."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf_keras).

from tfx import v1 as tfx

from mtrec.pipeline.config import PipelineConfig
from mtrec.pipeline.pipeline import create_pipeline

DEFAULT_IMAGE = "ghcr.io/mtrec/mtrec:latest"


def compile_pipeline(config: PipelineConfig, image: str, output_file: str) -> str:
    """Write the pipeline spec for ``config`` (paths must be visible to the cluster).

    KFP v2 compiles only TFX's built-in resolver strategies, so the baseline is the latest
    blessed model there; KFP's own step caching covers re-runs.
    """
    config = dataclasses.replace(config, baseline_strategy="latest_blessed")
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_file)),
        output_filename=os.path.basename(output_file),
    )
    runner.run(create_pipeline(config))
    return output_file
