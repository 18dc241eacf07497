"""Feature, label and slice names: the one place every other module takes them from."""

from __future__ import annotations

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

# Columns written for TFMA slicing only; the model never reads them.
AGE_BUCKET = "age_bucket"
USER_ACTIVITY = "user_activity"  # cold / warm, by the user's training interactions.
ITEM_POPULARITY = "item_popularity"  # cold / mid / popular, by the item's training clicks.
GENRE = "genre"  # The item's genres as a multivalent list: an example is in each genre slice.

USER_FEATURES: tuple[str, ...] = (AGE, GENDER, OCCUPATION, ZIP_PREFIX)
ITEM_FEATURES: tuple[str, ...] = (GENRES, YEAR, TITLE)
# What a serving request carries: ids plus side features, never labels.
MODEL_INPUT_KEYS: tuple[str, ...] = (USER_ID, ITEM_ID, *USER_FEATURES, *ITEM_FEATURES)

INT_COLUMNS: tuple[str, ...] = (USER_ID, ITEM_ID, CLICK, PURCHASE, TIMESTAMP, AGE, YEAR)
FLOAT_COLUMNS: tuple[str, ...] = (RATING,)
STRING_COLUMNS: tuple[str, ...] = (
    GENDER, OCCUPATION, ZIP_PREFIX, GENRES, TITLE, AGE_BUCKET, USER_ACTIVITY, ITEM_POPULARITY,
)
STRING_LIST_COLUMNS: tuple[str, ...] = (GENRE,)
# Every column of the pipeline's input examples, in file order.
EXAMPLE_COLUMNS: tuple[str, ...] = (
    USER_ID, ITEM_ID, RATING, CLICK, PURCHASE, TIMESTAMP,
    AGE, GENDER, OCCUPATION, ZIP_PREFIX, GENRES, YEAR, TITLE,
    AGE_BUCKET, USER_ACTIVITY, ITEM_POPULARITY, GENRE,
)

SLICE_FEATURES: tuple[str, ...] = (
    GENDER, AGE_BUCKET, OCCUPATION, USER_ACTIVITY, ITEM_POPULARITY, GENRE,
)

# Transformed-feature names (outputs of preprocessing_fn).
RATING_WEIGHT = "rating_weight"
AGE_Z = "age_z"
YEAR_Z = "year_z"
YEAR_BUCKET = "year_bucket"


def transformed_name(key: str) -> str:
    """Name of the Transform output derived from raw feature ``key``."""
    return f"{key}_xf"


# Transformed categorical features embedded by the model, per side.
USER_CATEGORICAL_XF: tuple[str, ...] = tuple(
    transformed_name(k) for k in (USER_ID, GENDER, OCCUPATION, ZIP_PREFIX, AGE_BUCKET)
)
ITEM_CATEGORICAL_XF: tuple[str, ...] = tuple(
    transformed_name(k) for k in (ITEM_ID, YEAR_BUCKET)
)
ITEM_MULTIVALENT_XF: tuple[str, ...] = tuple(transformed_name(k) for k in (GENRES, TITLE))
USER_NUMERIC_XF: tuple[str, ...] = (transformed_name(AGE_Z),)
ITEM_NUMERIC_XF: tuple[str, ...] = (transformed_name(YEAR_Z),)
LABEL_XF: dict[str, str] = {head: transformed_name(head) for head in HEADS}
RATING_WEIGHT_XF = transformed_name(RATING_WEIGHT)
