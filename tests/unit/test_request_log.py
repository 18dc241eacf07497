"""The request logger: TF Serving's logging_config semantics (sampling, a file collector
with a filename prefix), size rotation, and a full queue that drops without blocking."""

from __future__ import annotations

import threading
import time

import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
)
from tensorflow_serving.config import logging_config_pb2, model_server_config_pb2

from mtrec import names as F
from mtrec.errors import ConfigError
from mtrec.examples import to_examples
from mtrec.serving import request_log


def _call(n_rows: int = 2, version: int = 7) -> tuple:
    rows = [{F.USER_ID: i + 1, F.ITEM_ID: 3, F.GENDER: "F", F.AGE: 30} for i in range(n_rows)]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mtrec"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(to_examples(rows), tf.string))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "mtrec"
    response.model_spec.version.value = version
    response.model_spec.signature_name = F.SERVING_DEFAULT
    response.outputs["click"].CopyFrom(tf.make_tensor_proto([0.5] * n_rows, tf.float32))
    return response.model_spec, request, response


def _read(paths: list[str]) -> list[prediction_log_pb2.PredictionLog]:
    records = []
    for path in paths:
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
            records.append(prediction_log_pb2.PredictionLog.FromString(raw))
    return records


def test_sampling_rate_is_respected_on_2000_requests(tmp_path):
    spec, request, response = _call()
    with request_log.RequestLogger(str(tmp_path / "log"), 0.25, seed=3, queue_size=4096) as logger:
        queued = sum(logger.log_predict(spec, request, response) for _ in range(2000))
        assert logger.flush()
    counts = logger.counts()
    # Binomial(2000, 0.25): mean 500, sd ~19; +-5 sd.
    assert 405 <= queued <= 595
    assert counts.offered == 2000
    assert counts.written == queued and counts.sampled_out == 2000 - queued
    assert counts.dropped == counts.failed == 0
    assert len(_read(logger.paths)) == queued


def test_records_carry_request_response_and_metadata(tmp_path):
    spec, request, response = _call()
    config = logging_config_pb2.LoggingConfig()
    config.log_collector_config.type = "file"
    config.log_collector_config.filename_prefix = str(tmp_path / "sub" / "requests")
    config.sampling_config.sampling_rate = 1.0
    with request_log.from_logging_config(config) as logger:
        assert logger.log_predict(spec, request, response)
        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "mtrec"
        assert logger.log(classify, classification_pb2.ClassificationResponse())
    assert [p.rsplit("/", 1)[-1] for p in logger.paths] == ["requests-00000-00000.tfrecord"]
    first, second = _read(logger.paths)
    assert first.WhichOneof("log_type") == "predict_log"
    assert first.predict_log.request == request and first.predict_log.response == response
    meta = first.log_metadata
    assert meta.model_spec.version.value == 7 and meta.model_spec.name == "mtrec"
    assert meta.sampling_config.sampling_rate == 1.0
    assert list(meta.saved_model_tags) == ["serve"] and meta.timestamp_secs > 0
    assert second.WhichOneof("log_type") == "classify_log"
    assert second.log_metadata.model_spec.name == "mtrec"


def test_rotation_by_size_writes_several_readable_files(tmp_path):
    spec, request, response = _call(n_rows=20)
    record_bytes = len(request.SerializeToString()) + len(response.SerializeToString())
    logger = request_log.RequestLogger(
        str(tmp_path / "req"), 1.0, max_file_bytes=10 * record_bytes, queue_size=4096
    )
    for _ in range(100):
        assert logger.log_predict(spec, request, response)
    logger.close()
    assert len(logger.paths) >= 5
    assert logger.counts().files == len(logger.paths)
    assert all(tf.io.gfile.stat(p).length <= 10 * record_bytes + 200 for p in logger.paths)
    records = _read(logger.paths)
    assert len(records) == 100
    assert all(r.predict_log.request == request for r in records)
    # A restarted logger with the same prefix appends new files, never overwrites.
    with request_log.RequestLogger(str(tmp_path / "req"), 1.0) as again:
        again.log_predict(spec, request, response)
    assert again.paths[0] not in logger.paths
    assert len(_read(logger.paths + again.paths)) == 101


