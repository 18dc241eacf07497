"""Server metrics, exposed as TF Serving exposes them: Prometheus text on the REST port.

With ``--monitoring_config_file`` (TF Serving's ``MonitoringConfig``, with
``prometheus_config { enable: true }``) the REST port answers the configured path (default
``/monitoring/prometheus/metrics``) with every metric below in Prometheus's text format.

The metrics carry TF Serving's and TensorFlow's names, labels, units (microseconds) and
histogram buckets (``monitoring::Buckets::Exponential``), and are written out as TF
Serving's ``util/prometheus_exporter.cc`` writes them: every character of a name outside
``[a-zA-Z0-9_]`` becomes ``:`` (``/tensorflow/serving/request_count`` is
``:tensorflow:serving:request_count``), a ``# TYPE`` line per metric, cumulative ``_bucket``
lines whose last ``le`` is ``+Inf``, then ``_sum`` and ``_count``. A histogram bucket counts
the values below its limit (TensorFlow's ``Histogram``). What TF Serving has no metric for
(per-signature counts, the batching queue) is under ``/mtrec/``.

The registry is this module's own (no prometheus_client): recording takes one lock and
updates one dict entry, and cannot fail a request.
"""

from __future__ import annotations

import bisect
import logging
import re
import sys
import threading
from collections.abc import Callable, Sequence

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_PATH",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "ServingMetrics",
    "exponential_buckets",
    "prometheus_name",
]

# PrometheusExporter::kPrometheusPath.
DEFAULT_PATH = "/monitoring/prometheus/metrics"
# Prometheus's text exposition format (TF Serving answers plain "text/plain").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelValues = tuple[str, ...]

log = logging.getLogger(__name__)

# Label values come from requests (a model name as asked for, as in TF Serving): past this
# many label sets a metric records no new ones, so that made-up names cannot grow memory.
MAX_SERIES = 10_000


def exponential_buckets(scale: float, growth_factor: float, count: int) -> tuple[float, ...]:
    """TensorFlow's ``monitoring::Buckets::Exponential``: ``count`` limits from ``scale``,
    each ``growth_factor`` times the last (multiplied in turn, as TensorFlow does), then the
    ``DBL_MAX`` bucket that ``ExplicitBuckets`` appends (written as ``+Inf``)."""
    limits, bound = [], float(scale)
    for _ in range(count):
        limits.append(bound)
        bound *= growth_factor
    return (*limits, sys.float_info.max)


# Scale 10, power 1.8, 33 buckets (~20 minutes): request, runtime and load stage latencies.
LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)
# Scale 100, power 1.2, 52 buckets (~1 second): batching_session/queuing_latency.
QUEUING_BUCKETS = exponential_buckets(100, 1.2, 52)
# [1, 2, 4, ..., 2^13, DBL_MAX]: batching_session/input_batch_size, processed_batch_size.
BATCH_SIZE_BUCKETS = exponential_buckets(1, 2, 14)


def prometheus_name(name: str) -> str:
    """A metric name as TF Serving's exporter writes it (GetPrometheusMetricName)."""
    new = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return "_" + new if new[:1].isdigit() else new


def _label_name(name: str) -> str:
    """SanatizeLabelName: ``[a-zA-Z0-9]`` kept, anything else ``_``."""
    new = re.sub(r"[^a-zA-Z0-9]", "_", name)
    return "_" + new if new[:1].isdigit() else new


def _label_value(value: str) -> str:
    """SanitizeLabelValue (backslash and double quote), plus the newline Prometheus's
    format also requires escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A bucket limit as absl::StrCat writes a double (six significant digits)."""
    return f"{value:.6g}"


