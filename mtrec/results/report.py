"""``mtrec report``: one self-contained HTML page (plots embedded as PNG data URIs) with the
metrics per head and slice, calibration, rating errors, the baseline comparison, data
statistics and anomalies, the training curves per head, with two or more runs each head's
headline metric across runs and, given request logs, their distributions against training's.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mtrec import names as F
from mtrec.files import staged_file
from mtrec.results.inspection import (
    HISTORY_HEADER,
    OVERALL,
    SHORT_NAMES,
    Inspection,
    baseline_comparison,
    history_cells,
)
from mtrec.results.skew import Measurement, SkewCheck, statistics_of
from mtrec.results.store import HistoryRow

CALIBRATED_HEADS = F.BINARY_HEADS
MAX_ERROR_EXAMPLES = 50_000  # Rated eval examples scored for the error histogram.
STAT_SPLITS = (F.TRAIN, F.EVAL)
HISTORY_TITLE = "Headline metrics across runs"
MIN_HISTORY_RUNS = 2  # One run has no history to plot.
MAX_HISTORY_TICKS = 12  # More runs label every second (third, ...) one.
# Points of the history plot: blessed runs in green, the others in red.
BLESSED_STYLE = {"color": "#2e7d32", "marker": "o", "s": 40, "label": "blessed"}
NOT_BLESSED_STYLE = {"color": "#c62828", "marker": "x", "s": 50, "label": "not blessed"}
SKEW_TITLE = "Serving vs training"
MAX_CATEGORIES = 12  # Values drawn per categorical feature: the most frequent on either side.
TRAINING_STYLE = {"color": "#1565c0", "alpha": 0.55, "label": "training"}
SERVING_STYLE = {"color": "#ef6c00", "alpha": 0.55, "label": "serving"}

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em;
       margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
table.text td, table.text th { text-align: left; } summary { cursor: pointer; color: #1565c0; }
tr.flagged td { background: #fde8e8; } tr.overall td { font-weight: bold; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 4px; color: white;
         font-weight: bold; } .ok { background: #2e7d32; } .bad { background: #c62828; }
.skipped { color: #888; } .failed { color: #c62828; font-weight: bold; }
.passed { color: #2e7d32; } .note { color: #666; font-size: 13px; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
figure.drift { display: inline-block; width: 49%; margin: 0; vertical-align: top; }
"""
# Lets a headless browser (and a person with devtools) confirm that the page is whole:
# every image decoded, no script error.
CHECK_SCRIPT = """
window.mtrecErrors = [];
window.addEventListener('error', function (e) { window.mtrecErrors.push(String(e.message)); });
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images', String(images.length));
  document.body.setAttribute('data-images-loaded', String(ok.length));
  document.body.setAttribute('data-errors', String(window.mtrecErrors.length));
});
"""


# ----------------------------------------------------------------------------- page


def write_report(
    inspection: Inspection,
    path: str | os.PathLike,
    history: Sequence[HistoryRow] = (),
    skew: SkewCheck | None = None,
) -> Path:
    """Render the report and write it atomically to ``path``."""
    page = render(inspection, history, skew)
    with staged_file(path) as staging:
        staging.write_text(page, encoding="utf-8")
    return Path(path)


def render(
    inspection: Inspection, history: Sequence[HistoryRow] = (), skew: SkewCheck | None = None
) -> str:
    """The whole page as one HTML string; ``history`` (the pipeline's runs, oldest first)
    adds a section when it has two or more, ``skew`` (a request log's check) another."""
    run = inspection.run
    sections = [
        ("Metrics per head and slice", _metrics_html(inspection)),
        ("Headline metric per slice", _section_or_note(lambda: _slice_charts(inspection))),
        ("Calibration", _section_or_note(lambda: _calibration_html(inspection))),
        ("Rating error distribution", _section_or_note(lambda: _rating_errors_html(run))),
        ("Candidate vs baseline", _baseline_html(inspection)),
    ]
    if len(history) >= MIN_HISTORY_RUNS:
        sections.append((HISTORY_TITLE, _history_html(history)))
    sections += [
        ("Data: statistics and anomalies", _section_or_note(lambda: _data_html(run))),
    ]
    if skew is not None:
        sections.append((SKEW_TITLE, _skew_html(skew)))
    sections += [
        ("Training curves", _section_or_note(lambda: _training_html(run))),
        ("Thresholds", _thresholds_html(inspection)),
    ]
    body = [f"<h1>mtrec evaluation report</h1>{_summary_html(inspection)}"]
    body += [f"<h2>{html.escape(title)}</h2>\n{content}" for title, content in sections]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>mtrec evaluation report</title>"
        f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _section_or_note(build: Callable[[], str]) -> str:
    """A section that needs files the evaluation may not have says so instead of failing."""
    try:
        return build()
    except _UnavailableError as missing:
        return f"<p class='note'>Not available: {html.escape(str(missing))}</p>"


