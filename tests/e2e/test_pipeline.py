"""End to end: the real pipeline with LocalDagRunner, SQLite MLMD and Beam, on synthetic
MovieLens-shaped data (about 6,000 examples) made in the test.

One module-scoped run is shared by the tests that only read it (a fully cached re-run
changes nothing either). A test that trains again works on its own copy of that run's output
folder (``copied``), so every test passes alone and in any order. The copy's MLMD holds the
shared run, so what did not change is reused from it, and its baseline is the shared run's
blessed model."""

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mtrec import names as F
from mtrec.cli.main import main
from mtrec.data.config import CURATED_SCHEMA
from mtrec.examples import to_example, to_examples
from mtrec.models.export import SIGNATURES
from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME
from mtrec.results import store as results
from tests.support.lineage import executions, inputs, outputs
from tests.support.nodes import NODES
from tests.support.synthetic import make_interactions_csv, make_movielens_dir

ARTIFACT_TYPES = {
    "Examples",
    "Schema",
    "ExampleStatistics",
    "ExampleAnomalies",
    "TransformGraph",
    "Model",
    "ModelRun",
    "ModelEvaluation",
    "ModelBlessing",
    "InfraBlessing",
    "PushedModel",
}


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def snapshot(directory: Path) -> dict[str, float]:
    return {str(p.relative_to(directory)): p.stat().st_mtime for p in directory.rglob("*")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    # One movie without a release year, as MovieLens-100K has (item 267).
    source = make_movielens_dir(
        root / "ml", n_users=120, n_items=100, ratings_per_user=10, undated_items=(7,)
    )
    output = root / "out"
    run_args = (
        "run",
        "--output-dir",
        str(output),
        "--movielens-dir",
        str(source),
        "--epochs",
        "8",
        "--batch-size",
        "64",
        "--learning-rate",
        "0.003",
        "--min-slice-size",
        "100",
    )
    # The run gets a temp directory of its own to leave as it found it.
    system_temp = root / "system_temp"
    system_temp.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(system_temp))
        patch.setattr(tempfile, "tempdir", None)
        first = run_cli(*run_args)
        temp_left = sorted(os.listdir(system_temp))
    store = results.open_store(str(output / "metadata.sqlite"))
    summary = results.latest_run(store, DEFAULT_PIPELINE_NAME)
    return {
        "root": root,
        "output": output,
        "args": run_args,
        "first": first,
        "temp_left": temp_left,
        "summary": summary,
        "store": store,
    }


@pytest.fixture
def copied(workspace, tmp_path):
    """The shared run's output folder (examples, artifacts, MLMD, pushes) copied for one
    test to train again; the copy's MLMD still points at the shared artifacts, which are
    only read."""
    output = tmp_path / "out"
    shutil.copytree(workspace["output"], output)
    args = list(workspace["args"])
    args[args.index("--output-dir") + 1] = str(output)
    store = results.open_store(str(output / "metadata.sqlite"))
    return {**workspace, "output": output, "args": tuple(args), "store": store}


def test_every_component_executed_once_and_recorded_artifacts(workspace):
    code, stdout, stderr = workspace["first"]
    assert code == 0, stderr
    summary = workspace["summary"]
    assert sorted(c.node for c in summary.components) == sorted(NODES)
    assert {c.state for c in summary.components} == {"executed"}
    store = workspace["store"]
    recorded = {store.get_artifact_types_by_id([a.type_id])[0].name for a in store.get_artifacts()}
    assert ARTIFACT_TYPES <= recorded
    assert "Model BLESSED and pushed to" in stdout
    assert "ServingValidator: INFRA_BLESSED: served " in stdout
    assert workspace["summary"].infra_blessed is True


def test_the_trainer_reads_the_data_components_examples_and_transform_writes_none(workspace):
    """Transform only analyzes: the Trainer applies its graph to the raw examples, in a
    scratch folder of its own that the run removes (see the temp-directory test below)."""
    store = workspace["store"]
    [examples] = outputs(store, executions(store, "MtrecExampleGen")[0], "examples")
    transform = executions(store, "Transform")[0]  # The first run's; later ones are cached.
    assert [a.id for a in inputs(store, transform, "examples")] == [examples.id]
    assert outputs(store, transform, "transformed_examples") == []
    [graph] = outputs(store, transform, "transform_graph")
    trainer = executions(store, "Trainer")[0]
    assert [a.id for a in inputs(store, trainer, "examples")] == [examples.id]
    assert [a.id for a in inputs(store, trainer, "transform_graph")] == [graph.id]


