"""The Transform graph: vocabularies with OOV buckets, scaling, bucketizing, tokenising.

Every vocabulary is computed here from the training split and travels with the exported
model, so nothing in the model is hard-coded to one data set.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from mtrec import names as F

# One OOV bucket per vocabulary: unknown ids share it, and id dropout trains it.
NUM_OOV_BUCKETS = 1
AGE_BOUNDARIES = (18.0, 25.0, 35.0, 45.0, 50.0, 56.0)
YEAR_BUCKETS = 10
TITLE_TOP_K = 5_000
TITLE_MIN_FREQUENCY = 2
Z_CLIP = 5.0
NUMBER = r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?"
CATEGORICAL_KEYS = (F.USER_ID, F.ITEM_ID, F.GENDER, F.OCCUPATION, F.ZIP_PREFIX)


def _dense(tensor: tf.Tensor | tf.SparseTensor, default: Any) -> tf.Tensor:
    """A single-valued feature as a rank-1 tensor; a missing value becomes ``default``."""
    if isinstance(tensor, tf.SparseTensor):
        tensor = tf.sparse.to_dense(
            tf.SparseTensor(tensor.indices, tensor.values, [tensor.dense_shape[0], 1]),
            default_value=default,
        )
    return tf.reshape(tensor, [-1])


def _known_number(values: tf.Tensor, buckets: int = 0) -> tuple[tf.Tensor, tf.Tensor, Any]:
    """A number whose unknown values (<= 0, e.g. a feature a request left out) take the
    training mean of the known ones, so that a missing age or year is neutral rather than
    extreme: the filled values, their clipped z-score against the training split, and (given
    ``buckets``) the known values' quantile boundaries.

    Every statistic comes from the known values in one analysis pass: the filled column's
    mean is the known mean and its variance the known variance times the share known. (Its
    analyzers reading the filled column made Transform read the training split twice.)"""
    known = values > 0
    known_values = tf.boolean_mask(values, known)
    mean = tf.cast(tft.mean(known_values), values.dtype)
    share = tft.mean(tf.cast(known, tf.float32))
    deviation = tf.sqrt(tf.cast(tft.var(known_values), tf.float32) * share)
    filled = tf.where(known, values, mean)
    z_score = tf.math.divide_no_nan(tf.cast(filled - mean, tf.float32), deviation)
    boundaries = tft.quantiles(known_values, buckets, epsilon=0.01) if buckets else None
    return filled, tf.clip_by_value(z_score, -Z_CLIP, Z_CLIP), boundaries


def _as_string(tensor: tf.Tensor) -> tf.Tensor:
    return tensor if tensor.dtype == tf.string else tf.strings.as_string(tensor)


def _tokens(text: tf.Tensor, separator: str | None) -> tf.SparseTensor:
    """Split strings into a [batch, None] sparse tensor of tokens."""
    if separator is None:  # Title words: lower-cased alphanumeric runs.
        text = tf.strings.regex_replace(tf.strings.lower(text), r"[^a-z0-9]+", " ")
        return tf.strings.split(text).to_sparse()
    return tf.strings.split(text, sep=separator).to_sparse()


def _finite_or_zero(value: tf.Tensor) -> tf.Tensor:
    return tf.where(tf.math.is_finite(value), value, tf.zeros_like(value))


def _history(text: tf.Tensor, item_vocabulary: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """History strings to [batch, HISTORY_LENGTH] item-vocabulary indices (-1 pads; an item
    Transform never saw takes the OOV bucket) and rating z-scores (0: unknown or padding).
    The ratings are scaled by the known history ratings of the training split."""
    tokens = tf.strings.split(text)[:, : F.HISTORY_LENGTH]  # Whitespace; empty tokens dropped.
    pieces = tf.strings.split(tokens.flat_values, sep=F.HISTORY_RATING_SEPARATOR, maxsplit=1)
    pieces = pieces.to_tensor(default_value="", shape=[None, 2])
    items = tft.apply_vocabulary(pieces[:, 0], item_vocabulary, num_oov_buckets=NUM_OOV_BUCKETS)
    known = tf.strings.regex_full_match(pieces[:, 1], NUMBER)
    rating = tf.strings.to_number(tf.where(known, pieces[:, 1], "0"), tf.float32)
    # Logs without ratings leave both undefined (0/0): every history rating is then unknown.
    mean = _finite_or_zero(tft.mean(tf.boolean_mask(rating, known)))
    deviation = _finite_or_zero(tf.sqrt(tft.var(tf.boolean_mask(rating, known))))
    scaled = tf.math.divide_no_nan(rating - mean, deviation)
    rating_z = tf.where(known, tf.clip_by_value(scaled, -Z_CLIP, Z_CLIP), 0.0)
    shape = [None, F.HISTORY_LENGTH]
    splits = tokens.row_splits
    return (
        tf.RaggedTensor.from_row_splits(items, splits).to_tensor(default_value=-1, shape=shape),
        tf.RaggedTensor.from_row_splits(rating_z, splits).to_tensor(default_value=0.0, shape=shape),
    )


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict | None = None) -> dict:
    """Raw tf.Example features to the model's transformed features and labels."""
    del custom_config  # Accepted so the cache key can carry a code fingerprint.
    outputs: dict[str, Any] = {}
    vocabularies = {}
    for key in CATEGORICAL_KEYS:
        values = _as_string(_dense(inputs[key], default=_empty(inputs[key])))
        vocabularies[key] = tft.vocabulary(values, vocab_filename=key)
        outputs[F.transformed_name(key)] = tft.apply_vocabulary(
            values, vocabularies[key], num_oov_buckets=NUM_OOV_BUCKETS
        )
    history, ratings = _history(_dense(inputs[F.HISTORY], default=""), vocabularies[F.ITEM_ID])
    outputs[F.HISTORY_XF] = history
    outputs[F.HISTORY_RATING_XF] = ratings

    age, outputs[F.transformed_name(F.AGE_Z)], _ = _known_number(
        tf.cast(_dense(inputs[F.AGE], default=0), tf.float32)
    )
    outputs[F.transformed_name(F.AGE_BUCKET)] = tft.apply_buckets(
        age, bucket_boundaries=tf.constant([AGE_BOUNDARIES])
    )
    year, outputs[F.transformed_name(F.YEAR_Z)], boundaries = _known_number(
        tf.cast(_dense(inputs[F.YEAR], default=0), tf.float32), YEAR_BUCKETS
    )
    outputs[F.transformed_name(F.YEAR_BUCKET)] = tft.apply_buckets(year, boundaries)

    genres = _tokens(_dense(inputs[F.GENRES], default=""), F.GENRE_SEPARATOR)
    outputs[F.transformed_name(F.GENRES)] = tft.compute_and_apply_vocabulary(
        genres, num_oov_buckets=NUM_OOV_BUCKETS, vocab_filename=F.GENRES
    )
    title = _tokens(_dense(inputs[F.TITLE], default=""), separator=None)
    outputs[F.transformed_name(F.TITLE)] = tft.compute_and_apply_vocabulary(
        title,
        top_k=TITLE_TOP_K,
        frequency_threshold=TITLE_MIN_FREQUENCY,
        num_oov_buckets=NUM_OOV_BUCKETS,
        vocab_filename=F.TITLE,
    )

    # Labels. Rating is unknown on non-interactions: it becomes 0 with weight 0, so neither
    # the loss nor TFMA ever treats it as a target.
    rating = inputs[F.RATING]
    if isinstance(rating, tf.SparseTensor):
        observed = tf.SparseTensor(
            rating.indices, tf.ones_like(rating.values, tf.float32), [rating.dense_shape[0], 1]
        )
        outputs[F.RATING_WEIGHT_XF] = _dense(observed, default=0.0)
    else:
        outputs[F.RATING_WEIGHT_XF] = tf.ones_like(_dense(rating, 0.0), tf.float32)
    outputs[F.LABEL_XF[F.RATING]] = tf.cast(_dense(rating, default=0.0), tf.float32)
    for head in F.BINARY_HEADS:
        outputs[F.LABEL_XF[head]] = tf.cast(_dense(inputs[head], default=0), tf.float32)
    return outputs


def _empty(tensor: tf.Tensor | tf.SparseTensor) -> Any:
    return "" if tensor.dtype == tf.string else 0
