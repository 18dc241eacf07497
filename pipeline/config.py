"""Typed pipeline configuration: what create_pipeline needs, grouped instead of flags."""

from __future__ import annotations

import dataclasses

from mtrec import names as F
from mtrec.models.hparams import ModelConfig
from mtrec.pipeline.fingerprint import code_fingerprint

# How the Evaluator's baseline is resolved: "replaced_model" (the newest blessed model older
# than the candidate, so cached re-runs stay cached) or "latest_blessed" (TFX's built-in
# strategy, the only one Kubeflow V2 can compile).
BASELINE_STRATEGIES = ("replaced_model", "latest_blessed")
DEFAULT_PIPELINE_NAME = "mtrec"
CURATED = "curated"
INFERRED = "infer"
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

    def __post_init__(self) -> None:
        for name in ("min_auc", "slice_min_auc"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("max_rating_rmse", "slice_max_rating_rmse"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("rmse_tolerance", "auc_tolerance", "min_slice_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

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


# What each threshold means, as `mtrec run` and `mtrec compile-kubeflow` show it.
THRESHOLD_HELP = {
    "max_rating_rmse": "overall rating RMSE must be below this (default: 5%% under the eval "
    "RMSE of predicting the training mean when the examples are known, else 1.0)",
    "min_auc": "overall click and purchase AUC must be above this (default 0.6)",
    "rmse_tolerance": "rating RMSE may be at most this much above the baseline model's "
    "(default 0.02)",
    "auc_tolerance": "AUC may be at most this much below the baseline model's (default 0.01)",
    "slice_max_rating_rmse": "every gated slice's RMSE must be below this (default: 25%% over "
    "the training-mean RMSE when the examples are known, else 1.25)",
    "slice_min_auc": "every gated slice's AUC must be above this (default 0.55)",
    "min_slice_size": "smallest slice (eval examples) whose metrics are gated; every slice is "
    "reported (default 1000)",
}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that defines one pipeline; runners only resolve paths into it."""

    pipeline_root: str
    examples_dir: str
    serving_model_dir: str
    pipeline_name: str = DEFAULT_PIPELINE_NAME
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    thresholds: EvalThresholds = dataclasses.field(default_factory=EvalThresholds)
    # CURATED (the schema shipped in the package), INFERRED (SchemaGen) or a schema.pbtxt
    # path to import, visible where the pipeline runs (gs://... on Kubeflow).
    schema: str = CURATED
    slice_features: tuple[str, ...] = F.SLICE_FEATURES
    # (feature, value) slices whose per-slice floors are enforced, e.g. ("gender", "F").
    gated_slices: tuple[tuple[str, str], ...] = ()
    beam_pipeline_args: tuple[str, ...] = ()
    enable_cache: bool = True
    baseline_strategy: str = "replaced_model"
    # The examples' data fingerprint (their DatasetInfo manifest's): the Trainer records it in
    # its custom_config, so a comparison with a baseline trained on other data can be seen.
    data_fingerprint: str = ""
    # Hash of every package source file each module file can import: a change to one re-runs
    # that component (and what reads its outputs); anything else (docs, the CLI) leaves the
    # cache alone.
    transform_fingerprint: str = dataclasses.field(
        default_factory=lambda: code_fingerprint((TRANSFORM_MODULE,))
    )
    trainer_fingerprint: str = dataclasses.field(
        default_factory=lambda: code_fingerprint((TRAINER_MODULE,))
    )

    def __post_init__(self) -> None:
        if self.baseline_strategy not in BASELINE_STRATEGIES:
            raise ValueError(f"baseline_strategy must be one of {BASELINE_STRATEGIES}")
