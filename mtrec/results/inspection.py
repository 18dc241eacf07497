"""What an evaluation says, per head and per slice: blessing, thresholds, metrics, the
candidate against the baseline, and slices much worse than overall.

Reads TFMA's own output files (metrics, validation result, eval config) and, when the
evaluation is found through MLMD, the run's blessing and pushed version. ``--history``: one
line per run of the pipeline (spans, warm or cold start, headline metrics, blessing, push).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from mtrec import names as F
from mtrec.errors import MtrecError
from mtrec.results.store import (
    HistoryRow,
    RunSummary,
    data_fingerprint_warning,
    describe_bound,
    describe_change,
)

OVERALL = "overall"
# Metrics shown per head (TFMA names), the first one being the head's headline metric.
SHORT_NAMES = {
    "root_mean_squared_error": "RMSE",
    "mean_absolute_error": "MAE",
    "auc": "AUC",
    "binary_crossentropy": "logloss",
    "calibration": "calibration",
    "example_count": "examples",
}
# The example count shown per head: rating metrics count rated examples only (weight 1).
# The text view's summary lists at most this many failed thresholds (--thresholds: all).
MAX_SUMMARY_FAILURES = 8


@dataclasses.dataclass(frozen=True)
class FlagRule:
    """When a slice is "much worse" than overall on a head's headline metric."""

    auc_margin: float = 0.05  # AUC this far below overall.
    rmse_ratio: float = 1.10  # RMSE this many times overall.
    min_count: int = 100  # Smaller slices are too noisy to flag.

    def __post_init__(self) -> None:
        if self.auc_margin < 0:
            raise ValueError("--auc-margin must be >= 0")
        if self.rmse_ratio < 1:
            raise ValueError("--rmse-ratio must be >= 1")
        if self.min_count < 0:
            raise ValueError("--min-count must be >= 0")


@dataclasses.dataclass
class ThresholdCheck:
    """One threshold of the eval config on one slice, and whether it held."""

    head: str
    metric: str
    slice: str
    kind: str  # "value" or "change"
    value: float | None
    bound: str
    status: str  # "passed", "failed" or "skipped" (a change threshold with no baseline)


@dataclasses.dataclass
class SliceMetrics:
    """One slice's metrics per head, for the candidate and (if any) the baseline."""

    slice: str
    feature: str
    value: str
    counts: dict[str, float]
    candidate: dict[str, dict[str, float]]
    baseline: dict[str, dict[str, float]]


@dataclasses.dataclass
class Flag:
    """A slice whose headline metric is much worse than overall."""

    head: str
    metric: str
    slice: str
    value: float
    overall: float
    count: float

    def describe(self) -> str:
        return (
            f"{self.head} {SHORT_NAMES[self.metric]} on {self.slice}: {self.value:.4f} "
            f"vs {self.overall:.4f} overall (n={self.count:.0f})"
        )


