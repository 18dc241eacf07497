"""The embedded TF-Serving-compatible server: real gRPC and HTTP on loopback ports against
a tiny SavedModel exported in the test, with TF Serving's own protos and stubs."""

import asyncio
import base64
import http.client
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mtrec import names as F
from mtrec.examples import to_example, to_examples
from mtrec.serving import config
from mtrec.serving.batching import Batcher
from mtrec.serving.client import Retry, ServingClient, ServingClientError
from mtrec.serving.errors import ServingError
from mtrec.serving.loop import EventLoopThread, LoopCalls
from mtrec.serving.server import ModelServer, ServerOptions
from mtrec.serving.tensors import signature_inputs
from tests.support.tiny_model import expected, export_tiny_model

ROWS = [{"user_id": 7, "item_id": 3}, {"user_id": 2, "item_id": 9, "gender": "F"}]


def start(models: list, **options) -> ModelServer:
    settings = {"port": 0, "rest_api_port": 0, "poll_seconds": 0.2, **options}
    return ModelServer(ServerOptions(models=tuple(models), **settings)).start()


def start_tiny(tmp_path: Path, **options) -> ModelServer:
    """A server of the tiny model, version 1, under ``tmp_path / "models"``."""
    base = tmp_path / "models"
    base.mkdir()
    export_tiny_model(base / "1")
    return start(config.single_model("tiny", str(base)), **options)