def test_a_run_leaves_the_temp_directory_as_it_found_it(workspace):
    """TFX builds a 50 MB sdist of itself in a new temp directory per Beam component, and never
    deletes it; the local runner gives the run its own and removes it."""
    assert workspace["first"][0] == 0
    assert workspace["temp_left"] == []


def test_evaluator_blessed_the_model_on_every_head(workspace):
    summary = workspace["summary"]
    assert summary.blessed is True, summary.failed_thresholds
    assert summary.failed_thresholds == []
    assert set(summary.metrics) == set(F.HEADS)
    assert 0.0 < summary.metrics[F.RATING]["root_mean_squared_error"] < 1.2
    for head in F.BINARY_HEADS:
        assert 0.6 < summary.metrics[head]["auc"] <= 1.0
    # Rating metrics count observed interactions only: a fifth of eval examples.
    rated = summary.metrics[F.RATING]["weighted_example_count"]
    assert rated == pytest.approx(summary.metrics[F.CLICK]["example_count"] / 5, rel=0.01)


def test_the_data_component_recorded_its_summary_and_the_evaluator_gated_by_it(workspace):
    """Counts per split on the Examples artifact; the Evaluator's thresholds completed from
    them where it ran: the rating bound 5% under the training-mean RMSE, and exactly the
    slices with at least --min-slice-size (100) eval examples gated."""
    import tensorflow_model_analysis as tfma

    from mtrec.data.config import DataSummary

    summary = workspace["summary"]
    data = DataSummary.read(summary.examples_uri)
    assert summary.split_counts == data.splits
    assert sum(s["clicks"] for s in data.splits.values()) == 120 * 10
    assert summary.rating_baseline == pytest.approx(data.baseline_rating_rmse)
    config = tfma.load_eval_result(summary.evaluation_uri).config
    rating = next(s for s in config.metrics_specs if list(s.output_names) == [F.RATING])
    rmse = next(m for m in rating.metrics if m.class_name == "RegressionRMSE")
    overall, *per_slice = rmse.per_slice_thresholds
    bound = overall.threshold.value_threshold.upper_bound.value
    assert bound == pytest.approx(round(data.baseline_rating_rmse * 0.95, 4))
    gated = sorted(
        (key, value)
        for threshold in per_slice
        for spec in threshold.slicing_specs
        for key, value in spec.feature_values.items()
    )
    assert gated and gated == sorted(data.slices_at_least(100))


def test_pushed_model_is_a_versioned_savedmodel_that_responds(workspace):
    pushed = Path(workspace["summary"].pushed_to)
    assert pushed.parent == workspace["output"] / "serving_model"
    assert pushed.name.isdigit() and (pushed / "saved_model.pb").is_file()
    assert (pushed / F.WARMUP_FILE).is_file()  # TF Serving replays it before serving.
    loaded = tf.saved_model.load(str(pushed))
    assert set(loaded.signatures) == set(SIGNATURES)
    rows = [
        {"user_id": 1, "item_id": 1, "gender": "M", "genres": "Action"},
        {"user_id": 2, "item_id": 7, "gender": "F", "genres": "Romance"},
    ]
    outputs = loaded.signatures[F.SERVING_DEFAULT](examples=tf.constant(to_examples(rows)))
    assert set(outputs) == set(F.HEADS)
    for head in F.HEADS:
        values = outputs[head].numpy()
        assert values.shape == (2,) and np.all(np.isfinite(values))
        assert abs(values[0] - values[1]) > 1e-6


