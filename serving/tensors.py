"""Request tensors: checked against a signature, converted to and from TensorProto and
TF Serving's REST JSON (row ``instances`` and columnar ``inputs``)."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mtrec.serving.errors import DECODE_ERRORS, invalid


def signature_inputs(function: Any) -> dict[str, Any]:
    """name -> tf.TensorSpec of a concrete function's keyword inputs."""
    return dict(function.structured_input_signature[1])


def check_inputs(
    signature_name: str, function: Any, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every input named, typed and shaped as the signature says, else INVALID_ARGUMENT
    naming the offending input."""
    import tensorflow as tf

    expected = signature_inputs(function)
    unknown = sorted(set(inputs) - set(expected))
    if unknown:
        raise invalid(
            f"input '{unknown[0]}' is not in signature '{signature_name}', which "
            f"takes: {', '.join(sorted(expected))}"
        )
    missing = sorted(set(expected) - set(inputs))
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        raise invalid(
            f"input {names} of signature '{signature_name}' is missing"
            if len(missing) == 1
            else f"inputs {names} of signature '{signature_name}' are missing"
        )
    checked = {}
    for name, spec in expected.items():
        value = inputs[name]
        if spec.dtype == tf.string:
            if value.dtype.kind not in "SOU":
                raise invalid(f"input '{name}' must be DT_STRING, got {_dtype_name(value)}")
            value = value.astype(object)
        else:
            if value.dtype.kind in "SOU":
                raise invalid(f"input '{name}' must be {spec.dtype.name.upper()}, got strings")
            if value.dtype != spec.dtype.as_numpy_dtype:  # No silent casts: TF Serving
                # refuses an int32 tensor for an int64 input (INVALID_ARGUMENT).
                raise invalid(
                    f"input '{name}' must be {_tf_name(spec.dtype)}, got " f"{_dtype_name(value)}"
                )
        if not spec.shape.is_compatible_with(value.shape):
            raise invalid(
                f"input '{name}' must have shape {_shape(spec.shape)}, got " f"{list(value.shape)}"
            )
        checked[name] = value
    return checked


def _shape(shape: Any) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


def _tf_name(dtype: Any) -> str:
    return f"DT_{dtype.name.upper()}"


def _dtype_name(value: np.ndarray) -> str:
    import tensorflow as tf

    if value.dtype.kind in "SOU":
        return "DT_STRING"
    return _tf_name(tf.as_dtype(value.dtype))


# ----------------------------------------------------------------------------- TensorProto


_STRING, _FLOAT, _INT64 = 7, 1, 9  # tensorflow.DataType enum values.
_NUMPY_OF = {_FLOAT: np.float32, _INT64: np.int64}


def from_proto(name: str, proto: Any) -> np.ndarray:
    """A TensorProto as an array (fast paths for the request shapes clients send)."""
    import tensorflow as tf

    shape = [d.size for d in proto.tensor_shape.dim]
    try:
        if proto.dtype == _STRING and len(proto.string_val) == math.prod(shape):
            return np.array(proto.string_val, dtype=object).reshape(shape)
        if proto.dtype in _NUMPY_OF and proto.tensor_content:
            return np.frombuffer(proto.tensor_content, _NUMPY_OF[proto.dtype]).reshape(shape)
        return tf.make_ndarray(proto)
    except DECODE_ERRORS as err:  # A malformed TensorProto (see DECODE_ERRORS).
        raise invalid(f"input '{name}' is not a valid TensorProto: {err}") from None


# numpy kind+size -> (DataType enum, the TensorProto field Tensor::AsProtoField fills).
_TYPED_FIELDS = {
    np.dtype(np.float32): (1, "float_val"),
    np.dtype(np.float64): (2, "double_val"),
    np.dtype(np.int32): (3, "int_val"),
    np.dtype(np.uint8): (4, "int_val"),
    np.dtype(np.int16): (5, "int_val"),
    np.dtype(np.int8): (6, "int_val"),
    np.dtype(np.int64): (9, "int64_val"),
    np.dtype(np.bool_): (10, "bool_val"),
    np.dtype(np.uint16): (17, "int_val"),
    np.dtype(np.uint32): (22, "uint32_val"),
    np.dtype(np.uint64): (23, "uint64_val"),
}


def to_proto(value: np.ndarray) -> Any:
    """An output array as a TensorProto with typed value fields (float_val, int64_val,
    string_val, ...), as TF Serving's Predict serializes outputs (Tensor::AsProtoField,
    predict_util.cc's default), so ``outputs[k].float_val`` reads the values."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    value = np.asarray(value)
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape]
    )
    typed = _TYPED_FIELDS.get(value.dtype)
    if typed is not None:
        dtype, field = typed
        proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape)
        getattr(proto, field).extend(value.reshape(-1).tolist())
        return proto
    if value.dtype == np.float16:  # half_val holds the raw 16-bit patterns.
        proto = tensor_pb2.TensorProto(dtype=19, tensor_shape=shape)
        proto.half_val.extend(value.view(np.uint16).reshape(-1).tolist())
        return proto
    if value.dtype == object or value.dtype.kind in "SU":
        proto = tensor_pb2.TensorProto(dtype=_STRING, tensor_shape=shape)
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in value.reshape(-1).tolist()
        )
        return proto
    return tf.make_tensor_proto(value)  # Complex: TensorFlow's own encoding.


# ----------------------------------------------------------------------------- REST JSON