@dataclasses.dataclass
class Inspection:
    """Everything ``mtrec inspect`` prints and ``mtrec report`` draws on."""

    evaluation_uri: str
    validation_ok: bool
    has_baseline: bool
    thresholds: list[ThresholdCheck]
    slices: list[SliceMetrics]
    flags: list[Flag]
    run: RunSummary | None = None

    @property
    def overall(self) -> SliceMetrics:
        return next(s for s in self.slices if s.slice == OVERALL)

    @property
    def blessed(self) -> bool:
        """MLMD's blessing where known, else TFMA's validation outcome."""
        if self.run is not None and self.run.blessed is not None:
            return self.run.blessed
        return self.validation_ok

    @property
    def data_warning(self) -> str | None:
        """Set when the baseline was trained on other examples than the candidate."""
        if self.run is None or not self.has_baseline:
            return None
        return data_fingerprint_warning(
            self.run.data_fingerprint, self.run.baseline_data_fingerprint
        )

    def headline(self) -> list[dict[str, Any]]:
        """Per head, its headline metric overall: candidate, baseline and their delta."""
        overall = next((s for s in self.slices if s.slice == OVERALL), None)
        rows = []
        for head in F.HEADS:
            name = F.HEAD_METRICS[head][0]
            new = overall.candidate.get(head, {}).get(name) if overall else None
            old = overall.baseline.get(head, {}).get(name) if overall else None
            delta = new - old if new is not None and old is not None else None
            verdict = ""
            if delta is not None and math.isfinite(delta) and delta != 0:
                verdict = "better" if (delta > 0) == F.HIGHER_IS_BETTER[name] else "worse"
            rows.append(
                {
                    "head": head,
                    "metric": name,
                    "candidate": new,
                    "baseline": old,
                    "delta": delta,
                    "verdict": verdict,
                }
            )
        return rows

    def to_json(self) -> dict[str, Any]:
        run = self.run
        return {
            "evaluation_uri": self.evaluation_uri,
            "run_id": run.run_id if run else None,
            "model": {
                "uri": run.model_uri if run else None,
                "version": run.pushed_version if run else None,
                "pushed_to": run.pushed_to if run else None,
                "blessed": self.blessed,
                "baseline_uri": run.baseline_model_uri if run else None,
                "data_fingerprint": run.data_fingerprint if run else None,
                "baseline_data_fingerprint": run.baseline_data_fingerprint if run else None,
            },
            "examples": run.split_counts if run else {},
            "validation_ok": self.validation_ok,
            "has_baseline": self.has_baseline,
            "warnings": [self.data_warning] if self.data_warning else [],
            "headline": _finite(self.headline()),
            "thresholds": [dataclasses.asdict(t) for t in self.thresholds],
            "slices": [_finite(dataclasses.asdict(s)) for s in self.slices],
            "flags": [dataclasses.asdict(f) for f in self.flags],
        }


# ----------------------------------------------------------------------------- reading


