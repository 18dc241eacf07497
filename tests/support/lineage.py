"""MLMD lineage reads for the end-to-end tests: a node's executions and their artifacts."""

from __future__ import annotations

import ml_metadata as mlmd

from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME


def executions(store: mlmd.MetadataStore, node: str) -> list:
    """The executions of one node, oldest first."""
    context = store.get_context_by_type_and_name("node", f"{DEFAULT_PIPELINE_NAME}.{node}")
    return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)


def inputs(store: mlmd.MetadataStore, execution, key: str) -> list:
    """The artifacts an execution read under ``key``."""
    return _artifacts(store, execution, key, mlmd.proto.Event.INPUT)


def outputs(store: mlmd.MetadataStore, execution, key: str) -> list:
    """The artifacts an execution wrote under ``key``."""
    return _artifacts(store, execution, key, mlmd.proto.Event.OUTPUT)


def _artifacts(store: mlmd.MetadataStore, execution, key: str, kind: int) -> list:
    ids = [
        event.artifact_id
        for event in store.get_events_by_execution_ids([execution.id])
        if event.type == kind and event.path.steps[0].key == key
    ]
    return store.get_artifacts_by_id(ids)
