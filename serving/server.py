"""An embedded server that speaks TensorFlow Serving's gRPC and REST APIs.

gRPC: ``tensorflow.serving.PredictionService`` (Predict, Classify, Regress,
GetModelMetadata) and ``tensorflow.serving.ModelService`` (GetModelStatus,
HandleReloadConfigRequest), with the protos and stubs of ``tensorflow-serving-api``.
REST: TF Serving's paths and JSON. The same clients, requests and push directory work
against ``tensorflow_model_server``; the README gives the production command.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mtrec import names as F
from mtrec.serving import config as config_lib
from mtrec.serving.batching import Batcher
from mtrec.serving.errors import HTTP_STATUS, ServingError, invalid, request_errors
from mtrec.serving.inference import (
    Inference,
    as_serving_error,
    examples_from_input,
)
from mtrec.serving.manager import ModelManager, Servable
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


def _grpc_call(method: Any) -> Any:
    """Turn what a request can raise (``request_errors()``) into a gRPC status: a
    ServingError's own code, INTERNAL (logged) for the rest."""

    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except request_errors() as err:  # Anything else (a bug): grpcio logs it, answers
            # UNKNOWN ("Exception calling application") and the server keeps serving.
            error = as_serving_error(err)
            if error.code == grpc.StatusCode.INTERNAL:
                log.exception("internal error in %s", method.__name__)
            context.abort(error.code, error.message)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    @_grpc_call
    def Predict(self, request: Any, context: Any) -> Any:
        name, version, label = _requested(request.model_spec)
        inputs = {key: from_proto(key, proto) for key, proto in request.inputs.items()}
        servable, signature, outputs = self.inference.predict(
            name,
            version,
            label,
            request.model_spec.signature_name,
            inputs,
            list(request.output_filter),
        )
        response = predict_pb2.PredictResponse()
        _model_spec(response.model_spec, servable, signature)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(to_proto(value))
        return response

    @_grpc_call
    def Classify(self, request: Any, context: Any) -> Any:
        name, version, label = _requested(request.model_spec)
        servable, signature, outputs = self.inference.run_examples(
            name,
            version,
            label,
            request.model_spec.signature_name,
            F.CLASSIFY_METHOD,
            examples_from_input(request.input),
        )
        response = classification_pb2.ClassificationResponse()
        _model_spec(response.model_spec, servable, signature)
        for row in classifications(outputs):
            result = response.result.classifications.add()
            for label, score in row:
                klass = result.classes.add()
                if label is not None:
                    klass.label = label
                if score is not None:
                    klass.score = score
        return response

    @_grpc_call
    def Regress(self, request: Any, context: Any) -> Any:
        name, version, label = _requested(request.model_spec)
        servable, signature, outputs = self.inference.run_examples(
            name,
            version,
            label,
            request.model_spec.signature_name,
            F.REGRESS_METHOD,
            examples_from_input(request.input),
        )
        response = regression_pb2.RegressionResponse()
        _model_spec(response.model_spec, servable, signature)
        for value in np.asarray(outputs["outputs"]).reshape(-1):
            response.result.regressions.add(value=float(value))
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

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

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

        specs = config_lib.parse_model_config(
            text_format.MessageToString(request.config), "ReloadConfigRequest"
        )
        self.manager.reconfigure(specs)
        return model_management_pb2.ReloadConfigResponse()


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

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>predict|classify|regress)|(?P<metadata>/metadata))?$"
)


