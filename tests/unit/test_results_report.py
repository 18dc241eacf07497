"""The report's per-slice bar charts: bar lengths are values, so the value axis starts at 0."""

import math

import pytest

from mtrec import names as F
from mtrec.results import report
from tests.unit.test_inspection import make_full_run_inspection, make_inspection


@pytest.mark.parametrize("head", F.HEADS)
def test_slice_bar_charts_start_their_value_axis_at_zero(head):
    found = make_inspection(with_baseline=True)  # Values 0.5 to 2.0, differences of 0.1.
    figure = report.slice_chart_figure(found, head)
    try:
        charts = [axis for axis in figure.axes if axis.patches]  # Axes with bars.
        assert charts  # One per slice feature with values.
        for axis in charts:
            low, high = axis.get_xlim()  # Horizontal bars: values along x.
            assert low == 0.0
            widths = [bar.get_width() for bar in axis.patches]
            assert all(0 < width <= high for width in widths)  # Every bar whole.
    finally:
        report._pyplot().close(figure)


def test_slice_bar_charts_start_at_zero_even_when_all_values_are_close():
    found = make_inspection()
    for index, row in enumerate(found.slices):  # AUCs within a hundredth of each other.
        for head in F.BINARY_HEADS:
            row.candidate[head]["auc"] = 0.81 + 0.002 * index
    figure = report.slice_chart_figure(found, F.CLICK)
    try:
        for axis in (a for a in figure.axes if a.patches):
            low, high = axis.get_xlim()
            assert low == 0.0 and high > 0.81 and math.isfinite(high)
    finally:
        report._pyplot().close(figure)


def test_report_names_the_data_fingerprints_and_warns_when_they_differ():
    found = make_full_run_inspection()  # Baseline trained on aaaa1111, candidate bbbb2222.
    page = report._summary_html(found)
    assert "<td>Data fingerprint</td><td>candidate bbbb2222, baseline aaaa1111</td>" in page
    assert "<p class='failed'>WARNING: the baseline model was trained on examples" in page
    found.run.baseline_data_fingerprint = "bbbb2222"
    assert "WARNING" not in report._summary_html(found)
