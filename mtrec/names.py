"""Names and defaults that several rooms must agree on: features, labels, heads and their
metrics, splits, slices, signatures, the warmup file, the cold cutoff and missing values.

Data building, Transform, export, serving, scoring and inspection all read them from here.
"""

from __future__ import annotations

import os

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"

# Labels, one per head. Rating is absent (unknown) on sampled non-interactions.
RATING = "rating"
CLICK = "click"
PURCHASE = "purchase"
HEADS: tuple[str, ...] = (RATING, CLICK, PURCHASE)
BINARY_HEADS: tuple[str, ...] = (CLICK, PURCHASE)

# User side features.
AGE = "age"
GENDER = "gender"
OCCUPATION = "occupation"
ZIP_PREFIX = "zip_prefix"
# Item side features. Genres are one string joined by GENRE_SEPARATOR.
GENRES = "genres"
YEAR = "year"
TITLE = "title"
GENRE_SEPARATOR = "|"
# The user's history: the items the user interacted with (clicked) strictly before the
# example's time, most recent first, at most HISTORY_LENGTH, as one string of tokens
# "item" or "item:rating" (rating where known) joined by HISTORY_SEPARATOR, e.g.
# "50:5 172 133:4". Built by the data job; a request passes the user's own.
HISTORY = "history"
HISTORY_SEPARATOR = " "
HISTORY_RATING_SEPARATOR = ":"
HISTORY_LENGTH = 50
# Features that are one string of joined values; a request may give them as a list.
JOINED_FEATURES: dict[str, str] = {GENRES: GENRE_SEPARATOR, HISTORY: HISTORY_SEPARATOR}


def join_values(key: str, value: object) -> object:
    """A list given for a JOINED_FEATURES feature, joined as the model reads it (history
    entries may be item ids or "item:rating" strings); any other value as it is."""
    if isinstance(value, list | tuple) and key in JOINED_FEATURES:
        return JOINED_FEATURES[key].join(str(v) for v in value)
    return value


# Columns written for TFMA slicing only; the model never reads them.
AGE_BUCKET = "age_bucket"
USER_ACTIVITY = "user_activity"  # cold / warm, by the user's training interactions.
ITEM_POPULARITY = "item_popularity"  # cold / mid / popular, by the item's training clicks.
GENRE = "genre"  # The item's genres as a multivalent list: an example is in each genre slice.

USER_FEATURES: tuple[str, ...] = (AGE, GENDER, OCCUPATION, ZIP_PREFIX)
ITEM_FEATURES: tuple[str, ...] = (GENRES, YEAR, TITLE)
# What a serving request carries: ids plus side features, never labels.
MODEL_INPUT_KEYS: tuple[str, ...] = (USER_ID, ITEM_ID, *USER_FEATURES, HISTORY, *ITEM_FEATURES)

INT_COLUMNS: tuple[str, ...] = (USER_ID, ITEM_ID, CLICK, PURCHASE, TIMESTAMP, AGE, YEAR)
# What an integer column (a tf.Example's int64 list, a model's int64 input) can hold.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_COLUMNS: tuple[str, ...] = (RATING,)
STRING_COLUMNS: tuple[str, ...] = (
    GENDER,
    OCCUPATION,
    ZIP_PREFIX,
    GENRES,
    TITLE,
    HISTORY,
    AGE_BUCKET,
    USER_ACTIVITY,
    ITEM_POPULARITY,
)
STRING_LIST_COLUMNS: tuple[str, ...] = (GENRE,)
# Every column of the pipeline's input examples, in file order.
EXAMPLE_COLUMNS: tuple[str, ...] = (
    USER_ID,
    ITEM_ID,
    RATING,
    CLICK,
    PURCHASE,
    TIMESTAMP,
    AGE,
    GENDER,
    OCCUPATION,
    ZIP_PREFIX,
    GENRES,
    YEAR,
    TITLE,
    HISTORY,
    AGE_BUCKET,
    USER_ACTIVITY,
    ITEM_POPULARITY,
    GENRE,
)

SLICE_FEATURES: tuple[str, ...] = (
    GENDER,
    AGE_BUCKET,
    OCCUPATION,
    USER_ACTIVITY,
    ITEM_POPULARITY,
    GENRE,
)

# Transformed-feature names (outputs of preprocessing_fn).
RATING_WEIGHT = "rating_weight"
AGE_Z = "age_z"
YEAR_Z = "year_z"
YEAR_BUCKET = "year_bucket"
HISTORY_RATING = "history_rating"


def transformed_name(key: str) -> str:
    """Name of the Transform output derived from raw feature ``key``."""
    return f"{key}_xf"


