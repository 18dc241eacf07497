"""The Beam components on Beam's PortableRunner, the path Flink, Spark and Dataflow take.

The job service is Beam's own, embedded in the test's process (``--job_endpoint=embed``); the
SDK workers are separate processes that a Python worker pool (``worker_pool_main``, what the
Beam SDK container runs in pool mode) starts for each job (``--environment_type=EXTERNAL``).
Every DoFn is pickled, shipped and run there, so nothing can lean on the submitting process:
its globals, its environment or its in-memory state.

- A probe job: its elements are processed in children of the worker pool.
- The data component alone (``build.run``): the same examples, split by split, as on the
  DirectRunner.
- The whole pipeline (``mtrec run --beam-arg=...``): the data component, StatisticsGen,
  Transform and the Evaluator each start a worker in the pool; every node executes and MLMD
  records their artifacts. About 3 to 3.5 minutes on 2 busy cores, two thirds of it the
  Trainer and Transform.

Workers a pool starts never read the pipeline options, so the local runner's
``--beam_plugin=mtrec.quiet`` is accepted but not imported there: TF's teardown tracebacks
land in the pool's log, harmless.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tensorflow as tf

from mtrec import names as F
from mtrec.cli.main import main
from mtrec.data import build, source
from mtrec.data.config import DataConfig, DataSummary
from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME
from mtrec.results import store as results
from tests.support.nodes import NODES
from tests.support.synthetic import make_movielens_dir

REPO = Path(__file__).resolve().parents[2]
STARTED = "Starting worker with command"  # The pool's log line for each worker it starts.
BEAM_NODES = ("MtrecExampleGen", "StatisticsGen", "Transform", "Evaluator")
BEAM_ARTIFACT_TYPES = {"Examples", "ExampleStatistics", "TransformGraph", "ModelEvaluation"}
KEY = (F.USER_ID, F.ITEM_ID, F.TIMESTAMP, F.CLICK)
Example = tuple[int, int, int, int]  # The values of KEY.


class WorkerPool:
    """A Python SDK worker pool in its own process, logging to ``log``."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    @property
    def beam_args(self) -> tuple[str, ...]:
        """Pipeline options that send a job to this pool through Beam's portable runner."""
        return (
            "--runner=PortableRunner",
            "--job_endpoint=embed",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{self.port}",
        )

    def workers_started(self) -> int:
        """How many SDK workers the pool has started so far."""
        return self.log.read_text(errors="replace").count(STARTED)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(process: subprocess.Popen, port: int, timeout: float = 120.0) -> None:
    """Until ``process`` listens on ``port``; fails if it exits first or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker pool exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("localhost", port), 1):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the worker pool did not listen on port {port} in {timeout:.0f}s")


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory) -> Iterator[WorkerPool]:
    """The pool runs this venv's Python: its workers are started as ``python -c ...``, found
    on PATH, and with TF_USE_LEGACY_KERAS=1, as everything here. It runs in the repository
    root, so the workers can import ``tests`` for the probe's function (mtrec is installed)."""
    port = free_port()
    log = tmp_path_factory.mktemp("pool") / "worker_pool.log"
    env = {
        **os.environ,
        "PATH": os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", ""))),
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.worker.worker_pool_main",
                f"--service_port={port}",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(process, port)
        yield WorkerPool(process, port, log)
    finally:
        # SIGINT, not SIGTERM: the pool then exits normally and stops any worker still up.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def movielens_dir(tmp_path_factory) -> Path:
    return make_movielens_dir(
        tmp_path_factory.mktemp("ml") / "ml", n_users=30, n_items=40, ratings_per_user=8
    )


@pytest.fixture(scope="module")
def direct_build(movielens_dir, tmp_path_factory) -> tuple[str, DataSummary]:
    """The data component alone on the default DirectRunner, to compare against."""
    out = tmp_path_factory.mktemp("direct")
    return build.run(source.movielens(str(movielens_dir)), DataConfig(), str(out))


def read_examples(root: str, split: str) -> collections.Counter[Example]:
    """(user, item, timestamp, click) of every example in ``root``'s ``Split-<split>/``."""
    files = tf.io.gfile.glob(f"{root}/Split-{split}/*")
    out: collections.Counter[Example] = collections.Counter()
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        out[tuple(feature[name].int64_list.value[0] for name in KEY)] += 1
    return out


def process_ids(_: object) -> tuple[int, int]:
    """The probe: (this process, its parent), where Beam runs it."""
    return os.getpid(), os.getppid()


def test_elements_are_processed_in_the_worker_pools_children(worker_pool, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    before = worker_pool.workers_started()
    with beam.Pipeline(options=PipelineOptions(list(worker_pool.beam_args))) as pipeline:
        _ = (
            pipeline
            | beam.Create(range(20))
            | beam.Map(process_ids)
            | beam.Distinct()
            | beam.Map(lambda ids: f"{ids[0]} {ids[1]}")
            | beam.io.WriteToText(str(tmp_path / "ids"))
        )
    lines = [
        line for path in tmp_path.glob("ids*") for line in path.read_text().splitlines() if line
    ]
    ids = {tuple(int(n) for n in line.split()) for line in lines}
    assert ids, "the probe wrote nothing"
    assert all(pid not in (os.getpid(), worker_pool.process.pid) for pid, _ in ids)
    assert {parent for _, parent in ids} == {worker_pool.process.pid}
    assert worker_pool.workers_started() > before


def test_data_component_makes_the_same_examples_as_on_the_direct_runner(
    worker_pool, movielens_dir, direct_build, tmp_path
):
    before = worker_pool.workers_started()
    root, summary = build.run(
        source.movielens(str(movielens_dir)),
        DataConfig(),
        str(tmp_path / "portable"),
        worker_pool.beam_args,
    )
    assert worker_pool.workers_started() > before  # The job ran in the pool's workers.
    direct_root, direct_summary = direct_build
    assert summary == direct_summary  # Counts, slice sizes, rating baseline, fingerprint.
    total = 0
    for split in F.SPLITS:
        examples = read_examples(root, split)
        assert examples == read_examples(direct_root, split), split
        assert examples.total() == summary.splits[split]["examples"] > 0
        total += examples.total()
    assert total == 5 * 30 * 8  # Each rating and its 4 sampled non-interactions.


def test_whole_pipeline_runs_its_beam_components_on_the_portable_runner(
    worker_pool, movielens_dir, direct_build, tmp_path
):
    output = tmp_path / "out"
    args = [
        "run",
        "--output-dir",
        str(output),
        "--movielens-dir",
        str(movielens_dir),
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--min-slice-size",
        "100",
        *(f"--beam-arg={arg}" for arg in worker_pool.beam_args),
    ]
    before = worker_pool.workers_started()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    assert code == 0, err.getvalue()[-4000:]
    # One job per Beam component, each in workers of the pool.
    assert worker_pool.workers_started() - before >= len(BEAM_NODES)

    store = results.open_store(str(output / "metadata.sqlite"))
    summary = results.latest_run(store, DEFAULT_PIPELINE_NAME)
    assert sorted(c.node for c in summary.components) == sorted(NODES)
    assert {c.node: c.state for c in summary.components} == dict.fromkeys(NODES, "executed")
    recorded = {store.get_artifact_types_by_id([a.type_id])[0].name for a in store.get_artifacts()}
    assert recorded >= BEAM_ARTIFACT_TYPES
    # The data component in the pipeline made what it makes alone on the DirectRunner.
    assert summary.split_counts == direct_build[1].splits
    for split in F.SPLITS:
        assert read_examples(summary.examples_uri, split) == read_examples(direct_build[0], split)
    assert summary.statistics_uri and tf.io.gfile.exists(summary.statistics_uri)
    assert summary.evaluation_uri and set(summary.metrics) == set(F.HEADS)
