"""The curated schema accepts what data building writes, unknown values included."""

from pathlib import Path

import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from mtrec import names as F
from mtrec.data import build, source
from mtrec.data.config import CURATED_SCHEMA, DataConfig
from tests.support.synthetic import make_movielens_dir


def test_examples_with_an_unknown_year_match_the_curated_schema(tmp_path):
    """MovieLens-100K has a movie without a release date: its examples carry the missing
    year (0, as names.MISSING_DEFAULTS says) and must not be an anomaly."""
    directory = make_movielens_dir(tmp_path / "ml", n_users=60, n_items=40, undated_items=(3,))
    root, _ = build.run(source.movielens(str(directory)), DataConfig(), str(tmp_path / "data"))
    schema = text_format.Parse(Path(CURATED_SCHEMA).read_text(), schema_pb2.Schema())
    for split in F.SPLITS:
        statistics = tfdv.generate_statistics_from_tfrecord(
            str(Path(root) / f"Split-{split}" / "*"),
            output_path=str(tmp_path / f"{split}_stats.tfrecord"),
        )
        years = next(
            f for f in statistics.datasets[0].features if f.path.step == [F.YEAR]
        ).num_stats
        anomalies = tfdv.validate_statistics(statistics, schema)
        assert dict(anomalies.anomaly_info) == {}, split
        if split == F.TRAIN:
            assert years.min == F.MISSING_DEFAULTS[F.YEAR] and years.max > 1900