def test_mtrec_serve_and_query_over_grpc_and_rest(workspace, tmp_path):
    """The CLI as a user runs it: serve the push folder, query both APIs, stop with SIGTERM."""
    import signal
    import socket
    import subprocess
    import sys

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    grpc_port, rest_port = ports
    log = tmp_path / "serve.log"
    with log.open("w") as stderr_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mtrec",
                "serve",
                "--port",
                str(grpc_port),
                "--rest_api_port",
                str(rest_port),
                "--model_base_path",
                str(workspace["output"] / "serving_model"),
                "--enable_batching",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        )
    try:
        banner = server.stdout.readline()
        assert f"gRPC on 127.0.0.1:{grpc_port}, REST on 127.0.0.1:{rest_port}" in banner, (
            banner + log.read_text()
        )
        row = '{"user_id": 1, "item_id": 1, "gender": "M", "genres": "Action"}'
        answers = {}
        for name, target, extra in (
            ("grpc", f"127.0.0.1:{grpc_port}", []),
            ("rest", f"127.0.0.1:{rest_port}", ["--rest"]),
        ):
            code, stdout, stderr = run_cli("query", "--target", target, "--row", row, *extra)
            assert code == 0, stderr
            answers[name] = json.loads(stdout)
        assert answers["grpc"]["user_id"] == 1 and set(F.HEADS) <= set(answers["grpc"])
        for head in F.HEADS:
            assert answers["grpc"][head] == pytest.approx(answers["rest"][head], rel=1e-6)
        # Files, with the documented feature columns: typed by the model's raw feature spec
        # (zip_prefix "551" stays a string in CSV and JSON Lines alike).
        table = tmp_path / "rows.csv"
        table.write_text("user_id,item_id,gender,zip_prefix,year\n1,1,M,551,\n2,7,F,551,1995\n")
        lines = tmp_path / "rows.jsonl"
        lines.write_text(
            '{"user_id": 1, "item_id": 1, "gender": "M", "zip_prefix": 551}\n'
            '{"user_id": 2, "item_id": 7, "gender": "F", "zip_prefix": "551", "year": 1995}\n'
        )
        records = tmp_path / "rows.tfrecord.gz"  # As the pipeline writes its examples.
        with tf.io.TFRecordWriter(str(records), tf.io.TFRecordOptions("GZIP")) as writer:
            for row in ({"user_id": 1, "item_id": 1, "gender": "M", "zip_prefix": "551"},):
                writer.write(to_example({**row, "genre": ["Action", "Comedy"]}))
        scored = {}
        for path in (table, lines, records):
            code, stdout, stderr = run_cli(
                "query", "--target", f"127.0.0.1:{grpc_port}", "--input", str(path)
            )
            assert code == 0, stderr
            scored[path.suffix] = [json.loads(line) for line in stdout.splitlines()]
        for csv_row, json_row in zip(scored[".csv"], scored[".jsonl"], strict=True):
            for head in F.HEADS:
                assert csv_row[head] == pytest.approx(json_row[head], rel=1e-6)
        # Strings of a TFRecord print as text; the slice-only genre list rides along.
        [record_row] = scored[".gz"]
        assert record_row["gender"] == "M" and record_row["genre"] == ["Action", "Comedy"]
        for head in F.HEADS:
            assert record_row[head] == pytest.approx(scored[".csv"][0][head], rel=1e-6)
        assert scored[".csv"][0][F.CLICK] != pytest.approx(scored[".csv"][1][F.CLICK])
        code, stdout, stderr = run_cli("query", "--target", f"127.0.0.1:{grpc_port}", "--metadata")
        assert code == 0, stderr
        raw_inputs = json.loads(stdout)["signatures"][F.PREDICT_RAW]["inputs"]
        assert raw_inputs[F.ZIP_PREFIX] == "DT_STRING" and raw_inputs[F.YEAR] == "DT_INT64"
        code, stdout, stderr = run_cli(
            "query",
            "--target",
            f"127.0.0.1:{grpc_port}",
            "--recommend",
            '{"user_id": 1, "exclude": [1, 2]}',
            "--k",
            "3",
        )
        assert code == 0, stderr
        recommended = json.loads(stdout)
        assert len(recommended["item_id"]) == 3 and not {1, 2} & set(recommended["item_id"])
        assert recommended["score"] == sorted(recommended["score"], reverse=True)
        code, stdout, _ = run_cli("query", "--target", f"127.0.0.1:{grpc_port}", "--status")
        version = int(Path(workspace["summary"].pushed_to).name)
        assert json.loads(stdout) == [{"version": version, "state": "AVAILABLE", "error": ""}]
        code, _, stderr = run_cli(
            "query", "--target", f"127.0.0.1:{grpc_port}", "--model_name", "nope", "--status"
        )
        assert code == 2 and "NOT_FOUND" in stderr and len(stderr.strip().splitlines()) == 1
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0 and "stopping; finishing in-flight requests" in output


