"""An embedded server that speaks TensorFlow Serving's gRPC and REST APIs.

gRPC: ``tensorflow.serving.PredictionService`` (Predict, Classify, Regress, MultiInference,
GetModelMetadata) and ``tensorflow.serving.ModelService`` (GetModelStatus,
HandleReloadConfigRequest), with the protos and stubs of ``tensorflow-serving-api``.
REST: TF Serving's paths and JSON. The same clients, requests and push directory work
against ``tensorflow_model_server``; the README gives the production command.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import functools
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mtrec import names as F
from mtrec.serving import config as config_lib
from mtrec.serving.batching import Batcher
from mtrec.serving.errors import (
    HTTP_STATUS,
    ServingError,
    failed_precondition,
    invalid,
    request_errors,
)
from mtrec.serving.inference import (
    Inference,
    as_serving_error,
    examples_from_input,
)
from mtrec.serving.loop import EventLoopThread, LoopCalls
from mtrec.serving.manager import SERVE_TAGS, ModelManager, Servable, load_servable
from mtrec.serving.monitoring import CONTENT_TYPE, ServingMetrics
from mtrec.serving.request_log import ServerRequestLogger
from mtrec.serving.tensors import (
    from_proto,
    parse_rest_inputs,
    rest_outputs,
    signature_inputs,
    to_proto,
)
from mtrec.serving.warmup import replay_warmup

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
STATE_CODES = {"START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Everything ``mtrec serve`` configures (TF Serving's flags, plus safe defaults)."""

    models: tuple[config_lib.ModelSpec, ...]
    port: int = 8500
    rest_api_port: int | None = None  # None: REST off; 0: any free port.
    host: str = "127.0.0.1"  # Loopback unless told otherwise.
    batching: config_lib.BatchingConfig | None = None
    poll_seconds: float = 1.0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    grpc_workers: int = 16
    # TF Serving's flags of the same names, with its defaults.
    rest_api_timeout_ms: int = 30_000  # A REST connection idle or stalled this long closes.
    rest_api_num_threads: int = 4 * (os.cpu_count() or 1)  # REST requests run at once.
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0  # Runs of each warmup record (0: one).
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    model_config_file: str | None = None  # Re-read every config_poll_seconds (0: never).
    config_poll_seconds: float = 0.0
    # TF Serving's MonitoringConfig: Prometheus metrics on the REST port when enabled.
    monitoring_config_file: str | None = None
    # TensorFlow's thread pools (--tensorflow_*_parallelism; 0: TensorFlow chooses).
    parallelism: config_lib.Parallelism = dataclasses.field(default_factory=config_lib.Parallelism)
    grpc_socket_path: str | None = None  # Also listen on this UNIX socket.
    # Extra gRPC server arguments; a key given here replaces the server's own setting.
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()
    saved_model_tags: frozenset[str] = SERVE_TAGS  # The MetaGraph each version loads.
    ssl: config_lib.SSLConfig | None = None  # TLS on the gRPC ports (REST stays plain).
    rest_api_enable_cors_support: bool = False  # CORS headers on REST API answers.
    # A new version label may point at a version that is not loaded yet.
    allow_version_labels_for_unavailable_models: bool = False


# ----------------------------------------------------------------------------- gRPC


def _model_spec(target: Any, servable: Servable, signature: str = "") -> None:
    target.name = servable.name
    target.version.value = servable.version
    if signature:
        target.signature_name = signature


def _requested(spec: Any) -> tuple[str, int | None, str | None]:
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
    return spec.name, version, label or None


# The gRPC calls counted in request_count and timed in request_latency: TF Serving's
# PredictionServiceImpl records Predict, Classify and Regress; MultiInference is counted too.
_COUNTED_APIS = ("Predict", "Classify", "Regress", "MultiInference")


class _Outcome:
    """One gRPC call's status, recorded in its service's metrics (the calls in
    _COUNTED_APIS) exactly once, before the answer leaves: grpc.aio's abort sends it."""

    def __init__(self, service: Any, method: Any, request: Any) -> None:
        self.service, self.method, self.request = service, method, request
        self.start = time.perf_counter_ns()
        self.recorded = False

    def record(self, code: Any) -> None:
        if not self.recorded:
            self.recorded = True
            api = self.method.__name__
            _record_call(self.service.metrics, api, self.request, code, self.start)

    def failed(self, err: BaseException) -> ServingError:
        """The status a request error becomes (``_call_error``), recorded."""
        error = _call_error(self.method, err)
        self.record(error.code)
        return error


