"""`mtrec inspect --history` and the report's plot across runs, read back from a real MLMD
SQLite store written the way TFX's launcher writes it (see test_results_store.py).

Continuous training: each run ingests one span, Transform takes the window of earlier spans,
the Evaluator scores the newest span, the Pusher pushes a blessed model.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sqlite3
import time
from pathlib import Path

import pytest
from tfx.orchestration import metadata
from tfx.types import standard_artifacts

from mtrec import names as F
from mtrec.cli.main import main
from mtrec.results import inspection, report, store
from mtrec.results.store import HistoryRow
from tests.unit.test_inspection import make_inspection, write_tfma_output
from tests.unit.test_results_store import PIPELINE, _execute

EXAMPLE_GEN = "mtrec.components.example_gen.MtrecExampleGen"
TRANSFORM = "tfx.components.transform.component.Transform"
TRAINER = "tfx.components.trainer.component.Trainer"
EVALUATOR = "mtrec.components.evaluation.MtrecEvaluator"
PUSHER = "mtrec.components.pusher.MtrecPusher"
GATE = "mtrec.components.anomalies_gate.AnomaliesGate"
# Each run's context creation time, set in the database (MLMD stamps "now").
STARTED = {
    "run-1": datetime.datetime(2024, 5, 1, 6, 0, tzinfo=datetime.UTC),
    "run-2": datetime.datetime(2024, 5, 2, 6, 0, tzinfo=datetime.UTC),
    "run-3": datetime.datetime(2024, 5, 3, 6, 30, tzinfo=datetime.UTC),
    "classic-1": datetime.datetime(2024, 4, 1, 9, 15, tzinfo=datetime.UTC),
    "classic-2": datetime.datetime(2024, 4, 2, 9, 15, tzinfo=datetime.UTC),
}
RMSE, AUC = F.HEAD_METRICS[F.RATING][0], F.HEAD_METRICS[F.CLICK][0]


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Render local times in UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _examples(root: Path, span: int, name: str = "raw") -> standard_artifacts.Examples:
    examples = standard_artifacts.Examples()
    examples.uri = str(root / name / str(span))
    examples.span = span
    examples.version = 0
    return examples


def _model(root: Path, run_id: str) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = str(root / "Trainer" / "model" / run_id)
    return model


def _evaluation(root: Path, run_id: str, rmse: float, click: float, purchase: float):
    evaluation = standard_artifacts.ModelEvaluation()
    values = {(F.RATING, RMSE): rmse, (F.CLICK, AUC): click, (F.PURCHASE, AUC): purchase}
    evaluation.uri = str(write_tfma_output(root / "Evaluator" / run_id, values=values))
    return evaluation


def _blessing(root: Path, run_id: str, blessed: bool) -> standard_artifacts.ModelBlessing:
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(root / "Evaluator" / "blessing" / run_id)
    blessing.set_int_custom_property("blessed", int(blessed))
    return blessing


def _pushed(root: Path, run_id: str, version: str | None) -> standard_artifacts.PushedModel:
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(root / "Pusher" / run_id)
    pushed.set_int_custom_property("pushed", int(version is not None))
    if version is not None:
        pushed.set_string_custom_property("pushed_destination", f"/serving/{version}")
        pushed.set_string_custom_property("pushed_version", version)
    return pushed


def _train_and_evaluate(
    handle: metadata.Metadata,
    root: Path,
    run_id: str,
    window: list,
    evaluated,
    metrics: tuple[float, float, float],
    blessed: bool,
    base_model=None,
    pushed: str | None = None,
    transform_state: str = "complete",
    transformed: list | None = None,
):
    """Transform on ``window`` → Trainer (warm from ``base_model``) → Evaluator on
    ``evaluated`` → Pusher; a cached Transform reuses ``transformed``. The model and the
    transformed examples."""
    transformed = _execute(
        handle,
        run_id,
        "Transform",
        TRANSFORM,
        inputs={"examples": window},
        outputs={
            "transformed_examples": transformed
            or [_examples(root, e.span, "transformed") for e in window]
        },
        state=transform_state,
    )["transformed_examples"]
    inputs = {"examples": transformed}
    if base_model is not None:
        inputs["base_model"] = [base_model]
    model = _execute(handle, run_id, "Trainer", TRAINER, inputs, {"model": [_model(root, run_id)]})[
        "model"
    ][0]
    blessing = _execute(
        handle,
        run_id,
        "Evaluator",
        EVALUATOR,
        inputs={"model": [model], "examples": [evaluated]},
        outputs={
            "evaluation": [_evaluation(root, run_id, *metrics)],
            "blessing": [_blessing(root, run_id, blessed)],
        },
    )["blessing"][0]
    _execute(
        handle,
        run_id,
        "Pusher",
        PUSHER,
        inputs={"model": [model], "model_blessing": [blessing]},
        outputs={"pushed_model": [_pushed(root, run_id, pushed)]},
    )
    return model, transformed


def _ingest(handle: metadata.Metadata, root: Path, run_id: str, span: int):
    return _execute(
        handle,
        run_id,
        "MtrecExampleGen",
        EXAMPLE_GEN,
        outputs={"examples": [_examples(root, span)]},
    )["examples"][0]


def _set_start_times(path: str) -> None:
    """Give each run's context its time in STARTED (MLMD records the time of writing)."""
    with sqlite3.connect(path) as db:
        for run_id, started in STARTED.items():
            db.execute(
                "UPDATE Context SET create_time_since_epoch = ? WHERE name = ?",
                (int(started.timestamp() * 1000), run_id),
            )


