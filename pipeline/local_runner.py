"""Local runner: LocalDagRunner, SQLite MLMD, Beam DirectRunner on every core."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf_keras).

from tfx import v1 as tfx

from mtrec.pipeline.config import PipelineConfig
from mtrec.pipeline.pipeline import create_pipeline

METADATA_FILE = "metadata.sqlite"


def default_beam_args() -> tuple[str, ...]:
    """DirectRunner in multi-processing mode with one worker per core."""
    return ("--direct_running_mode=multi_processing", f"--direct_num_workers={os.cpu_count() or 1}")


def metadata_path(output_dir: str | os.PathLike) -> str:
    """Where the local MLMD SQLite database lives inside an output directory."""
    return str(Path(output_dir) / METADATA_FILE)


def run(config: PipelineConfig, output_dir: str | os.PathLike) -> None:
    """Run the pipeline locally, recording everything in the output dir's SQLite MLMD."""
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        metadata_path(output_dir)
    )
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, connection))
