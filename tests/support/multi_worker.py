"""Training on a two-worker cluster on localhost, as TFX's Trainer runs on a real one.

- ``build_examples``: tiny synthetic MovieLens through the data component's Beam job.
- ``run_transform``: TFX's own Transform executor with the pipeline's ``preprocessing_fn``.
- ``launch``: one process per worker, each with its own ``TF_CONFIG``, each running the
  pipeline's ``run_fn`` with the FnArgs TFX's Trainer builds from the same artifacts.
- ``evaluate`` and ``push``: the pipeline's Evaluator executor (TFX's, its config completed
  from the data summary) and TFX's Pusher: the blessing path.

``python -m tests.support.multi_worker SPEC.json`` is one worker (TF_CONFIG from the
environment).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Set before any worker imports TensorFlow (it is imported lazily here).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[2]
# The strings the pipeline gives TFX's Transform and Trainer (pipeline/pipeline.py).
PREPROCESSING_FN = "mtrec.models.modules.transform_module.preprocessing_fn"
RUN_FN = "mtrec.models.modules.trainer_module.run_fn"
SPLITS = ("train", "valid", "eval")  # names.SPLITS, as ExampleGen writes them.
DIGEST = re.compile(r"Trained weights digest: ([0-9a-f]+)")
START_DIGEST = re.compile(r"Warm-start weights digest: ([0-9a-f]+)")
STRATEGY = re.compile(r"Training with (.+)")


def build_examples(
    root: Path, n_users: int = 100, n_items: int = 120, ratings_per_user: int = 30
) -> str:
    """Examples (``Split-<name>/`` shards and the data summary) built by the data
    component's Beam job from synthetic MovieLens files; returns their folder."""
    from mtrec.data import build
    from mtrec.data import source as data_source
    from mtrec.data.config import DataConfig
    from tests.support.synthetic import make_movielens_dir

    movielens = make_movielens_dir(
        root / "ml", n_users=n_users, n_items=n_items, ratings_per_user=ratings_per_user
    )
    examples, _ = build.run(data_source.movielens(str(movielens)), DataConfig(), str(root / "data"))
    return examples


def _artifact(kind: str, uri: Path | str, splits: tuple[str, ...] = ()) -> Any:
    from tfx.types import artifact_utils, standard_artifacts

    artifact = getattr(standard_artifacts, kind)()
    artifact.uri = str(uri)
    if splits:
        artifact.split_names = artifact_utils.encode_split_names(list(splits))
    return artifact


@dataclasses.dataclass(frozen=True)
class TransformOutput:
    """Where TFX's Transform wrote its graph, the raw examples it read, and the schema."""

    examples: str  # The raw examples Transform analyzed, which the Trainer reads.
    schema: str
    graph: str


def run_transform(examples_dir: str, root: Path) -> TransformOutput:
    """Run TFX's Transform executor as the pipeline configures it (analyze train, write no
    transformed examples) on the raw examples in ``examples_dir``, with the curated schema."""
    from tfx.components.transform import executor as transform_executor
    from tfx.proto import transform_pb2
    from tfx.utils import proto_utils

    from mtrec.data.config import CURATED_SCHEMA

    schema_dir = root / "schema"
    schema_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(CURATED_SCHEMA, schema_dir / "schema.pbtxt")  # What CuratedSchemaGen emits.
    out = TransformOutput(
        str(examples_dir),
        str(schema_dir),
        str(root / "transform_graph"),
    )
    splits = transform_pb2.SplitsConfig(analyze=["train"])
    transform_executor.Executor().Do(
        {
            "examples": [_artifact("Examples", out.examples, SPLITS)],
            "schema": [_artifact("Schema", out.schema)],
        },
        {"transform_graph": [_artifact("TransformGraph", out.graph)]},
        {
            "preprocessing_fn": PREPROCESSING_FN,
            "splits_config": proto_utils.proto_to_json(splits),
            "disable_statistics": 1,
            "force_tf_compat_v1": 0,
            "custom_config": "null",
        },
    )
    return out


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """One worker's Trainer inputs and outputs (the same inputs for every worker)."""

    transform: TransformOutput
    model: str  # The Model artifact's URI: run_fn exports to its Format-Serving folder.
    model_run: str
    model_config: dict
    base_model: str | None = None  # A previous Model artifact's URI: the warm start's base.

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        values = json.loads(text)
        return cls(**{**values, "transform": TransformOutput(**values["transform"])})