def test_a_full_queue_drops_without_blocking_or_raising(tmp_path, monkeypatch):
    spec, request, response = _call()
    logger = request_log.RequestLogger(str(tmp_path / "slow"), 1.0, queue_size=4)
    release = threading.Event()
    real_write = logger._write

    def stuck_write(record: bytes) -> None:  # A disk that hangs.
        release.wait(30)
        real_write(record)

    monkeypatch.setattr(logger, "_write", stuck_write)
    started = time.perf_counter()
    results = [logger.log_predict(spec, request, response) for _ in range(500)]
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"500 offers took {elapsed:.2f}s"
    counts = logger.counts()
    # One record is in the stuck writer, four wait in the queue, the rest are dropped.
    assert sum(results) <= 5 and counts.dropped == 500 - sum(results) >= 495
    release.set()
    logger.close()
    assert logger.counts().written == sum(results)


def test_write_failures_are_counted_not_raised(tmp_path):
    spec, request, response = _call()
    with request_log.RequestLogger(str(tmp_path / "bad"), 1.0) as logger:
        # A response of the wrong type fails in the writer thread, not in the caller.
        assert logger.log_predict(spec, request, classification_pb2.ClassificationResponse())
        assert logger.log(model_pb2.ModelSpec(), response) is False  # Not a request type.
        assert logger.log_predict(spec, request, response)
        assert logger.flush()
    counts = logger.counts()
    assert (counts.failed, counts.written) == (2, 1)
    logger.log_predict(spec, request, response)  # After close: dropped, no error.
    assert logger.counts().dropped == 1


def test_logging_config_errors_and_server_logger(tmp_path):
    config = logging_config_pb2.LoggingConfig()
    config.log_collector_config.type = "kafka"
    config.log_collector_config.filename_prefix = "x"
    with pytest.raises(ConfigError, match="kafka"):
        request_log.from_logging_config(config)
    with pytest.raises(ConfigError, match="filename_prefix"):
        request_log.from_logging_config(logging_config_pb2.LoggingConfig())
    with pytest.raises(ConfigError, match="sampling_rate"):
        request_log.RequestLogger("x", 1.5)

    server_config = model_server_config_pb2.ModelServerConfig()
    for name in ("mtrec", "mtrec_b", "quiet"):
        model = server_config.model_config_list.config.add(name=name, base_path="/m")
        if name != "quiet":
            model.logging_config.log_collector_config.filename_prefix = str(tmp_path / "all")
            model.logging_config.sampling_config.sampling_rate = 1.0
    loggers = request_log.ServerRequestLogger.from_model_server_config(str(server_config))
    assert set(loggers.loggers) == {"mtrec", "mtrec_b"}
    assert loggers.loggers["mtrec"] is loggers.loggers["mtrec_b"]  # Same config, one logger.
    spec, request, response = _call()
    assert loggers.log(request, response)
    multi = inference_pb2.MultiInferenceRequest()
    multi.tasks.add().model_spec.name = "mtrec_b"
    assert loggers.log(multi, inference_pb2.MultiInferenceResponse())
    response.model_spec.name = "quiet"
    assert not loggers.log(request, response)
    loggers.close()
    logged = _read(loggers.loggers["mtrec"].paths)
    assert [r.WhichOneof("log_type") for r in logged] == ["predict_log", "multi_inference_log"]
    assert logged[1].log_metadata.model_spec.name == "mtrec_b"


def _logging_config(prefix: str, rate: float = 1.0) -> logging_config_pb2.LoggingConfig:
    config = logging_config_pb2.LoggingConfig()
    config.log_collector_config.type = "file"
    config.log_collector_config.filename_prefix = prefix
    config.sampling_config.sampling_rate = rate
    return config


def test_log_built_builds_only_sampled_calls_in_the_writer(tmp_path):
    spec, request, response = _call()
    threads = []

    def build() -> tuple:
        threads.append(threading.current_thread().name)
        return request, response

    with request_log.RequestLogger(str(tmp_path / "none"), 0.0) as never:
        assert not never.log_built("predict_log", build)
    assert threads == [] and never.paths == []
    with request_log.RequestLogger(str(tmp_path / "all"), 1.0) as logger:
        assert logger.log_built("predict_log", build)
        assert logger.log_built("predict_log", lambda: (request, "not a proto"))
        assert logger.flush()
    assert threads == ["request-log-0"]  # Built by the writer thread, not the caller.
    assert (logger.counts().written, logger.counts().failed) == (1, 1)
    (record,) = _read(logger.paths)
    assert record.predict_log.request == request and record.predict_log.response == response
    assert record.log_metadata.model_spec == spec  # The response's spec: what answered.
    with pytest.raises(ValueError, match="PredictionLog field"):
        logger.log_built("bogus_log", build)


