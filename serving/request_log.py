"""Request logging the way a model's ``logging_config`` asks TF Serving for it.

TF Serving (core/request_logger.cc, core/server_request_logger.cc, config/logging_config.proto):

- each model in the ``ModelServerConfig`` may carry a ``LoggingConfig``: a ``SamplingConfig``
  (``sampling_rate``, 0 to 1: a request is logged when a uniform draw is below it; proto3's
  default 0 logs nothing) and a ``LogCollectorConfig`` (``type``, ``filename_prefix``);
- a sampled request becomes one ``PredictionLog``: the request, the response and
  ``log_metadata`` (the model spec that answered, the sampling config, the SavedModel tags);
- the collector ``type`` names a registered ``LogCollector`` factory (an unknown type is
  NOT_FOUND); open-source TF Serving registers none. mtrec registers ``file``, which writes
  the records as TFRecord files named ``<filename_prefix>-<collector id>-<index>.tfrecord``
  and starts a new file once the current one reaches ``max_file_bytes`` (an empty type means
  ``file`` too);
- models with the same logging config share one logger (the server keys loggers by config);
- a config reload updates the loggers (``ServerRequestLogger.update``, as ServerCore's
  ReloadConfig calls ``server_request_logger_->Update``): a logger whose config is unchanged
  is kept, one for a new config is created, and one no model uses any more is closed once its
  pending records are written.

Logging never blocks or fails a request: ``log_*`` draws the sample and hands the protos to a
bounded queue; a writer thread builds, serializes and writes the records. When the queue is
full the record is dropped and counted (``counts().dropped``); a write that fails is counted
(``failed``) and logged, and the request it came from has long been answered. A logged
request and response must not be changed afterwards (the gRPC server never does).
``log_built`` takes a function that builds the protos instead: the REST front end's requests
become protos in the writer thread, and only when they are sampled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from google.protobuf import message as proto_message
from google.protobuf import text_format

from mtrec.errors import ConfigError

log = logging.getLogger(__name__)

FILE_COLLECTOR = "file"
COLLECTOR_TYPES = (FILE_COLLECTOR, "")  # An empty type is the file collector.
LOG_SUFFIX = ".tfrecord"
DEFAULT_MAX_FILE_BYTES = 64 << 20
DEFAULT_QUEUE_SIZE = 1024
SAVED_MODEL_TAGS = ("serve",)
# TFRecord framing around each record: length (8), its CRC (4), the data's CRC (4).
_RECORD_OVERHEAD = 16
# The PredictionLog field each request type is logged in.
_LOG_FIELDS = {
    "PredictRequest": "predict_log",
    "ClassificationRequest": "classify_log",
    "RegressionRequest": "regress_log",
    "MultiInferenceRequest": "multi_inference_log",
}
_STOP = object()


def _write_errors() -> tuple[type[BaseException], ...]:
    """What building and writing one record can raise: a proto of the wrong type
    (TypeError), a value ``log_built``'s function cannot convert (TypeError, ValueError), a
    proto that cannot be encoded, a file system error."""
    import tensorflow as tf

    return (TypeError, ValueError, proto_message.Error, OSError, tf.errors.OpError)


@dataclasses.dataclass(frozen=True)
class LogCounts:
    """What a logger did with the requests it was offered."""

    offered: int = 0
    sampled_out: int = 0  # Not drawn by the sampling rate.
    dropped: int = 0  # Drawn, but the queue was full (or the logger closed).
    written: int = 0
    failed: int = 0  # Drawn and queued, but building or writing the record failed.
    files: int = 0


class RequestLogger:
    """One logging config's logger: samples requests and writes ``PredictionLog`` TFRecords
    under ``filename_prefix``, rotating files by size. Thread-safe; ``close()`` when done."""

    def __init__(
        self,
        filename_prefix: str,
        sampling_rate: float,
        *,
        collector_id: int = 0,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        saved_model_tags: Iterable[str] = SAVED_MODEL_TAGS,
        sampling_config: Any | None = None,
        seed: int | None = None,
    ) -> None:
        if not filename_prefix:
            raise ConfigError("request logging needs a filename_prefix")
        if not 0.0 <= sampling_rate <= 1.0:
            raise ConfigError(f"sampling_rate must be in [0, 1], got {sampling_rate}")
        if max_file_bytes <= 0 or queue_size <= 0 or collector_id < 0:
            raise ConfigError("max_file_bytes and queue_size must be > 0, collector_id >= 0")
        from tensorflow_serving.config import logging_config_pb2

        self.filename_prefix = str(filename_prefix)
        self.sampling_rate = float(sampling_rate)
        self.collector_id = collector_id
        self.max_file_bytes = max_file_bytes
        self.saved_model_tags = tuple(saved_model_tags)
        self.sampling_config = logging_config_pb2.SamplingConfig()
        if sampling_config is not None:
            self.sampling_config.CopyFrom(sampling_config)
        self.sampling_config.sampling_rate = self.sampling_rate
        self._random = random.Random(seed)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._counts = LogCounts()
        self._gate = threading.Lock()  # A queued offer always lands before close()'s stop.
        self._closed = False
        self._writer: Any = None
        self._file_bytes = 0
        self._next_index = _next_free_index(self.filename_prefix, collector_id)
        self.paths: list[str] = []
        self._start_writer()

    # ------------------------------------------------------------------ request threads

    def log_predict(self, model_spec: Any, request: Any, response: Any) -> bool:
        """Offer one Predict call; True when it was queued for writing."""
        return self._offer("predict_log", model_spec, request, response)

    def log_classify(self, model_spec: Any, request: Any, response: Any) -> bool:
        """Offer one Classify call; True when it was queued for writing."""
        return self._offer("classify_log", model_spec, request, response)

    def log_regress(self, model_spec: Any, request: Any, response: Any) -> bool:
        """Offer one Regress call; True when it was queued for writing."""
        return self._offer("regress_log", model_spec, request, response)

    def log(self, request: Any, response: Any, model_spec: Any | None = None) -> bool:
        """Offer a call of any logged kind, told by the request's type. ``model_spec`` is
        what answered (default: the response's, else the request's)."""
        field = _LOG_FIELDS.get(type(request).__name__)
        if field is None:  # Not a call TF Serving logs: counted, never raised.
            self._count(offered=1, failed=1)
            return False
        if model_spec is None:
            model_spec = _answered_spec(request, response)
        return self._offer(field, model_spec, request, response)

    def log_built(self, field: str, build: Callable[[], tuple[Any, Any]]) -> bool:
        """Offer a call whose ``(request, response)`` protos ``build()`` makes, in the writer
        thread and only if sampled; ``field`` is the PredictionLog field (``predict_log``...)."""
        if field not in _LOG_FIELDS.values():
            raise ValueError(f"not a PredictionLog field: {field}")
        return self._offer(field, None, None, None, build)

    def _offer(
        self,
        field: str,
        model_spec: Any,
        request: Any,
        response: Any,
        build: Callable[[], tuple[Any, Any]] | None = None,
    ) -> bool:
        if self._random.random() >= self.sampling_rate:
            self._count(offered=1, sampled_out=1)
            return False
        item = (field, model_spec, request, response, build, int(time.time()))
        with self._gate:
            queued = not self._closed
            if queued:
                try:
                    self._queue.put_nowait(item)
                except queue.Full:
                    queued = False
        self._count(offered=1, dropped=0 if queued else 1)
        return queued

    def _count(self, **increments: int) -> None:
        with self._lock:
            self._counts = dataclasses.replace(
                self._counts,
                **{k: getattr(self._counts, k) + v for k, v in increments.items()},
            )

    def counts(self) -> LogCounts:
        """A snapshot of the counters."""
        with self._lock:
            return self._counts

    # ------------------------------------------------------------------ control

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until what was queued so far is written and flushed; False on timeout."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, close the file and stop the writer thread."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("request log %s: writer did not drain in time", self.filename_prefix)
            return
        self._thread.join(timeout)

    def __enter__(self) -> RequestLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread

    def _start_writer(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"request-log-{self.collector_id}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        stopped = False
        try:
            stopped = self._loop()
        finally:
            if not stopped and not self._closed:  # A bug got through (threading's excepthook
                self._start_writer()  # reports it): go on logging with a fresh thread.
            elif stopped:
                self._close_file()

    def _loop(self) -> bool:
        errors = _write_errors()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return True
            if isinstance(item, threading.Event):
                self._flush_file()
                item.set()
                continue
            try:
                self._write(self._record(*item))
            except errors as err:
                self._count(failed=1)
                log.warning("request log %s: record not written: %s", self.filename_prefix, err)
                continue
            self._count(written=1)
            if self._queue.empty():
                self._flush_file()

    def _record(
        self,
        field: str,
        model_spec: Any,
        request: Any,
        response: Any,
        build: Callable[[], tuple[Any, Any]] | None,
        timestamp: int,
    ) -> bytes:
        from tensorflow_serving.apis import prediction_log_pb2

        if build is not None:
            request, response = build()
            model_spec = _answered_spec(request, response)
        record = prediction_log_pb2.PredictionLog()
        metadata = record.log_metadata
        if model_spec is not None:
            metadata.model_spec.CopyFrom(model_spec)
        metadata.sampling_config.CopyFrom(self.sampling_config)
        metadata.saved_model_tags.extend(self.saved_model_tags)
        metadata.timestamp_secs = timestamp
        entry = getattr(record, field)
        entry.request.CopyFrom(request)
        entry.response.CopyFrom(response)
        return record.SerializeToString()

    def _write(self, record: bytes) -> None:
        import tensorflow as tf

        size = len(record) + _RECORD_OVERHEAD
        if self._writer is not None and self._file_bytes + size > self.max_file_bytes:
            self._close_file()
        if self._writer is None:
            path = log_path(self.filename_prefix, self.collector_id, self._next_index)
            self._next_index += 1
            parent = os.path.dirname(path)
            if parent:
                tf.io.gfile.makedirs(parent)
            self._writer = tf.io.TFRecordWriter(path)
            self._file_bytes = 0
            self.paths.append(path)
            self._count(files=1)
        self._writer.write(record)
        self._file_bytes += size

    def _flush_file(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def log_path(filename_prefix: str, collector_id: int, index: int) -> str:
    """The file collector's name for its ``index``-th file."""
    return f"{filename_prefix}-{collector_id:05d}-{index:05d}{LOG_SUFFIX}"


