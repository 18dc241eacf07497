"""tf.Transform analysis outside TFX, for the benchmarks and tests: the real
``preprocessing_fn`` over the curated schema, written where TFX's Transform would."""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow_transform as tft


def analyze(train_pattern: str, out_dir: Path, telemetry: str = "mtrec") -> tft.TFTransformOutput:
    """Analyze the training examples at ``train_pattern`` into ``out_dir/transform``, with the
    raw schema recorded beside the graph as TFX's Transform executor does. A re-run in the
    same ``out_dir`` starts clean."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
    from tfx_bsl.public import tfxio

    from mtrec.data.config import CURATED_SCHEMA
    from mtrec.models.preprocessing import preprocessing_fn

    for stale in ("transform", "tmp"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    schema = text_format.Parse(Path(CURATED_SCHEMA).read_text(), schema_pb2.Schema())
    source = tfxio.TFExampleRecord(
        file_pattern=train_pattern, schema=schema, telemetry_descriptors=[telemetry]
    )
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(out_dir / "tmp")):
        transform_fn = (
            pipeline | source.BeamSource(),
            source.TensorAdapterConfig(),
        ) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(out_dir / "transform"))
    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata(schema),
        str(out_dir / "transform" / tft.TFTransformOutput.RAW_METADATA_DIR),
    )
    return tft.TFTransformOutput(str(out_dir / "transform"))