def test_score_and_recommend_from_files_with_the_pushed_model(workspace, tmp_path):
    push_dir = workspace["output"] / "serving_model"
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,item_id,gender\n1,1,M\n2,7,F\n999,5,F\n")
    scores = tmp_path / "scores.csv"
    code, stdout, stderr = run_cli(
        "score", "--model", str(push_dir), "--input", str(pairs), "--output", str(scores)
    )
    assert code == 0, stderr
    import pandas as pd

    scored = pd.read_csv(scores)
    assert list(scored.columns) == ["user_id", "item_id", *F.HEADS]
    assert scored["user_id"].tolist() == [1, 2, 999]
    loaded = tf.saved_model.load(workspace["summary"].pushed_to)
    direct = loaded.signatures[F.SERVING_DEFAULT](
        examples=tf.constant(
            to_examples(
                [
                    {"user_id": 1, "item_id": 1, "gender": "M"},
                    {"user_id": 2, "item_id": 7, "gender": "F"},
                    {"user_id": 999, "item_id": 5, "gender": "F"},
                ]
            )
        )
    )
    for head in F.HEADS:
        np.testing.assert_allclose(scored[head], direct[head].numpy(), rtol=1e-5)

    users = tmp_path / "users.csv"
    users.write_text("user_id,gender\n1,M\n2,F\n")
    seen = tmp_path / "seen.csv"
    seen.write_text("user_id,item_id,rating,timestamp\n1,1,5,0\n1,2,3,0\n2,3,4,0\n")
    recs = tmp_path / "recs.csv"
    code, _, stderr = run_cli(
        "recommend",
        "--model",
        str(push_dir),
        "--users",
        str(users),
        "--k",
        "4",
        "--exclude-seen",
        str(seen),
        "--output",
        str(recs),
    )
    assert code == 0, stderr
    table = pd.read_csv(recs)
    assert list(table.columns) == ["user_id", "rank", "item_id", "score", *F.HEADS]
    assert table.groupby("user_id")["rank"].apply(list).to_dict() == {
        1: [1, 2, 3, 4],
        2: [1, 2, 3, 4],
    }
    assert not set(table[table.user_id == 1].item_id) & {1, 2}
    assert 3 not in set(table[table.user_id == 2].item_id)
    for _, group in table.groupby("user_id"):
        assert group["score"].is_monotonic_decreasing

    code, _, stderr = run_cli(
        "score",
        "--model",
        str(push_dir),
        "--input",
        str(users),
        "--output",
        str(tmp_path / "x.csv"),
    )
    assert code == 2 and stderr.strip() == (
        f"mtrec: error: {users}: scoring needs column(s) item_id; found user_id, gender"
    )
    assert not (tmp_path / "x.csv").exists()


def test_second_run_is_served_from_cache(workspace):
    """Harmless to the shared run: every component is reused, nothing new is pushed."""
    code, stdout, stderr = run_cli(*workspace["args"])
    assert code == 0, stderr
    summary = results.latest_run(workspace["store"], DEFAULT_PIPELINE_NAME)
    states = {c.node: c.state for c in summary.components}
    assert {node for node, state in states.items() if state == "cached"} == (
        NODES - {"baseline_model_resolver"}
    )
    assert "Reused" in stdout and "cached component(s)" in stdout
    versions = list((workspace["output"] / "serving_model").iterdir())
    assert len(versions) == 1  # The cached Pusher pushed nothing new.


def test_bad_csv_fails_early_and_leaves_the_pushed_model_alone(copied, tmp_path):
    serving = copied["output"] / "serving_model"
    before = snapshot(serving)
    bad = tmp_path / "clicks.csv"
    bad.write_text("user_id,item_id,rating,click,purchase\n1,2,four,1,1\n")
    code, stdout, stderr = run_cli(
        "run", "--output-dir", str(copied["output"]), "--interactions", str(bad)
    )
    assert code == 2  # The data component found it, inside the pipeline.
    assert stderr.strip().splitlines()[-1] == (
        f"mtrec: error: {bad}: column 'rating' must be numeric; row 1 has 'four'"
    )
    assert "failed" not in stderr
    assert "Traceback" not in stderr
    assert snapshot(serving) == before


