"""Warm start by token: a real model trained on vocabulary v1 restored into a model built on
v2, where tokens were reordered and added (hand-made vocabularies, no Transform run)."""

import dataclasses
import functools
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from mtrec import names as F
from mtrec.models import warm_start
from mtrec.models.hparams import ModelConfig, RetrievalConfig
from mtrec.models.model import VOCABULARY_FEATURES, MultiTaskRecommender
from mtrec.models.preprocessing import CATEGORICAL_KEYS, NUM_OOV_BUCKETS
from mtrec.models.training import fit
from tests.support.training import SMALL, transformed_batch

V1 = {
    F.USER_ID: [b"a", b"b", b"c"],
    F.ITEM_ID: [b"x", b"y"],
    F.GENDER: [b"M", b"F"],
    F.OCCUPATION: [b"artist", b"doctor", b"writer"],
    F.ZIP_PREFIX: [b"10", b"20", b"\xff9", b"30"],  # Not UTF-8: must survive the bundle.
    F.GENRES: [b"Action", b"Comedy", b"Drama", b"Horror", b"War"],
    F.TITLE: [f"word{i}".encode() for i in range(19)],
}
# The next span: users and items reordered and added, genders swapped, a zip prefix added.
V2 = {
    **V1,
    F.USER_ID: [b"d", b"b", b"a", b"c"],
    F.ITEM_ID: [b"y", b"z", b"x"],
    F.GENDER: [b"F", b"M"],
    F.ZIP_PREFIX: [b"20", b"10", b"\xff9", b"30", b"40"],
}
DENSE_KEYS = ("user_id_xf", "item_id_xf", "gender_xf", "occupation_xf", "zip_prefix_xf")


class FakeTransformOutput:
    """The one TFTransformOutput method warm starts use, over hand-made vocabularies."""

    def __init__(self, vocabularies: dict[str, list[bytes]]) -> None:
        self.vocabularies = vocabularies

    def vocabulary_by_name(self, vocab_filename: str) -> list[bytes]:
        return list(self.vocabularies[vocab_filename])


def cards(vocabularies: dict[str, list[bytes]]) -> dict[str, int]:
    tables = {F.transformed_name(k): len(v) + NUM_OOV_BUCKETS for k, v in vocabularies.items()}
    return {**tables, "age_bucket_xf": 7, "year_bucket_xf": 10}


def batch(vocabularies: dict[str, list[bytes]], n: int = 64, seed: int = 0) -> dict:
    """transformed_batch with every id inside these vocabularies (OOV excluded)."""
    features = transformed_batch(n, seed)
    for key in DENSE_KEYS:
        features[key] = features[key] % (cards(vocabularies)[key] - NUM_OOV_BUCKETS)
    history = features[F.HISTORY_XF]
    known = cards(vocabularies)[F.transformed_name(F.ITEM_ID)] - NUM_OOV_BUCKETS
    features[F.HISTORY_XF] = tf.where(history >= 0, history % known, history)
    return features


def table(model: MultiTaskRecommender, vocabulary: str, name_part: str) -> np.ndarray:
    """The one table of ``vocabulary`` whose variable name contains ``name_part``."""
    (variable,) = [
        v
        for v, vocab in model.vocabulary_variables()
        if vocab == vocabulary and name_part in v.name
    ]
    return variable.numpy()


