"""Local runner: LocalDagRunner, SQLite MLMD, Beam DirectRunner on every core."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf_keras).

from tfx import v1 as tfx

from mtrec import files, local_beam, quiet
from mtrec import names as F
from mtrec.components.span_window import window_spans
from mtrec.data import build, source
from mtrec.errors import DataError, MtrecError
from mtrec.pipeline.config import PipelineConfig
from mtrec.pipeline.pipeline import create_pipeline

METADATA_FILE = "metadata.sqlite"
log = logging.getLogger(__name__)


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
    this process does (the CLI's default; -v shows them). The run leaves the system's temp
    directory as it found it (see ``_run_scoped_tempdir``). One run at a time uses an output
    dir: two (a daily job still running when the next starts) would interleave their MLMD
    writes and pushes, so the second is refused before it starts.
    """
    with files.exclusive_folder(output_dir, "mtrec run"):
        _run(config, output_dir)


# The Beam options that carry a run's Python dependencies, as TFX reads them: given one, its
# Beam executors do not package the TFX install (dependency_utils.make_beam_dependency_flags).
DEPENDENCY_OPTIONS = (
    "extra_packages",
    "setup_file",
    "requirements_file",
    "worker_harness_container_image",
    "sdk_container_image",
)


def without_tfx_sdist(beam_args: tuple[str, ...]) -> tuple[str, ...]:
    """On the DirectRunner, Beam args that also name Beam's default SDK image. Without a
    dependency option every TFX Beam executor copies the TFX install (about 50 MB) and builds
    an sdist of it for remote workers, about 1.3 s each; the DirectRunner's workers (this
    Python, in process or as subprocesses) never use it, nor read the image. Args for any
    other runner, or that already carry a dependency, are returned as they are."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(flags=list(beam_args)).get_all_options(retain_unknown_options=True)
    if options.get("runner") not in (None, "DirectRunner") or any(
        options.get(name) for name in DEPENDENCY_OPTIONS
    ):
        return beam_args
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (*beam_args, f"--sdk_container_image=apache/beam_python{version}_sdk:{beam.__version__}")


def _run(config: PipelineConfig, output_dir: str | os.PathLike) -> None:
    local_beam.flush_by_size_only()
    beam_args = without_tfx_sdist(quiet.with_beam_plugin(config.beam_pipeline_args))
    config = dataclasses.replace(config, beam_pipeline_args=beam_args)
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        metadata_path(output_dir)
    )
    with _run_scoped_tempdir():
        if config.continuous is not None and not config.continuous.ingest_only:
            config = _with_window_ingested(config, connection)
        with _argv_hidden_from_absl():
            tfx.orchestration.LocalDagRunner().run(create_pipeline(config, connection))


def _with_window_ingested(config: PipelineConfig, connection: Any) -> PipelineConfig:
    """Continuous training: fix the span this run ingests (the newest, unless asked) and first
    ingest every span of its window that MLMD does not hold yet (the first run's, say), each
    in a run of the data and validation nodes alone. Returns the config with the span set."""
    continuous = config.continuous
    available = source.span_numbers(config.source.base)
    span = available[-1] if continuous.span is None else continuous.span
    if span not in available:
        raise DataError(
            f"{config.source.base}: no span {span}; it has spans {_spans_text(available)}"
        )
    window = [s for s in window_spans(span, continuous.window) if s in available]
    if not window:
        raise DataError(
            f"span {span} is the first in {config.source.base}: continuous training trains on "
            "the spans before the one it evaluates on, so it needs at least two"
        )
    _check_has_files(config.source.base, span)
    missing = sorted(set(window) - ingested_spans(connection, config.pipeline_name))
    for earlier in missing:
        try:
            _check_has_files(config.source.base, earlier)
        except DataError as err:  # Left out of the window, as a span that fails to ingest.
            log.warning("Span %d left out of the training window: %s", earlier, err)
            continue
        log.info("Ingesting span %d of the training window first", earlier)
        backfill = dataclasses.replace(
            config,
            continuous=dataclasses.replace(continuous, span=earlier, ingest_only=True),
        )
        try:
            with _argv_hidden_from_absl():
                tfx.orchestration.LocalDagRunner().run(create_pipeline(backfill, connection))
        except (MtrecError, RuntimeError) as err:
            # A span that cannot be ingested (bad rows, say) failed its own run already: it
            # is left out of this window, as a span that fails validation is.
            log.warning("Span %d left out of the training window: %s", earlier, err)
    if not set(window) & ingested_spans(connection, config.pipeline_name):
        raise DataError(
            f"no span of the training window of span {span} ({_spans_text(window)}) could "
            "be ingested; see the warnings above"
        )
    return dataclasses.replace(config, continuous=dataclasses.replace(continuous, span=span))


def _check_has_files(base: str, span: int) -> None:
    """Refuse a span whose folder holds no log file yet (created, its files still on their
    way, say), before any component runs for it."""
    try:
        build.resolve_files(base, {source.INTERACTIONS: source.span_pattern(base, span)})
    except DataError:
        raise DataError(
            f"{base}: span {span} has no log files yet (hidden and '_' files aside)"
        ) from None


def ingested_spans(connection: Any, pipeline_name: str) -> set[int]:
    """The spans the data component of ``pipeline_name`` has written examples for."""
    import ml_metadata as mlmd

    store = mlmd.MetadataStore(connection)
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{F.EXAMPLE_GEN}")
    if context is None:
        return set()
    return {
        artifact.properties["span"].int_value
        for artifact in store.get_artifacts_by_context(context.id)
        if artifact.type == "Examples" and artifact.state == artifact.LIVE
    }


def _spans_text(spans: list[int]) -> str:
    return ", ".join(map(str, spans)) if len(spans) < 8 else f"{spans[0]} to {spans[-1]}"


@contextlib.contextmanager
def _run_scoped_tempdir() -> Iterator[str]:
    """Give the run a temp directory of its own, this process's and its Beam workers', and
    remove it when the run ends, however it ends.

    Given Beam args without a dependency flag, every TFX Beam executor copies the TFX install
    (about 50 MB) into a new temp directory to build an sdist for remote workers, and never
    deletes it; TF's AutoGraph and TFDV leave files there too. Runs filled a 250 GB disk so.
    """
    scoped = tempfile.mkdtemp(prefix="mtrec-run-")
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = scoped
    try:
        yield scoped
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(scoped, ignore_errors=True)


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
