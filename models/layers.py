"""Small building blocks shared by the model and the expert blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

# Every custom class is registered as "mtrec>Name", so saved configs reload.
serializable = tf_keras.utils.register_keras_serializable(package="mtrec")


@serializable
class MLP(tf_keras.layers.Layer):
    """Dense ReLU layers, each followed by dropout when ``dropout`` > 0."""

    def __init__(self, units: Sequence[int], dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = list(units)
        self.dropout = dropout
        self.stack = []
        for width in self.units:
            self.stack.append(tf_keras.layers.Dense(width, activation="relu"))
            if dropout:
                self.stack.append(tf_keras.layers.Dropout(dropout))

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = inputs
        for layer in self.stack:
            x = layer(x, training=training)
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "dropout": self.dropout}
