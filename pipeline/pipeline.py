"""create_pipeline: the one pure function that wires every TFX component."""

from __future__ import annotations

from typing import Any

from tfx import v1 as tfx

from mtrec import names as F
from mtrec.components import span_window
from mtrec.components.anomalies_gate import AnomaliesGate
from mtrec.components.baseline_resolver import BaselineModelStrategy
from mtrec.components.curated_schema import CuratedSchemaGen, curated_schema_digest
from mtrec.components.evaluation import MtrecEvaluator
from mtrec.components.example_gen import MtrecExampleGen
from mtrec.components.pusher import MtrecPusher
from mtrec.components.request_skew import RequestSkewGen
from mtrec.components.serving_validator import ServingValidator
from mtrec.components.span_schema import LatestSchemaStrategy, SpanSchemaGen
from mtrec.pipeline.config import (
    CURATED,
    INFERRED,
    TRAINER_MODULE,
    TRANSFORM_MODULE,
    PipelineConfig,
)

TRANSFORM_FN = f"{TRANSFORM_MODULE}.preprocessing_fn"
RUN_FN = f"{TRAINER_MODULE}.run_fn"


def statistics_options() -> Any:
    """TFDV's options for StatisticsGen: top values and unique counts from bounded sketches
    (Misra-Gries, KMV), so their memory does not grow with the rows. Exact where a feature
    has few values; `history`'s (one string per row) are estimates."""
    import tensorflow_data_validation as tfdv

    return tfdv.StatsOptions(use_sketch_based_topk_uniques=True)


def create_pipeline(
    config: PipelineConfig, metadata_connection_config: Any | None = None, *, kubeflow: bool = False
) -> tfx.dsl.Pipeline:
    """MtrecExampleGen (raw logs to split examples, in Beam) → StatisticsGen → SchemaGen
    → ExampleValidator → AnomaliesGate → Transform → Trainer → (baseline: the blessed model
    the candidate would replace) Evaluator → ServingValidator (the candidate served over
    gRPC) → Pusher.

    ``kubeflow``: for KubeflowV2DagRunner, which compiles only TFX's built-in resolver
    strategies. In continuous training a run then trains on its own span (no span window:
    nothing built in resolves one), warm-starts from the latest blessed model and keeps the
    latest schema (see README: Kubeflow)."""
    continuous = config.continuous
    example_gen = MtrecExampleGen(
        config.source,
        config.data,
        config.data_fingerprint,
        span=continuous.span if continuous else None,
    )
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], stats_options=statistics_options()
    )
    schema_nodes: list[Any] = []
    if config.schema == CURATED:
        schema_gen = CuratedSchemaGen(schema_digest=curated_schema_digest())
    elif config.schema != INFERRED:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema)
    elif continuous:  # Inferred from the first span, then kept (see SpanSchemaGen).
        schema_gen = SpanSchemaGen(
            statistics=statistics_gen.outputs["statistics"],
            latest_strategy=(
                tfx.dsl.experimental.LatestArtifactStrategy if kubeflow else LatestSchemaStrategy
            ),
        )
        schema_nodes.insert(0, schema_gen.previous_schema_resolver)
    else:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    schema_nodes.append(schema_gen)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    if continuous and continuous.ingest_only:  # Backfilling a span of the window.
        return _pipeline(
            config,
            metadata_connection_config,
            [example_gen, statistics_gen, *schema_nodes, example_validator],
        )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    extra_nodes: list[Any] = []
    if config.request_logs:  # What the served model was asked, against this training data.
        extra_nodes.append(
            RequestSkewGen(
                statistics=statistics_gen.outputs["statistics"],
                schema=schema_gen.outputs["schema"],
                requests=config.request_logs,
                requests_fingerprint=config.request_logs_fingerprint,
            ).with_id(F.REQUEST_SKEW_GEN)
        )

    # Trained on: this run's examples, or in continuous training the spans before this one.
    # Their eval split trains too there, since the newest span is the one evaluated on.
    training_examples = example_gen.outputs["examples"]
    train_splits = [F.TRAIN]
    if continuous and not kubeflow:
        window = _span_window(continuous.window, example_gen)
        training_examples = window.outputs[span_window.EXAMPLES_KEY]
        train_splits = [F.TRAIN, F.EVAL]
        extra_nodes.append(window)
    transform = tfx.components.Transform(
        examples=training_examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=TRANSFORM_FN,
        custom_config={"code_fingerprint": config.transform_fingerprint},
        disable_statistics=True,  # StatisticsGen already profiles the raw data.
        # The Trainer applies the graph to the raw examples itself, once per run (README,
        # "Trainer input"): writing transformed examples took Transform about 20 s more.
        materialize=False,
        splits_config=tfx.proto.SplitsConfig(analyze=train_splits),
    )
    transform.add_upstream_node(anomalies_gate)

    base_model = None
    if continuous and continuous.warm_start:
        # The blessed model older than this run's examples: the one serving when the span
        # arrived, so a cached re-run resolves the same one (Kubeflow: the newest blessed).
        warm_resolver = (
            _latest_blessed("warm_start_resolver")
            if kubeflow
            else _blessed_before(example_gen.outputs["examples"], "warm_start_resolver")
        )
        base_model = warm_resolver.outputs["model"]
        extra_nodes.append(warm_resolver)
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=training_examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        base_model=base_model,
        train_args=tfx.proto.TrainArgs(splits=train_splits),
        eval_args=tfx.proto.EvalArgs(splits=[F.VALID]),
        custom_config={
            "model": config.model.to_dict(),
            "code_fingerprint": config.trainer_fingerprint,
            "warm_start": bool(continuous and continuous.warm_start),
        },
    )

    model_resolver = _baseline_resolver(config.baseline_strategy, trainer.outputs["model"])

    evaluator = MtrecEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        settings=config.evaluation,
    ).with_id("Evaluator")

    # InfraValidator's role: serve the candidate over gRPC before anything is pushed.
    serving_validator = ServingValidator(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        model_blessing=evaluator.outputs["blessing"],
    )

    pusher = MtrecPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=serving_validator.outputs["blessing"],
        base_directory=config.serving_model_dir,
        keep_versions=config.keep_versions,
    ).with_id("Pusher")

    return _pipeline(
        config,
        metadata_connection_config,
        [
            example_gen,
            statistics_gen,
            *schema_nodes,
            example_validator,
            anomalies_gate,
            *extra_nodes,
            transform,
            trainer,
            model_resolver,
            evaluator,
            serving_validator,
            pusher,
        ],
    )