def continuous_store(root: Path) -> str:
    """Spans 1-2 already ingested; run 1 trains on 1-2 and evaluates on 3, cold, blessed,
    pushed as 111; run 2 trains on 2-3 warm from run 1's model, evaluates on 4, not blessed;
    run 3 ingests span 5 and the AnomaliesGate stops it."""
    path = str(root / "metadata.sqlite")
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(path)) as handle:
        span1, span2 = _examples(root, 1), _examples(root, 2)
        handle.publish_artifacts([span1, span2])  # Ingested before this history begins.
        span3 = _ingest(handle, root, "run-1", 3)
        model, _ = _train_and_evaluate(
            handle, root, "run-1", [span1, span2], span3, (0.95, 0.78, 0.71), True, pushed="111"
        )
        span4 = _ingest(handle, root, "run-2", 4)
        _train_and_evaluate(
            handle, root, "run-2", [span2, span3], span4, (0.97, 0.76, 0.69), False, model
        )
        _ingest(handle, root, "run-3", 5)
        _execute(handle, "run-3", "AnomaliesGate", GATE, state="failed")
    _set_start_times(path)
    return path


def _rows(root: Path) -> list[HistoryRow]:
    return store.run_history(store.open_store(continuous_store(root)), PIPELINE)


# ----------------------------------------------------------------------------- store


def test_history_has_one_row_per_run_oldest_first(tmp_path):
    assert _rows(tmp_path) == [
        HistoryRow(
            run_id="run-1",
            started=STARTED["run-1"],
            span=3,
            trained_spans=[1, 2],
            eval_span=3,
            eval_split_of_trained=False,
            warm_start=False,
            metrics={F.RATING: 0.95, F.CLICK: 0.78, F.PURCHASE: 0.71},
            blessed=True,
            pushed_version="111",
            failed_node=None,
        ),
        HistoryRow(
            run_id="run-2",
            started=STARTED["run-2"],
            span=4,
            trained_spans=[2, 3],
            eval_span=4,
            eval_split_of_trained=False,
            warm_start=True,
            metrics={F.RATING: 0.97, F.CLICK: 0.76, F.PURCHASE: 0.69},
            blessed=False,
            pushed_version=None,
            failed_node=None,
        ),
        HistoryRow(
            run_id="run-3",
            started=STARTED["run-3"],
            span=5,
            trained_spans=[],
            eval_span=None,
            eval_split_of_trained=False,
            warm_start=None,
            metrics={},
            blessed=None,
            pushed_version=None,
            failed_node="AnomaliesGate",
        ),
    ]


def test_a_run_still_running_says_which_node(tmp_path):
    path = continuous_store(tmp_path)
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(path)) as handle:
        _ingest(handle, tmp_path, "run-4", 6)
        _execute(handle, "run-4", "Trainer", TRAINER, state="running")
    rows = store.run_history(store.open_store(path), PIPELINE)
    assert [(r.run_id, r.span, r.failed_node, r.unfinished_node) for r in rows[2:]] == [
        ("run-3", 5, "AnomaliesGate", None),
        ("run-4", 6, None, "Trainer"),
    ]
    assert inspection.format_history(rows).splitlines()[-1].endswith("-  Trainer not finished")


