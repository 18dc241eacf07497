"""MtrecTransform's executor against TFX's own on the same examples: the same graph and the
same transformed examples, read and written through the batched I/O."""

from __future__ import annotations

import glob
import inspect
from pathlib import Path

import pytest

from tests.support import multi_worker as mw

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _examples(folder: str) -> list[tuple]:
    """Every tf.Example under ``folder`` as a sorted tuple of (feature, values), sorted.
    Floats are rounded to 5 decimals: TFT's means and variances are sums whose order
    follows how Beam batched the examples, so they may differ in the last bits."""
    import tensorflow as tf

    files = sorted(glob.glob(f"{folder}/*.gz"))
    assert files, folder
    rows = []
    for record in tf.data.TFRecordDataset(files, "GZIP").as_numpy_iterator():
        features = tf.train.Example.FromString(record).features.feature
        rows.append(
            tuple(
                (key, tuple(_rounded(getattr(value, value.WhichOneof("kind")).value)))
                for key, value in sorted(features.items())
            )
        )
    return sorted(rows)


def _rounded(values) -> list:
    return [round(v, 5) if isinstance(v, float) else v for v in values]


@pytest.fixture(scope="module")
def transformed(tmp_path_factory) -> tuple[mw.TransformOutput, mw.TransformOutput]:
    """The same tiny examples through TFX's Transform executor and through mtrec's."""
    from tfx.components.transform import executor as transform_executor

    root = tmp_path_factory.mktemp("transform")
    examples = mw.build_examples(root, n_users=40, n_items=60)
    tfx_output = mw.run_transform(examples, root / "tfx", transform_executor.Executor)
    mtrec_output = mw.run_transform(examples, root / "mtrec")
    return tfx_output, mtrec_output


def test_mtrec_transform_writes_what_tfxs_transform_writes(transformed):
    tfx_output, mtrec_output = transformed
    for split in mw.SPLITS:
        ours = _examples(f"{mtrec_output.transformed}/Split-{split}")
        theirs = _examples(f"{tfx_output.transformed}/Split-{split}")
        assert len(ours) > 100 and ours == theirs, split
    assets = sorted(Path(tfx_output.graph, "transform_fn", "assets").iterdir())
    assert {a.name for a in assets} >= {"user_id", "item_id", "genres", "title"}
    for asset in assets:
        ours = Path(mtrec_output.graph, "transform_fn", "assets", asset.name)
        assert ours.read_bytes() == asset.read_bytes(), asset.name


def test_mtrec_transform_writes_gzip_level_1_files_named_as_tfx_names_them(transformed):
    tfx_output, mtrec_output = transformed
    for output, extra_flags in ((mtrec_output, 4), (tfx_output, 0)):
        files = sorted(Path(output.transformed, "Split-train").iterdir())
        assert files and all(
            f.name.startswith("transformed_examples-") and f.name.endswith(".gz") for f in files
        )
        # The gzip header's XFL byte: 4 for zlib's fastest level, 0 for its default.
        assert {f.read_bytes()[8] for f in files} == {extra_flags}


def test_batched_reader_decodes_what_tfxios_reader_decodes(transformed, tmp_path):
    """Same record batches as TFXIO's TFExampleRecord, projected and with raw records."""
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.testing.util import assert_that, equal_to
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.tfxio import tf_example_record

    from mtrec import names as F
    from mtrec.components.transform import BatchedExampleRecord
    from mtrec.data.config import CURATED_SCHEMA

    schema = text_format.Parse(Path(CURATED_SCHEMA).read_text(), schema_pb2.Schema())
    pattern = f"{transformed[0].examples}/Split-valid/*"
    kwargs = dict(file_pattern=pattern, schema=schema, raw_record_column_name="raw")
    ours = BatchedExampleRecord(**kwargs).Project([F.USER_ID, F.HISTORY])
    theirs = tf_example_record.TFExampleRecord(**kwargs).Project([F.USER_ID, F.HISTORY])
    assert ours.ArrowSchema() == theirs.ArrowSchema()
    assert set(ours.ArrowSchema().names) == {F.USER_ID, F.HISTORY, "raw"}

    def rows(batches: list[pa.RecordBatch]) -> list[tuple]:
        table = pa.Table.from_batches(batches)
        return sorted(
            map(repr, zip(*(table.column(n).to_pylist() for n in table.column_names), strict=True))
        )

    expected = rows(list(theirs.RecordBatches(_options())))
    assert len(expected) > 100
    with beam.Pipeline() as pipeline:
        batches = pipeline | ours.BeamSource(batch_size=7)
        assert_that(batches | beam.combiners.ToList() | beam.Map(rows), equal_to([expected]))


def _options():
    from tfx_bsl.tfxio import dataset_options

    return dataset_options.RecordBatchesOptions(batch_size=1000, shuffle=False, num_epochs=1)


def test_tfxs_executor_still_makes_its_processor_by_the_module_name():
    """MtrecTransformExecutor swaps ``executor.TransformProcessor`` while TFX's ``Do`` runs;
    a TFX release that builds the processor another way must fail here, not go unnoticed."""
    from tfx.components.transform import executor as transform_executor

    from mtrec.components.transform import MtrecTransform, MtrecTransformExecutor

    assert "TransformProcessor().Transform(" in inspect.getsource(transform_executor.Executor.Do)
    assert MtrecTransform.EXECUTOR_SPEC.executor_class is MtrecTransformExecutor
    assert transform_executor.TransformProcessor.__module__ == transform_executor.__name__
