"""What blesses a model: thresholds, the TFMA EvalConfig (one MetricsSpec per head, slices,
absolute and change thresholds), and MtrecEvaluator, TFX's Evaluator completing that config
where it runs from what the data component recorded (the rating baseline, the slices large
enough to gate), so the pipeline's definition never depends on data read before it runs.
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow_model_analysis as tfma
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.components.evaluator.component import Evaluator
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import json_utils, proto_utils

from mtrec import names as F
from mtrec.components import head_metrics
from mtrec.components.thresholds import EvalThresholds, EvaluationSettings
from mtrec.data.config import DataSummary

log = logging.getLogger(__name__)
SETTINGS_KEY = "evaluation_settings"


# The class (in head_metrics) of each headline metric (names.HEAD_METRICS[head][0]); they
# gate blessing.
GATED = {F.RATING: "RegressionRMSE", F.CLICK: "BinaryAUC", F.PURCHASE: "BinaryAUC"}
# The rest of each head's metrics, per slice. All of a head's metrics derive from one pass
# over its examples (see head_metrics).
SUMMARY = {
    F.RATING: ("RegressionSummary",),
    F.CLICK: ("BinarySummary", "BinaryCalibrationPlot"),
    F.PURCHASE: ("BinarySummary", "BinaryCalibrationPlot"),
}
# Each binary head's example count; with the data component's eval count known, it must
# match it exactly, so a model evaluated on a partial eval split is not blessed.
COUNTED = {F.CLICK: "BinaryExampleCount", F.PURCHASE: "BinaryExampleCount"}


def _metric(name: str, **kwargs: Any) -> tfma.MetricConfig:
    return tfma.MetricConfig(class_name=name, module=head_metrics.__name__, **kwargs)


def _bound(higher: bool, value: float) -> tfma.GenericValueThreshold:
    if higher:
        return tfma.GenericValueThreshold(lower_bound={"value": value})
    return tfma.GenericValueThreshold(upper_bound={"value": value})


def _gated(
    name: str,
    higher: bool,
    overall: float,
    change: float,
    per_slice: float,
    gated_slices: tuple[tuple[str, str], ...],
) -> tfma.MetricConfig:
    """A metric with strict overall value and change thresholds, and a floor on each slice
    in ``gated_slices``."""
    overall_threshold = tfma.MetricThreshold(
        value_threshold=_bound(higher, overall),
        change_threshold=tfma.GenericChangeThreshold(
            direction=(
                tfma.MetricDirection.HIGHER_IS_BETTER
                if higher
                else tfma.MetricDirection.LOWER_IS_BETTER
            ),
            absolute={"value": -change if higher else change},
        ),
    )
    thresholds = [
        tfma.PerSliceMetricThreshold(
            slicing_specs=[tfma.SlicingSpec()], threshold=overall_threshold
        )
    ]
    if gated_slices:
        thresholds.append(
            tfma.PerSliceMetricThreshold(
                slicing_specs=[
                    tfma.SlicingSpec(feature_values={key: value}) for key, value in gated_slices
                ],
                threshold=tfma.MetricThreshold(value_threshold=_bound(higher, per_slice)),
            )
        )
    return _metric(name, per_slice_thresholds=thresholds)


def _counted(name: str, eval_examples: int | None) -> tfma.MetricConfig:
    """An example count, held overall to ``eval_examples`` where that is known."""
    if eval_examples is None:
        return _metric(name)
    exact = tfma.GenericValueThreshold(
        lower_bound={"value": eval_examples - 0.5}, upper_bound={"value": eval_examples + 0.5}
    )
    return _metric(
        name,
        per_slice_thresholds=[
            tfma.PerSliceMetricThreshold(
                slicing_specs=[tfma.SlicingSpec()],
                threshold=tfma.MetricThreshold(value_threshold=exact),
            )
        ],
    )


def make_eval_config(
    thresholds: EvalThresholds,
    slice_features: tuple[str, ...] = F.SLICE_FEATURES,
    gated_slices: tuple[tuple[str, str], ...] = (),
    eval_examples: int | None = None,
) -> tfma.EvalConfig:
    """Labels and the rating weight come from the model's transform_features signature, so
    rating metrics count observed interactions only. ``eval_examples``: the eval split's
    size, which each binary head's example count must equal."""
    t = thresholds
    gates = {
        F.RATING: (False, t.max_rating_rmse, t.rmse_tolerance, t.slice_max_rating_rmse),
        F.CLICK: (True, t.min_auc, t.auc_tolerance, t.slice_min_auc),
        F.PURCHASE: (True, t.min_auc, t.auc_tolerance, t.slice_min_auc),
    }
    specs = []
    for head in F.HEADS:
        metrics = [_metric(name) for name in SUMMARY[head]]
        if head in COUNTED:
            metrics.append(_counted(COUNTED[head], eval_examples))
        metrics.append(_gated(GATED[head], *gates[head], gated_slices))
        specs.append(tfma.MetricsSpec(output_names=[head], metrics=metrics))
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=F.SERVING_DEFAULT,
                preprocessing_function_names=[F.TRANSFORM_FEATURES],
                label_keys=dict(F.LABEL_XF),
                example_weight_keys={F.RATING: F.RATING_WEIGHT_XF},
            )
        ],
        metrics_specs=specs,
        slicing_specs=[tfma.SlicingSpec()]
        + [tfma.SlicingSpec(feature_keys=[key]) for key in slice_features],
        options=tfma.Options(include_default_metrics={"value": False}),
    )


def eval_config(settings: EvaluationSettings, summary: DataSummary | None) -> tfma.EvalConfig:
    """The EvalConfig for ``settings`` on the data ``summary`` describes."""
    thresholds, gated = settings.complete(summary)
    eval_examples = summary.splits[F.EVAL]["examples"] if summary else None
    return make_eval_config(thresholds, settings.slice_features, gated, eval_examples)


class Executor(evaluator_executor.Executor):
    """TFX's Evaluator, its EvalConfig completed from the examples' recorded summary."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        settings = EvaluationSettings.from_json(exec_properties.pop(SETTINGS_KEY))
        examples = artifact_utils.get_single_instance(
            input_dict[standard_component_specs.EXAMPLES_KEY]
        )
        summary = DataSummary.read(examples.uri)
        if summary is None:
            log.info("No data summary beside %s: default thresholds, no slice gated", examples.uri)
        config = eval_config(settings, summary)
        exec_properties[standard_component_specs.EVAL_CONFIG_KEY] = proto_utils.proto_to_json(
            config
        )
        super().Do(input_dict, output_dict, exec_properties)


class MtrecEvaluatorSpec(standard_component_specs.EvaluatorSpec):
    """TFX's Evaluator parameters plus the evaluation settings (JSON)."""

    PARAMETERS = {
        **standard_component_specs.EvaluatorSpec.PARAMETERS,
        SETTINGS_KEY: ExecutionParameter(type=str),
    }


class MtrecEvaluator(Evaluator):
    """The Evaluator on the eval split, gating as ``settings`` and the data say."""

    SPEC_CLASS = MtrecEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        baseline_model: types.BaseChannel,
        settings: EvaluationSettings,
    ) -> None:
        spec = MtrecEvaluatorSpec(
            examples=examples,
            model=model,
            baseline_model=baseline_model,
            example_splits=json_utils.dumps([F.EVAL]),
            fairness_indicator_thresholds=json_utils.dumps(None),
            # A placeholder the executor replaces; it shows the defaults to a reader.
            eval_config=eval_config(settings, None),
            evaluation_settings=settings.to_json(),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        )
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
