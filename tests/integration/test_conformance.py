"""`mtrec serve` behaves as TF Serving does, seen the way a TF Serving client sees it: only
the tensorflow-serving-api stubs and protos, and raw HTTP (http.client, sockets). Each test
is one row of the contract; the codes and messages are TF Serving's own (its source:
predict_util.cc, classifier.cc, server_core.cc, http_rest_api_util.cc, http_server.cc,
multi_inference.cc, server.cc, main.cc)."""

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mtrec.examples import to_example
from mtrec.serving import config
from mtrec.serving.server import ModelServer, ServerOptions
from tests.support.tiny_model import expected, export_tiny_model

REPO = Path(__file__).resolve().parents[2]
CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


def start(base: Path, **options) -> ModelServer:
    settings = {"port": 0, "rest_api_port": 0, "poll_seconds": 0.1, **options}
    models = config.single_model("tiny", str(base))
    return ModelServer(ServerOptions(models=tuple(models), **settings)).start()


# The contract holds with batching on too (a batched Predict runs on the event loop).
@pytest.fixture(scope="module", params=["unbatched", "batched"])
def served(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("conformance") / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    (base / "2").mkdir()  # An empty numbered folder: a version that cannot load.
    server = start(
        base,
        rest_api_timeout_ms=1000,
        max_request_bytes=1024 * 1024,
        batching=config.BatchingConfig() if request.param == "batched" else None,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield {
        "base": base,
        "rest_port": server.rest_port,
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "models": model_service_pb2_grpc.ModelServiceStub(channel),
    }
    channel.close()
    server.stop(grace=1)


def raw_request(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict]:
    """Send raw bytes; the status and JSON body of the one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def http_call(port: int, method: str, path: str, body: bytes | dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        connection.request(method, path, body=data)
        response = connection.getresponse()
        raw = response.read()
        return response.status, response.getheader("Content-Type"), raw
    finally:
        connection.close()


def rest_json(port: int, method: str, path: str, body=None) -> tuple[int, dict]:
    status, _, raw = http_call(port, method, path, body)
    return status, json.loads(raw)


def raw_predict(user_id: int, item_id: int, dtype=tf.int64) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "predict_raw"
    request.inputs["user_id"].CopyFrom(tf.make_tensor_proto([user_id], dtype=dtype))
    request.inputs["item_id"].CopyFrom(tf.make_tensor_proto([item_id], dtype=tf.int64))
    request.inputs["gender"].CopyFrom(tf.make_tensor_proto([b"F"]))
    return request


def examples_input(target, rows) -> None:
    for row in rows:
        target.example_list.examples.add().ParseFromString(to_example(row))


def grpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=10)
    return error.value


# ----------------------------------------------------------------------------- rows


def test_grpc_predict_outputs_are_typed_value_fields(served):
    response = served["predict"].Predict(raw_predict(7, 3), timeout=10)
    click = response.outputs["click"]
    assert click.dtype == tf.float32.as_datatype_enum and click.tensor_content == b""
    assert [d.size for d in click.tensor_shape.dim] == [1]
    assert list(click.float_val) == pytest.approx([expected(7, 3)["click"]])
    assert list(response.outputs["rating"].float_val) == [expected(7, 3)["rating"]]

    request = predict_pb2.PredictRequest()  # Strings too: a classify signature's classes.
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "classify_click"
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto([to_example({"user_id": 7})]))
    response = served["predict"].Predict(request, timeout=10)
    classes = response.outputs["classes"]
    assert classes.dtype == tf.string.as_datatype_enum and classes.tensor_content == b""
    assert list(classes.string_val) == [b"0", b"1"]
    assert [d.size for d in classes.tensor_shape.dim] == [1, 2]
    assert len(response.outputs["scores"].float_val) == 2


def test_rest_keep_alive_batch_one_latency_is_low(served):
    connection = http.client.HTTPConnection("127.0.0.1", served["rest_port"], timeout=10)
    body = json.dumps(
        {
            "signature_name": "predict_raw",
            "instances": [{"user_id": 7, "item_id": 3, "gender": "F"}],
        }
    )
    times = []
    try:
        for _ in range(220):
            started = time.perf_counter()
            connection.request("POST", "/v1/models/tiny:predict", body=body)
            response = connection.getresponse()
            payload = response.read()
            times.append(time.perf_counter() - started)
            assert response.status == 200 and not response.will_close
    finally:
        connection.close()
    assert json.loads(payload)["predictions"][0]["rating"] == expected(7, 3)["rating"]
    assert statistics.median(times[20:]) < 0.010  # Was 48 ms: Nagle + delayed ACK.


def test_rest_listen_backlog_is_large(served):
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read a listening socket's backlog")
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{served['rest_port']}"], capture_output=True, text=True
    ).stdout.split()
    assert int(listing[2]) >= 128  # Send-Q of a listening socket: its backlog (was 5).


def test_unknown_signature_codes(served):
    request = raw_predict(7, 3)
    request.model_spec.signature_name = "nope"
    error = grpc_error(served["predict"].Predict, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "nope" not found.'

    classify = classification_pb2.ClassificationRequest()
    regress = regression_pb2.RegressionRequest()
    for call, request in (
        (served["predict"].Classify, classify),
        (served["predict"].Regress, regress),
    ):
        request.model_spec.name = "tiny"
        request.model_spec.signature_name = "nope"
        examples_input(request.input, [{"user_id": 1}])
        error = grpc_error(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "No signature was found with the name: nope"

    for verb, body in (
        ("predict", {"signature_name": "nope", "instances": [1]}),
        ("classify", {"signature_name": "nope", "examples": [{"user_id": 1}]}),
        ("regress", {"signature_name": "nope", "examples": [{"user_id": 1}]}),
    ):
        status, answer = rest_json(served["rest_port"], "POST", f"/v1/models/tiny:{verb}", body)
        assert status == 400 and "nope" in answer["error"]


def test_unknown_version_label_is_invalid_argument(served):
    request = raw_predict(7, 3)
    request.model_spec.version_label = "nope"
    error = grpc_error(served["predict"].Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: nope"
    status, answer = rest_json(
        served["rest_port"], "POST", "/v1/models/tiny/labels/nope:predict", {"instances": [1]}
    )
    assert status == 400 and answer == {"error": "Unrecognized servable version label: nope"}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/models/tiny:predict", 400),  # A verb on GET.
        ("POST", "/v1/models/tiny", 400),  # No verb on POST.
        ("POST", "/v1/models/tiny:explode", 400),
        ("POST", "/v1/models/tiny:PREDICT", 400),  # The verb itself is compared exactly.
        ("PUT", "/v1/models/tiny:predict", 400),
        ("DELETE", "/v1/models/tiny", 400),
        ("GET", "/v1/nothing/here", 400),
        ("GET", "/V1/MODELS/tiny", 200),  # Paths match case-insensitively.
        ("GET", "/v1/models/t%69ny/versions/1", 200),  # Names are URL-decoded.
        ("GET", "/v1/models/tiny/labels/n%6Fpe", 400),  # Labels too: "nope".
    ],
)
def test_rest_paths_and_verbs(served, method, path, status):
    code, content_type, raw = http_call(served["rest_port"], method, path, b"{}")
    body = json.loads(raw)
    assert code == status and content_type == "application/json"
    if status == 400 and "/labels/" not in path:
        assert body == {"error": f"Malformed request: {method} {path}"}
    elif status == 400:
        assert body == {"error": "Unrecognized servable version label: nope"}
    else:
        assert body["model_version_status"][-1]["version"] == "1"


def _answer(port: int, method: str, path: str, headers: dict | None = None):
    """(status, headers, body) of one REST call."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}


def test_rest_cors_preflight(served):
    """OPTIONS on an API path is a CORS preflight (http_server.cc): 200 with an http(s)
    Origin, 400 without; no body. Without --rest_api_enable_cors_support, no CORS headers."""
    path = "/v1/models/tiny:predict"
    status, headers, body = _answer(
        served["rest_port"], "OPTIONS", path, {"Origin": "https://app.example"}
    )
    assert (status, body) == (200, b"")
    assert not set(CORS) & set(headers)
    status, _, body = _answer(served["rest_port"], "OPTIONS", path)
    assert (status, body) == (400, b"")


def test_rest_enable_cors_support_adds_tf_servings_headers(tmp_path):
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    server = start(base, rest_api_enable_cors_support=True)
    port = server.rest_port
    try:
        for method, path, expected_status in (
            ("GET", "/v1/models/tiny", 200),
            ("GET", "/v1/models/nope", 404),  # Errors carry them too.
            ("OPTIONS", "/v1/models/tiny:predict", 200),
        ):
            status, headers, _ = _answer(port, method, path, {"Origin": "http://localhost:3000"})
            assert status == expected_status
            assert {k: headers.get(k) for k in CORS} == CORS
        status, headers, _ = _answer(port, "GET", "/not/the/api")
        assert status == 404 and not set(CORS) & set(headers)  # Only API paths.
    finally:
        server.stop(grace=1)


@pytest.mark.parametrize(
    ("headers", "payload", "error"),
    [
        ("Content-Length: abc\r\n", b"{}", "Malformed request: invalid Content-Length: abc"),
        ("Content-Length: -5\r\n", b"{}", "Malformed request: invalid Content-Length: -5"),
        (
            "Content-Length: {n}\r\n",
            b"[" * 100_000 + b"]" * 100_000,
            "JSON Parse error: the document is nested too deeply",
        ),
    ],
)
def test_rest_bad_bodies_are_400(served, headers, payload, error):
    request = (
        "POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n"
        + headers.format(n=len(payload))
        + "\r\n"
    ).encode() + payload
    assert raw_request(served["rest_port"], request) == (400, {"error": error})


def test_rest_integer_outside_int64_is_a_type_error(served):
    """Not a ragged-list error: TF Serving's json_tensor.cc rejects the one value by type."""
    body = {
        "signature_name": "predict_raw",
        "inputs": {"user_id": [7, 2**70], "item_id": [3, 4], "gender": ["F", "M"]},
    }
    code, _, raw = http_call(
        served["rest_port"], "POST", "/v1/models/tiny:predict", json.dumps(body).encode()
    )
    error = f"JSON Value: {2**70} Type: Number is not of expected type: int64"
    assert (code, json.loads(raw)) == (400, {"error": error})


def test_rest_chunked_request_body_is_read(served):
    connection = http.client.HTTPConnection("127.0.0.1", served["rest_port"], timeout=10)
    body = json.dumps(
        {
            "signature_name": "predict_raw",
            "inputs": {"user_id": [7], "item_id": [3], "gender": ["F"]},
        }
    )
    try:
        connection.request(
            "POST",
            "/v1/models/tiny:predict",
            body=iter([body[:10].encode(), body[10:].encode()]),
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert response.status == 200
        outputs = json.loads(response.read())["outputs"]
    finally:
        connection.close()
    assert outputs["click"] == pytest.approx([expected(7, 3)["click"]])


def test_rest_stalled_request_body_times_out(served):
    # The fixture's --rest_api_timeout_in_ms is 1000.
    with socket.create_connection(("127.0.0.1", served["rest_port"]), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        assert sock.recv(1024) == b""  # Closed by the server, unanswered.
        assert 0.5 < time.monotonic() - started < 5


def test_multi_inference(served):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_click", CLASSIFY), ("regress_rating", REGRESS)):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "tiny"
        task.model_spec.signature_name = signature
    examples_input(request.input, [{"user_id": 7, "item_id": 3}, {"user_id": 2, "item_id": 9}])
    response = served["predict"].MultiInference(request, timeout=10)
    classified, regressed = response.results
    assert classified.model_spec.name == "tiny" and classified.model_spec.version.value == 1
    assert classified.model_spec.signature_name == "classify_click"
    scores = [c.classes[1].score for c in classified.classification_result.classifications]
    assert scores == pytest.approx([expected(7, 3)["click"], expected(2, 9)["click"]])
    assert [c.label for c in classified.classification_result.classifications[0].classes] == [
        "0",
        "1",
    ]
    values = [r.value for r in regressed.regression_result.regressions]
    assert values == pytest.approx([expected(7, 3)["rating"], expected(2, 9)["rating"]])

    request.tasks[1].method_name = "tensorflow/serving/predict"
    error = grpc_error(served["predict"].MultiInference, request)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == "Unsupported signature method_name: tensorflow/serving/predict"
    request.tasks[1].method_name = REGRESS
    request.tasks[1].model_spec.name = "other"
    error = grpc_error(served["predict"].MultiInference, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must access the same model name" in error.details()


def test_rest_example_features_take_b64(served):
    gender = {"b64": base64.b64encode(b"F").decode()}
    status, body = rest_json(
        served["rest_port"],
        "POST",
        "/v1/models/tiny:regress",
        {
            "signature_name": "regress_rating",
            "examples": [{"user_id": 7, "item_id": 3, "gender": gender}],
        },
    )
    assert status == 200 and body == {"results": [expected(7, 3)["rating"]]}
    status, body = rest_json(
        served["rest_port"],
        "POST",
        "/v1/models/tiny:classify",
        {
            "signature_name": "classify_click",
            "context": {"gender": [gender]},
            "examples": [{"user_id": 7}],
        },
    )
    assert status == 200 and body["results"][0][1][0] == "1"


def _reload(served, labels: dict[str, int] | None = None, empty: bool = False):
    request = model_management_pb2.ReloadConfigRequest()
    if not empty:
        model = request.config.model_config_list.config.add(
            name="tiny", base_path=str(served["base"]), model_platform="tensorflow"
        )
        for label, version in (labels or {}).items():
            model.version_labels[label] = version
    return served["models"].HandleReloadConfigRequest(request, timeout=30)


def test_reload_with_an_empty_config_does_nothing(served):
    response = _reload(served, empty=True)
    assert response.status.error_code == 0
    assert served["predict"].Predict(raw_predict(7, 3), timeout=10).outputs["rating"].float_val


def test_a_label_on_an_unavailable_version_is_refused(served):
    with pytest.raises(grpc.RpcError) as error:
        _reload(served, {"canary": 9})
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.details() == (
        "Request to assign label to version 9 of model tiny, which is not currently "
        "available for inference"
    )
    _reload(served, {"stable": 1})  # A label on an available version is taken.
    request = raw_predict(7, 3)
    request.model_spec.version_label = "stable"
    assert served["predict"].Predict(request, timeout=10).model_spec.version.value == 1


def test_an_empty_version_folder_is_reported_as_a_failed_version(served):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    statuses = {
        s.version: s
        for s in served["models"].GetModelStatus(request, timeout=10).model_version_status
    }
    states = get_model_status_pb2.ModelVersionStatus
    assert statuses[2].state == states.END and statuses[2].status.error_code == 2  # UNKNOWN.
    assert "SavedModel not found" in statuses[2].status.error_message
    assert statuses[1].state == states.AVAILABLE and statuses[1].status.error_code == 0
    status, body = rest_json(served["rest_port"], "GET", "/v1/models/tiny/versions/2")
    assert status == 200 and body["model_version_status"][0]["state"] == "END"
    assert body["model_version_status"][0]["status"]["error_code"] == "UNKNOWN"


def test_a_failed_load_is_retried(tmp_path):
    base = tmp_path / "tiny"
    base.mkdir()
    version = export_tiny_model(base / "1")
    proto = version / "saved_model.pb"
    good, stat = proto.read_bytes(), proto.stat()
    proto.write_bytes(b"not yet a SavedModel")  # Same files, same times: only a retry
    os.utime(proto, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # can load it.
    server = start(
        base, rest_api_port=None, max_num_load_retries=100, load_retry_interval_micros=200_000
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    try:
        (first,) = stub.GetModelStatus(request, timeout=10).model_version_status
        assert (
            first.state == get_model_status_pb2.ModelVersionStatus.END
            and first.status.error_message
        )
        proto.write_bytes(good)
        os.utime(proto, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            (now,) = stub.GetModelStatus(request, timeout=10).model_version_status
            if now.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE:
                break
            time.sleep(0.1)
        assert now.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert predict.Predict(raw_predict(7, 3), timeout=10).outputs["rating"].float_val
    finally:
        channel.close()
        server.stop(grace=1)


def test_int32_for_an_int64_input_is_invalid_argument(served):
    error = grpc_error(served["predict"].Predict, raw_predict(7, 3, dtype=tf.int32))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in error.details() and "DT_INT64" in error.details()


# ----------------------------------------------------------------------------- flags


def _serve(*flags: str) -> subprocess.Popen:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "mtrec", "serve", *flags],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_batching_parameters_file_without_enable_batching_fails_start_up(tmp_path):
    (tmp_path / "tiny" / "1").mkdir(parents=True)
    (tmp_path / "batching.config").write_text("max_batch_size { value: 8 }\n")
    process = _serve(
        f"--model_base_path={tmp_path / 'tiny'}",
        f"--batching_parameters_file={tmp_path / 'batching.config'}",
        f"--port={_free_port()}",
        "--rest_api_port=0",
    )
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "batching_parameters_file is set without setting" in output


def test_tf_serving_flags_are_accepted_and_honoured(tmp_path):
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    rest_port = _free_port()
    process = _serve(
        f"--model_base_path={base}",
        "--model_name=tiny",
        f"--port={_free_port()}",
        f"--rest_api_port={rest_port}",
        "--model_config_file_poll_wait_seconds=60",
        "--rest_api_timeout_in_ms=500",
        "--enable_model_warmup=false",
        "--rest_api_num_threads=2",
    )
    try:
        line = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "mtrec serve: gRPC" not in line:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
        assert "mtrec serve: gRPC" in line, line
        status, body = rest_json(rest_port, "GET", "/v1/models/tiny")
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
        with socket.create_connection(("127.0.0.1", rest_port), timeout=10) as sock:
            sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nContent-Length: 9\r\n\r\n{")
            started = time.monotonic()
            assert sock.recv(1024) == b""  # --rest_api_timeout_in_ms=500 honoured.
            assert time.monotonic() - started < 5
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0


def _banner(process: subprocess.Popen) -> tuple[str, str]:
    """Read the server's output up to its start-up banner: (all of it, the banner)."""
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "mtrec serve: gRPC" in line or (not line and process.poll() is not None):
            return "".join(lines), line
    return "".join(lines), ""


def test_socket_channel_arguments_and_thread_pool_flags(tmp_path):
    """--grpc_socket_path, --grpc_channel_arguments and --tensorflow_*_parallelism, as
    tensorflow_model_server takes them (main.cc, server.cc)."""
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    sock, port = tmp_path / "serve.sock", _free_port()
    process = _serve(
        f"--model_base_path={base}",
        "--model_name=tiny",
        f"--port={port}",
        "--rest_api_port=0",
        f"--grpc_socket_path={sock}",
        "--grpc_channel_arguments=grpc.max_receive_message_length=4096,"
        "grpc.max_connection_age_ms=600000",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=3",
    )
    try:
        output, banner = _banner(process)
        assert f"and unix:{sock}" in banner, output
        assert "TensorFlow thread pools: intra-op 1, inter-op 3" in output
        for target in (f"unix:{sock}", f"127.0.0.1:{port}"):
            with grpc.insecure_channel(target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                response = stub.Predict(raw_predict(7, 3), timeout=10)
                click = response.outputs["click"].float_val
                assert click == pytest.approx([expected(7, 3)["click"]], rel=1e-6)
                large = raw_predict(7, 3)
                large.inputs["gender"].CopyFrom(tf.make_tensor_proto([b"F" * 5000]))
                error = grpc_error(stub.Predict, large)  # The argument replaced the 16 MiB.
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "larger than max" in error.details() and "vs. 4096" in error.details()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0
    assert not sock.exists()  # gRPC removes its socket file on shutdown.


@pytest.mark.parametrize(
    "flags, error",
    [
        (
            [
                "--tensorflow_session_parallelism=2",
                "--tensorflow_intra_op_parallelism=1",
                "--tensorflow_inter_op_parallelism=1",
            ],
            "mtrec: error: Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. "
            "You cannot configure all.",
        ),
        (
            ["--grpc_channel_arguments=grpc.max_connection_age_ms"],
            "mtrec: error: --grpc_channel_arguments: 'grpc.max_connection_age_ms' is not "
            "key=value (e.g. grpc.max_connection_age_ms=2000)",
        ),
        (
            ["--grpc_socket_path=/no/such/dir/serve.sock"],
            "mtrec: error: cannot bind gRPC to unix:/no/such/dir/serve.sock: "
            "no such directory /no/such/dir",
        ),
    ],
)
def test_bad_deployment_flags_fail_start_up_in_one_line(tmp_path, flags, error):
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    process = _serve(
        f"--model_base_path={base}", f"--port={_free_port()}", "--rest_api_port=0", *flags
    )
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2
    assert output.strip().splitlines()[-1] == error
    assert "Traceback" not in output
    assert "loaded from" not in output  # Refused before any model loads.


def test_version_flag_prints_the_versions():
    process = _serve("--version")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    assert output.splitlines()[-2:] == [
        "TensorFlow ModelServer: mtrec serve 0.1.0",
        f"TensorFlow Library: {tf.__version__}",
    ]


def test_saved_model_tags_choose_the_meta_graph(tmp_path):
    """A version without a MetaGraph of exactly --saved_model_tags fails to load, with
    TensorFlow's loader's error in its status; the default tags (serve) load it."""
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    server = start(base, rest_api_port=None, saved_model_tags=frozenset({"serve", "gpu"}))
    try:
        (status,) = server.manager.statuses("tiny")
        assert status.state == "END"
        assert status.error.endswith(
            "Could not find meta graph def matching supplied tags: { gpu serve }. To inspect "
            "available tag-sets in the SavedModel, please use the SavedModel CLI: "
            "`saved_model_cli`"
        )
    finally:
        server.stop(grace=1)
    server = start(base, rest_api_port=None, saved_model_tags=frozenset({"serve"}))
    try:
        assert server.manager.available("tiny") == [1]
    finally:
        server.stop(grace=1)


def _ssl_file(path: Path, **fields) -> Path:
    """A text SSLConfig, as TF Serving's --ssl_config_file reads it."""
    lines = [
        f"{key}: {json.dumps(value) if isinstance(value, str) else str(value).lower()}"
        for key, value in fields.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ssl_config_file_serves_grpc_over_tls(tmp_path):
    """--ssl_config_file: TLS on the gRPC port with the server's key and certificate; with
    client_verify, only clients holding a certificate signed by custom_ca get an answer."""
    from tests.support.tls import make_pems

    pems = make_pems()
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    trusted = grpc.ssl_channel_credentials(root_certificates=pems.ca_cert.encode())
    with_client = grpc.ssl_channel_credentials(
        pems.ca_cert.encode(), pems.client_key.encode(), pems.client_cert.encode()
    )
    for verify in (False, True):
        file = _ssl_file(
            tmp_path / "ssl.config",
            server_key=pems.server_key,
            server_cert=pems.server_cert,
            custom_ca=pems.ca_cert,
            client_verify=verify,
        )
        server = start(base, rest_api_port=None, ssl=config.read_ssl_config_file(file))
        target = f"127.0.0.1:{server.grpc_port}"
        try:
            for credentials, answers in (
                (with_client, True),
                (trusted, not verify),
                (None, False),  # Plain text to a TLS port.
            ):
                channel = (
                    grpc.secure_channel(target, credentials)
                    if credentials
                    else grpc.insecure_channel(target)
                )
                with channel:
                    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                    if answers:
                        click = stub.Predict(raw_predict(7, 3), timeout=10).outputs["click"]
                        assert click.float_val == pytest.approx([expected(7, 3)["click"]])
                    else:
                        error = grpc_error(stub.Predict, raw_predict(7, 3))
                        assert error.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            server.stop(grace=1)


def test_a_bad_ssl_config_file_fails_start_up_in_one_line(tmp_path):
    from tests.support.tls import make_pems

    pems, other = make_pems(), make_pems()
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    cases = {
        "mismatch": (
            _ssl_file(
                tmp_path / "mismatch.config",
                server_key=other.server_key,
                server_cert=pems.server_cert,
            ),
            "the key, certificate or CA is not valid PEM, or the key does not match the "
            "certificate (KEY_VALUES_MISMATCH)",
        ),
        "no key": (
            _ssl_file(tmp_path / "nokey.config", server_cert=pems.server_cert),
            "an SSLConfig needs server_key and server_cert (PEM text)",
        ),
        "verify without a CA": (
            _ssl_file(
                tmp_path / "noca.config",
                server_key=pems.server_key,
                server_cert=pems.server_cert,
                client_verify=True,
            ),
            "client_verify needs custom_ca, the CA that signs the client certificates",
        ),
        "not a proto": (
            _ssl_file(tmp_path / "typo.config", server_kee="x"),
            'not a valid SSLConfig: 1:1 : Message type "tensorflow.serving.SSLConfig" has no '
            'field named "server_kee".',
        ),
    }
    for file, error in cases.values():
        process = _serve(
            f"--model_base_path={base}",
            f"--port={_free_port()}",
            "--rest_api_port=0",
            f"--ssl_config_file={file}",
        )
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 2, output
        last = output.strip().splitlines()[-1]
        assert last.startswith("mtrec: error: ") and last.endswith(error), last
        assert "Traceback" not in output
        assert "loaded from" not in output  # Refused before any model loads.


def _canary_on_version_2(tmp_path: Path, policy: str = "") -> list:
    """The tiny model at version 1 under tmp_path / "tiny", configured with the label
    "canary" on version 2, which does not exist (yet)."""
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    (tmp_path / "models.config").write_text(
        f'model_config_list {{ config {{ name: "tiny" base_path: "{base}" '
        f'model_platform: "tensorflow" {policy}version_labels {{ key: "canary" value: 2 }} }} }}'
    )
    return config.read_model_config_file(tmp_path / "models.config")


def test_a_label_on_a_version_that_did_not_load_fails_start_up(tmp_path):
    models = _canary_on_version_2(tmp_path)
    with pytest.raises(config.ConfigError, match="label to version 2 of model tiny"):
        ModelServer(ServerOptions(models=tuple(models), port=0, poll_seconds=0)).start()


def test_labels_for_versions_still_to_load_with_the_flag(tmp_path):
    """--allow_version_labels_for_unavailable_models: the start-up that fails above succeeds;
    the label answers NOT_FOUND until its version loads, then from it. An existing label
    still cannot move to a version that is not available (server_core.cc)."""
    models = _canary_on_version_2(tmp_path, policy="model_version_policy { all {} } ")
    base = tmp_path / "tiny"
    server = ModelServer(
        ServerOptions(
            models=tuple(models),
            port=0,
            poll_seconds=0.1,
            allow_version_labels_for_unavailable_models=True,
        )
    ).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    canary = raw_predict(7, 3)
    canary.model_spec.version_label = "canary"
    try:
        assert grpc_error(predict.Predict, canary).code() == grpc.StatusCode.NOT_FOUND
        export_tiny_model(base / "2", offset=10.0)
        deadline = time.monotonic() + 30
        while 2 not in server.manager.available("tiny") and time.monotonic() < deadline:
            time.sleep(0.1)
        response = predict.Predict(canary, timeout=10)
        assert response.model_spec.version.value == 2
        assert response.outputs["rating"].float_val == pytest.approx(
            [expected(7, 3, 10.0)["rating"]]
        )
        request = model_management_pb2.ReloadConfigRequest()
        model = request.config.model_config_list.config.add(
            name="tiny", base_path=str(base), model_platform="tensorflow"
        )
        model.model_version_policy.all.SetInParent()
        model.version_labels["canary"] = 3  # Moving a label: version 3 must be available.
        model.version_labels["next"] = 4  # A new label may wait for its version.
        with pytest.raises(grpc.RpcError) as error:
            models_stub.HandleReloadConfigRequest(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.value.details() == (
            "Request to assign label to version 3 of model tiny, which is not currently "
            "available for inference"
        )
        del model.version_labels["canary"]
        models_stub.HandleReloadConfigRequest(request, timeout=30)
        nxt = raw_predict(7, 3)
        nxt.model_spec.version_label = "next"
        assert grpc_error(predict.Predict, nxt).code() == grpc.StatusCode.NOT_FOUND
    finally:
        channel.close()
        server.stop(grace=1)


def test_model_config_file_is_polled(tmp_path):
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    file = tmp_path / "models.config"
    text = f'model_config_list {{ config {{ name: "tiny" base_path: "{base}" {{labels}} }} }}'
    file.write_text(text.replace("{labels}", ""))
    server = ModelServer(
        ServerOptions(
            models=tuple(config.read_model_config_file(file)),
            port=0,
            poll_seconds=0.1,
            model_config_file=str(file),
            config_poll_seconds=0.1,
        )
    ).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = raw_predict(7, 3)
    request.model_spec.version_label = "stable"
    try:
        assert grpc_error(stub.Predict, request).code() == grpc.StatusCode.INVALID_ARGUMENT
        file.write_text(text.replace("{labels}", 'version_labels { key: "stable" value: 1 }'))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                assert stub.Predict(request, timeout=10).model_spec.version.value == 1
                break
            except grpc.RpcError:
                time.sleep(0.1)
        assert stub.Predict(request, timeout=10).outputs["rating"].float_val
    finally:
        channel.close()
        server.stop(grace=1)


def test_enable_model_warmup_false_skips_the_warmup_records(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    base = tmp_path / "tiny"
    base.mkdir()
    version = export_tiny_model(base / "1")
    log = prediction_log_pb2.PredictionLog()  # A warmup request TF Serving would refuse.
    log.predict_log.request.inputs["wrong_name"].CopyFrom(tf.make_tensor_proto([b""]))
    with tf.io.TFRecordWriter(str(version / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(log.SerializeToString())
    for warmup, available in ((True, []), (False, [1])):
        server = start(base, rest_api_port=None, poll_seconds=0, enable_model_warmup=warmup)
        try:
            assert server.manager.available("tiny") == available
        finally:
            server.stop(grace=1)


def _warmup_file(version: Path, logs: list) -> None:
    with tf.io.TFRecordWriter(str(version / "assets.extra" / "tf_serving_warmup_requests")) as w:
        for log in logs:
            w.write(log.SerializeToString())


def _predict_log(rows: list[dict]):
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.signature_name = "serving_default"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([to_example(r) for r in rows]))
    return log


def _counting_model(path: Path) -> Path:
    """A SavedModel whose serving_default counts its own calls in a variable and answers
    the count: how many times the warmup ran it shows in the first live answer."""
    module = tf.Module()
    module.calls = tf.Variable(0, dtype=tf.int64)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_default(examples):
        module.calls.assign_add(1)
        return {"calls": tf.fill(tf.shape(examples), module.calls.read_value())}

    tf.saved_model.save(module, str(path), signatures={"serving_default": serving_default})
    (path / "assets.extra").mkdir()
    return path


def test_warmup_iterations_record_types_and_limit(tmp_path):
    """--num_request_iterations_for_warmup runs each record that many times; MultiInference
    records warm up too; more than 1,000 records fail the version, as TF Serving's
    saved_model_warmup_util.cc does."""
    from tensorflow_serving.apis import prediction_log_pb2

    rows = [{"user_id": 1, "item_id": 2}]
    counting = tmp_path / "counting"
    _warmup_file(_counting_model(counting / "1"), [_predict_log(rows)] * 2)
    for iterations, calls in ((0, 2), (3, 6)):
        server = start(
            counting,
            rest_api_port=None,
            poll_seconds=0,
            num_request_iterations_for_warmup=iterations,
        )
        try:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tiny"
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto([to_example(rows[0])]))
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                answer = stub.Predict(request, timeout=10).outputs["calls"].int64_val
            assert list(answer) == [calls + 1]
        finally:
            server.stop(grace=1)

    base = tmp_path / "tiny"
    base.mkdir()
    multi = prediction_log_pb2.PredictionLog()
    request = multi.multi_inference_log.request
    examples_input(request.input, rows)
    for signature, method in (("regress_rating", REGRESS), ("classify_click", CLASSIFY)):
        request.tasks.add(method_name=method).model_spec.signature_name = signature
    _warmup_file(export_tiny_model(base / "1"), [multi])
    version = export_tiny_model(base / "2")
    _warmup_file(version, [_predict_log(rows)] * 1001)
    server = start(base, rest_api_port=None, poll_seconds=0)
    try:
        assert server.manager.available("tiny") == [1]
        (failed,) = server.manager.statuses("tiny", 2)
        assert failed.state == "END"
        assert failed.error.endswith(
            "Number of warmup records exceeds the maximum (1000) at "
            f"{version / 'assets.extra' / 'tf_serving_warmup_requests'}"
        )
    finally:
        server.stop(grace=1)


def test_stop_does_not_wait_for_idle_keep_alive_connections(tmp_path):
    base = tmp_path / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    server = start(base, poll_seconds=0)
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    connection.request("GET", "/v1/models/tiny")
    assert connection.getresponse().read()  # The connection stays open, idle.
    started = time.monotonic()
    server.stop(grace=1)
    connection.close()
    assert time.monotonic() - started < 5  # Not the 30 s REST timeout.
