"""The Kubeflow V2 compile path and the command line's help."""

import json
import subprocess
import sys

import pytest

from mtrec.cli.main import build_parser, main

SUBCOMMANDS = ("data", "run", "inspect", "report", "compile-kubeflow")


def test_kubeflow_spec_has_every_task_on_the_given_image(tmp_path):
    output = tmp_path / "pipeline.json"
    image = "registry.example.com/mtrec:1.2.3"
    assert (
        main(
            [
                "compile-kubeflow",
                "--image",
                image,
                "--pipeline-root",
                "gs://bucket/mtrec",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    spec = json.loads(output.read_text())["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {
        "ImportExampleGen",
        "StatisticsGen",
        "ImportSchemaGen",
        "ExampleValidator",
        "AnomaliesGate",
        "Transform",
        "Trainer",
        "Evaluator",
        "ServingValidator",
        "Pusher",
        "baseline_model_resolver-model-resolver",
        "baseline_model_resolver-model-blessing-resolver",
    }
    # Anomalies stop the run before Transform; only an evaluated model that was served
    # correctly reaches the Pusher.
    assert "AnomaliesGate" in tasks["Transform"]["dependentTasks"]
    assert set(tasks["ServingValidator"]["dependentTasks"]) == {
        "Evaluator",
        "Trainer",
        "ImportExampleGen",
    }
    assert set(tasks["Pusher"]["dependentTasks"]) == {"Evaluator", "Trainer", "ServingValidator"}
    assert "baseline_model_resolver-model-resolver" in tasks["Evaluator"]["dependentTasks"]
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {image}
    text = json.dumps(spec)
    assert "mtrec.models.modules.trainer_module.run_fn" in text
    assert "mtrec.models.modules.transform_module.preprocessing_fn" in text
    assert json.loads(output.read_text())["runtimeConfig"]["gcsOutputDirectory"] == (
        "gs://bucket/mtrec/pipeline_root"
    )
    assert '\\"distribution\\": \\"multi_worker_mirrored\\"' in text  # Trainer config.


def test_help_lists_every_subcommand_and_each_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in listing
    for command in (
        ["data", "fetch"],
        ["data", "build"],
        ["run"],
        ["inspect"],
        ["report"],
        ["compile-kubeflow"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: mtrec" in capsys.readouterr().out


def test_console_script_reports_user_errors_in_one_line(tmp_path):
    missing = tmp_path / "nope.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtrec",
            "data",
            "build",
            "--output-dir",
            str(tmp_path),
            "--interactions",
            str(missing),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"mtrec: error: {missing}: no such file"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eval-fraction", "2"], "mtrec: error: eval_fraction must be in (0, 1)"),
        (["--eval-file", "b.csv"], "mtrec: error: --train-file and --eval-file go together"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["data", "build", "--output-dir", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err.strip().startswith(message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "epochs and batch_size must be positive"),
        (["--learning-rate", "-1"], "learning_rate must be positive"),
        (
            ["--model-config", '{"architecture": "moe"}'],
            "architecture must be one of ('shared_bottom', 'mmoe', 'ple'), got 'moe'",
        ),
        (["--model-config", '{"experts": {"levels": 0}}'], "experts.levels must be >= 1"),
        (["--model-config", '{"bogus": 1}'], "unknown ModelConfig keys: ['bogus']"),
        (["--model-config", "[1]"], "--model-config must be a JSON object, e.g."),
    ],
)
def test_bad_model_options_are_one_line_errors_before_any_work(tmp_path, capsys, args, message):
    ml = tmp_path / "missing-ml"  # Never read: the options are rejected first.
    ml.mkdir()
    assert (
        main(["run", "--output-dir", str(tmp_path / "out"), *args, "--movielens-dir", str(ml)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mtrec: error: {message}") and len(err.splitlines()) == 1
