"""How the server maps request errors onto gRPC status codes (and REST status codes), and
which exceptions each of its code paths turns into a status or a skipped version.

The server never catches bare ``Exception``. Each handler catches one of the tuples below,
which list what its code path can really raise; anything else is a bug, and the comment at
each handler says why the server (and the thread it runs in) still goes on.
"""

from __future__ import annotations

import functools

import grpc

from mtrec.errors import ConfigError, MtrecError, ServingError

__all__ = [
    "DECODE_ERRORS",
    "HTTP_STATUS",
    "ConfigError",
    "ServingError",
    "failed_precondition",
    "invalid",
    "load_errors",
    "not_found",
    "request_errors",
]


# How TF Serving's REST front end maps gRPC codes onto HTTP statuses (ToHTTPStatusCode in
# model_servers/http_server.cc). One deliberate difference: RESOURCE_EXHAUSTED, which only
# the server's request size limit raises here, is 413 Payload Too Large, not 429.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

ErrorTypes = tuple[type[BaseException], ...]

# What numpy and tf.make_ndarray raise on a malformed request value (a TensorProto or a
# JSON input):
# - ValueError: content that does not fit the shape, a negative or overflowing dimension,
#   bad base64 or UTF-8 (binascii.Error, UnicodeError and json.JSONDecodeError are
#   ValueErrors too);
# - TypeError: an unknown dtype enum, values of the wrong kind;
# - LookupError: a dtype numpy has no type for (DT_RESOURCE, DT_VARIANT: KeyError), a
#   missing index;
# - ArithmeticError: OverflowError casting a value into its dtype;
# - MemoryError: numpy's _ArrayMemoryError for the array a declared shape asks for;
# - RecursionError: values nested deeper than Python's recursion limit.
DECODE_ERRORS: ErrorTypes = (
    ValueError,
    TypeError,
    LookupError,
    ArithmeticError,
    MemoryError,
    RecursionError,
)


@functools.cache
def request_errors() -> ErrorTypes:
    """What decoding, running and encoding one request can raise (gRPC and REST handlers,
    the batch threads): a function because it names TensorFlow's error class, and this
    module is imported before TensorFlow is needed.

    - MtrecError: the server's own refusals (ServingError) and a ReloadConfigRequest's bad
      config (ConfigError);
    - tf.errors.OpError: a model op that fails on the request's data (out of memory, a
      failed check) beyond the InvalidArgumentError the inference layer already maps;
    - OSError: reading a REST body from a reset connection, a reload listing base paths;
    - google.protobuf.message.Error: DecodeError/EncodeError of request protos (examples,
      warmup records); google.protobuf.json_format.Error: a SignatureDef as JSON;
    - DECODE_ERRORS: numpy, TensorFlow and json on malformed values (above).
    """
    import tensorflow as tf
    from google.protobuf import json_format, message

    return (
        MtrecError,
        tf.errors.OpError,
        OSError,
        message.Error,
        json_format.Error,
        *DECODE_ERRORS,
    )


@functools.cache
def load_errors() -> ErrorTypes:
    """What loading and warming up one SavedModel version can raise, so that version is
    reported and skipped while the others keep serving.

    - request_errors(): the warmup replays requests through the request path, and it covers
      tf.saved_model.load's own failures too: OSError (an unparseable saved_model.pb, a
      missing variables file), tf.errors.OpError (a corrupt variables index or warmup
      file: DataLossError), ValueError/TypeError (an object graph it cannot rebuild),
      IndexError (truncated variable data), protobuf DecodeError (a bad warmup record);
    - RuntimeError: TensorFlow's loader reports an unreadable fingerprint, a missing
      MetaGraph or init op as RuntimeError (NotImplementedError is one too);
    - ImportError: a SavedModel that needs a module this server lacks (Keras optimizers);
    - AssertionError: tf.saved_model.load asserts on an inconsistent object graph.
    """
    return (*request_errors(), RuntimeError, ImportError, AssertionError)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)
