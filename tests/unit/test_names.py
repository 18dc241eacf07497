"""Names and defaults shared across rooms agree wherever they are used."""

from pathlib import Path

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils

from mtrec import names as F
from mtrec.data import build
from mtrec.data.config import CURATED_SCHEMA
from mtrec.models.export import serving_feature_spec


def test_missing_values_in_the_examples_take_the_shared_defaults():
    """A missing year is 0 ("unknown", which Transform fills with the training mean), not
    the median of the known years that data building used to write. Every example goes
    through ``finish_row``: a value missing from the row and its side tables, or None
    there, takes the shared default; a known one is kept."""
    users = {1: {F.USER_ID: 1, F.GENDER: "F"}, 2: {F.USER_ID: 2, F.GENDER: None}}
    items = {1: {F.ITEM_ID: 1, F.YEAR: 1990}, 2: {F.ITEM_ID: 2, F.YEAR: None}}
    rows = [
        {F.USER_ID: 1, F.ITEM_ID: 1},
        {F.USER_ID: 2, F.ITEM_ID: 2},
        {F.USER_ID: 3, F.ITEM_ID: 3, F.YEAR: 2000, F.GENDER: "M"},  # Not in the side tables.
    ]
    filled = [build.finish_row(dict(row), users, items, {}) for row in rows]
    assert [r[F.YEAR] for r in filled] == [1990, F.MISSING_DEFAULTS[F.YEAR], 2000]
    assert [r[F.GENDER] for r in filled] == ["F", "unknown", "M"]
    for column in (F.AGE, F.OCCUPATION, F.ZIP_PREFIX, F.GENRES, F.TITLE, F.TIMESTAMP):
        assert [r[column] for r in filled] == [F.MISSING_DEFAULTS[column]] * 3, column
    # The slice columns derived from the defaults: unknown age and genres.
    assert {r[F.AGE_BUCKET] for r in filled} == {"unknown"}
    assert [r[F.GENRE] for r in filled] == [["unknown"]] * 3


def test_a_request_without_a_feature_gets_the_same_default_as_the_examples():
    schema = text_format.Parse(Path(CURATED_SCHEMA).read_text(), schema_pb2.Schema())
    spec = serving_feature_spec(schema_utils.schema_as_feature_spec(schema).feature_spec)
    assert set(spec) == set(F.MODEL_INPUT_KEYS)
    for key, default in F.MISSING_DEFAULTS.items():
        if key in spec:
            value = spec[key].default_value
            value = value[0] if isinstance(value, list) else value
            assert value == default, key


def test_headline_metrics_and_counts_cover_every_head():
    assert set(F.HEAD_METRICS) == set(F.COUNT_METRIC) == set(F.HEADS)
    assert {F.HEAD_METRICS[head][0] for head in F.HEADS} <= set(F.HIGHER_IS_BETTER)
    assert F.SPLITS == (F.TRAIN, F.VALID, F.EVAL)


def test_lists_are_joined_for_the_joined_features_only():
    assert F.join_values(F.HISTORY, ["50:5", 172, "181:4"]) == "50:5 172 181:4"
    assert F.join_values(F.GENRES, ["Action", "Comedy"]) == "Action|Comedy"
    assert F.join_values(F.HISTORY, "50:5 172") == "50:5 172"
    assert F.join_values(F.USER_ID, [1, 2]) == [1, 2]  # Not joined: refused downstream.
