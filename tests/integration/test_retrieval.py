"""The optional retrieval tower and rating biases: training, the two-stage ``recommend``
signature (BruteForce candidates, then the heads), and save/reload."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from mtrec import names as F
from mtrec.models.hparams import ModelConfig, RetrievalConfig
from mtrec.models.recommend import item_features
from mtrec.models.training import cardinalities, item_counts
from tests.support.training import recommend, train_and_export

CANDIDATES = 8
CONFIG = ModelConfig(
    embedding_dim=8,
    side_dim=16,
    bottom_units=(16,),
    head_units=(8,),
    batch_size=64,
    epochs=4,
    learning_rate=0.005,
    rating_biases=True,
    retrieval=RetrievalConfig(enabled=True, dim=8, loss_weight=1.0, candidates=CANDIDATES),
)
USER = {"user_id": 3, "age": 30, "gender": "M", "occupation": "engineer", "zip_prefix": "123"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, history, transform output, catalog, reloaded SavedModel, train dataset)."""
    run = train_and_export(tmp_path_factory.mktemp("retrieval"), CONFIG)
    return run.model, run.history, run.output, run.catalog, run.loaded, run.train


def test_config_round_trips_through_json():
    assert ModelConfig.from_dict(json.loads(json.dumps(CONFIG.to_dict()))) == CONFIG
    with pytest.raises(ValueError, match="unknown RetrievalConfig keys"):
        ModelConfig.from_dict({"retrieval": {"candidate": 3}})
    with pytest.raises(ValueError, match="retrieval.candidates"):
        RetrievalConfig(candidates=-1)


def test_retrieval_loss_is_tracked_and_falls(trained):
    _, history, *_ = trained
    losses = history["retrieval_loss"]
    assert len(losses) == CONFIG.epochs
    assert losses[-1] < losses[0] - 0.05, losses
    # The heads are still trained next to it.
    assert {f"{head}_loss" for head in F.HEADS} <= set(history)


def test_sampling_correction_holds_the_click_frequencies(trained):
    model, _, output, _, _, train = trained
    counts = item_counts(train, cardinalities(output)[F.transformed_name(F.ITEM_ID)])
    assert counts.sum() > 0
    probability = np.exp(model.item_log_probability.numpy())
    np.testing.assert_allclose(probability.sum(), 1.0, rtol=1e-5)
    busiest, idle = int(np.argmax(counts)), int(np.argmin(counts))
    assert probability[busiest] > probability[idle]


def test_rating_biases_are_learned_per_id(trained):
    model, *_ = trained
    for bias in model.rating_biases.values():
        values = bias.table.embeddings.numpy().reshape(-1)
        assert np.std(values) > 1e-3  # Trained away from the zero start, and not uniformly.


def test_recommend_ranks_only_the_retrieved_candidates(trained):
    model, _, output, catalog, loaded, _ = trained
    assert len(catalog) > CANDIDATES + 4
    # Brute force in Python: the user's query against every catalog item's embedding.
    raw = {
        key: tf.constant([[USER.get(key, 0 if key in ("item_id", "year") else "")]])
        for key in F.MODEL_INPUT_KEYS
    }
    raw["age"] = tf.constant([[USER["age"]]], tf.int64)
    raw["user_id"] = tf.constant([[USER["user_id"]]], tf.int64)
    raw["item_id"] = tf.constant([[0]], tf.int64)
    raw["year"] = tf.constant([[0]], tf.int64)
    user = output.transform_features_layer()(raw)
    dense = {key: tf.constant(value) for key, value in catalog.dense.items()}
    bags = {key: tf.constant(value, tf.int64) for key, value in catalog.bags.items()}
    query = model.query_embeddings({key: user[key] for key in F.USER_XF}).numpy()
    items = model.candidate_embeddings(item_features(dense, bags)).numpy()
    nearness = (items @ query.T).reshape(-1)
    seen = [int(catalog.item_ids[i]) for i in np.argsort(-nearness)[:3]]  # The 3 nearest.
    retrieved = {
        int(catalog.item_ids[i]) for i in np.argsort(-nearness)[: CANDIDATES + len(seen)]
    } - set(seen)

    everything = recommend(loaded, USER, k=100, exclude=seen)
    assert set(everything["item_id"].tolist()) == retrieved
    scores = everything["score"]
    assert np.all(np.diff(scores) <= 1e-6)  # Ranked by the blended score.
    top = recommend(loaded, USER, k=3, exclude=seen, blend=(0.0, 1.0, 0.0))
    assert top["item_id"].tolist() == [
        int(i) for i in everything["item_id"][np.argsort(-everything["click"], kind="stable")[:3]]
    ]
    np.testing.assert_allclose(top["score"], top["click"], rtol=1e-5)


def test_unseen_users_get_candidates_from_their_features(trained):
    *_, loaded, _ = trained
    him = recommend(
        loaded, {"user_id": 99_999, "gender": "M", "age": 22, "occupation": "student"}, k=CANDIDATES
    )
    her = recommend(
        loaded, {"user_id": 99_998, "gender": "F", "age": 41, "occupation": "writer"}, k=CANDIDATES
    )
    assert len(him["item_id"]) == CANDIDATES
    assert not np.allclose(him["score"], her["score"])