def inspect_evaluation(
    uri: str, run: RunSummary | None = None, rule: FlagRule | None = None
) -> Inspection:
    """Read one Evaluator output directory (a ModelEvaluation artifact's URI); an unreadable
    one is an ``MtrecError`` naming it."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma  # Deferred: slow to import.
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from tensorflow_model_analysis.writers import eval_config_writer

    def unreadable(why: object) -> MtrecError:
        return MtrecError(f"{uri}: not a TFMA evaluation output ({why})")

    try:
        if not tf.io.gfile.isdir(uri):
            raise unreadable("no such directory")
        eval_config = eval_config_writer.load_eval_run(uri)[0]
        if eval_config is None:  # TFMA returns None rather than raising.
            raise unreadable("no eval_config.json")
        # TFMA asserts that there is exactly one validation result: check it here instead.
        found = tf.io.gfile.glob(os.path.join(uri, "validations*"))
        if len(found) != 1:
            raise unreadable(f"{len(found)} validation result files, expected 1")
        metrics = list(tfma.load_metrics(uri))
        if not metrics:
            raise unreadable("no metrics")
        validation = tfma.load_validation_result(uri)
    except (
        OSError,  # Local file errors.
        ValueError,  # JSON errors, TFMA's version check.
        KeyError,  # Legacy (pickled) eval configs missing a key.
        json_format.ParseError,  # eval_config.json not an EvalRun.
        DecodeError,  # Records that are not MetricsForSlice / ValidationResult protos.
        tf.errors.OpError,  # tf.io.gfile and TFRecord errors: missing, corrupt, a directory.
    ) as err:
        raise unreadable(f"{type(err).__name__}: {err}") from None
    slices = [_slice_metrics(m) for m in metrics]
    slices.sort(key=lambda s: (s.slice != OVERALL, _feature_order(s.feature), s.value))
    has_baseline = any(s.baseline for s in slices)
    failures = _failure_keys(validation)
    return Inspection(
        evaluation_uri=uri,
        validation_ok=bool(validation.validation_ok),
        has_baseline=has_baseline,
        thresholds=list(_threshold_checks(eval_config, slices, metrics, failures, has_baseline)),
        slices=slices,
        flags=find_flags(slices, rule or FlagRule()),
        run=run,
    )


def _feature_order(feature: str) -> int:
    order = ("", *F.SLICE_FEATURES)
    return order.index(feature) if feature in order else len(order)


def slice_name(slice_key: Any) -> tuple[str, str, str]:
    """(display name, feature, value) of a TFMA SliceKey proto; () is overall."""
    parts = []
    for single in slice_key.single_slice_keys:
        kind = single.WhichOneof("kind")
        value = getattr(single, kind) if kind else ""
        parts.append(
            (
                single.column,
                value.decode()
                if isinstance(value, bytes)
                else f"{value:g}"
                if isinstance(value, float)
                else str(value),
            )
        )
    if not parts:
        return OVERALL, "", ""
    name = ", ".join(f"{column}={value}" for column, value in parts)
    return name, ",".join(c for c, _ in parts), ",".join(v for _, v in parts)


def _metric_value(value: Any) -> float | None:
    if value.HasField("double_value"):
        return float(value.double_value.value)
    if value.HasField("bounded_value"):
        return float(value.bounded_value.value.value)
    return None


def _slice_metrics(metrics_for_slice: Any) -> SliceMetrics:
    import tensorflow_model_analysis as tfma

    name, feature, value = slice_name(metrics_for_slice.slice_key)
    found: dict[tuple[bool, str, str], dict[bool, float]] = {}
    for entry in metrics_for_slice.metric_keys_and_values:
        key = entry.key
        number = _metric_value(entry.value)
        if number is None or key.is_diff or key.HasField("sub_key"):
            continue
        is_baseline = key.model_name == tfma.BASELINE_KEY
        found.setdefault((is_baseline, key.output_name, key.name), {})[
            key.example_weighted.value
        ] = number
    candidate: dict[str, dict[str, float]] = {}
    baseline: dict[str, dict[str, float]] = {}
    for (is_baseline, head, metric), by_weighting in found.items():
        # Rating errors are weighted (observed ratings only): the weighted value wins.
        (baseline if is_baseline else candidate).setdefault(head, {})[metric] = by_weighting.get(
            True, by_weighting.get(False)
        )
    counts = {head: candidate.get(head, {}).get(F.COUNT_METRIC[head], 0.0) for head in F.HEADS}
    return SliceMetrics(name, feature, value, counts, candidate, baseline)


def _failure_keys(validation: Any) -> set[tuple[str, str, bool, str]]:
    failed = set()
    for per_slice in validation.metric_validations_per_slice:
        where = slice_name(per_slice.slice_key)[0]
        for failure in per_slice.failures:
            key = failure.metric_key
            failed.add((key.output_name, key.name, key.is_diff, where))
    return failed


def _threshold_checks(
    eval_config: Any,
    slices: list[SliceMetrics],
    metrics: list[Any],
    failures: set[tuple[str, str, bool, str]],
    has_baseline: bool,
) -> Iterable[ThresholdCheck]:
    """Every (threshold, slice) pair of the config, with its value and outcome."""
    by_name = {s.slice: s for s in slices}
    diffs = _diff_values(metrics)
    for spec in eval_config.metrics_specs:
        for head in spec.output_names:
            for metric in spec.metrics:
                for per_slice in metric.per_slice_thresholds:
                    for slicing in per_slice.slicing_specs:
                        where = _spec_slice_name(slicing)
                        if where not in by_name:
                            continue  # No eval example in that slice.
                        yield from _checks_for(
                            head,
                            _metric_name(metric.class_name, head),
                            per_slice.threshold,
                            where,
                            by_name,
                            diffs,
                            failures,
                            has_baseline,
                        )


def _checks_for(
    head: str,
    metric_name: str,
    threshold: Any,
    where: str,
    by_name: Mapping[str, SliceMetrics],
    diffs: Mapping[tuple[str, str, str], float],
    failures: set[tuple[str, str, bool, str]],
    has_baseline: bool,
) -> Iterable[ThresholdCheck]:
    candidate = by_name[where].candidate.get(head, {})
    if metric_name not in candidate:
        return

    def judged(kind: str, value: float | None, bound: str) -> ThresholdCheck:
        failed = (head, metric_name, kind == "change", where) in failures
        status = "failed" if failed else "passed"
        return ThresholdCheck(head, metric_name, where, kind, value, bound, status)

    if threshold.HasField("value_threshold"):
        yield judged("value", candidate[metric_name], describe_bound(threshold.value_threshold))
    if threshold.HasField("change_threshold"):
        text = describe_change(threshold.change_threshold)
        if has_baseline:
            yield judged("change", diffs.get((head, metric_name, where)), text)
        else:
            yield ThresholdCheck(head, metric_name, where, "change", None, text, "skipped")


def _metric_name(class_name: str, head: str) -> str:
    """The TFMA metric a MetricConfig's thresholds hold (else the head's headline metric,
    as in evaluations from before the example-count hold)."""
    return F.THRESHOLD_METRICS.get(class_name, F.HEAD_METRICS[head][0])


def _spec_slice_name(slicing: Any) -> str:
    if slicing.feature_values:
        return ", ".join(f"{k}={v}" for k, v in sorted(slicing.feature_values.items()))
    if slicing.feature_keys:
        return ",".join(slicing.feature_keys)
    return OVERALL


def _diff_values(metrics: list[Any]) -> dict[tuple[str, str, str], float]:
    diffs = {}
    for metrics_for_slice in metrics:
        where = slice_name(metrics_for_slice.slice_key)[0]
        for entry in metrics_for_slice.metric_keys_and_values:
            number = _metric_value(entry.value)
            if entry.key.is_diff and number is not None:
                diffs[(entry.key.output_name, entry.key.name, where)] = number
    return diffs


def find_flags(slices: list[SliceMetrics], rule: FlagRule | None = None) -> list[Flag]:
    """Slices of at least ``rule.min_count`` examples that are much worse than overall."""
    rule = rule or FlagRule()
    overall = next((s for s in slices if s.slice == OVERALL), None)
    if overall is None:
        return []
    flags = []
    for row in slices:
        if row.slice == OVERALL:
            continue
        for head in F.HEADS:
            name = F.HEAD_METRICS[head][0]
            value = row.candidate.get(head, {}).get(name)
            reference = overall.candidate.get(head, {}).get(name)
            if value is None or reference is None or row.counts[head] < rule.min_count:
                continue
            worse = (
                value < reference - rule.auc_margin
                if F.HIGHER_IS_BETTER[name]
                else value > reference * rule.rmse_ratio
            )
            if worse:
                flags.append(Flag(head, name, row.slice, value, reference, row.counts[head]))
    return flags


def _finite(value: Any) -> Any:
    """JSON has no NaN: turn non-finite floats into null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# ----------------------------------------------------------------------------- text


