"""MMoE, PLE, ESMM and uncertainty weighting on tiny synthetic batches."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtrec import names as F
from mtrec.models.experts import PLE, MMoE, SharedBottom
from mtrec.models.hparams import ExpertConfig, ModelConfig
from mtrec.models.training import build_model, fit
from tests.support.training import CARDS, SMALL, transformed_batch

EXPERTS = ExpertConfig(num_experts=3, shared_experts=2, task_experts=1, levels=2, units=(8,))


def config(**changes) -> ModelConfig:
    return ModelConfig(**{**SMALL.to_dict(), "experts": EXPERTS, **changes})


@pytest.mark.parametrize("architecture", ["mmoe", "ple"])
def test_gates_are_distributions_over_the_experts(architecture):
    model = build_model(CARDS, config(architecture=architecture))
    gates = model.gate_weights(transformed_batch(16))
    expected = (
        {f"{task}" for task in F.HEADS}
        if architecture == "mmoe"
        else {f"level{level}/{task}" for level in (0, 1) for task in F.HEADS} | {"level0/shared"}
    )
    assert set(gates) == expected
    for gate in gates.values():
        values = gate.numpy()
        assert values.shape[0] == 16 and np.all(values >= 0)
        np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=1e-5)
    if architecture == "mmoe":
        assert gates[F.RATING].shape[1] == EXPERTS.num_experts
    else:  # A task gate mixes its own experts and the shared ones; the shared gate, all.
        assert gates[f"level0/{F.CLICK}"].shape[1] == 1 + 2
        assert gates["level0/shared"].shape[1] == 2 + 1 * len(F.HEADS)


@pytest.mark.parametrize("architecture", ["mmoe", "ple"])
def test_every_expert_and_gate_receives_gradients(architecture):
    model = build_model(CARDS, config(architecture=architecture))
    batch = transformed_batch(32)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    block = model.sharing
    variables = block.trainable_variables
    gradients = tape.gradient(loss, variables)
    kernels = [(v.name, g) for v, g in zip(variables, gradients, strict=True) if "kernel" in v.name]
    assert len(kernels) >= (
        EXPERTS.num_experts + len(F.HEADS)
        if architecture == "mmoe"
        else 2 * (2 + len(F.HEADS)) + 2 * len(F.HEADS) + 1
    )
    for name, gradient in kernels:
        assert gradient is not None, name
        assert float(tf.reduce_sum(tf.abs(gradient))) > 0, name


def test_esmm_purchase_is_click_times_conversion_and_never_above_click():
    model = build_model(CARDS, config(esmm=True), priors={F.CLICK: 0.2, F.PURCHASE: 0.1})
    outputs = model(transformed_batch(64), training=False)
    click, purchase = outputs[F.CLICK].numpy(), outputs[F.PURCHASE].numpy()
    assert np.all(purchase <= click + 1e-7) and np.all(purchase > 0)
    # The conversion tower starts at p(purchase | click) = 0.1 / 0.2.
    assert np.mean(purchase / click) == pytest.approx(0.5, abs=0.15)


def test_uncertainty_weights_are_trainable_change_and_are_logged_per_epoch():
    dataset = tf.data.Dataset.from_tensors(transformed_batch(64, seed=3)).repeat(4)
    model, history = fit(
        dataset, None, CARDS, config(loss_balancing="uncertainty", epochs=4, learning_rate=0.05)
    )
    assert any(v is model.log_variances for v in model.trainable_variables)
    assert not np.allclose(model.log_variances.numpy(), 0.0)
    for head in F.HEADS:
        weights = history[f"{head}_weight"]
        assert len(weights) == 4 and weights[0] != pytest.approx(weights[-1])
    # Fixed weighting logs the configured weights and has nothing to learn.
    fixed, history = fit(
        dataset, None, CARDS, config(epochs=1, rating_loss_weight=0.5, loss_balancing="fixed")
    )
    assert fixed.log_variances is None
    assert history["rating_weight"] == [pytest.approx(0.5)]


@pytest.mark.parametrize(
    "layer",
    [
        SharedBottom(F.HEADS, (8,), 0.1),
        MMoE(F.HEADS, 3, (8,), 0.1),
        PLE(F.HEADS, 2, 2, 1, (8,), 0.1),
    ],
)
def test_sharing_blocks_round_trip_through_their_config(layer):
    inputs = tf.random.normal([5, 12], seed=1)
    outputs = layer(inputs)
    clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
    clone(inputs)
    clone.set_weights(layer.get_weights())
    for task in F.HEADS:
        np.testing.assert_allclose(clone(inputs)[task].numpy(), outputs[task].numpy(), rtol=1e-6)
    assert type(clone).__name__ == type(layer).__name__


def test_architecture_options_are_checked():
    with pytest.raises(ValueError, match="architecture must be one of"):
        ModelConfig(architecture="moe")
    with pytest.raises(ValueError, match="experts.levels must be >= 1"):
        ExpertConfig(levels=0)
    round_trip = ModelConfig.from_dict(config(architecture="ple").to_dict())
    assert round_trip.experts == EXPERTS and round_trip.architecture == "ple"
