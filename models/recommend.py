"""The ``recommend`` serving signature: the top-k items for one user, scored over the whole
catalog inside the SavedModel.

The catalog (every item id Transform knows, with its transformed features) is collected
from the training data at export and saved with the model as variables, in ``variables/``
(``attach_catalog``; the other signatures read it too, ``with_catalog_features``):
as constants they made ``saved_model.pb`` grow with the catalog (7.8 MB per 100,000 items),
and TF Serving cannot read a graph past 2 GB. A request gives the
user's id and/or raw features, including the user's history (``names.HISTORY``: a user the
model never saw is ranked by it), ``k``, the items to leave out (``exclude``; when it is
empty, the history's items) and optionally ``blend`` weights. Each item is scored by all
three heads (or, with the optional retrieval tower, each of the nearest
``retrieval.candidates`` items). The ranking
score is w_rating·(rating - 1)/4 + w_click·click + w_purchase·purchase, with the export's
default weights unless the request passes three of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from mtrec import names as F

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


# What collect_catalog reads from each transformed example.
CATALOG_COLUMNS = (ITEM_ID_XF, *ITEM_DENSE_XF, *F.ITEM_MULTIVALENT_XF)


def collect_catalog(dataset: tf.data.Dataset, item_vocabulary: list[bytes]) -> Catalog:
    """The first occurrence of each in-vocabulary item in ``dataset`` (transformed batches
    holding at least CATALOG_COLUMNS). Reading stops once every item has been seen."""
    rows: dict[int, dict[str, Any]] = {}
    for batch in dataset:
        indices = batch[ITEM_ID_XF].numpy().reshape(-1)
        fresh: dict[int, int] = {}  # Item index -> its first row in this batch.
        for row, index in enumerate(indices.tolist()):
            if index < len(item_vocabulary) and index not in rows:
                fresh.setdefault(index, row)
        if not fresh:
            continue
        dense = {key: batch[key].numpy().reshape(len(indices), -1)[:, 0] for key in ITEM_DENSE_XF}
        bags = {
            key: tf.sparse.to_dense(batch[key], default_value=-1).numpy()
            for key in F.ITEM_MULTIVALENT_XF
        }
        for index, row in fresh.items():
            rows[index] = {
                **{k: v[row] for k, v in dense.items()},
                **{k: [t for t in v[row] if t >= 0] for k, v in bags.items()},
            }
        if len(rows) == len(item_vocabulary):
            break
    if not rows:
        raise ValueError("no known item in the training data: cannot build a catalog")
    order = sorted(rows, key=lambda index: int(item_vocabulary[index]))
    width = {key: max(1, max(len(rows[i][key]) for i in order)) for key in F.ITEM_MULTIVALENT_XF}
    bags = {
        key: np.array(
            [rows[i][key] + [-1] * (width[key] - len(rows[i][key])) for i in order], dtype=np.int64
        )
        for key in F.ITEM_MULTIVALENT_XF
    }
    return Catalog(
        item_ids=np.array([int(item_vocabulary[i]) for i in order], np.int64),
        dense={key: np.array([rows[i][key] for i in order]) for key in ITEM_DENSE_XF},
        bags=bags,
    )


def attach_catalog(module: tf.Module, catalog: Catalog) -> None:
    """Save ``catalog`` with ``module`` as variables, not as constants that a function would
    capture into the graph proto."""
    module.catalog_item_ids = tf.Variable(catalog.item_ids, trainable=False, name="item_ids")
    module.catalog_dense = {
        key: tf.Variable(value, trainable=False, name=key) for key, value in catalog.dense.items()
    }
    module.catalog_bags = {
        key: tf.Variable(padded.astype(np.int64), trainable=False, name=key)
        for key, padded in catalog.bags.items()
    }


def with_catalog_features(
    module: tf.Module,
    raw: dict[str, tf.Tensor],
    transformed: dict[str, Any],
    missing: dict[str, Any],
) -> dict[str, Any]:
    """``transformed`` where a request named a catalog item by its id alone (every item
    feature at its missing value, ``missing``): that row takes the item's features from the
    catalog (``attach_catalog``), so an item scores the same whether the client sends its
    features or not, as in ``recommend``. Unknown items, and rows giving any item feature,
    are left as they are. No ``tf.cond`` to skip the fill: it cost ids-only requests more than
    it saved the others (README, "Model and export")."""
    item_ids = module.catalog_item_ids
    ids = tf.reshape(raw[F.ITEM_ID], [-1])
    row = tf.minimum(tf.searchsorted(item_ids, ids), tf.size(item_ids, tf.int32) - 1)
    absent = [
        tf.equal(raw[key], tf.constant(missing[key], raw[key].dtype)) for key in F.ITEM_FEATURES
    ]
    fill = tf.equal(tf.gather(item_ids, row), ids) & tf.reduce_all(
        tf.concat([tf.reshape(a, [tf.size(ids), -1]) for a in absent], axis=1), axis=1
    )
    out = dict(transformed)
    for key, table in module.catalog_dense.items():
        if key == ITEM_ID_XF:  # A known item's own index is the catalog's.
            continue
        own = transformed[key]
        theirs = tf.reshape(tf.gather(table, row), tf.shape(own))
        out[key] = tf.where(tf.reshape(fill, [-1] + [1] * (own.shape.rank - 1)), theirs, own)
    for key, table in module.catalog_bags.items():
        own = tf.sparse.to_dense(transformed[key], default_value=-1)
        theirs = tf.gather(table, row)
        width = tf.maximum(tf.shape(own)[1], tf.shape(theirs)[1])
        own = tf.pad(own, [[0, 0], [0, width - tf.shape(own)[1]]], constant_values=-1)
        theirs = tf.pad(theirs, [[0, 0], [0, width - tf.shape(theirs)[1]]], constant_values=-1)
        out[key] = item_features({}, {key: tf.where(fill[:, None], theirs, own)})[key]
    return out


def blended_score(
    rating: tf.Tensor, click: tf.Tensor, purchase: tf.Tensor, weights: tf.Tensor
) -> tf.Tensor:
    """The ranking score: the rating mapped from [1, 5] to [0, 1], and both probabilities."""
    return weights[0] * (rating - 1.0) / 4.0 + weights[1] * click + weights[2] * purchase


def make_recommend_fn(
    module: tf.Module,
    model: Any,
    catalog: Catalog,
    input_spec: dict[str, Any],
    default_blend: tuple[float, float, float],
) -> Any:
    """A tf.function for the ``recommend`` signature over ``model`` and ``module.transform_graph``;
    the catalog (``attach_catalog``, first) and the retrieval index's variables are saved with
    ``module``.

    With the model's retrieval tower and ``retrieval.candidates`` > 0, a BruteForce top-k
    over the catalog's item embeddings picks the candidates first, and only those are scored
    by the heads; otherwise every catalog item is.
    """
    size = len(catalog)
    item_ids, dense, bags = module.catalog_item_ids, module.catalog_dense, module.catalog_bags
    default = tf.constant(default_blend, tf.float32)
    retrieve = model.config.retrieval.candidates if model.retrieval is not None else 0
    if retrieve:
        import tensorflow_recommenders as tfrs

        index = tfrs.layers.factorized_top_k.BruteForce(
            k=min(retrieve, size), name="retrieval_index"
        )
        every_item = item_features(
            {key: tf.constant(value) for key, value in catalog.dense.items()},
            {key: tf.constant(padded, tf.int64) for key, padded in catalog.bags.items()},
        )
        index.index(model.candidate_embeddings(every_item), tf.range(size, dtype=tf.int64))
        # Its variables, not the Keras layer (see export_model).
        module.retrieval_index_variables = list(index.variables)
    signature = [
        tf.TensorSpec([None], input_spec[key].dtype, name=key) for key in F.USER_INPUT_KEYS
    ]
    signature += [
        tf.TensorSpec([None], tf.int64, name="k"),
        tf.TensorSpec([None], tf.int64, name="exclude"),
        tf.TensorSpec([None], tf.float32, name="blend"),
    ]

    @tf.function(input_signature=signature, autograph=False)
    def recommend(
        user_id: tf.Tensor,
        age: tf.Tensor,
        gender: tf.Tensor,
        occupation: tf.Tensor,
        zip_prefix: tf.Tensor,
        history: tf.Tensor,
        k: tf.Tensor,
        exclude: tf.Tensor,
        blend: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        given = dict(
            zip(
                F.USER_INPUT_KEYS,
                (user_id, age, gender, occupation, zip_prefix, history),
                strict=True,
            )
        )
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
        user = module.transform_graph(raw)
        if retrieve:  # Enough nearest items that excluding the seen ones leaves `retrieve`.
            query = model.query_embeddings({key: user[key] for key in F.USER_XF})
            wanted_rows = tf.minimum(retrieve + tf.size(exclude), size)
            _, rows = index(query, k=wanted_rows)
            rows = tf.reshape(rows, [-1])
        else:
            rows = tf.range(size, dtype=tf.int64)
        count = tf.size(rows)
        features = {key: tf.repeat(user[key][:1], count, axis=0) for key in F.USER_XF}
        features.update(
            item_features(
                {key: tf.gather(v, rows) for key, v in dense.items()},
                {key: tf.gather(v, rows) for key, v in bags.items()},
            )
        )
        heads = model(features, training=False)
        weights = tf.cond(tf.size(blend) == 3, lambda: blend, lambda: default)
        score = blended_score(heads[F.RATING], heads[F.CLICK], heads[F.PURCHASE], weights)
        candidate_ids = tf.gather(item_ids, rows)
        # Binary search in the sorted exclusion list: O((candidates + excluded) log excluded),
        # where comparing every candidate with every excluded item was their product.
        exclude = tf.cond(
            tf.size(exclude) > 0, lambda: exclude, lambda: history_items(raw[F.HISTORY])
        )
        banned = tf.sort(exclude)
        excluded = tf.searchsorted(banned, candidate_ids, side="right") > tf.searchsorted(
            banned, candidate_ids, side="left"
        )
        score = tf.where(excluded, tf.constant(-np.inf, tf.float32), score)
        remaining = count - tf.reduce_sum(tf.cast(excluded, tf.int32))
        wanted = tf.cond(tf.size(k) > 0, lambda: tf.cast(k[0], tf.int32), lambda: 10)
        top = tf.math.top_k(score, tf.minimum(tf.maximum(wanted, 0), remaining))
        return {
            "item_id": tf.gather(candidate_ids, top.indices),
            "score": top.values,
            **{head: tf.gather(heads[head], top.indices) for head in F.HEADS},
        }

    return recommend


def history_items(history: tf.Tensor) -> tf.Tensor:
    """The item ids in a batch of history strings (tokens "item" or "item:rating"), flat;
    a token whose item is not an integer id is skipped."""
    tokens = tf.strings.split(tf.reshape(history, [-1])).flat_values
    items = tf.strings.split(tokens, sep=F.HISTORY_RATING_SEPARATOR, maxsplit=1)
    items = items.to_tensor(default_value="", shape=[None, 2])[:, 0]
    items = tf.boolean_mask(items, tf.strings.regex_full_match(items, r"-?[0-9]{1,18}"))
    return tf.strings.to_number(items, tf.int64)


def item_features(
    dense: dict[str, tf.Tensor], bags: dict[str, tf.Tensor]
) -> dict[str, tf.Tensor | tf.SparseTensor]:
    """Catalog rows as model inputs: dense features as they are, padded bags (-1) sparse."""
    features: dict[str, tf.Tensor | tf.SparseTensor] = dict(dense)
    for key, padded in bags.items():
        where = tf.where(padded >= 0)
        features[key] = tf.SparseTensor(
            where, tf.gather_nd(padded, where), tf.shape(padded, tf.int64)
        )
    return features