def format_text(inspection: Inspection, thresholds: bool = False) -> str:
    """The terminal view. First a summary of at most ~25 lines (model, blessing, data
    fingerprints, failed thresholds, each head's headline metric against the baseline); then
    the per-head tables, the baseline diff and the flagged slices; with ``thresholds``,
    every threshold with its value last."""
    lines = _header_lines(inspection)
    lines += _threshold_summary_lines(inspection, listed=thresholds)
    lines += ["", *_headline_lines(inspection)]
    for head in F.HEADS:
        lines += ["", *_head_table(inspection, head)]
    lines += ["", *_baseline_lines(inspection)]
    lines += ["", *_flag_lines(inspection)]
    if thresholds:
        lines += ["", *_threshold_lines(inspection)]
    return "\n".join(lines)


def _header_lines(inspection: Inspection) -> list[str]:
    run = inspection.run
    lines = []
    if run is not None:
        lines.append(f"Pipeline run {run.run_id}")
        version = (
            f"version {run.pushed_version} at {run.pushed_to}" if run.pushed_to else "not pushed"
        )
        lines.append(f"Model: {run.model_uri} ({version})")
    verdict = "BLESSED" if inspection.blessed else "NOT BLESSED"
    lines.append(f"Blessing: {verdict}")
    if inspection.has_baseline:
        where = run.baseline_model_uri if run and run.baseline_model_uri else "in evaluation"
        lines.append(f"Baseline: {where}")
    else:
        lines.append("Baseline: none (no earlier blessed model; change thresholds skipped)")
    lines.append(f"Evaluation: {inspection.evaluation_uri}")
    if run is not None and (run.data_fingerprint or run.baseline_data_fingerprint):
        data = f"Data fingerprint: candidate {run.data_fingerprint or 'unknown'}"
        if inspection.has_baseline:
            data += f", baseline {run.baseline_data_fingerprint or 'unknown'}"
        lines.append(data)
    if run is not None and run.split_counts:
        lines.append("Examples: " + split_counts_text(run.split_counts))
    if inspection.data_warning:
        lines.append(inspection.data_warning)
    return lines


