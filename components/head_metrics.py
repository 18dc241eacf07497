"""TFMA metrics that summarise a head in one pass per example: the counts, log loss,
calibration and mean absolute error that the report shows for every slice.

TFMA runs one combiner per metric for every (example, slice) pair, and each of its own
combiners re-derives the label, prediction and weight through a general lookup that
handles multi-class, top-k and class weights. On MovieLens-100K that is about 8 slices
per example and 16 combiners, most of the Evaluator's time. These two metrics read each
head's single scalar label and prediction once and accumulate every reported sum
together. The gated metrics (AUC, RMSE) stay TFMA's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

EXAMPLE_COUNT = "example_count"
WEIGHTED_EXAMPLE_COUNT = "weighted_example_count"
MEAN_ABSOLUTE_ERROR = "mean_absolute_error"
BINARY_CROSSENTROPY = "binary_crossentropy"
CALIBRATION = "calibration"
MEAN_LABEL = "mean_label"
MEAN_PREDICTION = "mean_prediction"
# Keras's clip for log loss, so the figures match tf.keras.metrics.BinaryCrossentropy.
EPSILON = 1e-7

# Accumulator slots: [examples, sum w, sum w*label, sum w*prediction, sum w*loss].
_N, _W, _LABEL, _PREDICTION, _LOSS = range(5)
Accumulator = list[float]


def _scalar(value: Any, what: str, output_name: str) -> float:
    """The one value of a head's label, prediction or weight for one example."""
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


class _SummaryCombiner(beam.CombineFn):
    """Accumulates counts and weighted sums of label, prediction and a per-example loss."""

    def __init__(
        self,
        keys: dict[str, metric_types.MetricKey],
        model_name: str,
        output_name: str,
        example_weighted: bool,
        loss: Callable[[float, float], float],
    ) -> None:
        self._keys = keys
        self._model_name = model_name
        self._output_name = output_name
        self._example_weighted = example_weighted
        self._loss = loss

    def create_accumulator(self) -> Accumulator:
        return [0.0] * 5

    def add_input(
        self, accumulator: Accumulator, element: metric_types.StandardMetricInputs
    ) -> Accumulator:
        name, output = self._model_name, self._output_name
        weight = 1.0
        if self._example_weighted:
            value = _select(element.example_weight, name, output)
            if value is not None:
                weight = _scalar(value, "example weight", output)
        label = _scalar(_select(element.label, name, output), "label", output)
        prediction = _scalar(_select(element.prediction, name, output), "prediction", output)
        accumulator[_N] += 1.0
        accumulator[_W] += weight
        if weight:
            accumulator[_LABEL] += weight * label
            accumulator[_PREDICTION] += weight * prediction
            accumulator[_LOSS] += weight * self._loss(label, prediction)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Accumulator]) -> Accumulator:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for slot, value in enumerate(accumulator):
                merged[slot] += value
        return merged

    def extract_output(self, accumulator: Accumulator) -> metric_types.MetricsDict:
        n, w, label, prediction, loss = accumulator
        values = {
            # TFMA's ExampleCount sums the weights when the metric is weighted.
            EXAMPLE_COUNT: w if self._example_weighted else n,
            WEIGHTED_EXAMPLE_COUNT: w,
            MEAN_ABSOLUTE_ERROR: loss / w if w else math.nan,
            BINARY_CROSSENTROPY: loss / w if w else math.nan,
            CALIBRATION: prediction / label if label else math.nan,
            MEAN_LABEL: label / w if w else math.nan,
            MEAN_PREDICTION: prediction / w if w else math.nan,
        }
        return {key: values[name] for name, key in self._keys.items()}


def _computations(
    names: Sequence[str],
    loss: Callable[[float, float], float],
    model_names: list[str] | None,
    output_names: list[str] | None,
    example_weighted: bool,
) -> metric_types.MetricComputations:
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            keys = {
                name: metric_types.MetricKey(
                    name=name,
                    model_name=model_name,
                    output_name=output_name,
                    example_weighted=example_weighted,
                )
                for name in names
            }
            computations.append(
                metric_types.MetricComputation(
                    keys=list(keys.values()),
                    preprocessors=None,
                    combiner=_SummaryCombiner(
                        keys, model_name, output_name, example_weighted, loss
                    ),
                )
            )
    return computations


def _rating_computations(
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    return _computations(
        (EXAMPLE_COUNT, WEIGHTED_EXAMPLE_COUNT, MEAN_ABSOLUTE_ERROR),
        _absolute_error,
        model_names,
        output_names,
        example_weighted,
    )


def _binary_computations(
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    return _computations(
        (EXAMPLE_COUNT, BINARY_CROSSENTROPY, CALIBRATION, MEAN_LABEL, MEAN_PREDICTION),
        _log_loss,
        model_names,
        output_names,
        example_weighted,
    )


class RegressionSummary(metric_types.Metric):
    """example_count, weighted_example_count and mean_absolute_error of a scalar head."""

    def __init__(self) -> None:
        super().__init__(_rating_computations)


class BinarySummary(metric_types.Metric):
    """example_count, binary_crossentropy, calibration, mean_label and mean_prediction of
    a head that predicts a probability."""

    def __init__(self) -> None:
        super().__init__(_binary_computations)
