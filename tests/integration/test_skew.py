"""`mtrec skew`: request logs written by the request logger, profiled with TFDV and compared
with training statistics found through MLMD (a store written as TFX's launcher writes it) or
given as paths."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2
from tfx.orchestration import metadata
from tfx.orchestration.portable import execution_publish_utils
from tfx.orchestration.portable.mlmd import context_lib
from tfx.proto.orchestration import pipeline_pb2
from tfx.types import standard_artifacts

from mtrec import names as F
from mtrec.cli.main import main
from mtrec.data import build, source
from mtrec.data.config import CURATED_SCHEMA, DataConfig
from mtrec.results import report, skew
from mtrec.serving.request_log import RequestLogger
from tests.support.synthetic import make_movielens_dir

VERSION = 1712345678
PIPELINE = "mtrec"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Synthetic MovieLens examples, the train split's statistics, and an MLMD store in
    which a pushed model traces back to them and to the curated schema."""
    root = tmp_path_factory.mktemp("skew")
    directory = make_movielens_dir(root / "ml", n_users=120, n_items=120, ratings_per_user=10)
    examples, _ = build.run(source.movielens(str(directory)), DataConfig(), str(root / "data"))
    splits = {split: _read_examples(Path(examples) / f"Split-{split}") for split in F.SPLITS}
    assert len(splits[F.TRAIN]) > 3000

    # The ExampleStatistics and Schema artifacts, laid out as StatisticsGen and
    # ImportSchemaGen write them.
    stats_dir = root / "pipeline" / "StatisticsGen" / "statistics" / "3"
    (stats_dir / "Split-train").mkdir(parents=True)
    # TFDV's Beam path, as StatisticsGen runs it, on the train split.
    train_stats = tfdv.generate_statistics_from_tfrecord(
        data_location=str(Path(examples) / f"Split-{F.TRAIN}" / "*.gz"),
        output_path=str(root / "train_stats.tfrecord"),
    )
    (stats_dir / "Split-train" / "FeatureStats.pb").write_bytes(train_stats.SerializeToString())
    schema_dir = root / "pipeline" / "ImportSchemaGen" / "schema" / "1"
    schema_dir.mkdir(parents=True)
    (schema_dir / "schema.pbtxt").write_text(Path(CURATED_SCHEMA).read_text())
    output_dir = root / "out"
    output_dir.mkdir()
    _write_lineage(output_dir / "metadata.sqlite", root, examples, stats_dir, schema_dir)
    return {
        "root": root,
        "splits": splits,
        "output_dir": output_dir,
        "stats_dir": stats_dir,
        "schema_dir": schema_dir,
    }


def _read_examples(split_dir: Path) -> list[bytes]:
    files = [str(p) for p in sorted(split_dir.glob("*.gz"))]
    return list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())


def _contexts(handle: metadata.Metadata, node: str) -> list:
    specs = pipeline_pb2.NodeContexts()
    for type_name, name in (
        ("pipeline", PIPELINE),
        ("pipeline_run", "run-1"),
        ("node", f"{PIPELINE}.{node}"),
    ):
        spec = specs.contexts.add()
        spec.type.name = type_name
        spec.name.field_value.string_value = name
    return context_lib.prepare_contexts(handle, specs)


def _execute(handle, node: str, inputs: dict | None = None, outputs: dict | None = None) -> dict:
    contexts = _contexts(handle, node)
    execution = execution_publish_utils.register_execution(
        handle,
        metadata_store_pb2.ExecutionType(name=f"tfx.components.{node}"),
        contexts,
        input_artifacts=inputs,
    )
    published, _ = execution_publish_utils.publish_succeeded_execution(
        handle, execution.id, contexts, output_artifacts=outputs
    )
    return published


def _artifact(kind, uri) -> object:
    artifact = kind()
    artifact.uri = str(uri)
    return artifact


