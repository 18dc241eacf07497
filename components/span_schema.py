"""SpanSchemaGen: in continuous training, the schema inferred from the first span, then kept.

SchemaGen infers a schema from the statistics it is given. Run on each new span, it would
learn whatever that span holds, and ExampleValidator would never find anything wrong with
it. This SchemaGen infers only when no earlier schema exists (the first span ingested);
afterwards it passes the pipeline's latest schema on unchanged, so every new span is
validated against what earlier spans looked like.
"""

from __future__ import annotations

import os
from typing import Any

import ml_metadata as mlmd
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import types
from tfx import v1 as tfx
from tfx.components.schema_gen import executor as schema_gen_executor
from tfx.components.schema_gen.component import SchemaGen
from tfx.dsl.components.base import base_component, executor_spec
from tfx.dsl.components.common import resolver
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import io_utils

from mtrec import names as F
from mtrec.data.config import CURATED_SCHEMA

PREVIOUS_SCHEMA_KEY = "previous_schema"
# Checked per split: one new user's rows can be a sixth of a weekly span's small valid split
# (MovieLens span 5: a first "salesman", 16%), and a 10% allowance stopped the run. A column
# mostly outside its domain (shifted, or another column's values) is still an anomaly.
MIN_DOMAIN_MASS = 0.5
# Inferred string domains kept: a category set (gender, occupation); larger ones (zip
# prefixes, titles) grow with every span's new users and items.
MAX_KEPT_DOMAIN = 32
# Contract columns whose range holds for any data: an age or a year (0: unknown).
PLAUSIBLE_RANGES = (F.AGE, F.YEAR)


class Executor(schema_gen_executor.Executor):
    """Copies the previous schema when there is one, else infers as SchemaGen does."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        previous = input_dict.get(PREVIOUS_SCHEMA_KEY) or []
        target = os.path.join(
            artifact_utils.get_single_uri(output_dict[standard_component_specs.SCHEMA_KEY]),
            schema_gen_executor.DEFAULT_FILE_NAME,
        )
        if previous:
            source = io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri(previous))
            io_utils.copy_file(source, target, overwrite=True)
            return
        super().Do(input_dict, output_dict, exec_properties)
        schema = io_utils.parse_pbtxt_file(target, schema_pb2.Schema())
        curated = io_utils.parse_pbtxt_file(CURATED_SCHEMA, schema_pb2.Schema())
        schema = without_large_domains(schema, MAX_KEPT_DOMAIN)
        schema = with_plausible_ranges(with_domain_mass(schema, MIN_DOMAIN_MASS), curated)
        io_utils.write_pbtxt_file(target, schema)


def with_plausible_ranges(
    schema: schema_pb2.Schema, curated: schema_pb2.Schema
) -> schema_pb2.Schema:
    """Give ``PLAUSIBLE_RANGES`` features the curated schema's integer range: inference sets
    no numeric bounds, so an age of 500 would otherwise pass."""
    ranges = {f.name: f.int_domain for f in curated.feature if f.HasField("int_domain")}
    for feature in schema.feature:
        if feature.name in PLAUSIBLE_RANGES and feature.type == schema_pb2.INT:
            feature.int_domain.CopyFrom(ranges[feature.name])
    return schema


def without_large_domains(schema: schema_pb2.Schema, max_values: int) -> schema_pb2.Schema:
    """Drop the inferred string domains of more than ``max_values`` values: a first span's
    zip prefixes are a sample of them, and each later span's new users bring others."""
    large = {d.name for d in schema.string_domain if len(d.value) > max_values}
    for feature in schema.feature:
        if feature.domain in large:
            feature.ClearField("domain")
        elif feature.HasField("string_domain") and len(feature.string_domain.value) > max_values:
            feature.ClearField("string_domain")
    kept = [d for d in schema.string_domain if d.name not in large]
    del schema.string_domain[:]
    schema.string_domain.extend(kept)
    return schema


def with_domain_mass(schema: schema_pb2.Schema, mass: float) -> schema_pb2.Schema:
    """Let a share (1 - ``mass``) of a later span's string values fall outside the domains
    the first span showed: new occupations are growth, not an anomaly; a feature mostly
    outside its domain still is."""
    for feature in schema.feature:
        if feature.HasField("domain") or feature.HasField("string_domain"):
            feature.distribution_constraints.min_domain_mass = mass
    return schema


class LatestSchemaStrategy(resolver.ResolverStrategy):
    """The newest ``schema``, or none before the first (TFX's LatestArtifactStrategy fails
    its node on an empty channel)."""

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> dict[str, list[types.Artifact]] | None:
        del store  # Everything needed is in the channel.
        return {
            key: sorted(artifacts, key=lambda a: a.id)[-1:] for key, artifacts in input_dict.items()
        }


class SpanSchemaGenSpec(standard_component_specs.SchemaGenSpec):
    """SchemaGen's spec plus the optional schema of an earlier run."""

    INPUTS = {
        **standard_component_specs.SchemaGenSpec.INPUTS,
        PREVIOUS_SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema, optional=True),
    }


class SpanSchemaGen(SchemaGen):
    """SchemaGen that keeps the schema of the first span once there is one."""

    SPEC_CLASS = SpanSchemaGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        statistics: types.BaseChannel,
        latest_strategy: type[resolver.ResolverStrategy] = LatestSchemaStrategy,
    ) -> None:
        """``latest_strategy`` resolves the earlier schema (Kubeflow V2 compiles only TFX's
        built-in LatestArtifactStrategy)."""
        previous = tfx.dsl.Resolver(
            strategy_class=latest_strategy,
            schema=tfx.dsl.Channel(type=standard_artifacts.Schema),
        ).with_id("previous_schema_resolver")
        self.previous_schema_resolver = previous
        spec = SpanSchemaGenSpec(
            statistics=statistics,
            infer_feature_shape=True,
            previous_schema=previous.outputs["schema"],
            schema=types.Channel(type=standard_artifacts.Schema),
        )
        base_component.BaseComponent.__init__(self, spec=spec)
