"""create_pipeline: the one pure function that wires every TFX component."""

from __future__ import annotations

from typing import Any

from tfx import v1 as tfx

from mtrec import names as F
from mtrec.components.anomalies_gate import AnomaliesGate
from mtrec.components.baseline_resolver import BaselineModelStrategy
from mtrec.components.curated_schema import CuratedSchemaGen, curated_schema_digest
from mtrec.components.evaluation import MtrecEvaluator
from mtrec.components.example_gen import MtrecExampleGen
from mtrec.components.serving_validator import ServingValidator
from mtrec.pipeline.config import (
    CURATED,
    INFERRED,
    TRAINER_MODULE,
    TRANSFORM_MODULE,
    PipelineConfig,
)

TRANSFORM_FN = f"{TRANSFORM_MODULE}.preprocessing_fn"
RUN_FN = f"{TRAINER_MODULE}.run_fn"


def create_pipeline(
    config: PipelineConfig, metadata_connection_config: Any | None = None
) -> tfx.dsl.Pipeline:
    """MtrecExampleGen (raw logs to split examples, in Beam) → StatisticsGen → SchemaGen
    → ExampleValidator → AnomaliesGate → Transform → Trainer → (baseline: the blessed model
    the candidate would replace) Evaluator → ServingValidator (the candidate served over
    gRPC) → Pusher."""
    example_gen = MtrecExampleGen(config.source, config.data, config.data_fingerprint)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    if config.schema == CURATED:
        schema_gen = CuratedSchemaGen(schema_digest=curated_schema_digest())
    elif config.schema != INFERRED:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema)
    else:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=TRANSFORM_FN,
        custom_config={"code_fingerprint": config.transform_fingerprint},
        disable_statistics=True,  # StatisticsGen already profiles the raw data.
        splits_config=tfx.proto.SplitsConfig(analyze=[F.TRAIN], transform=list(F.SPLITS)),
    )
    transform.add_upstream_node(anomalies_gate)

    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[F.TRAIN]),
        eval_args=tfx.proto.EvalArgs(splits=[F.VALID]),
        custom_config={
            "model": config.model.to_dict(),
            "code_fingerprint": config.trainer_fingerprint,
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

    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=serving_validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_model_dir)
        ),
    )

    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            anomalies_gate,
            transform,
            trainer,
            model_resolver,
            evaluator,
            serving_validator,
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )


def _baseline_resolver(strategy: str, candidate: tfx.dsl.Channel) -> tfx.dsl.Resolver:
    """The Resolver that picks the Evaluator's baseline (see PipelineConfig)."""
    models = tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model)
    blessings = tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing)
    if strategy == "latest_blessed":
        resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=models,
            model_blessing=blessings,
        )
    else:
        resolver = tfx.dsl.Resolver(
            strategy_class=BaselineModelStrategy,
            candidate=candidate,
            model=models,
            model_blessing=blessings,
        )
    return resolver.with_id("baseline_model_resolver")
