"""Typed pipeline configuration: what create_pipeline needs, grouped instead of flags."""

from __future__ import annotations

import dataclasses

from mtrec import names as F
from mtrec.data import dataset
from mtrec.models.hparams import ModelConfig
from mtrec.pipeline.fingerprint import code_fingerprint

# How the Evaluator's baseline is resolved: "replaced_model" (the newest blessed model older
# than the candidate, so cached re-runs stay cached) or "latest_blessed" (TFX's built-in
# strategy, the only one Kubeflow V2 can compile).
BASELINE_STRATEGIES = ("replaced_model", "latest_blessed")
CURATED_SCHEMA = dataset.CURATED_SCHEMA
DEFAULT_PIPELINE_NAME = "mtrec"
# The TFX module files, referenced by module path so any installed copy (the Kubeflow image's
# too) resolves them.
TRANSFORM_MODULE = "mtrec.models.modules.transform_module"
TRAINER_MODULE = "mtrec.models.modules.trainer_module"


@dataclasses.dataclass(frozen=True)
class EvalThresholds:
    """Blessing rules, per head.

    Overall: RMSE below ``max_rating_rmse`` (the runner sets it 5% under the RMSE of
    predicting the training mean), AUC above ``min_auc``, and no head worse than the latest
    blessed model by more than its tolerance. Every slice: no head broken, i.e. RMSE below
    ``slice_max_rating_rmse`` and AUC above ``slice_min_auc`` (looser, since slices are small).
    """

    max_rating_rmse: float = 1.0
    min_auc: float = 0.6
    rmse_tolerance: float = 0.02
    auc_tolerance: float = 0.01
    slice_max_rating_rmse: float = 1.25
    slice_min_auc: float = 0.55
    # Only slices with at least this many eval examples are gated (all are reported):
    # smaller ones are noise. The runner turns this into PipelineConfig.gated_slices.
    min_slice_size: int = 1000

    @staticmethod
    def from_baseline(
        baseline_rmse: float | None,
        margin: float = 0.95,
        slice_margin: float = 1.25,
        **overrides: float,
    ) -> EvalThresholds:
        """Bounds relative to the eval RMSE of predicting the training mean rating."""
        if baseline_rmse is None:
            return EvalThresholds(**overrides)
        return EvalThresholds(
            **{
                "max_rating_rmse": round(baseline_rmse * margin, 4),
                "slice_max_rating_rmse": round(baseline_rmse * slice_margin, 4),
                **overrides,
            }
        )


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that defines one pipeline; runners only resolve paths into it."""

    pipeline_root: str
    examples_dir: str
    serving_model_dir: str
    pipeline_name: str = DEFAULT_PIPELINE_NAME
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    thresholds: EvalThresholds = dataclasses.field(default_factory=EvalThresholds)
    schema_path: str | None = CURATED_SCHEMA
    slice_features: tuple[str, ...] = F.SLICE_FEATURES
    # (feature, value) slices whose per-slice floors are enforced, e.g. ("gender", "F").
    gated_slices: tuple[tuple[str, str], ...] = ()
    beam_pipeline_args: tuple[str, ...] = ()
    enable_cache: bool = True
    baseline_strategy: str = "replaced_model"
    # Hash of every package source file the Transform and Trainer code can import: a change
    # to any of them re-runs both; anything else (docs, the CLI) leaves the cache alone.
    code_fingerprint: str = dataclasses.field(
        default_factory=lambda: code_fingerprint((TRANSFORM_MODULE, TRAINER_MODULE))
    )

    def __post_init__(self) -> None:
        if self.baseline_strategy not in BASELINE_STRATEGIES:
            raise ValueError(f"baseline_strategy must be one of {BASELINE_STRATEGIES}")
