"""Loads, warms up, swaps and unloads model versions, as TF Serving's manager does.

Each poll lists the numbered version folders under every model's base path and applies the
version policy to those that can be loaded. A new version is loaded and warmed up (from
``assets.extra/tf_serving_warmup_requests``) before it is swapped in, by replacing one
dictionary reference. A version that fails to load (an empty or half-copied folder too) is
reported in the status (END, with the error) and the log, and is retried as TF Serving
retries it (``max_load_retries`` more times, ``retry_interval`` seconds apart, on later
polls) and again whenever its files change. With the ``latest`` policy the newest
*loadable* versions are served, so a corrupt push leaves the previous version serving.
Version labels must point at available versions (FAILED_PRECONDITION otherwise), unless
``allow_unavailable_labels`` (TF Serving's --allow_version_labels_for_unavailable_models) lets
a new label, or one that keeps its version, point at a version still to load.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtrec import names as F
from mtrec.serving.config import ModelSpec
from mtrec.serving.errors import (
    ConfigError,
    ServingError,
    failed_precondition,
    invalid,
    load_errors,
    not_found,
)
from mtrec.serving.monitoring import ServingMetrics

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Servable:
    """One loaded model version and what is needed to call and describe it."""

    name: str
    version: int
    path: str
    model: Any
    signature_defs: dict[str, Any]  # name -> tensorflow.core.protobuf.meta_graph_pb2.SignatureDef
    functions: dict[str, Any]  # name -> what requests call (see direct_function)

    def signature(self, name: str) -> Any:
        """The function that runs signature ``name`` (``direct_function``)."""
        if name not in self.model.signatures:  # As TF Serving's Predict (predict_util.cc).
            raise failed_precondition(f'Serving signature key "{name}" not found.')
        return self.functions[name]


def direct_function(signature: Any) -> Any:
    """A restored signature as the server calls it: traced once more as a function that
    calls it (no per-call lookup of its ~80 captured variables: 0.15 ms of a 0.75 ms batch-1
    call), called with its inputs in flat order (``DirectSignature``)."""
    import tensorflow as tf

    args, kwargs = signature.structured_input_signature
    if args:  # Signatures take keyword inputs only; anything else is called as it is.
        return signature
    traced = tf.function(lambda **inputs: signature(**inputs)).get_concrete_function(**kwargs)
    return DirectSignature(traced)


class DirectSignature:
    """A concrete function of keyword tensor inputs, called with them in its flat order and
    its captured inputs read once: what ``ConcreteFunction.__call__`` does after binding the
    keywords to its structured signature, a binding that costs about 0.1 ms a call. The
    server checks names, dtypes and shapes first (``check_inputs``); any other set of
    names takes the function's own call, and its errors."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.structured_input_signature = function.structured_input_signature  # check_inputs
        self._order = tuple(function.function_type.parameters)  # Its flat input order.
        self._names = frozenset(self._order)
        self._captured = function.captured_inputs
        self._flat = getattr(function, "_call_flat", None)  # TensorFlow's, private.

    def __call__(self, **inputs: Any) -> Any:
        if self._flat is None or inputs.keys() != self._names:
            return self.function(**inputs)
        return self._flat([inputs[key] for key in self._order], self._captured)


def numbered_folders(base: Path) -> dict[int, Path]:
    """Every numbered folder (ASCII digits, as in TF Serving) under a push base path: what
    the server tries to load. As in TF Serving, an empty or half-copied one is listed too;
    its load fails, is reported and retried (TFX's Pusher copies ``saved_model.pb`` last)."""
    return {
        int(p.name): p
        for p in base.iterdir()
        if p.name.isascii() and p.name.isdigit() and p.is_dir()
    }


def version_folders(base: Path) -> dict[int, Path]:
    """The numbered folders that hold a SavedModel (for offline use: the newest complete
    push)."""
    return {v: p for v, p in numbered_folders(base).items() if (p / F.SAVED_MODEL_FILE).is_file()}


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """TF Serving's ModelVersionStatus: a state and, after a failure, its error."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING or END, as in get_model_status.proto.
    error: str = ""


SERVE_TAGS = frozenset({"serve"})


def load_servable(
    name: str, version: int, path: str, tags: frozenset[str] = SERVE_TAGS
) -> Servable:
    """Load the MetaGraph of a SavedModel tagged exactly ``tags`` (TF Serving's
    --saved_model_tags) and read its SignatureDefs (for metadata and method names)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    if not Path(path, F.SAVED_MODEL_FILE).is_file():
        raise OSError(f"SavedModel not found in export directory: {path}")
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(Path(path, F.SAVED_MODEL_FILE).read_bytes())
    graphs = [g for g in proto.meta_graphs if set(g.meta_info_def.tags) == tags]
    if not graphs:  # TensorFlow's loader's words (cc/saved_model/reader.cc).
        raise RuntimeError(
            "Could not find meta graph def matching supplied tags: { "
            + " ".join(sorted(tags))
            + " }. To inspect available tag-sets in the SavedModel, please use the "
            "SavedModel CLI: `saved_model_cli`"
        )
    model = tf.saved_model.load(path, tags=sorted(tags))
    defs = dict(graphs[0].signature_def)
    functions = {key: direct_function(fn) for key, fn in model.signatures.items()}
    return Servable(name, version, path, model, defs, functions)


