"""Benchmark: continuous training span after span, warm-started against cold-started (issue 15).

Two streams of logs laid out one folder per span (`DIR/span-NNNN/*.csv`):
- MovieLens-100K cut into weekly spans (`mtrec.data.spans.write_movielens_spans`: each rating
  an impression plus sampled never-rated ones);
- synthetic logs whose tastes drift from span to span (`mtrec.data.synth.write_spans`).

Per data set, after an initial window of K spans, for N consecutive spans s it runs, as a user
would and one after the other (so load is alike):

    mtrec run --logs DIR --span s --window K --output-dir WORK/<set>/warm
    mtrec run --logs DIR --span s --window K --cold-start --output-dir WORK/<set>/cold

One run at span K first (trained on the K-1 spans before it) gives both chains a served model,
so the first measured warm run has one to start from. After each run it reads the run back
from its output dir's MLMD: the Trainer's seconds, its epochs and whether it warm-started (the
Trainer's history.json), the seconds Keras's fit took (the sum of the Trainer's per-epoch log
lines: the first epoch includes tracing), each head's headline metric on the eval span (the
span ingested), blessing, the pushed version, and for a pushed model the Evaluator's comparison
with the model it replaced. It prints one table per data set and a summary: the median Trainer
and fit speed-ups (cold seconds / warm seconds) over the spans whose warm run did warm-start,
each head's median warm - cold difference and the spans where warm is worse by more than the
blessing tolerance, and every pushed model that is worse than the one it replaced on a head's
headline metric (blessing allows a small loss: those beyond it are marked).

--bad-span S writes a small extra file into span S before any run: a non-numeric rating
(`--bad-kind rating`, the data component refuses the file) or ages of 500 (`--bad-kind age`, a
schema anomaly: the schema inferred from the first span takes the contract's age range). The
file stays, as a bad delivery would; the benchmark reports whether the served model stayed
through span S and whether span S+1 ran normally.

Not a test; the full runs take long. The 2-core machines are shared: it prints the 1-minute
load average at start and end.

    .venv/bin/python benchmarks/continuous.py [--only movielens|synthetic] [--spans 6]
        [--window 4] [--epochs E] [--synthetic-rows 20k] [--drift 1.0]
        [--movielens-dir DIR] [--bad-span S [--bad-kind rating|age]] [--workdir DIR]
        [--json FILE] [--extra="--batch-size 2048"]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from scale import fmt, git_commit

from mtrec import names as F
from mtrec.cli.synth import row_count
from mtrec.components.thresholds import EvalThresholds
from mtrec.data import movielens, spans, synth
from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME
from mtrec.pipeline.local_runner import metadata_path
from mtrec.results import inspection
from mtrec.results import store as results

MODES = ("warm", "cold")
HISTORY_FILE = "history.json"  # What the Trainer writes in its ModelRun directory.
BAD_FILE = "bad-00000.csv"  # Not hidden, not metadata: a span reader reads it.
BAD_KINDS = ("rating", "age")
BAD_ROWS = 20
SYNTHETIC_SHARDS = 2
DATA_SETS = ("movielens", "synthetic")
# The Trainer's per-epoch log line (models/training.py: epoch_line), its seconds last.
EPOCH_LINE = re.compile(r"mtrec\.models\.training: epoch \d+/\d+ .* (\d+(?:\.\d+)?)s\s*$")
# What blessing lets a candidate lose against the serving model: within it counts as noise.
TOLERANCE = {
    F.HEAD_METRICS[F.RATING][0]: EvalThresholds.rmse_tolerance,
    F.HEAD_METRICS[F.CLICK][0]: EvalThresholds.auc_tolerance,
    F.HEAD_METRICS[F.PURCHASE][0]: EvalThresholds.auc_tolerance,
}


@dataclasses.dataclass
class RunResult:
    """One `mtrec run` at one span, warm or cold, as MLMD and the Trainer recorded it."""

    span: int
    mode: str
    code: int
    wall_s: float
    load_1m: float | None = None  # The 1-minute load average as the run started.
    trainer_s: float | None = None
    fit_s: float | None = None  # Keras fit: the Trainer's per-epoch seconds, summed.
    epochs: int | None = None
    warm_started: bool | None = None
    trained_spans: list[int] | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # Headline, per head.
    # The same on the Trainer's validation split at the epoch it kept: what the defaults
    # (warm_start_epochs among them) are chosen on, never the eval span.
    valid: dict[str, float] = dataclasses.field(default_factory=dict)
    blessed: bool | None = None
    pushed_version: str | None = None
    serving_before: int | None = None  # Newest version in serving_model before the run.
    serving_after: int | None = None
    worse_than_replaced: list[str] = dataclasses.field(default_factory=list)
    failed_node: str | None = None
    error: str = ""  # The last stderr line of a failed run.
    # --resume: read back from an earlier invocation's MLMD and logs, not run now (its wall
    # time, load and serving versions are unknown).
    resumed: bool = False


@dataclasses.dataclass
class DataSetRun:
    """Every run on one data set."""

    name: str
    logs: str
    window: int
    warm_up: int | None
    measured: list[int]
    bad_span: int | None
    runs: list[RunResult]

    def result(self, span: int, mode: str) -> RunResult | None:
        return next((r for r in self.runs if r.span == span and r.mode == mode), None)


# ----------------------------------------------------------------------------- pure parts


def choose_spans(available: list[int], window: int, count: int) -> tuple[int | None, list[int]]:
    """The warm-up span (the K-th, trained on the spans before it; None for a window of 1)
    and the ``count`` spans measured after the initial window of ``window`` spans."""
    ordered = sorted(available)
    warm_up = ordered[window - 1] if window >= 2 and len(ordered) >= window else None
    return warm_up, ordered[window : window + count]


def speedup(
    warm: RunResult | None, cold: RunResult | None, field: str = "trainer_s"
) -> float | None:
    """Cold seconds over warm ones (the Trainer's, or ``field``), where both trained."""
    if not (warm and cold and getattr(warm, field) and getattr(cold, field)):
        return None
    return getattr(cold, field) / getattr(warm, field)


def worse_by(metric: str, value: float, reference: float) -> float:
    """How much worse ``value`` is than ``reference`` (negative: better)."""
    return reference - value if F.HIGHER_IS_BETTER[metric] else value - reference


def fit_seconds(log_text: str) -> float | None:
    """The seconds of every epoch the Trainer logged, summed; None when it logged none."""
    found = [float(m.group(1)) for line in log_text.splitlines() if (m := EPOCH_LINE.search(line))]
    return sum(found) if found else None


def _pair(warm: Any, cold: Any, spec: str = "") -> str:
    def one(value: Any) -> str:
        if isinstance(value, bool):
            return "y" if value else "n"
        if value is None or isinstance(value, str):
            return value or "-"
        return fmt(value, spec)

    return f"{one(warm)}/{one(cold)}"


HEADLINE = {head: F.HEAD_METRICS[head][0] for head in F.HEADS}
# Each head's headline metric as Keras logs it on the validation split (history.json).
VALID_METRIC = {
    F.RATING: "val_rating_rmse",
    F.CLICK: "val_click_auc",
    F.PURCHASE: "val_purchase_auc",
}
# What early stopping watches by default (ModelConfig.early_stopping): its best epoch is kept.
KEPT_BY = "val_selection_loss"
COLUMNS = (
    ("span", 6),
    ("trainer s warm", 15),
    ("trainer s cold", 15),
    ("ratio", 7),
    ("fit s w/c", 13),
    ("fit ratio", 10),
    ("epochs w/c", 11),
    ("rating_rmse w/c", 17),
    ("click_auc w/c", 15),
    ("purchase_auc w/c", 17),
    ("blessed", 8),
    ("pushed w/c", 24),
)


def format_table(data: DataSetRun) -> str:
    """The per-span table of one data set; a failed run shows the node that failed."""
    lines = [_aligned([name for name, _ in COLUMNS], COLUMNS)]
    for span in data.measured:
        warm, cold = data.result(span, "warm"), data.result(span, "cold")
        runs = (warm, cold)
        cells = [
            f"{span}{'*' if span == data.bad_span else ''}",
            *(_seconds(r) for r in runs),
            fmt(speedup(warm, cold), ".2f"),
            _pair(*(r.fit_s if r else None for r in runs), ".1f"),
            fmt(speedup(warm, cold, "fit_s"), ".2f"),
            _pair(*(r.epochs if r else None for r in runs)),
            *(
                _pair(*(r.metrics.get(head) if r else None for r in runs), ".4f")
                for head in F.HEADS
            ),
            _pair(*(r.blessed if r else None for r in runs)),
            _pair(*(r.pushed_version if r else None for r in runs)),
        ]
        lines.append(_aligned(cells, COLUMNS))
    return "\n".join(lines)


def format_valid_table(data: DataSetRun) -> str:
    """Per span, each head's metric on the Trainer's validation split at its kept epoch."""
    columns = (("span", 6), *((f"valid {head} w/c", 24) for head in VALID_METRIC))
    lines = [_aligned([name for name, _ in columns], columns)]
    for span in data.measured:
        runs = (data.result(span, "warm"), data.result(span, "cold"))
        cells = [
            str(span),
            *(
                _pair(*(r.valid.get(head) if r else None for r in runs), ".4f")
                for head in VALID_METRIC
            ),
        ]
        lines.append(_aligned(cells, columns))
    return "\n".join(lines)


def _aligned(cells: list[str], columns: tuple[tuple[str, int], ...]) -> str:
    """One table line: each cell right-aligned to its column's width."""
    return "".join(f"{c:>{w}}" for c, (_, w) in zip(cells, columns, strict=True))


def kept_epoch_metrics(history: dict[str, Any]) -> dict[str, float]:
    """Each head's validation metric at the epoch early stopping kept (the first best
    ``KEPT_BY``; Keras restores it at the end of training)."""
    watched = history.get(KEPT_BY)
    if not isinstance(watched, list) or not watched:
        return {}
    kept = min(range(len(watched)), key=watched.__getitem__)
    return {
        head: float(history[name][kept])
        for head, name in VALID_METRIC.items()
        if isinstance(history.get(name), list) and len(history[name]) > kept
    }


def _seconds(run: RunResult | None) -> str:
    """Trainer seconds, marked (w) when warm-started; FAILED and the node for a failed run."""
    if run is None:
        return "-"
    if run.code != 0 and run.trainer_s is None:
        return "FAILED"  # Which node, and why: the summary's failed runs.
    return fmt(run.trainer_s, ".1f") + (" (w)" if run.warm_started else "")


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def summary_lines(data: DataSetRun) -> list[str]:
    """The median Trainer and fit speed-ups over the spans whose warm run warm-started, each
    head's warm - cold difference there, failed runs, pushed models worse than the one they
    replaced, and what the bad span did."""
    pairs = [
        (span, data.result(span, "warm"), data.result(span, "cold"))
        for span in data.measured
        if span != data.bad_span
    ]
    warm_started = [(s, w, c) for s, w, c in pairs if w and c and w.warm_started]
    lines = []
    for label, field in (("Trainer", "trainer_s"), ("fit", "fit_s")):
        ratios = [r for _, w, c in warm_started if (r := speedup(w, c, field)) is not None]
        lines.append(
            f"median {label} speed-up (cold s / warm s) over {len(ratios)} warm-started spans: "
            + (
                f"{statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})"
                if ratios
                else "-"
            )
        )
    not_warm = [s for s, w, _ in pairs if w and w.code == 0 and w.warm_started is False]
    if not_warm:
        lines.append(
            "measured warm runs that did NOT warm-start (no blessed model to start from?): "
            "spans " + ", ".join(map(str, not_warm))
        )
    lines.append(
        f"warm - cold on each head's headline metric over {len(warm_started)} warm-started "
        "spans (+: warm better); noise = blessing's tolerance:"
    )
    for head, metric in HEADLINE.items():
        diffs = warm_minus_cold(warm_started, head, metric, "metrics")
        beyond = [str(s) for s, d in diffs if -d > TOLERANCE[metric] + 1e-9]
        lines.append(
            f"  {head} {metric}: median "
            + (f"{statistics.median(d for _, d in diffs):+.4f}" if diffs else "-")
            + f", warm better at {sum(d > 0 for _, d in diffs)}/{len(diffs)} spans"
            + f", warm worse by more than {TOLERANCE[metric]:g} at spans: "
            + (", ".join(beyond) or "none")
        )
    lines.append(
        "warm - cold on the Trainer's validation split, at the kept epoch (+: warm better):"
    )
    for head, metric in HEADLINE.items():
        diffs = warm_minus_cold(warm_started, head, metric, "valid")
        lines.append(
            f"  {head} {VALID_METRIC[head]}: median "
            + (f"{statistics.median(d for _, d in diffs):+.4f}" if diffs else "-")
            + f", warm better at {sum(d > 0 for _, d in diffs)}/{len(diffs)} spans"
        )
    failed = [r for r in data.runs if r.code != 0]
    if failed:
        lines.append("failed runs:")
        lines += [
            f"  span {r.span} {r.mode}: exit {r.code} in {r.failed_node or '?'}: {r.error}"
            for r in failed
        ]
    lost = [r for r in data.runs if r.pushed_version and r.worse_than_replaced]
    pushed = sum(1 for r in data.runs if r.pushed_version)
    if lost:
        lines.append(
            f"pushed models ({pushed} in all) worse than the one they replaced on a headline "
            "metric:"
        )
        lines += [f"  span {r.span} {r.mode}: {'; '.join(r.worse_than_replaced)}" for r in lost]
    else:
        lines.append(
            f"no pushed model ({pushed} in all) was worse than the one it replaced on a "
            "headline metric"
        )
    if data.bad_span is not None:
        lines += bad_span_lines(data)
    return lines


def warm_minus_cold(
    pairs: list[tuple[int, RunResult, RunResult]], head: str, metric: str, field: str
) -> list[tuple[int, float]]:
    """(span, warm - cold) on ``head``'s ``metric`` in the runs' ``field`` (``metrics``:
    the eval span; ``valid``: the validation split), +: warm better; spans where both have it."""
    found = []
    for span, warm, cold in pairs:
        ours, theirs = getattr(warm, field), getattr(cold, field)
        if head in ours and head in theirs:
            found.append((span, 0.0 - worse_by(metric, ours[head], theirs[head])))
    return found


def bad_span_lines(data: DataSetRun) -> list[str]:
    """What the bad span did to each chain, and whether the span after it ran normally."""
    span = data.bad_span
    later = [s for s in data.measured if s > span]
    lines = [f"bad span {span}:"]
    for mode in MODES:
        bad = data.result(span, mode)
        if bad is None:
            continue
        if bad.code != 0:
            what = f"run failed (exit {bad.code}) in {bad.failed_node or '?'}: {bad.error}"
        else:
            what = f"run succeeded: blessed {_yes(bad.blessed)}"
        stayed = bad.serving_before == bad.serving_after and not bad.pushed_version
        lines.append(
            f"  {mode}: {what}; "
            + (
                f"pushed {bad.pushed_version or '-'} (serving versions not recorded: --resume)"
                if bad.resumed
                else f"serving version {fmt(bad.serving_before, 'd')} -> "
                f"{fmt(bad.serving_after, 'd')} ({'stayed' if stayed else 'CHANGED'})"
            )
        )
        after = data.result(later[0], mode) if later else None
        if after is not None:
            normal = after.code == 0 and after.trainer_s is not None
            trained = "?" if after.trained_spans is None else str(after.trained_spans)
            lines.append(
                f"  {mode}, next span {after.span}: "
                + ("ran normally" if normal else f"FAILED in {after.failed_node or '?'}")
                + f", trained on spans {trained}, blessed {_yes(after.blessed)}, "
                f"pushed {after.pushed_version or '-'}"
            )
    return lines


# ----------------------------------------------------------------------------- data


def write_movielens(work: Path, movielens_dir: str | None) -> Path:
    """MovieLens-100K (fetched into the cache unless given) as weekly spans under ``work``."""
    source = Path(movielens_dir) if movielens_dir else movielens.fetch()
    logs = work / "logs"
    started = time.perf_counter()
    found = spans.write_movielens_spans(source, logs)
    print(
        f"[movielens] {len(found)} weekly spans in {logs} "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return logs


def write_synthetic(work: Path, rows: int, count: int, drift: float) -> Path:
    """``count`` synthetic spans of ``rows`` rows, tastes drifting up to ``drift``."""
    logs = work / "logs"
    started = time.perf_counter()
    config = synth.SynthConfig(rows=rows, shards=SYNTHETIC_SHARDS, days=7)
    synth.write_spans(logs, config, spans=count, drift=drift)
    print(
        f"[synthetic] {count} spans of {rows:,} rows, drift 0 -> {drift:g}, in {logs} "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return logs


def inject_bad_rows(folder: Path, kind: str) -> Path:
    """A small extra file in a span folder, rows copied from its first file with one bad
    value: 'rating' a non-numeric rating, 'age' ages of 500 (a schema anomaly)."""
    source = spans.span_files(folder)[0]
    with open(source, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [row for _, row in zip(range(BAD_ROWS), reader, strict=False)]
    if kind == "rating":
        rows[0][header.index(F.RATING)] = "four"
    else:
        for row in rows:
            row[header.index(F.AGE)] = "500"
    target = folder / BAD_FILE
    with open(target, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return target


# ----------------------------------------------------------------------------- runs


def newest_version(serving_dir: Path) -> int | None:
    """The newest pushed version in a serving_model directory, if any."""
    if not serving_dir.is_dir():
        return None
    versions = [int(p.name) for p in serving_dir.iterdir() if p.name.isdigit()]
    return max(versions, default=None)


def latest_summary(output_dir: Path) -> results.RunSummary | None:
    """The newest run recorded in an output dir's MLMD, if any."""
    path = metadata_path(output_dir)
    if not os.path.exists(path):
        return None
    try:
        return results.latest_run(results.open_store(path), DEFAULT_PIPELINE_NAME)
    except LookupError:
        return None


def read_history(model_run_uri: str | None) -> dict[str, Any]:
    """The Trainer's history.json (per-epoch losses, ``epochs_run``, ``warm_start``)."""
    if not model_run_uri:
        return {}
    path = Path(model_run_uri) / HISTORY_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def worse_heads(summary: results.RunSummary) -> list[str]:
    """Heads whose headline metric is worse than the baseline model's, with both values."""
    if not summary.evaluation_uri:
        return []
    found = inspection.inspect_evaluation(summary.evaluation_uri, summary)
    return [
        f"{row['head']} {row['metric']} {row['baseline']:.4f} -> {row['candidate']:.4f}"
        + (
            " (BEYOND blessing's tolerance)"
            if worse_by(row["metric"], row["candidate"], row["baseline"])
            > TOLERANCE[row["metric"]] + 1e-9
            else " (within blessing's tolerance)"
        )
        for row in found.headline()
        if row["verdict"] == "worse"
    ]


def run_span(
    logs: Path, output_dir: Path, span: int, mode: str, window: int, args: argparse.Namespace
) -> RunResult:
    """One `mtrec run` at ``span`` into ``output_dir``, then read back from its MLMD."""
    command = [
        sys.executable,
        *("-m", "mtrec", "run", "--logs", str(logs), "--span", str(span)),
        *("--window", str(window), "--output-dir", str(output_dir)),
        *(["--cold-start"] if mode == "cold" else []),
        *(["--epochs", str(args.epochs)] if args.epochs else []),
        *args.extra_words,
    ]
    before = latest_summary(output_dir)
    serving = output_dir / "serving_model"
    result = RunResult(
        span, mode, 0, 0.0, load_1m=os.getloadavg()[0], serving_before=newest_version(serving)
    )
    prefix = output_dir.parent / "runs" / f"span-{span:04d}-{mode}"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    print(f"  span {span} {mode}: load {result.load_1m:.2f}; {shlex.join(command)}", flush=True)
    started = time.perf_counter()
    with open(f"{prefix}.out", "wb") as out, open(f"{prefix}.err", "wb") as err:
        result.code = subprocess.run(command, stdout=out, stderr=err, check=False).returncode
    result.wall_s = time.perf_counter() - started
    result.serving_after = newest_version(serving)
    log_text = Path(f"{prefix}.err").read_text(errors="replace")
    if result.code != 0:
        lines = log_text.strip().splitlines()
        result.error = lines[-1][:300] if lines else ""
    summary = latest_summary(output_dir)
    if summary is None or (before is not None and summary.run_id == before.run_id):
        print(f"    no new run in MLMD (exit {result.code}): {result.error}", flush=True)
        return result
    read_back(result, summary, log_text)
    print(
        f"    exit {result.code}, {result.wall_s:.0f} s, Trainer {fmt(result.trainer_s, '.1f')} s"
        f" (fit {fmt(result.fit_s, '.1f')} s, {fmt(result.epochs, 'd')} epochs, warm-started "
        f"{result.warm_started}), blessed {result.blessed}, pushed {result.pushed_version or '-'}"
        + (f", failed in {result.failed_node}: {result.error}" if result.code else ""),
        flush=True,
    )
    return result


def read_back(result: RunResult, summary: results.RunSummary, log_text: str) -> None:
    """Fill ``result`` from the run's MLMD summary, the Trainer's history.json and the run's
    stderr (the per-epoch seconds)."""
    result.trainer_s = next(
        (c.seconds for c in summary.components if c.node == "Trainer" and c.state == "executed"),
        None,
    )
    result.failed_node = next((c.node for c in summary.components if c.state == "failed"), None)
    result.blessed = summary.blessed
    result.pushed_version = summary.pushed_version
    result.metrics = {
        head: summary.metrics[head][name]
        for head, name in HEADLINE.items()
        if name in summary.metrics.get(head, {})
    }
    # Issue 15's RunSummary fields (spans trained on, warm start), where this version has them.
    result.trained_spans = getattr(summary, "trained_spans", None)
    history = read_history(summary.model_run_uri) if result.trainer_s is not None else {}
    result.fit_s = fit_seconds(log_text) if result.trainer_s is not None else None
    losses = history.get("loss")
    result.epochs = history.get("epochs_run", len(losses) if isinstance(losses, list) else None)
    result.valid = kept_epoch_metrics(history)
    warm = history.get("warm_start")
    if isinstance(warm, dict):
        result.warm_started = bool(warm.get("warm_started"))
    else:
        result.warm_started = getattr(summary, "warm_start", None)
    if result.pushed_version:
        result.worse_than_replaced = worse_heads(summary)


def finished_run_at(output_dir: Path, span: int) -> results.RunSummary | None:
    """--resume: the newest run in an output dir's MLMD that ingested ``span`` and ran to its
    end or to a failed node (not a window's backfill run, not one killed midway)."""
    path = metadata_path(output_dir)
    if not os.path.exists(path):
        return None
    store = results.open_store(path)
    try:
        # Private, but the one way to summarise a run other than the latest.
        runs = results._pipeline_runs(store, DEFAULT_PIPELINE_NAME)
    except LookupError:
        return None
    for run in reversed(runs):
        summary = results._summarise(store, run)
        backfill = not any(c.node in ("AnomaliesGate", "Transform") for c in summary.components)
        if summary.span != span or backfill or summary.unfinished_node:
            continue
        if summary.evaluation_uri:
            summary.metrics, summary.failed_thresholds = results.read_evaluation(
                summary.evaluation_uri
            )
        return summary
    return None


def resumed_run(output_dir: Path, span: int, mode: str) -> RunResult | None:
    """--resume: the run at ``span`` an earlier invocation finished, read back; None if none."""
    summary = finished_run_at(output_dir, span)
    if summary is None:
        return None
    failed = summary.failed_node
    result = RunResult(span, mode, 2 if failed else 0, 0.0, resumed=True)
    err = output_dir.parent / "runs" / f"span-{span:04d}-{mode}.err"
    log_text = err.read_text(errors="replace") if err.exists() else ""
    if failed:
        lines = log_text.strip().splitlines()
        result.error = lines[-1][:300] if lines else ""
    read_back(result, summary, log_text)
    print(
        f"  span {span} {mode}: read back (--resume): Trainer {fmt(result.trainer_s, '.1f')} s"
        f" (fit {fmt(result.fit_s, '.1f')} s, {fmt(result.epochs, 'd')} epochs, warm-started "
        f"{result.warm_started}), blessed {result.blessed}, pushed {result.pushed_version or '-'}"
        + (f", failed in {failed}" if failed else ""),
        flush=True,
    )
    return result


def run_data_set(name: str, logs: Path, work: Path, args: argparse.Namespace) -> DataSetRun:
    """The warm-up span, then every measured span, warm then cold, one after the other."""
    warm_up, measured = choose_spans(list(spans.find_spans(logs)), args.window, args.spans)
    if len(measured) < args.spans:
        print(f"[{name}] only {len(measured)} spans after the window of {args.window}")
    bad = None
    if args.bad_span is not None:
        if args.bad_span not in measured[:-1]:
            sys.exit(
                f"--bad-span must be a measured span with one after it: one of {measured[:-1]}"
            )
        bad = args.bad_span
        written = inject_bad_rows(spans.find_spans(logs)[bad], args.bad_kind)
        print(f"[{name}] bad data ({args.bad_kind}) in {written}", flush=True)
    if not args.resume:
        for mode in MODES:
            shutil.rmtree(work / mode, ignore_errors=True)  # Fresh: no model, no cache.
    runs = []
    for span in ([warm_up] if warm_up is not None else []) + measured:
        for mode in MODES:
            done = resumed_run(work / mode, span, mode) if args.resume else None
            runs.append(done or run_span(logs, work / mode, span, mode, args.window, args))
    return DataSetRun(name, str(logs), args.window, warm_up, measured, bad, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=DATA_SETS, help="one data set (default: both)")
    parser.add_argument("--spans", type=int, default=6, help="spans measured (default 6)")
    parser.add_argument("--window", type=int, default=4, help="spans trained on (default 4)")
    parser.add_argument("--epochs", type=int, help="`mtrec run --epochs` (default: its own)")
    parser.add_argument(
        "--synthetic-rows", type=row_count, default=20_000, help="rows per synthetic span"
    )
    parser.add_argument("--drift", type=float, default=1.0, help="synthetic drift by the end")
    parser.add_argument("--movielens-dir", help="MovieLens-100K (default: fetched, cached)")
    parser.add_argument("--bad-span", type=int, help="inject bad data into this span")
    parser.add_argument("--bad-kind", choices=BAD_KINDS, default="rating")
    parser.add_argument("--workdir", default="/tmp/mtrec-continuous", help="logs and outputs")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep --workdir's logs and output dirs; read back every run an earlier "
        "invocation finished (same arguments) and run only the others",
    )
    parser.add_argument(
        "--extra", action="append", default=[], help="more `mtrec run` args, shell-quoted"
    )
    args = parser.parse_args()
    if args.spans < 1 or args.window < 1:
        parser.error("--spans and --window must be at least 1")
    args.extra_words = [word for extra in args.extra for word in shlex.split(extra)]
    workdir = Path(args.workdir)
    load_at_start = os.getloadavg()[0]
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print(
        f"continuous benchmark at {git_commit()}, {os.cpu_count()} cores, "
        f"1-min load at start {load_at_start:.2f}"
    )
    print(f"mtrec from {Path(spans.__file__).parents[2]}")
    if args.extra_words:
        print(f"every `mtrec run` also gets: {shlex.join(args.extra_words)}")
    done = []
    for name in (args.only,) if args.only else DATA_SETS:
        work = workdir / name
        if args.resume and (work / "logs").is_dir():
            logs = work / "logs"  # As the earlier invocation wrote it (its runs read it).
            print(f"[{name}] --resume: logs and output dirs kept in {work}", flush=True)
        elif name == "movielens":
            shutil.rmtree(work / "logs", ignore_errors=True)
            logs = write_movielens(work, args.movielens_dir)
        else:
            shutil.rmtree(work / "logs", ignore_errors=True)
            count = args.window + args.spans
            logs = write_synthetic(work, args.synthetic_rows, count, args.drift)
        done.append(run_data_set(name, logs, work, args))
    load_at_end = os.getloadavg()[0]
    for data in done:
        print(
            f"\n{data.name}: window {data.window}, warm-up span {fmt(data.warm_up, 'd')}, "
            f"measured spans {data.measured[0]}-{data.measured[-1]}"
            + (f" (* bad data: {args.bad_kind})" if data.bad_span is not None else "")
            + "; (w): warm-started"
        )
        print(format_table(data))
        print(format_valid_table(data))
        print("\n".join(summary_lines(data)))
    loads = [r.load_1m for d in done for r in d.runs if r.load_1m is not None]
    resumed = [f"{d.name} {r.span} {r.mode}" for d in done for r in d.runs if r.resumed]
    if resumed:
        print(f"\nread back from an earlier invocation (--resume): {', '.join(resumed)}")
    print(
        f"\n1-min load average: {load_at_start:.2f} at start, {load_at_end:.2f} at end"
        + (
            f"; as each run started: median {statistics.median(loads):.2f}, "
            f"min {min(loads):.2f}, max {max(loads):.2f}"
            if loads
            else ""
        )
    )
    if args.json:
        figures = {
            "started": started,
            "commit": git_commit(),
            "command": shlex.join(sys.argv),
            "cores": os.cpu_count(),
            "load_1m": [load_at_start, load_at_end],
            "data_sets": [dataclasses.asdict(d) for d in done],
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
