"""`mtrec inspect` and `mtrec report` on evaluations built in the test (no pipeline run)."""

import json
import math

import pytest

from mtrec import names as F
from mtrec.cli.main import build_parser, main
from mtrec.errors import MtrecError
from mtrec.results import inspection, report
from mtrec.results.inspection import FlagRule, Inspection, SliceMetrics, ThresholdCheck
from mtrec.results.store import RunSummary


def slice_row(
    name: str, auc: float, rmse: float, count: float, baseline_auc: float | None = None
) -> SliceMetrics:
    feature, _, value = name.partition("=")
    candidate = {
        F.RATING: {"root_mean_squared_error": rmse, "mean_absolute_error": rmse * 0.8},
        F.CLICK: {"auc": auc, "binary_crossentropy": 0.4, "calibration": 1.0},
        F.PURCHASE: {"auc": auc, "binary_crossentropy": 0.3, "calibration": 0.9},
    }
    baseline = (
        {} if baseline_auc is None else {head: {"auc": baseline_auc} for head in F.BINARY_HEADS}
    )
    return SliceMetrics(
        name,
        "" if name == "overall" else feature,
        value,
        {F.RATING: count / 5, F.CLICK: count, F.PURCHASE: count},
        candidate,
        baseline,
    )


def make_inspection(with_baseline: bool = False) -> Inspection:
    base = 0.79 if with_baseline else None
    slices = [
        slice_row("overall", 0.80, 1.00, 10_000, base),
        slice_row("gender=F", 0.70, 1.20, 3_000, base),  # Much worse on both.
        slice_row("gender=M", 0.82, 0.95, 7_000, base),
        slice_row("occupation=doctor", 0.50, 2.00, 20, base),
    ]  # Too small to flag.
    checks = [
        ThresholdCheck(F.CLICK, "auc", "overall", "value", 0.80, ">= 0.6", "passed"),
        ThresholdCheck(
            F.RATING, "root_mean_squared_error", "gender=F", "value", 1.2, "<= 1.1", "failed"
        ),
    ]
    return Inspection(
        evaluation_uri="/nowhere/evaluation",
        validation_ok=False,
        has_baseline=with_baseline,
        thresholds=checks,
        slices=slices,
        flags=inspection.find_flags(slices),
    )


def test_flags_only_slices_much_worse_than_overall_and_large_enough():
    flags = make_inspection().flags
    assert {(f.head, f.slice) for f in flags} == {
        (F.RATING, "gender=F"),
        (F.CLICK, "gender=F"),
        (F.PURCHASE, "gender=F"),
    }
    rating = next(f for f in flags if f.head == F.RATING)
    assert rating.value == pytest.approx(1.2) and rating.overall == pytest.approx(1.0)
    # A looser rule flags nothing; a smaller min_count lets the tiny slice in.
    slices = make_inspection().slices
    assert inspection.find_flags(slices, FlagRule(auc_margin=0.2, rmse_ratio=1.5)) == []
    small = inspection.find_flags(slices, FlagRule(min_count=1))
    assert any(f.slice == "occupation=doctor" for f in small)


def test_text_view_puts_failures_first_and_marks_flagged_rows():
    text = inspection.format_text(make_inspection())
    assert "Blessing: NOT BLESSED" in text
    counts = "Thresholds: 1 passed, 1 failed, 0 skipped (--thresholds lists all)"
    lines = text.splitlines()
    first_check = lines[lines.index(counts) + 1]
    assert first_check.split() == [
        "FAILED",
        "rating/RMSE",
        "value",
        "on",
        "gender=F:",
        "1.2000",
        "(<=",
        "1.1)",
    ]
    flagged = [line for line in lines if line.startswith("gender=F")]
    assert len(flagged) == 3 and all(line.endswith("!") for line in flagged)
    assert "Candidate vs baseline: no baseline in this evaluation." in text


def test_text_view_compares_with_the_baseline():
    text = inspection.format_text(make_inspection(with_baseline=True))
    compared = [line.split() for line in text.splitlines() if "->" in line]
    assert compared == [
        [f"{head}/AUC", "0.7900", "->", "0.8000", "(+0.0100)", "better"] for head in F.BINARY_HEADS
    ]
    header = next(line for line in text.splitlines() if line.startswith("click "))
    assert header.split()[-2:] == ["baseline", "delta"]


def test_json_view_is_strict_json():
    found = make_inspection()
    found.slices[0].candidate[F.CLICK]["calibration"] = math.nan
    data = json.loads(json.dumps(found.to_json(), allow_nan=False))
    assert data["model"]["blessed"] is False
    assert data["slices"][0]["candidate"]["click"]["calibration"] is None
    assert [f["slice"] for f in data["flags"]] == ["gender=F"] * 3


