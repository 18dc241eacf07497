"""The data fingerprint each model was trained on, read back from a real MLMD SQLite store.

The store is written the way TFX's local launcher writes it (its portable publishing
utilities: contexts, a registered execution with its exec properties, published outputs),
so the Trainer's custom_config is stored exactly as in a pipeline run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata
from tfx.orchestration.portable import execution_publish_utils
from tfx.orchestration.portable.mlmd import context_lib
from tfx.proto.orchestration import pipeline_pb2
from tfx.types import standard_artifacts
from tfx.utils import json_utils

from mtrec import names as F
from mtrec.cli.run import format_summary
from mtrec.results import inspection, store
from mtrec.results.inspection import Inspection, SliceMetrics

PIPELINE = "mtrec"
TRAINER = "tfx.components.trainer.component.Trainer"
EVALUATOR = "tfx.components.evaluator.component.Evaluator"


def _contexts(handle: metadata.Metadata, run_id: str, node: str) -> list:
    specs = pipeline_pb2.NodeContexts()
    for type_name, name in (
        ("pipeline", PIPELINE),
        ("pipeline_run", run_id),
        ("node", f"{PIPELINE}.{node}"),
    ):
        spec = specs.contexts.add()
        spec.type.name = type_name
        spec.name.field_value.string_value = name
    return context_lib.prepare_contexts(handle, specs)


def _execute(
    handle: metadata.Metadata,
    run_id: str,
    node: str,
    type_name: str,
    inputs: dict | None = None,
    outputs: dict | None = None,
    exec_properties: dict | None = None,
    state: str = "complete",
) -> dict:
    """One node's execution in ``run_id``, published as TFX's launcher does: ``complete``
    (new outputs), ``cached`` (``outputs`` are an earlier execution's), ``failed``, or
    ``running`` (registered only)."""
    contexts = _contexts(handle, run_id, node)
    execution = execution_publish_utils.register_execution(
        handle,
        metadata_store_pb2.ExecutionType(name=type_name),
        contexts,
        input_artifacts=inputs,
        exec_properties=exec_properties,
    )
    if state == "cached":
        execution_publish_utils.publish_cached_executions(
            handle, contexts, [execution], output_artifacts_maps=[outputs or {}]
        )
        return outputs or {}
    if state == "failed":
        execution_publish_utils.publish_failed_execution(handle, contexts, execution.id)
        return {}
    if state == "running":
        return {}
    published, _ = execution_publish_utils.publish_succeeded_execution(
        handle, execution.id, contexts, output_artifacts=outputs
    )
    return published


def _train(handle: metadata.Metadata, root: Path, run_id: str, custom_config: dict | str):
    """A Trainer execution as TFX records it: custom_config is a JSON exec property."""
    if isinstance(custom_config, dict):
        custom_config = json_utils.dumps(custom_config)  # As the Trainer component does.
    model = standard_artifacts.Model()
    model.uri = str(root / "Trainer" / "model" / run_id)
    published = _execute(
        handle,
        run_id,
        "Trainer",
        TRAINER,
        outputs={"model": [model]},
        exec_properties={
            "custom_config": custom_config,
            "run_fn": "mtrec.models.modules.trainer_module.run_fn",
        },
    )
    return published["model"][0]


def _evaluate(handle: metadata.Metadata, root: Path, run_id: str, model, baseline=None) -> None:
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(root / "Evaluator" / "blessing" / run_id)
    blessing.set_int_custom_property("blessed", 1)
    inputs = {"model": [model]}
    if baseline is not None:
        inputs["baseline_model"] = [baseline]
    _execute(handle, run_id, "Evaluator", EVALUATOR, inputs, {"blessing": [blessing]})


def _config(fingerprint: str | None) -> dict:
    config = {"model": {"epochs": 1}, "code_fingerprint": "c0de"}
    if fingerprint is not None:
        config["data_fingerprint"] = fingerprint
    return config


def _runs(tmp_path: Path, first: str | None, second: str | None) -> store.RunSummary:
    """Run 1 trains on ``first`` and is blessed; run 2 trains on ``second`` and is
    evaluated against run 1's model. The latest run, as `mtrec run` and `inspect` read it.
    A fingerprint (None: no such key) makes a custom_config; a JSON object is one as is."""
    path = str(tmp_path / "metadata.sqlite")
    config = metadata.sqlite_metadata_connection_config(path)

    def custom(value: str | None) -> dict | str:
        return value if isinstance(value, str) and value.startswith("{") else _config(value)

    with metadata.Metadata(config) as handle:
        old = _train(handle, tmp_path, "run-1", custom(first))
        _evaluate(handle, tmp_path, "run-1", old)
        new = _train(handle, tmp_path, "run-2", custom(second))
        _evaluate(handle, tmp_path, "run-2", new, baseline=old)
    return store.latest_run(store.open_store(path), PIPELINE)


def test_the_trainer_custom_config_is_an_exec_property_in_mlmd(tmp_path):
    """What the reader relies on: TFX stores custom_config as a JSON string property."""
    _runs(tmp_path, "aaaa1111", "bbbb2222")
    mlmd = store.open_store(str(tmp_path / "metadata.sqlite"))
    trainers = mlmd.get_executions_by_type(TRAINER)
    configs = [json.loads(t.custom_properties["custom_config"].string_value) for t in trainers]
    assert [c["data_fingerprint"] for c in configs] == ["aaaa1111", "bbbb2222"]


def test_fingerprints_of_candidate_and_baseline_are_read_through_mlmd(tmp_path):
    summary = _runs(tmp_path, "aaaa1111", "bbbb2222")
    assert summary.run_id == "run-2"
    assert summary.model_uri.endswith("run-2") and summary.baseline_model_uri.endswith("run-1")
    assert summary.data_fingerprint == "bbbb2222"
    assert summary.baseline_data_fingerprint == "aaaa1111"
    assert summary.data_warning == (
        "WARNING: the baseline model was trained on examples with data fingerprint "
        "aaaa1111, the candidate on bbbb2222: the comparison is across different data"
    )


def test_end_of_run_summary_warns_when_the_baseline_saw_other_data(tmp_path):
    text = format_summary(_runs(tmp_path, "aaaa1111", "bbbb2222"))
    warnings = [line for line in text.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        "WARNING: the baseline model was trained on examples with data fingerprint "
        "aaaa1111, the candidate on bbbb2222: the comparison is across different data"
    ]


@pytest.mark.parametrize(
    ("first", "second", "candidate", "baseline"),
    [
        ("aaaa1111", "aaaa1111", "aaaa1111", "aaaa1111"),  # Same data: nothing to say.
        (None, "bbbb2222", "bbbb2222", None),  # Baseline from before fingerprints.
        ("", "", None, None),  # A config that set none.
    ],
)
def test_no_warning_unless_both_fingerprints_are_known_and_differ(
    tmp_path, first, second, candidate, baseline
):
    summary = _runs(tmp_path, first, second)
    assert (summary.data_fingerprint, summary.baseline_data_fingerprint) == (candidate, baseline)
    assert summary.data_warning is None
    assert "WARNING" not in format_summary(summary)


def _inspection(run: store.RunSummary) -> Inspection:
    metrics = {
        F.RATING: {"root_mean_squared_error": 1.0, "mean_absolute_error": 0.8},
        F.CLICK: {"auc": 0.8},
        F.PURCHASE: {"auc": 0.7},
    }
    baseline = {F.RATING: {"root_mean_squared_error": 0.9}, F.CLICK: {"auc": 0.85}}
    overall = SliceMetrics("overall", "", "", dict.fromkeys(F.HEADS, 100.0), metrics, baseline)
    return Inspection("/eval", True, True, [], [overall], [], run=run)


def test_inspect_shows_both_fingerprints_and_the_warning(tmp_path):
    found = _inspection(_runs(tmp_path, "aaaa1111", "bbbb2222"))
    text = inspection.format_text(found)
    assert "Data fingerprint: candidate bbbb2222, baseline aaaa1111" in text
    assert (
        sum(
            line.startswith("WARNING: the baseline model was trained") for line in text.splitlines()
        )
        == 1
    )
    data = json.loads(json.dumps(found.to_json(), allow_nan=False))
    assert data["model"]["data_fingerprint"] == "bbbb2222"
    assert data["model"]["baseline_data_fingerprint"] == "aaaa1111"
    assert data["warnings"] == [found.data_warning] and "aaaa1111" in data["warnings"][0]


def test_inspect_on_the_same_data_has_no_warning(tmp_path):
    found = _inspection(_runs(tmp_path, "aaaa1111", "aaaa1111"))
    text = inspection.format_text(found)
    assert "Data fingerprint: candidate aaaa1111, baseline aaaa1111" in text
    assert "WARNING" not in text
    assert found.to_json()["warnings"] == []


def _examples(uri: str, fingerprint: str | None = None):
    examples = standard_artifacts.Examples()
    examples.uri = uri
    if fingerprint:
        examples.set_string_custom_property("data_fingerprint", fingerprint)
    return examples


def test_the_fingerprint_is_found_up_the_lineage_from_the_data_component(tmp_path):
    """The data component records it on its Examples; Transform and the Trainer pass it on."""
    path = str(tmp_path / "metadata.sqlite")
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(path)) as handle:
        raw = _execute(
            handle,
            "run-1",
            "MtrecExampleGen",
            "mtrec.components.example_gen.MtrecExampleGen",
            outputs={"examples": [_examples(str(tmp_path / "raw"), "cafe0001")]},
        )["examples"][0]
        transformed = _execute(
            handle,
            "run-1",
            "Transform",
            "tfx.components.transform.component.Transform",
            inputs={"examples": [raw]},
            outputs={"transformed_examples": [_examples(str(tmp_path / "xf"))]},
        )["transformed_examples"][0]
        model = standard_artifacts.Model()
        model.uri = str(tmp_path / "model")
        model = _execute(
            handle,
            "run-1",
            "Trainer",
            TRAINER,
            inputs={"examples": [transformed]},
            outputs={"model": [model]},
            exec_properties={"custom_config": json_utils.dumps({"code_fingerprint": "c0de"})},
        )["model"][0]
    mlmd = store.open_store(path)
    assert store.trained_data_fingerprint(mlmd, model.id) == "cafe0001"
    assert store.trained_data_fingerprint(mlmd, model.id, depth=0) is None


def test_no_warning_when_continuous_training_evaluates_on_a_later_span(tmp_path):
    summary = _runs(tmp_path, "aaaa1111", "bbbb2222")
    classic = dataclasses.replace(summary, trained_spans=[0], eval_split_of_trained=True)
    assert classic.data_warning is not None
    later_span = dataclasses.replace(summary, trained_spans=[3, 4], eval_span=5)
    assert later_span.data_warning is None


@pytest.mark.parametrize(
    "bounds, text",
    [
        ({"lower_bound": 0.7}, ">= 0.7"),
        ({"upper_bound": 1.1}, "<= 1.1"),
        # The Evaluator's hold on each binary head's example count: the eval split's size.
        ({"lower_bound": 49999.5, "upper_bound": 50000.5}, "= 50000"),
        ({"lower_bound": 0.2, "upper_bound": 0.4}, "between 0.2 and 0.4"),
    ],
)
def test_a_threshold_names_its_bounds_in_words(bounds, text):
    from google.protobuf import json_format
    from tensorflow_model_analysis.proto import config_pb2

    threshold = json_format.ParseDict({"value_threshold": bounds}, config_pb2.MetricThreshold())
    assert store.describe_bound(threshold.value_threshold) == text
