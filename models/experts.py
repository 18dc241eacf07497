"""Blocks that turn the shared input into one representation per task.

- ``SharedBottom``: one MLP; every task reads the same output.
- ``MMoE`` (multi-gate mixture of experts, Ma et al. 2018): shared experts, and one softmax
  gate per task that mixes them.
- ``PLE`` (progressive layered extraction, Tang et al. 2020): per level, task-specific and
  shared experts; each task's gate mixes its own and the shared experts, and a shared gate
  feeds the next level.

Every block maps a tensor to ``{task: tensor}`` and can report its gate weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from mtrec.models.layers import MLP, serializable


@serializable
class SharedBottom(tf_keras.layers.Layer):
    """One MLP shared by every task."""

    def __init__(
        self, tasks: Sequence[str], units: Sequence[int], dropout: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.tasks = list(tasks)
        self.units = list(units)
        self.dropout = dropout
        self.mlp = MLP(units, dropout, name="bottom")

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        shared = self.mlp(inputs, training=training)
        return {task: shared for task in self.tasks}

    def gate_weights(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """No gates: an empty dict."""
        del inputs
        return {}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "tasks": self.tasks,
            "units": self.units,
            "dropout": self.dropout,
        }


def _mix(gate: tf.Tensor, experts: list[tf.Tensor]) -> tf.Tensor:
    """sum_k gate[:, k] * expert_k: [batch, experts] x experts of [batch, d] -> [batch, d]."""
    return tf.einsum("be,bed->bd", gate, tf.stack(experts, axis=1))


@serializable
class MMoE(tf_keras.layers.Layer):
    """Shared experts mixed by one softmax gate per task."""

    def __init__(
        self,
        tasks: Sequence[str],
        num_experts: int = 4,
        expert_units: Sequence[int] = (64,),
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError("num_experts must be >= 1")
        self.tasks = list(tasks)
        self.num_experts = num_experts
        self.expert_units = list(expert_units)
        self.dropout = dropout
        self.experts = [MLP(expert_units, dropout, name=f"expert_{k}") for k in range(num_experts)]
        self.gates = {
            task: tf_keras.layers.Dense(num_experts, activation="softmax", name=f"gate_{task}")
            for task in self.tasks
        }

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        outputs = [expert(inputs, training=training) for expert in self.experts]
        return {task: _mix(self.gates[task](inputs), outputs) for task in self.tasks}

    def gate_weights(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Each task's mixture weights over the experts, [batch, num_experts]."""
        return {task: self.gates[task](inputs) for task in self.tasks}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "tasks": self.tasks,
            "num_experts": self.num_experts,
            "expert_units": self.expert_units,
            "dropout": self.dropout,
        }


@serializable
class PLE(tf_keras.layers.Layer):
    """Progressive layered extraction: ``levels`` customized gate control (CGC) layers."""

    def __init__(
        self,
        tasks: Sequence[str],
        levels: int = 1,
        shared_experts: int = 2,
        task_experts: int = 1,
        expert_units: Sequence[int] = (64,),
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if levels < 1 or shared_experts < 1 or task_experts < 1:
            raise ValueError("levels, shared_experts and task_experts must be >= 1")
        self.tasks = list(tasks)
        self.levels = levels
        self.shared_experts = shared_experts
        self.task_experts = task_experts
        self.expert_units = list(expert_units)
        self.dropout = dropout
        self.shared = [
            [MLP(expert_units, dropout, name=f"l{level}_shared_{k}") for k in range(shared_experts)]
            for level in range(levels)
        ]
        self.own = [
            {
                task: [
                    MLP(expert_units, dropout, name=f"l{level}_{task}_{k}")
                    for k in range(task_experts)
                ]
                for task in self.tasks
            }
            for level in range(levels)
        ]
        self.task_gates = [
            {
                task: tf_keras.layers.Dense(
                    task_experts + shared_experts,
                    activation="softmax",
                    name=f"l{level}_gate_{task}",
                )
                for task in self.tasks
            }
            for level in range(levels)
        ]
        # The shared gate mixes every expert for the next level (not after the last one).
        self.shared_gates = [
            tf_keras.layers.Dense(
                shared_experts + task_experts * len(self.tasks),
                activation="softmax",
                name=f"l{level}_gate_shared",
            )
            for level in range(levels - 1)
        ]

    def _levels(
        self, inputs: tf.Tensor, training: bool | None
    ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        task_inputs = {task: inputs for task in self.tasks}
        shared_input = inputs
        gates: dict[str, tf.Tensor] = {}
        for level in range(self.levels):
            shared = [e(shared_input, training=training) for e in self.shared[level]]
            own = {
                task: [e(task_inputs[task], training=training) for e in self.own[level][task]]
                for task in self.tasks
            }
            outputs = {}
            for task in self.tasks:
                gate = self.task_gates[level][task](task_inputs[task])
                gates[f"level{level}/{task}"] = gate
                outputs[task] = _mix(gate, own[task] + shared)
            if level < self.levels - 1:
                every = shared + [e for task in self.tasks for e in own[task]]
                gate = self.shared_gates[level](shared_input)
                gates[f"level{level}/shared"] = gate
                shared_input = _mix(gate, every)
            task_inputs = outputs
        return task_inputs, gates

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        return self._levels(inputs, training)[0]

    def gate_weights(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Every gate's mixture weights, keyed "level<i>/<task>" or "level<i>/shared"."""
        return self._levels(inputs, False)[1]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "tasks": self.tasks,
            "levels": self.levels,
            "shared_experts": self.shared_experts,
            "task_experts": self.task_experts,
            "expert_units": self.expert_units,
            "dropout": self.dropout,
        }
