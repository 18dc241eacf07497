"""The one-pass head summaries give the values of the TFMA and Keras metrics they replace,
per model and output, through the EvalConfig the Evaluator runs."""

import numpy as np
import pytest
import tf_keras
from tensorflow_model_analysis import metrics as tfma_metrics
from tensorflow_model_analysis.evaluators import metrics_validator
from tensorflow_model_analysis.metrics import metric_specs, metric_types

from mtrec import names as F
from mtrec.components import evaluation, head_metrics
from mtrec.components.thresholds import EvalThresholds

RNG = np.random.default_rng(7)
N = 200
CLICK_P = RNG.uniform(0, 1, N).astype(np.float32)
CLICK_P[:3] = (0.0, 1.0, 1e-9)  # Saturated probabilities: Keras clips them, so must we.
CLICK = (RNG.uniform(0, 1, N) < CLICK_P).astype(np.float32)  # Clicks follow the scores.
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


def _run(computations, inputs) -> dict:
    """Runs TFMA computations as the Evaluator does: each combiner over two partial
    accumulators, merged, then the derived computations in order (duplicates once)."""
    values: dict = {}
    done = set()
    for computation in computations:
        if computation in done:
            continue
        done.add(computation)
        if isinstance(computation, metric_types.MetricComputation):
            combiner = computation.combiner
            halves = []
            for part in (inputs[: N // 2], inputs[N // 2 :]):
                accumulator = combiner.create_accumulator()
                for element in part:
                    accumulator = combiner.add_input(accumulator, element)
                halves.append(accumulator)
            values.update(combiner.extract_output(combiner.merge_accumulators(halves)))
        else:
            values.update(computation.result(values))
    return values


def _compute(metric: metric_types.Metric, inputs, **kwargs) -> dict[str, float]:
    """The metric's public values by name."""
    values = _run(metric.computations(**kwargs), inputs)
    return {key.name: value for key, value in values.items() if not key.name.startswith("_")}


def _exact_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney: the share of (positive, negative) pairs ranked right, ties half."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + ties / 2) / (len(positive) * len(negative)))


@pytest.mark.unit
def test_binary_summary_matches_keras_log_loss_and_tfma_calibration():
    values = _compute(
        head_metrics.BinarySummary(), _inputs(), output_names=[F.CLICK], example_weighted=False
    )
    keras_bce = tf_keras.metrics.BinaryCrossentropy()
    keras_bce.update_state(CLICK[:, None], CLICK_P[:, None])
    count = _compute(head_metrics.BinaryExampleCount(), _inputs(), output_names=[F.CLICK])
    assert count == {"example_count": N}
    assert values == pytest.approx(
        {
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
    combiner = head_metrics.BinarySummary().computations(output_names=[F.CLICK])[0].combiner
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
def test_auc_rmse_and_the_calibration_plot_match_tfma_and_the_exact_values():
    inputs = _inputs()
    click = _run(
        [
            *head_metrics.BinaryAUC().computations(output_names=[F.CLICK]),
            *head_metrics.BinaryCalibrationPlot().computations(output_names=[F.CLICK]),
        ],
        inputs,
    )
    ours = {key.name: value for key, value in click.items()}
    tfma_values = _run(
        [
            *tfma_metrics.AUC(num_thresholds=1000).computations(output_names=[F.CLICK]),
            *tfma_metrics.CalibrationPlot(num_buckets=100).computations(output_names=[F.CLICK]),
        ],
        inputs,
    )
    theirs = {key.name: value for key, value in tfma_values.items()}
    # Pairs within one of the 1,000 buckets count one half: a few of 200 examples' pairs.
    assert ours["auc"] == pytest.approx(_exact_auc(CLICK, CLICK_P), abs=2e-3)
    assert ours["auc"] > 0.7
    assert ours["auc"] == pytest.approx(theirs["auc"], abs=1e-3)
    mine, tfma_plot = ours["calibration_plot"].buckets, theirs["calibration_plot"].buckets
    assert len(mine) == len(tfma_plot) == 102
    for a, b in zip(mine, tfma_plot, strict=True):
        assert a.lower_threshold_inclusive == pytest.approx(b.lower_threshold_inclusive)
        assert a.num_weighted_examples.value == b.num_weighted_examples.value
        assert a.total_weighted_label.value == b.total_weighted_label.value
        assert a.total_weighted_refined_prediction.value == pytest.approx(
            b.total_weighted_refined_prediction.value, rel=1e-6
        )
    rating = _compute(
        head_metrics.RegressionRMSE(), inputs, output_names=[F.RATING], example_weighted=True
    )
    rated = RATED.astype(bool)
    assert rating == pytest.approx(
        {"root_mean_squared_error": np.sqrt(np.mean((RATING - RATING_P)[rated] ** 2))}, rel=1e-6
    )


@pytest.mark.unit
def test_auc_counts_tied_pairs_half_and_is_zero_without_both_classes_as_tfma_gives():
    # Buckets hold [weight, weight * label, weight * prediction].
    assert head_metrics.auc({900: [2.0, 1.0, 1.8]}) == pytest.approx(0.5)
    assert head_metrics.auc({900: [1.0, 1.0, 0.9], 100: [1.0, 0.0, 0.1]}) == 1.0
    assert head_metrics.auc({900: [1.0, 0.0, 0.9], 100: [1.0, 1.0, 0.1]}) == 0.0
    assert head_metrics.auc({900: [3.0, 0.0, 2.7]}) == 0.0
    assert head_metrics.auc({}) == 0.0


@pytest.mark.unit
def test_the_eval_config_runs_one_pass_per_head_and_keeps_every_reported_metric_name():
    """TFMA resolves the head metrics from the EvalConfig (by module), runs one combiner
    per head, and yields exactly the metric names the results room reads."""
    config = evaluation.make_eval_config(EvalThresholds())
    computations = metric_specs.to_computations(config.metrics_specs, config)
    names: dict[str, set[str]] = {head: set() for head in F.HEADS}
    combiners: dict[str, set] = {head: set() for head in F.HEADS}
    for computation in computations:
        for key in computation.keys:
            if key.output_name in names and not key.name.startswith("_"):
                names[key.output_name].add(key.name)
        if isinstance(computation, metric_types.MetricComputation):
            (key,) = computation.keys
            combiners[key.output_name].add(computation)
    for head in F.HEADS:
        assert set(F.HEAD_METRICS[head]) | {F.COUNT_METRIC[head]} <= names[head], head
        assert len(combiners[head]) == 1, head
    assert names[F.CLICK] >= {"mean_label", "mean_prediction", "calibration_plot"}
    # The metrics that gate blessing carry the thresholds.
    specs = {spec.output_names[0]: spec for spec in config.metrics_specs}
    gated = {
        head: [m.class_name for m in specs[head].metrics if m.per_slice_thresholds]
        for head in F.HEADS
    }
    assert gated == {
        F.RATING: ["RegressionRMSE"],
        F.CLICK: ["BinaryAUC"],
        F.PURCHASE: ["BinaryAUC"],
    }
    thresholds = metric_specs.metric_thresholds_from_metrics_specs(config.metrics_specs, config)
    assert {(key.name, key.output_name) for key in thresholds} == {
        ("root_mean_squared_error", F.RATING),
        ("auc", F.CLICK),
        ("auc", F.PURCHASE),
    }


@pytest.mark.unit
def test_a_binary_heads_example_count_must_equal_the_eval_split_where_it_is_known():
    """A model evaluated on fewer eval examples than the data component wrote (rows lost on
    the way) fails validation on each binary head's example_count; on all of them, not."""
    config = evaluation.make_eval_config(EvalThresholds(), eval_examples=N)
    thresholds = metric_specs.metric_thresholds_from_metrics_specs(config.metrics_specs, config)
    counted = {(k.name, k.output_name) for k in thresholds if k.name == "example_count"}
    assert counted == {("example_count", F.CLICK), ("example_count", F.PURCHASE)}

    def failed(count: int) -> set[tuple[str, str]]:
        metrics = {
            metric_types.MetricKey("example_count", output_name=head): count
            for head in (F.CLICK, F.PURCHASE)
        }
        result = metrics_validator.validate_metrics(((), metrics), config)
        return {
            (failure.metric_key.name, failure.metric_key.output_name)
            for per_slice in result.metric_validations_per_slice
            for failure in per_slice.failures
            if failure.metric_key.name == "example_count"
        }

    assert failed(N) == set()
    assert failed(N - 1) == {("example_count", F.CLICK), ("example_count", F.PURCHASE)}
    unknown = evaluation.make_eval_config(EvalThresholds())
    assert not any(
        k.name == "example_count"
        for k in metric_specs.metric_thresholds_from_metrics_specs(unknown.metrics_specs, unknown)
    )
