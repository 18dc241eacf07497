"""Names and defaults shared across rooms agree wherever they are used."""

from pathlib import Path

import numpy as np
import pandas as pd
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils

from mtrec import names as F
from mtrec.data import dataset
from mtrec.models.export import serving_feature_spec


def test_missing_values_in_the_examples_take_the_shared_defaults():
    """A missing year is 0 ("unknown", which Transform fills with the training mean), not
    the median of the known years that data building used to write."""
    frame = pd.DataFrame(
        {
            F.USER_ID: [1, 2, 3],
            F.ITEM_ID: [1, 2, 3],
            F.YEAR: [1990.0, np.nan, 2000.0],
            F.GENDER: ["F", None, "M"],
        }
    )
    filled = dataset.fill_defaults(frame)
    assert filled[F.YEAR].tolist() == [1990, F.MISSING_DEFAULTS[F.YEAR], 2000]
    assert filled[F.GENDER].tolist() == ["F", "unknown", "M"]
    for column in (F.AGE, F.OCCUPATION, F.ZIP_PREFIX, F.GENRES, F.TITLE, F.TIMESTAMP):
        assert filled[column].tolist() == [F.MISSING_DEFAULTS[column]] * 3


def test_a_request_without_a_feature_gets_the_same_default_as_the_examples():
    schema = text_format.Parse(Path(dataset.CURATED_SCHEMA).read_text(), schema_pb2.Schema())
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
