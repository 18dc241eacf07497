"""RequestSkewGen: the serving requests a model answered, profiled inside the next run.

`mtrec run --request-logs DIR` adds this node: it reads the request logs the server wrote
(PredictionLog TFRecords, see serving/request_log.py), builds their TFDV statistics, and
compares them with this run's training statistics under its schema, as `mtrec skew` does
(L-infinity for categorical features, Jensen-Shannon for numeric ones). Its outputs, the
serving statistics and the skew anomalies, are artifacts in MLMD, so each run records the
drift of the traffic it was trained after. It records; it does not stop the run.
"""

import json
import logging
import os

from tfx import v1 as tfx
from tfx.types import artifact_utils

from mtrec import names as F
from mtrec.results import skew

log = logging.getLogger(__name__)

SERVING_SPLIT = "serving"


def logs_fingerprint(directory: str) -> str:
    """Names, sizes and times of the request log files: new requests re-run the node."""
    import hashlib

    digest = hashlib.sha256()
    for path in skew.find_log_files(directory):
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@tfx.dsl.components.component
def RequestSkewGen(
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    serving_statistics: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.ExampleStatistics
    ],
    skew_anomalies: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.ExampleAnomalies
    ],
    requests: tfx.dsl.components.Parameter[str],
    requests_fingerprint: tfx.dsl.components.Parameter[str],
) -> None:
    """Statistics of the requests under ``requests`` (those the newest model version in them
    answered) against the training split's, under the run's schema."""
    del requests_fingerprint  # Only the cache key: the logs' files, sizes and times.
    versions = [v for v in skew.log_versions(skew.find_log_files(requests)) if v is not None]
    check = skew.check_skew(
        requests,
        statistics=statistics.uri,
        schema=schema.uri,
        version=max(versions) if versions else None,
        split=F.TRAIN,
    )
    for artifact in (serving_statistics, skew_anomalies):
        artifact.split_names = artifact_utils.encode_split_names([SERVING_SPLIT])
        os.makedirs(os.path.join(artifact.uri, f"Split-{SERVING_SPLIT}"), exist_ok=True)
    split_dir = f"Split-{SERVING_SPLIT}"
    with open(os.path.join(serving_statistics.uri, split_dir, "FeatureStats.pb"), "wb") as out:
        out.write(check.requests.statistics.SerializeToString())
    with open(os.path.join(skew_anomalies.uri, split_dir, "SchemaDiff.pb"), "wb") as out:
        out.write(check.result.anomalies.SerializeToString())
    skewed = sorted({m.feature for m in check.result.skewed})
    skew_anomalies.set_string_custom_property(F.SKEWED_FEATURES, json.dumps(skewed))
    if skewed:
        log.warning(
            "Serving skew in %s: %s drifted from the training data", requests, ", ".join(skewed)
        )