def split_counts_text(counts: dict[str, dict[str, int]]) -> str:
    """'train 405,000 (81,000 clicks, 943 users, 1,682 items); valid ...': what the data
    component recorded on its Examples artifact."""
    return "; ".join(
        f"{split} {c.get('examples', 0):,} ({c.get('clicks', 0):,} clicks, "
        f"{c.get('users', 0):,} users, {c.get('items', 0):,} items)"
        for split, c in sorted(counts.items(), key=lambda kv: _split_order(kv[0]))
    )


def _split_order(split: str) -> int:
    return F.SPLITS.index(split) if split in F.SPLITS else len(F.SPLITS)


def _threshold_counts(inspection: Inspection) -> str:
    count = {
        status: sum(c.status == status for c in inspection.thresholds)
        for status in ("passed", "failed", "skipped")
    }
    return (
        f"Thresholds: {count['passed']} passed, {count['failed']} failed, "
        f"{count['skipped']} skipped"
    )


def _ordered_checks(inspection: Inspection) -> list[ThresholdCheck]:
    """Failures first: they are why a model was not blessed."""
    return sorted(
        inspection.thresholds,
        key=lambda c: (c.status != "failed", c.status, c.head, c.slice != OVERALL, c.slice, c.kind),
    )


def _check_line(check: ThresholdCheck) -> str:
    if check.value is None:
        value = "n/a"
    elif check.kind == "change":
        value = f"{check.value:+.4f}"
    elif check.metric == F.COUNT_METRIC[check.head]:
        value = f"{check.value:.0f}"
    else:
        value = f"{check.value:.4f}"
    return (
        f"  {check.status.upper():<8}{check.head}/{SHORT_NAMES[check.metric]} "
        f"{check.kind} on {check.slice}: {value} ({check.bound})"
    )


def _threshold_summary_lines(inspection: Inspection, listed: bool) -> list[str]:
    """The counts and the first failures; where the full list is (or would be)."""
    failed = [c for c in _ordered_checks(inspection) if c.status == "failed"]
    counts = _threshold_counts(inspection)
    if inspection.thresholds:
        counts += " (all listed below)" if listed else " (--thresholds lists all)"
    lines = ["", counts]
    lines += [_check_line(c) for c in failed[:MAX_SUMMARY_FAILURES]]
    if len(failed) > MAX_SUMMARY_FAILURES:
        lines.append(f"  ... and {len(failed) - MAX_SUMMARY_FAILURES} more failed")
    return lines


def _threshold_lines(inspection: Inspection) -> list[str]:
    """Every threshold with its value and outcome (``--thresholds``)."""
    return [
        f"All thresholds ({_threshold_counts(inspection).removeprefix('Thresholds: ')}):",
        *[_check_line(c) for c in _ordered_checks(inspection)],
    ]