def _grpc_call(method: Any) -> Any:
    """Turn what a request can raise (``request_errors()``) into a gRPC status: a
    ServingError's own code, INTERNAL (logged) for the rest. The calls in _COUNTED_APIS
    are recorded in the service's metrics (before the answer leaves). Anything else (a
    bug): grpcio logs it, answers UNKNOWN ("Exception calling application") and the server
    keeps serving."""

    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        outcome = _Outcome(self, method, request)
        try:
            response = method(self, request, context)
            outcome.record(grpc.StatusCode.OK)
            return response
        except request_errors() as err:
            error = outcome.failed(err)
            context.abort(error.code, error.message)
        finally:
            outcome.record(grpc.StatusCode.UNKNOWN)  # Only a bug gets here unrecorded.

    return functools.wraps(method)(wrapper)


def _grpc_call_async(method: Any) -> Any:
    """``_grpc_call`` for a coroutine handler (run on the gRPC server's event loop)."""

    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        outcome = _Outcome(self, method, request)
        try:
            response = await method(self, request, context)
            outcome.record(grpc.StatusCode.OK)
            return response
        except request_errors() as err:
            error = outcome.failed(err)
            await context.abort(error.code, error.message)
        finally:
            outcome.record(grpc.StatusCode.UNKNOWN)  # Only a bug gets here unrecorded.

    return functools.wraps(method)(wrapper)


def _call_error(method: Any, err: BaseException) -> ServingError:
    """The status a request error becomes; an INTERNAL one is logged with its traceback."""
    error = as_serving_error(err)
    if error.code == grpc.StatusCode.INTERNAL:
        log.error("internal error in %s", method.__name__, exc_info=err)
    return error


def _record_call(
    metrics: ServingMetrics | None, api: str, request: Any, code: Any, start_ns: int
) -> None:
    if metrics is not None and api in _COUNTED_APIS:
        name, signature = _grpc_labels(request)
        metrics.record_request(
            name, api, "GRPC", signature, code.name, (time.perf_counter_ns() - start_ns) // 1000
        )


def _grpc_labels(request: Any) -> tuple[str, str]:
    """The model name and signature a counted gRPC request names (TF Serving counts the
    name as requested; MultiInference: its first task's, and every task's signature)."""
    if isinstance(request, inference_pb2.MultiInferenceRequest):
        specs = [task.model_spec for task in request.tasks]
        name = specs[0].name if specs else ""
        return name, ",".join(spec.signature_name or F.SERVING_DEFAULT for spec in specs)
    spec = request.model_spec
    return spec.name, spec.signature_name or F.SERVING_DEFAULT


def _predict_arguments(request: Any) -> tuple:
    """A PredictRequest as ``Inference.predict``'s arguments (inputs decoded)."""
    name, version, label = _requested(request.model_spec)
    inputs = {key: from_proto(key, proto) for key, proto in request.inputs.items()}
    return (
        name,
        version,
        label,
        request.model_spec.signature_name,
        inputs,
        list(request.output_filter),
    )


def _add_classifications(result: Any, outputs: dict) -> None:
    """Fill a ClassificationResult (of Classify or of a MultiInference task) from a classify
    signature's outputs."""
    for row in classifications(outputs):
        klasses = result.classifications.add()
        for label, score in row:
            klass = klasses.classes.add()
            if label is not None:
                klass.label = label
            if score is not None:
                klass.score = score


def predict_response(servable: Servable, signature: str, outputs: dict) -> Any:
    """The PredictResponse of a Predict call (gRPC, and REST's logged one)."""
    response = predict_pb2.PredictResponse()
    _model_spec(response.model_spec, servable, signature)
    for key, value in outputs.items():
        response.outputs[key].CopyFrom(to_proto(value))
    return response


def classification_response(servable: Servable, signature: str, outputs: dict) -> Any:
    """The ClassificationResponse of a Classify call (gRPC, and REST's logged one)."""
    response = classification_pb2.ClassificationResponse()
    _model_spec(response.model_spec, servable, signature)
    _add_classifications(response.result, outputs)
    return response


def regression_response(servable: Servable, signature: str, outputs: dict) -> Any:
    """The RegressionResponse of a Regress call (gRPC, and REST's logged one)."""
    response = regression_pb2.RegressionResponse()
    _model_spec(response.model_spec, servable, signature)
    for value in np.asarray(outputs["outputs"]).reshape(-1):
        response.result.regressions.add(value=float(value))
    return response


