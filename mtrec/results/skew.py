"""Training-serving skew: statistics of logged requests against the training statistics of
the model that served them.

- Requests: ``PredictionLog`` TFRecords (the request logger's ``*.tfrecord`` files). Predict
  requests carry serialized tf.Examples in the ``examples`` input (``serving_default``) or
  one tensor per raw feature (``predict_raw``); Classify, Regress and MultiInference requests
  carry tf.Examples (a list, or a list with a context merged into each). A request with some
  of the features only (``recommend`` takes the user's) adds rows with those features.
- Statistics: TFDV's in-memory statistics generators, fed bounded batches of decoded
  examples and merged as they go, so a log of any size streams through.
- Training side: the ExampleStatistics (one split, ``train`` by default) and the Schema of the
  model that served the requests, found through MLMD from its pushed version (PushedModel →
  Pusher → Model → Trainer; the Trainer's ``schema`` input; the Trainer's examples traced back
  to ExampleGen's, and the StatisticsGen that read those), or given as paths.
- Comparison: TFDV skew comparators on the model's input features that the schema has in its
  SERVING environment: L-infinity distance for categorical features (strings, categorical
  ints), Jensen-Shannon divergence for numeric ones. Thresholds come from the schema's
  ``skew_comparator`` where it sets one, else from the options.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mtrec import names as F
from mtrec.errors import DataError, MtrecError

log = logging.getLogger(__name__)

SERVING = "SERVING"
DEFAULT_LINF_THRESHOLD = 0.1
DEFAULT_JS_THRESHOLD = 0.1
# Profiled but given no skew comparator: a history string is nearly unique per example, so
# comparing values one by one measures only the share of empty histories, which differs
# between any two periods (later examples have longer histories) without any skew.
NOT_COMPARED = (F.HISTORY,)
DEFAULT_BATCH_SIZE = 4096
ANOMALIES_FILE = "skew_anomalies.pbtxt"
LOG_MARK = ".tfrecord"  # Request log files: *.tfrecord, *.tfrecord.gz.
# Predict inputs of serialized tf.Examples: serving_default's, and the classify and regress
# signatures' (TF Serving's name) when called through Predict.
EXAMPLE_INPUTS = ("examples", "inputs")
_DT_STRING = 7  # tensorflow.DataType.DT_STRING
COMPARATOR_NAMES = {
    "L_INFTY": "L-infinity",
    "JENSEN_SHANNON_DIVERGENCE": "Jensen-Shannon",
    "NORMALIZED_ABSOLUTE_DIFFERENCE": "normalized abs. difference",
}
# Which anomaly reason says a measurement went over its threshold.
_HIGH_REASON = {
    "L_INFTY": "COMPARATOR_L_INFTY_HIGH",
    "JENSEN_SHANNON_DIVERGENCE": "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",
    "NORMALIZED_ABSOLUTE_DIFFERENCE": "COMPARATOR_NORMALIZED_ABSOLUTE_DIFFERENCE_HIGH",
}


# ----------------------------------------------------------------------------- request logs


def find_log_files(requests_dir: str | os.PathLike) -> list[str]:
    """The request log files under ``requests_dir`` (recursively), in name order."""
    root = str(requests_dir)
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such directory of request logs")
    found = sorted(
        os.path.join(parent, name)
        for parent, _, names in os.walk(root)
        for name in names
        if LOG_MARK in name
    )
    if not found:
        raise DataError(f"{root}: no request logs (*{LOG_MARK} files) in it")
    return found


def read_prediction_logs(paths: Iterable[str]) -> Iterator[Any]:
    """Every PredictionLog in ``paths``, streamed. A file whose last record is cut short (a
    server still writing it) yields what precedes the cut."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    for path in paths:
        compression = "GZIP" if path.endswith(".gz") else ""
        records = tf.data.TFRecordDataset(path, compression_type=compression)
        try:
            for raw in records.as_numpy_iterator():
                try:
                    yield prediction_log_pb2.PredictionLog.FromString(raw)
                except ValueError as err:  # protobuf's DecodeError.
                    raise DataError(f"{path}: not a PredictionLog record: {err}") from None
        except tf.errors.DataLossError as err:
            log.warning("%s: stopped at a damaged record: %s", path, err.message.splitlines()[0])