def test_html_report_is_self_contained_and_says_what_it_lacks(tmp_path):
    path = report.write_report(make_inspection(with_baseline=True), tmp_path / "r.html")
    page = path.read_text()
    assert page.count("<img ") == 3  # The per-slice charts, one per head.
    assert page.count("src='data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page  # Nothing fetched.
    for title in (
        "Metrics per head and slice",
        "Calibration",
        "Rating error distribution",
        "Candidate vs baseline",
        "Data: statistics and anomalies",
        "Training curves",
        "Thresholds",
    ):
        assert f"<h2>{title}</h2>" in page
    # Sections whose inputs live in MLMD say so instead of failing.
    assert page.count("Not available:") == 4
    assert "<span class='failed'>0.7000</span>" in page  # Flagged click AUC on gender=F.


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rmse-ratio", "0.5"], "mtrec: error: --rmse-ratio must be >= 1"),
        (["--evaluation", "/no/such/dir"], "mtrec: error: /no/such/dir: not a TFMA evaluation"),
    ],
)
def test_inspect_errors_are_one_line(args, message, capsys):
    assert main(["inspect", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1


def test_inspect_without_a_run_says_so(tmp_path, capsys):
    assert main(["report", "--html", str(tmp_path / "r.html"), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"mtrec: error: {tmp_path / 'metadata.sqlite'}: no MLMD database; "
        "run the pipeline first"
    )
    assert not (tmp_path / "r.html").exists()


# ----------------------------------------------------------------------------- summary


def make_full_run_inspection(failed: int = 12, passed: int = 156) -> Inspection:
    """A run's inspection the size of a real one: ~170 thresholds, pushed, with a baseline."""
    found = make_inspection(with_baseline=True)
    for slice_row_ in found.slices:
        slice_row_.baseline[F.RATING] = {"root_mean_squared_error": 1.05}
    checks = [
        ThresholdCheck(F.CLICK, "auc", f"genre=g{i}", "value", 0.7, ">= 0.55", "passed")
        for i in range(passed)
    ] + [
        ThresholdCheck(
            F.RATING,
            "root_mean_squared_error",
            f"occupation=o{i}",
            "change",
            0.05,
            "change +0.02 at most",
            "failed",
        )
        for i in range(failed)
    ]
    found.thresholds = checks
    found.run = RunSummary(
        run_id="run-7",
        components=[],
        blessed=False,
        model_uri="/root/Trainer/model/7",
        baseline_model_uri="/root/Trainer/model/3",
        pushed_to="/serving/1700000000",
        pushed_version="1700000000",
        data_fingerprint="bbbb2222",
        baseline_data_fingerprint="aaaa1111",
    )
    return found


def test_text_view_opens_with_a_short_summary_and_hides_passed_thresholds():
    text = inspection.format_text(make_full_run_inspection())
    top = text.splitlines()[:25]
    assert "Blessing: NOT BLESSED" in top
    assert "Model: /root/Trainer/model/7 (version 1700000000 at /serving/1700000000)" in top
    assert "Thresholds: 156 passed, 12 failed, 0 skipped (--thresholds lists all)" in top
    failures = [line for line in top if line.split()[:1] == ["FAILED"]]
    assert len(failures) == inspection.MAX_SUMMARY_FAILURES
    assert f"  ... and {12 - inspection.MAX_SUMMARY_FAILURES} more failed" in top
    # Each head's headline metric: candidate, baseline, delta (and which way it went).
    headline = {line.split()[0]: line.split()[1:] for line in top if line.startswith("  ")}
    assert headline["rating/RMSE"] == ["1.0000", "1.0500", "-0.0500", "better"]
    assert headline["click/AUC"] == ["0.8000", "0.7900", "+0.0100", "better"]
    assert headline["purchase/AUC"] == ["0.8000", "0.7900", "+0.0100", "better"]
    assert any(line.startswith("WARNING: the baseline model was trained") for line in top)
    # No passed threshold anywhere without --thresholds; the tables follow the summary.
    assert "PASSED" not in text
    assert "\nclick " in text and "Flagged slices" in text


def test_text_view_lists_every_threshold_when_asked():
    text = inspection.format_text(make_full_run_inspection(), thresholds=True)
    lines = text.splitlines()
    assert sum(line.split()[:1] == ["PASSED"] for line in lines) == 156
    assert sum(line.split()[:1] == ["FAILED"] for line in lines) == 12 + 8  # All, and the top.
    assert "All thresholds (156 passed, 12 failed, 0 skipped):" in lines
    assert "PASSED" not in "\n".join(lines[:25])  # The summary stays the same.


def test_summary_without_a_baseline_shows_the_candidate_only():
    top = inspection.format_text(make_inspection()).splitlines()[:25]
    headline = {line.split()[0]: line.split()[1:] for line in top if line.startswith("  ")}
    assert headline["rating/RMSE"] == ["1.0000", "-", "-"]
    assert headline["click/AUC"] == ["0.8000", "-", "-"]


def test_inspect_has_a_thresholds_flag():
    assert build_parser().parse_args(["inspect", "--thresholds"]).thresholds is True
    assert build_parser().parse_args(["inspect"]).thresholds is False


def test_json_view_keeps_every_threshold_and_adds_the_summary():
    found = make_full_run_inspection()
    data = json.loads(json.dumps(found.to_json(), allow_nan=False))
    assert len(data["thresholds"]) == 168
    assert data["model"]["version"] == "1700000000"
    assert data["model"]["data_fingerprint"] == "bbbb2222"
    assert data["model"]["baseline_data_fingerprint"] == "aaaa1111"
    assert len(data["warnings"]) == 1
    click = next(h for h in data["headline"] if h["head"] == F.CLICK)
    assert click["metric"] == "auc" and click["verdict"] == "better"
    assert click["delta"] == pytest.approx(0.01)


# ----------------------------------------------------------------------------- reading


def write_tfma_output(path, eval_config=True, metrics=True, validations=1, values=None):
    """An Evaluator output directory as TFMA writes it: eval_config.json, metrics and
    validation result TFRecords of protos. ``values``: overall metrics, {(head, name):
    value} (default: click AUC 0.75)."""
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow_model_analysis import version
    from tensorflow_model_analysis.proto import (
        config_pb2,
        metrics_for_slice_pb2,
        validation_result_pb2,
    )

    path.mkdir(parents=True, exist_ok=True)
    if eval_config:
        run = config_pb2.EvalRun(eval_config=config_pb2.EvalConfig(), version=version.VERSION)
        (path / "eval_config.json").write_text(json_format.MessageToJson(run))
    if metrics:
        record = metrics_for_slice_pb2.MetricsForSlice()
        for (head, name), value in (values or {(F.CLICK, "auc"): 0.75}).items():
            entry = record.metric_keys_and_values.add()
            entry.key.name, entry.key.output_name = name, head
            entry.value.double_value.value = value
        with tf.io.TFRecordWriter(str(path / "metrics-00000-of-00001.tfrecord")) as out:
            out.write(record.SerializeToString())
    for index in range(validations):
        result = validation_result_pb2.ValidationResult(validation_ok=True)
        with tf.io.TFRecordWriter(str(path / f"validations-{index}.tfrecord")) as out:
            out.write(result.SerializeToString())
    return path


def test_reads_an_evaluator_output(tmp_path):
    found = inspection.inspect_evaluation(str(write_tfma_output(tmp_path / "eval")))
    assert found.validation_ok and found.overall.candidate[F.CLICK]["auc"] == 0.75


def _garbage(path, name, data=b"not a record"):
    (path / name).write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: p / "missing", "no such directory"),
        (lambda p: write_tfma_output(p, eval_config=False), "no eval_config.json"),
        (lambda p: _garbage(write_tfma_output(p), "eval_config.json"), "ParseError"),
        (lambda p: _garbage(write_tfma_output(p), "eval_config.json", b"{}"), "ValueError"),
        (lambda p: write_tfma_output(p, validations=0), "0 validation result files"),
        (lambda p: write_tfma_output(p, validations=2), "2 validation result files"),
        (lambda p: write_tfma_output(p, metrics=False), "no metrics"),
        (
            lambda p: _garbage(write_tfma_output(p), "metrics-00000-of-00001.tfrecord"),
            "DataLossError",
        ),
    ],
)
def test_unreadable_evaluator_output_is_one_user_error(tmp_path, make, why):
    uri = str(make(tmp_path / "eval"))
    with pytest.raises(MtrecError, match="not a TFMA evaluation output") as error:
        inspection.inspect_evaluation(uri)
    assert str(error.value).startswith(f"{uri}: ") and why in str(error.value)


