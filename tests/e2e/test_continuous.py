"""End to end: continuous training over spans of logs, with the real pipeline (LocalDagRunner,
SQLite MLMD, Beam), on synthetic drifting logs made in the test (1,500 rows per span).

Four runs of one pipeline, as a daily schedule would make them:
1. span 2: the window's span 1 is ingested first; trains on span 1 from scratch, evaluates
   on span 2, blessed and pushed;
2. span 3, whose every row has a gender the schema never saw: stopped before Transform,
   nothing trained or pushed;
3. span 4: trains on span 2 only (bad span 3 left out), warm-started from run 1's model with
   the embedding rows carried over by token;
4. span 6, whose window's span 5 has a row that cannot be read: span 5 fails its own ingest
   and is left out; the run trains on span 4.
"""

import contextlib
import csv
import io
import json
import os
from pathlib import Path

import ml_metadata as mlmd
import numpy as np
import pytest

from mtrec.cli.main import main
from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME
from mtrec.results import store as results
from tests.support.lineage import executions, inputs, outputs

ROWS_PER_SPAN = 1500
NEW_USER_OFFSET = 1000
WARM_RESTORE_TOLERANCE = 1e-4  # Run 3 trains one epoch at a learning rate of 1e-9.


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def rewrite(span_dir: Path, column: str, change) -> None:
    """Apply ``change`` to one column of every row of a span's CSV files."""
    for path in span_dir.glob("*.csv"):
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        index = rows[0].index(column)
        for row in rows[1:]:
            row[index] = change(row[index])
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)


def newcomers(user_id: str) -> str:
    """A fifth of the users come back under new ids: users the first span never had."""
    return str(int(user_id) + NEW_USER_OFFSET) if int(user_id) % 5 == 0 else user_id


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    root = tmp_path_factory.mktemp("continuous")
    logs, output = root / "logs", root / "out"
    code, _, err = run_cli(
        "data",
        "synth",
        "--rows",
        str(ROWS_PER_SPAN),
        "--spans",
        "6",
        "--users",
        "80",
        "--items",
        "40",
        "--shards",
        "1",
        "--drift",
        "0.3",
        "--output",
        str(logs),
    )
    assert code == 0, err
    rewrite(next(logs.glob("span-*2")), "user_id", newcomers)
    # Every row of span 3 with gender 'X', a value the first span's schema never saw.
    rewrite(next(logs.glob("span-*3")), "gender", lambda _: "X")
    # Span 5: a rating that is not a number, which the data component refuses.
    rewrite(next(logs.glob("span-*5")), "rating", lambda _: "four")
    common = (
        "run",
        "--logs",
        str(logs),
        "--output-dir",
        str(output),
        "--window",
        "2",
        "--eval-fraction",
        "0.3",
        "--batch-size",
        "64",
        "--min-auc",
        "0.05",
        "--max-rating-rmse",
        "5",
        "--min-slice-size",
        "100000",
    )
    runs = [
        run_cli(*common, "--span", "2", "--epochs", "3"),
        run_cli(*common, "--span", "3", "--epochs", "3"),
        run_cli(*common, "--span", "4", "--epochs", "1", "--learning-rate", "1e-9"),
        run_cli(*common, "--span", "6", "--epochs", "1"),
    ]
    store = results.open_store(str(output / "metadata.sqlite"))
    return {"logs": logs, "output": output, "runs": runs, "store": store}


def span(artifact) -> int:
    return artifact.properties["span"].int_value


def bundle(model_artifact) -> tuple[dict, dict, dict]:
    """A Trainer's warm-start bundle: manifest, weights by index, vocabularies."""
    root = Path(model_artifact.uri) / "warm_start"
    manifest = json.loads((root / "manifest.json").read_text())
    weights = dict(np.load(root / "weights.npz"))
    vocabularies = json.loads((root / "vocabularies.json").read_text())
    return manifest, weights, vocabularies


def test_each_span_is_recorded_on_its_examples(stream):
    first, bad, third, fourth = stream["runs"]
    assert first[0] == 0, first[2]
    assert third[0] == 0, third[2]
    assert fourth[0] == 0, fourth[2]
    store = stream["store"]
    ingested = [
        a for e in executions(store, "MtrecExampleGen") for a in outputs(store, e, "examples")
    ]
    assert sorted(span(a) for a in ingested) == [1, 2, 3, 4, 6]  # Span 5 failed to ingest.
    assert all(a.custom_properties["span"].int_value == span(a) for a in ingested)