def served_version(record: Any) -> int | None:
    """The model version that answered a logged request, if the log says."""
    spec = record.log_metadata.model_spec
    if spec.HasField("version"):
        return spec.version.value
    entry = getattr(record, record.WhichOneof("log_type") or "", None)
    response_spec = getattr(getattr(entry, "response", None), "model_spec", None)
    if response_spec is not None and response_spec.HasField("version"):
        return response_spec.version.value
    return None


def request_examples(record: Any, features: Sequence[str]) -> list[bytes]:
    """The serialized tf.Examples a logged request carried (one per row); a request of raw
    tensors becomes one Example per row holding the ``features`` it has."""
    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        inputs = record.predict_log.request.inputs
        for name in EXAMPLE_INPUTS:
            if name in inputs and inputs[name].dtype == _DT_STRING:
                return _string_values(inputs[name])
        return _raw_examples(inputs, features)
    if kind in ("classify_log", "regress_log", "multi_inference_log"):
        return _input_examples(getattr(record, kind).request.input)
    return []  # Session runs and streams carry no rows to profile.


def _string_values(tensor: Any) -> list[bytes]:
    import tensorflow as tf

    return [bytes(v) for v in tf.make_ndarray(tensor).reshape(-1)]


def _raw_examples(inputs: Any, features: Sequence[str]) -> list[bytes]:
    import numpy as np
    import tensorflow as tf

    arrays = {k: tf.make_ndarray(inputs[k]) for k in features if k in inputs}
    if not arrays:
        return []
    rows = {len(a) if a.ndim else 1 for a in arrays.values()}
    if len(rows) != 1:
        raise DataError(f"a logged request has inputs of different batch sizes: {sorted(rows)}")
    n = rows.pop()
    columns = {k: a.reshape(n, -1) for k, a in arrays.items()}
    out = []
    for i in range(n):
        example = tf.train.Example()
        for key, column in columns.items():
            values = column[i]
            feature = example.features.feature[key]
            if values.dtype.kind in "iub":
                feature.int64_list.value.extend(int(v) for v in values)
            elif values.dtype.kind == "f":
                feature.float_list.value.extend(float(v) for v in values)
            else:
                feature.bytes_list.value.extend(
                    v if isinstance(v, bytes) else str(v).encode() for v in np.ravel(values)
                )
        out.append(example.SerializeToString())
    return out


def _input_examples(request_input: Any) -> list[bytes]:
    """The serialized tf.Examples of a logged Classify/Regress/MultiInference input (the
    context merged in, as the server does); none for an empty input."""
    from mtrec.serving.inference import examples_from_input

    return examples_from_input(request_input) if request_input.WhichOneof("kind") else []


@dataclasses.dataclass
class RequestStatistics:
    """TFDV statistics of the logged requests, and what was read."""

    statistics: Any  # DatasetFeatureStatisticsList
    files: int
    requests: int
    examples: int
    versions: dict[int | None, int]  # Requests per serving version (None: not logged).


def log_versions(paths: Sequence[str]) -> dict[int | None, int]:
    """Requests per serving version in the logs."""
    return dict(Counter(served_version(r) for r in read_prediction_logs(paths)))