def built(vocabularies: dict, config: ModelConfig = SMALL, priors: dict | None = None):
    model = MultiTaskRecommender(cards(vocabularies), config, priors)
    model.build_weights(batch(vocabularies))
    return model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Model A, trained on v1, and the serving path its bundle sits beside."""
    dataset = tf.data.Dataset.from_tensors(batch(V1, seed=1)).repeat(2)
    model, _ = fit(dataset, None, cards(V1), dataclasses.replace(SMALL, epochs=1))
    artifact = tmp_path_factory.mktemp("model")
    warm_start.save_bundle(model, FakeTransformOutput(V1), str(artifact / "warm_start"))
    return model, str(artifact / "Format-Serving")


def test_vocabulary_features_are_the_transform_vocabularies():
    assert set(VOCABULARY_FEATURES.values()) == {*CATEGORICAL_KEYS, F.GENRES, F.TITLE}
    assert all(
        VOCABULARY_FEATURES[F.transformed_name(k)] == k for k in VOCABULARY_FEATURES.values()
    )


def test_vocabulary_variables_name_each_table_and_its_vocabulary(base):
    model, _ = base
    scope = r"^multi_task_recommender(_\d+)?/"  # The model's scope, uniquified per process.
    listed = {(re.sub(scope, "", v.name), vocab) for v, vocab in model.vocabulary_variables()}
    assert listed == {
        ("user_encoder/user_id_xf_emb/embeddings:0", F.USER_ID),
        ("user_encoder/gender_xf_emb/embeddings:0", F.GENDER),
        ("user_encoder/occupation_xf_emb/embeddings:0", F.OCCUPATION),
        ("user_encoder/zip_prefix_xf_emb/embeddings:0", F.ZIP_PREFIX),
        ("user_encoder/history_emb:0", F.ITEM_ID),
        ("item_encoder/item_id_xf_emb/embeddings:0", F.ITEM_ID),
        ("item_encoder/genres_xf_emb:0", F.GENRES),
        ("item_encoder/title_xf_emb:0", F.TITLE),
        ("user_id_xf_bias/bias/embeddings:0", F.USER_ID),
        ("item_id_xf_bias/bias/embeddings:0", F.ITEM_ID),
        ("item_log_probability:0", F.ITEM_ID),
    }


def test_the_bundle_holds_every_weight_the_config_and_the_vocabularies(base):
    model, serving = base
    directory = warm_start.bundle_dir(serving)
    manifest = json.loads(tf.io.gfile.GFile(f"{directory}/manifest.json").read())
    assert manifest["config"] == SMALL.to_dict() | {"epochs": 1}
    assert [e["name"] for e in manifest["weights"]] == [w.name for w in model.weights]
    assert [e["shape"] for e in manifest["weights"]] == [list(w.shape) for w in model.weights]
    vocabularies = json.loads(tf.io.gfile.GFile(f"{directory}/vocabularies.json").read())
    assert list(vocabularies)[:2] == [F.USER_ID, F.ITEM_ID]
    assert vocabularies[F.USER_ID] == ["a", "b", "c"]
    assert tf.io.gfile.listdir(os.path.dirname(directory)) == ["warm_start"]  # No staging left.


def test_rows_are_carried_by_token_and_new_tokens_start_fresh(base):
    model_a, serving = base
    model_b = built(V2, priors={F.RATING: 1.0, F.CLICK: 0.9, F.PURCHASE: 0.5})
    fresh = {v.name: v.numpy() for v in model_b.weights}
    result = warm_start.restore(model_b, FakeTransformOutput(V2), serving)

    assert result.warm_started, result.reason
    assert result.carried == {
        F.USER_ID: 3,
        F.ITEM_ID: 2,
        F.GENDER: 2,
        F.GENRES: 5,
        F.OCCUPATION: 3,
        F.TITLE: 19,
        F.ZIP_PREFIX: 4,
    }
    assert result.new == {F.USER_ID: 1, F.ITEM_ID: 1, F.ZIP_PREFIX: 1} | {
        k: 0 for k in (F.GENDER, F.GENRES, F.OCCUPATION, F.TITLE)
    }
    assert result.summary().startswith(
        f"Warm start from {serving}: user_id 3 rows carried, 1 new; item_id 2 rows carried, 1 new;"
    )
    users_a, users_b = table(model_a, F.USER_ID, "_emb"), table(model_b, F.USER_ID, "_emb")
    # v1: a b c OOV; v2: d b a c OOV.
    np.testing.assert_array_equal(users_b[1], users_a[1])  # b
    np.testing.assert_array_equal(users_b[2], users_a[0])  # a
    np.testing.assert_array_equal(users_b[3], users_a[2])  # c
    np.testing.assert_array_equal(users_b[4], users_a[3])  # OOV
    name = model_b.user_encoder.embeddings["user_id_xf"].embeddings.name
    np.testing.assert_array_equal(users_b[0], fresh[name][0])  # d keeps its initial row.
    assert not any(np.allclose(users_b[0], row) for row in users_a)
    # Items (v1: x y OOV; v2: y z x OOV) in the embedding, the history's table, the rating
    # bias and log p(item).
    for part in ("item_id_xf_emb", "history_emb", "_bias", "item_log_probability"):
        items_a, items_b = table(model_a, F.ITEM_ID, part), table(model_b, F.ITEM_ID, part)
        np.testing.assert_array_equal(items_b[[0, 2, 3]], items_a[[1, 0, 2]])
    assert table(model_b, F.ITEM_ID, "_bias")[1] == 0.0  # z: a new item's bias starts at 0.
    # Genders swapped places; the zip prefix that is not UTF-8 kept its row.
    genders_a, genders_b = table(model_a, F.GENDER, "_emb"), table(model_b, F.GENDER, "_emb")
    np.testing.assert_array_equal(genders_b, genders_a[[1, 0, 2]])
    zips_a, zips_b = table(model_a, F.ZIP_PREFIX, "_emb"), table(model_b, F.ZIP_PREFIX, "_emb")
    np.testing.assert_array_equal(zips_b[[0, 1, 2, 3, 5]], zips_a[[1, 0, 2, 3, 4]])
    # Every other weight is A's, the heads' output biases included (not B's priors).
    tables = {v.ref() for v, _ in model_b.vocabulary_variables()}
    dense = [(a, b) for a, b in zip(model_a.weights, model_b.weights, strict=True)]
    dense = [(a, b) for a, b in dense if b.ref() not in tables]
    assert len(dense) == len(model_b.weights) - 11
    for a, b in dense:
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=b.name)
    rating_bias = float(model_b.heads[F.RATING].out.bias.numpy()[0])
    assert rating_bias == float(model_a.heads[F.RATING].out.bias.numpy()[0]) != 1.0


def test_fit_warm_starts_within_warm_start_epochs_and_recounts_item_frequencies(base):
    model_a, serving = base
    config = dataclasses.replace(SMALL, epochs=5, warm_start_epochs=2, learning_rate=1e-9)
    features = batch(V2, seed=3)
    # Only item y (v2 index 0) is clicked in the new span.
    features[F.LABEL_XF[F.CLICK]] = tf.cast(features["item_id_xf"] == 0, tf.float32)
    restore = functools.partial(
        warm_start.restore, tft_output=FakeTransformOutput(V2), base_model_path=serving
    )
    model_b, history = fit(
        tf.data.Dataset.from_tensors(features), None, cards(V2), config, initial_weights=restore
    )
    assert history["warm_start"]["warm_started"] is True
    assert history["warm_start"]["carried"][F.USER_ID] == 3
    assert len(history["loss"]) == 2
    # With a negligible learning rate the restored rows are still A's after training.
    users_a, users_b = table(model_a, F.USER_ID, "_emb"), table(model_b, F.USER_ID, "_emb")
    np.testing.assert_allclose(users_b[[1, 2, 3, 4]], users_a[[1, 0, 2, 3]], atol=1e-6)
    # log p(item) comes from this span's clicks (add-one smoothed), not from A.
    clicks = float(tf.reduce_sum(features[F.LABEL_XF[F.CLICK]]))
    expected = np.log(np.array([clicks + 1, 1, 1, 1]) / (clicks + 4))
    np.testing.assert_allclose(
        table(model_b, F.ITEM_ID, "item_log_probability"), expected, rtol=1e-5
    )


def test_the_listwise_click_loss_without_retrieval_is_part_of_the_structure():
    """Without retrieval, log p(item) exists only for the listwise click loss: a base model
    trained without it does not fit, and says why."""
    off = dataclasses.replace(SMALL, retrieval=RetrievalConfig(enabled=False)).to_dict()
    on = {**off, "click_listwise_weight": 1.0}
    assert warm_start._structure(on)["click_listwise_weight > 0"] is True
    assert warm_start._structure(off)["click_listwise_weight > 0"] is False
    retrieval = SMALL.to_dict()  # With retrieval the listwise loss adds no weight.
    assert warm_start._structure({**retrieval, "click_listwise_weight": 1.0}) == (
        warm_start._structure(retrieval)
    )


def test_history_attention_is_part_of_the_structure_and_older_bundles_pooled_by_the_mean():
    mean = SMALL.to_dict()
    older = {k: v for k, v in mean.items() if k != "history_pooling"}
    attention = {**mean, "history_pooling": "attention"}
    assert warm_start._structure(older) == warm_start._structure(mean)
    assert warm_start._structure(attention)["history_pooling"] == "attention"
    assert warm_start._structure(attention) != warm_start._structure(mean)


def test_a_bundle_of_another_shape_is_refused_and_the_model_trains_from_scratch(base):
    _, serving = base
    wider = dataclasses.replace(SMALL, embedding_dim=8, epochs=2)
    model_c = built(V2, wider)
    before = [w.numpy() for w in model_c.weights]
    result = warm_start.restore(model_c, FakeTransformOutput(V2), serving)
    assert not result.warm_started
    assert result.reason == "config differs from the base model's: embedding_dim 8 (base model: 4)"
    assert result.summary().endswith("; training from scratch")
    for value, weight in zip(before, model_c.weights, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)

    restore = functools.partial(
        warm_start.restore, tft_output=FakeTransformOutput(V2), base_model_path=serving
    )
    dataset = tf.data.Dataset.from_tensors(batch(V2, seed=4)).repeat(2)
    _, history = fit(dataset, None, cards(V2), wider, initial_weights=restore)
    assert history["warm_start"]["warm_started"] is False
    assert len(history["loss"]) == wider.epochs  # The full bound, not warm_start_epochs.
    assert np.all(np.isfinite(history["total_loss"]))


def test_a_missing_or_damaged_bundle_is_reported_not_raised(base, tmp_path):
    model_b = built(V2)
    missing = warm_start.restore(model_b, FakeTransformOutput(V2), str(tmp_path / "Format-Serving"))
    assert not missing.warm_started
    assert missing.reason.startswith("no warm-start bundle beside it")

    _, serving = base
    damaged = tmp_path / "damaged"
    (damaged / "warm_start").mkdir(parents=True)
    for name in ("manifest.json", "vocabularies.json"):
        src = f"{warm_start.bundle_dir(serving)}/{name}"
        tf.io.gfile.copy(src, str(damaged / "warm_start" / name), overwrite=True)
    (damaged / "warm_start" / "weights.npz").write_bytes(b"not a zip file")
    result = warm_start.restore(model_b, FakeTransformOutput(V2), str(damaged / "Format-Serving"))
    assert not result.warm_started
    assert result.reason.startswith("unreadable bundle")


def test_map_rows_carries_known_tokens_and_the_oov_rows():
    base = np.array([[1.0], [2.0], [3.0], [9.0]])  # p q r OOV
    fresh = np.zeros((4, 1))  # r s p OOV
    value, carried = warm_start.map_rows(base, [b"p", b"q", b"r"], fresh, [b"r", b"s", b"p"])
    np.testing.assert_array_equal(value[:, 0], [3.0, 0.0, 1.0, 9.0])
    assert carried == 2
    with pytest.raises(ValueError, match="rows do not match"):
        warm_start.map_rows(base, [b"p", b"q", b"r"], np.zeros((4, 2)), [b"r", b"s", b"p"])
