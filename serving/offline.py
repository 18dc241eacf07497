"""Scoring and recommending with a pushed SavedModel in process (`mtrec score`,
`mtrec recommend`): the same signatures a server would call, over rows from files.

Rows are typed by the model's own raw feature spec (the input dtypes of its ``predict_raw``
and ``recommend`` signatures), never by how a value looks: a zip prefix "551" stays a string
and a year 1995.0 becomes the int64 1995. An absent, empty or NaN value takes
``names.MISSING_DEFAULTS``, as it does in the examples and in every request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mtrec import names as F
from mtrec.errors import DataError, MtrecError
from mtrec.serving.manager import version_folders

SCORE_BATCH = 4096
# The kinds of raw feature a model takes, by the name of the tf.DType.
INT, FLOAT, STRING = "int64", "float32", "string"
# The recommend signature's inputs that are options of the request, not features of a user.
RECOMMEND_OPTIONS = ("k", "exclude", "blend")
# Text a file may hold for a value that is not there (pandas writes NaN as "nan" or "").
MISSING_TEXT = ("", "nan")


def resolve_model_dir(path: str | Path) -> Path:
    """A version folder as is; a push base folder means its newest numbered version."""
    folder = Path(path)
    if (folder / F.SAVED_MODEL_FILE).is_file():
        return folder
    if not folder.exists():
        raise MtrecError(f"{folder}: no such model folder")
    if not folder.is_dir():
        raise MtrecError(f"{folder}: not a model folder (a SavedModel or a push folder)")
    versions = version_folders(folder)
    if not versions:
        raise MtrecError(f"{folder}: neither a SavedModel nor a folder of numbered versions")
    return versions[max(versions)]


def load(model_dir: str | Path) -> Any:
    """The SavedModel in ``model_dir``; one MtrecError naming the folder when it cannot be
    loaded (a corrupt saved_model.pb, missing variables) or is not an mtrec model."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    try:
        model = tf.saved_model.load(str(model_dir))
    except (OSError, ValueError, DecodeError, tf.errors.OpError) as err:
        text = getattr(err, "message", None) or str(err)
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise MtrecError(f"{model_dir}: not a loadable SavedModel ({first})") from None
    signatures = getattr(model, "signatures", {})
    if F.PREDICT_RAW not in signatures:
        raise MtrecError(f"{model_dir}: not an mtrec model: it has no '{F.PREDICT_RAW}' signature")
    return model


def _signature_spec(model: Any, name: str) -> dict[str, str]:
    specs = model.signatures[name].structured_input_signature[1]
    return {key: spec.dtype.name for key, spec in specs.items() if key not in RECOMMEND_OPTIONS}


# TF Serving's metadata names of the dtypes a raw feature can have.
SERVING_DTYPES = {"DT_INT64": INT, "DT_FLOAT": FLOAT, "DT_STRING": STRING}


def served_feature_spec(signatures: Mapping[str, Any]) -> dict[str, str] | None:
    """The raw feature spec of a served model, from its metadata (``predict_raw``'s input
    dtypes), or None when it has no such signature (not an mtrec model)."""
    raw = signatures.get(F.PREDICT_RAW)
    if raw is None:
        return None
    return {key: SERVING_DTYPES.get(dtype, dtype) for key, dtype in raw["inputs"].items()}


def raw_feature_spec(model: Any) -> dict[str, str]:
    """Each raw feature the model scores, with its kind ("int64", "float32" or "string"):
    the input dtypes of its ``predict_raw`` signature."""
    return _signature_spec(model, F.PREDICT_RAW)


def user_feature_spec(model: Any) -> dict[str, str]:
    """The raw user features the ``recommend`` signature takes, with their kinds."""
    if F.RECOMMEND not in model.signatures:
        raise MtrecError(
            f"the model has no '{F.RECOMMEND}' signature: export it with a newer mtrec"
        )
    return _signature_spec(model, F.RECOMMEND)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip().lower() in MISSING_TEXT
    if isinstance(value, list | tuple):
        return not value
    return False


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return int(value) if float(value).is_integer() else None
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _as_string(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):  # A JSON 551.0 means the text "551".
        return str(int(value)) if float(value).is_integer() else str(float(value))
    return None