class _UnavailableError(Exception):
    """A report section's inputs are missing (e.g. only an Evaluator output was given)."""


def _summary_html(inspection: Inspection) -> str:
    run = inspection.run
    badge = (
        "<span class='badge ok'>BLESSED</span>"
        if inspection.blessed
        else "<span class='badge bad'>NOT BLESSED</span>"
    )
    rows = [("Blessing", badge)]
    if run is not None:
        rows += [
            ("Pipeline run", html.escape(run.run_id)),
            ("Model", html.escape(run.model_uri or "?")),
            (
                "Pushed",
                html.escape(
                    f"version {run.pushed_version} to {run.pushed_to}"
                    if run.pushed_to
                    else "not pushed"
                ),
            ),
        ]
    rows.append(
        (
            "Baseline",
            html.escape(
                (run.baseline_model_uri if run and run.baseline_model_uri else "in evaluation")
                if inspection.has_baseline
                else "none (no earlier blessed model)"
            ),
        )
    )
    rows.append(("Evaluation", html.escape(inspection.evaluation_uri)))
    if run is not None and (run.data_fingerprint or run.baseline_data_fingerprint):
        data = f"candidate {run.data_fingerprint or 'unknown'}"
        if inspection.has_baseline:
            data += f", baseline {run.baseline_data_fingerprint or 'unknown'}"
        rows.append(("Data fingerprint", html.escape(data)))
    warning = inspection.data_warning
    return _table(["", ""], rows, show_header=False, css_class="text") + (
        f"<p class='failed'>{html.escape(warning)}</p>" if warning else ""
    )


def _table(
    header: list[str],
    rows: Iterable[Iterable[Any]],
    show_header: bool = True,
    row_classes: list[str] | None = None,
    css_class: str = "",
) -> str:
    """An HTML table; cells are already-escaped HTML."""
    head = (
        "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
        if show_header
        else ""
    )
    body = []
    for index, row in enumerate(rows):
        css = f" class='{row_classes[index]}'" if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table class='{css_class}'>{head}{''.join(body)}</table>"