def test_schema_anomalies_stop_the_run_before_training(copied, tmp_path):
    serving = copied["output"] / "serving_model"
    before = snapshot(serving)
    logs = make_interactions_csv(tmp_path / "logs.csv", n_rows=300, seed=3)
    text = logs.read_text().splitlines()
    header = text[0].split(",")
    rating_at = header.index("rating")
    rows = [line.split(",") for line in text[1:]]
    for row in rows[:40]:  # Ratings out of the curated schema's [1, 5] domain.
        row[rating_at] = "9.0"
    logs.write_text("\n".join([text[0]] + [",".join(r) for r in rows]) + "\n")
    code, _, stderr = run_cli(
        "run",
        "--output-dir",
        str(copied["output"]),
        "--interactions",
        str(logs),
        "--schema",
        CURATED_SCHEMA,
    )
    assert code == 2
    assert "ExampleValidator found anomalies" in stderr and "'rating'" in stderr
    assert snapshot(serving) == before


def test_own_logs_with_noise_labels_use_an_inferred_schema_and_are_not_pushed(tmp_path):
    """Bring-your-own logs: SchemaGen instead of the curated schema, and a model trained on
    random click labels fails the AUC threshold, so the Pusher pushes nothing."""
    logs = make_interactions_csv(tmp_path / "logs.csv", n_rows=2000, seed=5)
    output = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "run",
        "--output-dir",
        str(output),
        "--interactions",
        str(logs),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--min-slice-size",
        "50",
    )
    assert code == 0, stderr
    summary = results.latest_run(
        results.open_store(str(output / "metadata.sqlite")), DEFAULT_PIPELINE_NAME
    )
    nodes = {c.node for c in summary.components}
    assert "SchemaGen" in nodes and "ImportSchemaGen" not in nodes
    assert summary.blessed is False and summary.pushed_to is None
    assert any(line.startswith("click/auc value on overall") for line in summary.failed_thresholds)
    assert "Model NOT blessed: nothing was pushed" in stdout
    assert not (output / "serving_model").exists()


# ----------------------------------------------------------------------------- inspecting


def test_inspect_explains_the_blessing_per_head_and_slice(workspace):
    code, stdout, stderr = run_cli("inspect", "--output-dir", str(workspace["output"]))
    assert code == 0, stderr
    eval_counts = workspace["summary"].split_counts[F.EVAL]
    assert f"Examples: train {workspace['summary'].split_counts[F.TRAIN]['examples']:,} (" in stdout
    assert f"eval {eval_counts['examples']:,} ({eval_counts['clicks']:,} clicks" in stdout
    summary = workspace["summary"]
    # The newest run that reached the Evaluator (the cached re-run shares its outputs);
    # later runs stopped by bad data are skipped.
    assert f"Evaluation: {summary.evaluation_uri}" in stdout
    assert f"Model: {summary.model_uri} " in stdout
    assert "Blessing: BLESSED" in stdout
    assert f"(version {Path(summary.pushed_to).name} at {summary.pushed_to})" in stdout
    assert "Baseline: none" in stdout
    counts = stdout.split("Thresholds: ", 1)[1].split("\n", 1)[0]
    passed = int(counts.split(" passed")[0])
    assert passed >= 3 and " 0 failed" in counts  # At least the overall one per head.
    for feature in F.SLICE_FEATURES:
        assert f"\n{feature}=" in stdout, feature
    overall = {
        line.split()[0]: line.split() for line in stdout.splitlines() if line.startswith("overall ")
    }
    assert overall  # One overall row per head table.


def test_inspect_json_matches_the_pipeline_summary(workspace):
    code, stdout, stderr = run_cli(
        "inspect", "--output-dir", str(workspace["output"]), "--format", "json"
    )
    assert code == 0, stderr
    data = json.loads(stdout)
    summary = workspace["summary"]
    assert data["model"]["blessed"] is True and data["validation_ok"] is True
    assert data["model"]["version"] == Path(summary.pushed_to).name
    overall = next(s for s in data["slices"] if s["slice"] == "overall")
    assert overall["candidate"][F.RATING]["root_mean_squared_error"] == pytest.approx(
        summary.metrics[F.RATING]["root_mean_squared_error"]
    )
    for head in F.BINARY_HEADS:
        assert overall["candidate"][head]["auc"] == pytest.approx(summary.metrics[head]["auc"])
        assert overall["counts"][head] == summary.metrics[head]["example_count"]
    assert {s["feature"] for s in data["slices"]} == {"", *F.SLICE_FEATURES}
    assert {t["status"] for t in data["thresholds"]} == {"passed"}
    # Each genre slice counts the examples of that genre: more than overall in total.
    genre_total = sum(s["counts"][F.CLICK] for s in data["slices"] if s["feature"] == F.GENRE)
    assert genre_total > overall["counts"][F.CLICK]
    # The data component's counts, from its Examples artifact in MLMD.
    assert data["examples"][F.EVAL]["examples"] == overall["counts"][F.CLICK]
    assert sum(c["clicks"] for c in data["examples"].values()) == 120 * 10