def test_a_backfill_run_of_the_window_says_so(tmp_path):
    path = continuous_store(tmp_path)
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(path)) as handle:
        _ingest(handle, tmp_path, "run-4", 6)  # Data and validation nodes only.
    rows = store.run_history(store.open_store(path), PIPELINE)
    assert [(r.run_id, r.ingest_only) for r in rows] == [
        ("run-1", False),
        ("run-2", False),
        ("run-3", False),
        ("run-4", True),
    ]
    assert (
        inspection.format_history(rows)
        .splitlines()[-1]
        .endswith("-  ingested for a later run's window")
    )


def test_a_push_reused_by_a_cached_pusher_says_so(tmp_path):
    rows = _rows(tmp_path)[:1]
    rows.append(dataclasses.replace(rows[0], run_id="run-1b", cached_nodes=["Pusher"]))
    lines = inspection.format_history(rows).splitlines()
    assert lines[0].endswith("blessed  pushed")
    assert lines[1].endswith("  yes      111")
    assert lines[2].endswith("  yes      111 (cached)")


def test_the_latest_run_is_still_the_one_that_stopped(tmp_path):
    mlmd = store.open_store(continuous_store(tmp_path))
    assert store.latest_run(mlmd, PIPELINE).run_id == "run-3"
    assert store.latest_run(mlmd, PIPELINE, evaluated=True).run_id == "run-2"


def classic_store(root: Path) -> str:
    """The non-span pipeline: span 0, evaluated on its own eval split. Run 2 reuses the
    examples and Transform (cached) and retrains."""
    path = str(root / "metadata.sqlite")
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(path)) as handle:
        examples = _ingest(handle, root, "classic-1", 0)
        _, transformed = _train_and_evaluate(
            handle, root, "classic-1", [examples], examples, (0.91, 0.8, 0.72), True, pushed="7"
        )
        _execute(
            handle,
            "classic-2",
            "MtrecExampleGen",
            EXAMPLE_GEN,
            outputs={"examples": [examples]},
            state="cached",
        )
        _train_and_evaluate(
            handle,
            root,
            "classic-2",
            [examples],
            examples,
            (0.93, 0.79, 0.7),
            False,
            transform_state="cached",
            transformed=transformed,
        )
    _set_start_times(path)
    return path


def test_classic_runs_train_and_evaluate_on_span_0_even_when_cached(tmp_path):
    rows = store.run_history(store.open_store(classic_store(tmp_path)), PIPELINE)
    assert [
        (r.run_id, r.span, r.trained_spans, r.eval_span, r.eval_split_of_trained) for r in rows
    ] == [("classic-1", 0, [0], 0, True), ("classic-2", 0, [0], 0, True)]
    assert [(r.warm_start, r.blessed, r.pushed_version) for r in rows] == [
        (False, True, "7"),
        (False, False, None),
    ]


# ----------------------------------------------------------------------------- text


def test_history_table(tmp_path):
    assert inspection.format_history(_rows(tmp_path)).splitlines() == [
        "run    started           span  trained on spans  eval span  start  rating_rmse"
        "  click_auc  purchase_auc  blessed  pushed",
        "run-1  2024-05-01 06:00  3     1,2               3          cold        0.9500"
        "     0.7800        0.7100  yes      111",
        "run-2  2024-05-02 06:00  4     2,3               4          warm        0.9700"
        "     0.7600        0.6900  no       -",
        "run-3  2024-05-03 06:30  5     -                 -          -                -"
        "          -             -  stopped: AnomaliesGate failed",
    ]


def test_history_table_of_the_classic_pipeline(tmp_path):
    rows = store.run_history(store.open_store(classic_store(tmp_path)), PIPELINE)
    assert inspection.format_history(rows).splitlines()[1:] == [
        "classic-1  2024-04-01 09:15  0     0                 0 (eval split)  cold        0.9100"
        "     0.8000        0.7200  yes      7",
        "classic-2  2024-04-02 09:15  0     0                 0 (eval split)  cold        0.9300"
        "     0.7900        0.7000  no       -",
    ]


@pytest.mark.parametrize(
    ("spans", "text"),
    [
        ([], "-"),
        ([0], "0"),
        ([3, 4, 5, 6], "3-6"),
        ([4, 1, 3], "1,3,4"),
        ([1, 2, 3, 5, 7, 8, 9, 10], "1-3,5,7-10"),
    ],
)
def test_spans_are_compact(spans, text):
    assert inspection.spans_text(spans) == text


