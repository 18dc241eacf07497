"""What early stopping watches: the weighted selection loss, or each head's validation loss
relative to its first epoch's (``early_stopping: "balanced_loss"``)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtrec import names as F
from mtrec.models.hparams import ModelConfig
from mtrec.models.training import BalancedLoss, fit
from tests.support.training import CARDS, SMALL, transformed_batch

# Per epoch: the rating loss rises from epoch 2 while click and purchase still fall, as on
# the time split where the weighted loss kept epoch 1.
EPOCHS = [
    {"rating": 1.00, "click": 0.40, "purchase": 0.30},
    {"rating": 1.02, "click": 0.36, "purchase": 0.28},
    {"rating": 1.06, "click": 0.35, "purchase": 0.27},
    {"rating": 1.30, "click": 0.38, "purchase": 0.29},
]


def _logs(losses: dict[str, float]) -> dict[str, float]:
    logs = {f"val_{head}_loss": loss for head, loss in losses.items()}
    logs["val_selection_loss"] = sum(losses.values())
    return logs


def _drive(monitor: str) -> tuple[list[float], int]:
    """Runs BalancedLoss then EarlyStopping (patience 1) over EPOCHS; returns the balanced
    losses and the best epoch (1-based)."""
    balanced = BalancedLoss()
    stopping = tf_keras.callbacks.EarlyStopping(monitor=monitor, patience=1)
    stopping.model = tf_keras.Sequential()  # EarlyStopping sets model.stop_training.
    balanced.on_train_begin()
    stopping.on_train_begin()
    seen = []
    for epoch, losses in enumerate(EPOCHS):
        logs = _logs(losses)
        balanced.on_epoch_end(epoch, logs)
        stopping.on_epoch_end(epoch, logs)
        seen.append(logs["val_balanced_loss"])
        if stopping.model.stop_training:
            break
    return seen, stopping.best_epoch + 1


@pytest.mark.unit
def test_the_balanced_loss_is_the_mean_ratio_to_the_first_epoch_and_keeps_improving_heads():
    seen, best = _drive("val_balanced_loss")
    expected = [np.mean([EPOCHS[e][h] / EPOCHS[0][h] for h in F.HEADS]) for e in range(4)]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(1.0)
    assert best == 3  # (1.06 + 0.875 + 0.9) / 3 = 0.945, the lowest.
    # The weighted sum follows the rating loss: 1.70, 1.66, 1.68 -> epoch 2.
    assert _drive("val_selection_loss")[1] == 2


@pytest.mark.unit
def test_an_unknown_criterion_is_refused_by_name():
    with pytest.raises(ValueError) as error:
        ModelConfig(early_stopping="val_auc")
    assert str(error.value) == (
        "early_stopping must be one of ('selection_loss', 'balanced_loss'), got 'val_auc'"
    )
    assert ModelConfig.from_dict({"early_stopping": "balanced_loss"}).early_stopping == (
        "balanced_loss"
    )


@pytest.mark.unit
def test_fit_records_the_balanced_loss_per_epoch_from_the_heads_validation_losses():
    config = dataclasses.replace(SMALL, epochs=3, early_stopping="balanced_loss")
    data = tf.data.Dataset.from_tensors(transformed_batch(64, 0))
    _, history = fit(data, data, CARDS, config)
    ratios = np.mean(
        [np.array(history[f"val_{h}_loss"]) / history[f"val_{h}_loss"][0] for h in F.HEADS],
        axis=0,
    )
    np.testing.assert_allclose(history["val_balanced_loss"], ratios, rtol=1e-6)
    assert history["val_balanced_loss"][0] == pytest.approx(1.0)


@pytest.mark.unit
def test_learning_rate_decay_sets_each_epochs_rate_and_is_refused_out_of_range():
    config = dataclasses.replace(SMALL, epochs=3, learning_rate=0.004, learning_rate_decay=0.5)
    data = tf.data.Dataset.from_tensors(transformed_batch(64, 0))
    model, history = fit(data, data, CARDS, config)
    np.testing.assert_allclose(history["lr"], [0.004, 0.002, 0.001], rtol=1e-6)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.001)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError) as error:
            ModelConfig(learning_rate_decay=bad)
        assert str(error.value) == "learning_rate_decay must be in (0, 1]"