def request_statistics(
    paths: Sequence[str],
    schema: Any,
    version: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> RequestStatistics:
    """Statistics of the features in ``schema`` over the logged requests (those of
    ``version`` only, when given), from batches of at most ``batch_size`` examples."""
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl
    from tfx_bsl.coders import example_coder

    features = [f.name for f in schema.feature]
    decoder = example_coder.ExamplesToRecordBatchDecoder(schema.SerializeToString())
    generators = stats_impl.get_generators(tfdv.StatsOptions(), in_memory=True)
    accumulators = [g.create_accumulator() for g in generators]
    versions: Counter = Counter()
    pending: list[bytes] = []
    examples = 0

    def add(batch: list[bytes]) -> None:
        nonlocal accumulators
        try:
            record_batch = decoder.DecodeBatch(batch)
        except RuntimeError as err:  # tfx_bsl's decoder: a value of the wrong type.
            raise DataError(f"a logged request does not fit the schema: {err}") from None
        accumulators = [
            g.add_input(a, record_batch) for g, a in zip(generators, accumulators, strict=True)
        ]

    for record in read_prediction_logs(paths):
        served = served_version(record)
        versions[served] += 1
        if version is not None and served != version:
            continue
        rows = request_examples(record, features)
        examples += len(rows)
        pending.extend(rows)
        while len(pending) >= batch_size:
            add(pending[:batch_size])
            pending = pending[batch_size:]
    if pending:
        add(pending)
    if not examples:
        which = f" of model version {version}" if version is not None else ""
        raise DataError(f"no logged requests{which} carry examples or raw features")
    statistics = stats_impl.extract_statistics_output(accumulators, generators)
    return RequestStatistics(
        statistics, len(paths), sum(versions.values()), examples, dict(versions)
    )


# ----------------------------------------------------------------------------- training side


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Where the served model's training statistics and schema are."""

    statistics_uri: str
    schema_uri: str
    model_uri: str | None = None
    pushed_version: str | None = None


def _artifact(store: Any, artifact_id: int) -> Any:
    return store.get_artifacts_by_id([artifact_id])[0]


def _events(store: Any, execution_id: int, kind: int, key: str | None = None) -> list[Any]:
    return [
        e
        for e in store.get_events_by_execution_ids([execution_id])
        if e.type == kind and (key is None or (e.path.steps and e.path.steps[0].key == key))
    ]


def _producers(store: Any, artifact_id: int) -> list[int]:
    from ml_metadata.proto import metadata_store_pb2 as m

    return [
        e.execution_id
        for e in store.get_events_by_artifact_ids([artifact_id])
        if e.type in (m.Event.OUTPUT, m.Event.DECLARED_OUTPUT)
    ]


def training_data(store: Any, version: int | None) -> TrainingData:
    """The training statistics and schema of the pushed model ``version`` (the latest pushed
    model when None), through MLMD lineage. LookupError names what is missing."""
    from ml_metadata.proto import metadata_store_pb2 as m

    pushed = [
        a
        for a in store.get_artifacts_by_type("PushedModel")
        if "pushed" in a.custom_properties and a.custom_properties["pushed"].int_value
    ]
    if version is not None:
        pushed = [
            a
            for a in pushed
            if "pushed_version" in a.custom_properties
            and a.custom_properties["pushed_version"].string_value == str(version)
        ]
    if not pushed:
        which = f"model version {version}" if version is not None else "model"
        raise LookupError(f"no pushed {which} in MLMD")
    pushed_model = max(pushed, key=lambda a: (a.create_time_since_epoch, a.id))
    trainer = model = None
    for pusher in _producers(store, pushed_model.id):
        for event in _events(store, pusher, m.Event.INPUT, "model"):
            model = _artifact(store, event.artifact_id)
            for execution in _producers(store, model.id):
                if _events(store, execution, m.Event.INPUT, "examples"):
                    trainer = execution
    if trainer is None or model is None:
        raise LookupError(f"no Trainer run found for pushed model {pushed_model.uri}")
    schema_events = _events(store, trainer, m.Event.INPUT, "schema")
    if not schema_events:
        raise LookupError(f"the Trainer of {model.uri} had no schema input")
    schema = _artifact(store, schema_events[0].artifact_id)
    # The Trainer reads the raw examples; runs before 2370a3c read Transform's: trace those
    # back to the raw (ExampleGen) ones.
    examples = _artifact(store, _events(store, trainer, m.Event.INPUT, "examples")[0].artifact_id)
    for _ in range(10):
        upstream = [
            e
            for p in _producers(store, examples.id)
            for e in _events(store, p, m.Event.INPUT, "examples")
        ]
        if not upstream:
            break
        examples = _artifact(store, upstream[0].artifact_id)
    statistics = []
    for event in store.get_events_by_artifact_ids([examples.id]):
        if event.type != m.Event.INPUT:
            continue
        for out in _events(store, event.execution_id, m.Event.OUTPUT, "statistics"):
            statistics.append(_artifact(store, out.artifact_id))
    if not statistics:
        raise LookupError(f"no StatisticsGen output for the examples {examples.uri}")
    latest = max(statistics, key=lambda a: (a.create_time_since_epoch, a.id))
    return TrainingData(
        statistics_uri=latest.uri,
        schema_uri=schema.uri,
        model_uri=model.uri,
        pushed_version=pushed_model.custom_properties["pushed_version"].string_value or None,
    )


def load_schema(path: str) -> Any:
    """A schema.pbtxt, or a Schema artifact directory holding one."""
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format

    if os.path.isdir(path):
        path = os.path.join(path, "schema.pbtxt")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no schema file")
    try:
        return tfdv.load_schema_text(path)
    except text_format.ParseError as err:
        raise DataError(f"{path}: not a Schema: {err}") from None


def load_statistics(path: str, split: str = F.TRAIN) -> Any:
    """Statistics (a DatasetFeatureStatisticsList) from a FeatureStats.pb file, a split
    directory, or an ExampleStatistics artifact directory (its ``split``)."""
    import tensorflow_data_validation as tfdv

    if os.path.isdir(os.path.join(path, f"Split-{split}")):
        path = os.path.join(path, f"Split-{split}")
    if os.path.isdir(path):
        for name in ("FeatureStats.pb", "stats_tfrecord"):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
    if not os.path.isfile(path):
        raise DataError(f"{path}: no statistics (FeatureStats.pb) for split '{split}'")
    try:
        if path.endswith("stats_tfrecord"):
            return tfdv.load_statistics(path)
        return tfdv.load_stats_binary(path)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not statistics: {err}") from None


# ----------------------------------------------------------------------------- comparison


def in_environment(feature: Any, schema: Any, environment: str) -> bool:
    """Whether ``feature`` is expected in ``environment``, by TFDV's rules."""
    if feature.in_environment:
        return environment in feature.in_environment
    if not schema.default_environment:
        return True
    return environment in schema.default_environment and (
        environment not in feature.not_in_environment
    )


def compared_schema(
    schema: Any,
    features: Sequence[str] = F.MODEL_INPUT_KEYS,
    linf_threshold: float = DEFAULT_LINF_THRESHOLD,
    js_threshold: float = DEFAULT_JS_THRESHOLD,
) -> Any:
    """The schema cut down to ``features`` that are in its SERVING environment, each but
    NOT_COMPARED with a skew comparator: the schema's own where it has one, else L-infinity at
    ``linf_threshold`` for categorical features and Jensen-Shannon at ``js_threshold``
    for numeric ones."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    del out.feature[:]
    del out.sparse_feature[:]
    del out.weighted_feature[:]
    for feature in schema.feature:
        if feature.name not in features or not in_environment(feature, schema, SERVING):
            continue
        kept = out.feature.add()
        kept.CopyFrom(feature)
        comparator = kept.skew_comparator
        if feature.name in NOT_COMPARED:
            kept.ClearField("skew_comparator")
            continue
        if any(
            comparator.HasField(f)
            for f in ("infinity_norm", "jensen_shannon_divergence", "normalized_abs_difference")
        ):
            continue
        categorical = kept.type == schema_pb2.BYTES or (
            kept.HasField("int_domain") and kept.int_domain.is_categorical
        )
        if categorical:
            comparator.infinity_norm.threshold = linf_threshold
        else:
            comparator.jensen_shannon_divergence.threshold = js_threshold
    if not out.feature:
        raise DataError(
            f"the schema has none of the model's input features in its {SERVING} environment"
        )
    return out


def default_slice(statistics: Any) -> Any:
    """The unsliced dataset of a DatasetFeatureStatisticsList."""
    datasets = list(statistics.datasets)
    if not datasets:
        raise DataError("the statistics hold no dataset")
    return next((d for d in datasets if d.name in ("", "All Examples")), datasets[0])


def feature_name(feature: Any) -> str:
    """A FeatureNameStatistics' name (its path, dotted)."""
    return ".".join(feature.path.step) or feature.name


def statistics_of(statistics: Any, name: str) -> Any | None:
    """The unsliced statistics of feature ``name``, if there are any."""
    return next((f for f in default_slice(statistics).features if feature_name(f) == name), None)


def _only(statistics: Any, names: set[str]) -> Any:
    """The default slice of ``statistics`` with only the features in ``names``."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    dataset = default_slice(statistics)
    out = statistics_pb2.DatasetFeatureStatisticsList()
    kept = out.datasets.add()
    kept.CopyFrom(dataset)
    del kept.features[:]
    for feature in dataset.features:
        if feature_name(feature) in names:
            kept.features.add().CopyFrom(feature)
    return out


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One comparator's distance for one feature."""

    feature: str
    comparator: str
    value: float | None  # None: the comparator could not measure (data missing).
    threshold: float | None
    skewed: bool
    description: str = ""


@dataclasses.dataclass
class SkewResult:
    anomalies: Any  # tensorflow_metadata Anomalies: skew reasons only, and every measurement.
    measurements: list[Measurement]

    @property
    def skewed(self) -> list[Measurement]:
        return [m for m in self.measurements if m.skewed]

    @property
    def features(self) -> list[str]:
        return sorted({m.feature for m in self.measurements})


def compare(training: Any, serving: Any, schema: Any) -> SkewResult:
    """TFDV's skew comparators between the training and serving statistics, on the
    features of ``schema`` (a ``compared_schema``)."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    names = {f.name for f in schema.feature}
    environment = SERVING if SERVING in schema.default_environment else None
    anomalies = tfdv.validate_statistics(
        _only(training, names),
        schema,
        environment=environment,
        serving_statistics=_only(serving, names),
    )
    # Keep the skew reasons only (the training data's own anomalies are ExampleValidator's).
    reason_name = anomalies_pb2.AnomalyInfo.Type.Name
    for name in list(anomalies.anomaly_info):
        info = anomalies.anomaly_info[name]
        kept = [r for r in info.reason if reason_name(r.type).startswith("COMPARATOR_")]
        if not kept:
            del anomalies.anomaly_info[name]
            continue
        del info.reason[:]
        info.reason.extend(kept)
    anomalies.ClearField("dataset_anomaly_info")
    measurement_name = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name
    measurements = []
    measured: set[tuple[str, str]] = set()
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        reasons = (
            anomalies.anomaly_info[feature].reason if feature in anomalies.anomaly_info else []
        )
        for skew in info.skew_measurements:
            kind = measurement_name(skew.type)
            high = [r for r in reasons if reason_name(r.type) == _HIGH_REASON.get(kind)]
            measurements.append(
                Measurement(
                    feature,
                    COMPARATOR_NAMES.get(kind, kind),
                    skew.value,
                    skew.threshold,
                    bool(high),
                    high[0].description if high else "",
                )
            )
            measured.add((feature, _HIGH_REASON.get(kind, "")))
    # Skew TFDV reports without a measurement: a feature missing on one side.
    for feature, info in anomalies.anomaly_info.items():
        for reason in info.reason:
            if (feature, reason_name(reason.type)) not in measured:
                measurements.append(
                    Measurement(
                        feature, reason_name(reason.type), None, None, True, reason.description
                    )
                )
    measurements.sort(key=lambda m: (not m.skewed, m.feature, m.comparator))
    return SkewResult(anomalies, measurements)


def write_anomalies(anomalies: Any, path: str) -> str:
    """The anomalies proto as text."""
    from google.protobuf import text_format

    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w") as out:
        out.write(text_format.MessageToString(anomalies))
    return path


# ----------------------------------------------------------------------------- the check


@dataclasses.dataclass
class SkewCheck:
    """Everything ``mtrec skew`` found."""

    result: SkewResult
    requests: RequestStatistics
    training: TrainingData
    version: int | None
    absent: list[str] = dataclasses.field(default_factory=list)  # Not in any request.
    training_statistics: Any = None  # The training side's DatasetFeatureStatisticsList.
    schema: Any = None  # The compared schema: the features measured, with their comparators.
    split: str = F.TRAIN


def check_skew(
    requests_dir: str,
    store: Any | None = None,
    statistics: str | None = None,
    schema: str | None = None,
    version: int | None = None,
    split: str = F.TRAIN,
    linf_threshold: float = DEFAULT_LINF_THRESHOLD,
    js_threshold: float = DEFAULT_JS_THRESHOLD,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> SkewCheck:
    """Profile the request logs under ``requests_dir`` and compare them with the training
    statistics: given as paths, or (for what is not given) the served model's through MLMD
    ``store``. Requests of one model version only: ``version``, or the one in the logs."""
    for name, value in (("linf_threshold", linf_threshold), ("js_threshold", js_threshold)):
        if not 0.0 <= value <= 1.0:
            raise MtrecError(f"{name.replace('_', '-')} must be in [0, 1], got {value}")
    paths = find_log_files(requests_dir)
    if version is None:
        versions = log_versions(paths)
        known = sorted(v for v in versions if v is not None)
        if len(known) > 1:
            raise MtrecError(
                f"{requests_dir}: requests were served by model versions "
                f"{', '.join(map(str, known))}: choose one with --model-version"
            )
        version = known[0] if known else None
    training = TrainingData(statistics_uri=statistics or "", schema_uri=schema or "")
    if statistics is None or schema is None:
        if store is None:
            raise MtrecError(
                "no MLMD store to find the training statistics in: give --statistics and "
                "--schema, or the pipeline's --output-dir"
            )
        try:
            found = training_data(store, version)
        except LookupError as err:
            raise MtrecError(
                f"{err.args[0]}; give --statistics and --schema to compare with other data"
            ) from None
        training = dataclasses.replace(
            found,
            statistics_uri=statistics or found.statistics_uri,
            schema_uri=schema or found.schema_uri,
        )
    full_schema = load_schema(training.schema_uri)
    train_stats = load_statistics(training.statistics_uri, split)
    compared = compared_schema(full_schema, F.MODEL_INPUT_KEYS, linf_threshold, js_threshold)
    served = request_statistics(paths, compared, version, batch_size)
    present = present_features(served.statistics)
    absent = [f.name for f in compared.feature if f.name not in present]
    if absent:  # Requests to signatures that take some features only (recommend).
        if len(absent) == len(compared.feature):
            raise DataError("the logged requests carry none of the model's input features")
        kept = [f for f in compared.feature if f.name in present]
        del compared.feature[:]
        compared.feature.extend(kept)
    result = compare(train_stats, served.statistics, compared)
    return SkewCheck(result, served, training, version, absent, train_stats, compared, split)


def present_features(statistics: Any) -> set[str]:
    """The features that have a value in at least one example."""
    present = set()
    for feature in statistics.datasets[0].features:
        which = feature.WhichOneof("stats")
        common = getattr(feature, which).common_stats if which else None
        if common is None or common.num_non_missing > 0:
            present.add(feature_name(feature))
    return present


def format_check(check: SkewCheck, anomalies_path: str | None = None) -> str:
    """One screen: what was compared, then the skewed features (or the closest call)."""
    requests = check.requests
    which = f"model version {check.version}" if check.version is not None else "the model"
    lines = [
        f"Requests: {requests.requests:,} logged ({requests.examples:,} examples) in "
        f"{requests.files} file(s), served by {which}",
        f"Training statistics: {check.training.statistics_uri}",
        f"Schema: {check.training.schema_uri}",
    ]
    if check.absent:
        lines.append(f"Not in the requests, not compared: {', '.join(check.absent)}")
    profiled = [name for name in NOT_COMPARED if name not in check.absent]
    if profiled:
        lines.append(f"Profiled, not compared (a sequence per user): {', '.join(profiled)}")
    result = check.result
    features = result.features
    skewed = result.skewed
    if skewed:
        lines.append(f"Skew in {len({m.feature for m in skewed})} of {len(features)} features:")
        lines.extend(_table(skewed))
    else:
        lines.append(f"No skew in {len(features)} features ({', '.join(features)}).")
        measured = [m for m in result.measurements if m.value is not None and m.threshold]
        if measured:
            closest = max(measured, key=lambda m: m.value / m.threshold)
            lines.append(
                f"Closest: {closest.feature} {closest.comparator} {closest.value:.4f} "
                f"(threshold {closest.threshold:g})"
            )
    if anomalies_path:
        lines.append(f"Anomalies written to {anomalies_path}")
    return "\n".join(lines)


def _table(measurements: list[Measurement]) -> list[str]:
    rows = [("feature", "comparator", "value", "threshold")]
    for m in measurements:
        rows.append(
            (
                m.feature,
                m.comparator,
                "-" if m.value is None else f"{m.value:.4f}",
                "-" if m.threshold is None else f"{m.threshold:g}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  "
        + "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