def _write_lineage(path: Path, root: Path, examples_uri: str, stats_dir, schema_dir) -> None:
    """MtrecExampleGen → StatisticsGen, ImportSchemaGen → Transform → Trainer → Pusher, with
    a pushed model of VERSION; a second StatisticsGen on other examples is a decoy."""
    config = metadata.sqlite_metadata_connection_config(str(path))
    with metadata.Metadata(config) as handle:
        examples = _execute(
            handle,
            "MtrecExampleGen",
            outputs={"examples": [_artifact(standard_artifacts.Examples, examples_uri)]},
        )["examples"][0]
        other = _execute(
            handle,
            "OtherExampleGen",
            outputs={"examples": [_artifact(standard_artifacts.Examples, root / "elsewhere")]},
        )["examples"][0]
        _execute(
            handle,
            "StatisticsGen",
            inputs={"examples": [examples]},
            outputs={"statistics": [_artifact(standard_artifacts.ExampleStatistics, stats_dir)]},
        )
        _execute(
            handle,
            "OtherStatisticsGen",
            inputs={"examples": [other]},
            outputs={
                "statistics": [_artifact(standard_artifacts.ExampleStatistics, root / "decoy")]
            },
        )
        schema = _execute(
            handle,
            "ImportSchemaGen",
            outputs={"schema": [_artifact(standard_artifacts.Schema, schema_dir)]},
        )["schema"][0]
        transformed = _execute(
            handle,
            "Transform",
            inputs={"examples": [examples], "schema": [schema]},
            outputs={"transformed_examples": [_artifact(standard_artifacts.Examples, root / "xf")]},
        )["transformed_examples"][0]
        model = _execute(
            handle,
            "Trainer",
            inputs={"examples": [transformed], "schema": [schema]},
            outputs={"model": [_artifact(standard_artifacts.Model, root / "model")]},
        )["model"][0]
        pushed = _artifact(standard_artifacts.PushedModel, root / "pushed")
        pushed.set_int_custom_property("pushed", 1)
        pushed.set_string_custom_property("pushed_version", str(VERSION))
        pushed.set_string_custom_property("pushed_destination", str(root / "serving" / "1"))
        _execute(handle, "Pusher", inputs={"model": [model]}, outputs={"pushed_model": [pushed]})


# ----------------------------------------------------------------------------- requests


def _inputs_only(serialized: bytes, shift: dict | None = None) -> tf.train.Example:
    example = tf.train.Example.FromString(serialized)
    kept = tf.train.Example()
    for key in F.MODEL_INPUT_KEYS:
        kept.features.feature[key].CopyFrom(example.features.feature[key])
    if shift:
        features = kept.features.feature
        if F.GENDER in shift:
            features[F.GENDER].bytes_list.value[:] = [shift[F.GENDER].encode()]
        if F.AGE in shift:
            features[F.AGE].int64_list.value[:] = [
                v + shift[F.AGE] for v in features[F.AGE].int64_list.value
            ]
    return kept


