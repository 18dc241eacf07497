"""--monitoring_config_file: TF Serving's Prometheus metrics on the REST port, scraped with raw
HTTP and checked sample by sample after known gRPC and REST traffic."""

import http.client
import re
import threading

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from mtrec.cli.main import build_parser, main
from mtrec.cli.serve import _server_options
from mtrec.examples import to_examples
from mtrec.serving import config
from mtrec.serving.monitoring import (
    LATENCY_BUCKETS,
    Registry,
    exponential_buckets,
    prometheus_name,
)
from mtrec.serving.server import ModelServer, ServerOptions
from tests.support.tiny_model import export_tiny_model

PATH = "/monitoring/prometheus/metrics"
ROWS = [{"user_id": 7, "item_id": 3}, {"user_id": 2, "item_id": 9}]
GRPC_PREDICTS = 3
REST_PREDICTS = 2

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """Prometheus's text format: the TYPE of each family and every sample, strictly."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "untyped") and name not in types
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        match = _SAMPLE.fullmatch(line)
        assert match, line
        name, labels_text, value = match.groups()
        labels = dict(_LABEL.findall(labels_text or ""))
        assert "".join(_LABEL.sub("", labels_text or "")) == "", line
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or (family in types and types[family] == "histogram"), line
        samples.append((name, labels, float(value)))
    return types, samples


def value(samples, name: str, **labels: str) -> float | None:
    found = [v for n, ls, v in samples if n == name and ls == labels]
    assert len(found) <= 1
    return found[0] if found else None


def scrape(port: int, path: str = PATH, method: str = "GET") -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read().decode()
    finally:
        connection.close()


def rest_post(port: int, path: str, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def predict_request(signature: str = "serving_default") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = signature
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(to_examples(ROWS)))
    return request


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "tiny"
    base.mkdir()
    export_tiny_model(base / "1")
    return base


def start(base, tmp_path, monitoring: str | None, **options) -> ModelServer:
    file = None
    if monitoring is not None:
        file = tmp_path / "monitoring.config"
        file.write_text(monitoring)
    return ModelServer(
        ServerOptions(
            models=tuple(config.single_model("tiny", str(base))),
            port=0,
            rest_api_port=0,
            poll_seconds=0,
            monitoring_config_file=str(file) if file else None,
            **options,
        )
    ).start()


@pytest.fixture(scope="module")
def traffic(base, tmp_path_factory):
    """A server with batching and monitoring on, after N gRPC and M REST predicts (two rows
    each) and one failing gRPC request; then its metrics page, scraped twice."""
    server = start(
        base,
        tmp_path_factory.mktemp("monitoring"),
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n',
        batching=config.BatchingConfig(),
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        for _ in range(GRPC_PREDICTS):
            stub.Predict(predict_request(), timeout=10)
        body = b'{"signature_name": "predict_raw", "instances": [{"user_id": 1, "item_id": 2,'
        body += b' "gender": "F"}, {"user_id": 3, "item_id": 4, "gender": "M"}]}'
        for _ in range(REST_PREDICTS):
            assert rest_post(server.rest_port, "/v1/models/tiny:predict", body) == 200
        with pytest.raises(grpc.RpcError) as failed:
            stub.Predict(predict_request("nope"), timeout=10)
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        first = scrape(server.rest_port)
        second = scrape(server.rest_port)
        yield {"server": server, "base": base, "first": first, "second": second}
    finally:
        channel.close()
        server.stop(grace=1)


def test_metrics_page_is_prometheus_text_on_the_rest_port(traffic):
    status, content_type, text = traffic["first"]
    assert status == 200
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    types, samples = parse(text)
    assert types[":tensorflow:serving:request_count"] == "counter"
    assert types[":tensorflow:serving:request_latency"] == "histogram"
    assert types[":tensorflow:cc:saved_model:load_attempt_count"] == "counter"
    assert types[":mtrec:serving:batching_session:queue_size"] == "gauge"
    # Scraping is not a request, and nothing else ran: the second page is the same.
    assert traffic["second"] == traffic["first"]


def test_request_counts_per_model_api_and_status(traffic):
    _, samples = parse(traffic["first"][2])
    count = ":tensorflow:serving:request_count"
    assert value(samples, count, model_name="tiny", status="OK") == GRPC_PREDICTS + REST_PREDICTS
    assert value(samples, count, model_name="tiny", status="FAILED_PRECONDITION") == 1
    assert len([s for s in samples if s[0] == count]) == 2
    ours = ":mtrec:serving:request_count"
    grpc_ok = dict(model_name="tiny", API="Predict", entrypoint="GRPC")
    assert value(samples, ours, **grpc_ok, signature_name="serving_default", status="OK") == 3
    assert value(samples, ours, **grpc_ok, signature_name="nope", status="FAILED_PRECONDITION") == 1
    rest_ok = dict(model_name="tiny", API="predict", entrypoint="REST")
    assert value(samples, ours, **rest_ok, signature_name="predict_raw", status="OK") == 2
    assert len([s for s in samples if s[0] == ours]) == 3


def histogram(samples, name: str, **labels: str) -> tuple[list[tuple[str, float]], float, float]:
    buckets = [
        (ls["le"], v)
        for n, ls, v in samples
        if n == name + "_bucket" and {k: x for k, x in ls.items() if k != "le"} == labels
    ]
    return (
        buckets,
        value(samples, name + "_count", **labels),
        value(samples, name + "_sum", **labels),
    )


def check_histogram(samples, name: str, count: int, limits, **labels: str) -> None:
    buckets, total, _ = histogram(samples, name, **labels)
    assert total == count
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == count
    # TF Serving's limits, written as absl::StrCat writes a double; the last one is +Inf.
    assert [le for le, _ in buckets] == [f"{x:.6g}" for x in limits[:-1]] + ["+Inf"]


def test_latency_histograms_count_the_successful_requests(traffic):
    _, samples = parse(traffic["first"][2])
    latency = ":tensorflow:serving:request_latency"
    grpc_labels = dict(model_name="tiny", API="Predict", entrypoint="GRPC")
    check_histogram(samples, latency, GRPC_PREDICTS, LATENCY_BUCKETS, **grpc_labels)
    rest_labels = dict(model_name="tiny", API="predict", entrypoint="REST")
    check_histogram(samples, latency, REST_PREDICTS, LATENCY_BUCKETS, **rest_labels)
    assert {tuple(sorted(ls.items())) for n, ls, _ in samples if n == latency + "_count"} == {
        tuple(sorted(grpc_labels.items())),
        tuple(sorted(rest_labels.items())),
    }
    buckets, _, total = histogram(samples, latency, **grpc_labels)
    assert buckets[0][0] == "10" and buckets[1][0] == "18" and buckets[2][0] == "32.4"
    assert total > 0
    runtime = ":tensorflow:serving:runtime_latency"
    labels = dict(model_name="tiny", API="Predict", runtime="TF1")
    check_histogram(samples, runtime, GRPC_PREDICTS + REST_PREDICTS, LATENCY_BUCKETS, **labels)


def test_load_attempt_is_counted_per_version_path(traffic):
    _, samples = parse(traffic["first"][2])
    path = str(traffic["base"].resolve() / "1")
    attempts = ":tensorflow:cc:saved_model:load_attempt_count"
    assert value(samples, attempts, model_path=path, status="success") == 1
    assert [s for s in samples if s[0] == attempts] == [
        (attempts, {"model_path": path, "status": "success"}, 1.0)
    ]
    assert value(samples, ":tensorflow:cc:saved_model:load_latency", model_path=path) > 0


def test_batching_metrics(traffic):
    _, samples = parse(traffic["first"][2])
    assert value(samples, ":mtrec:serving:batching_session:queue_size") == 0
    requests = GRPC_PREDICTS + REST_PREDICTS  # One at a time: each is its own batch.
    prefix = ":tensorflow:serving:batching_session:"
    sizes = exponential_buckets(1, 2, 14)
    check_histogram(samples, prefix + "input_batch_size", requests, sizes)
    check_histogram(samples, prefix + "processed_batch_size", requests, sizes)
    assert histogram(samples, prefix + "input_batch_size")[0][1] == ("2", 0)  # Rows < 2.
    assert histogram(samples, prefix + "input_batch_size")[0][2] == ("4", requests)
    assert value(samples, prefix + "wrapped_run_count") == requests
    check_histogram(
        samples,
        prefix + "queuing_latency",
        requests,
        exponential_buckets(100, 1.2, 52),
        thread_pool_name="model_server_batch_threads",
    )


def test_metrics_path_answers_any_method_and_only_itself(traffic):
    port = traffic["server"].rest_port
    assert scrape(port, method="POST")[0] == 200
    assert scrape(port, PATH + "/")[0] == 404
    assert scrape(port, "/monitoring/prometheus")[0] == 404


def test_custom_path_and_no_batching(base, tmp_path):
    server = start(base, tmp_path, 'prometheus_config: { enable: true, path: "/metrics" }')
    try:
        # A failing REST predict, and a status GET (TF Serving counts it, API "").
        assert rest_post(server.rest_port, "/v1/models/nope:predict", b'{"instances": []}') == 404
        assert scrape(server.rest_port, "/v1/models/tiny")[0] == 200
        status, _, text = scrape(server.rest_port, "/metrics")
        assert status == 200
        types, samples = parse(text)
        count = ":tensorflow:serving:request_count"
        assert value(samples, count, model_name="nope", status="NOT_FOUND") == 1
        assert value(samples, count, model_name="tiny", status="OK") == 1
        latency = ":tensorflow:serving:request_latency_count"
        assert value(samples, latency, model_name="tiny", API="", entrypoint="REST") == 1
        assert len([s for s in samples if s[0] == latency]) == 1
        assert value(samples, ":tensorflow:serving:batching_session:wrapped_run_count") is None
        assert ":mtrec:serving:batching_session:queue_size" not in types
        assert scrape(server.rest_port, PATH)[0] == 404
    finally:
        server.stop(grace=1)


@pytest.mark.parametrize(
    "monitoring", [None, "prometheus_config { enable: false }", ""], ids=["no-flag", "off", "empty"]
)
def test_without_monitoring_the_path_is_404(base, tmp_path, monitoring):
    server = start(base, tmp_path, monitoring)
    try:
        status, content_type, text = scrape(server.rest_port)
        assert status == 404 and content_type == "application/json"
        assert "Not found" in text
    finally:
        server.stop(grace=1)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("prometheus_config { enable: yes }", "not a valid MonitoringConfig"),
        ("prometheus { enable: true }", 'has no field named "prometheus"'),
        ('prometheus_config { enable: true path: "metrics" }', "must be a URL path"),
        ("prometheus_config { enable: true", "not a valid MonitoringConfig"),
    ],
)
def test_bad_monitoring_config_is_a_one_line_start_up_error(base, tmp_path, capsys, text, words):
    file = tmp_path / "monitoring.config"
    file.write_text(text)
    args = ["serve", "--model_base_path", str(base), "--port", "0", "--rest_api_port", "0"]
    assert main([*args, "--monitoring_config_file", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mtrec: error: {file}: ") and words in err
    assert err.count("\n") == 1


def test_missing_monitoring_config_file_is_an_error(base, tmp_path, capsys):
    args = ["serve", "--model_base_path", str(base), "--port", "0"]
    assert main([*args, "--monitoring_config_file", str(tmp_path / "none")]) == 2
    assert "no such monitoring config file" in capsys.readouterr().err


def test_flag_reaches_server_options(base, tmp_path):
    args = build_parser().parse_args(
        ["serve", "--model_base_path", str(base), "--monitoring_config_file", "m.config"]
    )
    assert _server_options(args).monitoring_config_file == "m.config"


# ----------------------------------------------------------------------------- registry


def test_names_are_sanitised_as_tf_serving_does():
    assert (
        prometheus_name("/tensorflow/serving/request_count") == ":tensorflow:serving:request_count"
    )
    assert prometheus_name("9lives/a-b") == "_9lives:a:b"
    registry = Registry()
    registry.counter("/x/c", "", "model name", "2nd").increment('a"b\\c', "v")
    assert registry.exposition() == (
        '# TYPE :x:c counter\n:x:c{model_name="a\\"b\\\\c",_2nd="v"} 1\n'
    )


def test_histogram_buckets_count_values_below_their_limit():
    registry = Registry()
    hist = registry.histogram("/h", "", buckets=exponential_buckets(1, 2, 3))
    for sample in (0.5, 1, 3.9, 4, 100):
        hist.observe(value=sample)
    assert registry.exposition().splitlines()[1:] == [
        ':h_bucket{le="1"} 1',
        ':h_bucket{le="2"} 2',
        ':h_bucket{le="4"} 3',
        ':h_bucket{le="+Inf"} 5',
        ":h_sum{} 109.4",
        ":h_count{} 5",
    ]


def test_recording_is_thread_safe():
    registry = Registry()
    counter = registry.counter("/c", "", "k")
    hist = registry.histogram("/h", "", "k", buckets=LATENCY_BUCKETS)

    def hammer() -> None:
        for i in range(2000):
            counter.increment("a")
            hist.observe("a", value=i)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value("a") == 16000 and hist.count("a") == 16000


def test_label_sets_are_capped(monkeypatch):
    from mtrec.serving import monitoring

    monkeypatch.setattr(monitoring, "MAX_SERIES", 2)
    registry = Registry()
    counter = registry.counter("/c", "", "model_name")
    hist = registry.histogram("/h", "", "model_name", buckets=LATENCY_BUCKETS)
    for name in ("a", "b", "c", "a"):
        counter.increment(name)
        hist.observe(name, value=1)
    assert [counter.value(n) for n in "abc"] == [2, 1, 0]
    assert [hist.count(n) for n in "abc"] == [2, 1, 0]
