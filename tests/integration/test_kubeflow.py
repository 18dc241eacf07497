"""Continuous training compiled for Kubeflow V2: the span as a runtime parameter ("latest" by
default), TFX's built-in resolvers in place of the local runner's custom ones, and the data
component's driver that reads the parameter (run here on local span folders)."""

import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from mtrec.cli.main import main
from mtrec.pipeline import kubeflow_runner

IMAGE = "registry.example.com/mtrec:1.2.3"
BLESSING_QUERY = (
    'schema_title="tfx.ModelBlessing" AND state=LIVE AND metadata.blessed.number_value=1'
)
MODEL_QUERY = (
    'schema_title="tfx.Model" AND state=LIVE AND name="{{$.inputs.artifacts[\'input\']'
    ".metadata['current_model_id']}}\""
)
TASKS = {
    "MtrecExampleGen",
    "StatisticsGen",
    "previous_schema_resolver",
    "SpanSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "Transform",
    "Trainer",
    "Evaluator",
    "ServingValidator",
    "Pusher",
    "baseline_model_resolver-model-blessing-resolver",
    "baseline_model_resolver-model-resolver",
}
WARM_START_TASKS = {
    "warm_start_resolver-model-blessing-resolver",
    "warm_start_resolver-model-resolver",
}


def _compile(tmp_path, name, *args):
    output = tmp_path / name
    command = ["compile-kubeflow", "--image", IMAGE, "--pipeline-root", "gs://bucket/mtrec"]
    assert main([*command, "--output", str(output), *args]) == 0
    return output


