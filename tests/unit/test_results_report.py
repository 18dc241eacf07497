"""The report's per-slice bar charts (bar lengths are values, so the value axis starts at 0)
and its serving-vs-training plots."""

import math

import pytest
from tensorflow_metadata.proto.v0 import statistics_pb2

from mtrec import names as F
from mtrec.results import report, skew
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


def _stats(**features: dict) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Statistics of features given as {"values": {value: count}} (categorical) or
    {"buckets": [(low, high, count)], "quantiles": bool} (numeric)."""
    out = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = out.datasets.add()
    for name, spec in features.items():
        feature = dataset.features.add()
        feature.path.step.append(name)
        if "values" in spec:
            strings = feature.string_stats
            strings.common_stats.tot_num_values = sum(spec["values"].values())
            for value, count in spec["values"].items():
                strings.rank_histogram.buckets.add(label=value, sample_count=count)
        else:
            histogram = feature.num_stats.histograms.add()
            if spec.get("quantiles"):
                histogram.type = statistics_pb2.Histogram.QUANTILES
            for low, high, count in spec["buckets"]:
                histogram.buckets.add(low_value=low, high_value=high, sample_count=count)
    return out


def _check(training, serving, measurements: list[skew.Measurement]) -> skew.SkewCheck:
    result = skew.SkewResult(None, measurements)
    requests = skew.RequestStatistics(serving, 1, 10, 40, {7: 10})
    data = skew.TrainingData("/stats", "/schema")
    return skew.SkewCheck(result, requests, data, 7, [], training, None)


def test_serving_vs_training_draws_shares_and_densities_drifted_first():
    many = {f"v{i:02d}": 100 - i for i in range(20)}  # More values than are drawn.
    training = _stats(
        city={"values": {"a": 6, "b": 4}},
        many={"values": many},
        age={"buckets": [(0, 10, 30), (10, 20, 10)]},
        score={"buckets": [(0, 1, 5), (1, 3, 5)], "quantiles": True},
    )
    serving = _stats(
        city={"values": {"c": 2, "a": 2}},
        many={"values": many},
        age={"buckets": [(5, 5, 8)]},  # One value only: a bucket of width 0.
        score={"buckets": [(0, 2, 1), (2, 3, 3)], "quantiles": True},
    )
    measurements = [
        skew.Measurement("city", "L-infinity", 0.6, 0.1, True),
        skew.Measurement("age", "Jensen-Shannon", 0.05, 0.1, False),
        skew.Measurement("many", "L-infinity", 0.0, 0.1, False),
        skew.Measurement("score", "Jensen-Shannon", None, None, False),
    ]
    drawn = report.serving_vs_training(_check(training, serving, measurements))
    assert [d.feature for d in drawn] == ["city", "age", "many", "score"]
    city, age, many_drawn, score = drawn
    assert city.categorical and city.drifted
    assert city.values == ("a", "c", "b")
    assert city.training == (0.6, 0.0, 0.4) and city.serving == (0.5, 0.5, 0.0)
    assert city.title() == "DRIFTED: city: L-infinity 0.6000 (threshold 0.1)"
    assert many_drawn.values == tuple(f"v{i:02d}" for i in range(report.MAX_CATEGORIES))
    assert not age.categorical and age.training == (0.75, 0.25) and age.serving == (1.0,)
    assert age.serving_buckets == ((5, 5),)
    assert score.training_buckets == ((0, 1), (1, 3)) and score.serving == (0.25, 0.75)
    assert score.title() == "score: Jensen-Shannon - (threshold -)"
    figure = report.drift_figure(age)
    try:
        training_bars, serving_bars = figure.axes[0].containers
        assert [b.get_height() for b in training_bars] == [0.075, 0.025]  # Share / width.
        assert serving_bars[0].get_width() == 1.0 and serving_bars[0].get_height() == 1.0
    finally:
        report._pyplot().close(figure)


def test_the_report_adds_the_section_only_with_a_check():
    training = _stats(city={"values": {"a": 1}})
    check = _check(training, training, [skew.Measurement("city", "L-infinity", 0.0, 0.1, False)])
    assert report.SKEW_TITLE not in report.render(make_inspection())
    page = report.render(make_inspection(), skew=check)
    assert f"<h2>{report.SKEW_TITLE}</h2>" in page and "No drift in 1 features compared." in page
    assert "<figure class='drift' data-feature='city' data-drifted='false'>" in page
