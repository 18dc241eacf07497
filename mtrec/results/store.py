"""Read what a pipeline run did back out of MLMD: components, blessing, push, metrics."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from typing import Any

import ml_metadata as mlmd
from google.protobuf import json_format
from ml_metadata.proto import metadata_store_pb2

from mtrec import names as F

STATE_NAMES = {
    metadata_store_pb2.Execution.COMPLETE: "executed",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.NEW: "new",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}
# Node ids whose inputs say what a run trained on, from what and on what it evaluated.
TRANSFORM = "Transform"
ANOMALIES_GATE = "AnomaliesGate"
TRAINER = "Trainer"
EVALUATOR = "Evaluator"
PUSHER = "Pusher"
# Per head: its metrics and its example count.
HEADLINE_METRICS = {head: (*F.HEAD_METRICS[head], F.COUNT_METRIC[head]) for head in F.HEADS}


@dataclasses.dataclass
class ComponentRun:
    """One node's execution in a run."""

    node: str
    state: str
    seconds: float


@dataclasses.dataclass
class RunSummary:
    """What one pipeline run produced."""

    run_id: str
    components: list[ComponentRun]
    blessed: bool | None = None
    infra_blessed: bool | None = None
    infra_reason: str = ""
    pushed_to: str | None = None
    pushed_version: str | None = None
    evaluation_uri: str | None = None
    model_uri: str | None = None
    baseline_model_uri: str | None = None
    model_run_uri: str | None = None
    examples_uri: str | None = None
    statistics_uri: str | None = None
    anomalies_uri: str | None = None
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    failed_thresholds: list[str] = dataclasses.field(default_factory=list)
    # The data fingerprint of the examples each model was trained on, found by lineage (the
    # data component records it on its Examples); None where unknown (no baseline).
    data_fingerprint: str | None = None
    baseline_data_fingerprint: str | None = None
    # What the data component recorded: counts per split, the training-mean rating RMSE.
    split_counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    rating_baseline: float | None = None
    # Spans (TFX's Examples property): the one the data component ingested, those of the
    # Transform's input window (the spans trained on) and the one the Evaluator scored.
    span: int | None = None
    trained_spans: list[int] = dataclasses.field(default_factory=list)
    eval_span: int | None = None
    # The Evaluator scored one of the trained Examples artifacts (its held-out eval split:
    # the classic one-dataset pipeline), not a later span.
    eval_split_of_trained: bool = False
    # RequestSkewGen's anomalies and the features it found drifted (None: no request logs).
    request_skew_uri: str | None = None
    skewed_features: list[str] | None = None
    # Whether the Trainer started from an earlier model (a base_model input); None: no Trainer.
    warm_start: bool | None = None

    @property
    def cached_nodes(self) -> list[str]:
        """Nodes whose outputs were reused from an earlier run."""
        return [c.node for c in self.components if c.state == "cached"]

    @property
    def data_warning(self) -> str | None:
        """Why the candidate-vs-baseline comparison is across different data, if it is.
        Continuous training evaluates on a later span than any model trained on: models
        trained on different windows is the point there, and neither saw the eval rows."""
        if self.trained_spans and not self.eval_split_of_trained:
            return None
        return data_fingerprint_warning(self.data_fingerprint, self.baseline_data_fingerprint)

    @property
    def failed_node(self) -> str | None:
        """The first node whose execution failed (it stopped the run), if any."""
        return next((c.node for c in self.components if c.state == "failed"), None)

    @property
    def unfinished_node(self) -> str | None:
        """The first node still running when MLMD was read (or whose run was killed)."""
        return next((c.node for c in self.components if c.state in ("running", "new")), None)


@dataclasses.dataclass
class HistoryRow:
    """One pipeline run in the history of a (continuously trained) pipeline."""

    run_id: str
    started: datetime.datetime  # When the run's context was created, in UTC.
    span: int | None  # The span its data component ingested.
    trained_spans: list[int]
    eval_span: int | None
    eval_split_of_trained: bool
    warm_start: bool | None  # None: the run did not reach the Trainer.
    metrics: dict[str, float]  # Per head, its headline metric on the overall slice.
    blessed: bool | None  # None: the run did not reach the Evaluator.
    pushed_version: str | None
    failed_node: str | None
    unfinished_node: str | None = None
    cached_nodes: list[str] = dataclasses.field(default_factory=list)
    # A run of the data and validation nodes alone: `mtrec run --logs` ingesting a span of
    # the training window before the run that trains on it.
    ingest_only: bool = False

    @property
    def pushed_cached(self) -> bool:
        """The push is an earlier run's, reused by a cached Pusher: this run pushed nothing."""
        return PUSHER in self.cached_nodes

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the start time as ISO 8601, non-finite metrics as null)."""
        row = dataclasses.asdict(self)
        row["started"] = self.started.isoformat()
        row["metrics"] = {k: v if math.isfinite(v) else None for k, v in self.metrics.items()}
        return row


def data_fingerprint_warning(candidate: str | None, baseline: str | None) -> str | None:
    """A warning when both models' data fingerprints are known and differ, else None."""
    if not candidate or not baseline or candidate == baseline:
        return None
    return (
        f"WARNING: the baseline model was trained on examples with data fingerprint "
        f"{baseline}, the candidate on {candidate}: the comparison is across different data"
    )