# Transformed categorical features embedded by the model, per side.
USER_CATEGORICAL_XF: tuple[str, ...] = tuple(
    transformed_name(k) for k in (USER_ID, GENDER, OCCUPATION, ZIP_PREFIX, AGE_BUCKET)
)
ITEM_CATEGORICAL_XF: tuple[str, ...] = tuple(transformed_name(k) for k in (ITEM_ID, YEAR_BUCKET))
ITEM_MULTIVALENT_XF: tuple[str, ...] = tuple(transformed_name(k) for k in (GENRES, TITLE))
USER_NUMERIC_XF: tuple[str, ...] = (transformed_name(AGE_Z),)
ITEM_NUMERIC_XF: tuple[str, ...] = (transformed_name(YEAR_Z),)
# The history as the model reads it: [batch, HISTORY_LENGTH] item-vocabulary indices (-1
# pads) and the ratings' z-scores (0 where unknown or padding).
HISTORY_XF = transformed_name(HISTORY)
HISTORY_RATING_XF = transformed_name(HISTORY_RATING)
USER_HISTORY_XF: tuple[str, ...] = (HISTORY_XF, HISTORY_RATING_XF)
# Everything the user side reads, raw (a request's user) and transformed (the user encoder).
USER_INPUT_KEYS: tuple[str, ...] = (USER_ID, *USER_FEATURES, HISTORY)
USER_XF: tuple[str, ...] = (*USER_CATEGORICAL_XF, *USER_NUMERIC_XF, *USER_HISTORY_XF)
LABEL_XF: dict[str, str] = {head: transformed_name(head) for head in HEADS}
RATING_WEIGHT_XF = transformed_name(RATING_WEIGHT)


# The pipeline's example splits: train fits, valid early-stops, eval is the Evaluator's.
TRAIN = "train"
VALID = "valid"
EVAL = "eval"
SPLITS: tuple[str, ...] = (TRAIN, VALID, EVAL)

# A user with at most this many training interactions is "cold" (slices and benchmarks).
COLD_USER_MAX_INTERACTIONS = 20

# What a missing or empty value becomes, in the examples and in every request. Numbers use 0
# for "unknown": the Transform graph replaces an unknown age or year with the training mean
# of the known ones, so the same rule holds in training, serving and scoring.
MISSING_DEFAULTS: dict[str, object] = {
    TIMESTAMP: 0,
    AGE: 0,
    GENDER: "unknown",
    OCCUPATION: "unknown",
    ZIP_PREFIX: "unknown",
    GENRES: "",
    YEAR: 0,
    TITLE: "",
    HISTORY: "",
}

# Signatures of the exported SavedModel.
SERVING_DEFAULT = "serving_default"
PREDICT_RAW = "predict_raw"
TRANSFORM_FEATURES = "transform_features"
RECOMMEND = "recommend"
REGRESS_RATING = "regress_rating"
CLASSIFY: dict[str, str] = {CLICK: "classify_click", PURCHASE: "classify_purchase"}
# TF Serving's method names, per API.
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# Requests TF Serving replays on a new version before serving it, inside the SavedModel.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SAVED_MODEL_FILE = "saved_model.pb"

# TFMA metrics per head (their output names), the first one being the head's headline
# metric, which also decides blessing.
HEAD_METRICS: dict[str, tuple[str, ...]] = {
    RATING: ("root_mean_squared_error", "mean_absolute_error"),
    CLICK: ("auc", "binary_crossentropy", "calibration"),
    PURCHASE: ("auc", "binary_crossentropy", "calibration"),
}
# The example count per head: rating metrics count rated examples only (weight 1).
COUNT_METRIC: dict[str, str] = {
    RATING: "weighted_example_count",
    CLICK: "example_count",
    PURCHASE: "example_count",
}
# The metric each thresholded metric class of the EvalConfig yields (what its thresholds
# hold): the headline metrics, and the binary heads' example count.
THRESHOLD_METRICS: dict[str, str] = {
    "RegressionRMSE": "root_mean_squared_error",
    "BinaryAUC": "auc",
    "BinaryExampleCount": "example_count",
}
HIGHER_IS_BETTER: dict[str, bool] = {
    "auc": True,
    "root_mean_squared_error": False,
    "mean_absolute_error": False,
    "binary_crossentropy": False,
}

# The data component's node id, which both runners look up (MLMD contexts, the KFP task).
EXAMPLE_GEN = "MtrecExampleGen"
# RequestSkewGen (`mtrec run --request-logs`): its node id, and the custom property of its
# anomalies that lists the drifted features (JSON), read back by the results room.
REQUEST_SKEW_GEN = "RequestSkewGen"
SKEWED_FEATURES = "skewed_features"
