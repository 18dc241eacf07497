"""The Kubeflow V2 compile path and the command line's help."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtrec.cli.main import build_parser, main
from tests.support.synthetic import make_movielens_dir

REPO = Path(__file__).resolve().parents[2]

SUBCOMMANDS = (
    "data",
    "run",
    "inspect",
    "report",
    "serve",
    "query",
    "tf-serving-config",
    "score",
    "recommend",
    "compile-kubeflow",
)


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
        "MtrecExampleGen",
        "StatisticsGen",
        "CuratedSchemaGen",
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
        "MtrecExampleGen",
    }
    assert set(tasks["Pusher"]["dependentTasks"]) == {"Evaluator", "Trainer", "ServingValidator"}
    assert "baseline_model_resolver-model-resolver" in tasks["Evaluator"]["dependentTasks"]
    # The data component is the first node: it reads the raw logs where the cluster runs,
    # nothing is built on this machine first.
    assert "dependentTasks" not in tasks["MtrecExampleGen"]
    params = tasks["MtrecExampleGen"]["inputs"]["parameters"]
    assert params["input_base"]["runtimeValue"]["constant"] == ("gs://bucket/mtrec/ml-100k")
    assert "u.data" in params["input_config"]["runtimeValue"]["constant"]
    # One training run, no span: no runtime parameter, TFX's own ExampleGen driver.
    assert "inputDefinitions" not in spec["root"] and "range_config" not in params
    driver = spec["deploymentSpec"]["executors"]["MtrecExampleGen_executor"]["container"]
    assert driver["lifecycle"]["preCacheCheck"]["command"] == [
        "python",
        "-m",
        "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver",
    ]
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
    # Nothing in the spec points at this machine: the schema comes from the installed package.
    assert str(REPO) not in text and "site-packages" not in text


def _evaluation_settings(spec_file) -> dict:
    spec = json.loads(spec_file.read_text())["pipelineSpec"]
    parameters = spec["root"]["dag"]["tasks"]["Evaluator"]["inputs"]["parameters"]
    value = parameters["evaluation_settings"]["runtimeValue"]["constant"]
    return json.loads(value)


def test_kubeflow_takes_the_evaluation_options_of_run(tmp_path, capsys):
    """compile-kubeflow takes run's threshold options; the rest follow the data where the
    Evaluator runs (the rating bound, the slices big enough), nothing is read here."""
    output = tmp_path / "spec.json"
    args = [
        "compile-kubeflow",
        "--image",
        "img:1",
        "--pipeline-root",
        "gs://b/m",
        "--interactions",
        "gs://b/logs/",
        "--output",
        str(output),
        "--min-auc",
        "0.7",
        "--slice-min-auc",
        "0.52",
        "--rmse-tolerance",
        "0.05",
        "--min-slice-size",
        "50",
    ]
    assert main(args) == 0
    assert _evaluation_settings(output)["overrides"] == {
        "min_auc": 0.7,
        "slice_min_auc": 0.52,
        "rmse_tolerance": 0.05,
        "min_slice_size": 50,
    }
    capsys.readouterr()
    assert main([*args, "--min-auc", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "mtrec: error: min_auc must be in [0, 1], got 1.5"


def test_help_lists_every_subcommand_and_each_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in listing
    for command in (["data", "fetch"], ["data", "build"], *([c] for c in SUBCOMMANDS[1:])):
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
        (
            ["--valid-split", "random"],
            "mtrec: error: --valid-split random applies to --train-ratings/--eval-ratings only",
        ),
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


def test_data_fetch_reuses_the_cached_copy_and_data_build_writes_the_splits(tmp_path, capsys):
    cached = make_movielens_dir(tmp_path / "cache" / "ml-100k", n_users=50, n_items=40)
    assert main(["data", "fetch", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().out.strip() == str(cached)  # Found, nothing downloaded.
    out = tmp_path / "out"
    assert main(["data", "build", "--output-dir", str(out), "--movielens-dir", str(cached)]) == 0
    printed = capsys.readouterr().out
    (root,) = (out / "data").iterdir()
    assert printed.startswith(f"Examples written to {root}\n")
    splits = json.loads(printed.split("\n", 1)[1])
    assert set(splits) == {"train", "valid", "eval"}
    for name, counts in splits.items():
        assert counts["examples"] == 5 * counts["clicks"] > 0  # Four negatives per click.
        assert list((root / f"Split-{name}").glob("data_tfrecord-*.gz"))


def test_tf_serving_config_writes_files_the_real_server_reads(tmp_path, capsys):
    from mtrec.serving import config

    out, push = tmp_path / "tfs", tmp_path / "push"
    args = ["tf-serving-config", "--output-dir", str(out), "--push-dir", str(push)]
    assert main([*args, "--model_name", "recs", "--model_base_path", "/models/recs"]) == 0
    printed = capsys.readouterr().out
    (spec,) = config.read_model_config_file(str(out / "models.config"))
    assert (spec.name, spec.base_path) == ("recs", "/models/recs")
    assert config.read_batching_file(str(out / "batching.config")) == config.BatchingConfig()
    assert f"-v {push.resolve()}:/models/recs" in printed
    assert "--model_config_file=/config/models.config" in printed
    assert "--enable_batching=true --batching_parameters_file=/config/batching.config" in printed


def test_tensorflow_input_errors_are_one_line_and_verbose_adds_the_traceback(monkeypatch, capsys):
    import tensorflow as tf

    from mtrec.cli import data

    def fails(args):
        raise tf.errors.InvalidArgumentError(
            None,
            None,
            "Key: zip_prefix.  Data types don't match. Expected type: 1\n\t [[{{node}}]]",
        )

    monkeypatch.setattr(data, "cmd_data_fetch", fails)
    assert main(["data", "fetch"]) == 2
    err = capsys.readouterr().err
    assert err == ("mtrec: error: Key: zip_prefix.  Data types don't match. Expected type: 1\n")
    assert main(["-v", "data", "fetch"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("mtrec: error: Key: zip_prefix.")
