"""TFMA metrics computed from one pass per head: each example's label, prediction and weight
are read once and every metric of the head (the gated AUC and RMSE, the counts, log loss,
calibration, MAE and the calibration plot) derives from the same sums.

TFMA runs one combiner per metric for every (example, slice) pair, and each of its own
combiners re-derives the label, prediction and weight through a general lookup that
handles multi-class, top-k and class weights. On MovieLens-100K that is about 8 slices
per example; TFMA's AUC and calibration plot (a 10,000-bucket histogram), its Keras RMSE
wrapper and the summaries were three combiners per head. Here there is one.

The binary heads' histogram has BUCKETS equal-width buckets over [0, 1): AUC is the
trapezoidal area under the ROC curve at those thresholds, as TFMA's and Keras's AUC
(``summation_method="interpolation"``) compute it at theirs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.constants import (
    EXAMPLE_WEIGHTS_KEY,
    LABELS_KEY,
    PREDICTIONS_KEY,
)
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.proto import metrics_for_slice_pb2

EXAMPLE_COUNT = "example_count"
WEIGHTED_EXAMPLE_COUNT = "weighted_example_count"
MEAN_ABSOLUTE_ERROR = "mean_absolute_error"
ROOT_MEAN_SQUARED_ERROR = "root_mean_squared_error"
BINARY_CROSSENTROPY = "binary_crossentropy"
CALIBRATION = "calibration"
MEAN_LABEL = "mean_label"
MEAN_PREDICTION = "mean_prediction"
AUC = "auc"
CALIBRATION_PLOT = "calibration_plot"
# Keras's clip for log loss, so the figures match tf.keras.metrics.BinaryCrossentropy.
EPSILON = 1e-7
# Histogram buckets over [0, 1) (plus -1 below and BUCKETS from 1 up) for AUC (TFMA's AUC
# here had 1,000 thresholds) and the calibration plot's PLOT_BUCKETS, each BUCKETS //
# PLOT_BUCKETS of them. Class names differ from TFMA's: its registered classes win.
BUCKETS = 1000
PLOT_BUCKETS = 100
# The intermediate (private) metric that holds a head's sums, per kind of head.
_SUMS = {"rating": "_mtrec_rating_sums", "binary": "_mtrec_binary_sums"}


class HeadSums:
    """One head's weighted sums over a slice; ``histogram`` maps a prediction bucket to
    [weight, weight * label, weight * prediction] (binary heads only)."""

    __slots__ = ("histogram", "label", "loss", "n", "prediction", "squared", "w")

    def __init__(self) -> None:
        self.n = self.w = self.label = self.prediction = self.loss = self.squared = 0.0
        self.histogram: dict[int, list[float]] = {}

    def merge(self, other: HeadSums) -> None:
        self.n += other.n
        self.w += other.w
        self.label += other.label
        self.prediction += other.prediction
        self.loss += other.loss
        self.squared += other.squared
        for bucket, (w, label, prediction) in other.histogram.items():
            sums = self.histogram.setdefault(bucket, [0.0, 0.0, 0.0])
            sums[0] += w
            sums[1] += label
            sums[2] += prediction


def _scalar(value: Any, what: str, output_name: str) -> float:
    """The one value of a head's label, prediction or weight for one example."""
    if type(value) is np.ndarray and value.size == 1:  # The usual case, fast.
        return float(value.item())
    if value is None:
        raise ValueError(f"no {what} for output {output_name!r} in the evaluated examples")
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(
            f"the {what} of output {output_name!r} has {array.size} values per example; "
            "these metrics expect one (a scalar head)"
        )
    return float(array.reshape(()))


def _select(value: Any, model_name: str, output_name: str) -> Any:
    """``value`` for one model and output: TFMA keys multi-model inputs by model name and
    multi-output ones by output name; absent keys mean the value is shared."""
    if isinstance(value, dict) and model_name and model_name in value:
        value = value[model_name]
    if isinstance(value, dict) and output_name:
        value = value.get(output_name)
    return value


def _log_loss(label: float, prediction: float) -> float:
    p = min(max(prediction, EPSILON), 1.0 - EPSILON)
    return -(label * math.log(p + EPSILON) + (1.0 - label) * math.log(1.0 - p + EPSILON))


def _absolute_error(label: float, prediction: float) -> float:
    return abs(label - prediction)