def _exact(value: float) -> str:
    """A sum: integral values without a fraction, others exactly."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, description: str, labels: Sequence[str]) -> None:
        self.name = name
        self.description = description
        self.labels = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, values: Sequence[object]) -> LabelValues:
        if len(values) != len(self.labels):
            raise TypeError(f"{self.name} takes labels {self.labels}, got {tuple(values)}")
        return tuple(str(v) for v in values)

    def _full(self, cells: dict) -> bool:
        """Whether a new label set is refused (call with the lock held)."""
        if len(cells) < MAX_SERIES:
            return False
        if not getattr(self, "_warned", False):
            self._warned = True
            log.warning(
                "metric %s has %d label sets; new ones are not recorded", self.name, len(cells)
            )
        return True

    def _labels(self, key: LabelValues, extra: str = "") -> str:
        parts = [
            f'{_label_name(n)}="{_label_value(v)}"' for n, v in zip(self.labels, key, strict=True)
        ]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}"

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A cumulative integer per label values."""

    kind = "counter"

    def __init__(self, name: str, description: str, labels: Sequence[str]) -> None:
        super().__init__(name, description, labels)
        self._cells: dict[LabelValues, int] = {}

    def increment(self, *values: object, by: int = 1) -> None:
        key = self._key(values)
        with self._lock:
            if key in self._cells or not self._full(self._cells):
                self._cells[key] = self._cells.get(key, 0) + int(by)

    def value(self, *values: object) -> int:
        with self._lock:
            return self._cells.get(self._key(values), 0)

    def lines(self) -> list[str]:
        with self._lock:
            cells = sorted(self._cells.items())
        name = prometheus_name(self.name)
        return [f"{name}{self._labels(key)} {value}" for key, value in cells]


class Gauge(_Metric):
    """An integer per label values, set by the code or read at scrape time from
    ``callback`` (a dict of label values to value)."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        description: str,
        labels: Sequence[str],
        callback: Callable[[], dict[LabelValues, int]] | None = None,
    ) -> None:
        super().__init__(name, description, labels)
        self._cells: dict[LabelValues, int] = {}
        self._callback = callback

    def set(self, *values: object, to: int) -> None:
        key = self._key(values)
        with self._lock:
            self._cells[key] = int(to)

    def lines(self) -> list[str]:
        if self._callback is not None:
            cells = sorted((self._key(k), int(v)) for k, v in self._callback().items())
        else:
            with self._lock:
                cells = sorted(self._cells.items())
        name = prometheus_name(self.name)
        return [f"{name}{self._labels(key)} {value}" for key, value in cells]


class Histogram(_Metric):
    """TensorFlow's Sampler: counts per bucket, a sum and a count, per label values."""

    kind = "histogram"

    def __init__(
        self, name: str, description: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, description, labels)
        self.limits = tuple(float(b) for b in buckets)
        if any(b <= a for a, b in zip(self.limits, self.limits[1:], strict=False)):
            raise ValueError(f"{name}: bucket limits must increase")
        self._cells: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, *values: object, value: float) -> None:
        key = self._key(values)
        # As TensorFlow's Histogram::Add: the first bucket whose limit is above the value.
        index = min(bisect.bisect_right(self.limits, value), len(self.limits) - 1)
        with self._lock:
            cell = self._cells.get(key)
            if cell is None:
                if self._full(self._cells):
                    return
                cell = self._cells[key] = ([0] * len(self.limits), [0.0])
            cell[0][index] += 1
            cell[1][0] += value

    def count(self, *values: object) -> int:
        with self._lock:
            cell = self._cells.get(self._key(values))
            return sum(cell[0]) if cell else 0

    def lines(self) -> list[str]:
        with self._lock:
            cells = sorted((k, (list(c[0]), c[1][0])) for k, c in self._cells.items())
        name = prometheus_name(self.name)
        lines = []
        for key, (counts, total) in cells:
            cumulative = 0
            last = len(self.limits) - 1
            for index, (limit, count) in enumerate(zip(self.limits, counts, strict=True)):
                cumulative += count
                le = "+Inf" if index == last else _number(limit)
                labels = self._labels(key, 'le="' + le + '"')
                lines.append(f"{name}_bucket{labels} {cumulative}")
            lines.append(f"{name}_sum{self._labels(key)} {_exact(total)}")
            lines.append(f"{name}_count{self._labels(key)} {cumulative}")
        return lines