# Every test of the shared server runs without and with batching: a batched Predict takes
# another path (the event loop), which must answer and fail exactly as the other.
@pytest.fixture(scope="module", params=["unbatched", "batched"])
def served(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("models") / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    batching = config.BatchingConfig() if request.param == "batched" else None
    server = start(
        config.single_model("tiny", str(base)), max_request_bytes=64 * 1024, batching=batching
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield {
        "server": server,
        "batched": batching is not None,
        "base": base,
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "models": model_service_pb2_grpc.ModelServiceStub(channel),
        "rest": f"http://127.0.0.1:{server.rest_port}/v1/models",
    }
    channel.close()
    server.stop(grace=1)


def predict_request(rows, name="tiny", signature="serving_default", version=None, label=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(to_examples(rows)))
    return request


def rest(url, body=None, method=None):
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(
        url, data=data, method=method or ("POST" if data is not None else "GET")
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# ----------------------------------------------------------------------------- gRPC


def test_grpc_predict_returns_every_head_for_every_row(served):
    response = served["predict"].Predict(predict_request(ROWS), timeout=10)
    assert response.model_spec.name == "tiny" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    for head in ("rating", "click", "purchase"):
        values = tf.make_ndarray(response.outputs[head])
        np.testing.assert_allclose(values, [expected(7, 3)[head], expected(2, 9)[head]], rtol=1e-6)


def test_grpc_classify_regress_and_metadata(served):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "classify_click"
    for row in ROWS:
        request.input.example_list.examples.add().ParseFromString(to_example(row))
    result = served["predict"].Classify(request, timeout=10).result.classifications
    assert [[c.label for c in r.classes] for r in result] == [["0", "1"], ["0", "1"]]
    assert result[0].classes[1].score == pytest.approx(expected(7, 3)["click"], rel=1e-6)

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "tiny"
    regress.model_spec.signature_name = "regress_rating"
    regress.input.example_list_with_context.context.ParseFromString(to_example({"item_id": 3}))
    regress.input.example_list_with_context.examples.add().ParseFromString(
        to_example({"user_id": 7})
    )
    values = [r.value for r in served["predict"].Regress(regress, timeout=10).result.regressions]
    assert values == pytest.approx([expected(7, 3)["rating"]])

    # Classify on a predict signature is refused, as by TF Serving.
    request.model_spec.signature_name = "serving_default"
    with pytest.raises(grpc.RpcError) as error:
        served["predict"].Classify(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensorflow/serving/classify" in error.value.details()

    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "tiny"
    response = served["predict"].GetModelMetadata(metadata, timeout=10)
    defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(defs)
    assert {k: v.method_name for k, v in defs.signature_def.items()} == {
        "serving_default": "tensorflow/serving/predict",
        "predict_raw": "tensorflow/serving/predict",
        "regress_rating": "tensorflow/serving/regress",
        "classify_click": "tensorflow/serving/classify",
    }
    assert set(defs.signature_def["predict_raw"].inputs) == {"user_id", "item_id", "gender"}


def test_grpc_model_status(served):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    statuses = served["models"].GetModelStatus(request, timeout=10).model_version_status
    assert [(s.version, s.state, s.status.error_code) for s in statuses] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)
    ]


@pytest.mark.parametrize(
    ("mutate", "code", "words"),
    [
        (lambda r: setattr(r.model_spec, "name", "nope"), grpc.StatusCode.NOT_FOUND, "'nope'"),
        (
            lambda r: r.model_spec.version.__setattr__("value", 99),
            grpc.StatusCode.NOT_FOUND,
            "version 99",
        ),
        (  # As TF Serving: an unknown label is INVALID_ARGUMENT, an unknown signature of
            # Predict FAILED_PRECONDITION.
            lambda r: setattr(r.model_spec, "version_label", "canary"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: canary",
        ),
        (
            lambda r: setattr(r.model_spec, "signature_name", "nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            lambda r: r.inputs["exampels"].CopyFrom(r.inputs.pop("examples")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'exampels'",
        ),
        (
            lambda r: r.inputs["examples"].CopyFrom(tf.make_tensor_proto([1.5, 2.5])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'examples' must be DT_STRING",
        ),
        (
            lambda r: r.inputs["examples"].CopyFrom(tf.make_tensor_proto([[b"a"], [b"b"]])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'examples' must have shape [-1]",
        ),
        (
            lambda r: r.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"not an example"])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Could not parse example input",
        ),
        (lambda r: r.output_filter.append("score"), grpc.StatusCode.INVALID_ARGUMENT, "'score'"),
        (
            lambda r: r.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"x" * 100_000])),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "larger than max",
        ),
    ],
)
def test_grpc_errors_name_the_problem_and_the_server_keeps_serving(served, mutate, code, words):
    request = predict_request(ROWS[:1])
    mutate(request)
    with pytest.raises(grpc.RpcError) as error:
        served["predict"].Predict(request, timeout=10)
    assert error.value.code() == code
    assert words in error.value.details()
    assert served["predict"].Predict(predict_request(ROWS), timeout=10).outputs["rating"]


# ----------------------------------------------------------------------------- REST


def test_rest_predict_in_row_and_columnar_formats(served):
    url = served["rest"] + "/tiny:predict"
    status, body = rest(
        url,
        {
            "signature_name": "predict_raw",
            "instances": [
                {"user_id": 7, "item_id": 3, "gender": "M"},
                {"user_id": 2, "item_id": 9, "gender": "F"},
            ],
        },
    )
    assert status == 200
    assert body["predictions"][0] == pytest.approx(expected(7, 3))
    assert body["predictions"][1] == pytest.approx(expected(2, 9))
    status, body = rest(
        url,
        {
            "signature_name": "predict_raw",
            "inputs": {"user_id": [7], "item_id": [3], "gender": ["M"]},
        },
    )
    assert status == 200 and body["outputs"]["rating"] == pytest.approx([expected(7, 3)["rating"]])
    b64 = [{"b64": base64.b64encode(e).decode()} for e in to_examples(ROWS)]
    status, body = rest(served["rest"] + "/tiny/versions/1:predict", {"instances": b64})
    assert status == 200 and body["predictions"][1]["click"] == pytest.approx(
        expected(2, 9)["click"]
    )


def test_rest_status_metadata_classify_and_regress(served):
    status, body = rest(served["rest"] + "/tiny")
    assert status == 200 and body == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    status, body = rest(served["rest"] + "/tiny/metadata")
    assert status == 200 and body["model_spec"]["version"] == "1"
    assert set(body["metadata"]["signature_def"]["signature_def"]) == {
        "serving_default",
        "predict_raw",
        "regress_rating",
        "classify_click",
    }
    status, body = rest(
        served["rest"] + "/tiny:regress",
        {"signature_name": "regress_rating", "examples": [{"user_id": 7, "item_id": 3}]},
    )
    assert status == 200 and body["results"] == pytest.approx([expected(7, 3)["rating"]])
    status, body = rest(
        served["rest"] + "/tiny:classify",
        {
            "signature_name": "classify_click",
            "context": {"item_id": 3},
            "examples": [{"user_id": 7}],
        },
    )
    assert status == 200 and body["results"][0][1][0] == "1"
    assert body["results"][0][1][1] == pytest.approx(expected(7, 3)["click"])


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/nope:predict", {"instances": [{"b64": ""}]}, 404, "'nope'"),
        ("/tiny/versions/5:predict", {"instances": [{"b64": ""}]}, 404, "version 5"),
        ("/tiny:predict", b"{not json", 400, "JSON Parse error"),
        (
            "/tiny:predict",
            {"signature_name": "predict_raw", "instances": [{"user_id": 1}]},
            400,
            "inputs 'gender', 'item_id' of signature 'predict_raw' are missing",
        ),
        (
            "/tiny:predict",
            {
                "signature_name": "predict_raw",
                "instances": [{"user_id": "x", "item_id": 1, "gender": "M"}],
            },
            400,
            "input 'user_id'",
        ),
        ("/tiny:predict", {"instances": [1], "inputs": [1]}, 400, "exactly one of"),
        ("/tiny:predict", {"instances": [{"b64": "x" * 100_000}]}, 413, "exceeds the limit"),
        ("/tiny:explode", {}, 400, "Malformed request"),  # TF Serving: 400, not 404.
    ],
)
def test_rest_errors_are_json_with_tf_serving_status_codes(served, path, body, status, words):
    code, answer = rest(served["rest"] + path, body)
    assert code == status and words in answer["error"]
    assert rest(served["rest"] + "/tiny")[0] == 200  # Still serving.