def _next_free_index(filename_prefix: str, collector_id: int) -> int:
    """One past the highest index already written under this prefix and id, so that a
    restarted server appends files rather than overwriting them."""
    import tensorflow as tf

    pattern = re.compile(
        re.escape(os.path.basename(filename_prefix))
        + rf"-{collector_id:05d}-(\d+){re.escape(LOG_SUFFIX)}$"
    )
    parent = os.path.dirname(filename_prefix) or "."
    try:
        if not tf.io.gfile.isdir(parent):
            return 0  # Made on the first write (which counts a failure if it cannot be).
        names = tf.io.gfile.listdir(parent)
    except (OSError, tf.errors.OpError) as err:  # An unreadable folder.
        raise ConfigError(f"request log {filename_prefix}: cannot list {parent}: {err}") from None
    found = [int(m.group(1)) for n in names if (m := pattern.match(n))]
    return max(found) + 1 if found else 0


def _answered_spec(request: Any, response: Any) -> Any:
    """The model spec that answered: the response's, else the request's (MultiInference:
    its first result's, else its first task's)."""
    results = getattr(response, "results", None)
    tasks = getattr(request, "tasks", None)
    for spec in (
        getattr(response, "model_spec", None),
        results[0].model_spec if results else None,
        getattr(request, "model_spec", None),
        tasks[0].model_spec if tasks else None,
    ):
        if spec is not None and spec.name:
            return spec
    return None