class _HeadCombiner(beam.CombineFn):
    """Accumulates a head's HeadSums from each example's scalar label and prediction."""

    def __init__(self, key: metric_types.MetricKey, kind: str, example_weighted: bool) -> None:
        self._key = key
        self._binary = kind == "binary"
        self._loss = _log_loss if self._binary else _absolute_error
        self._example_weighted = example_weighted

    def create_accumulator(self) -> HeadSums:
        return HeadSums()

    def add_input(self, sums: HeadSums, element: metric_types.StandardMetricInputs) -> HeadSums:
        name, output = self._key.model_name, self._key.output_name
        # The extracts dict itself: the label/prediction properties go through a general
        # multi-level lookup that cost more than the rest of this method.
        extracts = element.extracts
        weight = 1.0
        if self._example_weighted:
            value = _select(extracts.get(EXAMPLE_WEIGHTS_KEY), name, output)
            if value is not None:
                weight = _scalar(value, "example weight", output)
        label = _scalar(_select(extracts.get(LABELS_KEY), name, output), "label", output)
        prediction = _scalar(
            _select(extracts.get(PREDICTIONS_KEY), name, output), "prediction", output
        )
        sums.n += 1.0
        if not weight:
            return sums
        sums.w += weight
        sums.label += weight * label
        sums.prediction += weight * prediction
        sums.loss += weight * self._loss(label, prediction)
        if self._binary:
            if 0.0 <= prediction < 1.0:
                bucket = int(prediction * BUCKETS)
            else:  # TFMA's edge buckets: [1, inf), and below 0 (or NaN).
                bucket = BUCKETS if prediction >= 1.0 else -1
            counts = sums.histogram.get(bucket)
            if counts is None:
                sums.histogram[bucket] = [weight, weight * label, weight * prediction]
            else:
                counts[0] += weight
                counts[1] += weight * label
                counts[2] += weight * prediction
        else:
            sums.squared += weight * (label - prediction) ** 2
        return sums

    def merge_accumulators(self, accumulators: Iterable[HeadSums]) -> HeadSums:
        merged = HeadSums()
        for sums in accumulators:
            merged.merge(sums)
        return merged

    def extract_output(self, sums: HeadSums) -> metric_types.MetricsDict:
        return {self._key: sums}


def auc(histogram: dict[int, list[float]]) -> float:
    """Area under the ROC curve at the buckets' thresholds (trapezoidal: the pairs that
    share a bucket count one half). 0 without both positives and negatives, as TFMA's AUC
    gives (so such a slice fails an AUC floor, as before)."""
    positives = sum(counts[1] for counts in histogram.values())
    negatives = sum(counts[0] - counts[1] for counts in histogram.values())
    if positives <= 0 or negatives <= 0:
        return 0.0
    area = above = 0.0  # above: positive weight in higher buckets.
    for bucket in sorted(histogram, reverse=True):
        w, label, _ = histogram[bucket]
        area += (w - label) * (above + label / 2.0)
        above += label
    return area / (positives * negatives)