# ----------------------------------------------------------------------------- failures


def _tensor(dtype: int, size: int, **values) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size)]
    )
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **values)


@pytest.mark.parametrize(
    ("proto", "words"),
    [
        (_tensor(20, 1), "valid TensorProto: 20"),  # DT_RESOURCE: KeyError in tf.make_ndarray.
        (_tensor(999, 1), "to a TensorFlow DType"),  # No such dtype: TypeError.
        (_tensor(1, 2, tensor_content=b"abc"), "multiple of element size"),  # ValueError.
    ],
)
def test_grpc_tensor_protos_that_cannot_be_decoded_are_invalid_arguments(served, proto, words):
    request = predict_request(ROWS[:1])
    request.inputs["examples"].CopyFrom(proto)
    with pytest.raises(grpc.RpcError) as error:
        served["predict"].Predict(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'examples' is not a valid TensorProto" in error.value.details()
    assert words in error.value.details()
    assert served["predict"].Predict(predict_request(ROWS), timeout=10).outputs["rating"]


MODEL = ("mtrec.serving.inference.call_signature",)
ENCODING = ("mtrec.serving.server.to_proto", "mtrec.serving.server.rest_outputs")


@pytest.mark.parametrize(
    ("targets", "error", "code", "status", "words"),
    [
        (
            MODEL,
            tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"),
            grpc.StatusCode.INTERNAL,
            500,
            "ResourceExhaustedError: OOM when allocating tensor",
        ),
        (
            MODEL,
            MemoryError("Unable to allocate 4.00 TiB"),
            grpc.StatusCode.INTERNAL,
            500,
            "MemoryError: Unable to allocate",
        ),
        (
            ENCODING,
            OverflowError("value too large to encode"),
            grpc.StatusCode.INTERNAL,
            500,
            "OverflowError: value too large to encode",
        ),
        # Outside request_errors(), as a bug would be: grpcio answers UNKNOWN, the REST
        # server closes that one connection, and both keep serving.
        (MODEL, AttributeError("a bug"), grpc.StatusCode.UNKNOWN, None, "a bug"),
    ],
)
def test_a_request_that_fails_in_the_model_or_encoding_gets_an_error_and_serving_goes_on(
    served, monkeypatch, targets, error, code, status, words
):
    def fail(*args, **kwargs):
        raise error

    for target in targets:
        monkeypatch.setattr(target, fail)
    if served["batched"] and targets == MODEL and status is None:
        # A bug in a batched model call fails the whole batch: each request is answered
        # INTERNAL, and the traceback is logged once.
        code, status, words = grpc.StatusCode.INTERNAL, 500, "the batch failed; see the log"
    with pytest.raises(grpc.RpcError) as failed:
        served["predict"].Predict(predict_request(ROWS), timeout=10)
    assert failed.value.code() == code and words in failed.value.details()
    url = served["rest"] + "/tiny:predict"
    body = {"instances": [{"b64": base64.b64encode(e).decode()} for e in to_examples(ROWS)]}
    if status is None:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            rest(url, body)
    else:
        answer = rest(url, body)
        assert answer[0] == status and words in answer[1]["error"]
    monkeypatch.undo()
    assert served["predict"].Predict(predict_request(ROWS), timeout=10).outputs["rating"]
    answer = rest(url, body)
    assert answer[0] == 200 and answer[1]["predictions"][0] == pytest.approx(expected(7, 3))


# ----------------------------------------------------------------------------- client


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_client_predicts_per_head_scores_over_both_protocols(served, protocol):
    port = served["server"].grpc_port if protocol == "grpc" else served["server"].rest_port
    with ServingClient(f"127.0.0.1:{port}", "tiny", protocol=protocol) as client:
        for signature in ("serving_default", "predict_raw"):
            scores = client.predict(ROWS, signature)
            assert scores[0] == pytest.approx(expected(7, 3))
            assert scores[1] == pytest.approx(expected(2, 9))
        assert client.status() == [{"version": 1, "state": "AVAILABLE", "error": ""}]
        assert client.metadata()["signatures"]["regress_rating"]["method"] == (
            "tensorflow/serving/regress"
        )
        with pytest.raises(ServingClientError) as error:
            client.recommend({"user_id": 1})
        assert error.value.code == "FAILED_PRECONDITION"


def test_client_errors_are_typed_and_unavailable_is_retried():
    client = ServingClient(
        "127.0.0.1:1", "tiny", timeout_seconds=1, retry=Retry(attempts=2, backoff_seconds=0.01)
    )
    started = time.monotonic()
    with pytest.raises(ServingClientError) as error:
        client.status()
    assert error.value.code == "UNAVAILABLE" and time.monotonic() - started < 5


def test_concurrent_clients_all_get_their_own_answers(served):
    failures, answered = [], []

    def worker(offset: int) -> None:
        with ServingClient(f"127.0.0.1:{served['server'].grpc_port}", "tiny") as client:
            for n in range(25):
                user, item = offset * 100 + n, n % 7
                try:
                    got = client.predict([{"user_id": user, "item_id": item}])[0]
                    assert got == pytest.approx(expected(user, item))
                    answered.append(1)
                except Exception as err:
                    failures.append(repr(err))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(answered) == 200


# ----------------------------------------------------------------------------- versions


def test_hot_reload_under_load_swaps_in_new_versions_and_skips_corrupt_ones(tmp_path):
    server = start_tiny(tmp_path, rest_api_port=None)
    base = tmp_path / "models"
    stop, failures, versions = threading.Event(), [], []

    def load() -> None:
        with ServingClient(f"127.0.0.1:{server.grpc_port}", "tiny") as client:
            while not stop.is_set():
                try:
                    got = client.predict([{"user_id": 7, "item_id": 3}])[0]
                    versions.append(round(got["rating"] - expected(7, 3)["rating"]))
                except Exception as err:
                    failures.append(repr(err))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(0.5)
        export_tiny_model(base / "2", offset=10.0)  # Version 2 answers rating + 10.
        assert _wait_for(lambda: server.manager.available("tiny") == [2])
        time.sleep(0.5)
        corrupt = base / "3"
        shutil.copytree(base / "2", corrupt)
        (corrupt / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        assert _wait_for(
            lambda: any(s.version == 3 and s.error for s in server.manager.statuses("tiny"))
        )
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
        server.stop(grace=1)
    assert failures == []
    assert versions[0] == 0 and versions[-1] == 10 and set(versions) == {0, 10}
    assert server.manager.available("tiny") == [2]  # Not the corrupt version 3.
    status_3 = next(s for s in server.manager.statuses("tiny") if s.version == 3)
    assert (status_3.state == "END" and "DecodeError" in status_3.error) or "parse" in (
        status_3.error.lower()
    )


def test_a_version_whose_warmup_fails_is_not_served(tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    export_tiny_model(base / "1")
    export_tiny_model(base / "2", warmup_rows=[{"user_id": 1}])
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()  # Replace the warmup with a request TF
    log.predict_log.request.model_spec.signature_name = "serving_default"  # rejects.
    log.predict_log.request.inputs["wrong_name"].CopyFrom(tf.make_tensor_proto([b""]))
    with tf.io.TFRecordWriter(str(base / "2" / F.WARMUP_FILE)) as writer:
        writer.write(log.SerializeToString())
    server = start(config.single_model("tiny", str(base)), rest_api_port=None)
    try:
        assert server.manager.available("tiny") == [1]
        status_2 = next(s for s in server.manager.statuses("tiny") if s.version == 2)
        assert "wrong_name" in status_2.error
    finally:
        server.stop(grace=1)


def test_model_config_file_with_version_policies_and_labels(tmp_path):
    for name, versions in (("all_of_them", (1, 2, 3)), ("pinned", (1, 2, 3))):
        (tmp_path / name).mkdir()
        for version in versions:
            export_tiny_model(tmp_path / name / str(version), offset=float(version))
    config_file = tmp_path / "models.config"
    config_file.write_text("""
model_config_list {
  config { name: "all_of_them" base_path: "all_of_them" model_platform: "tensorflow"
           model_version_policy { all {} } }
  config { name: "pinned" base_path: "pinned" model_platform: "tensorflow"
           model_version_policy { specific { versions: 1 versions: 3 } }
           version_labels { key: "stable" value: 1 }
           version_labels { key: "canary" value: 3 } }
}""")
    server = start(config.read_model_config_file(config_file), rest_api_port=0)
    try:
        assert server.manager.available("all_of_them") == [1, 2, 3]
        assert server.manager.available("pinned") == [1, 3]
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for label, version in (("stable", 1), ("canary", 3)):
            response = stub.Predict(predict_request(ROWS[:1], "pinned", label=label))
            assert response.model_spec.version.value == version
            assert tf.make_ndarray(response.outputs["rating"])[0] == pytest.approx(
                expected(7, 3, offset=version)["rating"]
            )
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(predict_request(ROWS[:1], "pinned", version=2))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        channel.close()
        code, body = rest(
            f"http://127.0.0.1:{server.rest_port}/v1/models/pinned/labels/" "canary:predict",
            {"instances": [{"b64": base64.b64encode(to_example(ROWS[0])).decode()}]},
        )
        assert code == 200 and body["predictions"][0]["rating"] == pytest.approx(
            expected(7, 3, offset=3)["rating"]
        )
    finally:
        server.stop(grace=1)


def test_batching_parameters_round_trip_and_are_checked(tmp_path):
    path = config.write_batching_file(config.BatchingConfig(max_batch_size=32), tmp_path / "b")
    assert "max_batch_size { value: 32 }" in path.read_text()
    assert config.read_batching_file(path) == config.BatchingConfig(max_batch_size=32)
    with pytest.raises(config.ConfigError, match="unknown batching parameter 'max_batch'"):
        config.parse_batching_text("max_batch { value: 3 }")
    with pytest.raises(config.ConfigError, match="max_batch_size must be positive"):
        config.parse_batching_text("max_batch_size { value: 0 }")
    # Every text-format spelling TF Serving's parser takes, comments and ignored fields too.
    text = (
        "max_batch_size { value: 8 }  # rows\nbatch_timeout_micros: { value: 2000 },\n"
        'num_batch_threads: 2; thread_pool_name { value: "pool" }\nallowed_batch_sizes: 4\n'
    )
    assert config.parse_batching_text(text) == config.BatchingConfig(
        max_batch_size=8, batch_timeout_micros=2000, num_batch_threads=2
    )
    for garbage, word in (("garbage {", "garbage"), ("max_batch_size { value: 8 } x", "x")):
        with pytest.raises(config.ConfigError) as raised:
            config.parse_batching_text(garbage, "b.config")
        assert str(raised.value) == (
            f"b.config: not a BatchingParameters text proto: cannot read '{word}'"
        )


# One batch thread runs the model on the event loop itself; more run it in a pool.
@pytest.mark.parametrize("threads", [1, 2])
def test_batcher_merges_concurrent_requests_into_fewer_model_calls(threads):
    calls = []

    def run(inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.005)  # A model call that costs something.
        return {"y": inputs["x"] * 2.0}

    batcher = Batcher(
        config.BatchingConfig(
            max_batch_size=16, batch_timeout_micros=5000, num_batch_threads=threads
        )
    )
    results, errors = {}, []

    def client(k: int) -> None:
        for n in range(10):
            value = float(k * 100 + n)
            try:
                out = batcher.submit("model", run, {"x": np.array([value], np.float32)})
                results[value] = float(out["y"][0])
            except Exception as err:
                errors.append(err)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert errors == [] and len(results) == 80
    assert all(out == 2 * value for value, out in results.items())
    assert sum(calls) == 80 and len(calls) < 40 and max(calls) > 1


@pytest.mark.parametrize("threads", [1, 2])
def test_a_failed_batch_answers_its_requests_and_batching_goes_on(caplog, threads):
    def run(inputs):
        if inputs["x"][0] < 0:
            raise tf.errors.InternalError(None, None, "the model failed")
        if inputs["x"][0] == 0:
            raise AttributeError("a bug")
        return {"y": inputs["x"] * 2.0}

    batcher = Batcher(
        config.BatchingConfig(
            max_batch_size=16, batch_timeout_micros=1000, num_batch_threads=threads
        )
    )
    try:
        with pytest.raises(tf.errors.InternalError, match="the model failed"):
            batcher.submit("model", run, {"x": np.array([-1.0], np.float32)})
        with pytest.raises(ServingError) as error:  # A bug: logged, answered INTERNAL.
            batcher.submit("model", run, {"x": np.array([0.0], np.float32)})
        assert error.value.code == grpc.StatusCode.INTERNAL
        assert error.value.message == "the batch failed; see the log"
        assert "AttributeError: a bug" in caplog.text  # With its traceback.
        for value in (1.0, 2.0, 3.0):
            out = batcher.submit("model", run, {"x": np.array([value], np.float32)})
            assert out["y"].tolist() == [2 * value]
    finally:
        batcher.close()
    assert batcher.batches == 5


def test_closing_the_batcher_runs_every_queued_batch():
    """1,500 requests that cannot share a call (each its own key), queued behind a long
    timeout: closing runs them all, one model call each, on the loop."""
    batcher = Batcher(config.BatchingConfig(max_batch_size=2, batch_timeout_micros=60_000_000))
    queued = [
        asyncio.run_coroutine_threadsafe(
            batcher.run(("model", k), lambda x: {"y": x["x"] * 2.0}, {"x": np.array([k], "f4")}),
            batcher.loop,
        )
        for k in range(1500)
    ]
    time.sleep(0.5)
    assert not any(future.done() for future in queued)
    batcher.close()
    assert [float(f.result(timeout=1)["y"][0]) for f in queued] == [2.0 * k for k in range(1500)]
    assert batcher.batches == 1500


def test_a_lone_model_call_takes_the_loop_and_calls_arriving_together_share_the_pool():
    """Without batching, a model call with no other running or arriving runs on the event
    loop's own thread (no hand-off between threads); calls that arrive together run in
    the pool, side by side."""
    loop = EventLoopThread("calls-loop")
    calls = LoopCalls(loop.loop, 4, "calls")

    def where(seconds: float) -> str:
        time.sleep(seconds)  # Blocks as a model call does (without the GIL).
        return threading.current_thread().name

    async def together(n: int) -> list[str]:
        return await asyncio.gather(*(calls.call(where, 0.3) for _ in range(n)))

    try:
        alone = loop.call(calls.call(where, 0.0))
        started = time.monotonic()
        names = loop.call(together(4))
        elapsed = time.monotonic() - started
        again = loop.call(calls.call(where, 0.0))
    finally:
        calls.shutdown()
        loop.stop()
    assert (alone, again) == ("calls-loop", "calls-loop")
    assert len(set(names)) == 4 and all(name.startswith("calls_") for name in names)
    assert elapsed < 0.9  # One after the other: 1.2 s.
    assert calls.running == 0


def test_a_batched_grpc_predict_waits_for_its_batch_without_holding_a_thread(tmp_path):
    """With batching on, Predict waits on the server's event loop, not in a gRPC thread:
    with one gRPC thread, 8 concurrent requests still make one model call of 8 rows (a
    full batch, long before the 2 s timeout). A threaded server would take them one at a
    time, each waiting out the timeout alone."""
    server = start_tiny(
        tmp_path,
        rest_api_port=None,
        grpc_workers=1,
        batching=config.BatchingConfig(max_batch_size=8, batch_timeout_micros=2_000_000),
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    rows = [{"user_id": u, "item_id": 3} for u in range(8)]
    try:
        started = time.monotonic()
        calls = [stub.Predict.future(predict_request([row]), timeout=30) for row in rows]
        answers = [tf.make_ndarray(call.result().outputs["click"])[0] for call in calls]
        elapsed = time.monotonic() - started
    finally:
        channel.close()
        server.stop(grace=1)
    assert answers == pytest.approx([expected(u, 3)["click"] for u in range(8)], rel=1e-6)
    assert (server.batcher.batches, server.batcher.batched_requests) == (1, 8)
    assert elapsed < 2.0


def _wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_grpc_port_in_use_is_a_one_line_error_and_the_first_server_keeps_serving(served):
    busy = served["server"].grpc_port
    second = ModelServer(
        ServerOptions(models=tuple(config.single_model("tiny", str(served["base"]))), port=busy)
    )
    try:
        with pytest.raises(config.ConfigError) as raised:
            second.start()
        assert str(raised.value) == (
            f"cannot bind gRPC to 127.0.0.1:{busy}: Address already in use"
        )
    finally:
        second.stop(grace=0)
    response = served["predict"].Predict(predict_request(ROWS), timeout=10)
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["click"]),
        [expected(7, 3)["click"], expected(2, 9)["click"]],
        rtol=1e-6,
    )


def test_unknown_version_folder_contents_are_ignored(tmp_path):
    """Only numbered folders are versions; one without a saved_model.pb (a push in
    progress) fails to load and is reported, as in TF Serving, while the last loadable
    version serves."""
    base = tmp_path / "models"
    (base / "7").mkdir(parents=True)  # Being copied: no saved_model.pb yet.
    (base / "notes").mkdir()
    export_tiny_model(base / "3")
    server = start(config.single_model("tiny", str(base)), rest_api_port=None, poll_seconds=0)
    try:
        assert server.manager.available("tiny") == [3]
        status_7 = next(s for s in server.manager.statuses("tiny") if s.version == 7)
        assert status_7.state == "END" and "SavedModel not found" in status_7.error
    finally:
        server.stop(grace=1)
    assert Path(base / "7").exists()


def test_stop_lets_in_flight_requests_finish(tmp_path):
    """What SIGTERM does in `mtrec serve`: in-flight requests finish, then it stops."""
    # A long batching timeout keeps the request in flight while the server stops.
    server = start_tiny(
        tmp_path,
        rest_api_port=None,
        batching=config.BatchingConfig(max_batch_size=64, batch_timeout_micros=800_000),
    )
    answers = []
    client = ServingClient(f"127.0.0.1:{server.grpc_port}", "tiny")
    client.signatures()  # Metadata first, so the predict below is the in-flight call.
    thread = threading.Thread(target=lambda: answers.append(client.predict(ROWS[:1])[0]))
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop(grace=5)
    server.stop(grace=5)  # A second stop does nothing.
    thread.join()
    client.close()
    assert answers and answers[0] == pytest.approx(expected(7, 3))
    assert time.monotonic() - started < 5
    with pytest.raises(ServingClientError) as error:  # Stopped: nothing answers now.
        ServingClient(
            f"127.0.0.1:{server.grpc_port}", "tiny", timeout_seconds=1, retry=Retry(attempts=1)
        ).status()
    assert error.value.code == "UNAVAILABLE"


def test_logging_config_writes_sampled_prediction_logs(tmp_path):
    """A model's logging_config in the model config file: every answered gRPC request
    (sampling rate 1) is written as a PredictionLog with its request and response."""
    from tensorflow_serving.apis import prediction_log_pb2

    (tmp_path / "tiny").mkdir()
    export_tiny_model(tmp_path / "tiny" / "1")
    prefix = tmp_path / "logs" / "requests"
    prefix.parent.mkdir()
    config_file = tmp_path / "models.config"
    config_file.write_text(f"""
model_config_list {{
  config {{ name: "tiny" base_path: "{tmp_path / "tiny"}" model_platform: "tensorflow"
    logging_config {{
      log_collector_config {{ type: "file" filename_prefix: "{prefix}" }}
      sampling_config {{ sampling_rate: 1.0 }} }} }}
}}""")
    server = start(
        config.read_model_config_file(config_file),
        rest_api_port=None,
        model_config_file=str(config_file),
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answers = [stub.Predict(predict_request([row]), timeout=10) for row in ROWS]
        channel.close()
    finally:
        server.stop(grace=1)  # Closes the logger: every queued record is written.
    records = []
    for path in sorted(prefix.parent.glob("requests-*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            records.append(prediction_log_pb2.PredictionLog.FromString(raw))
    assert len(records) == len(ROWS)
    for record, answer in zip(records, answers, strict=True):
        assert record.log_metadata.model_spec.name == "tiny"
        assert record.log_metadata.sampling_config.sampling_rate == 1.0
        assert record.predict_log.response == answer
        assert record.predict_log.request.inputs["examples"].string_val


def test_requests_call_each_signature_retraced_with_the_same_inputs_and_answers(served):
    """The server calls a wrapper traced at load (no per-call lookup of captured variables)
    with the signature's own inputs, passed in flat order, and gets the signature's own
    outputs: a predict_raw whose inputs went in the wrong order would swap user and item."""
    servable = served["server"].manager.resolve("tiny", None, None)
    examples = tf.constant(to_examples(ROWS))
    raw = {
        "user_id": tf.constant([7, 2], tf.int64),
        "item_id": tf.constant([3, 9], tf.int64),
        "gender": tf.constant([b"", b"F"]),
    }
    for name, restored in servable.model.signatures.items():
        function = servable.signature(name)
        assert function is not restored
        assert function.structured_input_signature == restored.structured_input_signature
        single = dict.fromkeys(signature_inputs(restored), examples)  # examples or inputs
        inputs = raw if name == "predict_raw" else single
        ours, theirs = function(**inputs), restored(**inputs)
        assert set(ours) == set(theirs) == set(restored.structured_outputs)
        for key in theirs:
            np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())
    click = servable.signature("predict_raw")(**raw)["click"].numpy()
    np.testing.assert_allclose(click, [expected(7, 3)["click"], expected(2, 9)["click"]], rtol=1e-6)


def test_a_direct_signature_reads_captured_variables_and_takes_its_own_call_otherwise(tmp_path):
    """Captured variables are read at each call (an assignment shows), and a call with other
    input names goes through the function's own call, with TensorFlow's TypeError."""
    from mtrec.serving.manager import direct_function

    module = tf.Module()
    module.scale = tf.Variable(2.0)

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int64)]
    )
    def serve(x, b):
        return {"y": x * module.scale + tf.cast(b, tf.float32)}

    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": serve})
    loaded = tf.saved_model.load(str(tmp_path))
    function = direct_function(loaded.signatures["serving_default"])
    x, b = tf.constant([1.0, 3.0]), tf.constant([10, 20], tf.int64)
    np.testing.assert_allclose(function(x=x, b=b)["y"].numpy(), [12.0, 26.0])
    loaded.scale.assign(3.0)
    np.testing.assert_allclose(function(b=b, x=x)["y"].numpy(), [13.0, 29.0])
    with pytest.raises(TypeError):
        function(x=x)


def test_query_over_tls_with_a_client_certificate(tmp_path, capsys):
    """`mtrec query` against a server with --ssl_config_file and client_verify: answered with
    --ca_cert, --client_cert and --client_key; refused in one line without the certificate."""
    from mtrec.cli.main import main
    from tests.support.tls import make_pems

    pems = make_pems()
    files = {}
    for name in ("ca_cert", "client_cert", "client_key"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(getattr(pems, name))
    ssl = config.SSLConfig(pems.server_key, pems.server_cert, pems.ca_cert, client_verify=True)
    server = start_tiny(tmp_path, rest_api_port=None, ssl=ssl)
    query = ["query", "--target", f"localhost:{server.grpc_port}", "--model_name", "tiny"]
    row = [
        "--signature_name",
        "predict_raw",
        "--row",
        '{"user_id": 7, "item_id": 3, "gender": "F"}',
    ]
    try:
        capsys.readouterr()
        assert main([*query, *row, *(f"--{k}={v}" for k, v in files.items())]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["click"] == pytest.approx(expected(7, 3)["click"], rel=1e-6)
        assert main([*query, *row, f"--ca_cert={files['ca_cert']}", "--timeout=5"]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith(
            f"mtrec: error: localhost:{server.grpc_port}: UNAVAILABLE"
        )
        assert main([*query, *row, "--timeout=5"]) == 2  # Plain text to a TLS server.
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].endswith(
            "Socket closed (a server with --ssl_config_file speaks TLS: pass --ca_cert)"
        )
        assert main([*query, *row, f"--client_cert={files['client_cert']}"]) == 2
        assert capsys.readouterr().err.strip() == (
            "mtrec: error: --client_cert and --client_key go together"
        )
        assert main([*query, *row, "--rest", f"--ca_cert={files['ca_cert']}"]) == 2
        assert capsys.readouterr().err.strip() == (
            "mtrec: error: --ca_cert, --client_cert and --client_key are for gRPC (REST is plain)"
        )
        # Bad PEM files: one line each, before any connection (gRPC would take them silently).
        (tmp_path / "junk.pem").write_text("not a certificate\n")
        (tmp_path / "empty.pem").write_text("")
        (tmp_path / "other_key.pem").write_text(make_pems().client_key)
        bad = {
            f"--ca_cert={tmp_path / 'junk.pem'}": (
                f"--ca_cert {tmp_path / 'junk.pem'}: not a PEM certificate (no start line: "
                "cadata does not contain a certificate (_ssl.c:"
            ),
            f"--ca_cert={tmp_path / 'empty.pem'}": (
                f"--ca_cert {tmp_path / 'empty.pem'}: the file is empty"
            ),
        }
        for flag, words in bad.items():
            assert main([*query, *row, flag]) == 2
            error = capsys.readouterr().err.strip().splitlines()
            assert len(error) == 1 and error[0].startswith(f"mtrec: error: {words}"), error
        mismatched = [
            f"--ca_cert={files['ca_cert']}",
            f"--client_cert={files['client_cert']}",
            f"--client_key={tmp_path / 'other_key.pem'}",
        ]
        assert main([*query, *row, *mismatched]) == 2
        assert capsys.readouterr().err.strip() == (
            f"mtrec: error: --client_key {tmp_path / 'other_key.pem'} and --client_cert "
            f"{files['client_cert']}: not valid PEM, or the key does not match the certificate "
            "(KEY_VALUES_MISMATCH)"
        )
    finally:
        server.stop(grace=1)
