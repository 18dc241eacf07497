"""The multi-task TFRS model: shared user/item embeddings, a sharing block (shared bottom,
MMoE or PLE), three heads.

Heads: rating (regression, loss masked to observed interactions), click and purchase
(binary; optionally ESMM: purchase = click x purchase-given-click). Each head is one
``tfrs.tasks.Ranking``; ``compute_loss`` is the one place they meet, with fixed or learned
(uncertainty) weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras

from mtrec import names as F
from mtrec.models.experts import PLE, MMoE, SharedBottom
from mtrec.models.hparams import ModelConfig
from mtrec.models.layers import MLP, serializable

SELECTION_LOSS = "selection_loss"
# Transformed feature -> the Transform vocabulary that indexes its table (the vocabulary file
# is named after the raw key: preprocessing.CATEGORICAL_KEYS and the bags of tokens). Age and
# year buckets are not vocabularies: their indices are fixed boundaries or quantiles.
VOCABULARY_FEATURES: dict[str, str] = {
    F.transformed_name(key): key
    for key in (F.USER_ID, F.ITEM_ID, F.GENDER, F.OCCUPATION, F.ZIP_PREFIX, F.GENRES, F.TITLE)
}


def without_autograph(function: Callable) -> Callable:
    """``function``, a ``tf.function`` Keras made for ``fit`` or ``evaluate``, remade to trace
    without AutoGraph. Keras's one-step train and test functions (``steps_per_execution``
    1, what ``compile`` here leaves) branch on Python values only; rewriting them and the
    helpers under them was most of the second AutoGraph cost of every Trainer (README,
    "Trainer fixed cost": about 1 s in all)."""
    python_function = getattr(function, "python_function", None)
    if python_function is None:  # run_eagerly: a plain Python function, never traced.
        return function
    return tf.function(python_function, reduce_retracing=True, autograph=False)


class ReplicaMeanLoss(tf_keras.losses.Loss):
    """Weighted mean of a per-example loss: sum(w·loss) / sum(w), scaled for tf.distribute.

    Keras's own reductions are refused under a distribution strategy outside compile(), and
    divide by the batch size rather than the weight; this reduces itself instead.
    """

    def __call__(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> tf.Tensor:
        per_example = tf.reshape(
            self.call(tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32)), [-1]
        )
        weight = (
            tf.ones_like(per_example)
            if sample_weight is None
            else tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        )
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        total = tf.reduce_sum(weight * per_example)
        return tf.math.divide_no_nan(total, tf.reduce_sum(weight)) / replicas


@serializable
class MaskedMeanSquaredError(ReplicaMeanLoss):
    """Mean squared error over the examples with weight > 0: sum(w·e²) / sum(w).

    Sampled non-interactions carry weight 0, so an unknown rating is never a target, and
    the loss does not shrink with the share of non-interactions in a batch.
    """

    def __init__(self, name: str = "masked_mse", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return tf.square(tf.reshape(y_true, [-1]) - tf.reshape(y_pred, [-1]))


@serializable
class MeanBinaryCrossentropy(ReplicaMeanLoss):
    """Binary cross-entropy on probabilities, averaged over the (weighted) examples."""

    def __init__(self, name: str = "mean_bce", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return tf_keras.losses.binary_crossentropy(
            tf.reshape(y_true, [-1, 1]), tf.reshape(y_pred, [-1, 1])
        )


@serializable
class MeanSoftmaxCrossentropy(ReplicaMeanLoss):
    """Softmax cross-entropy on logits, one row per query, averaged over the queries.

    TFRS's Retrieval default sums over the batch, which would tie the loss scale to the
    number of clicks in a batch; this keeps it comparable with the heads' mean losses.
    """

    def __init__(self, name: str = "mean_softmax_ce", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return tf_keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True)


@serializable
class SideEncoder(tf_keras.layers.Layer):
    """Embeds one side's transformed features (ids, categories, bags, numbers) into a vector.

    During training the id is replaced by its OOV bucket with probability ``id_dropout``,
    so the model learns to score an unknown user or item from its side features alone.
    With ``history_keys`` (indices into a vocabulary of ``history_cardinality`` rows, -1
    padded, and their rating z-scores) it also pools the history: mean(e_i + r_i·w).
    """

    def __init__(
        self,
        cardinalities: Mapping[str, int],
        categorical: Sequence[str],
        multivalent: Sequence[str],
        numeric: Sequence[str],
        id_key: str,
        embedding_dim: int,
        output_dim: int,
        id_dropout: float = 0.0,
        l2: float = 0.0,
        history_keys: Sequence[str] = (),
        history_cardinality: int = 0,
        history_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if history_keys and (len(history_keys) != 2 or history_cardinality < 1):
            raise ValueError("history_keys needs (indices, ratings) and a history_cardinality")
        self.history_keys = list(history_keys)
        self.history_cardinality = history_cardinality
        self.history_dropout = history_dropout
        self.history_table: tf.Variable | None = None
        self.history_rating: tf.Variable | None = None
        self.cardinalities = dict(cardinalities)
        self.categorical = list(categorical)
        self.multivalent = list(multivalent)
        self.numeric = list(numeric)
        self.id_key = id_key
        self.embedding_dim = embedding_dim
        self.output_dim = output_dim
        self.id_dropout = id_dropout
        self.l2 = l2
        self.regularizer = tf_keras.regularizers.L2(l2) if l2 else None
        self.embeddings = {
            key: tf_keras.layers.Embedding(
                self.cardinalities[key],
                embedding_dim,
                embeddings_regularizer=self.regularizer,
                name=f"{key}_emb",
            )
            for key in self.categorical
        }
        self.bag_tables: dict[str, tf.Variable] = {}
        self.projection = tf_keras.layers.Dense(output_dim, activation="relu", name="projection")

    def build(self, input_shape: Any) -> None:
        for key in self.multivalent:  # Mean-pooled tables for bags of tokens (genres, title).
            self.bag_tables[key] = self.add_weight(
                name=f"{key}_emb",
                shape=(self.cardinalities[key], self.embedding_dim),
                initializer="uniform",
                regularizer=self.regularizer,
            )
        if self.history_keys:
            self.history_table = self.add_weight(
                name="history_emb",
                shape=(self.history_cardinality, self.embedding_dim),
                initializer="uniform",
                regularizer=self.regularizer,
            )
            self.history_rating = self.add_weight(
                name="history_rating", shape=(self.embedding_dim,), initializer="zeros"
            )
        super().build(input_shape)

    def pool_history(self, inputs: Mapping[str, Any], training: bool | None = None) -> tf.Tensor:
        """[batch, embedding_dim]: the mean of the history's items with their ratings; zeros
        for an empty history. While training, a share (``history_dropout``) of examples
        lose their whole history, so the id and side features keep their weight.

        Computed as Σ e_i (a sparse [batch, items] by table product) + (Σ r_i)·w, not from
        ``history_vectors``: no [batch, length, dim] gather, whose gradient was as many
        table rows as history entries (about a fifth of a training step on MovieLens)."""
        ids, ratings, present = self.history_entries(inputs, training)
        kept = tf.where(present > 0)
        items = tf.SparseTensor(
            tf.stack([kept[:, 0], tf.gather_nd(ids, kept)], axis=1),
            tf.gather_nd(present, kept),
            tf.stack(
                [
                    tf.shape(ids, out_type=tf.int64)[0],
                    tf.shape(self.history_table, out_type=tf.int64)[0],
                ]
            ),
        )
        total = tf.sparse.sparse_dense_matmul(items, self.history_table)
        total += tf.reduce_sum(ratings * present, axis=1, keepdims=True) * self.history_rating
        count = tf.reduce_sum(present, axis=1, keepdims=True)
        return total / tf.maximum(count, 1.0)

    def history_entries(
        self, inputs: Mapping[str, Any], training: bool | None = None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """[batch, length] history item ids, their ratings, and the mask of the entries
        kept: not padding, not hidden by ``history_dropout``."""
        ids_key, ratings_key = self.history_keys
        ids = tf.cast(inputs[ids_key], tf.int64)
        ids = tf.reshape(ids, [tf.shape(ids)[0], -1])
        present = tf.cast(ids >= 0, tf.float32)
        if training and self.history_dropout:
            kept = tf.random.uniform([tf.shape(ids)[0], 1]) >= self.history_dropout
            present *= tf.cast(kept, tf.float32)
        ratings = tf.reshape(tf.cast(inputs[ratings_key], tf.float32), tf.shape(ids))
        return ids, ratings, present

    def history_vectors(
        self, inputs: Mapping[str, Any], training: bool | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """[batch, length, embedding_dim] history item vectors (e_i + r_i·w) and the [batch,
        length] mask of the entries kept (``history_entries``), for attention pooling."""
        ids, ratings, present = self.history_entries(inputs, training)
        vectors = tf.gather(self.history_table, tf.maximum(ids, 0))
        return vectors + ratings[..., None] * self.history_rating, present

    def drop_ids(self, ids: tf.Tensor, training: bool | None) -> tf.Tensor:
        """Send a random share of ids to the OOV bucket (the last index) while training."""
        if not training or not self.id_dropout:
            return ids
        oov = tf.cast(self.cardinalities[self.id_key] - 1, ids.dtype)
        dropped = tf.random.uniform(tf.shape(ids)) < self.id_dropout
        return tf.where(dropped, oov, ids)

    def call(self, inputs: Mapping[str, Any], training: bool | None = None) -> tf.Tensor:
        parts = []
        for key in self.categorical:
            ids = tf.reshape(tf.cast(inputs[key], tf.int64), [-1])
            if key == self.id_key:
                ids = self.drop_ids(ids, training)
            parts.append(self.embeddings[key](ids))
        for key in self.multivalent:
            parts.append(
                tf.nn.safe_embedding_lookup_sparse(
                    self.bag_tables[key], tf.cast(inputs[key], tf.int64), None, combiner="mean"
                )
            )
        for key in self.numeric:
            parts.append(tf.reshape(tf.cast(inputs[key], tf.float32), [-1, 1]))
        if self.history_keys:
            parts.append(self.pool_history(inputs, training))
        return self.projection(tf.concat(parts, axis=1))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "cardinalities": self.cardinalities,
            "categorical": self.categorical,
            "multivalent": self.multivalent,
            "numeric": self.numeric,
            "id_key": self.id_key,
            "embedding_dim": self.embedding_dim,
            "output_dim": self.output_dim,
            "id_dropout": self.id_dropout,
            "l2": self.l2,
            "history_keys": self.history_keys,
            "history_cardinality": self.history_cardinality,
            "history_dropout": self.history_dropout,
        }


@serializable
class Tower(tf_keras.layers.Layer):
    """A head: an MLP ending in one unit whose bias starts at ``output_bias`` (a label prior)."""

    def __init__(
        self, units: Sequence[int], dropout: float = 0.0, output_bias: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.units = list(units)
        self.dropout = dropout
        self.output_bias = output_bias
        self.mlp = MLP(units, dropout)
        self.out = tf_keras.layers.Dense(
            1, bias_initializer=tf_keras.initializers.Constant(output_bias)
        )

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return tf.squeeze(self.out(self.mlp(inputs, training=training)), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "dropout": self.dropout,
            "output_bias": self.output_bias,
        }


@serializable
class HistoryAttention(tf_keras.layers.Layer):
    """Pools the user's history against the candidate item: softmax over the history entries
    of (W·item)·e_i / sqrt(d), so the heads see the past items that bear on this candidate
    (DIN-style). Zeros for an empty or hidden history."""

    def __init__(self, dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.query = tf_keras.layers.Dense(dim, use_bias=False, name="query")

    def call(self, item: tf.Tensor, vectors: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
        query = self.query(item)  # [batch, dim]
        scores = tf.einsum("bd,bld->bl", query, vectors) / math.sqrt(self.dim)
        scores = tf.where(present > 0, scores, tf.fill(tf.shape(scores), -1e9))
        weights = tf.nn.softmax(scores, axis=1) * present  # All hidden: all zero.
        return tf.einsum("bl,bld->bd", weights, vectors)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim}


@serializable
class RetrievalTowers(tf_keras.layers.Layer):
    """Query (user) and candidate (item) embeddings for retrieval: a linear map of each
    side's shared encoding, L2-normalised, so that their dot product is a cosine."""

    def __init__(self, dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.query_layer = tf_keras.layers.Dense(dim, name="query")
        self.candidate_layer = tf_keras.layers.Dense(dim, name="candidate")

    def queries(self, user: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(self.query_layer(user), axis=-1)

    def candidates(self, item: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(self.candidate_layer(item), axis=-1)

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        user, item = inputs
        return self.queries(user), self.candidates(item)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim}


class _CatalogItems:
    """What ``set_catalog_items`` holds: a plain object, so that Keras tracks none of it and
    nothing of it is saved with the weights."""

    def __init__(self, features: dict[str, Any], rows: tf.Tensor) -> None:
        self.features = features
        self.rows = rows


@serializable
class IdBias(tf_keras.layers.Layer):
    """One learned scalar per id (zero at the start), e.g. a user's or item's rating offset."""

    def __init__(self, cardinality: int, l2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cardinality = cardinality
        self.l2 = l2
        self.table = tf_keras.layers.Embedding(
            cardinality,
            1,
            embeddings_initializer="zeros",
            embeddings_regularizer=tf_keras.regularizers.L2(l2) if l2 else None,
            name="bias",
        )

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.reshape(self.table(tf.reshape(tf.cast(ids, tf.int64), [-1])), [-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "cardinality": self.cardinality, "l2": self.l2}


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def head_metrics(head: str) -> list[tf_keras.metrics.Metric]:
    """The Keras metrics each head's task reports, named ``<head>_<metric>``."""
    if head == F.RATING:
        return [
            tf_keras.metrics.RootMeanSquaredError(name="rating_rmse"),
            tf_keras.metrics.MeanAbsoluteError(name="rating_mae"),
        ]
    return [
        tf_keras.metrics.AUC(name=f"{head}_auc"),
        tf_keras.metrics.BinaryCrossentropy(name=f"{head}_logloss"),
    ]


def sharing_block(config: ModelConfig) -> tf_keras.layers.Layer:
    """The block that gives each head its input: shared bottom, MMoE or PLE."""
    experts = config.experts
    if config.architecture == "mmoe":
        return MMoE(F.HEADS, experts.num_experts, experts.units, config.dropout, name="mmoe")
    if config.architecture == "ple":
        return PLE(
            F.HEADS,
            experts.levels,
            experts.shared_experts,
            experts.task_experts,
            experts.units,
            config.dropout,
            name="ple",
        )
    return SharedBottom(F.HEADS, config.bottom_units, config.dropout, name="shared_bottom")


@serializable
class MultiTaskRecommender(tfrs.models.Model):
    """Rating, click and purchase heads over shared user and item representations.

    ``cardinalities`` maps each transformed categorical feature to its bucket count (from
    the Transform vocabularies); ``priors`` holds the training label means used to start
    each head's output at the right level.
    """

    def __init__(
        self,
        cardinalities: Mapping[str, int],
        config: ModelConfig | Mapping,
        priors: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = (
            config if isinstance(config, ModelConfig) else ModelConfig.from_dict(dict(config))
        )
        self.cardinalities = dict(cardinalities)
        self.priors = {F.RATING: 3.5, F.CLICK: 0.2, F.PURCHASE: 0.1, **(priors or {})}
        cfg = self.config
        user_categorical = [k for k in F.USER_CATEGORICAL_XF if k in self.cardinalities]
        item_categorical = [k for k in F.ITEM_CATEGORICAL_XF if k in self.cardinalities]
        self.user_encoder = SideEncoder(
            self.cardinalities,
            user_categorical,
            [],
            F.USER_NUMERIC_XF,
            id_key=F.transformed_name(F.USER_ID),
            embedding_dim=cfg.embedding_dim,
            output_dim=cfg.side_dim,
            id_dropout=cfg.id_dropout,
            l2=cfg.l2,
            history_keys=F.USER_HISTORY_XF if cfg.history else (),
            history_cardinality=self.cardinalities.get(F.transformed_name(F.ITEM_ID), 0),
            history_dropout=cfg.history_dropout,
            name="user_encoder",
        )
        self.item_encoder = SideEncoder(
            self.cardinalities,
            item_categorical,
            F.ITEM_MULTIVALENT_XF,
            F.ITEM_NUMERIC_XF,
            id_key=F.transformed_name(F.ITEM_ID),
            embedding_dim=cfg.embedding_dim,
            output_dim=cfg.side_dim,
            id_dropout=cfg.id_dropout,
            l2=cfg.l2,
            name="item_encoder",
        )
        self.history_attention = (
            HistoryAttention(cfg.embedding_dim, name="history_attention")
            if cfg.history and cfg.history_pooling == "attention"
            else None
        )
        self.sharing = sharing_block(cfg)
        # With ESMM the purchase tower predicts p(purchase | click), whose prior is the ratio.
        purchase_prior = (
            self.priors[F.PURCHASE] / max(self.priors[F.CLICK], 1e-6)
            if cfg.esmm
            else self.priors[F.PURCHASE]
        )
        self.heads = {
            F.RATING: Tower(cfg.head_units, cfg.dropout, self.priors[F.RATING], name="rating_head"),
            F.CLICK: Tower(
                cfg.head_units, cfg.dropout, _logit(self.priors[F.CLICK]), name="click_head"
            ),
            F.PURCHASE: Tower(
                cfg.head_units, cfg.dropout, _logit(purchase_prior), name="purchase_head"
            ),
        }
        self.tasks = {
            F.RATING: tfrs.tasks.Ranking(
                loss=MaskedMeanSquaredError(), metrics=head_metrics(F.RATING), name="rating_task"
            ),
            F.CLICK: tfrs.tasks.Ranking(
                loss=MeanBinaryCrossentropy(), metrics=head_metrics(F.CLICK), name="click_task"
            ),
            F.PURCHASE: tfrs.tasks.Ranking(
                loss=MeanBinaryCrossentropy(),
                metrics=head_metrics(F.PURCHASE),
                name="purchase_task",
            ),
        }
        user_key, item_key = F.transformed_name(F.USER_ID), F.transformed_name(F.ITEM_ID)
        self.rating_biases = (
            {
                key: IdBias(self.cardinalities[key], cfg.l2, name=f"{key}_bias")
                for key in (user_key, item_key)
            }
            if cfg.rating_biases
            else None
        )
        self.retrieval = (
            RetrievalTowers(cfg.retrieval.dim, name="retrieval") if cfg.retrieval.enabled else None
        )
        self.retrieval_task = (
            tfrs.tasks.Retrieval(
                loss=MeanSoftmaxCrossentropy(),
                temperature=cfg.retrieval.temperature,
                remove_accidental_hits=True,
                name="retrieval_task",
            )
            if self.retrieval
            else None
        )
        # log p(item) among the in-batch softmaxes' candidates, for their sampling correction
        # (retrieval and the listwise click loss): among training clicks, or among all
        # training rows with retrieval.negatives "mixed"; set by fit() (set_item_frequencies)
        # and saved with the weights.
        self.item_log_probability = (
            tf.Variable(
                tf.fill([self.cardinalities[item_key]], -math.log(self.cardinalities[item_key])),
                trainable=False,
                name="item_log_probability",
            )
            if self.retrieval or cfg.click_listwise_weight > 0
            else None
        )
        # Learned loss balancing: one log-variance s per head, loss = sum exp(-s)·L + s.
        self.log_variances = (
            tf.Variable(tf.zeros([len(F.HEADS)]), name="log_variances")
            if cfg.loss_balancing == "uncertainty"
            else None
        )
        # Per epoch, train and val: each head's unweighted loss and its effective weight.
        self.loss_trackers = {head: tf_keras.metrics.Mean(name=f"{head}_loss") for head in F.HEADS}
        self.weight_trackers = {
            head: tf_keras.metrics.Mean(name=f"{head}_weight") for head in F.HEADS
        }
        self.retrieval_tracker = (
            tf_keras.metrics.Mean(name="retrieval_loss") if self.retrieval else None
        )
        self.click_listwise_tracker = (
            tf_keras.metrics.Mean(name="click_listwise_loss")
            if cfg.click_listwise_weight > 0
            else None
        )
        # The early-stopping criterion: the epoch mean of sum(fixed weight x head loss).
        # TFRS's `loss` is the last batch's value, and with learned weights the total also
        # moves with the log-variances, so neither can pick the best epoch.
        self.selection_tracker = tf_keras.metrics.Mean(name=SELECTION_LOSS)
        # Every value step_logs returns is already global, the same on every replica: fit()
        # reports the first. Keras's "auto" would sum them over the workers of a
        # MultiWorkerMirroredStrategy, scaling every metric by the number of workers.
        self.distribute_reduction_method = "first"

    def build_weights(self, features: Mapping[str, Any]) -> None:
        """Create every weight by running the layers once on a batch, without touching the
        metrics: a warm start restores values before fit() would create them. The retrieval
        towers run only inside the loss, so they are called here too."""
        _, encoded = self(features, training=False, return_encoded=True)
        if self.retrieval is not None:
            self.retrieval(encoded)

    def vocabulary_variables(self) -> list[tuple[tf.Variable, str]]:
        """Each variable whose rows are indexed by a Transform vocabulary, with that
        vocabulary's name: embedding and bag tables, rating-bias tables and the retrieval
        tower's item log-probabilities. Row ``i`` belongs to the vocabulary's token ``i``, the
        OOV bucket(s) come last, so a warm start can carry rows over by token. Needs a built
        model (``build_weights``)."""
        if not self.built or (self.retrieval is not None and not self.retrieval.built):
            raise ValueError("build the model first (build_weights) to list its tables")
        tables: list[tuple[tf.Variable, str]] = []
        for encoder in (self.user_encoder, self.item_encoder):
            for key, layer in encoder.embeddings.items():
                if key in VOCABULARY_FEATURES:
                    tables.append((layer.embeddings, VOCABULARY_FEATURES[key]))
            for key, table in encoder.bag_tables.items():
                tables.append((table, VOCABULARY_FEATURES[key]))
            if encoder.history_table is not None:  # History entries are item ids.
                tables.append((encoder.history_table, F.ITEM_ID))
        for key, bias in (self.rating_biases or {}).items():
            tables.append((bias.table.embeddings, VOCABULARY_FEATURES[key]))
        if self.item_log_probability is not None:
            tables.append((self.item_log_probability, F.ITEM_ID))
        return tables

    def set_item_frequencies(self, counts: Any) -> None:
        """Set p(item) for the in-batch softmaxes' correction from per-index click counts."""
        counts = tf.cast(tf.reshape(counts, [-1]), tf.float32) + 1.0  # Add-one smoothing.
        self.item_log_probability.assign(tf.math.log(counts / tf.reduce_sum(counts)))

    def query_embeddings(self, features: Mapping[str, Any]) -> tf.Tensor:
        """The retrieval tower's user embeddings (needs ``retrieval.enabled``)."""
        return self.retrieval.queries(self.user_encoder(features, training=False))

    def candidate_embeddings(self, features: Mapping[str, Any]) -> tf.Tensor:
        """The retrieval tower's item embeddings (needs ``retrieval.enabled``)."""
        return self.retrieval.candidates(self.item_encoder(features, training=False))

    @staticmethod
    def pair_input(user: tf.Tensor, item: tf.Tensor) -> tf.Tensor:
        """User and item vectors and their product: what the sharing block reads."""
        return tf.concat([user, item, user * item], axis=1)

    def encode(
        self, features: Mapping[str, Any], training: bool | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The shared user and item vectors of each row: what the heads and the in-batch
        softmaxes read (one encoding per step serves both)."""
        return (
            self.user_encoder(features, training=training),
            self.item_encoder(features, training=training),
        )

    def sharing_input(
        self,
        features: Mapping[str, Any],
        training: bool | None = None,
        encoded: tuple[tf.Tensor, tf.Tensor] | None = None,
    ) -> tf.Tensor:
        """The sharing block's input (``pair_input``) for each row of a batch, from
        ``encoded`` (``encode``) when given."""
        user, item = encoded if encoded is not None else self.encode(features, training)
        pair = self.pair_input(user, item)
        if self.history_attention is None:
            return pair
        vectors, present = self.user_encoder.history_vectors(features, training)
        return tf.concat([pair, self.history_attention(item, vectors, present)], axis=1)

    def gate_weights(self, features: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """The MMoE/PLE gates' mixture weights for a batch (empty for a shared bottom)."""
        return self.sharing.gate_weights(self.sharing_input(features, training=False))

    def call(
        self,
        features: Mapping[str, Any],
        training: bool | None = None,
        return_encoded: bool = False,
    ) -> dict | tuple[dict, tuple[tf.Tensor, tf.Tensor]]:
        """Each head's prediction; with ``return_encoded``, also the user and item vectors
        (``encode``) they were computed from, for the losses that read them too."""
        encoded = self.encode(features, training)
        towers = self.sharing(self.sharing_input(features, training, encoded), training=training)
        logits = {head: self.heads[head](towers[head], training=training) for head in F.HEADS}
        if self.rating_biases is not None:
            logits[F.RATING] += sum(bias(features[key]) for key, bias in self.rating_biases.items())
        click = tf.sigmoid(logits[F.CLICK])
        purchase = tf.sigmoid(logits[F.PURCHASE])
        if self.config.esmm:  # p(purchase) = p(click) · p(purchase | click).
            purchase = click * purchase
        predictions = {F.RATING: logits[F.RATING], F.CLICK: click, F.PURCHASE: purchase}
        return (predictions, encoded) if return_encoded else predictions

    def loss_weights(self) -> dict[str, tf.Tensor]:
        """Each head's effective loss weight: fixed, or exp(-s) when learned."""
        if self.log_variances is None:
            return {head: tf.constant(w) for head, w in self.config.loss_weights.items()}
        return {head: tf.exp(-self.log_variances[i]) for i, head in enumerate(F.HEADS)}

    def compute_loss(self, features: Mapping[str, Any], training: bool = False) -> tf.Tensor:
        # One encoding of the batch for the heads and the in-batch softmaxes: encoding it
        # twice cost about a fifth of a training step (README, "Trainer input"). Through
        # __call__, so that a first call builds the encoders under the model's name scope.
        predictions, encoded = self(features, training=training, return_encoded=True)
        weights = self.loss_weights()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        total = selection = tf.constant(0.0)
        column = lambda t: tf.reshape(tf.cast(t, tf.float32), [-1, 1])  # noqa: E731
        for index, (head, task) in enumerate(self.tasks.items()):
            # Keras metrics average over the last axis, so each task sees [batch, 1].
            sample_weight = column(features[F.RATING_WEIGHT_XF]) if head == F.RATING else None
            loss = task(
                labels=column(features[F.LABEL_XF[head]]),
                predictions=column(predictions[head]),
                sample_weight=sample_weight,
                training=training,
            )
            self.loss_trackers[head].update_state(loss * replicas)
            self.weight_trackers[head].update_state(weights[head])
            total += weights[head] * loss
            selection += self.config.loss_weights[head] * loss
            if self.log_variances is not None:  # Losses are summed over replicas.
                total += self.log_variances[index] / replicas
        listwise = self.config.click_listwise_weight > 0
        pairs = (
            self.clicked_pairs(features, training, encoded)
            if self.retrieval is not None or listwise
            else None
        )
        if self.retrieval is not None:
            loss = self.retrieval_loss(features, training, pairs, encoded)
            self.retrieval_tracker.update_state(loss * replicas)
            total += self.config.retrieval.loss_weight * loss
        if listwise:  # Like retrieval: outside the early-stopping criterion (selection).
            loss = self.click_listwise_loss(features, training, pairs)
            self.click_listwise_tracker.update_state(loss * replicas)
            total += self.config.click_listwise_weight * loss
        self.selection_tracker.update_state(selection * replicas)
        return total

    def make_train_function(self, force: bool = False) -> Callable:
        """Keras's train function, traced without AutoGraph (``without_autograph``)."""
        if self.train_function is None or force:
            super().make_train_function(force)
            self.train_function = self.train_tf_function = without_autograph(self.train_function)
        return self.train_function

    def make_test_function(self, force: bool = False) -> Callable:
        """Keras's test function, traced without AutoGraph (``without_autograph``)."""
        if self.test_function is None or force:
            self.test_function = without_autograph(super().make_test_function(force))
        return self.test_function

    # The steps' Python control flow depends on the config only, never on a tensor, so
    # AutoGraph need not rewrite them (nor, below them, every layer and metric): that
    # rewriting was most of the first epoch's time (about 70% of a 26 s trace).
    @tf.autograph.experimental.do_not_convert
    def train_step(self, inputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """TFRS's train step, with the regularization loss scaled for tf.distribute (as
        Keras's compile() scales it), so that L2 does not grow with the replica count."""
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization = self.regularization_loss()
            total = loss + regularization
        gradients = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        return self.step_logs(loss, regularization)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, inputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        return self.step_logs(self.compute_loss(inputs, training=False), self.regularization_loss())

    def regularization_loss(self) -> tf.Tensor:
        """This replica's share of the layers' regularization losses."""
        if not self.losses:
            return tf.constant(0.0)
        return tf.add_n(self.losses) / tf.distribute.get_strategy().num_replicas_in_sync

    def step_logs(self, loss: tf.Tensor, regularization: tf.Tensor) -> dict[str, tf.Tensor]:
        """Keras's per-step logs: the (synced) metric results and the losses, summed over
        the replicas that each hold a share of them, so every replica returns global values."""
        summed = tf.distribute.get_replica_context().all_reduce(
            "SUM", tf.stack([tf.cast(loss, tf.float32), tf.cast(regularization, tf.float32)])
        )
        logs = {metric.name: metric.result() for metric in self.metrics}
        logs.update(loss=summed[0], regularization_loss=summed[1], total_loss=summed[0] + summed[1])
        return logs

    @staticmethod
    def clicks_and_ids(features: Mapping[str, Any]) -> tuple[tf.Tensor, tf.Tensor]:
        """Which rows of a batch are clicked, and every row's item id (flat)."""
        clicked = tf.reshape(features[F.LABEL_XF[F.CLICK]], [-1]) > 0
        ids = tf.reshape(tf.cast(features[F.transformed_name(F.ITEM_ID)], tf.int64), [-1])
        return clicked, ids

    def clicked_pairs(
        self,
        features: Mapping[str, Any],
        training: bool | None,
        encoded: tuple[tf.Tensor, tf.Tensor] | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The batch's P clicked rows: user vectors, item vectors and item ids, what the
        in-batch softmaxes (retrieval, listwise click) read; from ``encoded`` when given."""
        clicked, ids = self.clicks_and_ids(features)
        users, items = encoded if encoded is not None else self.encode(features, training)
        return (
            tf.boolean_mask(users, clicked),
            tf.boolean_mask(items, clicked),
            tf.boolean_mask(ids, clicked),
        )

    def with_unclicked(
        self, features: Mapping[str, Any], items: tf.Tensor, ids: tf.Tensor, vectors: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The clicked rows' item vectors and ids (``items``, ``ids``) followed by the
        batch's unclicked rows' (of the batch's item ``vectors``): the candidates of the
        "mixed" retrieval softmax."""
        clicked, all_ids = self.clicks_and_ids(features)
        return (
            tf.concat([items, tf.boolean_mask(vectors, ~clicked)], axis=0),
            tf.concat([ids, tf.boolean_mask(all_ids, ~clicked)], axis=0),
        )

    def retrieval_loss(
        self,
        features: Mapping[str, Any],
        training: bool,
        pairs: tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None = None,
        encoded: tuple[tf.Tensor, tf.Tensor] | None = None,
    ) -> tf.Tensor:
        """In-batch softmax over the batch's clicked pairs (``pairs``: ``clicked_pairs``, when
        already computed): each user against the other clicked items (with
        ``retrieval.negatives`` "mixed", every other item of the batch), corrected by log
        p(item) and with accidental hits removed. A batch without a click (a small replica
        batch, or the empty batch a worker gets once its share of the data is used up) adds 0."""
        if encoded is None:  # One encoding (one dropout draw) for the pairs and the rest.
            encoded = self.encode(features, training)
        users, items, ids = (
            pairs if pairs is not None else self.clicked_pairs(features, training, encoded)
        )
        if self.config.retrieval.negatives == "catalog":
            return self.catalog_retrieval_loss(users, ids, training)
        if self.config.retrieval.negatives == "mixed":  # The batch's other rows after them.
            items, ids = self.with_unclicked(features, items, ids, encoded[1])
        queries, candidates = self.retrieval((users, items))
        probability = tf.exp(tf.gather(self.item_log_probability, ids))
        return tf.cond(  # TFRS's accidental-hit removal fails on an empty [0, 0] batch.
            tf.size(users) > 0,
            lambda: self.retrieval_task(
                queries,
                candidates,
                candidate_sampling_probability=probability,
                candidate_ids=ids,
                compute_metrics=False,
                compute_batch_metrics=False,
            ),
            lambda: tf.constant(0.0),
        )

    def set_catalog_items(
        self, features: Mapping[str, Any], rows: Sequence[int] | tf.Tensor
    ) -> None:
        """The items the "catalog" retrieval softmax scores each clicked pair against: their
        transformed features (one row per item), and for each item-vocabulary index its row
        there (-1: not in the catalog). Training inputs only, held outside the weights."""
        self._catalog_items = _CatalogItems(dict(features), tf.constant(rows, tf.int64))

    def catalog_retrieval_loss(
        self, users: tf.Tensor, ids: tf.Tensor, training: bool | None
    ) -> tf.Tensor:
        """Full softmax of each clicked user against every catalog item (``set_catalog_items``),
        the clicked item the label: no sampling, so no log p(item) correction and no
        accidental hits. Clicked items outside the catalog (OOV) are left out."""
        catalog = getattr(self, "_catalog_items", None)
        if catalog is None:
            raise ValueError(
                "retrieval.negatives 'catalog' needs the catalog's items: pass fit() a catalog"
            )
        rows = tf.gather(catalog.rows, ids)
        known = rows >= 0
        queries = self.retrieval.queries(tf.boolean_mask(users, known))
        candidates = self.retrieval.candidates(self.item_encoder(catalog.features, training))
        logits = tf.matmul(queries, candidates, transpose_b=True)
        logits /= self.config.retrieval.temperature
        labels = tf.one_hot(tf.boolean_mask(rows, known), tf.shape(candidates)[0])
        return MeanSoftmaxCrossentropy()(labels, logits)  # 0 for a batch without a click.

    def click_pair_logits(
        self, users: tf.Tensor, items: tf.Tensor, training: bool | None
    ) -> tf.Tensor:
        """[P, P] click logits of every (user i, item j) pair, through the click head's own
        path: ``pair_input``, the sharing block, the click tower."""
        count = tf.shape(users)[0]
        user = tf.repeat(users, count, axis=0)  # Row i·P + j pairs user i ...
        item = tf.tile(items, [count, 1])  # ... with item j.
        towers = self.sharing(self.pair_input(user, item), training=training)
        return tf.reshape(self.heads[F.CLICK](towers[F.CLICK], training=training), [count, count])

    def click_listwise_loss(
        self,
        features: Mapping[str, Any],
        training: bool,
        pairs: tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None = None,
    ) -> tf.Tensor:
        """Softmax cross-entropy of each clicked pair's click logit against the same user
        with the batch's other clicked items, corrected by log p(item) and with accidental
        hits removed, as in ``retrieval_loss`` (an empty batch adds 0 there too)."""
        users, items, ids = pairs if pairs is not None else self.clicked_pairs(features, training)
        logits = self.click_pair_logits(users, items, training)
        logits -= tf.gather(self.item_log_probability, ids)[tf.newaxis, :]
        labels = tf.eye(tf.size(ids))
        return tf.cond(  # The accidental-hit removal fails on an empty [0, 0] batch.
            tf.size(ids) > 0,
            lambda: MeanSoftmaxCrossentropy()(
                labels, tfrs.layers.loss.RemoveAccidentalHits()(labels, logits, ids)
            ),
            lambda: tf.constant(0.0),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "cardinalities": self.cardinalities,
            "config": self.config.to_dict(),
            "priors": self.priors,
        }