class Registry:
    """The metrics of one server, written out in name order (as TF Serving's collection
    registry orders them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is registered twice")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, description: str, *labels: str) -> Counter:
        return self._add(Counter(name, description, labels))  # type: ignore[return-value]

    def gauge(
        self,
        name: str,
        description: str,
        *labels: str,
        callback: Callable[[], dict[LabelValues, int]] | None = None,
    ) -> Gauge:
        return self._add(Gauge(name, description, labels, callback))  # type: ignore[return-value]

    def histogram(
        self, name: str, description: str, *labels: str, buckets: Sequence[float]
    ) -> Histogram:
        return self._add(Histogram(name, description, labels, buckets))  # type: ignore[return-value]

    def exposition(self) -> str:
        """Prometheus's text format: a ``# TYPE`` line per metric, then its samples."""
        with self._lock:
            metrics = sorted(self._metrics.values(), key=lambda m: m.name)
        lines = []
        for metric in metrics:
            lines.append(f"# TYPE {prometheus_name(metric.name)} {metric.kind}")
            lines.extend(metric.lines())
        return "\n".join(lines) + "\n"


class ServingMetrics:
    """What the server records, under TF Serving's and TensorFlow's metric names."""

    # The runtime label TF Serving's session-based (non-TFRT) servables record.
    RUNTIME = "TF1"
    # TF Serving's batching thread pool name when batching is on (server.cc).
    THREAD_POOL = "model_server_batch_threads"

    def __init__(self) -> None:
        self.registry = registry = Registry()
        # servables/tensorflow/util.cc.
        self.request_count = registry.counter(
            "/tensorflow/serving/request_count",
            "The total number of requests.",
            "model_name",
            "status",
        )
        self.request_latency = registry.histogram(
            "/tensorflow/serving/request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            "model_name",
            "API",
            "entrypoint",
            buckets=LATENCY_BUCKETS,
        )
        self.runtime_latency = registry.histogram(
            "/tensorflow/serving/runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            "model_name",
            "API",
            "runtime",
            buckets=LATENCY_BUCKETS,
        )
        # tensorflow/cc/saved_model/loader.cc.
        self.load_attempt_count = registry.counter(
            "/tensorflow/cc/saved_model/load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            "model_path",
            "status",
        )
        self.load_latency = registry.counter(
            "/tensorflow/cc/saved_model/load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            "model_path",
        )
        # batching/batching_session.cc and batching/batching_util.h.
        self.queuing_latency = registry.histogram(
            "/tensorflow/serving/batching_session/queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            "thread_pool_name",
            buckets=QUEUING_BUCKETS,
        )
        self.input_batch_size = registry.histogram(
            "/tensorflow/serving/batching_session/input_batch_size",
            "Tracks the batch size distribution on the inputs.",
            buckets=BATCH_SIZE_BUCKETS,
        )
        self.processed_batch_size = registry.histogram(
            "/tensorflow/serving/batching_session/processed_batch_size",
            "Tracks the batch size distribution on processing.",
            buckets=BATCH_SIZE_BUCKETS,
        )
        self.wrapped_run_count = registry.counter(
            "/tensorflow/serving/batching_session/wrapped_run_count",
            "Total count of run calls on the wrapped session",
        )
        # mtrec's own: TF Serving's request_count has no API or signature.
        self.signature_request_count = registry.counter(
            "/mtrec/serving/request_count",
            "The total number of requests by model, API, entrypoint, signature and status.",
            "model_name",
            "API",
            "entrypoint",
            "signature_name",
            "status",
        )

    def record_request(
        self,
        model_name: str,
        api: str,
        entrypoint: str,
        signature_name: str,
        status: str,
        latency_micros: int,
    ) -> None:
        """One finished request, as TF Serving records it: counted with its status; its
        latency only when it succeeded."""
        self.request_count.increment(model_name, status)
        self.signature_request_count.increment(model_name, api, entrypoint, signature_name, status)
        if status == "OK":
            self.request_latency.observe(model_name, api, entrypoint, value=latency_micros)

    def watch_batching_queue(self, queued: Callable[[], int]) -> None:
        """The batching queue's length (requests waiting for a batch), read at scrape time."""
        self.registry.gauge(
            "/mtrec/serving/batching_session/queue_size",
            "Requests waiting in the batching queue.",
            callback=lambda: {(): queued()},
        )