KIND_WORDS = {INT: "an integer", FLOAT: "a number", STRING: "a string"}
CONVERTERS = {INT: _as_int, FLOAT: _as_float, STRING: _as_string}


def coerce_value(key: str, value: Any, kind: str, where: str) -> Any:
    """``value`` as the Python type of ``kind``; a missing one takes its MISSING_DEFAULTS."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        if key in F.JOINED_FEATURES and all(isinstance(v, str | bytes | int) for v in value):
            value = F.join_values(
                key,
                [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in value],
            )
        elif len(value) == 1:
            return coerce_value(key, value[0], kind, where)
        elif value:
            raise DataError(
                f"{where}, column '{key}': {len(value)} values {list(value)!r}; "
                "the model takes one"
            )
    if _is_missing(value):
        if key not in F.MISSING_DEFAULTS:
            raise DataError(f"{where}, column '{key}': a value is required, found none")
        value = F.MISSING_DEFAULTS[key]
    converter = CONVERTERS.get(kind)
    if converter is None:
        raise MtrecError(f"the model takes feature '{key}' as {kind}, which mtrec cannot fill")
    typed = converter(value)
    if typed is None:
        raise DataError(
            f"{where}, column '{key}': {value!r} is not {KIND_WORDS[kind]} "
            f"(the model reads {key} as {kind})"
        )
    if kind == INT and not F.INT64_MIN <= typed <= F.INT64_MAX:
        raise DataError(
            f"{where}, column '{key}': {value!r} is not a 64-bit integer "
            f"(the model reads {key} as {kind})"
        )
    return typed


def coerce_row(row: Mapping[str, Any], spec: Mapping[str, str], where: str) -> dict[str, Any]:
    """One row typed by ``spec`` (feature -> kind): every feature of the spec, each as the
    model reads it, and nothing else. ``where`` (e.g. "pairs.csv, row 3") starts each
    error's message."""
    return {key: coerce_value(key, row.get(key), kind, where) for key, kind in spec.items()}


def _column(rows: list[Mapping[str, Any]], key: str, kind: str) -> Any:
    import tensorflow as tf

    values = [row[key] for row in rows]
    if kind == STRING:
        return tf.constant([v.encode() for v in values], tf.string)
    return tf.constant(np.array(values, dtype=np.int64 if kind == INT else np.float32))


def score_rows(model: Any, rows: list[Mapping[str, Any]]) -> list[dict[str, float]]:
    """rating, click and purchase for each row, typed by ``coerce_row`` against
    ``raw_feature_spec(model)``, through the ``predict_raw`` signature."""
    signature = model.signatures[F.PREDICT_RAW]
    spec = raw_feature_spec(model)
    scores: list[dict[str, float]] = []
    for start in range(0, len(rows), SCORE_BATCH):
        chunk = rows[start : start + SCORE_BATCH]
        outputs = signature(**{key: _column(chunk, key, kind) for key, kind in spec.items()})
        values = {head: outputs[head].numpy().reshape(-1) for head in F.HEADS}
        scores += [{head: float(values[head][i]) for head in F.HEADS} for i in range(len(chunk))]
    return scores


def recommend_rows(
    model: Any,
    users: Iterable[Mapping[str, Any]],
    k: int,
    seen: Mapping[int, set[int]] | None = None,
) -> list[dict[str, Any]]:
    """Top-k rows (user_id, rank, item_id, score and the three heads) for every user, each
    typed by ``coerce_row`` against ``user_feature_spec(model)``."""
    import tensorflow as tf

    signature = model.signatures[F.RECOMMEND]
    spec = user_feature_spec(model)
    out = []
    for user in users:
        user_id = int(user[F.USER_ID])
        inputs = {key: _column([user], key, kind) for key, kind in spec.items()}
        inputs["k"] = tf.constant([k], tf.int64)
        inputs["exclude"] = tf.constant(sorted((seen or {}).get(user_id, ())), tf.int64)
        inputs["blend"] = tf.constant([], tf.float32)  # The model's own blend.
        result = {key: value.numpy() for key, value in signature(**inputs).items()}
        for rank, item in enumerate(result["item_id"], start=1):
            index = rank - 1
            out.append(
                {
                    "user_id": user_id,
                    "rank": rank,
                    "item_id": int(item),
                    "score": float(result["score"][index]),
                    **{head: float(result[head][index]) for head in F.HEADS},
                }
            )
    return out