def test_update_keeps_creates_and_closes_loggers(tmp_path):
    spec, request, response = _call()
    a, b = _logging_config(str(tmp_path / "a")), _logging_config(str(tmp_path / "b"))
    server = request_log.ServerRequestLogger()
    server.update({"mtrec": a, "other": a})
    first = server.loggers["mtrec"]
    assert server.loggers["other"] is first and first.collector_id == 0
    assert server.log(request, response)
    # The same config (as bytes, as ModelSpec keeps it) keeps its logger; a new one is new.
    server.update({"mtrec": a.SerializeToString(deterministic=True), "other": b})
    assert server.loggers["mtrec"] is first
    second = server.loggers["other"]
    assert second is not first and second.collector_id == 1
    assert server.log(request, response)
    for _ in range(50):  # Pending when the update below closes the first logger.
        assert server.log(request, response)
    server.update({"other": b})  # No model uses `a`: closed after its records are written.
    assert set(server.loggers) == {"other"} and server.loggers["other"] is second
    assert first.counts().written == 52 and not first._thread.is_alive()
    assert not server.log(request, response)  # "mtrec" logs nothing now.
    with pytest.raises(ConfigError, match="kafka"):  # A bad config changes nothing.
        bad = _logging_config(str(tmp_path / "c"))
        bad.log_collector_config.type = "kafka"
        server.update({"mtrec": bad, "other": b})
    assert set(server.loggers) == {"other"} and server.loggers["other"] is second
    server.close()
    assert len(_read(first.paths)) == 52 and _read(second.paths) == []


def test_updates_while_requests_are_logged_lose_no_record(tmp_path):
    """Request threads log while updates swap loggers: every call is written, whichever
    logger took it, and none is dropped by a logger closing under it."""
    _, request, response = _call(n_rows=1)
    configs = [_logging_config(str(tmp_path / name)) for name in ("a", "b", "c")]
    server = request_log.ServerRequestLogger(queue_size=10_000)
    server.update({"mtrec": configs[0]})
    accepted = [0] * 4

    def requests(index: int) -> None:
        for call in range(300):
            accepted[index] += server.log(request, response)
            if call % 20 == 0:
                time.sleep(0.002)

    threads = [threading.Thread(target=requests, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    seen = [server.loggers["mtrec"]]
    for step in range(1, 13):  # a, b, c, a...: a config that comes back gets a new logger.
        server.update({"mtrec": configs[step % 3]})
        seen.append(server.loggers["mtrec"])
        time.sleep(0.005)
    for thread in threads:
        thread.join()
    server.close()
    assert len({id(v) for v in seen}) == 13
    paths = [p for logger in seen for p in logger.paths]
    assert sum(accepted) == 1200 and len(_read(paths)) == 1200
    assert sum(v.counts().written for v in seen) == 1200
    assert all(v.counts().dropped == 0 for v in seen)


def test_model_config_keeps_each_models_logging_config(tmp_path):
    from mtrec.serving import config as serving_config

    text = f"""model_config_list {{
      config {{ name: "a" base_path: "/m/a"
        logging_config {{ log_collector_config {{ filename_prefix: "{tmp_path}/a" }}
                          sampling_config {{ sampling_rate: 0.5 }} }} }}
      config {{ name: "b" base_path: "/m/b" }} }}"""
    specs = serving_config.parse_model_config(text)
    configs = serving_config.logging_configs(specs)
    assert set(configs) == {"a"}
    parsed = logging_config_pb2.LoggingConfig.FromString(configs["a"])
    assert parsed.sampling_config.sampling_rate == 0.5
    # Written back for --model_config_file, and read again the same: a reload compares them.
    assert serving_config.parse_model_config(serving_config.model_config_text(specs)) == specs
    changed = text.replace("0.5", "0.25")
    assert serving_config.parse_model_config(changed) != specs
