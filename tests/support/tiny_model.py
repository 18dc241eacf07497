"""A tiny SavedModel with mtrec's serving signatures and exact, known outputs, exported in
the tests (no training): rating = 1 + (user_id + item_id) mod 5 + offset,
click = sigmoid((user_id - item_id) / 10), purchase = click / 2."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from mtrec.examples import to_examples
from mtrec.models.export import METHOD_NAMES, set_method_names, write_warmup_requests

SPEC = {
    "user_id": tf.io.FixedLenFeature([1], tf.int64, default_value=[0]),
    "item_id": tf.io.FixedLenFeature([1], tf.int64, default_value=[0]),
    "gender": tf.io.FixedLenFeature([1], tf.string, default_value=[""]),
}


def expected(user_id: int, item_id: int, offset: float = 0.0) -> dict[str, float]:
    click = 1.0 / (1.0 + np.exp(-(user_id - item_id) / 10.0))
    return {"rating": 1.0 + (user_id + item_id) % 5 + offset, "click": click, "purchase": click / 2}


def export_tiny_model(path: Path, offset: float = 0.0, warmup_rows: list | None = None) -> Path:
    """Write the model to ``path`` (atomically: a version folder appears whole)."""
    module = tf.Module()

    def heads(user: tf.Tensor, item: tf.Tensor) -> dict[str, tf.Tensor]:
        u, i = tf.cast(user, tf.float32), tf.cast(item, tf.float32)
        click = tf.sigmoid((u - i) / 10.0)
        return {
            "rating": 1.0 + tf.math.floormod(u + i, 5.0) + offset,
            "click": click,
            "purchase": click / 2.0,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_default(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, SPEC)
        return heads(parsed["user_id"][:, 0], parsed["item_id"][:, 0])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="user_id"),
            tf.TensorSpec([None], tf.int64, name="item_id"),
            tf.TensorSpec([None], tf.string, name="gender"),
        ]
    )
    def predict_raw(
        user_id: tf.Tensor, item_id: tf.Tensor, gender: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        del gender
        return heads(user_id, item_id)

    inputs = [tf.TensorSpec([None], tf.string, name="inputs")]

    @tf.function(input_signature=inputs)
    def regress_rating(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": serving_default(inputs)["rating"]}

    @tf.function(input_signature=inputs)
    def classify_click(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        positive = serving_default(inputs)["click"]
        scores = tf.stack([1.0 - positive, positive], axis=1)
        return {
            "scores": scores,
            "classes": tf.broadcast_to(tf.constant([b"0", b"1"]), tf.shape(scores)),
        }

    module.serve = serving_default
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    tf.saved_model.save(
        module,
        str(staging),
        signatures={
            "serving_default": serving_default,
            "predict_raw": predict_raw,
            "regress_rating": regress_rating,
            "classify_click": classify_click,
        },
    )
    set_method_names(
        str(staging),
        {k: v for k, v in METHOD_NAMES.items() if k in ("regress_rating", "classify_click")},
    )
    write_warmup_requests(
        str(staging),
        to_examples(warmup_rows or [{"user_id": 1, "item_id": 2}, {"user_id": 3, "item_id": 4}]),
    )
    if path.exists():
        shutil.rmtree(path)
    staging.rename(path)
    return path