def run_examples(inference: Inference, request: Any, method: str) -> tuple[Servable, str, dict]:
    """A ClassificationRequest or RegressionRequest, from gRPC or from REST's JSON: the
    servable, the signature and its outputs."""
    name, version, label = _requested(request.model_spec)
    return inference.run_examples(
        name,
        version,
        label,
        request.model_spec.signature_name,
        method,
        examples_from_input(request.input),
    )


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(
        self,
        inference: Inference,
        request_logger: ServerRequestLogger,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.inference = inference
        self.request_logger = request_logger  # The model config's logging_config.
        self.metrics = metrics

    @_grpc_call_async
    async def Predict(self, request: Any, context: Any) -> Any:
        """On the event loop: decoded, run (batched, or on the loop when no other model
        call runs, else in a thread) and encoded, holding a thread only for the model."""
        answer = await self.inference.predict_async(*_predict_arguments(request))
        return self._predicted(request, *answer)

    def _predicted(self, request: Any, servable: Servable, signature: str, outputs: dict) -> Any:
        """The PredictResponse, offered to the request logger."""
        response = predict_response(servable, signature, outputs)
        self.request_logger.log(request, response)  # Sampled; never blocks.
        return response

    @_grpc_call
    def Classify(self, request: Any, context: Any) -> Any:
        servable, signature, outputs = run_examples(self.inference, request, F.CLASSIFY_METHOD)
        response = classification_response(servable, signature, outputs)
        self.request_logger.log(request, response)  # Sampled; never blocks.
        return response

    @_grpc_call
    def Regress(self, request: Any, context: Any) -> Any:
        servable, signature, outputs = run_examples(self.inference, request, F.REGRESS_METHOD)
        response = regression_response(servable, signature, outputs)
        self.request_logger.log(request, response)  # Sampled; never blocks.
        return response

    @_grpc_call
    def MultiInference(self, request: Any, context: Any) -> Any:
        servable, results = self.inference.multi_inference(
            list(request.tasks), examples_from_input(request.input)
        )
        response = inference_pb2.MultiInferenceResponse()
        for signature, method, outputs in results:
            result = response.results.add()
            _model_spec(result.model_spec, servable, signature)
            if method == F.CLASSIFY_METHOD:
                _add_classifications(result.classification_result, outputs)
            else:
                for value in np.asarray(outputs["outputs"]).reshape(-1):
                    result.regression_result.regressions.add(value=float(value))
        self.request_logger.log(request, response)  # Sampled; never blocks.
        return response

    @_grpc_call
    def GetModelMetadata(self, request: Any, context: Any) -> Any:
        if list(request.metadata_field) != ["signature_def"]:
            raise invalid(
                "Metadata field(s) must be exactly ['signature_def'], got "
                f"{list(request.metadata_field)}"
            )
        name, version, label = _requested(request.model_spec)
        servable = self.inference.manager.resolve(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _model_spec(response.model_spec, servable)
        response.metadata["signature_def"].Pack(signature_def_map(servable))
        return response


def signature_def_map(servable: Servable) -> Any:
    defs = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in servable.signature_defs.items():
        if not key.startswith("__"):  # TF Serving hides internal signatures too.
            defs.signature_def[key].CopyFrom(definition)
    return defs


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService."""

    metrics: ServingMetrics | None = None  # Its calls are not counted (as in TF Serving).

    def __init__(
        self, manager: ModelManager, request_logger: ServerRequestLogger | None = None
    ) -> None:
        self.manager = manager
        self.request_logger = request_logger or ServerRequestLogger()

    @_grpc_call
    def GetModelStatus(self, request: Any, context: Any) -> Any:
        name, version, _ = _requested(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.manager.statuses(name, version):
            entry = response.model_version_status.add(
                version=status.version, state=STATE_CODES[status.state]
            )
            if status.error:
                entry.status.error_code = 2  # UNKNOWN, as TF Serving reports load failures.
                entry.status.error_message = status.error
        return response

    @_grpc_call
    def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:
        from google.protobuf import text_format

        which = request.config.WhichOneof("config")
        if which is None:  # As TF Serving's ServerCore::ReloadConfig.
            log.info("Taking no action for empty config.")
            return model_management_pb2.ReloadConfigResponse()
        if which != "model_config_list":
            raise failed_precondition(
                "Cannot transition to requested config. It is only legal to transition "
                "from one ModelConfigList to another."
            )
        specs = config_lib.parse_model_config(
            text_format.MessageToString(request.config), "ReloadConfigRequest"
        )
        try:
            reload_config(self.manager, self.request_logger, specs)
        except config_lib.ConfigError as err:  # A logging_config that makes no logger.
            raise invalid(str(err)) from None
        return model_management_pb2.ReloadConfigResponse()


def reload_config(
    manager: ModelManager, request_logger: ServerRequestLogger, specs: list[config_lib.ModelSpec]
) -> None:
    """Apply a new model config, as TF Serving's ServerCore::ReloadConfig: the models, and
    the request loggers of their logging_configs (ConfigError, nothing changed, if one cannot
    be made; a kept config keeps its logger, a dropped one's logger is closed)."""
    request_logger.update(config_lib.logging_configs(specs))
    manager.reconfigure(specs)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def classifications(outputs: dict[str, Any]) -> list[list[tuple[str | None, float | None]]]:
    """A classify signature's ``classes``/``scores`` as (label, score) pairs per example;
    either side is None when the signature does not output it."""
    scores, classes = outputs.get("scores"), outputs.get("classes")
    shaped = scores if scores is not None else classes
    if shaped is None:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "the classification signature outputs neither 'classes' nor 'scores' (outputs: "
            f"{', '.join(sorted(outputs))})",
        )
    return [
        [
            (
                _text(classes[row][c]) if classes is not None else None,
                float(scores[row][c]) if scores is not None else None,
            )
            for c in range(shaped.shape[1])
        ]
        for row in range(len(shaped))
    ]


# ----------------------------------------------------------------------------- REST

# TF Serving's routes (model_servers/http_rest_api_util.cc): every path under /v1/ is the
# REST API's; the model paths match case-insensitively, names and labels are URL-decoded.
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
# TF Serving's AddCORSHeaders (http_rest_api_util.cc), on every API answer when enabled.
_CORS_HEADERS = (
    "Access-Control-Allow-Origin: *\r\n"
    "Access-Control-Allow-Methods: POST, GET\r\n"
    "Access-Control-Allow-Headers: Content-Type\r\n"
)
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_INT64_MAX = 2**63 - 1


class _StalledError(Exception):
    """The client stopped sending its request body: the connection is closed unanswered."""


class RestHandler(BaseHTTPRequestHandler):
    """TF Serving's REST API on the same paths and JSON formats. Each response is one write
    on a TCP_NODELAY socket (no Nagle stall against the client's delayed ACK)."""

    server: _RestServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self._api = False  # Whether the answer being written is an API path's.
        self.timeout = self.server.timeout_seconds  # StreamRequestHandler applies it.
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, is_open=True)

    def finish(self) -> None:
        self.server.track(self.connection, is_open=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # Overrides the stdlib's name.
        log.debug("rest: " + format, *args)

    def _send(self, status: int, body: Any) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self._write(status, data, "application/json")

    def _write(self, status: int, data: bytes, content_type: str) -> None:
        status = int(status)
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        head = (
            f"HTTP/1.1 {status} {phrase}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\n"
            + ("Connection: close\r\n" if self.close_connection else "")
            + (_CORS_HEADERS if self._api and self.server.cors else "")
            + "\r\n"
        )
        if self.command == "HEAD":
            data = b""
        self.wfile.write(head.encode("latin-1") + data)  # One write: headers and body.
        self.log_request(status)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (a bad request line, oversized headers) as JSON too."""
        self.close_connection = True
        self._send(int(code), {"error": message or HTTPStatus(code).phrase})

    def _error(self, error: ServingError) -> None:
        self._send(HTTP_STATUS.get(error.code, 500), {"error": error.message})

    def __getattr__(self, name: str) -> Any:
        """Every HTTP method (``do_GET``, ``do_PUT``, ``do_FOO``...) reaches one dispatcher:
        TF Serving answers 400 "Malformed request" for anything but GET and POST."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def _handle(self) -> None:
        path = self.path.split("?", 1)[0]
        self._api = False
        try:
            body = self._read_body()
        except _StalledError:
            self.close_connection = True  # As TF Serving's HTTP server: no answer.
            return
        except request_errors() as err:  # Bad framing; anything else (a bug):
            # socketserver's handle_error prints it and closes this one connection.
            self.close_connection = True
            self._error(as_serving_error(err))
            return
        metrics = self.server.metrics
        if metrics is not None and path == self.server.monitoring_path:
            # As TF Serving's Prometheus handler: any method on exactly this path.
            self._write(HTTPStatus.OK, metrics.registry.exposition().encode(), CONTENT_TYPE)
            return
        if not _API_PATH.fullmatch(path):
            self._send(HTTPStatus.NOT_FOUND, {"error": f"Not found: {self.command} {path}"})
            return
        self._api = True
        if self.command == "OPTIONS":  # A CORS preflight, as TF Serving's dispatcher answers
            # it (with or without --rest_api_enable_cors_support): no body.
            origin = re.search(r"https?://", self.headers.get("Origin", ""))
            self._write(HTTPStatus.OK if origin else HTTPStatus.BAD_REQUEST, b"", "text/plain")
            return
        with self.server.slots:  # --rest_api_num_threads requests at once.
            # What the request names, for its metrics (set by _dispatch as it parses).
            self._model_name = self._method = self._signature = ""
            start = time.perf_counter_ns()
            code = grpc.StatusCode.UNKNOWN
            try:
                try:
                    result = self._dispatch(path, body)
                    code = grpc.StatusCode.OK
                except request_errors() as err:  # Anything else (a bug): socketserver's
                    # handle_error prints it and closes this one connection; serving goes on.
                    result = as_serving_error(err)
                    code = result.code
                    if code == grpc.StatusCode.INTERNAL:
                        log.exception("internal error in REST %s", self.path)
            finally:  # Recorded before the answer leaves, as TF Serving's dispatcher does.
                if metrics is not None:
                    metrics.record_request(
                        self._model_name,
                        self._method,
                        "REST",
                        self._signature,
                        code.name,
                        (time.perf_counter_ns() - start) // 1000,
                    )
            if isinstance(result, ServingError):
                self._error(result)
            else:
                self._send(HTTPStatus.OK, result)

    def _read_body(self) -> bytes:
        """The whole body: Content-Length or chunked; 400 for bad framing, 413 over the
        size limit, _StalledError when the client stops sending for --rest_api_timeout_in_ms."""
        limit = self.server.max_request_bytes
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunks(limit)
            text = self.headers.get("Content-Length")
            if text is None:
                return b""
            if not text.strip().isdigit():
                raise invalid(f"Malformed request: invalid Content-Length: {text}")
            length = int(text)
            if length > limit:
                raise self._too_large(length)
            data = self.rfile.read(length)
        except TimeoutError:
            raise _StalledError from None
        if len(data) < length:
            raise _StalledError  # The client closed mid-body.
        return data

    def _read_chunks(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise invalid("Malformed request: invalid chunk size") from None
            if size < 0:
                raise invalid("Malformed request: invalid chunk size")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # Trailers.
                return b"".join(parts)
            total += size
            if total > limit:
                raise self._too_large(total)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise _StalledError
            parts.append(chunk)
            self.rfile.readline(16)  # The CRLF after the chunk.

    def _too_large(self, length: int) -> ServingError:
        return ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"request of {length} bytes exceeds the limit of "
            f"{self.server.max_request_bytes} bytes",
        )

    def _dispatch(self, path: str, body: bytes) -> Any:
        """TF Serving's HttpRestApiHandler::ProcessRequest."""
        malformed = invalid(f"Malformed request: {self.command} {path}")
        if self.command == "OPTIONS":  # A CORS preflight.
            if re.search(r"https?://", self.headers.get("Origin", "")):
                return None  # 200 with an empty body.
            raise failed_precondition("Origin header is missing in CORS preflight")
        if self.command == "POST":
            match = _PREDICTION_PATH.fullmatch(path)
        elif self.command == "GET":
            match = _STATUS_PATH.fullmatch(path)
        else:
            raise malformed
        if match is None:
            raise malformed
        raw_name, raw_version, raw_label, action = match.groups()
        name = urllib.parse.unquote(raw_name or "")
        self._model_name = name
        self._method = action if self.command == "POST" else ""  # TF Serving's API label.
        label = urllib.parse.unquote(raw_label) if raw_label else None
        version = int(raw_version) if raw_version else None
        if version is not None and version > _INT64_MAX:
            raise invalid(f"Failed to convert version: {raw_version} to numeric.")
        if self.command == "POST":
            if action == "predict":
                return self._predict(name, version, label, _json_body(body))
            if action in ("classify", "regress"):
                return self._examples(name, version, label, action, _json_body(body))
            raise malformed  # The verb matched case-insensitively but is compared exactly.
        if action == "metadata":
            return self._metadata(name, version, label)
        if not name:
            raise invalid("Missing model name in request.")
        return self._status(name, version, label)

    def _metadata(self, name: str, version: int | None, label: str | None) -> dict:
        servable = self.server.inference.manager.resolve(name, version, label)
        return {
            "model_spec": {
                "name": servable.name,
                "signature_name": "",
                "version": str(servable.version),
            },
            "metadata": {
                "signature_def": json_format.MessageToDict(
                    signature_def_map(servable), preserving_proto_field_name=True
                )
            },
        }

    def _status(self, name: str, version: int | None, label: str | None) -> dict:
        manager = self.server.inference.manager
        if label:
            version = manager.resolve(name, None, label).version
        return {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": s.state,
                    "status": {
                        "error_code": "UNKNOWN" if s.error else "OK",
                        "error_message": s.error,
                    },
                }
                for s in manager.statuses(name, version)
            ]
        }

    def _predict(self, name: str, version: int | None, label: str | None, body: dict) -> dict:
        inference = self.server.inference
        signature_name = _signature_name(body)
        signature = signature_name or F.SERVING_DEFAULT
        self._signature = signature
        servable = inference.manager.resolve(name, version, label)
        expected = signature_inputs(servable.signature(signature))
        inputs, row_format = parse_rest_inputs(body, expected)
        outputs = inference.predict_on(servable, signature, inputs)

        def logged() -> tuple[Any, Any]:  # Run by the logger's writer, if sampled.
            request = predict_pb2.PredictRequest()
            _rest_model_spec(request.model_spec, name, version, label, signature_name)
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(to_proto(value))
            return request, predict_response(servable, signature, outputs)

        self.server.request_logger.log_built(servable.name, "predict_log", logged)
        return rest_outputs(outputs, row_format)

    def _examples(
        self, name: str, version: int | None, label: str | None, verb: str, body: dict
    ) -> dict:
        """TF Serving's FillClassificationRequestFromJson (and Regression): the JSON becomes
        the request proto a gRPC client would send, which runs and is logged as gRPC's."""
        signature_name = _signature_name(body)
        self._signature = signature_name or F.SERVING_DEFAULT
        rows = body.get("examples")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise invalid("'examples' must be a list of objects")
        context = body.get("context")
        if context is not None and not isinstance(context, dict):
            raise invalid("'context' must be an object")
        classify = verb == "classify"
        request = (
            classification_pb2.ClassificationRequest()
            if classify
            else regression_pb2.RegressionRequest()
        )
        _rest_model_spec(request.model_spec, name, version, label, signature_name)
        if context is None:
            request.input.example_list.SetInParent()
            listed = request.input.example_list.examples
        else:
            with_context = request.input.example_list_with_context
            with_context.context.ParseFromString(_json_example(context))
            listed = with_context.examples
        for row in rows:
            listed.add().ParseFromString(_json_example(row))
        method = F.CLASSIFY_METHOD if classify else F.REGRESS_METHOD
        servable, signature, outputs = run_examples(self.server.inference, request, method)
        build = classification_response if classify else regression_response
        self.server.request_logger.log_built(
            servable.name,
            "classify_log" if classify else "regress_log",
            lambda: (request, build(servable, signature, outputs)),
        )
        if not classify:
            return {"results": np.asarray(outputs["outputs"]).reshape(-1).tolist()}
        return {
            "results": [
                [
                    [str(c) if label is None else label, 0.0 if score is None else score]
                    for c, (label, score) in enumerate(row)
                ]
                for row in classifications(outputs)
            ]
        }


