"""Kubeflow runner: compiles the same pipeline to a KFP v2 / Vertex pipeline spec.

Continuous training (logs laid out by span) compiles with one runtime parameter, ``span``:
"latest" (its default, what a recurring run with no parameter ingests) or a span number. TFX's
FileBasedExampleGen driver reads only a RangeConfig JSON, so the data component's driver in
the spec is this module's (``python -m mtrec.pipeline.kubeflow_runner``): it turns the
parameter into that RangeConfig, then runs TFX's driver.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf_keras).

from tfx.proto import range_config_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from mtrec import names as F

if TYPE_CHECKING:
    from mtrec.pipeline.config import PipelineConfig

DEFAULT_IMAGE = "ghcr.io/mtrec/mtrec:latest"
SPAN_PARAMETER = "span"
LATEST_SPAN = "latest"
RANGE_CONFIG_KEY = standard_component_specs.RANGE_CONFIG_KEY
# The data component's driver (TFX's own is tfx.orchestration.kubeflow.v2
# .file_based_example_gen.driver): the span parameter to a RangeConfig, then TFX's driver.
SPAN_DRIVER_COMMAND = ["python", "-m", "mtrec.pipeline.kubeflow_runner"]
YAML_SUFFIXES = (".yaml", ".yml")


def compile_pipeline(config: PipelineConfig, image: str, output_file: str) -> str:
    """Write the pipeline spec for ``config`` (paths must be visible to the cluster): a
    PipelineJob JSON (Vertex AI), or with a .yaml/.yml name the PipelineSpec YAML that KFP's
    client takes.

    KFP v2 compiles only TFX's built-in resolver strategies, so the baseline (and, in
    continuous training, the warm start) is the latest blessed model there, the kept schema
    the latest one, and a run trains on its own span (see create_pipeline); KFP's own step
    caching covers re-runs.
    """
    from tfx import v1 as tfx

    from mtrec.pipeline.pipeline import create_pipeline

    config = dataclasses.replace(config, baseline_strategy="latest_blessed")
    pipeline = create_pipeline(config, kubeflow=True)
    default_span = None
    if config.continuous is not None:
        span = config.continuous.span
        default_span = LATEST_SPAN if span is None else str(span)
        _example_gen(pipeline).exec_properties[RANGE_CONFIG_KEY] = (
            tfx.dsl.experimental.RuntimeParameter(
                name=SPAN_PARAMETER, ptype=str, default=default_span
            )
        )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image, use_pipeline_spec_2_1=True
        ),
    )
    job = runner.run(
        pipeline,
        parameter_values=None if default_span is None else {SPAN_PARAMETER: default_span},
        write_out=False,
    )
    spec = job["pipelineSpec"]
    spec["defaultPipelineRoot"] = config.pipeline_root  # The YAML has no runtimeConfig.
    if default_span is not None:
        spec["root"]["inputDefinitions"]["parameters"][SPAN_PARAMETER].update(
            defaultValue=default_span, isOptional=True
        )
        driver = spec["deploymentSpec"]["executors"][f"{F.EXAMPLE_GEN}_executor"]["container"]
        driver["lifecycle"]["preCacheCheck"]["command"] = list(SPAN_DRIVER_COMMAND)
    _write(job, output_file)
    return output_file


def _example_gen(pipeline: Any) -> Any:
    (node,) = (c for c in pipeline.components if c.id == F.EXAMPLE_GEN)
    return node


def _write(job: dict, output_file: str) -> None:
    """The PipelineJob as JSON, or its PipelineSpec as YAML (KFP's package format)."""
    import yaml
    from tfx.dsl.io import fileio

    directory = os.path.dirname(os.path.abspath(output_file))
    if not fileio.exists(directory):
        fileio.makedirs(directory)
    with fileio.open(output_file, "w") as out:
        if output_file.endswith(YAML_SUFFIXES):
            yaml.safe_dump(job["pipelineSpec"], out, sort_keys=True)
        else:
            json.dump(job, out, sort_keys=True)


def span_range_config(span: str) -> str:
    """The data component's range_config for the ``span`` parameter: "" for "latest" (TFX's
    driver then takes the newest span in ``span-{SPAN}/``), else that span alone."""
    text = span.strip()
    if text.lower() in ("", LATEST_SPAN):
        return ""
    if not text.isdigit():
        raise ValueError(
            f"the {SPAN_PARAMETER} parameter must be {LATEST_SPAN!r} or a span number "
            f"(e.g. 7), got {span!r}"
        )
    number = int(text)
    return proto_utils.proto_to_json(
        range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(
                start_span_number=number, end_span_number=number
            )
        )
    )


def run_span_driver(argv: list[str]) -> None:
    """The data component's driver on Kubeflow: reads the span parameter, then runs TFX's
    FileBasedExampleGen driver (span, version and fingerprint for the cache check)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.file_based_example_gen import driver

    parser = argparse.ArgumentParser(prog="mtrec-span-driver")
    parser.add_argument("--json_serialized_invocation_args", required=True)
    parser.add_argument("--json_serialized_inputs_spec_args")
    args, _ = parser.parse_known_args(argv)  # The rest are Beam's.
    executor_input = pipeline_spec_pb2.ExecutorInput()
    json_format.Parse(
        args.json_serialized_invocation_args, executor_input, ignore_unknown_fields=True
    )
    inputs = executor_input.inputs
    if RANGE_CONFIG_KEY in inputs.parameter_values:  # Pipeline spec 2.1.
        value = inputs.parameter_values[RANGE_CONFIG_KEY]
        value.string_value = span_range_config(value.string_value)
    if RANGE_CONFIG_KEY in inputs.parameters:  # 2.0.
        value = inputs.parameters[RANGE_CONFIG_KEY]
        value.string_value = span_range_config(value.string_value)
    args.json_serialized_invocation_args = json_format.MessageToJson(executor_input)
    driver.main(args)


if __name__ == "__main__":
    try:
        run_span_driver(sys.argv[1:])
    except ValueError as err:  # A bad span parameter, or no such span: the task's last line.
        print(f"mtrec: error: {err}", file=sys.stderr)
        sys.exit(2)