def _headline_lines(inspection: Inspection) -> list[str]:
    """Each head's headline metric overall, the candidate against the baseline."""
    lines = [f"{'Headline (overall)':<22}{'candidate':>10}{'baseline':>10}{'delta':>10}"]
    for row in inspection.headline():
        label = f"  {row['head']}/{SHORT_NAMES[row['metric']]}"
        new, old, delta = row["candidate"], row["baseline"], row["delta"]
        lines.append(
            f"{label:<22}"
            + (f"{new:>10.4f}" if new is not None else f"{'n/a':>10}")
            + (f"{old:>10.4f}" if old is not None else f"{'-':>10}")
            + (f"{delta:>+10.4f}" if delta is not None else f"{'-':>10}")
            + (f" {row['verdict']}" if row["verdict"] else "")
        )
    return lines


def _head_table(inspection: Inspection, head: str) -> list[str]:
    names = F.HEAD_METRICS[head]
    count_label = "rated" if head == F.RATING else "n"
    width = max(len(s.slice) for s in inspection.slices) + 2
    header = f"{head:<{width}}{count_label:>8}" + "".join(f"{SHORT_NAMES[n]:>13}" for n in names)
    if inspection.has_baseline:
        header += f"{'baseline':>11}{'delta':>9}"
    lines = [header]
    headline = names[0]
    flagged = {f.slice for f in inspection.flags if f.head == head}
    for row in inspection.slices:
        values = row.candidate.get(head, {})
        if not values or not row.counts[head]:
            continue
        line = f"{row.slice:<{width}}{row.counts[head]:>8.0f}" + "".join(
            f"{values.get(n, math.nan):>13.4f}" for n in names
        )
        base = row.baseline.get(head, {}).get(headline)
        if inspection.has_baseline:
            line += (
                f"{base:>11.4f}{values.get(headline, math.nan) - base:>+9.4f}"
                if base is not None
                else f"{'':>20}"
            )
        lines.append(line + ("  !" if row.slice in flagged else ""))
    return lines


def baseline_comparison(inspection: Inspection) -> list[tuple[str, str, float, float, str]]:
    """(head, metric, baseline, candidate, verdict) for every overall metric both models
    have; verdict is "better", "worse" or "" (equal, or no direction)."""
    rows = []
    overall = inspection.overall
    for head in F.HEADS:
        for name in F.HEAD_METRICS[head]:
            new = overall.candidate.get(head, {}).get(name)
            old = overall.baseline.get(head, {}).get(name)
            if new is None or old is None:
                continue
            better = F.HIGHER_IS_BETTER.get(name)
            verdict = (
                ""
                if better is None or new == old
                else ("better" if (new > old) == better else "worse")
            )
            rows.append((head, name, old, new, verdict))
    return rows


def _baseline_lines(inspection: Inspection) -> list[str]:
    if not inspection.has_baseline:
        return ["Candidate vs baseline: no baseline in this evaluation."]
    lines = ["Candidate vs baseline (overall):"]
    for head, name, old, new, verdict in baseline_comparison(inspection):
        label = f"{head}/{SHORT_NAMES[name]}"
        lines.append(
            f"  {label:<22}{old:>9.4f} -> {new:.4f} ({new - old:+.4f})"
            + (f" {verdict}" if verdict else "")
        )
    return lines


def _flag_lines(inspection: Inspection) -> list[str]:
    if not inspection.flags:
        return ["Flagged slices: none much worse than overall."]
    return ["Flagged slices (much worse than overall; marked ! above):"] + [
        f"  ! {flag.describe()}" for flag in inspection.flags
    ]


# ----------------------------------------------------------------------------- history

# Each head's headline metric as a history column: rating_rmse, click_auc, purchase_auc.
HISTORY_METRICS = {
    head: f"{head}_{SHORT_NAMES[F.HEAD_METRICS[head][0]].lower()}" for head in F.HEADS
}
HISTORY_HEADER = (
    "run",
    "started",
    "span",
    "trained on spans",
    "eval span",
    "start",
    *HISTORY_METRICS.values(),
    "blessed",
    "pushed",
)