def _signature_name(body: dict) -> str:
    """The body's ``signature_name`` ("" when absent), a string as TF Serving's
    FillSignature requires."""
    name = body.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(
            f"JSON Value: {json.dumps(name)[:100]} not formatted correctly. 'signature_name' "
            "key must be a string value."
        )
    return name


def _rest_model_spec(
    target: Any, name: str, version: int | None, label: str | None, signature_name: str
) -> None:
    """The ModelSpec TF Serving's REST handler puts in the request proto: the path's name,
    version or label (FillModelSpecWithNameVersionAndLabel), the body's signature_name."""
    target.name = name
    if version is not None:
        target.version.value = version
    elif label is not None:
        target.version_label = label
    if signature_name:
        target.signature_name = signature_name


def _json_example(features: dict) -> bytes:
    """One JSON object of a classify/regress body as a serialized tf.Example."""
    from mtrec.examples import to_example

    return to_example({k: _feature_value(k, v) for k, v in features.items()})


def _json_body(body: bytes) -> dict:
    try:
        parsed = json.loads(body or b"null")
    except RecursionError:
        raise invalid("JSON Parse error: the document is nested too deeply") from None
    except ValueError as err:  # Bad JSON or bad UTF-8.
        raise invalid(f"JSON Parse error: {err}"[:500]) from None
    if not isinstance(parsed, dict):
        raise invalid("JSON Parse error: the request body must be a JSON object")
    return parsed