def _constant(task, name):
    return task["inputs"]["parameters"][name]["runtimeValue"]["constant"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The PipelineJob JSON of `compile-kubeflow --logs gs://bucket/logs --keep-versions 3`."""
    tmp_path = tmp_path_factory.mktemp("kubeflow")
    output = _compile(
        tmp_path, "continuous.json", "--logs", "gs://bucket/logs", "--keep-versions", "3"
    )
    return json.loads(output.read_text())


def test_the_span_is_a_runtime_parameter_defaulting_to_latest(job):
    spec = job["pipelineSpec"]
    assert spec["schemaVersion"] == "2.1.0"
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())  # Valid IR, no unknown field.
    assert spec["root"]["inputDefinitions"] == {
        "parameters": {
            "span": {"parameterType": "STRING", "defaultValue": "latest", "isOptional": True}
        }
    }
    assert job["runtimeConfig"] == {
        "gcsOutputDirectory": "gs://bucket/mtrec/pipeline_root",
        "parameterValues": {"span": "latest"},
    }
    assert spec["defaultPipelineRoot"] == "gs://bucket/mtrec/pipeline_root"
    example_gen = spec["root"]["dag"]["tasks"]["MtrecExampleGen"]
    # The data component's range_config is the parameter, read by mtrec's driver.
    assert example_gen["inputs"]["parameters"]["range_config"] == {
        "componentInputParameter": "span"
    }
    assert _constant(example_gen, "input_base") == "gs://bucket/logs"
    assert json.loads(_constant(example_gen, "input_config")) == {
        "splits": [{"name": "interactions", "pattern": "span-{SPAN}/*"}]
    }
    container = spec["deploymentSpec"]["executors"]["MtrecExampleGen_executor"]["container"]
    assert container["lifecycle"]["preCacheCheck"]["command"] == [
        "python",
        "-m",
        "mtrec.pipeline.kubeflow_runner",
    ]
    assert container["command"] == [
        "python",
        "-m",
        "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
    ]
    assert container["args"][:2] == [
        "--executor_class_path",
        "mtrec.components.example_gen.Executor",
    ]


def test_builtin_resolvers_take_the_place_of_the_custom_ones(job):
    spec = job["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == TASKS | WARM_START_TASKS  # No span window resolver.
    queries = {
        name: executor["resolver"]["outputArtifactQueries"]
        for name, executor in spec["deploymentSpec"]["executors"].items()
        if "resolver" in executor
    }
    assert queries == {
        "previous_schema_resolver_executor": {
            "schema": {"filter": 'schema_title="tfx.Schema" AND state=LIVE'}
        },
        "warm_start_resolver-model-blessing-resolver_executor": {
            "model_blessing": {"filter": BLESSING_QUERY}
        },
        "warm_start_resolver-model-resolver_executor": {"model": {"filter": MODEL_QUERY}},
        "baseline_model_resolver-model-blessing-resolver_executor": {
            "model_blessing": {"filter": BLESSING_QUERY}
        },
        "baseline_model_resolver-model-resolver_executor": {"model": {"filter": MODEL_QUERY}},
    }
    assert tasks["SpanSchemaGen"]["inputs"]["artifacts"]["previous_schema"] == {
        "taskOutputArtifact": {
            "producerTask": "previous_schema_resolver",
            "outputArtifactKey": "schema",
        }
    }
    trainer = tasks["Trainer"]
    assert trainer["inputs"]["artifacts"]["base_model"] == {
        "taskOutputArtifact": {
            "producerTask": "warm_start_resolver-model-resolver",
            "outputArtifactKey": "model",
        }
    }
    assert json.loads(_constant(trainer, "custom_config"))["warm_start"] is True
    # The run trains on its own span: this run's examples, their train split. Transform
    # only analyzes them; the Trainer reads them raw.
    own_examples = {
        "taskOutputArtifact": {"producerTask": "MtrecExampleGen", "outputArtifactKey": "examples"}
    }
    assert tasks["Transform"]["inputs"]["artifacts"]["examples"] == own_examples
    assert json.loads(_constant(tasks["Transform"], "splits_config")) == {"analyze": ["train"]}
    assert trainer["inputs"]["artifacts"]["examples"] == own_examples
    assert json.loads(_constant(trainer, "train_args")) == {"splits": ["train"]}
    assert json.loads(_constant(tasks["Pusher"], "custom_config")) == {"keep_versions": 3}


def test_vertex_runs_the_newest_span_unless_given_one(job, tmp_path):
    """Vertex's SDK builds the run from the spec offline: no parameter gives 'latest'."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    template = tmp_path / "job.json"
    template.write_text(json.dumps(job))
    common = {
        "display_name": "mtrec",
        "template_path": str(template),
        "project": "project",
        "location": "us-central1",
        "credentials": AnonymousCredentials(),
    }
    scheduled = aiplatform.PipelineJob(**common)._gca_resource.runtime_config
    assert dict(scheduled.parameter_values) == {"span": "latest"}
    assert scheduled.gcs_output_directory == "gs://bucket/mtrec/pipeline_root"
    backfill = aiplatform.PipelineJob(**common, parameter_values={"span": "7"})
    assert dict(backfill._gca_resource.runtime_config.parameter_values) == {"span": "7"}


def test_yaml_package_cold_start_and_zero_padded_spans(tmp_path, capsys):
    """Odd but valid: a YAML package (KFP's client format), --cold-start, span-0001/ folders,
    one version kept, and a bucket path with a trailing slash."""
    output = _compile(
        tmp_path,
        "kfp.yaml",
        "--logs",
        "gs://bucket/logs/",
        "--cold-start",
        "--span-digits",
        "4",
        "--keep-versions",
        "1",
    )
    assert capsys.readouterr().out.splitlines() == [
        f"Pipeline spec written to {output} (image {IMAGE})",
        "Runtime parameter 'span': 'latest' (the default) ingests the newest span in "
        "gs://bucket/logs, a number ingests that span",
    ]
    spec = yaml.safe_load(output.read_text())
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert spec["root"]["inputDefinitions"]["parameters"]["span"] == {
        "parameterType": "STRING",
        "defaultValue": "latest",
        "isOptional": True,
    }
    assert spec["defaultPipelineRoot"] == "gs://bucket/mtrec/pipeline_root"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == TASKS  # No warm-start resolver.
    assert "base_model" not in tasks["Trainer"]["inputs"]["artifacts"]
    assert json.loads(_constant(tasks["Trainer"], "custom_config"))["warm_start"] is False
    example_gen = tasks["MtrecExampleGen"]
    assert _constant(example_gen, "input_base") == "gs://bucket/logs"
    assert json.loads(_constant(example_gen, "input_config")) == {
        "splits": [{"name": "interactions", "pattern": "span-{SPAN:4}/*"}]
    }
    assert json.loads(_constant(tasks["Pusher"], "custom_config")) == {"keep_versions": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--logs", "gs://b/logs", "--window", "3"],
            "--window: Kubeflow V2 compiles no span-window resolver, so on Kubeflow each run "
            "trains on the span it ingests (see README: Kubeflow)",
        ),
        (["--logs", "gs://b/logs", "--keep-versions", "0"], "keep_versions must be at least 1"),
        (
            ["--logs", "gs://b/logs", "--interactions", "gs://b/x.csv"],
            "--logs takes the place of --movielens-dir, --interactions, --train-ratings "
            "and --train-file: give one data source",
        ),
        (["--logs", "gs://b/logs", "--span-digits", "0"], "--span-digits must be 1 to 9, got 0"),
        (["--cold-start"], "--cold-start and --span-digits go with --logs DIR"),
    ],
)
def test_bad_continuous_options_are_one_line_errors(tmp_path, capsys, args, message):
    output = tmp_path / "never.json"
    command = ["compile-kubeflow", "--image", "i:1", "--pipeline-root", "gs://b/m"]
    assert main([*command, "--output", str(output), *args]) == 2
    assert capsys.readouterr().err.strip() == f"mtrec: error: {message}"
    assert not output.exists()


