"""Blessing rules and the evaluation options a user gives, light to import (the CLI's
parsers show their help); components/evaluation.py turns them into TFMA's EvalConfig."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from mtrec import names as F

if TYPE_CHECKING:
    from mtrec.data.config import DataSummary


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
class EvaluationSettings:
    """What the user chose: threshold overrides (the rest follow the data) and the slices."""

    overrides: tuple[tuple[str, float], ...] = ()
    slice_features: tuple[str, ...] = F.SLICE_FEATURES

    def __post_init__(self) -> None:
        EvalThresholds(**dict(self.overrides))  # Validates the options given.

    def complete(self, summary: DataSummary | None) -> tuple[EvalThresholds, tuple]:
        """The thresholds (relative to the training-mean RMSE when known) and the slices
        with at least ``min_slice_size`` eval examples (none when the data is unknown)."""
        baseline = summary.baseline_rating_rmse if summary else None
        thresholds = EvalThresholds.from_baseline(baseline, **dict(self.overrides))
        gated = summary.slices_at_least(thresholds.min_slice_size) if summary else ()
        return thresholds, tuple(s for s in gated if s[0] in self.slice_features)

    def to_json(self) -> str:
        return json.dumps(
            {"overrides": dict(self.overrides), "slice_features": list(self.slice_features)},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> EvaluationSettings:
        values = json.loads(text)
        return cls(
            overrides=tuple(sorted(values["overrides"].items())),
            slice_features=tuple(values["slice_features"]),
        )
