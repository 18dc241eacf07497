"""Quality benchmark on the canonical MovieLens-100K u1 split (not a timed test).

    .venv/bin/python benchmarks/quality.py [--models all|name,name] [--epochs N] [--seeds N]
        [--time-split name,name]

Protocol:
- u1.test = the first 20,000 rows of u.data, u1.base = the other 80,000 (the GroupLens split).
- Examples are built by `mtrec`'s data job in explicit ratings mode (`build.run` on
  `source.ratings`, as `mtrec data build --train-ratings --eval-ratings` runs it):
  4 sampled non-interactions per rating, side features from the MovieLens side files. The
  validation split is a random 10% of each user's u1.base ratings, held out as u1.test is
  (``--valid-split random``; ``latest`` takes each user's most recent 10%), and it alone
  drives early stopping and the choice of epoch. u1.test is read for evaluation only.
- The real Transform (`models.preprocessing.preprocessing_fn`, via tf.Transform on Beam)
  analyzes the training split; every model reads its output as the Trainer does
  (``models.training.make_dataset``: one transformed copy per split, shuffled by the seed).
- Rating: RMSE and MAE on the u1.test ratings.
- Top-K: every item scored for every user with u1.test items, the user's u1.base items
  excluded; every u1.test rating counts as a positive. Recall@K, NDCG@K (binary relevance)
  and HR@K, averaged over those users, and over cold users (at most 20 u1.base ratings). The
  multi-task models rank by the recommend signature's blended score; its weights are chosen
  from a few candidates by NDCG@10 on the validation split (each user's held-out base
  ratings, the rest of base excluded), never on u1.test.
- Click / purchase: AUC over the u1.test positives and their sampled non-interactions
  (fixed seed); purchase = rating >= 4.
- History: every example carries the one the data job builds (train rows: the user's
  earlier base ratings; u1.test rows: all of them). Scoring gives each user all of u1.base
  as history, and for the validation ranking base without the held-out ratings.
- Seeds: every model row runs ``--seeds`` times (model seeds 42, 43, ...), and a summary
  table gives each measure's mean ± sample standard deviation.
- Time split: the ``--time-split`` rows are also trained on the pipeline's default data
  (MovieLens-100K through the data job, split by time) and scored on its eval split: RMSE
  on the rated examples, click and purchase AUC, as the Evaluator's headline metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
import tensorflow as tf

from mtrec import names as F
from mtrec.data import build, movielens
from mtrec.data import source as data_source
from mtrec.data.config import VALID_SPLITS, DataConfig
from mtrec.models import local_transform
from mtrec.models.hparams import ExpertConfig, ModelConfig
from mtrec.models.recommend import blended_score, collect_catalog, item_features
from mtrec.models.training import cardinalities, fit, make_dataset, transformed_batches

U1_TEST_ROWS = 20_000
COLD_MAX = F.COLD_USER_MAX_INTERACTIONS
KS = (5, 10)


# ----------------------------------------------------------------------------- data


def u1_split(
    source: Path, work: Path, test_rows: int = U1_TEST_ROWS
) -> tuple[pd.DataFrame, pd.DataFrame, Path, Path]:
    """u1.test = the first ``test_rows`` ratings in u.data order, u1.base = the rest."""
    ratings = movielens.load(source).ratings[[F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP]]
    test, base = ratings.iloc[:test_rows], ratings.iloc[test_rows:]
    base_file, test_file = work / "u1.base.csv", work / "u1.test.csv"
    _write_unchanged(base, base_file)
    _write_unchanged(test, test_file)
    return base, test, base_file, test_file


def _write_unchanged(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV unless ``path`` already holds exactly that: the data job
    fingerprints its inputs by size and modification time, so a rerun in the same work
    folder reuses the examples it built."""
    text = frame.to_csv(index=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def with_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Side-table rows with the shared missing-value defaults, as the data job fills them
    in every example (``build.finish_row``: a NaN year becomes 0, and so on)."""
    rows = [
        build.finish_row({k: None if pd.isna(v) else v for k, v in row.items()}, {}, {}, {})
        for row in frame.to_dict("records")
    ]
    return pd.DataFrame(rows, index=frame.index)


@dataclasses.dataclass
class Catalog:
    """Transformed features of every user (indexed by user id) and every item (by row),
    for scoring any (user, item) pair without re-running Transform."""

    users: dict[str, tf.Tensor]  # key -> [max_user_id + 1] (history: [.., HISTORY_LENGTH])
    item_ids: np.ndarray
    items: dict[str, tf.Tensor]  # key -> [n_items], or [n_items, L] padded with -1 for bags

    def with_users(self, users: dict[str, tf.Tensor]) -> Catalog:
        return dataclasses.replace(self, users=users)


def without(base: pd.DataFrame, held: pd.DataFrame) -> pd.DataFrame:
    """``base`` without the (user, item) pairs of ``held`` (the validation ratings)."""
    pairs = set(zip(held[F.USER_ID], held[F.ITEM_ID], strict=True))
    keep = [(u, i) not in pairs for u, i in zip(base[F.USER_ID], base[F.ITEM_ID], strict=True)]
    return base[keep]


def histories(ratings: pd.DataFrame) -> dict[int, str]:
    """Each user's history as the data job writes it for an explicit eval row: every one of
    ``ratings`` (the user's training ratings), newest first, capped."""
    out = {}
    ordered = ratings.sort_values(
        [F.USER_ID, F.TIMESTAMP, F.ITEM_ID], ascending=[True, False, False]
    )
    for user, group in ordered.groupby(F.USER_ID, sort=False):
        tokens = [
            build.history_token({F.ITEM_ID: int(i), F.RATING: float(r)})
            for i, r in zip(group[F.ITEM_ID], group[F.RATING], strict=True)
        ]
        out[int(user)] = F.HISTORY_SEPARATOR.join(tokens[: F.HISTORY_LENGTH])
    return out


def feature_tables(source: Path, output: object, history: dict[int, str]) -> Catalog:
    """Transformed features of every user (with ``history``) and every item."""
    tables = movielens.load(source)
    layer = output.transform_features_layer()
    spec = {k: v for k, v in output.raw_feature_spec().items() if k in F.MODEL_INPUT_KEYS}
    users = with_defaults(tables.users.assign(**{F.ITEM_ID: 0}))
    users[F.HISTORY] = users[F.USER_ID].map(history).fillna("")
    items = with_defaults(tables.items.assign(**{F.USER_ID: 0}))

    def raw(frame: pd.DataFrame) -> dict[str, tf.Tensor]:
        columns = {}
        for key, feature in spec.items():
            values = frame[key] if key in frame else pd.Series([None] * len(frame))
            if feature.dtype == tf.string:
                filled = values.fillna("").astype(str).to_numpy().astype(object)
            else:
                filled = values.fillna(0).astype(np.int64).to_numpy()
            columns[key] = tf.reshape(tf.constant(filled, feature.dtype), [-1, 1])
        return columns

    user_xf = layer(raw(users))
    item_xf = layer(raw(items))
    order = users[F.USER_ID].to_numpy()
    table = {}
    for key in F.USER_XF:
        values = user_xf[key].numpy()
        values = values.reshape(len(order), -1) if key in F.USER_HISTORY_XF else values.reshape(-1)
        full = np.zeros((int(order.max()) + 1, *values.shape[1:]), values.dtype)
        if key == F.HISTORY_XF:
            full[:] = -1  # Users MovieLens does not list: no history.
        full[order] = values
        table[key] = tf.constant(full)
    item_table = {}
    for key in (*F.ITEM_CATEGORICAL_XF, *F.ITEM_NUMERIC_XF, *F.ITEM_MULTIVALENT_XF):
        value = item_xf[key]
        item_table[key] = (
            tf.sparse.to_dense(value, default_value=-1)
            if isinstance(value, tf.SparseTensor)
            else tf.reshape(value, [-1])
        )
    return Catalog(table, items[F.ITEM_ID].to_numpy(), item_table)


# ----------------------------------------------------------------------------- metrics


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # Average ranks over ties.
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2
            start = end
    positives = labels.sum()
    negatives = len(labels) - positives
    return float(
        (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def ranking_metrics(
    scores_by_user: dict[int, np.ndarray],
    item_ids: np.ndarray,
    base: pd.DataFrame,
    test: pd.DataFrame,
) -> dict[str, dict[str, float]]:
    """Recall@K, NDCG@K, HR@K over all test users and over cold users."""
    seen = base.groupby(F.USER_ID)[F.ITEM_ID].apply(set).to_dict()
    truth = test.groupby(F.USER_ID)[F.ITEM_ID].apply(set).to_dict()
    counts = base.groupby(F.USER_ID).size().to_dict()
    position = {int(item): i for i, item in enumerate(item_ids)}
    sums = {
        group: {f"{m}@{k}": 0.0 for m in ("recall", "ndcg", "hr") for k in KS}
        for group in ("all", "cold")
    }
    users = {"all": 0, "cold": 0}
    for user, relevant in truth.items():
        scores = scores_by_user[user].copy()
        for item in seen.get(user, ()):
            scores[position[item]] = -np.inf
        top = item_ids[np.argsort(-scores, kind="stable")[: max(KS)]]
        groups = ["all"] + (["cold"] if counts.get(user, 0) <= COLD_MAX else [])
        for k in KS:
            hits = [1.0 if int(item) in relevant else 0.0 for item in top[:k]]
            dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
            idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
            for group in groups:
                sums[group][f"recall@{k}"] += sum(hits) / len(relevant)
                sums[group][f"ndcg@{k}"] += dcg / idcg
                sums[group][f"hr@{k}"] += float(sum(hits) > 0)
        for group in groups:
            users[group] += 1
    return {
        group: {name: value / max(users[group], 1) for name, value in values.items()}
        | {"users": users[group]}
        for group, values in sums.items()
    }


# ----------------------------------------------------------------------------- models


@dataclasses.dataclass
class Result:
    name: str
    rmse: float = math.nan
    mae: float = math.nan
    ranking: dict = dataclasses.field(default_factory=dict)
    click_auc: float = math.nan
    purchase_auc: float = math.nan
    seconds: float = math.nan
    examples_per_second: float = math.nan
    epochs: int = 0
    blend: tuple = ()
    valid_rmse: float = math.nan  # On the validation split: what tuning may look at.
    valid_ndcg: float = math.nan
    seed: int | None = None

    def measures(self) -> dict[str, float]:
        """The summary table's columns."""
        a, c = self.ranking.get("all", {}), self.ranking.get("cold", {})
        return {
            "RMSE": self.rmse,
            "N@10": a.get("ndcg@10", math.nan),
            "R@10": a.get("recall@10", math.nan),
            "N@5": a.get("ndcg@5", math.nan),
            "R@5": a.get("recall@5", math.nan),
            "coldN@10": c.get("ndcg@10", math.nan),
            "clickAUC": self.click_auc,
            "purchAUC": self.purchase_auc,
            "valRMSE": self.valid_rmse,
            "valN@10": self.valid_ndcg,
        }


def mean_std(values: list[float]) -> str:
    """'m ± s' (sample standard deviation), or 'm' for one value."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "-"
    mean = float(np.mean(finite))
    if len(finite) == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {float(np.std(finite, ddof=1)):.4f}"


def summary_table(results: list[Result]) -> str:
    """One row per model: each measure's mean ± standard deviation over its runs."""
    names = list(dict.fromkeys(r.name for r in results))
    columns = list(results[0].measures())
    lines = [f"{'model':<45}" + "".join(f"{c:>17}" for c in columns) + f"{'runs':>6}"]
    for name in names:
        runs = [r.measures() for r in results if r.name == name]
        cells = [mean_std([run[c] for run in runs]) for c in columns]
        lines.append(f"{name:<45}" + "".join(f"{cell:>17}" for cell in cells) + f"{len(runs):>6}")
    return "\n".join(lines)


def catalog_items(catalog: Catalog, rows: tf.Tensor) -> dict:
    """Model inputs for the catalog items at ``rows`` (padded bags become sparse)."""
    picked = {key: tf.gather(value, rows) for key, value in catalog.items.items()}
    return item_features(
        {k: v for k, v in picked.items() if k not in F.ITEM_MULTIVALENT_XF},
        {k: v for k, v in picked.items() if k in F.ITEM_MULTIVALENT_XF},
    )


def score_pairs(
    model: object, catalog: Catalog, users: np.ndarray, items: np.ndarray
) -> dict[str, np.ndarray]:
    """The three heads for (user, item) pairs, from the precomputed feature tables."""
    position = {int(item): i for i, item in enumerate(catalog.item_ids)}
    rows = np.array([position[int(i)] for i in items])
    out: dict[str, list] = {head: [] for head in F.HEADS}
    for start in range(0, len(users), 8192):
        user_ids = tf.constant(users[start : start + 8192].astype(np.int64))
        item_rows = tf.constant(rows[start : start + 8192])
        features = {k: tf.gather(v, user_ids) for k, v in catalog.users.items()}
        features.update(catalog_items(catalog, item_rows))
        predictions = model(features, training=False)
        for head in F.HEADS:
            out[head].append(predictions[head].numpy())
    return {head: np.concatenate(values) for head, values in out.items()}


def retrieval_nearness(model: object, catalog: Catalog, users: list[int]) -> dict[int, np.ndarray]:
    """Each user's retrieval-tower score (cosine) for every catalog item."""
    candidates = model.candidate_embeddings(catalog_items(catalog, tf.range(len(catalog.item_ids))))
    ids = tf.constant(np.array(users, np.int64))
    queries = model.query_embeddings({k: tf.gather(v, ids) for k, v in catalog.users.items()})
    nearness = tf.matmul(queries, candidates, transpose_b=True).numpy()
    return {int(user): nearness[row] for row, user in enumerate(users)}


# Blends tried on the validation split; the best validation NDCG@10 is used on u1.test.
BLENDS = (
    (0.2, 0.5, 0.3),
    (0.0, 1.0, 0.0),
    (0.0, 0.7, 0.3),
    (0.1, 0.6, 0.3),
    (0.3, 0.4, 0.3),
    (0.0, 0.0, 1.0),
)


def evaluate_model(
    name: str,
    model: object,
    catalog: Catalog,
    base: pd.DataFrame,
    test: pd.DataFrame,
    eval_pairs: pd.DataFrame,
    valid: pd.DataFrame,
    validation_catalog: Catalog,
) -> Result:
    """Test metrics; the ranking blend is the one with the best validation NDCG@10.
    ``catalog``'s users have all of u1.base as history, ``validation_catalog``'s all but
    the held-out validation ratings."""
    result = Result(name)
    rated = score_pairs(model, catalog, test[F.USER_ID].to_numpy(), test[F.ITEM_ID].to_numpy())
    errors = rated[F.RATING] - test[F.RATING].to_numpy()
    result.rmse = float(np.sqrt(np.mean(errors**2)))
    result.mae = float(np.mean(np.abs(errors)))
    pairs = score_pairs(
        model, catalog, eval_pairs[F.USER_ID].to_numpy(), eval_pairs[F.ITEM_ID].to_numpy()
    )
    result.click_auc = auc(eval_pairs[F.CLICK].to_numpy(), pairs[F.CLICK])
    result.purchase_auc = auc(eval_pairs[F.PURCHASE].to_numpy(), pairs[F.PURCHASE])
    n_items = len(catalog.item_ids)
    retrieve = model.config.retrieval.candidates if model.retrieval is not None else 0

    def every_item(table: Catalog, users: list[int]) -> tuple[dict, dict]:
        heads = {
            int(u): score_pairs(model, table, np.full(n_items, u), table.item_ids) for u in users
        }
        return heads, retrieval_nearness(model, table, users) if retrieve else {}

    def scores(
        blend: tuple[float, float, float],
        wanted: pd.Series,
        seen: pd.DataFrame,
        heads: dict,
        nearness: dict,
    ) -> dict:
        weights = tf.constant(blend, tf.float32)
        out = {
            int(u): blended_score(
                *(tf.constant(heads[int(u)][h]) for h in F.HEADS), weights
            ).numpy()
            for u in wanted.unique()
        }
        if retrieve:  # As the recommend signature: the heads rank the nearest items only.
            seen_counts = seen.groupby(F.USER_ID).size()
            for user, score in out.items():
                keep = np.argsort(-nearness[user])[: retrieve + int(seen_counts.get(user, 0))]
                restricted = np.full_like(score, -np.inf)
                restricted[keep] = score[keep]
                out[user] = restricted
        return out

    # Validation ranking: the held-out base ratings, the rest of base excluded and the
    # users' history (validation_catalog's users).
    rest = without(base, valid)
    heads, nearness = every_item(validation_catalog, sorted(set(valid[F.USER_ID])))
    validation = {
        b: ranking_metrics(
            scores(b, valid[F.USER_ID], rest, heads, nearness), catalog.item_ids, rest, valid
        )["all"]["ndcg@10"]
        for b in BLENDS
    }
    chosen = max(BLENDS, key=validation.get)
    result.blend, result.valid_ndcg = chosen, validation[chosen]
    rated = valid.merge(base, on=[F.USER_ID, F.ITEM_ID])
    predicted = score_pairs(
        model, validation_catalog, rated[F.USER_ID].to_numpy(), rated[F.ITEM_ID].to_numpy()
    )[F.RATING]
    result.valid_rmse = float(np.sqrt(np.mean((predicted - rated[F.RATING].to_numpy()) ** 2)))
    heads, nearness = every_item(catalog, sorted(set(test[F.USER_ID])))
    result.ranking = ranking_metrics(
        scores(chosen, test[F.USER_ID], base, heads, nearness), catalog.item_ids, base, test
    )
    return result


def popularity(
    base: pd.DataFrame, test: pd.DataFrame, eval_pairs: pd.DataFrame, item_ids: np.ndarray
) -> Result:
    result = Result("popularity (train rating count)")
    counts = base.groupby(F.ITEM_ID).size()
    means = base.groupby(F.ITEM_ID)[F.RATING].mean()
    predicted = test[F.ITEM_ID].map(means).fillna(base[F.RATING].mean()).to_numpy()
    result.rmse = float(np.sqrt(np.mean((predicted - test[F.RATING].to_numpy()) ** 2)))
    result.mae = float(np.mean(np.abs(predicted - test[F.RATING].to_numpy())))
    score = eval_pairs[F.ITEM_ID].map(counts).fillna(0).to_numpy()
    result.click_auc = auc(eval_pairs[F.CLICK].to_numpy(), score)
    result.purchase_auc = auc(eval_pairs[F.PURCHASE].to_numpy(), score)
    item_scores = pd.Series(item_ids).map(counts).fillna(0).to_numpy().astype(float)
    result.ranking = ranking_metrics(
        {int(u): item_scores for u in test[F.USER_ID].unique()}, item_ids, base, test
    )
    return result


def biased_mf(
    base: pd.DataFrame,
    test: pd.DataFrame,
    eval_pairs: pd.DataFrame,
    item_ids: np.ndarray,
    valid_fraction: float = 0.1,
    dim: int = 32,
    l2: float = 0.05,
    epochs: int = 60,
) -> Result:
    """r = mu + b_u + b_i + p_u . q_i, trained with Adam on u1.base ratings; the epoch is
    chosen on each user's most recent ratings of u1.base."""
    import tf_keras

    result = Result(f"biased MF (dim {dim})")
    frame = base.sort_values([F.USER_ID, F.TIMESTAMP])
    from_end = frame.groupby(F.USER_ID).cumcount(ascending=False)
    size = frame.groupby(F.USER_ID)[F.TIMESTAMP].transform("size")
    held = (from_end < np.maximum(1, np.floor(valid_fraction * size))) & (size >= 2)
    train, valid = frame[~held], frame[held]
    n_users = int(max(base[F.USER_ID].max(), test[F.USER_ID].max())) + 1
    n_items = int(item_ids.max()) + 1
    mu = float(train[F.RATING].mean())
    users_in = tf_keras.Input([], dtype=tf.int64)
    items_in = tf_keras.Input([], dtype=tf.int64)
    reg = tf_keras.regularizers.L2(l2 / len(train) * 1000)
    p = tf_keras.layers.Embedding(n_users, dim, embeddings_regularizer=reg)(users_in)
    q = tf_keras.layers.Embedding(n_items, dim, embeddings_regularizer=reg)(items_in)
    bu = tf_keras.layers.Embedding(n_users, 1, embeddings_initializer="zeros")(users_in)
    bi = tf_keras.layers.Embedding(n_items, 1, embeddings_initializer="zeros")(items_in)
    dot = tf.reduce_sum(p * q, axis=1, keepdims=True)
    out = tf.squeeze(dot + bu + bi, axis=1) + mu
    model = tf_keras.Model([users_in, items_in], out)
    model.compile(tf_keras.optimizers.Adam(2e-3), loss="mse")
    started = time.perf_counter()
    history = model.fit(
        [train[F.USER_ID].to_numpy(), train[F.ITEM_ID].to_numpy()],
        train[F.RATING].to_numpy(np.float32),
        batch_size=1024,
        epochs=epochs,
        verbose=0,
        validation_data=(
            [valid[F.USER_ID].to_numpy(), valid[F.ITEM_ID].to_numpy()],
            valid[F.RATING].to_numpy(np.float32),
        ),
        callbacks=[tf_keras.callbacks.EarlyStopping(patience=4, restore_best_weights=True)],
    )
    result.seconds = time.perf_counter() - started
    result.epochs = len(history.history["loss"])
    result.examples_per_second = len(train) * result.epochs / result.seconds

    def predict(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return model.predict([users, items], batch_size=65536, verbose=0)

    predicted = np.clip(predict(test[F.USER_ID].to_numpy(), test[F.ITEM_ID].to_numpy()), 1, 5)
    result.rmse = float(np.sqrt(np.mean((predicted - test[F.RATING].to_numpy()) ** 2)))
    result.mae = float(np.mean(np.abs(predicted - test[F.RATING].to_numpy())))
    score = predict(eval_pairs[F.USER_ID].to_numpy(), eval_pairs[F.ITEM_ID].to_numpy())
    result.click_auc = auc(eval_pairs[F.CLICK].to_numpy(), score)
    result.purchase_auc = auc(eval_pairs[F.PURCHASE].to_numpy(), score)
    scores = {}
    for user in test[F.USER_ID].unique():
        scores[int(user)] = predict(np.full(len(item_ids), user), item_ids)
    result.ranking = ranking_metrics(scores, item_ids, base, test)
    return result


def model_configs(epochs: int, overrides: dict | None = None) -> dict[str, ModelConfig]:
    """Every row's config: ``overrides`` (ModelConfig fields) apply to all of them. Only the
    ``+ retrieval`` rows have the retrieval tower on (with the overrides' retrieval settings)."""
    tuned = ModelConfig.from_dict({**ModelConfig(epochs=epochs).to_dict(), **(overrides or {})})
    base = dataclasses.replace(tuned, retrieval=dataclasses.replace(tuned.retrieval, enabled=False))
    experts = ExpertConfig(num_experts=4, shared_experts=2, task_experts=1, levels=1, units=(64,))
    configs = {}
    for architecture in ("shared_bottom", "mmoe", "ple"):
        for balancing in ("fixed", "uncertainty"):
            configs[f"{architecture} / {balancing}"] = dataclasses.replace(
                base, architecture=architecture, experts=experts, loss_balancing=balancing
            )
    # The heads over the whole catalog above; here with the retrieval tower (on in the
    # default ModelConfig): the heads rank only the items nearest the user.
    retrieval = dataclasses.replace(tuned.retrieval, enabled=True)
    default = f"shared_bottom / uncertainty + retrieval {retrieval.candidates}"
    configs[default] = dataclasses.replace(
        configs["shared_bottom / uncertainty"], retrieval=retrieval
    )
    configs[f"{default} + history attention"] = dataclasses.replace(
        configs[default], history_pooling="attention"
    )
    # The default without the user's history, for comparison.
    configs[f"{default} - history"] = dataclasses.replace(configs[default], history=False)
    # The default with a listwise loss on the click head too: a softmax over the batch's
    # clicked items (logQ corrected), next to the pointwise loss on sampled negatives.
    # (With the retrieval softmax over the clicked items: the listwise loss shares its log p.)
    configs[f"{default} + listwise click"] = dataclasses.replace(
        configs[default],
        click_listwise_weight=1.0,
        retrieval=dataclasses.replace(retrieval, negatives="clicks"),
    )
    # The retrieval softmax over every item of the batch, the sampled non-clicks included.
    configs[f"{default} + mixed negatives"] = dataclasses.replace(
        configs[default], retrieval=dataclasses.replace(retrieval, negatives="mixed")
    )
    # The retrieval softmax over the whole catalog (1,682 items): no sampling at all.
    configs[f"{default} + catalog negatives"] = dataclasses.replace(
        configs[default], retrieval=dataclasses.replace(retrieval, negatives="catalog")
    )
    for head in F.HEADS:  # Same size and budget, trained on one head (fixed weights).
        weights = {f"{h}_loss_weight": 1.0 if h == head else 0.0 for h in F.HEADS}
        configs[f"single-task {head}"] = dataclasses.replace(
            base, loss_balancing="fixed", **weights
        )
    return configs


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens-dir", help="default: the fetched MovieLens-100K")
    parser.add_argument(
        "--models", default="all", help="comma-separated names from the table, or 'all'"
    )
    parser.add_argument("--epochs", type=int, default=ModelConfig.epochs)
    parser.add_argument("--work-dir", help="kept for reruns (default: a temporary folder)")
    parser.add_argument(
        "--valid-split",
        choices=VALID_SPLITS,
        default="random",
        help="u1's validation split: a random 10%% of each user's u1.base ratings held out "
        "as u1.test is (default), or their latest 10%% (DataConfig.valid_split)",
    )
    parser.add_argument(
        "--model-config",
        metavar="JSON",
        help="ModelConfig fields applied to every model row, e.g. " "'{\"learning_rate\": 0.002}'",
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="skip the popularity and biased MF rows"
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="model seeds per row (42, 43, ...; default 3)"
    )
    parser.add_argument(
        "--time-split",
        metavar="MODELS",
        default="shared_bottom / uncertainty + retrieval 100",
        help="also train these rows on the pipeline's default data (MovieLens-100K, split by "
        "time) and report RMSE, click and purchase AUC on its eval split; '' skips it",
    )
    parser.add_argument(
        "--test-rows",
        type=int,
        default=U1_TEST_ROWS,
        help="leading u.data rows used as the test split (u1: 20000)",
    )
    args = parser.parse_args()
    source = Path(args.movielens_dir) if args.movielens_dir else movielens.fetch()
    scratch = tempfile.TemporaryDirectory(prefix="mtrec-quality-")  # Removed at exit.
    work = Path(args.work_dir or scratch.name)
    work.mkdir(parents=True, exist_ok=True)
    base, test, base_file, test_file = u1_split(source, work, args.test_rows)
    examples, summary = build.run(
        data_source.ratings(str(base_file), str(test_file), str(source)),
        DataConfig(valid_split=args.valid_split),
        str(work / "data"),
    )
    root = Path(examples)
    started = time.perf_counter()
    output = local_transform.analyze(str(split_files(root, F.TRAIN)), work, "benchmark")
    print(
        f"u1: {len(base):,} base / {len(test):,} test ratings; examples "
        f"{summary.splits}; Transform {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    catalog = feature_tables(source, output, histories(base))
    eval_pairs = pd.DataFrame(
        _labels(split_files(root, F.EVAL)), columns=[F.USER_ID, F.ITEM_ID, F.CLICK, F.PURCHASE]
    )
    labelled = pd.DataFrame(
        _labels(split_files(root, F.VALID)), columns=[F.USER_ID, F.ITEM_ID, F.CLICK, F.PURCHASE]
    )
    valid_pairs = labelled[labelled[F.CLICK] == 1]
    rest = without(base, valid_pairs)
    validation_catalog = catalog.with_users(feature_tables(source, output, histories(rest)).users)
    results = []
    if not args.no_baselines:
        results.append(popularity(base, test, eval_pairs, catalog.item_ids))
        print(_row(results[-1]), flush=True)
        results.append(biased_mf(base, test, eval_pairs, catalog.item_ids))
        print(_row(results[-1]), flush=True)
    overrides = json.loads(args.model_config) if args.model_config else {}
    configs = model_configs(args.epochs, overrides)
    print(f"model config: {json.dumps(overrides or 'defaults')}", flush=True)
    wanted = list(configs) if args.models == "all" else [n for n in args.models.split(",") if n]
    train_examples = summary.splits[F.TRAIN]["examples"]
    seeds = [ModelConfig.seed + n for n in range(args.seeds)]
    for name in wanted:
        for seed in seeds:
            config = dataclasses.replace(configs[name], seed=seed)
            with trainer_inputs(root, output, config) as (train, valid):
                started = time.perf_counter()
                model, history = fit_model(train, valid, output, config)
                seconds = time.perf_counter() - started  # Training alone, not the evaluation.
            result = evaluate_model(
                name, model, catalog, base, test, eval_pairs, valid_pairs, validation_catalog
            )
            result.seconds = seconds
            result.epochs = len(history["total_loss"])
            result.examples_per_second = train_examples * result.epochs / result.seconds
            result.seed = seed
            results.append(result)
            print(_row(result), flush=True)
    if results:
        print()
        print(_header())
    for result in results:
        print(_row(result))
    if results:
        print()
        print(f"u1, mean ± standard deviation over seeds {seeds} (models) or one run (baselines):")
        print(summary_table(results))
    if args.time_split:
        print()
        print(time_split_table(source, work, args.time_split.split(","), configs, seeds))


@contextlib.contextmanager
def trainer_inputs(
    root: Path, output: Any, config: ModelConfig
) -> Iterator[tuple[tf.data.Dataset, tf.data.Dataset]]:
    """The train and valid batches exactly as the Trainer reads them (``make_dataset``:
    Transform's graph applied once into a local copy, the train copy shuffled by
    ``config.seed``), for the length of the ``with``."""
    with tempfile.TemporaryDirectory(prefix="mtrec-quality-copy-") as scratch:
        yield tuple(
            make_dataset([str(split_files(root, split))], output, config, split == F.TRAIN, folder)
            for split, folder in ((F.TRAIN, f"{scratch}/train"), (F.VALID, f"{scratch}/valid"))
        )


def fit_model(
    train: tf.data.Dataset, valid: tf.data.Dataset, output: Any, config: ModelConfig
) -> tuple[Any, dict]:
    """``fit`` as the Trainer calls it, with the catalog from the training split when the
    retrieval softmax needs it."""
    catalog = None
    if config.trains_on_catalog:
        catalog = collect_catalog(train, output.vocabulary_by_name(F.ITEM_ID))
    return fit(train, valid, cardinalities(output), config, catalog=catalog)


def time_split_table(
    source: Path, work: Path, names: list[str], configs: dict[str, ModelConfig], seeds: list[int]
) -> str:
    """The pipeline's default protocol: MovieLens-100K built by the data job with its time
    split, the real Transform on its train split, early stopping on valid, and RMSE (rated
    examples), click and purchase AUC over the eval split's examples, the Evaluator's headline
    metrics (computed here in process, exact AUC). Mean ± standard deviation over ``seeds``."""
    examples, summary = build.run(
        data_source.movielens(str(source)), DataConfig(), str(work / "time")
    )
    root = Path(examples)
    output = local_transform.analyze(str(split_files(root, F.TRAIN)), work / "time", "time")
    lines = [
        f"time split (the pipeline's default data): examples {summary.splits}",
        f"{'model':<45}{'RMSE':>17}{'clickAUC':>17}{'purchAUC':>17}{'epochs':>10}",
    ]
    for name in names:
        runs = []
        for seed in seeds:
            config = dataclasses.replace(configs[name], seed=seed)
            with trainer_inputs(root, output, config) as (train, valid):
                model, history = fit_model(train, valid, output, config)
            print(epoch_trace(history), flush=True)
            runs.append(
                (
                    *eval_split_metrics(model, split_files(root, F.EVAL), output),
                    len(history["total_loss"]),
                )
            )
            print(f"time split, {name}, seed {seed}: {runs[-1]}", flush=True)
        cells = [mean_std([run[i] for run in runs]) for i in range(3)]
        epochs = "/".join(str(run[3]) for run in runs)
        lines.append(f"{name:<45}" + "".join(f"{c:>17}" for c in cells) + f"{epochs:>10}")
    return "\n".join(lines)


def epoch_trace(history: dict) -> str:
    """The validation metrics per epoch, to see where early stopping stood against them
    (``--model-config '{"early_stopping_patience": 10}'`` shows the epochs after)."""
    names = (
        "val_selection_loss",
        "val_balanced_loss",
        "val_rating_rmse",
        "val_click_auc",
        "val_purchase_auc",
    )
    names = tuple(n for n in names if n in history)
    lines = [f"  {'epoch':>5}" + "".join(f"{n[4:]:>20}" for n in names)]
    for epoch in range(len(history["total_loss"])):
        lines.append(f"  {epoch + 1:>5}" + "".join(f"{history[n][epoch]:>20.4f}" for n in names))
    return "\n".join(lines)


def eval_split_metrics(model: object, pattern: Path, output: object) -> tuple[float, float, float]:
    """RMSE over the rated examples, click and purchase AUC over all, of one split."""
    labels: dict[str, list] = {key: [] for key in (*F.HEADS, F.RATING_WEIGHT_XF)}
    predicted: dict[str, list] = {head: [] for head in F.HEADS}
    for batch in transformed_batches([str(pattern)], output, 4096):
        heads = model(batch, training=False)
        for head in F.HEADS:
            predicted[head].append(heads[head].numpy().reshape(-1))
            labels[head].append(batch[F.LABEL_XF[head]].numpy().reshape(-1))
        labels[F.RATING_WEIGHT_XF].append(batch[F.RATING_WEIGHT_XF].numpy().reshape(-1))
    values = {key: np.concatenate(parts) for key, parts in labels.items()}
    scores = {head: np.concatenate(parts) for head, parts in predicted.items()}
    rated = values[F.RATING_WEIGHT_XF] > 0
    rmse = float(np.sqrt(np.mean((scores[F.RATING][rated] - values[F.RATING][rated]) ** 2)))
    return (
        rmse,
        auc(values[F.CLICK], scores[F.CLICK]),
        auc(values[F.PURCHASE], scores[F.PURCHASE]),
    )


def split_files(root: Path, split: str) -> Path:
    """The pattern of one split's shards (gzipped tf.Examples) in the data job's output."""
    return root / f"Split-{split}" / "*"


def _labels(pattern: Path) -> list[tuple[int, int, int, int]]:
    out = []
    for record in tf.data.TFRecordDataset(
        sorted(tf.io.gfile.glob(str(pattern))), compression_type="GZIP"
    ):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        out.append(
            tuple(
                int(feature[k].int64_list.value[0])
                for k in (F.USER_ID, F.ITEM_ID, F.CLICK, F.PURCHASE)
            )
        )
    return out


def _header() -> str:
    return (
        f"{'model':<45}{'RMSE':>7}{'MAE':>7}{'R@10':>7}{'N@10':>7}{'HR@10':>7}{'R@5':>7}"
        f"{'N@5':>7}{'coldN@10':>9}{'coldR@10':>9}{'clickAUC':>9}{'purchAUC':>9}"
        f"{'train s':>8}{'ex/s':>8}{'epochs':>7}{'valRMSE':>8}{'valN@10':>8}"
        f"  blend (chosen on validation)"
    )


def _row(r: Result) -> str:
    a, c = r.ranking.get("all", {}), r.ranking.get("cold", {})
    return (
        f"{r.name:<45}{r.rmse:>7.4f}{r.mae:>7.4f}{a.get('recall@10', math.nan):>7.4f}"
        f"{a.get('ndcg@10', math.nan):>7.4f}{a.get('hr@10', math.nan):>7.4f}"
        f"{a.get('recall@5', math.nan):>7.4f}{a.get('ndcg@5', math.nan):>7.4f}"
        f"{c.get('ndcg@10', math.nan):>9.4f}{c.get('recall@10', math.nan):>9.4f}"
        f"{r.click_auc:>9.4f}{r.purchase_auc:>9.4f}{r.seconds:>8.0f}"
        f"{r.examples_per_second:>8.0f}{r.epochs:>7}{r.valid_rmse:>8.4f}{r.valid_ndcg:>8.4f}"
        f"  {r.blend or ''}"
    )


if __name__ == "__main__":
    main()
