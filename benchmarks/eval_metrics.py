"""Times the Evaluator's metric combiners per (example, slice) pair, three ways.

The combiners TFMA runs for the three heads, in one process, on synthetic examples shaped
as TFMA's extracts. TFMA feeds every combiner of the EvalConfig each (example, slice) pair
(about 8 slices per example on MovieLens-100K), so this cost times the pairs is the
Evaluator's marginal cost, model inference aside. Three configurations, alternating, with
the same inputs:

- ``tfma``: TFMA's own metrics for what mtrec reports: ExampleCount, WeightedExampleCount,
  MeanAbsoluteError, Keras's RMSE; ExampleCount, BinaryCrossEntropy, Calibration,
  MeanLabel, MeanPrediction, AUC (1,000 thresholds), CalibrationPlot (100 buckets);
- ``mixed``: mtrec before one pass per head (commit 2229ba5): TFMA's AUC, calibration plot
  and Keras RMSE beside mtrec's summaries;
- ``mtrec``: the shipped EvalConfig, one pass per head (components.head_metrics).

    .venv/bin/python benchmarks/eval_metrics.py [--pairs 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from mtrec import names as F

MIXED_GATED = {F.RATING: "RootMeanSquaredError", F.CLICK: "AUC", F.PURCHASE: "AUC"}
TFMA_STOCK = {
    F.RATING: ("ExampleCount", "WeightedExampleCount", "MeanAbsoluteError"),
    F.CLICK: (
        "ExampleCount",
        "BinaryCrossEntropy",
        "Calibration",
        "MeanLabel",
        "MeanPrediction",
        "CalibrationPlot",
    ),
}
TFMA_STOCK[F.PURCHASE] = TFMA_STOCK[F.CLICK]
SETTINGS = {"AUC": '{"num_thresholds": 1000}', "CalibrationPlot": '{"num_buckets": 100}'}


def inputs(pairs: int, seed: int = 0) -> list[Any]:
    """One StandardMetricInputs per pair, as TFMA's unbatched extracts hold them."""
    from tensorflow_model_analysis.metrics import metric_types

    rng = np.random.default_rng(seed)
    click_p = rng.uniform(size=pairs).astype(np.float32)
    click = (rng.uniform(size=pairs) < click_p).astype(np.float32)
    purchase_p = (click_p * rng.uniform(size=pairs)).astype(np.float32)
    purchase = click * (rng.uniform(size=pairs) < 0.5)
    rating = rng.integers(1, 6, pairs).astype(np.float32)
    rating_p = rng.uniform(1, 5, pairs).astype(np.float32)
    return [
        metric_types.StandardMetricInputs(
            labels={
                F.RATING: np.array([rating[i] * click[i]]),
                F.CLICK: np.array([click[i]]),
                F.PURCHASE: np.array([purchase[i]]),
            },
            predictions={
                F.RATING: np.array([rating_p[i]]),
                F.CLICK: np.array([click_p[i]]),
                F.PURCHASE: np.array([purchase_p[i]]),
            },
            example_weights={F.RATING: np.array([click[i]])},
        )
        for i in range(pairs)
    ]


def config(kind: str) -> Any:
    """The EvalConfig of one configuration (thresholds aside: they cost nothing per pair)."""
    import tensorflow_model_analysis as tfma

    from mtrec.components import evaluation, head_metrics
    from mtrec.components.thresholds import EvalThresholds

    if kind == "mtrec":
        return evaluation.make_eval_config(EvalThresholds())

    def metric(name: str, module: str = "") -> Any:
        return tfma.MetricConfig(class_name=name, module=module, config=SETTINGS.get(name, ""))

    specs = []
    for head in F.HEADS:
        if kind == "tfma":
            metrics = [metric(name) for name in TFMA_STOCK[head]]
        else:
            summary = "RegressionSummary" if head == F.RATING else "BinarySummary"
            metrics = [metric(summary, head_metrics.__name__)]
            if head != F.RATING:
                metrics.append(metric("BinaryExampleCount", head_metrics.__name__))
                metrics.append(metric("CalibrationPlot"))
        if head == F.RATING:
            metrics.append(metric("RootMeanSquaredError", "tf_keras.metrics"))
        else:
            metrics.append(metric(MIXED_GATED[head]))
        specs.append(tfma.MetricsSpec(output_names=[head], metrics=metrics))
    base = evaluation.make_eval_config(EvalThresholds())
    return tfma.EvalConfig(model_specs=base.model_specs, metrics_specs=specs)


def run(kind: str, elements: list[Any]) -> tuple[float, dict]:
    """Seconds to feed every combiner every element, merge and derive; and the values."""
    from tensorflow_model_analysis.metrics import metric_specs, metric_types

    eval_config = config(kind)
    computations = list(
        dict.fromkeys(metric_specs.to_computations(eval_config.metrics_specs, eval_config))
    )
    combiners = [c.combiner for c in computations if isinstance(c, metric_types.MetricComputation)]
    for combiner in combiners:
        if hasattr(combiner, "setup"):
            combiner.setup()
    started = time.perf_counter()
    accumulators = [combiner.create_accumulator() for combiner in combiners]
    for element in elements:
        for index, combiner in enumerate(combiners):
            accumulators[index] = combiner.add_input(accumulators[index], element)
    values: dict = {}
    for combiner, accumulator in zip(combiners, accumulators, strict=True):
        values.update(combiner.extract_output(combiner.merge_accumulators([accumulator])))
    for computation in computations:
        if isinstance(computation, metric_types.DerivedMetricComputation):
            values.update(computation.result(values))
    return time.perf_counter() - started, values


def headline(values: dict) -> str:
    wanted = {("root_mean_squared_error", F.RATING), ("auc", F.CLICK), ("auc", F.PURCHASE)}
    found = {
        (key.name, key.output_name): value
        for key, value in values.items()
        if (key.name, key.output_name) in wanted
    }
    return "  ".join(
        f"{output} {name}={found[(name, output)]:.5f}" for name, output in sorted(found)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20_000, help="(example, slice) pairs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.pairs < 1 or args.repeats < 1:
        parser.error("--pairs and --repeats must be at least 1")
    elements = inputs(args.pairs)
    kinds = ("tfma", "mixed", "mtrec")
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    for repeat in range(args.repeats):
        for kind in kinds:
            elapsed, values = run(kind, elements)
            seconds[kind].append(elapsed)
            if repeat == 0:
                print(f"{kind:>6}: {headline(values)}", flush=True)
    print(f"\n{args.pairs:,} (example, slice) pairs, 3 heads, median of {args.repeats}:")
    base = statistics.median(seconds["tfma"])
    for kind in kinds:
        median = statistics.median(seconds[kind])
        print(
            f"{kind:>6}: {median:7.2f} s  {args.pairs / median:9,.0f} pairs/s  "
            f"{median / base:5.2f}x tfma's time"
        )


if __name__ == "__main__":
    main()
