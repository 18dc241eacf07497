"""AnomaliesGate: stops the run before Transform when ExampleValidator found anomalies.

TFX's ExampleValidator records anomalies but does not fail; this gate turns any anomaly
into a failed execution with one readable message per feature.
"""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

from mtrec.errors import PipelineError


class DataAnomaliesError(PipelineError):
    """The examples do not match the schema; the message lists every anomaly."""


def describe_anomalies(anomalies: types.Artifact) -> list[str]:
    """One line per anomaly, as '<split>: feature '<name>': <description>'."""
    lines = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(anomalies.uri, f"Split-{split}", "SchemaDiff.pb")
        if not os.path.exists(path):
            continue
        result = anomalies_pb2.Anomalies()
        result.ParseFromString(io_utils.read_bytes_file(path))
        for feature, info in sorted(result.anomaly_info.items()):
            reasons = "; ".join(r.description or r.short_description for r in info.reason)
            lines.append(f"{split}: feature '{feature}': {reasons or info.description}")
        if result.HasField("dataset_anomaly_info"):
            lines.append(f"{split}: dataset: {result.dataset_anomaly_info.description}")
    return lines


@tfx.dsl.components.component
def AnomaliesGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
) -> None:
    """Fail with every anomaly listed, or pass silently when the data matches the schema."""
    problems = describe_anomalies(anomalies)
    if problems:
        raise DataAnomaliesError(
            "ExampleValidator found anomalies; training stopped before Transform:\n  "
            + "\n  ".join(problems)
        )
