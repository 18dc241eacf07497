"""MtrecTransform: TFX's Transform (same spec, analysis, graph and outputs) with its
examples read and written a batch at a time.

TFX's executor reads tf.Examples through Beam's Python TFRecord reader, one element per
record, and writes them through Beam's TFRecord sink, framing, checksumming and gzipping
(level 6) record by record in Python. On MovieLens-100K that was about a third of
Transform's time (see README, "Benchmarks"). Here each file is read by tf.data and decoded
a batch at a time, and each transformed batch is encoded and framed at once and gzipped at
level 1 (``mtrec.tfrecords``). Everything else is TFX's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from tfx import types
from tfx.components.transform import executor as transform_executor
from tfx.components.transform import labels
from tfx.components.transform.component import Transform
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx_bsl.tfxio import record_based_tfxio, tensor_representation_util, tf_example_record

from mtrec.tfrecords import FramedTFRecordSink, tfrecord_frames

_TFX_PROCESSOR = transform_executor.TransformProcessor
READ_BATCH = 1000  # Examples per decoded batch, as tfx_bsl's reader batches at most.
GZIPPED_TFRECORDS = "tfrecords_gzip"


def _files(pattern: str) -> list[str]:
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(pattern))


class _ReadAndDecode(beam.DoFn):
    """A TFRecord file to Arrow record batches of its tf.Examples: tf.data reads it in C++,
    and tfx_bsl's decoder (the one TFXIO uses) decodes each batch."""

    def __init__(self, schema: Any, batch_size: int, raw_record_column: str | None) -> None:
        self._schema = schema.SerializeToString() if schema is not None else None
        self._batch_size = batch_size
        self._raw_record_column = raw_record_column

    def setup(self) -> None:
        from tfx_bsl.coders import example_coder

        args = [self._schema] if self._schema is not None else []
        self._decoder = example_coder.ExamplesToRecordBatchDecoder(*args)

    def process(self, path: str) -> Iterator[pa.RecordBatch]:
        import tensorflow as tf

        compression = "GZIP" if path.endswith(".gz") else ""
        records = tf.data.TFRecordDataset(path, compression).batch(self._batch_size)
        for batch in records.as_numpy_iterator():
            decoded = self._decoder.DecodeBatch(batch)
            if self._raw_record_column:
                decoded = record_based_tfxio.AppendRawRecordColumn(
                    decoded, self._raw_record_column, batch.tolist()
                )
            yield decoded


class BatchedExampleRecord(tf_example_record.TFExampleRecord):
    """TFXIO's ``TFExampleRecord`` whose Beam source reads whole files a batch at a time
    (files spread over the workers) rather than one Beam element per record. A gzipped
    file cannot be split anyway, so the parallelism is the same: one file per worker."""

    def BeamSource(self, batch_size: int | None = None) -> beam.PTransform:
        patterns = list(self._file_pattern)
        read = _ReadAndDecode(
            self._GetSchemaForDecoding(), batch_size or READ_BATCH, self.raw_record_column_name
        )

        @beam.ptransform_fn
        def _source(pipeline: beam.Pipeline) -> beam.PCollection:
            return (
                pipeline
                | "Patterns" >> beam.Create(patterns)
                | "Files" >> beam.FlatMap(_files)
                | "Spread" >> beam.Reshuffle()
                | "ReadAndDecode" >> beam.ParDo(read)
            )

        return _source()

    def _ProjectImpl(self, tensor_names: list[str]) -> BatchedExampleRecord:
        schema = tensor_representation_util.ProjectTensorRepresentationsInSchema(
            self._schema, tensor_names
        )
        return BatchedExampleRecord(
            file_pattern=self._file_pattern,
            schema=schema,
            raw_record_column_name=self.raw_record_column_name,
            telemetry_descriptors=self.telemetry_descriptors,
        )


class _EncodeFrames(beam.DoFn):
    """A transformed record batch to one byte string of TFRecord frames of its tf.Examples."""

    def __init__(self, schema: Any) -> None:
        self._schema = schema

    def setup(self) -> None:
        from tfx_bsl.coders import example_coder

        self._encoder = example_coder.RecordBatchToExamplesEncoder(self._schema)

    def process(self, element: tuple[pa.RecordBatch, dict[str, pa.Array]]) -> Iterator[bytes]:
        record_batch, _ = element  # Unary pass-through features: none without pass-through keys.
        yield tfrecord_frames(self._encoder.encode(record_batch))


class MtrecTransformProcessor(_TFX_PROCESSOR):
    """TFX's TransformProcessor with batched example I/O for gzipped tf.Example TFRecords
    (what ExampleGen writes); any other format goes through TFX's own."""

    def _CreateTFXIO(self, dataset: Any, schema: Any) -> Any:
        if (
            dataset.file_format != GZIPPED_TFRECORDS
            or dataset.data_format != example_gen_pb2.FORMAT_TF_EXAMPLE
            or dataset.data_view_uri
        ):
            return super()._CreateTFXIO(dataset, schema)
        return BatchedExampleRecord(
            file_pattern=dataset.file_pattern,
            schema=schema,
            telemetry_descriptors=list(transform_executor._TELEMETRY_DESCRIPTORS),
        )

    @staticmethod
    @beam.ptransform_fn
    def _EncodeAndWrite(
        pcoll: beam.PCollection, schema: Any, file_format: str, output_path: str
    ) -> beam.pvalue.PDone:
        """Gzipped TFRecords (``<output_path>-SSSSS-of-NNNNN.gz``, as TFX names them); any
        other format TFX's way. TFX passes pass-through keys only when a subclass asks for
        them (``_GetTFXIOPassthroughKeys``), so the batches hold only transformed features."""
        if file_format != labels.FORMAT_TFRECORD:
            return pcoll | _TFX_PROCESSOR._EncodeAndWrite(schema, file_format, output_path)
        return (
            pcoll
            | "EncodeFrames" >> beam.ParDo(_EncodeFrames(schema))
            | "Write" >> beam.io.Write(FramedTFRecordSink(output_path))
        )


@contextlib.contextmanager
def _processor(processor: type[transform_executor.TransformProcessor]) -> Iterator[None]:
    """TFX's ``Executor.Do`` makes its ``TransformProcessor()`` by the module's name, with no
    hook to choose another: point that name at ``processor`` while it runs. One executor
    runs per process (each component is its own process or call), so nothing else sees it."""
    original = transform_executor.TransformProcessor
    transform_executor.TransformProcessor = processor
    try:
        yield
    finally:
        transform_executor.TransformProcessor = original


class MtrecTransformExecutor(transform_executor.Executor):
    """TFX's Transform executor running ``MtrecTransformProcessor``."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        with _processor(MtrecTransformProcessor):
            super().Do(input_dict, output_dict, exec_properties)


class MtrecTransform(Transform):
    """TFX's Transform component (same spec, parameters and outputs) with batched I/O."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(MtrecTransformExecutor)
