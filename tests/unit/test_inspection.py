"""`mtrec inspect` and `mtrec report` on evaluations built in the test (no pipeline run)."""

import json
import math

import pytest

from mtrec import names as F
from mtrec.cli.main import main
from mtrec.results import inspection, report
from mtrec.results.inspection import FlagRule, Inspection, SliceMetrics, ThresholdCheck


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
    assert "Thresholds: 1 passed, 1 failed, 0 skipped" in text
    lines = text.splitlines()
    first_check = lines[lines.index("Thresholds: 1 passed, 1 failed, 0 skipped") + 1]
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
