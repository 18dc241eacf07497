"""A small typed client for TF Serving's gRPC API (REST optional), for mtrec's models.

``predict(rows)`` takes plain dicts of features and returns one dict of head scores per row.
It reads the model's signature once (GetModelMetadata) and builds what it takes: serialized
tf.Examples for ``serving_default``, or one tensor per feature for ``predict_raw``. It works
unchanged against ``tensorflow_model_server`` and against ``mtrec serve``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from mtrec import names as F
from mtrec.errors import ServingError

T = TypeVar("T")


class ServingClientError(ServingError):
    """A request the server refused or could not answer: ``code`` names the gRPC status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, prefix=f"{code}: ")


@dataclasses.dataclass(frozen=True)
class Retry:
    """Retries for UNAVAILABLE (a server starting, restarting or shedding load)."""

    attempts: int = 3
    backoff_seconds: float = 0.2


class ServingClient:
    """Talks to one model on a TF Serving compatible server."""

    def __init__(
        self,
        target: str = "localhost:8500",
        model_name: str = "mtrec",
        version: int | None = None,
        protocol: str = "grpc",
        timeout_seconds: float = 10.0,
        retry: Retry | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if protocol not in ("grpc", "rest"):
            raise ValueError("protocol must be 'grpc' or 'rest'")
        self.credentials = credentials  # TLS for gRPC (a server with --ssl_config_file).
        self.target = target
        self.model_name = model_name
        self.version = version
        self.protocol = protocol
        self.timeout = timeout_seconds
        self.retry = retry or Retry()
        self._channel: grpc.Channel | None = None
        self._signatures: dict[str, Any] | None = None

    # ------------------------------------------------------------------------- public

    def predict(
        self, rows: Sequence[Mapping[str, Any]], signature_name: str = F.SERVING_DEFAULT
    ) -> list[dict[str, float]]:
        """Per-head scores for each row of raw features (ids plus any side features)."""
        if not rows:
            return []
        inputs = self._build_inputs(rows, signature_name)
        outputs = self.predict_tensors(inputs, signature_name)
        return [
            {head: _scalar(values[i]) for head, values in outputs.items()} for i in range(len(rows))
        ]

    def recommend(
        self,
        user: Mapping[str, Any],
        k: int = 10,
        exclude: Sequence[int] = (),
        blend: Sequence[float] | None = None,
    ) -> dict[str, list]:
        """Top-k items for ``user`` (id and/or features), leaving out ``exclude``; ``blend``
        overrides the export's (rating, click, purchase) ranking weights. Needs a model
        that exports a ``recommend`` signature."""
        signature = self.signatures().get(F.RECOMMEND)
        if signature is None:
            raise ServingClientError(
                "FAILED_PRECONDITION",
                f"model '{self.model_name}' has no "
                f"'{F.RECOMMEND}' signature (export a model with one)",
            )
        special = {"k": [k], "exclude": list(exclude), "blend": list(blend or [])}
        inputs = {}
        for name, dtype in signature["inputs"].items():
            numpy_type, default = _DTYPES.get(dtype, (object, b""))
            values = (
                special[name] if name in special else [F.join_values(name, user.get(name, default))]
            )
            if numpy_type is object:
                values = [v.encode() if isinstance(v, str) else v for v in values]
            inputs[name] = np.array(values, dtype=numpy_type)
        outputs = self.predict_tensors(inputs, F.RECOMMEND)
        return {name: np.asarray(value).reshape(-1).tolist() for name, value in outputs.items()}

    def status(self) -> list[dict[str, Any]]:
        """[{version, state, error}] for every version the server knows."""
        if self.protocol == "rest":
            body = self._rest("GET", self._rest_path())
            return [
                {
                    "version": int(v["version"]),
                    "state": v["state"],
                    "error": v.get("status", {}).get("error_message", ""),
                }
                for v in body["model_version_status"]
            ]
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec)
        stub = model_service_pb2_grpc.ModelServiceStub(self._grpc_channel())
        response = self._call(lambda: stub.GetModelStatus(request, timeout=self.timeout))
        states = get_model_status_pb2.ModelVersionStatus.State
        return [
            {"version": s.version, "state": states.Name(s.state), "error": s.status.error_message}
            for s in response.model_version_status
        ]

    def metadata(self) -> dict[str, Any]:
        """{"version": served version, "signatures": {name: {"inputs": {name: dtype},
        "outputs": {name: dtype}, "method": ...}}}."""
        if self.protocol == "rest":
            body = self._rest("GET", self._rest_path() + "/metadata")
            defs = body["metadata"]["signature_def"]["signature_def"]
            signatures = {
                name: {
                    "method": d.get("method_name", ""),
                    "inputs": {k: v.get("dtype", "") for k, v in d.get("inputs", {}).items()},
                    "outputs": {k: v.get("dtype", "") for k, v in d.get("outputs", {}).items()},
                }
                for name, d in defs.items()
            }
            return {"version": int(body["model_spec"]["version"]), "signatures": signatures}
        from tensorflow.core.framework import types_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._fill_spec(request.model_spec)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(self._grpc_channel())
        response = self._call(lambda: stub.GetModelMetadata(request, timeout=self.timeout))
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        name_of = types_pb2.DataType.Name
        signatures = {
            name: {
                "method": d.method_name,
                "inputs": {k: name_of(v.dtype) for k, v in d.inputs.items()},
                "outputs": {k: name_of(v.dtype) for k, v in d.outputs.items()},
            }
            for name, d in defs.signature_def.items()
        }
        return {"version": response.model_spec.version.value, "signatures": signatures}

    def signatures(self) -> dict[str, Any]:
        """The model's signatures (cached after the first call)."""
        if self._signatures is None:
            self._signatures = self.metadata()["signatures"]
        return self._signatures

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------- internals

    def _build_inputs(
        self, rows: Sequence[Mapping[str, Any]], signature_name: str
    ) -> dict[str, np.ndarray]:
        """What the signature takes: serialized tf.Examples, or one tensor per feature."""
        from mtrec.examples import to_examples

        signature = self.signatures().get(signature_name)
        if signature is None:
            raise ServingClientError(
                "NOT_FOUND", f"model '{self.model_name}' has no " f"signature '{signature_name}'"
            )
        inputs = signature["inputs"]
        if set(inputs) == {"examples"} or set(inputs) == {"inputs"}:
            return {next(iter(inputs)): np.array(to_examples(rows), dtype=object)}
        unknown = sorted({k for row in rows for k in row} - set(inputs))
        if unknown:
            raise ServingClientError(
                "INVALID_ARGUMENT",
                f"feature '{unknown[0]}' is not an " f"input of signature '{signature_name}'",
            )
        columns = {}
        for name, dtype in inputs.items():
            numpy_type, default = _DTYPES.get(dtype, (object, b""))
            values = [row.get(name, default) for row in rows]
            if numpy_type is object:
                values = [v.encode() if isinstance(v, str) else v for v in values]
            columns[name] = np.array(values, dtype=numpy_type)
        return columns

    def predict_tensors(
        self, inputs: Mapping[str, np.ndarray], signature_name: str = F.SERVING_DEFAULT
    ) -> dict[str, np.ndarray]:
        """Predict on ready-made input arrays (the signature's own input names)."""
        if self.protocol == "rest":
            body = {
                "signature_name": signature_name,
                "inputs": {k: _json_column(v) for k, v in inputs.items()},
            }
            outputs = self._rest("POST", self._rest_path() + ":predict", body)["outputs"]
            return {k: np.asarray(v) for k, v in outputs.items()}
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec)
        request.model_spec.signature_name = signature_name
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(self._grpc_channel())
        response = self._call(lambda: stub.Predict(request, timeout=self.timeout))
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def _fill_spec(self, spec: Any) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version

    def _grpc_channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = (
                grpc.secure_channel(self.target, self.credentials)
                if self.credentials is not None
                else grpc.insecure_channel(self.target)
            )
        return self._channel

    def _call(self, send: Callable[[], T]) -> T:
        """One gRPC call with retries on UNAVAILABLE; other failures raise at once."""
        for attempt in range(self.retry.attempts):
            try:
                return send()
            except grpc.RpcError as err:
                code = err.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt + 1 < self.retry.attempts:
                    time.sleep(self.retry.backoff_seconds * (2**attempt))
                    continue
                raise ServingClientError(code.name, err.details() or "") from None
        raise AssertionError("unreachable")

    def _rest_path(self) -> str:
        path = f"http://{self.target}/v1/models/{self.model_name}"
        return path + (f"/versions/{self.version}" if self.version is not None else "")

    def _rest(self, method: str, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(self.retry.attempts):
            request = urllib.request.Request(
                url, data=data, method=method, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                message = _rest_error(err)
                if err.code == 503 and attempt + 1 < self.retry.attempts:
                    time.sleep(self.retry.backoff_seconds * (2**attempt))
                    continue
                raise ServingClientError(_HTTP_CODES.get(err.code, "UNKNOWN"), message) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                if attempt + 1 < self.retry.attempts:
                    time.sleep(self.retry.backoff_seconds * (2**attempt))
                    continue
                raise ServingClientError("UNAVAILABLE", str(err)) from None
        raise AssertionError("unreachable")


_DTYPES: dict[str, tuple[Any, Any]] = {
    "DT_STRING": (object, b""),
    "DT_INT64": (np.int64, 0),
    "DT_INT32": (np.int32, 0),
    "DT_FLOAT": (np.float32, 0.0),
    "DT_DOUBLE": (np.float64, 0.0),
}
_HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    500: "INTERNAL",
}


def _rest_error(err: urllib.error.HTTPError) -> str:
    try:
        return json.loads(err.read()).get("error", err.reason)
    except (ValueError, AttributeError):
        return str(err.reason)


def _json_column(value: np.ndarray) -> Any:
    if value.dtype == object:
        return [{"b64": base64.b64encode(v).decode("ascii")} for v in value.tolist()]
    return value.tolist()


def _scalar(value: Any) -> float:
    array = np.asarray(value).reshape(-1)
    return float(array[0])