def _feature_value(name: str, value: Any) -> Any:
    """A classify/regress example feature's JSON value: ``{"b64": ...}`` is bytes, as in TF
    Serving's json_tensor.cc; other objects, nested lists and nulls are refused."""
    if isinstance(value, list):
        return [_feature_value(name, v) for v in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid(f"Feature: {name} has element with unexpected JSON type: Object")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise invalid(f"Feature: {name}: invalid base64") from None
    if value is None:
        raise invalid(f"Feature: {name} has element with unexpected JSON type: Null")
    return value


class _RestServer(ThreadingHTTPServer):
    daemon_threads = False  # Shutdown waits for in-flight requests.
    block_on_close = True
    # The listen backlog: the system's maximum, as TF Serving's libevent server asks for
    # (the stdlib's default is 5).
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        address: tuple[str, int],
        inference: Inference,
        max_request_bytes: int,
        timeout_seconds: float | None = None,
        num_threads: int = 16,
        metrics: ServingMetrics | None = None,
        monitoring_path: str | None = None,
        request_logger: ServerRequestLogger | None = None,
        cors: bool = False,
    ) -> None:
        self.inference = inference
        self.cors = cors  # --rest_api_enable_cors_support: CORS headers on API answers.
        # The model config's logging_config: REST calls are logged as gRPC ones are.
        self.request_logger = request_logger or ServerRequestLogger()
        self.metrics = metrics  # Requests are recorded here; None: not recorded.
        self.monitoring_path = monitoring_path  # Where metrics are served; None: nowhere.
        self.max_request_bytes = max_request_bytes
        self.timeout_seconds = timeout_seconds
        self.slots = threading.BoundedSemaphore(max(1, num_threads))
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, RestHandler)

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def end_reads(self) -> None:
        """At shutdown: keep-alive connections read no further requests (a request being
        answered still gets its answer), so closing does not wait out their idle timeout."""
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RD)
                except OSError:  # Already closed by the client.
                    pass