def test_tfma_notebook_api_reads_the_evaluator_output(workspace):
    """The README's notebook snippet: the same output through TFMA's own loaders."""
    import tensorflow_model_analysis as tfma

    uri = workspace["summary"].evaluation_uri
    result = tfma.load_eval_result(uri)
    slices = {key for key, _ in result.slicing_metrics}
    assert () in slices and (("gender", "F"),) in slices
    overall = dict(result.slicing_metrics)[()]
    assert set(overall) == set(F.HEADS)
    # Every reported metric, overall and per slice (the head summaries beside TFMA's own).
    female = dict(result.slicing_metrics)[(("gender", "F"),)]
    for head in F.HEADS:
        for metrics in (overall, female):
            assert set(metrics[head][""]) >= {*F.HEAD_METRICS[head], F.COUNT_METRIC[head]}
    click = {name: value["doubleValue"] for name, value in overall[F.CLICK][""].items()}
    assert click["mean_label"] == pytest.approx(0.2, abs=0.01)  # 4 negatives per positive.
    assert click["calibration"] == pytest.approx(click["mean_prediction"] / click["mean_label"])
    validation = tfma.load_validation_result(uri)
    assert validation.validation_ok


def test_html_report_renders_in_headless_chromium(workspace, tmp_path):
    from tests.support import browser

    page = tmp_path / "report.html"
    code, stdout, stderr = run_cli(
        "report", "--html", str(page), "--output-dir", str(workspace["output"])
    )
    assert code == 0, stderr
    text = page.read_text()
    assert "Not available" not in text  # Every section found its inputs through MLMD.
    # Charts per head, calibration, rating errors, training curves; and the headline metrics
    # across runs once MLMD holds two (the cached re-run test makes a second).
    runs = results.run_history(workspace["store"], DEFAULT_PIPELINE_NAME)
    images = text.count("<img ")
    assert images == len(F.HEADS) + 3 + (len(runs) >= 2)
    if browser.chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (make system-deps)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    dom = browser.dump_dom(page)
    assert f'data-images="{images}"' in dom
    assert f'data-images-loaded="{images}"' in dom  # Every embedded image decoded.
    assert 'data-errors="0"' in dom  # No script error.
    shot = browser.screenshot(page, tmp_path / "report.png", 1280, 2000)
    from PIL import Image

    with Image.open(shot) as picture:
        assert picture.size == (1280, 2000)
        colours = picture.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # Text, tables and charts, not blank.


def test_retrained_model_is_compared_with_the_blessed_baseline(copied):
    """A changed Trainer config re-trains; the Evaluator compares with the first model."""
    args = list(copied["args"])
    args[args.index("--epochs") + 1] = "9"
    code, _, stderr = run_cli(*args)
    assert code == 0, stderr
    code, stdout, stderr = run_cli(
        "inspect", "--output-dir", str(copied["output"]), "--format", "json"
    )
    assert code == 0, stderr
    data = json.loads(stdout)
    first = copied["summary"]
    assert data["has_baseline"] is True
    assert data["model"]["baseline_uri"] == first.model_uri
    assert data["model"]["uri"] != first.model_uri
    changes = [t for t in data["thresholds"] if t["kind"] == "change"]
    assert {t["head"] for t in changes} == set(F.HEADS)
    assert all(t["value"] is not None and t["status"] in ("passed", "failed") for t in changes)
    overall = next(s for s in data["slices"] if s["slice"] == "overall")
    assert overall["baseline"][F.CLICK]["auc"] == pytest.approx(first.metrics[F.CLICK]["auc"])
    code, text, _ = run_cli("inspect", "--output-dir", str(copied["output"]))
    assert "Candidate vs baseline (overall):" in text
    assert "WARNING" not in text  # Same examples: nothing to warn about.