def test_inspect_history_on_the_command_line(tmp_path, capsys):
    continuous_store(tmp_path)
    args = ["inspect", "--history", "--output-dir", str(tmp_path), "--pipeline-name", PIPELINE]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("  ")[0] == "run" and len(lines) == 4
    assert lines[3].endswith("stopped: AnomaliesGate failed")

    assert main([*args, "--format", "json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert runs[1] == {
        "run_id": "run-2",
        "started": "2024-05-02T06:00:00+00:00",
        "span": 4,
        "trained_spans": [2, 3],
        "eval_span": 4,
        "eval_split_of_trained": False,
        "warm_start": True,
        "metrics": {"rating": 0.97, "click": 0.76, "purchase": 0.69},
        "blessed": False,
        "pushed_version": None,
        "failed_node": None,
        "unfinished_node": None,
        "cached_nodes": [],
        "ingest_only": False,
    }
    assert [r["failed_node"] for r in runs] == [None, None, "AnomaliesGate"]


def test_inspect_history_without_mlmd_is_one_line(tmp_path, capsys):
    assert main(["inspect", "--history", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mtrec: error: {tmp_path / 'metadata.sqlite'}: no MLMD database; run the pipeline first"
    )


def test_inspect_history_of_an_unknown_pipeline_is_one_line(tmp_path, capsys):
    continuous_store(tmp_path)
    args = ["inspect", "--history", "--output-dir", str(tmp_path), "--pipeline-name", "other"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == "mtrec: error: no run of pipeline 'other' in MLMD"


# ----------------------------------------------------------------------------- report


def test_report_plots_each_heads_headline_metric_across_runs(tmp_path):
    rows = _rows(tmp_path)
    figure = report.history_figure(rows)
    try:
        by_title = {axis.get_title(): axis for axis in figure.axes}
        assert list(by_title) == [
            "rating RMSE (lower is better)",
            "click AUC (higher is better)",
            "purchase AUC (higher is better)",
        ]
        for title, values in (
            ("rating RMSE (lower is better)", [0.95, 0.97]),
            ("click AUC (higher is better)", [0.78, 0.76]),
            ("purchase AUC (higher is better)", [0.71, 0.69]),
        ):
            axis = by_title[title]
            [line] = axis.get_lines()  # Run 3 stopped: no point.
            assert list(line.get_xdata()) == [0, 1] and list(line.get_ydata()) == values
            marks = {c.get_label(): c.get_offsets().tolist() for c in axis.collections}
            assert marks == {"blessed": [[0, values[0]]], "not blessed": [[1, values[1]]]}
            assert [t.get_text() for t in axis.get_xticklabels()] == [
                "run 1\neval span 3",
                "run 2\neval span 4",
                "run 3\nspan 5\nstopped",
            ]
    finally:
        report._pyplot().close(figure)

    page = report.render(make_inspection(), rows)
    section = page.split(f"<h2>{report.HISTORY_TITLE}</h2>")[1].split("<h2>")[0]
    assert section.count("<img alt='headline metrics across runs' src='data:image/png") == 1
    assert (
        "<tr><td>run-1</td><td>2024-05-01 06:00</td><td>3</td><td>1,2</td><td>3</td>"
        "<td>cold</td><td>0.9500</td><td>0.7800</td><td>0.7100</td><td>yes</td><td>111</td></tr>"
    ) in section
    assert "<td>stopped: AnomaliesGate failed</td>" in section


def test_the_plot_labels_at_most_a_dozen_runs(tmp_path):
    rows = [dataclasses.replace(_rows(tmp_path)[0], eval_span=n) for n in range(30)]
    figure = report.history_figure(rows)
    try:
        labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
        assert labels[:2] == ["run 1\neval span 0", "run 4\neval span 3"] and len(labels) == 10
        assert len(figure.axes[0].get_lines()[0].get_ydata()) == 30  # Every run plotted.
    finally:
        report._pyplot().close(figure)


def test_report_has_no_history_plot_with_one_run(tmp_path):
    rows = _rows(tmp_path)
    for history in ([], rows[:1]):
        page = report.render(make_inspection(), history)
        assert report.HISTORY_TITLE not in page and "across runs" not in page
        assert page.count("<img ") == 3  # The per-slice charts only.


def test_report_command_adds_the_history(tmp_path, monkeypatch, capsys):
    continuous_store(tmp_path)
    found = make_inspection()
    monkeypatch.setattr("mtrec.cli.results._load_inspection", lambda args: found)
    out = tmp_path / "r.html"
    args = ["report", "--html", str(out), "--output-dir", str(tmp_path)]
    assert main([*args, "--pipeline-name", PIPELINE]) == 0
    assert f"<h2>{report.HISTORY_TITLE}</h2>" in out.read_text()
