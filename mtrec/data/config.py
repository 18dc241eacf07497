"""The data settings and what the data component reports, light to import (the CLI's parsers
and the pipeline's config read them without Beam or TensorFlow)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mtrec import names as F

# The schema of the examples the data component writes, shipped in the package.
CURATED_SCHEMA = str(Path(__file__).parent / "schema" / "schema.pbtxt")
SUMMARY_FILE = "mtrec_data_summary.json"


# How valid is carved from explicit train ratings (u1-style files): each user's most recent
# ratings, or a seeded random share of them held out as the eval file is (for an eval file
# drawn at random in time, as MovieLens's u1-u5 are).
VALID_SPLITS = ("latest", "random")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How interactions become labelled, split examples."""

    negatives_per_positive: int = 4
    purchase_min_rating: float = 4.0
    eval_fraction: float = 0.1
    valid_fraction: float = 0.1
    cold_user_max_interactions: int = F.COLD_USER_MAX_INTERACTIONS
    seed: int = 42
    valid_split: str = "latest"

    def __post_init__(self) -> None:
        if self.negatives_per_positive < 0:
            raise ValueError("negatives_per_positive must be >= 0")
        if self.valid_split not in VALID_SPLITS:
            raise ValueError(f"valid_split must be one of {VALID_SPLITS}, got {self.valid_split!r}")
        for name in ("eval_fraction", "valid_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class DataSummary:
    """What the data component wrote: counts per split, eval slice sizes, the rating baseline.

    The Evaluator reads it (which slices are large enough to gate, the RMSE threshold), and
    the component records it on its Examples artifact in MLMD.
    """

    splits: dict[str, dict[str, int]]
    eval_slice_counts: dict[str, dict[str, int]]
    train_rating_mean: float | None = None
    eval_global_mean_rmse: float | None = None
    fingerprint: str = ""

    def slices_at_least(self, min_examples: int) -> tuple[tuple[str, str], ...]:
        """(feature, value) slices with at least ``min_examples`` eval examples."""
        return tuple(
            (key, value)
            for key, by_value in sorted(self.eval_slice_counts.items())
            for value, count in sorted(by_value.items())
            if count >= min_examples
        )

    @property
    def baseline_rating_rmse(self) -> float | None:
        """Eval RMSE of predicting the training mean rating (None without ratings)."""
        return self.eval_global_mean_rmse

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, root: str) -> DataSummary | None:
        """The summary written beside the splits in ``root`` (local or gs://), if any."""
        import tensorflow as tf

        path = os.path.join(root, SUMMARY_FILE)
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as handle:
            return cls(**json.load(handle))