def open_store(metadata_path: str) -> mlmd.MetadataStore:
    """A read-write handle on a local SQLite MLMD database."""
    if not os.path.exists(metadata_path):
        raise FileNotFoundError(f"{metadata_path}: no MLMD database; run the pipeline first")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return mlmd.MetadataStore(config)


def _node_name(store: mlmd.MetadataStore, execution_id: int) -> str:
    for context in store.get_contexts_by_execution(execution_id):
        if store.get_context_types_by_id([context.type_id])[0].name == "node":
            return context.name.split(".", 1)[-1]
    return "?"


def _pipeline_runs(store: mlmd.MetadataStore, pipeline_name: str) -> list[Any]:
    """The ``pipeline_run`` contexts of ``pipeline_name``, oldest first; none is an error.
    A run without a ``pipeline_name`` property (TFX's local runs) belongs to the pipeline
    whose ``pipeline`` context its executions are in."""
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    in_pipeline = (
        {e.id for e in store.get_executions_by_context(pipeline.id)} if pipeline else set()
    )
    runs = [
        c
        for c in store.get_contexts_by_type("pipeline_run")
        if c.properties["pipeline_name"].string_value == pipeline_name
        or (
            not c.properties["pipeline_name"].string_value
            and any(e.id in in_pipeline for e in store.get_executions_by_context(c.id))
        )
    ]
    if not runs:
        raise LookupError(f"no run of pipeline '{pipeline_name}' in MLMD")
    return sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def latest_run(
    store: mlmd.MetadataStore, pipeline_name: str, evaluated: bool = False
) -> RunSummary:
    """Summarise the most recent run of ``pipeline_name`` (with ``evaluated``, the most
    recent one whose Evaluator produced an evaluation, run or cached)."""
    for run in reversed(_pipeline_runs(store, pipeline_name)):
        summary = _summarise(store, run)
        if summary.evaluation_uri or not evaluated:
            if summary.evaluation_uri:
                summary.metrics, summary.failed_thresholds = read_evaluation(summary.evaluation_uri)
            return summary
    raise LookupError(f"no run of pipeline '{pipeline_name}' reached the Evaluator")


def run_history(store: mlmd.MetadataStore, pipeline_name: str) -> list[HistoryRow]:
    """One row per run of ``pipeline_name``, oldest first: spans, warm or cold start, each
    head's headline metric overall, blessing, pushed version and the node that failed."""
    rows = []
    for run in _pipeline_runs(store, pipeline_name):
        summary = _summarise(store, run)
        metrics = {}
        if summary.evaluation_uri and _exists(summary.evaluation_uri):
            by_head = read_evaluation(summary.evaluation_uri)[0]
            metrics = {
                head: by_head[head][F.HEAD_METRICS[head][0]]
                for head in F.HEADS
                if F.HEAD_METRICS[head][0] in by_head.get(head, {})
            }
        rows.append(
            HistoryRow(
                run_id=summary.run_id,
                started=datetime.datetime.fromtimestamp(
                    run.create_time_since_epoch / 1000, datetime.UTC
                ),
                span=summary.span,
                trained_spans=summary.trained_spans,
                eval_span=summary.eval_span,
                eval_split_of_trained=summary.eval_split_of_trained,
                warm_start=summary.warm_start,
                metrics=metrics,
                blessed=summary.blessed,
                pushed_version=summary.pushed_version,
                failed_node=summary.failed_node,
                unfinished_node=summary.unfinished_node,
                cached_nodes=summary.cached_nodes,
                # The window's backfill runs have no gate (see pipeline.create_pipeline).
                ingest_only=not any(
                    c.node in (ANOMALIES_GATE, TRANSFORM) for c in summary.components
                ),
            )
        )
    return rows