def _json_array(name: str, value: Any, dtype: Any) -> np.ndarray:
    """One input's JSON value as an array; ``{"b64": ...}`` decodes to bytes."""
    import tensorflow as tf

    def decode(item: Any) -> Any:
        if isinstance(item, dict):
            if set(item) != {"b64"}:
                raise invalid(f"input '{name}': an object value must be {{\"b64\": ...}}")
            try:
                return base64.b64decode(item["b64"], validate=True)
            except ValueError:
                raise invalid(f"input '{name}': invalid base64") from None
        if isinstance(item, list):
            return [decode(i) for i in item]
        return item.encode() if isinstance(item, str) else item

    decoded = decode(value)
    if dtype is not None and dtype == tf.string:
        array = np.array(decoded, dtype=object)
        if array.dtype != object or any(not isinstance(v, bytes) for v in array.flat):
            raise invalid(f"input '{name}' must be DT_STRING, got non-string values")
        return array
    try:
        array = np.array(decoded)
    except ValueError:
        array = None  # Ragged; unless it also holds an integer out of range (below).
    if dtype is not None and dtype.is_integer and _may_be_outside(array, dtype):
        # Walked only then, off the common path: the first value, as TF Serving's
        # json_tensor.cc reads them, and its TypeError's words.
        outside = _first_outside(decoded, np.iinfo(dtype.as_numpy_dtype))
        if outside is not None:
            raise invalid(
                f"JSON Value: {outside} Type: Number is not of expected type: {dtype.name}"
            )
    if array is None or array.dtype == object:
        raise invalid(f"input '{name}': ragged or mixed values")
    if dtype is not None and array.dtype.kind in "biuf":
        # JSON numbers take the signature's type, as TF Serving's json_tensor.cc reads them
        # (an integer into a float input, not a fraction into an integer input).
        target = np.dtype(dtype.as_numpy_dtype)
        if (
            array.size == 0  # An empty list ([], e.g. recommend's exclude) has no type of its own.
            or np.can_cast(array.dtype, target, casting="same_kind")
            or (array.dtype.kind in "biu" and target.kind in "iuf")
        ):
            array = array.astype(target)
    return array


def _may_be_outside(array: np.ndarray | None, dtype: Any) -> bool:
    """Whether an integer input's values may not fit its type: numpy could not hold them in
    a plain array (ragged, or past 64 bits), or its integers reach past the type's range."""
    if array is None or array.dtype == object:
        return True
    if array.dtype.kind not in "iu" or not array.size:
        return False
    limits = np.iinfo(dtype.as_numpy_dtype)
    return int(array.min()) < limits.min or int(array.max()) > limits.max


def _first_outside(decoded: Any, limits: np.iinfo) -> int | None:
    """The first JSON integer in ``decoded`` (nested lists) outside ``limits``, if any."""
    pending = [decoded]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        elif isinstance(item, int) and not isinstance(item, bool):
            if not limits.min <= item <= limits.max:
                return item
    return None


def parse_rest_inputs(
    body: Mapping[str, Any], expected: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], bool]:
    """A REST predict body as named arrays, and whether it was in row format."""
    if ("instances" in body) == ("inputs" in body):
        raise invalid(
            "the request body needs exactly one of 'instances' (row format) and "
            "'inputs' (columnar format)"
        )
    if "inputs" in body:
        columns = body["inputs"]
        if not isinstance(columns, dict):
            if len(expected) != 1:
                raise invalid("'inputs' must be an object keyed by input name")
            columns = {next(iter(expected)): columns}
        return {k: _json_array(k, v, _dtype_of(expected, k)) for k, v in columns.items()}, False
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise invalid("'instances' must be a non-empty list")
    if not isinstance(rows[0], dict) or (len(expected) == 1 and set(rows[0]) == {"b64"}):
        only = next(iter(expected))
        return {only: _json_array(only, rows, _dtype_of(expected, only))}, True
    names = set(rows[0])
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) != names:
            raise invalid(
                f"instance {index} has different keys than instance 0; every "
                "instance needs the same named inputs"
            )
    return {
        k: _json_array(k, [row[k] for row in rows], _dtype_of(expected, k)) for k in sorted(names)
    }, True


def _dtype_of(expected: Mapping[str, Any], name: str) -> Any:
    spec = expected.get(name)
    return None if spec is None else spec.dtype


def to_json_value(value: np.ndarray) -> Any:
    """An output array as JSON: bytes that are not UTF-8 text become ``{"b64": ...}``."""
    if value.dtype == object or value.dtype.kind == "S":

        def encode(item: Any) -> Any:
            if isinstance(item, bytes):
                try:
                    return item.decode("utf-8")
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(item).decode("ascii")}
            return item

        return np.vectorize(encode, otypes=[object])(value).tolist() if value.size else []
    if value.dtype.kind == "f":
        return (
            np.where(np.isfinite(value), value, None).tolist()
            if not np.isfinite(value).all()
            else value.tolist()
        )
    return value.tolist()


def rest_outputs(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """TF Serving's REST response: ``predictions`` (rows) or ``outputs`` (columns)."""
    if not row_format:
        if len(outputs) == 1:
            return {"outputs": to_json_value(next(iter(outputs.values())))}
        return {"outputs": {k: to_json_value(v) for k, v in outputs.items()}}
    if len(outputs) == 1:
        return {"predictions": to_json_value(next(iter(outputs.values())))}
    columns = {k: to_json_value(v) for k, v in outputs.items()}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{k: columns[k][i] for k in columns} for i in range(rows)]}
