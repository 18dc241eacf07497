"""Typed pipeline configuration: what create_pipeline needs, grouped instead of flags."""

from __future__ import annotations

import dataclasses

from mtrec.components.thresholds import EvaluationSettings
from mtrec.data.config import DataConfig
from mtrec.data.source import DataSource
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
# The data component's Beam job, hashed the same way.
DATA_MODULE = "mtrec.data.build"


DEFAULT_WINDOW = 4
DEFAULT_KEEP_VERSIONS = 5


@dataclasses.dataclass(frozen=True)
class ContinuousSettings:
    """Continuous training on logs laid out by span: each run ingests one span, trains on the
    ``window`` spans before it (already in MLMD) and evaluates on it, forward-chained."""

    span: int | None = None  # None: the newest span the driver finds.
    window: int = DEFAULT_WINDOW
    warm_start: bool = True  # Start from the latest blessed model's weights, by token.
    # Only ingest and validate the span (the local runner's backfill of a window's spans).
    ingest_only: bool = False

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1 span")
        if self.span is not None and self.span < 0:
            raise ValueError("span must be a non-negative integer")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that defines one pipeline; runners only resolve paths into it."""

    pipeline_root: str
    source: DataSource
    serving_model_dir: str
    pipeline_name: str = DEFAULT_PIPELINE_NAME
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    evaluation: EvaluationSettings = dataclasses.field(default_factory=EvaluationSettings)
    # CURATED (the schema shipped in the package), INFERRED (SchemaGen) or a schema.pbtxt
    # path to import, visible where the pipeline runs (gs://... on Kubeflow).
    schema: str = CURATED
    beam_pipeline_args: tuple[str, ...] = ()
    enable_cache: bool = True
    baseline_strategy: str = "replaced_model"
    # Set for logs laid out by span (continuous training); None trains once on the source.
    continuous: ContinuousSettings | None = None
    # Request logs of the served model (PredictionLog TFRecords) to profile against the
    # training data in this run (RequestSkewGen), and their files' fingerprint.
    request_logs: str | None = None
    request_logs_fingerprint: str = ""
    # Pushed versions kept in serving_model_dir; older ones go once a new one is in place.
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    # Hash of every package source file each module can import: a change to one re-runs
    # that component (and what reads its outputs); anything else (docs, the CLI) leaves the
    # cache alone.
    data_fingerprint: str = dataclasses.field(
        default_factory=lambda: code_fingerprint((DATA_MODULE,))
    )
    transform_fingerprint: str = dataclasses.field(
        default_factory=lambda: code_fingerprint((TRANSFORM_MODULE,))
    )
    trainer_fingerprint: str = dataclasses.field(
        default_factory=lambda: code_fingerprint((TRAINER_MODULE,))
    )

    def __post_init__(self) -> None:
        if self.baseline_strategy not in BASELINE_STRATEGIES:
            raise ValueError(f"baseline_strategy must be one of {BASELINE_STRATEGIES}")
        if self.keep_versions < 1:
            raise ValueError("keep_versions must be at least 1")