def from_logging_config(
    config: Any,
    *,
    collector_id: int = 0,
    dc: str = "",
    task_index: int | None = None,
    **options: Any,
) -> RequestLogger:
    """A logger for a model config's ``logging_config`` (a
    ``tensorflow_serving.config.logging_config_pb2.LoggingConfig``). A per-task sampling
    config matching ``dc`` and ``task_index`` overrides the rate, as in TF Serving (where the
    proto has them). ``options`` go to ``RequestLogger`` (max_file_bytes, queue_size, ...)."""
    collector = config.log_collector_config
    if collector.type not in COLLECTOR_TYPES:
        raise ConfigError(
            f"no log collector of type '{collector.type}': mtrec has '{FILE_COLLECTOR}'"
        )
    sampling = config.sampling_config
    rate = sampling.sampling_rate
    for task in getattr(sampling, "per_task_sampling_configs", ()):
        dc_match = not task.dc or task.dc == dc
        task_match = not task.HasField("task_index") or task.task_index == task_index
        if dc_match and task_match:
            rate = task.sampling_rate
            break
    return RequestLogger(
        collector.filename_prefix,
        rate,
        collector_id=collector_id,
        sampling_config=sampling,
        **options,
    )


class ServerRequestLogger:
    """Every served model's logger, by model name, as TF Serving's ServerRequestLogger:
    models with the same logging config share one logger; a model without one logs nothing.
    ``update`` swaps in a new config's loggers while requests are being logged."""

    def __init__(self, loggers: Mapping[str, RequestLogger] | None = None, **options: Any) -> None:
        self.loggers: dict[str, RequestLogger] = dict(loggers or {})
        self._options = options  # For the loggers update() creates (max_file_bytes, ...).
        self._by_config: dict[bytes, RequestLogger] = {}
        self._next_id = 1 + max((v.collector_id for v in self.loggers.values()), default=-1)
        self._lock = threading.Lock()  # A lookup and its offer, against update()'s swap.
        self._update_lock = threading.Lock()  # One update at a time.

    @classmethod
    def from_model_server_config(cls, config: Any, **options: Any) -> ServerRequestLogger:
        """From a ``ModelServerConfig`` (proto or text format): each model's
        ``logging_config``."""
        from tensorflow_serving.config import model_server_config_pb2

        if isinstance(config, str):
            text = config
            config = model_server_config_pb2.ModelServerConfig()
            try:
                text_format.Parse(text, config)
            except text_format.ParseError as err:
                raise ConfigError(f"model config: not a ModelServerConfig: {err}") from None
        logger = cls(**options)
        logger.update(
            {
                model.name: model.logging_config
                for model in config.model_config_list.config
                if model.HasField("logging_config")
            }
        )
        return logger

    def update(self, configs: Mapping[str, Any]) -> None:
        """Log each named model by its ``LoggingConfig`` (a proto or its serialized bytes),
        as TF Serving's ``ServerRequestLogger::Update``: the logger of a config already
        served is kept (same files), a new config gets a new logger (a new collector id),
        and a logger no model uses any more is closed after its pending records are
        written. A config that cannot make a logger raises ConfigError, nothing changed."""
        from tensorflow_serving.config import logging_config_pb2

        with self._update_lock:
            keys = {
                name: config if isinstance(config, bytes) else _config_key(config)
                for name, config in configs.items()
            }
            created: dict[bytes, RequestLogger] = {}
            try:
                for key in keys.values():
                    if key in self._by_config or key in created:
                        continue
                    config = logging_config_pb2.LoggingConfig.FromString(key)
                    created[key] = from_logging_config(
                        config, collector_id=self._next_id + len(created), **self._options
                    )
            except (ConfigError, proto_message.DecodeError) as err:
                for logger in created.values():
                    logger.close()
                if isinstance(err, ConfigError):
                    raise
                raise ConfigError(f"request logging: not a LoggingConfig: {err}") from None
            by_config = {key: self._by_config.get(key) or created[key] for key in keys.values()}
            with self._lock:
                old = self.loggers
                self.loggers = {name: by_config[key] for name, key in keys.items()}
                self._by_config = by_config
            self._next_id += len(created)
            kept = {id(v) for v in by_config.values()}
            for logger in _unique(old.values()):
                if id(logger) not in kept:  # Offers made before the swap are written first.
                    logger.close()

    def log(self, request: Any, response: Any) -> bool:
        """Offer one answered call to its model's logger (by the answering model's name)."""
        if not self.loggers:
            return False
        spec = _answered_spec(request, response)
        if spec is None:
            return False
        with self._lock:
            logger = self.loggers.get(spec.name)
            return logger.log(request, response, spec) if logger is not None else False

    def log_built(self, model_name: str, field: str, build: Callable[[], tuple[Any, Any]]) -> bool:
        """Offer a call of ``model_name`` whose ``(request, response)`` ``build()`` makes only
        if it is sampled (``RequestLogger.log_built``)."""
        if not self.loggers:
            return False
        with self._lock:
            logger = self.loggers.get(model_name)
            return logger.log_built(field, build) if logger is not None else False

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued and close every logger (later offers are dropped)."""
        with self._update_lock:
            for logger in _unique(self.loggers.values()):
                logger.close(timeout)


def _config_key(config: Any) -> bytes:
    """A LoggingConfig's identity, as TF Serving keys loggers: its deterministic bytes."""
    return config.SerializeToString(deterministic=True)


def _unique(loggers: Iterable[RequestLogger]) -> list[RequestLogger]:
    return list({id(v): v for v in loggers}.values())
