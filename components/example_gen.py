"""MtrecExampleGen: the pipeline's first node, raw logs to labelled, split tf.Examples in Beam.

A FileBasedExampleGen, so TFX's own driver resolves its input patterns (and spans) and
fingerprints the files for the cache, and Kubeflow runs it as any file-based ExampleGen. Its
executor runs ``mtrec.data.build`` on the pipeline's Beam runner (DirectRunner, Flink,
Dataflow) and records what it wrote on its Examples artifact: counts per split, eval slice
sizes, the rating baseline and a data fingerprint, which ``mtrec inspect`` and the Evaluator
read back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import proto_utils

from mtrec import names as F
from mtrec.data import build
from mtrec.data.source import DataSource

SOURCE_KEY = "source"
DATA_CONFIG_KEY = "data_config"
# Custom properties of the Examples artifact.
SPLIT_COUNTS = "split_counts"
EVAL_SLICE_COUNTS = "eval_slice_counts"
RATING_BASELINE = "eval_global_mean_rmse"
DATA_FINGERPRINT = "data_fingerprint"


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs the data job on the pipeline's Beam runner; bad input fails it in one line."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        del input_dict
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config
        )
        source = json.loads(exec_properties[SOURCE_KEY])
        settings = json.loads(exec_properties[DATA_CONFIG_KEY])
        config = build.DataConfig.from_dict(settings["config"])
        roles = {split.name: split.pattern for split in input_config.splits}
        files = build.resolve_files(exec_properties[standard_component_specs.INPUT_BASE_KEY], roles)
        build.check_inputs(source["kind"], files)

        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY]
        )
        scratch = os.path.join(self._get_tmp_dir(), "data")
        summary = build.run_job(
            self._make_beam_pipeline,
            source["kind"],
            source["layout"],
            files,
            config,
            examples.uri,
            scratch,
        )
        fingerprint = build.fingerprint(
            exec_properties.get(example_gen_utils.FINGERPRINT_PROPERTY_NAME, ""), source, settings
        )
        summary = dataclasses.replace(summary, fingerprint=fingerprint)
        build.write_summary(summary, examples.uri)
        record_summary(examples, summary)
        # The driver records the span as a custom property only; as the Examples type's own
        # properties too, StatisticsGen and ExampleValidator carry it to their outputs.
        examples.span = int(exec_properties.get(example_gen_utils.SPAN_PROPERTY_NAME) or 0)
        version = exec_properties.get(example_gen_utils.VERSION_PROPERTY_NAME)
        if version is not None:
            examples.version = int(version)


def record_summary(examples: types.Artifact, summary: build.DataSummary) -> None:
    """Split names and the summary as the Examples artifact's properties, for MLMD readers."""
    examples.split_names = artifact_utils.encode_split_names(list(F.SPLITS))
    examples.set_json_value_custom_property(SPLIT_COUNTS, summary.splits)
    examples.set_json_value_custom_property(EVAL_SLICE_COUNTS, summary.eval_slice_counts)
    if summary.eval_global_mean_rmse is not None:
        examples.set_float_custom_property(RATING_BASELINE, summary.eval_global_mean_rmse)
    examples.set_string_custom_property(DATA_FINGERPRINT, summary.fingerprint)


class MtrecExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    """FileBasedExampleGen's parameters plus the source kind and the data settings (JSON)."""

    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        SOURCE_KEY: ExecutionParameter(type=str),
        DATA_CONFIG_KEY: ExecutionParameter(type=str),
    }


class MtrecExampleGen(FileBasedExampleGen):
    """Raw logs (MovieLens, u1-style ratings or your own) to train/valid/eval Examples."""

    SPEC_CLASS = MtrecExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        source: DataSource,
        config: build.DataConfig,
        code_fingerprint: str = "",
        span: int | None = None,
    ):
        """``code_fingerprint`` hashes the data code, so a change to it re-runs the node.
        With ``{SPAN}`` in the source's patterns, ``span`` picks one (default: the newest)."""
        input_config = example_gen_pb2.Input(
            splits=[
                example_gen_pb2.Input.Split(name=role, pattern=pattern)
                for role, pattern in source.patterns
            ]
        )
        output_config = example_gen_pb2.Output(
            split_config=example_gen_pb2.SplitConfig(
                splits=[
                    example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1)
                    for name in F.SPLITS
                ]
            )
        )
        spec = MtrecExampleGenSpec(
            input_base=source.base,
            input_config=input_config,
            output_config=output_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            source=json.dumps(source.to_dict(), sort_keys=True),
            data_config=json.dumps(
                {"config": config.to_dict(), "code_fingerprint": code_fingerprint}, sort_keys=True
            ),
            range_config=None
            if span is None
            else range_config_pb2.RangeConfig(
                static_range=range_config_pb2.StaticRange(
                    start_span_number=span, end_span_number=span
                )
            ),
            examples=types.Channel(type=standard_artifacts.Examples),
        )
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