class RestHandler(BaseHTTPRequestHandler):
    """TF Serving's REST API on the same paths and JSON formats."""

    server: _RestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # Overrides the stdlib's name.
        log.debug("rest: " + format, *args)

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: ServingError) -> None:
        self._send(HTTP_STATUS.get(error.code, 500), {"error": error.message})

    def _route(self, verb_expected: bool) -> re.Match | None:
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None or bool(match["verb"]) != verb_expected:
            self._send(
                HTTPStatus.NOT_FOUND,
                {"error": f"Malformed request: {self.command} " f"{self.path}"},
            )
            return None
        return match

    def do_GET(self) -> None:
        match = self._route(verb_expected=False)
        if match is None:
            return
        manager = self.server.inference.manager
        try:
            version = int(match["version"]) if match["version"] else None
            if match["metadata"]:
                servable = manager.resolve(match["name"], version, match["label"])
                self._send(
                    HTTPStatus.OK,
                    {
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
                    },
                )
                return
            if match["label"]:
                version = manager.resolve(match["name"], None, match["label"]).version
            statuses = manager.statuses(match["name"], version)
            self._send(
                HTTPStatus.OK,
                {
                    "model_version_status": [
                        {
                            "version": str(s.version),
                            "state": s.state,
                            "status": {
                                "error_code": "UNKNOWN" if s.error else "OK",
                                "error_message": s.error,
                            },
                        }
                        for s in statuses
                    ]
                },
            )
        except request_errors() as err:  # Anything else (a bug): socketserver's handle_error
            # prints it and closes this one connection; the server keeps serving.
            self._error(as_serving_error(err))

    def do_POST(self) -> None:
        match = self._route(verb_expected=True)
        if match is None:
            return
        try:
            body = self._body()
            version = int(match["version"]) if match["version"] else None
            if match["verb"] == "predict":
                self._send(HTTPStatus.OK, self._predict(match, version, body))
            else:
                self._send(HTTPStatus.OK, self._examples(match, version, body))
        except request_errors() as err:  # Anything else (a bug): socketserver's handle_error
            # prints it and closes this one connection; the server keeps serving.
            error = as_serving_error(err)
            if error.code == grpc.StatusCode.INTERNAL:
                log.exception("internal error in REST %s", self.path)
            self._error(error)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.max_request_bytes:
            self.close_connection = True  # The body is left unread.
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {length} bytes exceeds the limit of "
                f"{self.server.max_request_bytes} bytes",
            )
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise invalid(f"JSON Parse error: {err}") from None
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        return body

    def _predict(self, match: re.Match, version: int | None, body: dict) -> dict:
        inference = self.server.inference
        servable = inference.manager.resolve(match["name"], version, match["label"])
        signature = body.get("signature_name") or F.SERVING_DEFAULT
        expected = signature_inputs(servable.signature(signature))
        inputs, row_format = parse_rest_inputs(body, expected)
        return rest_outputs(inference.predict_on(servable, signature, inputs), row_format)

    def _examples(self, match: re.Match, version: int | None, body: dict) -> dict:
        from mtrec.examples import to_example

        rows = body.get("examples")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise invalid("'examples' must be a list of objects")
        context = body.get("context") or {}
        examples = [to_example({**context, **row}) for row in rows]
        method = F.CLASSIFY_METHOD if match["verb"] == "classify" else F.REGRESS_METHOD
        _, _, outputs = self.server.inference.run_examples(
            match["name"], version, match["label"], body.get("signature_name", ""), method, examples
        )
        if method == F.REGRESS_METHOD:
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


class _RestServer(ThreadingHTTPServer):
    daemon_threads = False  # Shutdown waits for in-flight requests.
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], inference: Inference, max_request_bytes: int
    ) -> None:
        super().__init__(address, RestHandler)
        self.inference = inference
        self.max_request_bytes = max_request_bytes


# ----------------------------------------------------------------------------- server


class ModelServer:
    """The manager, the optional batcher, and the gRPC and REST front ends."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.manager = ModelManager(list(options.models), warmup=self._warmup)
        self.batcher = Batcher(options.batching) if options.batching else None
        self.inference = Inference(self.manager, self.batcher)
        self._grpc: grpc.Server | None = None
        self._rest: _RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.rest_port = 0

    def _warmup(self, servable: Servable) -> int:
        return replay_warmup(servable, Inference(self.manager))

    def start(self) -> ModelServer:
        """Load the models, then open the ports (0 picks a free port)."""
        self.manager.start(self.options.poll_seconds)
        limit = self.options.max_request_bytes
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(
                max_workers=self.options.grpc_workers, thread_name_prefix="grpc"
            ),
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 4 * limit),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.inference), self._grpc
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.manager), self._grpc
        )
        self.grpc_port = self._grpc.add_insecure_port(
            f"{self.options.host}:" f"{self.options.port}"
        )
        if not self.grpc_port:
            raise config_lib.ConfigError(
                f"cannot bind gRPC to {self.options.host}:" f"{self.options.port}"
            )
        self._grpc.start()
        if self.options.rest_api_port is not None:
            self._start_rest(self.options.rest_api_port)
        return self

    def _start_rest(self, port: int) -> None:
        try:
            self._rest = _RestServer(
                (self.options.host, port), self.inference, self.options.max_request_bytes
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
        """Stop taking requests, let in-flight ones finish, then release everything."""
        if self._grpc is not None:
            self._grpc.stop(grace).wait(grace + 1)
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()  # Joins the request threads.
        if self.batcher is not None:
            self.batcher.close()
        self.manager.stop()
