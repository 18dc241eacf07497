"""Request logging of REST calls and across config reloads, seen as a TF Serving client sees
the server: only the tensorflow-serving-api stubs and protos, and raw HTTP. A REST call is
logged as the PredictRequest/ClassificationRequest/RegressionRequest its JSON maps to (TF
Serving's http_rest_api_handler.cc and json_tensor.cc), the same record as the equivalent
gRPC call; a reload updates the loggers as ServerCore::ReloadConfig does."""

import http.client
import json
import time
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mtrec.serving import config
from mtrec.serving.server import ModelServer, ServerOptions
from tests.support.tiny_model import expected, export_tiny_model

ROWS = [
    {"user_id": 7, "item_id": 3, "gender": "F"},
    {"user_id": 2, "item_id": 9, "gender": "M"},
]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("logged") / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    return base


def config_text(base: Path, prefix: Path | None = None, rate: float = 1.0, label: str = "") -> str:
    logging = (
        f'logging_config {{ log_collector_config {{ type: "file" filename_prefix: "{prefix}" }}'
        f" sampling_config {{ sampling_rate: {rate} }} }}"
        if prefix is not None
        else ""
    )
    labels = f'version_labels {{ key: "{label}" value: 1 }}' if label else ""
    return (
        f'model_config_list {{ config {{ name: "tiny" base_path: "{base}" '
        f'model_platform: "tensorflow" {labels} {logging} }} }}'
    )


class Served:
    """A server started from a model config file, with gRPC stubs and a REST port."""

    def __init__(self, tmp_path: Path, text: str, **options) -> None:
        self.file = tmp_path / "models.config"
        self.file.write_text(text)
        settings = {"port": 0, "rest_api_port": 0, "poll_seconds": 0, **options}
        self.server = ModelServer(
            ServerOptions(
                models=tuple(config.read_model_config_file(self.file)),
                model_config_file=str(self.file),
                **settings,
            )
        ).start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def rest(self, path: str, body: dict) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.rest_port, timeout=10)
        try:
            connection.request("POST", "/v1/models/tiny" + path, body=json.dumps(body).encode())
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def reload(self, text: str) -> None:
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(text, request.config)
        assert self.models.HandleReloadConfigRequest(request, timeout=30).status.error_code == 0

    def stop(self) -> None:
        self.channel.close()
        self.server.stop(grace=1)  # Closes the loggers: every queued record is written.


def read_logs(prefix: Path) -> list[prediction_log_pb2.PredictionLog]:
    records = []
    for path in sorted(prefix.parent.glob(prefix.name + "-*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            records.append(prediction_log_pb2.PredictionLog.FromString(raw))
    return records


def tensor(dtype: tf.DType, values: list) -> tensor_pb2.TensorProto:
    """A TensorProto with typed value fields, as TF Serving's json_tensor.cc fills one."""
    proto = tensor_pb2.TensorProto(
        dtype=dtype.as_datatype_enum,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))]
        ),
    )
    if dtype == tf.string:
        proto.string_val.extend(v.encode() for v in values)
    else:
        proto.int64_val.extend(values)
    return proto


def example(**features) -> example_pb2.Example:
    """A tf.Example as TF Serving's MakeExampleFromJsonObject builds one from JSON."""
    proto = example_pb2.Example()
    for name, value in features.items():
        feature = proto.features.feature[name]
        if isinstance(value, str):
            feature.bytes_list.CopyFrom(feature_pb2.BytesList(value=[value.encode()]))
        else:
            feature.int64_list.CopyFrom(feature_pb2.Int64List(value=[value]))
    return proto


