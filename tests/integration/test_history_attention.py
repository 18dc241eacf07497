"""History pooled against the candidate (``history_pooling: attention``): trained, exported
and served through the same signatures as the default model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mtrec import names as F
from tests.support.training import EXPORT_CONFIG, KNOWN, recommend, serve, train_and_export

CONFIG = dataclasses.replace(EXPORT_CONFIG, history_pooling="attention")
ROW = {key: value for key, value in KNOWN.items() if key != "history"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_and_export(tmp_path_factory.mktemp("attention"), CONFIG)


def test_the_model_attends_with_weights_of_its_own(trained):
    assert trained.model.config.history_pooling == "attention"
    names = [w.name for w in trained.model.weights if "history_attention" in w.name]
    assert len(names) == 1 and names[0].endswith("query/kernel:0"), names


def test_serving_default_scores_move_with_the_history(trained):
    rows = [{**ROW, "history": history} for history in ("", "2:5 7:5 1:5", "9:1 4:1")]
    scores = serve(trained.loaded, rows)[F.CLICK].reshape(-1)
    assert len(set(np.round(scores, 6))) == 3, scores
    # The same history in another order: attention pools a set, as the mean does.
    again = serve(trained.loaded, [{**ROW, "history": "7:5 1:5 2:5"}])[F.CLICK].reshape(-1)
    np.testing.assert_allclose(again[0], scores[1], rtol=1e-5)


def test_an_unseen_users_recommendations_follow_the_history_passed(trained):
    stranger = {"user_id": 99_997}
    catalog = sorted(recommend(trained.loaded, stranger, k=10_000)["item_id"].tolist())
    first = recommend(
        trained.loaded, {**stranger, "history": " ".join(f"{i}:5" for i in catalog[:4])}, 10_000
    )
    last = recommend(
        trained.loaded, {**stranger, "history": " ".join(f"{i}:5" for i in catalog[-4:])}, 10_000
    )
    assert first["item_id"].tolist() != last["item_id"].tolist()
    assert set(catalog) - set(first["item_id"].tolist()) == set(catalog[:4])
