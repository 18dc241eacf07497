"""The ``recommend`` serving signature: the top-k items for one user, scored over the whole
catalog inside the SavedModel.

The catalog (every item id Transform knows, with its transformed features) is collected
from the training data at export and baked into the graph as constants. A request gives the
user's id and/or raw features, ``k``, the items to leave out (``exclude``, e.g. those already
seen) and optionally ``blend`` weights. Each item is scored by all three heads. The ranking
score is w_rating·(rating - 1)/4 + w_click·click + w_purchase·purchase, with the export's
default weights unless the request passes three of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from models import features as F

RECOMMEND = "recommend"
USER_RAW_INPUTS = (F.USER_ID, *F.USER_FEATURES)
USER_XF = (*F.USER_CATEGORICAL_XF, *F.USER_NUMERIC_XF)
ITEM_DENSE_XF = (*F.ITEM_CATEGORICAL_XF, *F.ITEM_NUMERIC_XF)
ITEM_ID_XF = F.transformed_name(F.ITEM_ID)


@dataclasses.dataclass
class Catalog:
    """Every known item: its raw id and transformed features (bags padded with -1)."""

    item_ids: np.ndarray  # int64 [N]
    dense: dict[str, np.ndarray]  # [N] per ITEM_DENSE_XF key
    bags: dict[str, np.ndarray]  # int64 [N, L] per ITEM_MULTIVALENT_XF key, -1 = padding

    def __len__(self) -> int:
        return len(self.item_ids)


def collect_catalog(dataset: tf.data.Dataset, item_vocabulary: list[bytes]) -> Catalog:
    """The first occurrence of each in-vocabulary item in ``dataset`` (transformed batches)."""
    rows: dict[int, dict[str, Any]] = {}
    for batch in dataset:
        indices = batch[ITEM_ID_XF].numpy().reshape(-1)
        fresh = [(row, int(index)) for row, index in enumerate(indices)
                 if int(index) not in rows and int(index) < len(item_vocabulary)]
        if not fresh:
            continue
        dense = {key: batch[key].numpy().reshape(len(indices), -1)[:, 0]
                 for key in ITEM_DENSE_XF}
        bags = {key: tf.sparse.to_dense(batch[key], default_value=-1).numpy()
                for key in F.ITEM_MULTIVALENT_XF}
        for row, index in fresh:
            rows[index] = {**{k: v[row] for k, v in dense.items()},
                           **{k: [t for t in v[row] if t >= 0] for k, v in bags.items()}}
    if not rows:
        raise ValueError("no known item in the training data: cannot build a catalog")
    order = sorted(rows, key=lambda index: int(item_vocabulary[index]))
    width = {key: max(1, max(len(rows[i][key]) for i in order)) for key in F.ITEM_MULTIVALENT_XF}
    bags = {key: np.array([rows[i][key] + [-1] * (width[key] - len(rows[i][key]))
                           for i in order], dtype=np.int64) for key in F.ITEM_MULTIVALENT_XF}
    return Catalog(item_ids=np.array([int(item_vocabulary[i]) for i in order], np.int64),
                   dense={key: np.array([rows[i][key] for i in order]) for key in ITEM_DENSE_XF},
                   bags=bags)


def blended_score(rating: tf.Tensor, click: tf.Tensor, purchase: tf.Tensor,
                  weights: tf.Tensor) -> tf.Tensor:
    """The ranking score: the rating mapped from [1, 5] to [0, 1], and both probabilities."""
    return (weights[0] * (rating - 1.0) / 4.0 + weights[1] * click + weights[2] * purchase)


def make_recommend_fn(module: tf.Module, catalog: Catalog, input_spec: dict[str, Any],
                      default_blend: tuple[float, float, float]) -> Any:
    """A tf.function for the ``recommend`` signature over ``module.model``/``tft_layer``."""
    size = len(catalog)
    item_ids = tf.constant(catalog.item_ids)
    dense = {key: tf.constant(value) for key, value in catalog.dense.items()}
    bags = {}
    for key, padded in catalog.bags.items():
        where = np.argwhere(padded >= 0)
        bags[key] = (tf.constant(where, tf.int64), tf.constant(padded[padded >= 0], tf.int64),
                     tf.constant(padded.shape, tf.int64))
    default = tf.constant(default_blend, tf.float32)
    signature = [tf.TensorSpec([None], input_spec[key].dtype, name=key)
                 for key in USER_RAW_INPUTS]
    signature += [tf.TensorSpec([None], tf.int64, name="k"),
                  tf.TensorSpec([None], tf.int64, name="exclude"),
                  tf.TensorSpec([None], tf.float32, name="blend")]

    @tf.function(input_signature=signature)
    def recommend(user_id: tf.Tensor, age: tf.Tensor, gender: tf.Tensor,
                  occupation: tf.Tensor, zip_prefix: tf.Tensor, k: tf.Tensor,
                  exclude: tf.Tensor, blend: tf.Tensor) -> dict[str, tf.Tensor]:
        given = dict(zip(USER_RAW_INPUTS, (user_id, age, gender, occupation, zip_prefix),
                         strict=True))
        raw = {}
        for key in F.MODEL_INPUT_KEYS:  # The user from the request; item fields neutral.
            spec = input_spec[key]
            if key in given:
                value = given[key][:1]
                fallback = tf.constant([spec.default_value[0]], spec.dtype)
                value = tf.cond(tf.size(value) > 0, lambda v=value: v, lambda f=fallback: f)
            else:
                value = tf.constant([spec.default_value[0]], spec.dtype)
            raw[key] = tf.reshape(value, [-1, *spec.shape])
        user = module.tft_layer(raw)
        features = {key: tf.repeat(tf.reshape(user[key], [1]), size) for key in USER_XF}
        features.update(dense)
        for key, (indices, values, shape) in bags.items():
            features[key] = tf.SparseTensor(indices, values, shape)
        heads = module.model(features, training=False)
        weights = tf.cond(tf.size(blend) == 3, lambda: blend, lambda: default)
        score = blended_score(heads[F.RATING], heads[F.CLICK], heads[F.PURCHASE], weights)
        excluded = tf.reduce_any(tf.equal(item_ids[:, None], exclude[None, :]), axis=1)
        score = tf.where(excluded, tf.constant(-np.inf, tf.float32), score)
        remaining = size - tf.reduce_sum(tf.cast(excluded, tf.int32))
        wanted = tf.cond(tf.size(k) > 0, lambda: tf.cast(k[0], tf.int32), lambda: 10)
        top = tf.math.top_k(score, tf.minimum(tf.maximum(wanted, 0), remaining))
        return {"item_id": tf.gather(item_ids, top.indices), "score": top.values,
                **{head: tf.gather(heads[head], top.indices) for head in F.HEADS}}

    return recommend