def train(spec: WorkerSpec) -> None:
    """What TFX's Trainer executor does on each worker: FnArgs from the artifacts, then the
    pipeline's ``run_fn``. (Its ``Do`` also insists that the serving model exists
    afterwards, which only holds on the chief.)"""
    from tfx.components.trainer import executor as trainer_executor
    from tfx.components.util import udf_utils
    from tfx.proto import trainer_pb2
    from tfx.utils import proto_utils

    properties = {
        "run_fn": RUN_FN,
        "train_args": proto_utils.proto_to_json(trainer_pb2.TrainArgs(splits=["train"])),
        "eval_args": proto_utils.proto_to_json(trainer_pb2.EvalArgs(splits=["valid"])),
        "custom_config": json.dumps({"model": spec.model_config}),
    }
    inputs = {
        "examples": [_artifact("Examples", spec.transform.examples, SPLITS)],
        "transform_graph": [_artifact("TransformGraph", spec.transform.graph)],
        "schema": [_artifact("Schema", spec.transform.schema)],
    }
    if spec.base_model:
        inputs["base_model"] = [_artifact("Model", spec.base_model)]
    fn_args = trainer_executor.GenericExecutor()._GetFnArgs(
        inputs,
        {
            "model": [_artifact("Model", spec.model)],
            "model_run": [_artifact("ModelRun", spec.model_run)],
        },
        properties,
    )
    udf_utils.get_fn(properties, "run_fn")(fn_args)


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclasses.dataclass(frozen=True)
class Worker:
    """A finished worker: exit code and log."""

    index: int
    returncode: int | None  # None: killed (at the timeout, or after another failed).
    log: str

    def digest(self) -> str | None:
        """The trained-weights digest run_fn logged."""
        found = DIGEST.findall(self.log)
        return found[-1] if found else None

    def start_digest(self) -> str | None:
        """The digest of the warm-started weights before training, as run_fn logged it."""
        found = START_DIGEST.findall(self.log)
        return found[-1] if found else None

    def strategy(self) -> str | None:
        """The line fit() logged on where it trained."""
        found = STRATEGY.findall(self.log)
        return found[-1] if found else None


def launch(specs: list[WorkerSpec], log_dir: Path, timeout_s: float) -> list[Worker]:
    """Run one process per spec as the workers of one cluster on loopback and wait."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(len(specs))]
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for index, spec in enumerate(specs):
        spec_file = log_dir / f"worker{index}.json"
        spec_file.write_text(spec.to_json())
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        with open(log_dir / f"worker{index}.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.support.multi_worker", str(spec_file)],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    # Wait for all; once one fails, the others would wait for it forever: stop them.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(p.poll() is None for p in processes):
        if any(p.poll() not in (None, 0) for p in processes):
            break
        time.sleep(0.5)
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    codes = [None if p.returncode < 0 else p.returncode for p in processes]
    return [
        Worker(index, code, (log_dir / f"worker{index}.log").read_text(errors="replace"))
        for index, code in enumerate(codes)
    ]


def evaluate(examples_dir: str, model_uri: str, settings: Any, out_dir: Path) -> Any:
    """The pipeline's Evaluator executor on the eval split with ``EvaluationSettings``: the
    thresholds are completed from the examples' data summary, and with no baseline yet the
    change thresholds are waived. Returns the ModelBlessing artifact it marked."""
    from tfx.utils import json_utils

    from mtrec import names as F
    from mtrec.components import evaluation

    (out_dir / "blessing").mkdir(parents=True, exist_ok=True)
    model = _artifact("Model", model_uri)
    model.id = 1
    blessing = _artifact("ModelBlessing", out_dir / "blessing")
    evaluation.Executor().Do(
        {"examples": [_artifact("Examples", examples_dir, SPLITS)], "model": [model]},
        {
            "evaluation": [_artifact("ModelEvaluation", out_dir / "evaluation")],
            "blessing": [blessing],
        },
        {
            evaluation.SETTINGS_KEY: settings.to_json(),
            "example_splits": json_utils.dumps([F.EVAL]),
        },
    )
    return blessing


def push(model_uri: str, blessing: Any, serving_dir: Path, out_dir: Path) -> str | None:
    """TFX's Pusher: copies the model to ``serving_dir/<version>`` only when ``blessing``
    says so. Returns the version pushed, or None."""
    from tfx.components.pusher import executor as pusher_executor
    from tfx.proto import pusher_pb2
    from tfx.utils import proto_utils

    pushed = _artifact("PushedModel", out_dir / "pushed_model")
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving_dir))
    )
    pusher_executor.Executor().Do(
        {"model": [_artifact("Model", model_uri)], "model_blessing": [blessing]},
        {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(destination), "custom_config": "null"},
    )
    if not pushed.get_int_custom_property("pushed"):
        return None
    return pushed.get_string_custom_property("pushed_version")


def main(argv: list[str]) -> int:
    """One worker: train on the spec in ``argv[0]`` under this process's TF_CONFIG."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    train(WorkerSpec.from_json(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
