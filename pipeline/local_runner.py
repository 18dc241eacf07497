"""Local runner: LocalDagRunner, SQLite MLMD, Beam DirectRunner on every core."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf_keras).

from tfx import v1 as tfx

from mtrec import quiet
from mtrec.pipeline.config import PipelineConfig
from mtrec.pipeline.pipeline import create_pipeline

METADATA_FILE = "metadata.sqlite"


# Below this much raw input, Beam runs in this process: starting a worker per core, each
# importing TensorFlow and loading the model, costs more than it saves on small data. Above
# it the Evaluator gains most from the workers: on MovieLens-100K (2 MiB of ratings, 50,000
# eval examples) it took 212 s in one process (a busy machine) and 124.6 s on two workers
# (an idle one): see the README.
IN_MEMORY_MAX_BYTES = 2**20


def default_beam_args(input_bytes: int | None = None) -> tuple[str, ...]:
    """DirectRunner in this process for small inputs (``input_bytes``: the raw files' size),
    else in multi-processing mode with one worker per core."""
    if input_bytes is not None and input_bytes < IN_MEMORY_MAX_BYTES:
        return ("--direct_running_mode=in_memory",)
    return ("--direct_running_mode=multi_processing", f"--direct_num_workers={os.cpu_count() or 1}")


def metadata_path(output_dir: str | os.PathLike) -> str:
    """Where the local MLMD SQLite database lives inside an output directory."""
    return str(Path(output_dir) / METADATA_FILE)


def run(config: PipelineConfig, output_dir: str | os.PathLike) -> None:
    """Run the pipeline locally, recording everything in the output dir's SQLite MLMD.

    Every Beam worker imports mtrec.quiet first, so that it hides TF's teardown errors when
    this process does (the CLI's default; -v shows them).
    """
    config = dataclasses.replace(
        config, beam_pipeline_args=quiet.with_beam_plugin(config.beam_pipeline_args)
    )
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        metadata_path(output_dir)
    )
    with _argv_hidden_from_absl():
        tfx.orchestration.LocalDagRunner().run(create_pipeline(config, connection))


@contextlib.contextmanager
def _argv_hidden_from_absl() -> Iterator[None]:
    """TFX's Beam executors parse ``sys.argv`` as absl flags, where the command line's own
    arguments mean something else: ``mtrec -v run`` reads as ``--verbosity=run`` and fails."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        yield
    finally:
        sys.argv = argv