def _driver_input(job, span, base, output_file):
    """What KFP hands the data component's driver: the task's parameters, the span given."""
    spec = job["pipelineSpec"]
    executor_input = pipeline_spec_pb2.ExecutorInput()
    values = executor_input.inputs.parameter_values
    for name, parameter in spec["root"]["dag"]["tasks"]["MtrecExampleGen"]["inputs"][
        "parameters"
    ].items():
        value = parameter.get("runtimeValue", {}).get("constant", span)
        if isinstance(value, str):
            values[name].string_value = value
        else:
            values[name].number_value = value
    values["input_base"].string_value = str(base)
    executor_input.outputs.output_file = str(output_file)
    examples = executor_input.outputs.artifacts["examples"].artifacts.add(uri=str(base / "out"))
    artifact_type = spec["components"]["MtrecExampleGen"]["outputDefinitions"]["artifacts"]
    json_format.ParseDict(artifact_type["examples"]["artifactType"], examples.type)
    hook = spec["deploymentSpec"]["executors"]["MtrecExampleGen_executor"]["container"]
    args = hook["lifecycle"]["preCacheCheck"]["args"]
    return [json_format.MessageToJson(executor_input) if a == "{{$}}" else a for a in args]


@pytest.mark.parametrize(("span", "resolved"), [("latest", 12), ("3", 3), (" 1 ", 1)])
def test_the_driver_reads_the_span_parameter(job, tmp_path, span, resolved):
    """mtrec's driver, then TFX's, on span folders: 'latest' is the highest number."""
    for number in (1, 3, 12):
        folder = tmp_path / f"span-{number}"
        folder.mkdir()
        (folder / "part-0.csv").write_text("user_id,item_id\n" * number)
    output_file = tmp_path / "task" / "executor_output.json"
    kubeflow_runner.run_span_driver(_driver_input(job, span, tmp_path, output_file))
    result = json.loads(output_file.read_text())["parameterValues"]
    assert result["span"] == resolved
    assert json.loads(result["input_config"]) == {
        "splits": [{"name": "interactions", "pattern": f"span-{resolved}/*"}]
    }


def test_the_driver_refuses_a_span_that_is_not_a_number(job, tmp_path):
    with pytest.raises(ValueError) as error:
        kubeflow_runner.run_span_driver(_driver_input(job, "span-3", tmp_path, tmp_path / "o"))
    assert str(error.value) == (
        "the span parameter must be 'latest' or a span number (e.g. 7), got 'span-3'"
    )


def test_the_local_pipeline_keeps_its_own_resolvers():
    """Without kubeflow=True, continuous training keeps the span window and the custom
    strategies (what `mtrec run --logs` runs)."""
    from mtrec.components.baseline_resolver import BaselineModelStrategy
    from mtrec.components.span_schema import LatestSchemaStrategy
    from mtrec.components.span_window import SpanWindowStrategy
    from mtrec.data import source
    from mtrec.pipeline.config import ContinuousSettings, PipelineConfig
    from mtrec.pipeline.pipeline import create_pipeline

    config = PipelineConfig(
        pipeline_root="gs://b/m/pipeline_root",
        source=source.spans("gs://b/logs"),
        serving_model_dir="gs://b/m/serving_model",
        schema="infer",
        continuous=ContinuousSettings(window=3),
    )
    strategies = {
        node.id: node.exec_properties["resolver_class"]
        for node in create_pipeline(config).components
        if "resolver_class" in node.exec_properties
    }
    assert strategies == {
        "previous_schema_resolver": LatestSchemaStrategy,
        "span_window_resolver": SpanWindowStrategy,
        "warm_start_resolver": BaselineModelStrategy,
        "baseline_model_resolver": BaselineModelStrategy,
    }


def test_statistics_gen_counts_top_values_with_bounded_sketches(job):
    """StatisticsGen's TFDV options, as compiled: sketch-based top-k and uniques (memory
    bounded whatever the rows), the rest TFDV's defaults."""
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    options = json.loads(_constant(tasks["StatisticsGen"], "stats_options_json"))
    assert options["_use_sketch_based_topk_uniques"] is True
    assert options["num_top_values"] == 20