def load_history(metadata_path: str, pipeline_name: str) -> list[HistoryRow]:
    """Every run of ``pipeline_name`` in the MLMD database at ``metadata_path``, oldest
    first; no database or no run is an ``MtrecError``."""
    from mtrec.results import store

    try:
        return store.run_history(store.open_store(metadata_path), pipeline_name)
    except (FileNotFoundError, LookupError) as err:
        raise MtrecError(f"{err.args[0] if err.args else err}") from None


def spans_text(spans: Iterable[int]) -> str:
    """Spans compactly: '3-6' for three or more in a row, else listed ('1,3,4'); '-': none."""
    ordered = sorted(set(spans))
    parts: list[str] = []
    start = 0
    for index in range(1, len(ordered) + 1):
        if index < len(ordered) and ordered[index] == ordered[index - 1] + 1:
            continue
        run = ordered[start:index]
        parts += [f"{run[0]}-{run[-1]}"] if len(run) >= 3 else [str(n) for n in run]
        start = index
    return ",".join(parts) or "-"


def stopped_text(row: HistoryRow) -> str | None:
    """'stopped: <node> failed' for a run that a failed node stopped, '<node> not finished'
    for one still running (or killed), else None."""
    if row.failed_node:
        return f"stopped: {row.failed_node} failed"
    if row.unfinished_node:
        return f"{row.unfinished_node} not finished"
    return "ingested for a later run's window" if row.ingest_only else None


def history_cells(row: HistoryRow) -> list[str]:
    """One run as the cells of ``HISTORY_HEADER``; a stopped run says so under blessed."""
    eval_span = "-" if row.eval_span is None else str(row.eval_span)
    if row.eval_split_of_trained:
        eval_span += " (eval split)"  # The classic pipeline: a held-out split, not a span.
    start = {True: "warm", False: "cold", None: "-"}[row.warm_start]
    metrics = [
        f"{row.metrics[head]:.4f}" if head in row.metrics else "-" for head in HISTORY_METRICS
    ]
    blessed = {True: "yes", False: "no", None: "-"}[row.blessed]
    pushed = row.pushed_version or "-"
    if row.pushed_version and row.pushed_cached:
        pushed += " (cached)"  # An earlier run's push: this one pushed nothing.
    stopped = stopped_text(row)
    return [
        row.run_id,
        row.started.astimezone().strftime("%Y-%m-%d %H:%M"),  # Local time.
        "-" if row.span is None else str(row.span),
        spans_text(row.trained_spans),
        eval_span,
        start,
        *metrics,
        stopped or blessed,
        "" if stopped else pushed,
    ]


def format_history(rows: list[HistoryRow]) -> str:
    """The terminal table, one line per run, oldest first. A stopped (or unfinished) run's
    note runs on from the blessed column."""
    cells = [history_cells(row) for row in rows]
    blessed = HISTORY_HEADER.index("blessed")

    def column_width(i: int) -> int:
        shown = [c[i] for c in cells]
        if i == blessed:  # A stopped run's note may overflow into the pushed column.
            shown = [c[i] for c, row in zip(cells, rows, strict=True) if not stopped_text(row)]
        return max(len(value) for value in (HISTORY_HEADER[i], *shown))

    widths = [column_width(i) for i in range(len(HISTORY_HEADER))]
    numbers = {HISTORY_HEADER.index(name) for name in HISTORY_METRICS.values()}

    def line(values: Iterable[str]) -> str:
        return "  ".join(
            value.rjust(width) if i in numbers else value.ljust(width)
            for i, (value, width) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return "\n".join([line(HISTORY_HEADER), *(line(c) for c in cells)])


def history_json(rows: list[HistoryRow]) -> dict[str, Any]:
    """``inspect --history --format json``: every run, oldest first."""
    return {"runs": [row.to_json() for row in rows]}