def calibration_plot(
    histogram: dict[int, list[float]],
) -> metrics_for_slice_pb2.CalibrationHistogramBuckets:
    """TFMA's calibration plot layout: (-inf, 0), PLOT_BUCKETS buckets over [0, 1), then
    [1, inf)."""
    per_plot = BUCKETS // PLOT_BUCKETS
    sums = [[0.0, 0.0, 0.0] for _ in range(PLOT_BUCKETS + 2)]
    for bucket, counts in histogram.items():
        target = sums[0 if bucket < 0 else 1 + min(bucket // per_plot, PLOT_BUCKETS)]
        for slot in range(3):
            target[slot] += counts[slot]
    edges = [-math.inf] + [i / PLOT_BUCKETS for i in range(PLOT_BUCKETS + 1)] + [math.inf]
    plot = metrics_for_slice_pb2.CalibrationHistogramBuckets()
    for index, (w, label, prediction) in enumerate(sums):
        plot.buckets.add(
            lower_threshold_inclusive=edges[index],
            upper_threshold_exclusive=edges[index + 1],
            total_weighted_label={"value": label},
            total_weighted_refined_prediction={"value": prediction},
            num_weighted_examples={"value": w},
        )
    return plot


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


# What each metric name reads from a head's sums (``example_weighted`` for the counts).
_RESULTS: dict[str, Callable[[HeadSums, bool], Any]] = {
    # TFMA's ExampleCount sums the weights when the metric is weighted.
    EXAMPLE_COUNT: lambda s, weighted: s.w if weighted else s.n,
    WEIGHTED_EXAMPLE_COUNT: lambda s, weighted: s.w,
    MEAN_ABSOLUTE_ERROR: lambda s, weighted: _ratio(s.loss, s.w),
    ROOT_MEAN_SQUARED_ERROR: lambda s, weighted: math.sqrt(_ratio(s.squared, s.w)),
    BINARY_CROSSENTROPY: lambda s, weighted: _ratio(s.loss, s.w),
    CALIBRATION: lambda s, weighted: _ratio(s.prediction, s.label),
    MEAN_LABEL: lambda s, weighted: _ratio(s.label, s.w),
    MEAN_PREDICTION: lambda s, weighted: _ratio(s.prediction, s.w),
    AUC: lambda s, weighted: auc(s.histogram),
    CALIBRATION_PLOT: lambda s, weighted: calibration_plot(s.histogram),
}


def _computations(
    kind: str,
    names: Sequence[str],
    name: str | None = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    """Per model and output: the head's one combiner (identical for every metric of the
    head, so TFMA runs it once) and the metrics ``names`` derived from its sums. TFMA passes
    the metric's ``name`` too; the keys are ``names``."""
    computations: list = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            sums_key = metric_types.MetricKey(
                name=_SUMS[kind],
                model_name=model_name,
                output_name=output_name,
                example_weighted=example_weighted,
            )
            keys = {
                name: (
                    metric_types.PlotKey if name == CALIBRATION_PLOT else metric_types.MetricKey
                )(
                    name=name,
                    model_name=model_name,
                    output_name=output_name,
                    example_weighted=example_weighted,
                )
                for name in names
            }

            def result(
                metrics: dict[metric_types.MetricKey, Any],
                sums_key: metric_types.MetricKey = sums_key,
                keys: dict[str, metric_types.MetricKey] = keys,
            ) -> dict[metric_types.MetricKey, Any]:
                sums = metrics[sums_key]
                return {key: _RESULTS[name](sums, example_weighted) for name, key in keys.items()}

            computations.append(
                metric_types.MetricComputation(
                    keys=[sums_key],
                    preprocessors=None,
                    combiner=_HeadCombiner(sums_key, kind, example_weighted),
                )
            )
            computations.append(
                metric_types.DerivedMetricComputation(keys=list(keys.values()), result=result)
            )
    return computations


class _HeadMetric(metric_types.Metric):
    """Metrics of one kind of head (NAMES), derived from the head's one pass; the
    metric's own name (what thresholds attach to) is NAME, else its only metric's."""

    KIND = ""
    NAMES: tuple[str, ...] = ()
    NAME = ""

    def __init__(self, name: str | None = None) -> None:
        creator = functools.partial(_computations, self.KIND, self.NAMES)
        super().__init__(creator, name=name or self.NAME or self.NAMES[0])


class RegressionSummary(_HeadMetric):
    """example_count, weighted_example_count and mean_absolute_error of a scalar head."""

    KIND = "rating"
    NAMES = (EXAMPLE_COUNT, WEIGHTED_EXAMPLE_COUNT, MEAN_ABSOLUTE_ERROR)
    NAME = "regression_summary"


class RegressionRMSE(_HeadMetric):
    """root_mean_squared_error of a scalar head (weighted: the rated examples only)."""

    KIND = "rating"
    NAMES = (ROOT_MEAN_SQUARED_ERROR,)


class BinaryExampleCount(_HeadMetric):
    """example_count of a head that predicts a probability: a metric of its own, so a
    threshold can hold it to the eval examples the data component wrote."""

    KIND = "binary"
    NAMES = (EXAMPLE_COUNT,)


class BinarySummary(_HeadMetric):
    """binary_crossentropy, calibration, mean_label and mean_prediction of a head that
    predicts a probability."""

    KIND = "binary"
    NAMES = (BINARY_CROSSENTROPY, CALIBRATION, MEAN_LABEL, MEAN_PREDICTION)
    NAME = "binary_summary"


class BinaryAUC(_HeadMetric):
    """auc of a head that predicts a probability, from the head's histogram."""

    KIND = "binary"
    NAMES = (AUC,)


class BinaryCalibrationPlot(_HeadMetric):
    """calibration_plot (TFMA's layout, PLOT_BUCKETS buckets) from the head's histogram."""

    KIND = "binary"
    NAMES = (CALIBRATION_PLOT,)