def _log_requests(
    directory: Path, rows: list[bytes], shift: dict | None = None, version: int = VERSION
) -> None:
    """Requests of 16 rows each, as the server would log them: serving_default requests
    with serialized tf.Examples, predict_raw requests with a tensor per feature, and
    Classify requests with an example list, in turn."""
    examples = [_inputs_only(r, shift) for r in rows]
    with RequestLogger(str(directory / "requests"), 1.0, max_file_bytes=16 << 10) as logger:
        for n, start in enumerate(range(0, len(examples), 16)):
            chunk = examples[start : start + 16]
            kind = n % 3
            spec = predict_pb2.PredictRequest().model_spec
            spec.name = "mtrec"
            spec.version.value = version
            if kind == 2:
                request = classification_pb2.ClassificationRequest()
                request.input.example_list.examples.extend(chunk)
                spec.signature_name = F.CLASSIFY[F.CLICK]
                response = classification_pb2.ClassificationResponse()
                response.model_spec.CopyFrom(spec)
                assert logger.log(request, response)
                continue
            request = predict_pb2.PredictRequest()
            if kind == 0:
                spec.signature_name = F.SERVING_DEFAULT
                serialized = [e.SerializeToString() for e in chunk]
                request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized, tf.string))
            else:
                spec.signature_name = F.PREDICT_RAW
                for key in F.MODEL_INPUT_KEYS:
                    column = [_value(e, key) for e in chunk]
                    request.inputs[key].CopyFrom(tf.make_tensor_proto(np.array(column)))
            request.model_spec.CopyFrom(spec)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(spec)
            response.outputs["click"].CopyFrom(tf.make_tensor_proto([0.5] * len(chunk)))
            assert logger.log_predict(spec, request, response)
    assert logger.counts().written == -(-len(examples) // 16)


def _value(example: tf.train.Example, key: str) -> object:
    feature = example.features.feature[key]
    if feature.HasField("int64_list"):
        return feature.int64_list.value[0]
    return feature.bytes_list.value[0]


def _skewed(anomalies_path: Path) -> set[str]:
    anomalies = text_format.Parse(anomalies_path.read_text(), anomalies_pb2.Anomalies())
    return set(anomalies.anomaly_info)


# ----------------------------------------------------------------------------- tests


def test_requests_like_the_eval_split_flag_nothing(world, tmp_path, capsys):
    requests = tmp_path / "eval_requests"
    _log_requests(requests, world["splits"][F.EVAL])
    assert len(list(requests.glob("requests-*.tfrecord"))) >= 2  # Rotated.
    code = main(["skew", "--requests", str(requests), "--output-dir", str(world["output_dir"])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"served by model version {VERSION}" in out
    assert "No skew in 9 features" in out
    assert str(world["stats_dir"]) in out and str(world["schema_dir"]) in out
    anomalies = requests / skew.ANOMALIES_FILE
    assert anomalies.is_file() and _skewed(anomalies) == set()


def test_female_and_older_requests_flag_exactly_gender_and_age(world, tmp_path, capsys):
    requests = tmp_path / "shifted"
    _log_requests(requests, world["splits"][F.EVAL], shift={F.GENDER: "F", F.AGE: 30})
    out_file = tmp_path / "report" / "anomalies.pbtxt"
    code = main(
        [
            "skew",
            "--requests",
            str(requests),
            "--output-dir",
            str(world["output_dir"]),
            "--anomalies-out",
            str(out_file),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "Skew in 2 of 9 features" in out
    table = out.split("Skew in", 1)[1].splitlines()[2:4]
    assert table[0].split()[0] == F.AGE and "Jensen-Shannon" in table[0]
    assert table[1].split()[0] == F.GENDER and "L-infinity" in table[1]
    assert _skewed(out_file) == {F.AGE, F.GENDER}
    assert not (requests / skew.ANOMALIES_FILE).exists()


def test_explicit_statistics_and_schema_need_no_mlmd(world, tmp_path, capsys):
    requests = tmp_path / "explicit"
    _log_requests(requests, world["splits"][F.EVAL][:800], shift={F.GENDER: "F"})
    args = ["skew", "--requests", str(requests), "--output-dir", str(tmp_path / "none")]
    assert main(args) == 2
    assert "give --statistics and --schema" in capsys.readouterr().err
    stats_file = world["stats_dir"] / "Split-train" / "FeatureStats.pb"
    schema_file = world["schema_dir"] / "schema.pbtxt"
    extra = ["--statistics", str(stats_file), "--schema", str(schema_file)]
    assert main([*args, *extra]) == 1
    assert _skewed(requests / skew.ANOMALIES_FILE) == {F.GENDER}
    # A looser threshold than the shift: nothing to report.
    assert main([*args, *extra, "--linf-threshold", "0.9"]) == 0
    capsys.readouterr()


def test_the_schema_threshold_wins_over_the_option(world, tmp_path, capsys):
    schema = tfdv.load_schema_text(str(world["schema_dir"] / "schema.pbtxt"))
    tfdv.get_feature(schema, F.GENDER).skew_comparator.infinity_norm.threshold = 0.95
    schema_file = tmp_path / "schema.pbtxt"
    tfdv.write_schema_text(schema, str(schema_file))
    requests = tmp_path / "requests"
    _log_requests(requests, world["splits"][F.EVAL][:800], shift={F.GENDER: "F"})
    code = main(
        [
            "skew",
            "--requests",
            str(requests),
            "--statistics",
            str(world["stats_dir"]),
            "--schema",
            str(schema_file),
            "--linf-threshold",
            "0.01",
        ]
    )
    out = capsys.readouterr().out
    # Gender keeps the schema's own threshold (0.95, above its shift); the option's 0.01
    # applies to the categorical features the schema sets none for.
    assert code == 1, out
    flagged = _skewed(requests / skew.ANOMALIES_FILE)
    assert F.GENDER not in flagged and F.OCCUPATION in flagged
    assert F.AGE not in flagged  # Numeric: Jensen-Shannon at its default 0.1.


def test_user_errors_exit_2(world, tmp_path, capsys):
    assert main(["skew", "--requests", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["skew", "--requests", str(empty)]) == 2
    assert "no request logs" in capsys.readouterr().err
    # Requests from two versions: the user must pick one.
    mixed = tmp_path / "mixed"
    rows = world["splits"][F.EVAL][:64]
    _log_requests(mixed / "a", rows)
    _log_requests(mixed / "b", rows, version=VERSION + 1)
    args = ["skew", "--requests", str(mixed), "--output-dir", str(world["output_dir"])]
    assert main(args) == 2
    assert "--model-version" in capsys.readouterr().err
    assert main([*args, "--model-version", str(VERSION + 1)]) == 2
    assert f"no pushed model version {VERSION + 1} in MLMD" in capsys.readouterr().err
    assert main([*args, "--model-version", str(VERSION)]) in (0, 1)
    assert "(64 examples)" in capsys.readouterr().out


def test_statistics_stream_in_bounded_batches(world, tmp_path):
    requests = tmp_path / "batches"
    rows = world["splits"][F.EVAL][:500]
    _log_requests(requests, rows)
    schema = skew.compared_schema(tfdv.load_schema_text(CURATED_SCHEMA))
    paths = skew.find_log_files(requests)
    small = skew.request_statistics(paths, schema, batch_size=7)
    whole = skew.request_statistics(paths, schema, batch_size=10_000)
    assert small.examples == whole.examples == len(rows)
    assert small.statistics.datasets[0].num_examples == len(rows)
    names = {f.path.step[0] for f in small.statistics.datasets[0].features}
    assert names == set(F.MODEL_INPUT_KEYS)
    assert os.path.basename(paths[0]).startswith("requests-00000-")


def test_requests_with_some_features_compare_those(world, tmp_path, capsys):
    """recommend takes the user's features only; Predict on a classify signature carries
    examples in TF Serving's ``inputs``."""
    requests = tmp_path / "partial"
    rows = [_inputs_only(r) for r in world["splits"][F.EVAL]]
    with RequestLogger(str(requests / "requests"), 1.0) as logger:
        for start in range(0, len(rows), 16):
            chunk = rows[start : start + 16]
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mtrec"
            request.model_spec.version.value = VERSION
            request.model_spec.signature_name = F.RECOMMEND
            for key in F.USER_INPUT_KEYS:
                column = np.array([_value(e, key) for e in chunk])
                request.inputs[key].CopyFrom(tf.make_tensor_proto(column))
            assert logger.log_predict(request.model_spec, request, predict_pb2.PredictResponse())
    code = main(["skew", "--requests", str(requests), "--output-dir", str(world["output_dir"])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Not in the requests, not compared: genres, item_id, title, year" in out
    assert "Profiled, not compared (a sequence per user): history" in out
    assert "No skew in 5 features (age, gender, occupation, user_id, zip_prefix)" in out

    record = prediction_log_pb2.PredictionLog()
    inputs = record.predict_log.request.inputs
    serialized = [e.SerializeToString() for e in rows[:3]]
    inputs["inputs"].CopyFrom(tf.make_tensor_proto(serialized, tf.string))
    assert skew.request_examples(record, F.MODEL_INPUT_KEYS) == serialized


# ----------------------------------------------------------------------------- the report


def _report(world, tmp_path, monkeypatch, requests: Path, *extra: str) -> str:
    """`mtrec report --requests` on an evaluation stand-in; the page."""
    from tests.unit.test_inspection import make_inspection

    monkeypatch.setattr("mtrec.cli.results._load_inspection", lambda args: make_inspection())
    out = tmp_path / "report.html"
    args = ["report", "--html", str(out), "--requests", str(requests), *extra]
    assert main([*args, "--output-dir", str(world["output_dir"])]) == 0
    return out.read_text()


def _drawn(page: str) -> dict[str, bool]:
    """Feature → marked drifted, for each plot of the Serving vs training section."""
    section = page.split(f"<h2>{report.SKEW_TITLE}</h2>", 1)[1].split("<h2>", 1)[0]
    marks = re.findall(r"<figure class='drift' data-feature='(\w+)' data-drifted='(\w+)'>", section)
    return {feature: drifted == "true" for feature, drifted in marks}


def test_report_draws_the_drifted_features_first_and_marks_them(world, tmp_path, monkeypatch):
    requests = tmp_path / "shifted"
    _log_requests(requests, world["splits"][F.EVAL], shift={F.GENDER: "F", F.AGE: 30})
    page = _report(world, tmp_path, monkeypatch, requests)
    drawn = _drawn(page)
    assert len(drawn) == 9 and list(drawn)[:2] == [F.AGE, F.GENDER]
    assert {f for f, drifted in drawn.items() if drifted} == {F.AGE, F.GENDER}
    assert "Drifted: age, gender</span> (2 of 9 features compared)" in page

    # The plotted values are the statistics' values.
    check = skew.check_skew(
        str(requests), statistics=str(world["stats_dir"]), schema=str(world["schema_dir"])
    )
    plots = {d.feature: d for d in report.serving_vs_training(check)}
    gender = plots[F.GENDER]
    assert gender.categorical and gender.drifted
    train = skew.statistics_of(check.training_statistics, F.GENDER).string_stats
    train_f = next(b.sample_count for b in train.rank_histogram.buckets if b.label == "F")
    index = gender.values.index("F")
    assert gender.serving[index] == 1.0
    assert gender.training[index] == pytest.approx(train_f / train.common_stats.tot_num_values)
    distance = gender.measurement.value
    assert distance == pytest.approx(1.0 - gender.training[index])  # L-infinity.
    assert f"alt='DRIFTED: gender: L-infinity {distance:.4f} (threshold 0.1)'" in page
    figure = report.drift_figure(gender)
    try:
        training_bars, serving_bars = figure.axes[0].containers
        assert serving_bars[index].get_height() == 1.0
        assert training_bars[index].get_height() == pytest.approx(gender.training[index])
    finally:
        report._pyplot().close(figure)

    age = plots[F.AGE]
    assert not age.categorical and age.drifted and age.measurement.comparator == "Jensen-Shannon"
    served_ages = [
        tf.train.Example.FromString(r).features.feature[F.AGE].int64_list.value[0]
        for r in world["splits"][F.EVAL]
    ]
    assert age.serving_buckets[0][0] == min(served_ages) + 30
    assert age.serving_buckets[-1][1] == max(served_ages) + 30
    assert sum(age.serving) == pytest.approx(1.0)
    figure = report.drift_figure(age)
    try:
        _, serving_bars = figure.axes[0].containers
        for bar, (low, high), share in zip(
            serving_bars, age.serving_buckets, age.serving, strict=True
        ):
            assert bar.get_x() == pytest.approx(low)
            assert bar.get_width() == pytest.approx(high - low)  # Ages +30: no one-value bucket.
            assert bar.get_height() * bar.get_width() == pytest.approx(share)
    finally:
        report._pyplot().close(figure)


def test_report_on_requests_like_the_eval_split_marks_nothing(world, tmp_path, monkeypatch, capsys):
    requests = tmp_path / "eval_requests"
    _log_requests(requests, world["splits"][F.EVAL])
    page = _report(world, tmp_path, monkeypatch, requests)
    drawn = _drawn(page)
    assert len(drawn) == 9 and not any(drawn.values())
    assert "No drift in 9 features compared." in page
    assert "<h3>Drifted</h3>" not in page
    # User errors stay one line, and no page is written.
    out = tmp_path / "none.html"
    for requests_dir, output_dir, message in (
        (tmp_path / "missing", world["output_dir"], "no such directory of request logs"),
        (requests, tmp_path / "no_mlmd", "give --statistics and --schema"),
    ):
        args = ["report", "--html", str(out), "--requests", str(requests_dir)]
        assert main([*args, "--output-dir", str(output_dir)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mtrec: error: ") and message in err
        assert len(err.strip().splitlines()) == 1
    assert not out.exists()
