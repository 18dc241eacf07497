"""Build serialized tf.Examples from plain Python dicts, as the serving signature expects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import tensorflow as tf

from mtrec import names as F

Value = int | float | str | bytes | Sequence[int | float | str | bytes]


def to_feature(value: Value) -> tf.train.Feature:
    """One tf.train.Feature from a scalar or a list of int, float, str or bytes."""
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        raise ValueError("a feature needs at least one value; leave it out instead")
    if all(isinstance(v, bool | int) for v in values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, int | float) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    if all(isinstance(v, str | bytes) for v in values):
        return tf.train.Feature(
            bytes_list=tf.train.BytesList(
                value=[v.encode() if isinstance(v, str) else v for v in values]
            )
        )
    raise TypeError(f"unsupported feature values {values!r}")


def to_example(row: Mapping[str, Value]) -> bytes:
    """Serialize one request row; genres and history may be lists (``names.join_values``)."""
    features = {}
    for key, value in row.items():
        features[key] = to_feature(F.join_values(key, value))
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def to_examples(rows: Iterable[Mapping[str, Value]]) -> list[bytes]:
    """Serialize many rows."""
    return [to_example(row) for row in rows]