def test_each_run_trains_on_the_validated_spans_before_it_and_evaluates_on_its_own(stream):
    store = stream["store"]
    transforms = executions(store, "Transform")
    assert [sorted(span(a) for a in inputs(store, e, "examples")) for e in transforms] == [
        [1],
        [2],  # Span 3 failed validation: left out of the window.
        [4],  # Span 5 failed to ingest: left out too.
    ]
    # The Trainer reads the same raw examples, through Transform's graph.
    trainers = executions(store, "Trainer")
    assert [sorted(span(a) for a in inputs(store, e, "examples")) for e in trainers] == [
        [1],
        [2],
        [4],
    ]
    evaluations = executions(store, "Evaluator")
    assert [[span(a) for a in inputs(store, e, "examples")] for e in evaluations] == [[2], [4], [6]]


def test_a_bad_span_stops_its_run_and_nothing_is_pushed(stream):
    code, stdout, stderr = stream["runs"][1]
    assert code == 2
    assert stderr.startswith("mtrec: error: ExampleValidator found anomalies;")
    assert "feature 'gender': Examples contain values missing from the schema: X" in stderr
    assert "Traceback" not in stderr
    store = stream["store"]
    gates = executions(store, "AnomaliesGate")
    assert [e.last_known_state for e in gates] == [
        mlmd.proto.Execution.COMPLETE,
        mlmd.proto.Execution.FAILED,
        mlmd.proto.Execution.COMPLETE,
        mlmd.proto.Execution.COMPLETE,
    ]
    assert len(executions(store, "Trainer")) == 3  # Not run 2.
    history = results.run_history(store, DEFAULT_PIPELINE_NAME)
    stopped = [row for row in history if row.span == 3]
    assert [(row.failed_node, row.pushed_version) for row in stopped] == [("AnomaliesGate", None)]


def test_the_next_run_warm_starts_from_the_previous_blessed_model(stream):
    store = stream["store"]
    first, second, _ = executions(store, "Trainer")
    assert inputs(store, first, "base_model") == []
    (blessing,) = outputs(store, executions(store, "Evaluator")[0], "blessing")
    assert blessing.custom_properties["blessed"].int_value == 1
    (first_model,) = outputs(store, first, "model")
    assert [a.id for a in inputs(store, second, "base_model")] == [first_model.id]
    history = results.run_history(store, DEFAULT_PIPELINE_NAME)
    assert [row.warm_start for row in history if row.trained_spans] == [False, True, True]


def test_known_users_keep_their_embedding_rows_by_token(stream):
    store = stream["store"]
    first, second = (outputs(store, e, "model")[0] for e in executions(store, "Trainer")[:2])
    manifest_a, weights_a, vocab_a = bundle(first)
    manifest_b, weights_b, vocab_b = bundle(second)
    (index,) = [
        i
        for i, w in enumerate(manifest_a["weights"])
        if w["vocabulary"] == "user_id" and len(w["shape"]) == 2 and w["shape"][1] > 1
    ]
    table_a, table_b = weights_a[str(index)], weights_b[str(index)]
    users_a, users_b = vocab_a["user_id"], vocab_b["user_id"]
    known = sorted(set(users_a) & set(users_b))
    assert known and set(users_b) - set(users_a)  # Spans 1 and 2 share users; 2 has new ones.
    moved = [u for u in known if users_a.index(u) != users_b.index(u)]
    assert moved  # Frequency order shifted: by index would be wrong.
    for user in known:
        np.testing.assert_allclose(
            table_b[users_b.index(user)],
            table_a[users_a.index(user)],
            atol=WARM_RESTORE_TOLERANCE,
        )
    # By index, a moved user would have taken another user's row.
    user = moved[0]
    assert not np.allclose(
        table_b[users_b.index(user)], table_a[users_b.index(user)], atol=WARM_RESTORE_TOLERANCE
    ) or users_b.index(user) >= len(users_a)


def test_history_lists_every_run(stream):
    code, stdout, stderr = run_cli("inspect", "--output-dir", str(stream["output"]), "--history")
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["run", "started", "span", "trained"]
    by_span = {line.split()[3]: line for line in lines[1:]}
    assert "ingested for a later run's window" in by_span["1"]
    assert "stopped: AnomaliesGate failed" in by_span["3"]
    assert any("stopped: MtrecExampleGen failed" in line for line in lines)  # Span 5.
    assert " cold " in by_span["2"] and " warm " in by_span["4"]
    assert os.path.isdir(stream["output"] / "serving_model")