def test_undecodable_records_are_one_user_error(tmp_path):
    import tensorflow as tf

    path = write_tfma_output(tmp_path / "eval")
    with tf.io.TFRecordWriter(str(path / "validations-0.tfrecord")) as out:
        out.write(b"\xff\xff not a ValidationResult")
    with pytest.raises(MtrecError, match="DecodeError"):
        inspection.inspect_evaluation(str(path))


def test_each_threshold_is_listed_under_the_metric_it_holds():
    """The Evaluator's thresholds sit on RMSE, AUC and each binary head's example count;
    `--thresholds` lists the count under its own name, as a count (it once showed it as an
    AUC bound, and then could not name it)."""
    from mtrec.components import evaluation
    from mtrec.components.thresholds import EvalThresholds

    config = evaluation.make_eval_config(EvalThresholds(), eval_examples=10_000)
    held = {m.class_name for s in config.metrics_specs for m in s.metrics if m.per_slice_thresholds}
    assert held == set(F.THRESHOLD_METRICS)
    overall = slice_row("overall", 0.80, 1.00, 10_000)
    for head in F.BINARY_HEADS:
        overall.candidate[head]["example_count"] = 9_999.0
    failures = {(F.CLICK, "example_count", False, "overall")}
    checks = [
        c
        for c in inspection._threshold_checks(config, [overall], [], failures, False)
        if c.kind == "value"
    ]
    counts = [c for c in checks if c.metric == "example_count"]
    assert [(c.head, c.bound, c.status) for c in counts] == [
        (F.CLICK, "= 10000", "failed"),
        (F.PURCHASE, "= 10000", "passed"),
    ]
    assert {c.metric for c in checks} == {"example_count", "auc", "root_mean_squared_error"}
    assert inspection._check_line(counts[0]) == (
        "  FAILED  click/examples value on overall: 9999 (= 10000)"
    )
