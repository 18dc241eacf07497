"""Model unit tests on hand-made transformed features (no Transform run needed)."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtrec import names as F
from mtrec.models.hparams import ModelConfig
from mtrec.models.model import (
    MLP,
    HistoryAttention,
    MaskedMeanSquaredError,
    MeanBinaryCrossentropy,
    MultiTaskRecommender,
    SideEncoder,
    Tower,
)
from mtrec.models.recommend import collect_catalog
from mtrec.models.training import build_model, catalog_items, fit, label_priors
from tests.support.training import CARDS, SMALL, transformed_batch

LISTWISE = dataclasses.replace(SMALL, click_listwise_weight=1.0)
MIXED = dataclasses.replace(
    SMALL, retrieval=dataclasses.replace(SMALL.retrieval, negatives="mixed")
)
CATALOG = dataclasses.replace(
    SMALL, retrieval=dataclasses.replace(SMALL.retrieval, negatives="catalog")
)
# Item vocabulary tokens for collect_catalog: index i is raw item id 100 + i; the last of
# CARDS' item buckets is the OOV one.
ITEM_VOCABULARY = [str(100 + i).encode() for i in range(CARDS["item_id_xf"] - 1)]


def test_masked_rating_loss_ignores_non_interactions():
    y_true = tf.constant([4.0, 0.0, 2.0, 0.0])
    y_pred = tf.constant([3.0, 5.0, 2.5, 1.0])
    weight = tf.constant([1.0, 0.0, 1.0, 0.0])
    # Hand-computed over the two observed ratings only: ((4-3)^2 + (2-2.5)^2) / 2.
    assert float(MaskedMeanSquaredError()(y_true, y_pred, weight)) == pytest.approx(0.625)
    # Changing the prediction of a non-interaction changes nothing.
    moved = tf.constant([3.0, -40.0, 2.5, 9.0])
    assert float(MaskedMeanSquaredError()(y_true, moved, weight)) == pytest.approx(0.625)
    assert float(MaskedMeanSquaredError()(y_true, y_pred, tf.zeros(4))) == 0.0


def test_binary_loss_is_the_plain_mean_cross_entropy():
    y_true, y_pred = tf.constant([1.0, 0.0, 1.0]), tf.constant([0.8, 0.4, 0.5])
    expected = -(np.log(0.8) + np.log(0.6) + np.log(0.5)) / 3
    assert float(MeanBinaryCrossentropy()(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)


def test_outputs_are_one_score_per_head_per_example():
    model = MultiTaskRecommender(CARDS, SMALL)
    outputs = model(transformed_batch(5))
    assert set(outputs) == set(F.HEADS)
    for head in F.HEADS:
        assert outputs[head].shape == (5,)
    for head in F.BINARY_HEADS:
        assert np.all((outputs[head].numpy() > 0) & (outputs[head].numpy() < 1))


def test_metric_names_per_head_are_exact():
    model = build_model(CARDS, SMALL)
    dataset = tf.data.Dataset.from_tensors(transformed_batch(32))
    logs = model.evaluate(dataset, return_dict=True, verbose=0)
    per_head = {head: {k for k in logs if k.startswith(f"{head}_")} for head in F.HEADS}
    assert per_head == {
        F.RATING: {"rating_rmse", "rating_mae", "rating_loss", "rating_weight"},
        F.CLICK: {"click_auc", "click_logloss", "click_loss", "click_weight"},
        F.PURCHASE: {"purchase_auc", "purchase_logloss", "purchase_loss", "purchase_weight"},
    }
    assert set(logs) - set().union(*per_head.values()) == {
        "loss",
        "regularization_loss",
        "total_loss",
        "selection_loss",
        "retrieval_loss",
    }
    # The per-head losses (and the retrieval tower's) are what the total is made of.
    weighted = sum(SMALL.loss_weights[head] * logs[f"{head}_loss"] for head in F.HEADS)
    weighted += SMALL.retrieval.loss_weight * logs["retrieval_loss"]
    assert weighted == pytest.approx(logs["loss"], rel=1e-4)
    # Early stopping reads the fixed-weight sum, an epoch mean.
    fixed = sum(SMALL.loss_weights[head] * logs[f"{head}_loss"] for head in F.HEADS)
    assert logs["selection_loss"] == pytest.approx(fixed, rel=1e-4)
    assert logs["click_loss"] == pytest.approx(logs["click_logloss"], rel=1e-3)


def test_training_lowers_the_loss_and_priors_set_the_start():
    dataset = tf.data.Dataset.from_tensors(transformed_batch(64, seed=1)).repeat(4)
    priors = label_priors(dataset)
    assert priors[F.CLICK] == pytest.approx(
        float(tf.reduce_mean(transformed_batch(64, seed=1)[F.LABEL_XF[F.CLICK]]))
    )
    model, history = fit(
        dataset, None, CARDS, ModelConfig(**{**SMALL.to_dict(), "epochs": 5, "bottom_units": [8]})
    )
    assert history["total_loss"][-1] < history["total_loss"][0]
    # The rating head starts at the observed-rating mean, not at 0.
    fresh = MultiTaskRecommender(CARDS, SMALL, priors)
    start = fresh(transformed_batch(8), training=False)[F.RATING].numpy()
    assert abs(start.mean() - priors[F.RATING]) < 1.0


def test_training_under_a_mirrored_strategy_matches_the_default_path():
    dataset = tf.data.Dataset.from_tensors(transformed_batch(64, seed=2)).repeat(3)
    mirrored = ModelConfig(**{**SMALL.to_dict(), "distribution": "mirrored", "epochs": 2})
    _, history = fit(dataset, None, CARDS, mirrored)
    _, plain = fit(dataset, None, CARDS, ModelConfig(**{**SMALL.to_dict(), "epochs": 2}))
    assert np.all(np.isfinite(history["total_loss"]))
    # One replica: the masked loss is not rescaled, so both paths train the same way.
    assert history["total_loss"][0] == pytest.approx(plain["total_loss"][0], rel=0.05)


def test_a_batch_without_clicks_adds_no_in_batch_softmax_loss():
    # A replica's share of a batch can hold no click, and a worker whose share of the data
    # is used up gets empty batches; TFRS's accidental-hit removal fails on those.
    model = MultiTaskRecommender(CARDS, LISTWISE)
    assert model.retrieval is not None
    unclicked = transformed_batch(8)
    unclicked[F.LABEL_XF[F.CLICK]] = tf.zeros(8)
    empty = {
        key: tf.sparse.slice(value, [0, 0], [0, value.dense_shape[1]])
        if isinstance(value, tf.SparseTensor)
        else value[:0]
        for key, value in transformed_batch(8).items()
    }
    for loss in (model.retrieval_loss, model.click_listwise_loss):
        for batch in (unclicked, empty):
            assert float(loss(batch, training=True)) == 0.0
        clicked = transformed_batch(8)
        clicked[F.LABEL_XF[F.CLICK]] = tf.ones(8)
        assert float(loss(clicked, training=True)) > 0.0


def small_user_encoder(**options) -> SideEncoder:
    """A user-id-only encoder with 4-wide embeddings and output."""
    return SideEncoder(
        CARDS, ["user_id_xf"], [], [], id_key="user_id_xf", embedding_dim=4, output_dim=4, **options
    )


def test_id_dropout_sends_ids_to_the_oov_bucket_only_in_training():
    encoder = small_user_encoder(id_dropout=0.999)
    ids = tf.constant([0, 1, 2, 3], tf.int64)
    assert encoder.drop_ids(ids, training=True).numpy().tolist() == [10, 10, 10, 10]
    assert encoder.drop_ids(ids, training=False).numpy().tolist() == [0, 1, 2, 3]


def test_history_is_pooled_as_a_mean_and_hidden_by_history_dropout():
    encoder = small_user_encoder(
        history_keys=F.USER_HISTORY_XF,
        history_cardinality=CARDS["item_id_xf"],
        history_dropout=0.999,
    )
    batch = transformed_batch(8)
    encoder(batch)
    pad = [-1] * (F.HISTORY_LENGTH - 2)
    rows = {
        F.HISTORY_XF: tf.constant([[1, 2, *pad], [2, 1, *pad], [-1, -1, *pad]], tf.int64),
        F.HISTORY_RATING_XF: tf.zeros([3, F.HISTORY_LENGTH]),
    }
    pooled = encoder.pool_history(rows).numpy()
    table = encoder.history_table.numpy()
    np.testing.assert_allclose(pooled[0], (table[1] + table[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(pooled[0], pooled[1], rtol=1e-6)  # The mean has no order.
    np.testing.assert_array_equal(pooled[2], np.zeros(4))  # No history: zeros.
    np.testing.assert_array_equal(encoder.pool_history(rows, training=True), np.zeros((3, 4)))
    encoder.history_rating.assign([1.0, 2.0, -1.0, 0.5])
    rated = {**rows, F.HISTORY_RATING_XF: tf.ones([3, F.HISTORY_LENGTH])}
    shift = encoder.pool_history(rated).numpy() - pooled
    np.testing.assert_allclose(shift[0], [1.0, 2.0, -1.0, 0.5], atol=1e-6)  # mean(z)·w.


def test_pooled_history_and_its_gradient_equal_the_mean_of_the_history_vectors():
    """pool_history's sparse product gives what the masked mean of history_vectors (the
    gathered rows the attention reads) gives, repeated items and ratings included, and the
    same gradient for the table."""
    encoder = small_user_encoder(
        history_keys=F.USER_HISTORY_XF, history_cardinality=CARDS["item_id_xf"]
    )
    encoder(transformed_batch(8))
    encoder.history_rating.assign([0.3, -0.2, 0.1, 0.5])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CARDS["item_id_xf"], (6, F.HISTORY_LENGTH))
    ids[:, 3:] = -1  # Padding after three entries...
    ids[1, :] = -1  # ...an empty history...
    ids[2, 1] = ids[2, 0]  # ...and an item twice.
    rows = {
        F.HISTORY_XF: tf.constant(ids, tf.int64),
        F.HISTORY_RATING_XF: tf.constant(rng.normal(size=ids.shape), tf.float32),
    }
    with tf.GradientTape(persistent=True) as tape:
        pooled = encoder.pool_history(rows)
        vectors, present = encoder.history_vectors(rows)
        total = tf.reduce_sum(vectors * present[..., None], axis=1)
        mean = total / tf.maximum(tf.reduce_sum(present, axis=1, keepdims=True), 1.0)
        weights = tf.constant(rng.normal(size=(6, 4)), tf.float32)
        loss, expected_loss = tf.reduce_sum(pooled * weights), tf.reduce_sum(mean * weights)
    np.testing.assert_allclose(pooled.numpy(), mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pooled.numpy()[1], np.zeros(4))
    got = tf.convert_to_tensor(tape.gradient(loss, encoder.history_table))
    want = tf.convert_to_tensor(tape.gradient(expected_loss, encoder.history_table))
    assert np.abs(want.numpy()).sum() > 0
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_history_attention_weighs_the_history_by_its_match_with_the_candidate():
    attention = HistoryAttention(2)
    attention.build([None, 2])
    attention.query.build([None, 2])
    attention.query.kernel.assign(np.eye(2, dtype=np.float32) * 10.0)
    vectors = tf.constant([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]] * 2)
    present = tf.constant([[1.0, 1.0, 0.0]] * 2)  # The third entry is padding.
    items = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    pooled = attention(items, vectors, present).numpy()
    # Each candidate draws the history entry that matches it; padding never counts.
    assert pooled[0, 0] > 0.99 and pooled[0, 1] < 0.01
    assert pooled[1, 1] > 0.99 and pooled[1, 0] < 0.01
    hidden = attention(items, vectors, tf.zeros([2, 3])).numpy()
    np.testing.assert_array_equal(hidden, np.zeros((2, 2)))  # No history: zeros.


def test_history_attention_makes_the_heads_read_the_history_per_candidate():
    # Seeded: with some initial weights the click tower's ReLUs are all off for most rows
    # of this tiny batch, and nothing upstream moves the click at all.
    tf_keras.utils.set_random_seed(7)
    config = dataclasses.replace(SMALL, history_pooling="attention")
    model = build_model(CARDS, config, {F.RATING: 3.5, F.CLICK: 0.2, F.PURCHASE: 0.1})
    batch = transformed_batch(6)
    model(batch)
    table = model.user_encoder.history_table
    table.assign(np.random.default_rng(0).normal(size=table.shape).astype(np.float32))
    before = model(batch)
    # The retrieval tower's query has no candidate: attention leaves it alone.
    query = model.query_embeddings(batch).numpy()
    model.history_attention.query.kernel.assign(model.history_attention.query.kernel * 0.0 + 3.0)
    after = model(batch)
    assert np.abs(before[F.CLICK].numpy() - after[F.CLICK].numpy()).max() > 1e-4
    np.testing.assert_array_equal(model.query_embeddings(batch).numpy(), query)
    with pytest.raises(ValueError, match="history_pooling must be one of"):
        dataclasses.replace(SMALL, history_pooling="max")
    with pytest.raises(ValueError, match="does not take history_pooling 'attention'"):
        dataclasses.replace(config, click_listwise_weight=1.0)


@pytest.mark.parametrize(
    "layer",
    [
        SideEncoder(
            CARDS,
            ["user_id_xf"],
            ["genres_xf"],
            ["age_z_xf"],
            id_key="user_id_xf",
            embedding_dim=4,
            output_dim=8,
            id_dropout=0.2,
            l2=1e-4,
        ),
        MLP([8, 4], dropout=0.1),
        Tower([4], dropout=0.0, output_bias=1.5),
        HistoryAttention(4),
    ],
)
def test_layers_round_trip_through_get_config(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    registered = tf_keras.utils.get_registered_object(f"mtrec>{type(layer).__name__}")
    assert registered is type(layer)


def test_model_round_trips_through_get_config():
    model = MultiTaskRecommender(CARDS, SMALL, {F.RATING: 3.2, F.CLICK: 0.3, F.PURCHASE: 0.1})
    clone = MultiTaskRecommender.from_config(model.get_config())
    batch = transformed_batch(4)
    model(batch)
    clone(batch)
    assert clone.get_config() == model.get_config()
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"click_listwise_weight": "0.5"},
            "ModelConfig.click_listwise_weight must be a number, got '0.5'",
        ),
        ({"epochs": "3"}, "ModelConfig.epochs must be an integer, got '3'"),
        ({"epochs": 3.5}, "ModelConfig.epochs must be an integer, got 3.5"),
        ({"esmm": 1}, "ModelConfig.esmm must be true or false, got 1"),
        ({"dropout": True}, "ModelConfig.dropout must be a number, got True"),
        ({"history_pooling": 1}, "ModelConfig.history_pooling must be a string, got 1"),
        (
            {"head_units": [8, "4"]},
            "ModelConfig.head_units must be a list of integers, got [8, '4']",
        ),
        (
            {"retrieval": {"candidates": "10"}},
            "RetrievalConfig.candidates must be an integer, got '10'",
        ),
        ({"retrieval": 5}, "ModelConfig.retrieval must be an object, got 5"),
    ],
)
def test_model_config_from_json_names_a_value_of_the_wrong_type(values, message):
    """JSON from --model-config: a numeric-looking string is refused in one line, not by a
    TypeError deep in a range check."""
    with pytest.raises(ValueError) as error:
        ModelConfig.from_dict(values)
    assert str(error.value) == message
    assert ModelConfig.from_dict({"dropout": 0, "blend_weights": [0, 1, 0.5]}).dropout == 0


def test_model_config_round_trips_and_rejects_unknown_keys():
    assert ModelConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"embeding_dim": 3})
    with pytest.raises(ValueError, match="distribution"):
        ModelConfig(distribution="tpu")


def gather_rows(value, rows):
    """Rows ``rows`` of one batch feature, dense or sparse."""
    if isinstance(value, tf.SparseTensor):
        return tf.gather(tf.RaggedTensor.from_sparse(value), rows).to_sparse()
    return tf.gather(value, rows)


def test_listwise_click_loss_is_the_corrected_softmax_of_the_click_heads_pair_logits():
    batch = transformed_batch(10, seed=5)
    clicked = np.array([1, 1, 0, 1, 1, 0, 1, 1, 1, 0], bool)
    batch[F.LABEL_XF[F.CLICK]] = tf.constant(clicked, tf.float32)
    items = batch["item_id_xf"].numpy()
    items[3] = items[0]  # Two clicked rows share an item: an accidental hit for each other.
    batch["item_id_xf"] = tf.constant(items)
    model = MultiTaskRecommender(CARDS, LISTWISE)
    model(batch)
    model.set_item_frequencies(np.arange(CARDS["item_id_xf"]))  # Unequal p(item).
    users, vectors, ids = model.clicked_pairs(batch, training=False)
    logits = model.click_pair_logits(users, vectors, training=False).numpy()
    # Pair (i, j) is the click head on user i with item j: the same path as call().
    rows = np.flatnonzero(clicked)
    shifted = np.roll(np.arange(len(rows)), 1)
    item_keys = {*F.ITEM_CATEGORICAL_XF, *F.ITEM_MULTIVALENT_XF, *F.ITEM_NUMERIC_XF}
    crossed = {
        key: gather_rows(value, rows[shifted] if key in item_keys else rows)
        for key, value in batch.items()
    }
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    click = model(batch, training=False)[F.CLICK].numpy()[clicked]
    np.testing.assert_allclose(click, sigmoid(np.diag(logits)), rtol=1e-5)
    click = model(crossed, training=False)[F.CLICK].numpy()
    np.testing.assert_allclose(click, sigmoid(logits[np.arange(len(rows)), shifted]), rtol=1e-5)
    # Softmax cross-entropy per clicked row, log p(item) off each column, the other row
    # with the same item left out; the mean over the rows.
    ids = ids.numpy()
    corrected = logits - model.item_log_probability.numpy()[ids][None, :]
    diagonal = np.eye(len(ids), dtype=bool)
    kept = (ids[:, None] != ids[None, :]) | diagonal
    assert not kept.all()  # The accidental hit is in the batch.
    expected = np.mean(
        [
            np.logaddexp.reduce(row[keep]) - row[i]
            for i, (row, keep) in enumerate(zip(corrected, kept, strict=True))
        ]
    )
    loss = float(model.click_listwise_loss(batch, training=False))
    assert loss == pytest.approx(expected, rel=1e-5)
    unmasked = np.mean(np.logaddexp.reduce(corrected, axis=1) - np.diag(corrected))
    assert loss != pytest.approx(unmasked, rel=1e-3)


def test_mixed_retrieval_negatives_are_every_other_item_of_the_batch():
    batch = transformed_batch(10, seed=6)
    clicked = np.array([1, 0, 1, 0, 0, 1, 1, 0, 0, 0], bool)
    batch[F.LABEL_XF[F.CLICK]] = tf.constant(clicked, tf.float32)
    items = batch["item_id_xf"].numpy()
    items[7] = items[0]  # An unclicked row shows a clicked row's item: an accidental hit.
    batch["item_id_xf"] = tf.constant(items)
    model = MultiTaskRecommender(CARDS, MIXED)
    model.build_weights(batch)
    model.set_item_frequencies(np.arange(CARDS["item_id_xf"]))  # Unequal p(item).
    users, vectors = model.encode(batch, training=False)
    # Candidates: the clicked rows' items, then the unclicked rows', each user's own first.
    order = np.concatenate([np.flatnonzero(clicked), np.flatnonzero(~clicked)])
    queries = model.retrieval.queries(tf.boolean_mask(users, clicked)).numpy()
    candidates = model.retrieval.candidates(tf.gather(vectors, order)).numpy()
    ids = items[order]
    scores = queries @ candidates.T / MIXED.retrieval.temperature
    scores -= model.item_log_probability.numpy()[ids][None, :]
    diagonal = np.eye(*scores.shape, dtype=bool)
    kept = (ids[: len(queries), None] != ids[None, :]) | diagonal
    assert not kept.all()  # The accidental hit is among the candidates.
    expected = np.mean(
        [
            np.logaddexp.reduce(row[keep]) - row[i]
            for i, (row, keep) in enumerate(zip(scores, kept, strict=True))
        ]
    )
    assert float(model.retrieval_loss(batch, training=False)) == pytest.approx(expected, rel=1e-5)
    # A batch without a click still adds nothing.
    batch[F.LABEL_XF[F.CLICK]] = tf.zeros(10)
    assert float(model.retrieval_loss(batch, training=True)) == 0.0
    with pytest.raises(ValueError, match="retrieval.negatives"):
        dataclasses.replace(MIXED, retrieval=dataclasses.replace(MIXED.retrieval, negatives="all"))
    with pytest.raises(ValueError, match="does not take retrieval.negatives 'mixed'"):
        dataclasses.replace(MIXED, click_listwise_weight=1.0)


def test_catalog_retrieval_negatives_are_a_full_softmax_over_every_catalog_item():
    catalog = collect_catalog(
        tf.data.Dataset.from_tensors(transformed_batch(64, seed=8)), ITEM_VOCABULARY
    )
    features, rows = catalog_items(catalog, CARDS["item_id_xf"])
    indices = catalog.dense["item_id_xf"]
    assert rows[-1] == -1 and list(rows[indices]) == list(range(len(catalog)))
    assert (rows >= 0).sum() == len(catalog) == 11  # One known item was never drawn.
    batch = transformed_batch(12, seed=9)
    clicked = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1], bool)
    batch[F.LABEL_XF[F.CLICK]] = tf.constant(clicked, tf.float32)
    items = batch["item_id_xf"].numpy()
    items[3] = CARDS["item_id_xf"] - 1  # A clicked OOV item: not in the catalog, left out.
    items[0] = indices[0]
    batch["item_id_xf"] = tf.constant(items)
    model = MultiTaskRecommender(CARDS, CATALOG)
    model.build_weights(batch)
    with pytest.raises(ValueError, match="needs the catalog's items"):
        model.retrieval_loss(batch, training=False)
    model.set_catalog_items(features, rows)
    users, _ = model.encode(batch, training=False)
    kept = clicked & (rows[items] >= 0)
    assert kept.sum() == clicked.sum() - 1
    queries = model.retrieval.queries(tf.boolean_mask(users, kept)).numpy()
    candidates = model.retrieval.candidates(model.item_encoder(features, training=False)).numpy()
    scores = queries @ candidates.T / CATALOG.retrieval.temperature
    labels = rows[items[kept]]
    expected = np.mean(np.logaddexp.reduce(scores, axis=1) - scores[np.arange(len(labels)), labels])
    assert float(model.retrieval_loss(batch, training=False)) == pytest.approx(expected, rel=1e-5)
    # The label is the clicked item's own catalog row: another item gives another loss.
    items[0] = indices[1]
    batch["item_id_xf"] = tf.constant(items)
    assert float(model.retrieval_loss(batch, training=False)) != pytest.approx(expected, rel=1e-3)
    batch[F.LABEL_XF[F.CLICK]] = tf.zeros(12)  # A batch without a click adds nothing.
    assert float(model.retrieval_loss(batch, training=True)) == 0.0


def test_fit_trains_catalog_negatives_and_saves_no_catalog_with_the_weights(tmp_path):
    data = tf.data.Dataset.from_tensors(transformed_batch(64, seed=10)).repeat(4)
    catalog = collect_catalog(data, ITEM_VOCABULARY)
    with pytest.raises(ValueError, match="needs fit\\(\\)'s catalog"):
        fit(data, None, CARDS, CATALOG)
    model, history = fit(data, None, CARDS, dataclasses.replace(CATALOG, epochs=3), catalog=catalog)
    assert history["retrieval_loss"][-1] < history["retrieval_loss"][0]
    # The full softmax over the catalog's items starts near log(their count).
    assert history["retrieval_loss"][0] == pytest.approx(np.log(len(catalog)), abs=0.5)
    default, _ = fit(data, None, CARDS, dataclasses.replace(SMALL, epochs=1))

    def saved(trained: MultiTaskRecommender, name: str) -> list:
        path = tf.train.Checkpoint(model=trained).write(str(tmp_path / name))
        return sorted(key for key, _ in tf.train.list_variables(path) if "model" in key)

    keys = saved(default, "default")
    assert len(keys) > 20 and saved(model, "catalog") == keys


def test_listwise_click_loss_is_logged_and_weighted_into_the_total():
    # Without the retrieval tower: the listwise loss alone needs log p(item).
    config = dataclasses.replace(
        LISTWISE, retrieval=dataclasses.replace(SMALL.retrieval, enabled=False), epochs=2
    )
    dataset = tf.data.Dataset.from_tensors(transformed_batch(32, seed=4)).repeat(2)
    model, history = fit(dataset, dataset, CARDS, config)
    assert model.item_log_probability is not None
    for key in ("click_listwise_loss", "val_click_listwise_loss"):
        assert all(np.isfinite(history[key])) and min(history[key]) > 0, history[key]
    logs = model.evaluate(dataset.take(1), return_dict=True, verbose=0)
    heads = sum(logs[f"{head}_weight"] * logs[f"{head}_loss"] for head in F.HEADS)
    variances = float(tf.reduce_sum(model.log_variances))
    assert logs["loss"] == pytest.approx(
        heads + variances + config.click_listwise_weight * logs["click_listwise_loss"], rel=1e-4
    )
    # Early stopping still reads the heads alone.
    fixed = sum(config.loss_weights[head] * logs[f"{head}_loss"] for head in F.HEADS)
    assert logs["selection_loss"] == pytest.approx(fixed, rel=1e-4)
    # Off (the default): no metric, no tracker, no log p(item) without retrieval.
    plain = MultiTaskRecommender(CARDS, dataclasses.replace(config, click_listwise_weight=0.0))
    assert plain.click_listwise_tracker is None and plain.item_log_probability is None
    assert "click_listwise_loss" not in {metric.name for metric in plain.metrics}


def test_a_listwise_model_round_trips_through_its_config_and_weights(tmp_path):
    config = dataclasses.replace(
        LISTWISE, retrieval=dataclasses.replace(SMALL.retrieval, enabled=False)
    )
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="click_listwise_weight"):
        dataclasses.replace(config, click_listwise_weight=-1.0)
    model = MultiTaskRecommender(CARDS, config)
    batch = transformed_batch(8)
    model(batch)
    model.set_item_frequencies(np.arange(CARDS["item_id_xf"]))
    model.save_weights(str(tmp_path / "weights"))
    clone = MultiTaskRecommender.from_config(model.get_config())
    clone(batch)
    clone.load_weights(str(tmp_path / "weights"))
    assert clone.config == config
    np.testing.assert_allclose(
        clone.item_log_probability.numpy(), model.item_log_probability.numpy()
    )
    assert float(clone.click_listwise_loss(batch, training=False)) == pytest.approx(
        float(model.click_listwise_loss(batch, training=False)), rel=1e-6
    )