def _fingerprint(path: Path) -> tuple[int, float]:
    """Changes whenever a version folder's files change (so a failed load is retried)."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), max((p.stat().st_mtime for p in files), default=0.0)


class ModelManager:
    """Serves the versions each ``ModelSpec`` asks for; safe to call from many threads."""

    def __init__(
        self,
        specs: list[ModelSpec],
        warmup: Callable[[Servable], int] | None = None,
        loader: Callable[[str, int, str], Servable] = load_servable,
        max_load_retries: int = 5,
        retry_interval: float = 60.0,
        metrics: ServingMetrics | None = None,
        allow_unavailable_labels: bool = False,
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.allow_unavailable_labels = allow_unavailable_labels
        self._warmup = warmup
        self._loader = loader
        self.max_load_retries = max_load_retries
        self.retry_interval = retry_interval
        self.metrics = metrics  # Load attempts and latency, per version folder.
        self._labels: dict[str, dict[str, int]] = {}
        self._serving: dict[str, dict[int, Servable]] = {name: {} for name in self.specs}
        self._status: dict[str, dict[int, VersionStatus]] = {name: {} for name in self.specs}
        # (model, version) -> (fingerprint, failed attempts, monotonic time of the next try).
        self._failed: dict[tuple[str, int], tuple[tuple[int, float], int, float]] = {}
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------- polling

    def poll(self) -> None:
        """One pass over every base path: load, warm up, swap in, unload."""
        with self._poll_lock:
            for spec in self.specs.values():
                self._poll_model(spec)

    def _poll_model(self, spec: ModelSpec) -> None:
        base = Path(spec.base_path)
        if not base.is_dir():
            log.error("model '%s': base path %s does not exist", spec.name, base)
            return
        on_disk = numbered_folders(base)
        current = self._serving[spec.name]
        loadable = [
            v for v, p in on_disk.items() if v in current or self._may_load(spec.name, v, p)
        ]
        serving: dict[int, Servable] = {}
        if spec.policy.kind == "latest":
            # The newest versions that load, up to N: a failed new version leaves the
            # previous one serving.
            for version in sorted(loadable, reverse=True):
                if len(serving) == spec.policy.num_versions:
                    break
                loaded = current.get(version) or self._load(spec.name, version, on_disk[version])
                if loaded is not None:
                    serving[version] = loaded
        else:
            for version in spec.policy.select(loadable):
                loaded = current.get(version) or self._load(spec.name, version, on_disk[version])
                if loaded is not None:
                    serving[version] = loaded
        if serving.keys() != current.keys():
            self._serving = {**self._serving, spec.name: dict(sorted(serving.items()))}
            for version in current.keys() - serving.keys():
                self._set_status(spec.name, VersionStatus(version, "END"))
                log.info("model '%s': version %d unloaded", spec.name, version)
            log.info("model '%s': serving versions %s", spec.name, sorted(serving))

    def _may_load(self, name: str, version: int, path: Path) -> bool:
        """Never tried, files changed since the last failure, or a retry is due."""
        failed = self._failed.get((name, version))
        if failed is None:
            return True
        fingerprint, attempts, next_try = failed
        if fingerprint != _fingerprint(path):
            self._failed.pop((name, version))  # New files: a fresh series of retries.
            return True
        return attempts <= self.max_load_retries and time.monotonic() >= next_try

    def _load(self, name: str, version: int, path: Path) -> Servable | None:
        self._set_status(name, VersionStatus(version, "LOADING"))
        try:
            servable = self._timed_load(name, version, str(path))
            replayed = self._warmup(servable) if self._warmup else 0
        except load_errors() as err:  # A corrupt or failing version: report it, serve the rest.
            # Anything else is a bug, not a bad version: it propagates to the poller, which
            # survives it (_poll_loop), or to ModelServer.start, which fails loudly.
            previous = self._failed.get((name, version))
            attempts = previous[1] + 1 if previous else 1
            self._failed[(name, version)] = (
                _fingerprint(path),
                attempts,
                time.monotonic() + self.retry_interval,
            )
            message = (
                f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
                if str(err).strip()
                else type(err).__name__
            )
            self._set_status(name, VersionStatus(version, "END", message))
            log.error(
                "model '%s': version %d at %s failed to load: %s", name, version, path, message
            )
            return None
        self._failed.pop((name, version), None)
        self._set_status(name, VersionStatus(version, "AVAILABLE"))
        log.info(
            "model '%s': version %d loaded from %s (%d warmup requests)",
            name,
            version,
            path,
            replayed,
        )
        return servable

    def _timed_load(self, name: str, version: int, path: str) -> Servable:
        """The loader, counted as TensorFlow's SavedModel loader counts its attempts:
        ``load_attempt_count{model_path, status="success"|"fail"}`` and the microseconds
        spent in ``load_latency{model_path}``."""
        if self.metrics is None:
            return self._loader(name, version, path)
        start = time.perf_counter_ns()
        status = "fail"
        try:
            servable = self._loader(name, version, path)
            status = "success"
        finally:  # Counted whatever the loader raised; the caller handles the error.
            self.metrics.load_attempt_count.increment(path, status)
            self.metrics.load_latency.increment(path, by=(time.perf_counter_ns() - start) // 1000)
        return servable

    def _set_status(self, name: str, status: VersionStatus) -> None:
        self._status = {
            **self._status,
            name: {**self._status.get(name, {}), status.version: status},
        }

    def reconfigure(self, specs: list[ModelSpec]) -> None:
        """Serve a new set of models (ModelService.HandleReloadConfigRequest), poll, then
        take the new version labels: FAILED_PRECONDITION (labels unchanged) if one points at
        a version that is not available, as TF Serving's ServerCore does."""
        with self._poll_lock:
            self.specs = {spec.name: spec for spec in specs}
            self._serving = {name: self._serving.get(name, {}) for name in self.specs}
            self._status = {name: self._status.get(name, {}) for name in self.specs}
        self.poll()
        self._update_labels()

    def _update_labels(self) -> None:
        labels: dict[str, dict[str, int]] = {}
        for spec in self.specs.values():
            current = self._labels.get(spec.name, {})
            for label, version in spec.labels:
                # As ServerCore::UpdateModelVersionLabelMap: with the flag, only a label that
                # already points at another version must point at an available one.
                waived = self.allow_unavailable_labels and current.get(label, version) == version
                if not waived and version not in self._serving.get(spec.name, {}):
                    raise failed_precondition(
                        f"Request to assign label to version {version} of model "
                        f"{spec.name}, which is not currently available for inference"
                    )
                labels.setdefault(spec.name, {})[label] = version
        self._labels = labels

    def start(self, poll_seconds: float) -> None:
        """Poll now, then every ``poll_seconds`` in a daemon thread (0: never again). A
        label on a version that did not load fails the start, as in TF Serving."""
        self.poll()
        try:
            self._update_labels()
        except ServingError as err:
            raise ConfigError(err.message) from None
        if poll_seconds > 0:
            self._start_poller(poll_seconds)

    def _start_poller(self, poll_seconds: float) -> None:
        self._thread = threading.Thread(
            target=self._poll_loop, args=(poll_seconds,), name="model-poller", daemon=True
        )
        self._thread.start()

    def _poll_loop(self, poll_seconds: float) -> None:
        try:
            while not self._stop.wait(poll_seconds):
                try:
                    self.poll()
                except load_errors():  # An unreadable base path, a folder removed mid-poll.
                    log.exception("model poll failed")  # The next poll retries.
        finally:
            # Anything else is a bug in this module: threading.excepthook logs its traceback,
            # and a new poller takes over while the loaded versions keep serving.
            if not self._stop.is_set():
                self._start_poller(poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------------- lookups

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request's ModelSpec names; NOT_FOUND if there is none."""
        if name not in self.specs:
            raise not_found(
                f"Servable not found for request: model '{name}' is not served "
                f"(models: {', '.join(sorted(self.specs))})"
            )
        versions = self._serving[name]
        if label:
            labels = self._labels.get(name, {})
            if label not in labels:  # As TF Serving's ServerCore::GetModelVersionForLabel.
                raise invalid(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            if not versions:
                raise not_found(
                    f"Servable not found for request: no version of model " f"'{name}' is available"
                )
            return versions[max(versions)]
        if version not in versions:
            raise not_found(
                f"Servable not found for request: model '{name}' version "
                f"{version} is not available (available: "
                f"{sorted(versions) or 'none'})"
            )
        return versions[version]

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version the manager has seen for ``name`` (or just ``version``)."""
        if name not in self.specs:
            raise not_found(f"Could not find any versions of model '{name}'")
        seen = self._status.get(name, {})
        if version is not None:
            if version not in seen:
                raise not_found(f"Could not find version {version} of model '{name}'")
            return [seen[version]]
        return [seen[v] for v in sorted(seen, reverse=True)]

    def available(self, name: str) -> list[int]:
        return sorted(self._serving.get(name, {}))