# ----------------------------------------------------------------------------- server


def _bind_refused(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (the system's words), or None: asked before gRPC
    binds it, whose own failure would come as C-core log lines before the one-line error."""
    if port == 0:
        return None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as err:
        return err.strerror
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # As gRPC binds.
        try:
            probe.bind(address)
        except OSError as err:
            return err.strerror
    return None


@functools.cache
def _hold_grpc_aio() -> None:
    """Take one reference to grpc.aio's process-wide machinery and never give it back.
    grpc.aio shuts it down when its last server is freed; left to interpreter exit, that
    shutdown prints an empty "Error in sys.excepthook" (grpc/grpc#38679, fixed upstream by
    skipping it at exit: grpc/grpc#40447). The poller thread is a daemon; exit ends it.
    (Two threads racing here would take two references: as harmless as one.)"""
    grpc.aio.init_grpc_aio()


def _server_credentials(ssl_config: config_lib.SSLConfig | None) -> grpc.ServerCredentials | None:
    """TF Serving's BuildServerCredentialsFromSSLConfigFile: the key and certificate, and
    with client_verify a required client certificate signed by custom_ca. The PEM text is
    checked here (key against certificate) so a bad file fails start-up, not each handshake."""
    if ssl_config is None:
        return None
    try:
        config_lib.check_pems(ssl_config.server_key, ssl_config.server_cert, ssl_config.custom_ca)
    except ValueError as err:
        raise config_lib.ConfigError(
            f"--ssl_config_file: the key, certificate or CA is not valid PEM, or the key "
            f"does not match the certificate ({err})"
        ) from None
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() or None,
        require_client_auth=ssl_config.client_verify,
    )


def _check_socket_path(path: str) -> None:
    """Where --grpc_socket_path can be bound: an existing folder, and no file there but a
    stale socket (which gRPC replaces)."""
    where = Path(path)
    if not where.parent.is_dir():
        refused = f"no such directory {where.parent}"
    elif where.exists() and not where.is_socket():
        refused = "the path exists and is not a socket"
    else:
        return
    raise config_lib.ConfigError(f"cannot bind gRPC to unix:{path}: {refused}")


def versions_text() -> str:
    """What ``tensorflow_model_server --version`` prints, for this server: its own version
    and TensorFlow's."""
    import tensorflow as tf

    from mtrec import __version__

    server = f"TensorFlow ModelServer: mtrec serve {__version__}"
    return f"{server}\nTensorFlow Library: {tf.__version__}"


class ModelServer:
    """The manager, the optional batcher, and the gRPC and REST front ends."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        # --monitoring_config_file: read first, so a bad one fails before models load.
        self.monitoring = (
            config_lib.read_monitoring_config_file(options.monitoring_config_file)
            if options.monitoring_config_file
            else config_lib.MonitoringConfig()
        )
        self.metrics = ServingMetrics()  # Always recorded; served when monitoring is on.
        # TLS and the socket path are checked before any model loads, to fail at once.
        self._credentials = _server_credentials(options.ssl)
        if options.grpc_socket_path:
            _check_socket_path(options.grpc_socket_path)
        if options.parallelism != config_lib.Parallelism():  # Before any model loads.
            config_lib.apply_parallelism(options.parallelism)
            import tensorflow as tf

            log.info(
                "TensorFlow thread pools: intra-op %d, inter-op %d",
                tf.config.threading.get_intra_op_parallelism_threads(),
                tf.config.threading.get_inter_op_parallelism_threads(),
            )
        self.manager = ModelManager(
            list(options.models),
            loader=functools.partial(load_servable, tags=options.saved_model_tags),
            warmup=self._warmup if options.enable_model_warmup else None,
            max_load_retries=options.max_num_load_retries,
            retry_interval=options.load_retry_interval_micros / 1e6,
            metrics=self.metrics,
            allow_unavailable_labels=options.allow_version_labels_for_unavailable_models,
        )
        # The gRPC front end's event loop; with batching, the batcher's too.
        self._loop = EventLoopThread("grpc-loop")
        self.batcher = (
            Batcher(options.batching, self.metrics, self._loop, options.grpc_workers)
            if options.batching
            else None
        )
        # Without batching, a gRPC Predict's model call (see LoopCalls).
        self._calls = (
            LoopCalls(self._loop.loop, options.grpc_workers, "predict")
            if self.batcher is None
            else None
        )
        self.inference = Inference(self.manager, self.batcher, self.metrics, self._calls)
        # TF Serving's per-model logging_config (of --model_config_file), updated on reloads.
        self.request_logger = ServerRequestLogger()
        self.request_logger.update(config_lib.logging_configs(list(options.models)))
        self._grpc: grpc.aio.Server | None = None
        self._grpc_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._rest: _RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.rest_port = 0
        self._stop = threading.Event()
        self._config_thread: threading.Thread | None = None

    def _warmup(self, servable: Servable) -> int:
        iterations = self.options.num_request_iterations_for_warmup or 1  # 0: TF Serving's 1.
        return replay_warmup(servable, Inference(self.manager), iterations)

    def start(self) -> ModelServer:
        """Load the models, then open the ports (0 picks a free port)."""
        self.manager.start(self.options.poll_seconds)
        self._loop.call(self._start_grpc())
        if self.options.rest_api_port is not None:
            self._start_rest(self.options.rest_api_port)
        elif self.monitoring.enable:  # As TF Serving: metrics are served by the REST port.
            log.warning("monitoring is enabled but REST is off: no metrics are served")
        if self.options.model_config_file and self.options.config_poll_seconds > 0:
            self._config_thread = threading.Thread(
                target=self._poll_config, name="config-poller", daemon=True
            )
            self._config_thread.start()
        return self

    async def _start_grpc(self) -> None:
        """The gRPC server, on the event loop. Calls without batching (and every call but a
        batched Predict) run in its thread pool, as with grpcio's threaded server."""
        _hold_grpc_aio()
        limit = self.options.max_request_bytes
        self._grpc_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.options.grpc_workers, thread_name_prefix="grpc"
        )
        own = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * limit),
            # A port another server holds is refused rather than shared: with
            # SO_REUSEPORT (gRPC's default) the kernel would split the traffic between them.
            ("grpc.so_reuseport", 0),
        ]
        given = self.options.grpc_channel_arguments
        keys = {key for key, _ in given}
        self._grpc = grpc.aio.server(
            migration_thread_pool=self._grpc_pool,
            options=[(k, v) for k, v in own if k not in keys] + list(given),
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.inference, self.request_logger, self.metrics), self._grpc
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.manager, self.request_logger), self._grpc
        )
        address = f"{self.options.host}:{self.options.port}"
        refused = _bind_refused(self.options.host, self.options.port)
        if refused is None:
            self.grpc_port = self._listen(address)
            if not self.grpc_port:
                refused = "the address is not available here"
        if refused:
            raise config_lib.ConfigError(f"cannot bind gRPC to {address}: {refused}")
        if self.options.grpc_socket_path:
            self._bind_socket(self.options.grpc_socket_path)
        await self._grpc.start()

    def _bind_socket(self, path: str) -> None:
        """--grpc_socket_path: gRPC on a UNIX socket too (a relative path is from the
        working directory; the path was checked by _check_socket_path)."""
        if not self._listen(f"unix:{path}"):
            raise config_lib.ConfigError(
                f"cannot bind gRPC to unix:{path}: gRPC could not listen there"
            )

    def _listen(self, address: str) -> int:
        """Add a gRPC port, with TLS when --ssl_config_file is set (as TF Serving does on
        both its TCP port and its UNIX socket); 0 when gRPC cannot listen there."""
        assert self._grpc is not None
        try:  # grpcio raises where older releases returned port 0.
            if self._credentials is None:
                return self._grpc.add_insecure_port(address)
            return self._grpc.add_secure_port(address, self._credentials)
        except RuntimeError:
            return 0

    def _poll_config(self) -> None:
        """--model_config_file_poll_wait_seconds: re-read the model config file and apply
        it when it changed (as a HandleReloadConfigRequest would)."""
        path = self.options.model_config_file
        assert path is not None
        applied = list(self.options.models)
        while not self._stop.wait(self.options.config_poll_seconds):
            try:
                specs = config_lib.read_model_config_file(path)
                if specs != applied:  # Logging configs are compared too.
                    reload_config(self.manager, self.request_logger, specs)
                    applied = specs
                    log.info("model config %s reloaded", path)
            except request_errors() as err:  # A bad edit: keep serving the last config.
                # Anything else is a bug: threading.excepthook logs it and polling stops.
                log.error("model config %s not applied: %s", path, err)

    def _start_rest(self, port: int) -> None:
        try:
            timeout = self.options.rest_api_timeout_ms
            self._rest = _RestServer(
                (self.options.host, port),
                self.inference,
                self.options.max_request_bytes,
                timeout_seconds=timeout / 1000 if timeout > 0 else None,
                num_threads=self.options.rest_api_num_threads,
                metrics=self.metrics,
                monitoring_path=self.monitoring.path if self.monitoring.enable else None,
                request_logger=self.request_logger,
                cors=self.options.rest_api_enable_cors_support,
            )
        except OSError as err:
            raise config_lib.ConfigError(
                f"cannot bind REST to {self.options.host}:{port}: " f"{err.strerror}"
            ) from None
        self.rest_port = self._rest.server_address[1]
        self._rest_thread = threading.Thread(
            target=self._rest.serve_forever, name="rest", daemon=True
        )
        self._rest_thread.start()

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking requests, let in-flight ones finish, then release everything (once:
        a second call does nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._grpc is not None:
            self._loop.call(self._grpc.stop(grace))
        if self._grpc_pool is not None:
            self._grpc_pool.shutdown(wait=False)
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.end_reads()
            self._rest.server_close()  # Joins the request threads.
        if self.batcher is not None:
            self.batcher.close()
        if self._calls is not None:
            self._calls.shutdown()
        self._loop.stop()
        self.request_logger.close()
        self.manager.stop()