def test_a_baseline_trained_on_other_data_is_named_in_run_and_inspect(copied):
    """Issue: a re-run after changing the split compared with a baseline trained on other
    examples (which may include the new eval rows), and nothing said so."""
    args = [*copied["args"], "--eval-fraction", "0.2"]
    code, stdout, stderr = run_cli(*args)
    assert code == 0, stderr
    first = copied["summary"]
    summary = results.latest_run(copied["store"], DEFAULT_PIPELINE_NAME)
    assert summary.baseline_data_fingerprint == first.data_fingerprint
    assert summary.data_fingerprint and summary.data_fingerprint != first.data_fingerprint
    warning = (
        "WARNING: the baseline model was trained on examples with data fingerprint "
        f"{first.data_fingerprint}, the candidate on {summary.data_fingerprint}: the "
        "comparison is across different data"
    )
    assert warning in stdout
    code, text, _ = run_cli("inspect", "--output-dir", str(copied["output"]))
    assert code == 0 and warning in text


def _installed_copy(target: Path) -> Path:
    """The package laid out as `pip install .` lays it out (mtrec/ with the repo's mapped
    folders under it), to edit without touching the repo."""
    repo = Path(__file__).resolve().parents[2]
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(repo / "mtrec", target / "mtrec", ignore=ignore)
    for folder in ("pipeline", "models", "components", "serving"):
        shutil.copytree(repo / folder, target / "mtrec" / folder, ignore=ignore)
    return target


def test_code_the_trainer_imports_re_runs_it_and_other_code_does_not(copied, tmp_path):
    """The cache fingerprint: an edit to the CLI (which Transform and Trainer never import)
    keeps every component cached; an edit to a function of mtrec.examples (which the export
    imports) re-runs the Trainer and what follows it, while Transform stays cached."""
    import subprocess
    import sys

    package = _installed_copy(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(package)}

    def run_states() -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "mtrec", *copied["args"]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        summary = results.latest_run(copied["store"], DEFAULT_PIPELINE_NAME)
        return {c.node: c.state for c in summary.components}

    run_states()  # Reuses the shared run's outputs.
    cli = package / "mtrec" / "cli" / "common.py"
    cli.write_text(cli.read_text() + "\n\ndef unused() -> int:\n    return 1\n")
    (package / "mtrec" / "README.md").write_text("touched\n")
    states = run_states()
    assert {node for node, state in states.items() if state == "cached"} == NODES - {
        "baseline_model_resolver"
    }

    examples = package / "mtrec" / "examples.py"
    text = examples.read_text()
    assert "def to_example(" in text
    examples.write_text(text.replace("def to_example(", "def to_example(  # Edited.\n", 1))
    states = run_states()
    assert states["Transform"] == "cached" and states["Trainer"] == "executed", states
    assert states["Evaluator"] == "executed"


def test_request_logs_are_profiled_against_the_training_data_in_the_run(copied, tmp_path):
    """`mtrec run --request-logs`: requests from older women (gender F, ages + 30) drift on
    exactly gender and age; the run records it in MLMD and says so; nothing else re-runs."""
    from tests.integration.test_skew import _log_requests, _read_examples

    rows = _read_examples(Path(copied["summary"].examples_uri) / f"Split-{F.EVAL}")[:480]
    logs = tmp_path / "logs"  # Files requests-<collector>-<n>.tfrecord, as the server names them.
    logs.mkdir()
    _log_requests(logs, rows, shift={F.GENDER: "F", F.AGE: 30})
    code, stdout, stderr = run_cli(*copied["args"], "--request-logs", str(logs))
    assert code == 0, stderr
    assert "Serving skew: the request logs drifted from the training data on age, gender" in stdout
    summary = results.latest_run(copied["store"], DEFAULT_PIPELINE_NAME)
    executed = {c.node for c in summary.components if c.state == "executed"}
    # Resolvers always run; the Pusher's destination is the copy's folder, new to the cache.
    assert executed - {"baseline_model_resolver", "Pusher"} == {F.REQUEST_SKEW_GEN}
    assert summary.skewed_features == ["age", "gender"]
    stats = Path(summary.request_skew_uri).parent.parent / "serving_statistics"
    assert list(stats.glob("*/Split-serving/FeatureStats.pb"))
