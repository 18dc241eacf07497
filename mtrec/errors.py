"""mtrec's one error family. The CLI reports an ``MtrecError`` (and TensorFlow's input errors)
as one line, ``mtrec: error: ...``, with exit code 2."""

from __future__ import annotations


class MtrecError(Exception):
    """A problem the user can fix; its message names the file or setting at fault."""


class DataError(MtrecError):
    """Input data is missing, malformed or out of range."""


class ConfigError(MtrecError):
    """A bad option, model config, batching file or server flag."""


class PipelineError(MtrecError):
    """A pipeline component refused to go on, e.g. on data anomalies or a serving mismatch."""


class ServingError(MtrecError):
    """A request a server refused or could not answer, with its gRPC status ``code`` (a
    ``grpc.StatusCode`` on the server, its name on the client)."""

    def __init__(self, code: object, message: str, prefix: str = "") -> None:
        super().__init__(f"{prefix}{message}")
        self.code = code
        self.message = message