def _number(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _thresholds_html(inspection: Inspection) -> str:
    """Failed thresholds and the overall ones up front; the rest folded away."""
    checks = sorted(
        inspection.thresholds,
        key=lambda c: (c.status != "failed", c.head, c.slice != OVERALL, c.slice),
    )
    header = ["status", "head", "metric", "slice", "kind", "value", "threshold"]

    def rows(selected: list) -> list:
        return [
            (
                f"<span class='{c.status}'>{c.status}</span>",
                c.head,
                SHORT_NAMES[c.metric],
                html.escape(c.slice),
                c.kind,
                _number(c.value, signed=c.kind == "change"),
                html.escape(c.bound),
            )
            for c in selected
        ]

    shown = [c for c in checks if c.status == "failed" or c.slice == OVERALL]
    count = {
        status: sum(c.status == status for c in checks)
        for status in ("passed", "failed", "skipped")
    }
    return (
        f"<p>{count['passed']} passed, {count['failed']} failed, {count['skipped']} "
        "skipped. Failed thresholds and the overall ones:</p>"
        + _table(header, rows(shown))
        + f"<details><summary>All {len(checks)} thresholds</summary>"
        + _table(header, rows(checks))
        + "</details>"
    )


def _metrics_html(inspection: Inspection) -> str:
    """One row per slice, every head side by side; flagged cells in red."""
    header = ["slice", "examples", "rated"]
    for head in F.HEADS:
        header += [f"{head} {SHORT_NAMES[n]}" for n in F.HEAD_METRICS[head]]
        if inspection.has_baseline:
            header.append(f"{head} Δ{SHORT_NAMES[F.HEAD_METRICS[head][0]]}")
    flagged = {(f.head, f.slice) for f in inspection.flags}
    rows, classes = [], []
    for row in inspection.slices:
        if not row.counts[F.CLICK] and not row.counts[F.RATING]:
            continue
        cells = [
            html.escape(row.slice),
            f"{row.counts[F.CLICK]:,.0f}",
            f"{row.counts[F.RATING]:,.0f}",
        ]
        for head in F.HEADS:
            names = F.HEAD_METRICS[head]
            values = row.candidate.get(head, {}) if row.counts[head] else {}
            for index, name in enumerate(names):
                text = _number(values.get(name))
                if index == 0 and (head, row.slice) in flagged:
                    text = f"<span class='failed'>{text}</span>"
                cells.append(text)
            if inspection.has_baseline:
                base = row.baseline.get(head, {}).get(names[0])
                cells.append(
                    _number(
                        None
                        if base is None or not values
                        else values.get(names[0], math.nan) - base,
                        True,
                    )
                )
        rows.append(cells)
        classes.append("overall" if row.slice == OVERALL else "")
    note = (
        "<p class='note'>Rating metrics count rated examples only. Red: much worse than "
        "overall (AUC more than the margin below, or RMSE more than the ratio above, on "
        "a slice large enough to judge).</p>"
    )
    flags = (
        f"<details><summary>{len(inspection.flags)} flagged slice metrics</summary><ul>"
        + "".join(f"<li>{html.escape(f.describe())}</li>" for f in inspection.flags)
        + "</ul></details>"
        if inspection.flags
        else "<p class='note'>No slice is much worse than overall.</p>"
    )
    return _table(header, rows, row_classes=classes) + note + flags


def _baseline_html(inspection: Inspection) -> str:
    if not inspection.has_baseline:
        return (
            "<p class='note'>This evaluation has no baseline: the candidate was the "
            "first model to be evaluated, so change thresholds were skipped.</p>"
        )
    rows = [
        (head, SHORT_NAMES[name], _number(old), _number(new), _number(new - old, True), verdict)
        for head, name, old, new, verdict in baseline_comparison(inspection)
    ]
    return _table(["head", "metric", "baseline", "candidate", "delta", ""], rows)


# ----------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # No display: render to PNG in memory.
    import matplotlib.pyplot as plt

    return plt


def _image(figure: Any, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _slice_charts(inspection: Inspection) -> str:
    images = []
    for head in F.HEADS:
        name = SHORT_NAMES[F.HEAD_METRICS[head][0]]
        images.append(_image(slice_chart_figure(inspection, head), f"{head} {name} per slice"))
    return "\n".join(images)


def slice_chart_figure(inspection: Inspection, head: str) -> Any:
    """The matplotlib figure of ``head``'s headline metric per slice: one bar chart per
    slice feature. Bar lengths are values, so the value axis starts at zero (a zoomed axis
    would make a difference of hundredths look like a factor); the caller closes it."""
    plt = _pyplot()
    features = [f for f in F.SLICE_FEATURES if any(s.feature == f for s in inspection.slices)]
    if not features:
        raise _UnavailableError("the evaluation has no per-slice metrics")
    name = F.HEAD_METRICS[head][0]
    overall = inspection.overall.candidate.get(head, {}).get(name)
    columns = 3
    rows = math.ceil(len(features) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(13, 3.6 * rows), squeeze=False)
    for index, feature in enumerate(features):
        axis = axes[index // columns][index % columns]
        slices = [
            s
            for s in inspection.slices
            if s.feature == feature and name in s.candidate.get(head, {}) and s.counts[head]
        ]
        labels = [s.value for s in slices]
        values = [s.candidate[head][name] for s in slices]
        colors = [
            "#c62828"
            if any(f.head == head and f.slice == s.slice for f in inspection.flags)
            else "#1565c0"
            for s in slices
        ]
        if not values:
            axis.axis("off")
            continue
        bars = axis.barh(labels, values, color=colors)
        axis.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)  # Small differences, in figures.
        reference = [] if overall is None else [overall]
        finite = [v for v in (*values, *reference) if math.isfinite(v)]
        low, high = min([0.0, *finite]), max([0.0, *finite])
        axis.set_xlim(low, high + 0.2 * (high - low) if high > low else 1.0)  # Room for labels.
        if overall is not None:
            axis.axvline(overall, color="black", linestyle="--", linewidth=1, label="overall")
        axis.set_title(feature, fontsize=10)
        axis.tick_params(labelsize=8)
        axis.set_xlabel(SHORT_NAMES[name], fontsize=8)
    for index in range(len(features), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.suptitle(
        f"{head}: {SHORT_NAMES[name]} per slice (dashed: overall; red: flagged)", fontsize=11
    )
    figure.tight_layout()
    return figure


def history_figure(rows: Sequence[HistoryRow]) -> Any:
    """The matplotlib figure of each head's headline metric across runs (oldest first, one
    x position per run, labelled by its eval span): green dots blessed, red crosses not;
    a run without metrics (stopped, say) has its position and no point. The caller closes
    it."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(F.HEADS), figsize=(4.4 * len(F.HEADS), 3.6))
    spans = any(row.eval_span or row.span for row in rows)  # The classic pipeline: all 0.
    labels = [_history_label(index, row, spans) for index, row in enumerate(rows, 1)]
    for axis, head in zip(axes, F.HEADS, strict=True):
        name = F.HEAD_METRICS[head][0]
        shown = [(x, row) for x, row in enumerate(rows) if head in row.metrics]
        axis.plot(
            [x for x, _ in shown],
            [row.metrics[head] for _, row in shown],
            color="#888",
            linewidth=1,
            zorder=1,
        )
        for blessed, style in ((True, BLESSED_STYLE), (False, NOT_BLESSED_STYLE)):
            points = [(x, row.metrics[head]) for x, row in shown if bool(row.blessed) == blessed]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.scatter(xs, ys, zorder=2, **style)
        step = math.ceil(len(rows) / MAX_HISTORY_TICKS)  # Every run's label, up to a point.
        axis.set_xticks(range(0, len(rows), step), labels[::step], fontsize=8)
        axis.set_xlim(-0.5, len(rows) - 0.5)
        better = "higher" if F.HIGHER_IS_BETTER[name] else "lower"
        axis.set_title(f"{head} {SHORT_NAMES[name]} ({better} is better)", fontsize=10)
        axis.tick_params(axis="y", labelsize=8)
        if shown:
            axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _history_label(index: int, row: HistoryRow, spans: bool) -> str:
    """'run 2' and, in a pipeline with spans, the span evaluated on (or ingested, if the
    run stopped first)."""
    label = f"run {index}"
    if spans and row.eval_span is not None:
        label += f"\neval span {row.eval_span}"
    elif spans and row.span is not None:
        label += f"\nspan {row.span}"
    if row.failed_node or row.unfinished_node:
        label += "\nstopped" if row.failed_node else "\nunfinished"
    return label


def _history_html(rows: Sequence[HistoryRow]) -> str:
    """The plot, and the same runs as `mtrec inspect --history` lists them."""
    note = (
        "<p class='note'>Each head's headline metric on the overall slice of the data each "
        "run was evaluated on (in continuous training, the newest span, so runs are scored "
        "on different data).</p>"
    )
    table = _table(
        list(HISTORY_HEADER),
        [[html.escape(cell) for cell in history_cells(row)] for row in rows],
        css_class="text",
    )
    return _image(history_figure(rows), "headline metrics across runs") + note + table


def calibration_points(uri: str, head: str) -> list[tuple[float, float, float]]:
    """(mean prediction, observed rate, examples) per non-empty bucket of TFMA's overall
    calibration plot for ``head``."""
    import tensorflow_model_analysis as tfma

    for plots in tfma.load_plots(uri):
        if plots.slice_key.single_slice_keys:
            continue
        for entry in plots.plot_keys_and_values:
            if entry.key.output_name != head or entry.key.model_name == tfma.BASELINE_KEY:
                continue
            points = []
            for bucket in entry.value.calibration_histogram_buckets.buckets:
                examples = bucket.num_weighted_examples.value  # Wrapped doubles.
                if examples > 0:
                    points.append(
                        (
                            bucket.total_weighted_refined_prediction.value / examples,
                            bucket.total_weighted_label.value / examples,
                            examples,
                        )
                    )
            return points
    return []


def _calibration_html(inspection: Inspection) -> str:
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(CALIBRATED_HEADS), figsize=(11, 4.6), squeeze=False)
    found = False
    for axis, head in zip(axes[0], CALIBRATED_HEADS, strict=True):
        points = calibration_points(inspection.evaluation_uri, head)
        found = found or bool(points)
        if points:
            predicted, observed, counts = zip(*points, strict=True)
            sizes = [10 + 200 * c / max(counts) for c in counts]
            axis.scatter(
                predicted,
                observed,
                s=sizes,
                alpha=0.7,
                color="#1565c0",
                label="bucket (size: examples)",
            )
        axis.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("mean predicted probability")
        axis.set_ylabel("observed rate")
        axis.set_title(f"{head} (overall)")
        axis.legend(fontsize=8, loc="upper left")
    if not found:
        plt.close(figure)
        raise _UnavailableError("the evaluation has no calibration plots")
    figure.tight_layout()
    return _image(figure, "calibration plots")


def rating_errors(run: Any) -> list[float]:
    """Prediction minus rating for rated eval examples, scored with the candidate's
    serving signature on the run's eval split."""
    import tensorflow as tf

    if run is None or not run.model_uri or not run.examples_uri:
        raise _UnavailableError("needs the run's model and eval examples (found through MLMD)")
    files = tf.io.gfile.glob(os.path.join(run.examples_uri, "Split-eval", "*"))
    if not files:
        raise _UnavailableError(f"no eval split under {run.examples_uri}")
    model = tf.saved_model.load(os.path.join(run.model_uri, "Format-Serving"))
    predict = model.signatures[F.SERVING_DEFAULT]
    parse = {F.RATING: tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
    errors: list[float] = []
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(2048)
    for batch in dataset:
        ratings = tf.io.parse_example(batch, parse)[F.RATING][:, 0].numpy()
        rated = ratings > 0
        if not rated.any():
            continue
        predicted = predict(examples=tf.boolean_mask(batch, rated))[F.RATING].numpy()
        errors.extend((predicted - ratings[rated]).tolist())
        if len(errors) >= MAX_ERROR_EXAMPLES:
            break
    if not errors:
        raise _UnavailableError("the eval split has no rated examples")
    return errors


def _rating_errors_html(run: Any) -> str:
    plt = _pyplot()
    errors = rating_errors(run)
    mean = sum(errors) / len(errors)
    rmse = math.sqrt(sum(e * e for e in errors) / len(errors))
    figure, axis = plt.subplots(figsize=(8, 3.6))
    axis.hist(errors, bins=60, color="#1565c0")
    axis.axvline(0, color="black", linewidth=1)
    axis.set_xlabel("predicted rating - true rating")
    axis.set_ylabel("eval examples")
    axis.set_title(
        f"rating error over {len(errors):,} rated eval examples "
        f"(mean {mean:+.3f}, RMSE {rmse:.3f})"
    )
    figure.tight_layout()
    return _image(figure, "rating error distribution")


def _training_html(run: Any) -> str:
    if run is None or not run.model_run_uri:
        raise _UnavailableError("needs the Trainer's ModelRun output (found through MLMD)")
    path = os.path.join(run.model_run_uri, "history.json")
    if not os.path.exists(path):
        raise _UnavailableError(f"no {path}")
    history = json.loads(Path(path).read_text())
    keys = [k for k in (f"{head}_loss" for head in F.HEADS) if k in history] or ["total_loss"]
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        epochs = range(1, len(history[key]) + 1)
        axis.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            axis.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        axis.set_title(key.replace("_", " "))
        axis.set_xlabel("epoch")
        axis.legend(fontsize=8)
    figure.tight_layout()
    note = (
        "<p class='note'>Per-head losses are epoch means (rating: MSE on rated examples; "
        "click and purchase: log loss). TensorBoard logs of the same run: "
        f"<code>tensorboard --logdir {html.escape(run.model_run_uri)}</code></p>"
    )
    return _image(figure, "training curves") + note


# ----------------------------------------------------------------------------- data


def _data_html(run: Any) -> str:
    if run is None or not run.statistics_uri:
        raise _UnavailableError("needs the run's StatisticsGen output (found through MLMD)")
    parts = []
    for split in STAT_SPLITS:
        path = os.path.join(run.statistics_uri, f"Split-{split}", "FeatureStats.pb")
        if os.path.exists(path):
            parts.append(f"<h3>{split} split</h3>" + _statistics_table(path))
    parts.append("<h3>Anomalies (ExampleValidator)</h3>" + _anomalies_html(run))
    return "\n".join(parts)


def feature_statistics(path: str) -> tuple[int, list[dict[str, Any]]]:
    """(examples, one row per feature) from a TFDV FeatureStats.pb."""
    import tensorflow_data_validation as tfdv

    stats = tfdv.load_stats_binary(path).datasets[0]
    rows = []
    for feature in stats.features:
        name = ".".join(feature.path.step) or feature.name
        kind = feature.WhichOneof("stats")
        if kind == "num_stats":
            numbers = feature.num_stats
            common = numbers.common_stats
            summary = (
                f"mean {numbers.mean:.3g}, std {numbers.std_dev:.3g}, "
                f"min {numbers.min:g}, max {numbers.max:g}"
            )
        elif kind == "string_stats":
            strings = feature.string_stats
            common = strings.common_stats
            top = ", ".join(f"{v.value} ({v.frequency:.0f})" for v in strings.top_values[:3])
            summary = f"{strings.unique} unique; top: {top}"
        else:
            continue
        total = common.num_non_missing + common.num_missing
        rows.append(
            {
                "feature": name,
                "non_missing": int(common.num_non_missing),
                "missing_pct": 100.0 * common.num_missing / total if total else 0.0,
                "summary": summary,
            }
        )
    return int(stats.num_examples), rows


def _statistics_table(path: str) -> str:
    examples, rows = feature_statistics(path)
    cells = [
        (
            html.escape(r["feature"]),
            f"{r['non_missing']:,}",
            f"{r['missing_pct']:.1f}%",
            html.escape(r["summary"]),
        )
        for r in rows
    ]
    return f"<p>{examples:,} examples</p>" + _table(
        ["feature", "present", "missing", "summary"], cells, css_class="text"
    )


def anomalies(run: Any) -> dict[str, dict[str, str]]:
    """ExampleValidator's findings per split: {split: {feature: description}}."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    found: dict[str, dict[str, str]] = {}
    if run is None or not run.anomalies_uri:
        return found
    for split_dir in sorted(Path(run.anomalies_uri).glob("Split-*")):
        path = split_dir / "SchemaDiff.pb"
        if not path.exists():
            continue
        proto = anomalies_pb2.Anomalies()
        proto.ParseFromString(path.read_bytes())
        found[split_dir.name.removeprefix("Split-")] = {
            feature: info.description or info.short_description
            for feature, info in proto.anomaly_info.items()
        }
    return found


def _anomalies_html(run: Any) -> str:
    found = anomalies(run)
    if not found:
        return "<p class='note'>No ExampleValidator output found.</p>"
    rows = [
        (split, html.escape(feature), html.escape(text))
        for split, per_feature in found.items()
        for feature, text in per_feature.items()
    ]
    if not rows:
        return f"<p class='passed'>No anomalies in {', '.join(found)} against the " "schema.</p>"
    return _table(["split", "feature", "anomaly"], rows, css_class="text")


# ----------------------------------------------------------------------------- serving


@dataclasses.dataclass(frozen=True)
class Distributions:
    """One compared feature's training and serving distributions, as drawn. Categorical:
    each value's share of the feature's values. Numeric: each histogram bucket's (low, high)
    and share of the values."""

    feature: str
    measurement: Measurement
    categorical: bool
    values: tuple[str, ...] = ()
    training: tuple[float, ...] = ()
    serving: tuple[float, ...] = ()
    training_buckets: tuple[tuple[float, float], ...] = ()
    serving_buckets: tuple[tuple[float, float], ...] = ()

    @property
    def drifted(self) -> bool:
        return self.measurement.skewed

    def title(self) -> str:
        """Feature, comparator, distance and threshold; DRIFTED when over it."""
        m = self.measurement
        value = "-" if m.value is None else f"{m.value:.4f}"
        threshold = "-" if m.threshold is None else f"{m.threshold:g}"
        mark = "DRIFTED: " if self.drifted else ""
        return f"{mark}{self.feature}: {m.comparator} {value} (threshold {threshold})"


def serving_vs_training(check: SkewCheck) -> list[Distributions]:
    """Every compared feature's distributions, the drifted ones first (one per feature: its
    drifted measurement, else its first)."""
    chosen: dict[str, Measurement] = {}
    for m in check.result.measurements:  # Skewed first, by feature.
        chosen.setdefault(m.feature, m)
    out = []
    for feature, measurement in chosen.items():
        training = statistics_of(check.training_statistics, feature)
        serving = statistics_of(check.requests.statistics, feature)
        kinds = {s.WhichOneof("stats") for s in (training, serving) if s is not None}
        if "string_stats" in kinds:
            values, train_shares, serve_shares = _top_values(training, serving)
            out.append(
                Distributions(feature, measurement, True, values, train_shares, serve_shares)
            )
        else:
            train_buckets, train_shares = _histogram(training)
            serve_buckets, serve_shares = _histogram(serving)
            out.append(
                Distributions(
                    feature,
                    measurement,
                    False,
                    training=train_shares,
                    serving=serve_shares,
                    training_buckets=train_buckets,
                    serving_buckets=serve_buckets,
                )
            )
    return out


def _value_shares(feature: Any) -> dict[str, float]:
    """Each value's share of a categorical feature's values (rank histogram, else top
    values)."""
    if feature is None or feature.WhichOneof("stats") != "string_stats":
        return {}
    strings = feature.string_stats
    counts = {b.label: b.sample_count for b in strings.rank_histogram.buckets}
    if not counts:
        counts = {v.value: v.frequency for v in strings.top_values}
    total = strings.common_stats.tot_num_values or sum(counts.values())
    return {value: count / total for value, count in counts.items()} if total else {}


def _top_values(
    training: Any, serving: Any
) -> tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]:
    """The most frequent values on either side, with their shares on each."""
    train, serve = _value_shares(training), _value_shares(serving)
    values = sorted(
        set(train) | set(serve), key=lambda v: (-max(train.get(v, 0.0), serve.get(v, 0.0)), v)
    )[:MAX_CATEGORIES]
    return (
        tuple(values),
        tuple(train.get(v, 0.0) for v in values),
        tuple(serve.get(v, 0.0) for v in values),
    )


def _histogram(feature: Any) -> tuple[tuple[tuple[float, float], ...], tuple[float, ...]]:
    """A numeric feature's buckets and each one's share of the values: TFDV's standard
    histogram, else its quantiles."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    if feature is None or feature.WhichOneof("stats") != "num_stats":
        return (), ()
    kinds = statistics_pb2.Histogram
    histograms = {h.type: h for h in feature.num_stats.histograms if h.buckets}
    histogram = histograms.get(kinds.STANDARD) or histograms.get(kinds.QUANTILES)
    if histogram is None:
        return (), ()
    total = sum(b.sample_count for b in histogram.buckets)
    if not total:
        return (), ()
    return (
        tuple((b.low_value, b.high_value) for b in histogram.buckets),
        tuple(b.sample_count / total for b in histogram.buckets),
    )


def drift_figure(drawn: Distributions) -> Any:
    """The matplotlib figure of one feature: categorical values' shares side by side, or the
    two histograms overlaid as densities (share / bucket width, so buckets of different
    widths compare; a one-value bucket is drawn 1 wide). The caller closes it."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.2, 3.3))
    if drawn.categorical:
        positions = range(len(drawn.values))
        width = 0.4
        axis.bar([x - width / 2 for x in positions], drawn.training, width, **TRAINING_STYLE)
        axis.bar([x + width / 2 for x in positions], drawn.serving, width, **SERVING_STYLE)
        axis.set_xticks(list(positions), list(drawn.values), fontsize=8, rotation=30, ha="right")
        axis.set_ylabel("share of values", fontsize=8)
        axis.set_ylim(0, max([*drawn.training, *drawn.serving, 0.0]) * 1.1 or 1.0)
    else:
        for buckets, shares, style in (
            (drawn.training_buckets, drawn.training, TRAINING_STYLE),
            (drawn.serving_buckets, drawn.serving, SERVING_STYLE),
        ):
            widths = [high - low or 1.0 for low, high in buckets]
            axis.bar(
                [low for low, _ in buckets],
                [share / w for share, w in zip(shares, widths, strict=True)],
                widths,
                align="edge",
                **style,
            )
        axis.set_ylabel("density (share per unit)", fontsize=8)
    axis.tick_params(labelsize=8)
    axis.legend(fontsize=8)
    axis.set_title(drawn.title(), fontsize=10, color="#c62828" if drawn.drifted else "black")
    figure.tight_layout()
    return figure


def _skew_html(check: SkewCheck) -> str:
    """What was compared, the measurements, then each feature's plot: drifted ones first."""
    drawn = serving_vs_training(check)
    requests = check.requests
    which = f"model version {check.version}" if check.version is not None else "the model"
    drifted = [d.feature for d in drawn if d.drifted]
    intro = (
        f"<p>{requests.requests:,} logged requests ({requests.examples:,} examples) served by "
        f"{html.escape(which)}, against the {html.escape(check.split)} statistics "
        f"<code>{html.escape(check.training.statistics_uri)}</code> (schema "
        f"<code>{html.escape(check.training.schema_uri)}</code>). "
        + (
            f"<span class='failed'>Drifted: {html.escape(', '.join(drifted))}</span> "
            f"({len(drifted)} of {len(drawn)} features compared).</p>"
            if drifted
            else f"<span class='passed'>No drift in {len(drawn)} features compared.</span></p>"
        )
    )
    if check.absent:
        intro += (
            "<p class='note'>Not in the requests, not compared: "
            f"{html.escape(', '.join(check.absent))}</p>"
        )
    rows = [
        (
            html.escape(m.feature),
            html.escape(m.comparator),
            _number(m.value),
            "-" if m.threshold is None else f"{m.threshold:g}",
            "<span class='failed'>drifted</span>" if m.skewed else "ok",
        )
        for m in check.result.measurements
    ]
    table = _table(
        ["feature", "comparator", "distance", "threshold", ""],
        rows,
        row_classes=["flagged" if m.skewed else "" for m in check.result.measurements],
    )
    note = (
        "<p class='note'>Blue: training, orange: serving. Categorical features: each of the "
        "most frequent values' share of the values (L-infinity is the largest difference in "
        "share). Numeric features: TFDV's histograms as densities (Jensen-Shannon compares "
        "them).</p>"
    )
    parts = [intro, table, note]
    for heading, group in (
        ("Drifted", [d for d in drawn if d.drifted]),
        ("Not drifted", [d for d in drawn if not d.drifted]),
    ):
        if not group:
            continue
        parts.append(f"<h3>{heading}</h3>")
        parts.extend(
            f"<figure class='drift' data-feature='{html.escape(d.feature)}' "
            f"data-drifted='{str(d.drifted).lower()}'>"
            f"{_image(drift_figure(d), d.title())}</figure>"
            for d in group
        )
    return "\n".join(parts)
