"""The one-pass head summaries give the values of the TFMA and Keras metrics they replace,
per model and output, through the EvalConfig the Evaluator runs."""

import numpy as np
import pytest
import tf_keras
from tensorflow_model_analysis.metrics import metric_specs, metric_types

from mtrec import names as F
from mtrec.components import evaluation, head_metrics
from mtrec.components.thresholds import EvalThresholds

RNG = np.random.default_rng(7)
N = 200
CLICK = RNG.integers(0, 2, N).astype(np.float32)
CLICK_P = RNG.uniform(0, 1, N).astype(np.float32)
CLICK_P[:3] = (0.0, 1.0, 1e-9)  # Saturated probabilities: Keras clips them, so must we.
RATING = RNG.integers(1, 6, N).astype(np.float32)
RATING_P = RNG.uniform(1, 5, N).astype(np.float32)
RATED = (RNG.uniform(size=N) < 0.3).astype(np.float32)  # The rating head's weight: 0 or 1.


def _inputs(model_name: str = "") -> list[metric_types.StandardMetricInputs]:
    """One StandardMetricInputs per example, shaped as TFMA's unbatched extracts are."""

    def keyed(value: dict) -> dict:
        return {model_name: value} if model_name else value

    return [
        metric_types.StandardMetricInputs(
            labels={F.CLICK: np.array([CLICK[i]]), F.RATING: np.array([RATING[i]])},
            predictions=keyed({F.CLICK: np.array([CLICK_P[i]]), F.RATING: np.array([RATING_P[i]])}),
            example_weights={F.RATING: np.array([RATED[i]])},
        )
        for i in range(N)
    ]


def _compute(metric: metric_types.Metric, inputs, **kwargs) -> dict[str, float]:
    """Runs the metric's combiners as Beam would: two partial accumulators, then merged."""
    (computation,) = metric.computations(**kwargs)
    combiner = computation.combiner
    halves = []
    for part in (inputs[: N // 2], inputs[N // 2 :]):
        accumulator = combiner.create_accumulator()
        for element in part:
            accumulator = combiner.add_input(accumulator, element)
        halves.append(accumulator)
    output = combiner.extract_output(combiner.merge_accumulators(halves))
    return {key.name: value for key, value in output.items()}


@pytest.mark.unit
def test_binary_summary_matches_keras_log_loss_and_tfma_calibration():
    values = _compute(
        head_metrics.BinarySummary(), _inputs(), output_names=[F.CLICK], example_weighted=False
    )
    keras_bce = tf_keras.metrics.BinaryCrossentropy()
    keras_bce.update_state(CLICK[:, None], CLICK_P[:, None])
    assert values == pytest.approx(
        {
            "example_count": N,
            "binary_crossentropy": float(keras_bce.result()),
            "calibration": CLICK_P.sum() / CLICK.sum(),
            "mean_label": CLICK.mean(),
            "mean_prediction": CLICK_P.mean(),
        },
        rel=1e-5,
    )


@pytest.mark.unit
def test_regression_summary_counts_and_averages_weighted_examples_only():
    values = _compute(
        head_metrics.RegressionSummary(),
        _inputs(),
        output_names=[F.RATING],
        example_weighted=True,
    )
    rated = RATED.astype(bool)
    assert values == pytest.approx(
        {
            # Weighted, as TFMA's ExampleCount is for a weighted metric.
            "example_count": rated.sum(),
            "weighted_example_count": rated.sum(),
            "mean_absolute_error": np.abs(RATING - RATING_P)[rated].mean(),
        },
        rel=1e-5,
    )


@pytest.mark.unit
def test_each_model_of_a_comparison_reads_its_own_predictions():
    inputs = _inputs("candidate")
    for element in inputs:
        element.prediction["baseline"] = {F.CLICK: np.array([0.5]), F.RATING: np.array([3.0])}
    kwargs = {"output_names": [F.CLICK], "example_weighted": False}
    candidate = _compute(head_metrics.BinarySummary(), inputs, model_names=["candidate"], **kwargs)
    baseline = _compute(head_metrics.BinarySummary(), inputs, model_names=["baseline"], **kwargs)
    assert candidate["mean_prediction"] == pytest.approx(CLICK_P.mean(), rel=1e-5)
    assert baseline["mean_prediction"] == pytest.approx(0.5)
    assert baseline["binary_crossentropy"] == pytest.approx(np.log(2), rel=1e-5)


@pytest.mark.unit
def test_a_head_with_several_values_per_example_is_refused_with_its_name():
    element = metric_types.StandardMetricInputs(
        labels={F.CLICK: np.array([1.0])}, predictions={F.CLICK: np.array([0.2, 0.8])}
    )
    (computation,) = head_metrics.BinarySummary().computations(output_names=[F.CLICK])
    combiner = computation.combiner
    with pytest.raises(ValueError) as error:
        combiner.add_input(combiner.create_accumulator(), element)
    assert str(error.value) == (
        "the prediction of output 'click' has 2 values per example; "
        "these metrics expect one (a scalar head)"
    )
    unlabeled = metric_types.StandardMetricInputs(
        labels={F.RATING: np.array([4.0])}, predictions={F.CLICK: np.array([0.2])}
    )
    with pytest.raises(ValueError) as error:
        combiner.add_input(combiner.create_accumulator(), unlabeled)
    assert str(error.value) == "no label for output 'click' in the evaluated examples"


@pytest.mark.unit
def test_the_eval_config_keeps_every_reported_metric_name_per_head():
    """TFMA resolves the summaries from the EvalConfig (by module) beside its own gated
    AUC and RMSE, and yields exactly the metric names the results room reads."""
    config = evaluation.make_eval_config(EvalThresholds())
    computations = metric_specs.to_computations(config.metrics_specs, config)
    names: dict[str, set[str]] = {head: set() for head in F.HEADS}
    for computation in computations:
        for key in computation.keys:
            if key.output_name in names and not key.name.startswith("_"):
                names[key.output_name].add(key.name)
    for head in F.HEADS:
        assert set(F.HEAD_METRICS[head]) | {F.COUNT_METRIC[head]} <= names[head], head
    assert names[F.CLICK] >= {"mean_label", "mean_prediction", "calibration_plot"}
    # The metrics that gate blessing are TFMA's (and Keras's) own.
    specs = {spec.output_names[0]: spec for spec in config.metrics_specs}
    gated = {
        head: [m.class_name for m in specs[head].metrics if m.per_slice_thresholds]
        for head in F.HEADS
    }
    assert gated == {F.RATING: ["RootMeanSquaredError"], F.CLICK: ["AUC"], F.PURCHASE: ["AUC"]}
    assert all(not m.module for s in specs.values() for m in s.metrics if m.per_slice_thresholds)