def _exists(uri: str) -> bool:
    """Whether an artifact's directory is still there (old runs' outputs may be deleted)."""
    import tensorflow as tf  # Deferred: slow to import; gfile reads remote URIs too.

    return bool(tf.io.gfile.isdir(uri))


def _summarise(store: mlmd.MetadataStore, run: Any) -> RunSummary:
    executions = sorted(
        store.get_executions_by_context(run.id), key=lambda e: (e.create_time_since_epoch, e.id)
    )
    summary = RunSummary(run_id=run.name, components=[])
    model_ids: dict[str, int] = {}  # "candidate" / "baseline": Model artifact id.
    trained_ids: set[int] = set()  # The Transform's input Examples.
    eval_ids: set[int] = set()  # The Evaluator's.
    for execution in executions:
        node = _node_name(store, execution.id)
        if node == TRAINER and summary.warm_start is None:
            summary.warm_start = False  # Until a base_model input says otherwise.
        summary.components.append(
            ComponentRun(
                node,
                STATE_NAMES.get(execution.last_known_state, "?"),
                (execution.last_update_time_since_epoch - execution.create_time_since_epoch)
                / 1000.0,
            )
        )
        for event in store.get_events_by_execution_ids([execution.id]):
            artifact = store.get_artifacts_by_id([event.artifact_id])[0]
            type_name = store.get_artifact_types_by_id([artifact.type_id])[0].name
            if event.type == metadata_store_pb2.Event.OUTPUT:
                _read_output(summary, node, type_name, artifact)
                if type_name == "Model":
                    model_ids["candidate"] = artifact.id
            elif event.type == metadata_store_pb2.Event.INPUT:
                key = event.path.steps[0].key if event.path.steps else ""
                if type_name == "Model" and key == "baseline_model":
                    summary.baseline_model_uri = artifact.uri
                    model_ids["baseline"] = artifact.id
                elif type_name == "Model" and key == "base_model" and node == TRAINER:
                    summary.warm_start = True
                elif type_name == "Examples" and key == "examples" and node == TRANSFORM:
                    trained_ids.add(artifact.id)
                    if (span := _span(artifact)) is not None:
                        summary.trained_spans.append(span)
                elif type_name == "Examples" and key == "examples" and node == EVALUATOR:
                    eval_ids.add(artifact.id)
                    summary.eval_span = _span(artifact)
    summary.trained_spans = sorted(set(summary.trained_spans))
    summary.eval_split_of_trained = bool(eval_ids & trained_ids)
    if "candidate" in model_ids:
        summary.data_fingerprint = trained_data_fingerprint(store, model_ids["candidate"])
    if "baseline" in model_ids:
        summary.baseline_data_fingerprint = trained_data_fingerprint(store, model_ids["baseline"])
    return summary


def trained_data_fingerprint(
    store: mlmd.MetadataStore, artifact_id: int, depth: int = 4
) -> str | None:
    """The data fingerprint an artifact (a Model) derives from: up its lineage (Trainer,
    Transform) to the Examples the data component recorded it on. Runs made before the data
    component carry it in the Trainer's custom_config instead."""
    producers = [
        event.execution_id
        for event in store.get_events_by_artifact_ids([artifact_id])
        if event.type == metadata_store_pb2.Event.OUTPUT
    ]
    for execution in store.get_executions_by_id(producers):
        if found := _config_fingerprint(execution):
            return found
        if depth == 0:
            continue
        inputs = [
            event.artifact_id
            for event in store.get_events_by_execution_ids([execution.id])
            if event.type == metadata_store_pb2.Event.INPUT
        ]
        for artifact in store.get_artifacts_by_id(inputs):
            if store.get_artifact_types_by_id([artifact.type_id])[0].name != "Examples":
                continue
            if "data_fingerprint" in artifact.custom_properties:
                return artifact.custom_properties["data_fingerprint"].string_value
            if found := trained_data_fingerprint(store, artifact.id, depth - 1):
                return found
    return None


def _config_fingerprint(execution: Any) -> str | None:
    for props in (execution.properties, execution.custom_properties):
        if "custom_config" not in props:
            continue
        try:
            config = json.loads(props["custom_config"].string_value)
        except json.JSONDecodeError:
            continue  # Not ours (a RuntimeParameter placeholder, say): unknown.
        found = config.get("data_fingerprint") if isinstance(config, dict) else None
        if found:
            return str(found)
    return None


