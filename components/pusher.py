"""MtrecPusher: TFX's Pusher, pushing whole versions only and keeping the last N.

TFX's filesystem push copies the model straight into ``<base>/<unix time>``, where a model
server polling the folder can see it half-written, and never removes old versions. This one
copies into a hidden staging folder first and renames it into place (TF Serving ignores
names that are not numbers), makes each version number larger than every one before, and
only then removes the versions beyond ``keep_versions``, oldest first.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from tfx import types
from tfx import v1 as tfx
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, json_utils, proto_utils

log = logging.getLogger(__name__)

KEEP_VERSIONS_KEY = "keep_versions"
STAGING_PREFIX = ".staging-"


def version_numbers(base_directory: str) -> list[int]:
    """The numeric version folders under ``base_directory``, ascending."""
    if not fileio.isdir(base_directory):
        return []
    names = (name.rstrip("/") for name in fileio.listdir(base_directory))
    return sorted(int(name) for name in names if name.isdigit())


def next_version(existing: list[int], now: int | None = None) -> int:
    """The Unix time, or one more than the newest version when that is not larger: versions
    only grow, so a server always loads the newest push."""
    now = int(time.time()) if now is None else now
    return max(now, existing[-1] + 1) if existing else now


def prune(base_directory: str, keep: int) -> list[int]:
    """Remove all but the newest ``keep`` versions; returns the removed ones."""
    removed = version_numbers(base_directory)[:-keep]
    for version in removed:
        fileio.rmtree(os.path.join(base_directory, str(version)))
    return removed


def push_version(model_path: str, base_directory: str) -> tuple[int, str]:
    """Copy a SavedModel into a new version folder, appearing whole: (version, path)."""
    fileio.makedirs(base_directory)
    version = next_version(version_numbers(base_directory))
    staging = os.path.join(base_directory, f"{STAGING_PREFIX}{version}")
    if fileio.exists(staging):
        fileio.rmtree(staging)
    io_utils.copy_dir(model_path, staging)
    final = os.path.join(base_directory, str(version))
    fileio.rename(staging, final)
    return version, final


class Executor(pusher_executor.Executor):
    """Pushes a blessed model as a new version, whole, then keeps the newest N."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        base_directory = destination.filesystem.base_directory
        model_path = self.GetModelPath(input_dict)
        version, serving_path = push_version(model_path, base_directory)
        log.info("Model pushed as version %d to %s", version, serving_path)
        custom = json_utils.loads(
            exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null"
        )
        keep = (custom or {}).get(KEEP_VERSIONS_KEY)
        removed = prune(base_directory, int(keep)) if keep else []
        if removed:
            log.info("Removed old pushed versions: %s", ", ".join(map(str, removed)))
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=str(version))


class MtrecPusher(tfx.components.Pusher):
    """Pusher to a folder that a model server polls, keeping the newest ``keep_versions``."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        infra_blessing: types.BaseChannel,
        base_directory: str,
        keep_versions: int,
    ) -> None:
        super().__init__(
            model=model,
            model_blessing=model_blessing,
            infra_blessing=infra_blessing,
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=base_directory)
            ),
            custom_config={KEEP_VERSIONS_KEY: keep_versions},
        )