def _pipeline(
    config: PipelineConfig, metadata_connection_config: Any | None, components: list[Any]
) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )


def _span_window(window: int, example_gen: MtrecExampleGen) -> tfx.dsl.Resolver:
    """The validated spans before this run's, already in MLMD (see SpanWindowStrategy)."""
    return tfx.dsl.Resolver(
        strategy_class=span_window.SpanWindowStrategy,
        config={"window": window},
        **{
            span_window.CURRENT_KEY: example_gen.outputs["examples"],
            # Every artifact of the type: the strategy keeps the data component's.
            span_window.EXAMPLES_KEY: tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples),
            span_window.ANOMALIES_KEY: tfx.dsl.Channel(
                type=tfx.types.standard_artifacts.ExampleAnomalies
            ),
        },
    ).with_id("span_window_resolver")


def _blessed_before(artifacts: tfx.dsl.Channel, node_id: str) -> tfx.dsl.Resolver:
    """The newest blessed model created before every artifact in ``artifacts``."""
    return tfx.dsl.Resolver(
        strategy_class=BaselineModelStrategy,
        candidate=artifacts,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(node_id)


def _baseline_resolver(strategy: str, candidate: tfx.dsl.Channel) -> tfx.dsl.Resolver:
    """The Resolver that picks the Evaluator's baseline (see PipelineConfig)."""
    if strategy != "latest_blessed":
        return _blessed_before(candidate, "baseline_model_resolver")
    return _latest_blessed("baseline_model_resolver")


def _latest_blessed(node_id: str) -> tfx.dsl.Resolver:
    """TFX's built-in newest blessed model (Kubeflow V2 compiles it, not custom strategies)."""
    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(node_id)