def _read_output(summary: RunSummary, node: str, type_name: str, artifact: Any) -> None:
    props = artifact.custom_properties
    if type_name == "ModelBlessing":
        summary.blessed = bool(props["blessed"].int_value)
    elif type_name == "InfraBlessing":
        summary.infra_blessed = bool(props["blessed"].int_value)
        summary.infra_reason = props["reason"].string_value if "reason" in props else ""
    elif type_name == "ModelEvaluation":
        summary.evaluation_uri = artifact.uri
    elif type_name == "Model":
        summary.model_uri = artifact.uri
    elif type_name == "ModelRun":
        summary.model_run_uri = artifact.uri
    elif type_name == "Examples" and "ExampleGen" in node:
        summary.examples_uri = artifact.uri
        summary.span = _span(artifact)
        if "split_counts" in props:
            counts = json_format.MessageToDict(props["split_counts"].struct_value)
            summary.split_counts = {
                split: {key: int(value) for key, value in values.items()}
                for split, values in counts.items()
            }
        if "eval_global_mean_rmse" in props:
            summary.rating_baseline = props["eval_global_mean_rmse"].double_value
    elif type_name == "ExampleAnomalies" and node == F.REQUEST_SKEW_GEN:
        summary.request_skew_uri = artifact.uri
        if F.SKEWED_FEATURES in props:
            summary.skewed_features = json.loads(props[F.SKEWED_FEATURES].string_value)
    elif type_name == "ExampleStatistics" and node != F.REQUEST_SKEW_GEN:
        summary.statistics_uri = artifact.uri
    elif type_name == "ExampleAnomalies":
        summary.anomalies_uri = artifact.uri
    elif type_name == "PushedModel" and "pushed" in props and props["pushed"].int_value:
        summary.pushed_to = props["pushed_destination"].string_value
        summary.pushed_version = props["pushed_version"].string_value or None


def _span(artifact: Any) -> int | None:
    """An Examples artifact's TFX ``span`` property (a custom one on older artifacts)."""
    for props in (artifact.properties, artifact.custom_properties):
        if "span" in props:
            return int(props["span"].int_value)
    return None


def read_evaluation(uri: str) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Overall metrics per head, and a line per threshold that failed."""
    import tensorflow_model_analysis as tfma  # Deferred: slow to import.

    result = tfma.load_eval_result(uri)
    metrics: dict[str, dict[str, float]] = {}
    for slice_key, by_output in result.slicing_metrics:
        if slice_key != ():
            continue
        for head, by_subkey in by_output.items():
            values = by_subkey.get("", {})
            metrics[head] = {
                name: _number(values[name])
                for name in HEADLINE_METRICS.get(head, ())
                if name in values
            }
    failed = []
    validation = tfma.load_validation_result(uri)
    for per_slice in validation.metric_validations_per_slice:
        where = _slice_name(per_slice.slice_key)
        for failure in per_slice.failures:
            key = failure.metric_key
            kind = "change vs baseline" if key.is_diff else "value"
            bound = failure.metric_threshold
            failed.append(
                f"{key.output_name}/{key.name} {kind} on {where}: "
                f"{_value(failure.metric_value):.4f} (threshold: "
                f"{_describe_threshold(bound)})"
            )
    return metrics, failed


def _slice_name(slice_key: Any) -> str:
    parts = [
        f"{s.column}={s.bytes_value.decode() or s.int64_value or s.float_value}"
        for s in slice_key.single_slice_keys
    ]
    return ", ".join(parts) or "overall"


def _value(metric_value: Any) -> float:
    return (
        metric_value.double_value.value if metric_value.HasField("double_value") else float("nan")
    )


def describe_bound(bound: Any) -> str:
    """A TFMA GenericValueThreshold in words: '>= a', '<= b', 'between a and b', or '= n'
    for [n - 0.5, n + 0.5] (how the Evaluator holds an example count)."""
    if bound.HasField("lower_bound") and bound.HasField("upper_bound"):
        low, high = bound.lower_bound.value, bound.upper_bound.value
        if high - low == 1 and (low + 0.5).is_integer():
            return f"= {low + 0.5:.0f}"
        return f"between {low:g} and {high:g}"
    if bound.HasField("lower_bound"):
        return f">= {bound.lower_bound.value:g}"
    return f"<= {bound.upper_bound.value:g}"


def describe_change(change: Any) -> str:
    """A TFMA GenericChangeThreshold in words."""
    return f"change {change.absolute.value:+g} at most"


def _describe_threshold(threshold: Any) -> str:
    if threshold.HasField("value_threshold"):
        return describe_bound(threshold.value_threshold)
    return describe_change(threshold.change_threshold)


def _number(value: dict) -> float:
    for key in ("doubleValue", "double_value"):
        if key in value:
            return float(value[key])
    return float("nan")