def raw_predict_request() -> predict_pb2.PredictRequest:
    """The gRPC equivalent of the REST predict_raw calls on ROWS."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "predict_raw"
    request.inputs["user_id"].CopyFrom(tensor(tf.int64, [r["user_id"] for r in ROWS]))
    request.inputs["item_id"].CopyFrom(tensor(tf.int64, [r["item_id"] for r in ROWS]))
    request.inputs["gender"].CopyFrom(tensor(tf.string, [r["gender"] for r in ROWS]))
    return request


def test_rest_calls_are_logged_as_the_equivalent_grpc_calls(tmp_path, base):
    prefix = tmp_path / "logs" / "requests"
    served = Served(tmp_path, config_text(base, prefix))
    columns = {key: [row[key] for row in ROWS] for key in ROWS[0]}
    try:
        # REST: predict in row and columnar format, classify (plain and with a context),
        # regress on a version path. Then the same calls over gRPC.
        rest_answers = [
            served.rest(":predict", {"signature_name": "predict_raw", "instances": ROWS}),
            served.rest(":predict", {"signature_name": "predict_raw", "inputs": columns}),
            served.rest(
                ":classify",
                {"signature_name": "classify_click", "examples": [{"user_id": 7, "item_id": 3}]},
            ),
            served.rest(
                ":classify",
                {
                    "signature_name": "classify_click",
                    "context": {"item_id": 3},
                    "examples": [{"user_id": 7}, {"user_id": 2, "gender": "F"}],
                },
            ),
            served.rest(
                "/versions/1:regress",
                {"signature_name": "regress_rating", "examples": [{"user_id": 7, "item_id": 3}]},
            ),
        ]
        predict = raw_predict_request()
        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "tiny"
        classify.model_spec.signature_name = "classify_click"
        classify.input.example_list.examples.append(example(user_id=7, item_id=3))
        with_context = classification_pb2.ClassificationRequest()
        with_context.CopyFrom(classify)
        listed = with_context.input.example_list_with_context
        listed.context.CopyFrom(example(item_id=3))
        listed.examples.extend([example(user_id=7), example(user_id=2, gender="F")])
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = "tiny"
        regress.model_spec.signature_name = "regress_rating"
        regress.model_spec.version.value = 1
        regress.input.example_list.examples.append(example(user_id=7, item_id=3))
        grpc_answers = [
            served.predict.Predict(predict, timeout=10),
            served.predict.Classify(classify, timeout=10),
            served.predict.Classify(with_context, timeout=10),
            served.predict.Regress(regress, timeout=10),
        ]
    finally:
        served.stop()

    assert all(status == 200 for status, _ in rest_answers)
    assert rest_answers[0][1]["predictions"][0]["rating"] == expected(7, 3)["rating"]
    assert rest_answers[1][1]["outputs"]["rating"][1] == expected(2, 9)["rating"]
    assert rest_answers[3][1]["results"][1][1][1] == pytest.approx(expected(2, 3)["click"])
    records = read_logs(prefix)
    assert [r.WhichOneof("log_type") for r in records] == [
        *["predict_log"] * 2,
        *["classify_log"] * 2,
        "regress_log",
        "predict_log",
        *["classify_log"] * 2,
        "regress_log",
    ]
    rest, grpc_logged = records[:5], records[5:]
    assert grpc_logged[0].predict_log.response == grpc_answers[0]
    # The REST requests are the protos their JSON maps to: equal to the gRPC requests, and
    # so are the responses and the metadata (but for the timestamp).
    pairs = [
        (rest[0], grpc_logged[0]),
        (rest[1], grpc_logged[0]),
        *zip(rest[2:], grpc_logged[1:], strict=True),
    ]
    for from_rest, from_grpc in pairs:
        kind = from_rest.WhichOneof("log_type")
        assert getattr(from_rest, kind).request == getattr(from_grpc, kind).request
        assert getattr(from_rest, kind).response == getattr(from_grpc, kind).response
        from_rest.log_metadata.ClearField("timestamp_secs")
        from_grpc.log_metadata.ClearField("timestamp_secs")
        assert from_rest.log_metadata == from_grpc.log_metadata
    assert rest[0].predict_log.request == predict
    assert rest[3].classify_log.request == with_context
    assert rest[4].regress_log.request == regress
    assert rest[2].log_metadata.model_spec.version.value == 1
    assert rest[2].log_metadata.sampling_config.sampling_rate == 1.0
    assert grpc_answers[3] == grpc_logged[3].regress_log.response


def test_sampling_rate_zero_logs_no_rest_call(tmp_path, base):
    prefix = tmp_path / "logs" / "requests"
    served = Served(tmp_path, config_text(base, prefix, rate=0.0))
    try:
        for _ in range(5):
            status, _ = served.rest(
                ":predict", {"signature_name": "predict_raw", "instances": ROWS}
            )
            assert status == 200
        served.predict.Predict(raw_predict_request(), timeout=10)
    finally:
        served.stop()
    assert not list(tmp_path.glob("logs/*")) and read_logs(prefix) == []


def test_a_reload_adds_keeps_and_removes_the_loggers(tmp_path, base):
    first, second = tmp_path / "a" / "requests", tmp_path / "b" / "requests"
    served = Served(tmp_path, config_text(base))
    body = {"signature_name": "predict_raw", "instances": ROWS[:1]}
    try:
        assert served.rest(":predict", body)[0] == 200  # Not logged: no logging_config.
        served.reload(config_text(base, first))  # Adds logging: written under `first`.
        for _ in range(2):
            assert served.rest(":predict", body)[0] == 200
        served.reload(config_text(base, first, label="stable"))  # Same logging: kept.
        assert served.rest("/labels/stable:predict", body)[0] == 200
        bad = config_text(base, second).replace('type: "file"', 'type: "kafka"')
        with pytest.raises(grpc.RpcError) as error:  # Makes no logger: nothing changes.
            served.reload(bad)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "kafka" in error.value.details()
        served.reload(config_text(base, second))  # A new config: a new logger and prefix.
        assert served.rest(":predict", body)[0] == 200
        served.predict.Predict(raw_predict_request(), timeout=10)
        # The first logger was closed after writing its records: all three are there.
        assert len(read_logs(first)) == 3
        served.reload(config_text(base))  # Removes logging: nothing more is written.
        assert served.rest(":predict", body)[0] == 200
        served.predict.Predict(raw_predict_request(), timeout=10)
    finally:
        served.stop()
    # The kept config kept its logger: one collector id, one file, all three records.
    assert [p.name for p in first.parent.iterdir()] == ["requests-00000-00000.tfrecord"]
    logged = read_logs(first)
    assert len(logged) == 3
    assert logged[2].predict_log.request.model_spec.version_label == "stable"
    # The new config got a new logger (the next collector id) with the next two calls.
    assert [p.name for p in second.parent.iterdir()] == ["requests-00001-00000.tfrecord"]
    assert [r.WhichOneof("log_type") for r in read_logs(second)] == ["predict_log"] * 2


def test_a_polled_config_file_that_adds_logging_starts_logging(tmp_path, base):
    prefix = tmp_path / "logs" / "requests"
    served = Served(tmp_path, config_text(base), config_poll_seconds=0.1)
    body = {"signature_name": "predict_raw", "instances": ROWS[:1]}
    try:
        served.file.write_text(config_text(base, prefix))  # Only logging_config changes.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list(tmp_path.glob("logs/requests-*")):
            assert served.rest(":predict", body)[0] == 200
            time.sleep(0.1)
    finally:
        served.stop()
    assert len(read_logs(prefix)) >= 1


def test_a_failing_logger_never_changes_the_rest_response(tmp_path, base):
    (tmp_path / "blocker").write_text("a file where the log folder should be")
    prefix = tmp_path / "blocker" / "logs" / "requests"  # Every write fails.
    served = Served(tmp_path, config_text(base, prefix))
    calls = [
        (":predict", {"signature_name": "predict_raw", "instances": ROWS}),
        (
            ":predict",
            {
                "signature_name": "predict_raw",
                "inputs": {"user_id": [7], "item_id": [3], "gender": ["F"]},
            },
        ),
        (":classify", {"signature_name": "classify_click", "examples": [{"user_id": 7}]}),
        (":regress", {"signature_name": "regress_rating", "examples": [{"user_id": 7}]}),
    ]
    try:
        logged = [served.rest(path, body) for path, body in calls]
        served.reload(config_text(base))  # No logging: the reference answers.
        unlogged = [served.rest(path, body) for path, body in calls]
    finally:
        served.stop()
    assert all(status == 200 for status, _ in logged)
    assert logged == unlogged
    assert (tmp_path / "blocker").is_file()
