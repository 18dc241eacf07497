"""Benchmark: the whole pipeline on synthetic logs of growing size (issue 12, "Measure").

For each size it writes logs with `mtrec.data.synth` (reused when the work dir already holds
logs of the same config), runs `mtrec run --interactions LOGS --epochs 2 --no-cache` in a
fresh output directory as a user would, and samples the resident memory of the whole process
tree (the run and all its children, RSS summed, so pages shared between processes count once
per process) every 0.5 s. MLMD gives each component's wall seconds and its [start, end]
times, which attribute the tree's peak memory to components.

It prints per size and component: seconds, peak tree memory, input rows per second; between
the two largest sizes, each component's cost exponent log(t2/t1) / log(n2/n1) and the
Evaluator's marginal throughput in eval examples per second. Not a test: the 2-core machines
are shared and noisy, so it prints the 1-minute load average too.

    .venv/bin/python benchmarks/scale.py [--sizes 100k,1M,3M] [--work-dir DIR] [--json FILE]
        [--beam-arg=--direct_num_workers=2 ...] [--extra="--batch-size 2048"]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from mtrec.cli.synth import row_count
from mtrec.data import synth
from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME
from mtrec.results import store as results

SAMPLE_S = 0.5
GB = 1e9
MIN_EXPONENT_S = 1.0  # Exponents of components faster than this are noise, not cost.


@dataclasses.dataclass
class Component:
    """One component's execution in a run, with the tree's peak memory while it ran."""

    node: str
    state: str
    seconds: float
    peak_gb: float | None
    rows_per_s: float | None


@dataclasses.dataclass
class SizeRun:
    """One whole `mtrec run` at one size."""

    label: str
    rows: int
    load_1m: float
    wall_s: float
    peak_gb: float
    eval_examples: int | None
    components: list[Component]


def label_of(rows: int) -> str:
    """100000 -> '100k', 3000000 -> '3M'; other counts as digits."""
    for suffix, unit in (("M", 1_000_000), ("k", 1_000)):
        if rows % unit == 0:
            return f"{rows // unit}{suffix}"
    return str(rows)


def ensure_logs(work_dir: Path, rows: int) -> Path:
    """Synthetic logs of ``rows`` rows under the work dir, written unless already there."""
    config = synth.SynthConfig(rows=rows)
    logs = work_dir / f"logs-{label_of(rows)}"
    manifest = logs / synth.MANIFEST
    if manifest.exists() and json.loads(manifest.read_text())["config"] == dataclasses.asdict(
        config
    ):
        print(f"[{label_of(rows)}] reusing logs in {logs}", flush=True)
        return logs
    start = time.perf_counter()
    synth.write_logs(logs, config)
    print(f"[{label_of(rows)}] wrote logs in {time.perf_counter() - start:.0f} s", flush=True)
    return logs


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants, summed."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # Exited between the listing and the read.
    return total


def run_sampled(command: list[str], logs: Path) -> tuple[int, float, list[tuple[float, int]]]:
    """Run ``command`` (its output to ``logs``.out and .err) while sampling its tree's memory.
    Returns the exit code, the wall seconds and the (epoch seconds, bytes) samples."""
    samples: list[tuple[float, int]] = []
    with open(f"{logs}.out", "wb") as out, open(f"{logs}.err", "wb") as err:
        start = time.perf_counter()
        process = psutil.Popen(command, stdout=out, stderr=err)
        while process.poll() is None:
            samples.append((time.time(), tree_rss(process)))
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - start
    return process.returncode, wall, samples


def window_peak(samples: list[tuple[float, int]], start: float, end: float) -> float | None:
    """Peak bytes sampled in [start, end]; for a window shorter than the sampling interval,
    the sample nearest its middle."""
    inside = [rss for t, rss in samples if start <= t <= end]
    if inside:
        return max(inside)
    middle = (start + end) / 2
    return min(samples, key=lambda s: abs(s[0] - middle))[1] if samples else None


def component_windows(output_dir: Path) -> tuple[results.RunSummary, list[tuple[float, float]]]:
    """The latest run's summary, and each of its components' [start, end] epoch seconds."""
    from mtrec.pipeline.local_runner import metadata_path  # Imports TFX: not for --help.

    store = results.open_store(metadata_path(output_dir))
    summary = results.latest_run(store, DEFAULT_PIPELINE_NAME)
    run = store.get_context_by_type_and_name("pipeline_run", summary.run_id)
    executions = sorted(
        store.get_executions_by_context(run.id), key=lambda e: (e.create_time_since_epoch, e.id)
    )
    windows = [
        (e.create_time_since_epoch / 1000.0, e.last_update_time_since_epoch / 1000.0)
        for e in executions
    ]
    # RunSummary lists components in this same order; check rather than trust it.
    if [round(b - a, 3) for a, b in windows] != [round(c.seconds, 3) for c in summary.components]:
        sys.exit("MLMD executions do not line up with RunSummary.components")
    return summary, windows


def run_size(work_dir: Path, rows: int, run_args: list[str]) -> SizeRun:
    """Generate (or reuse) the logs and run the whole pipeline once on them."""
    label = label_of(rows)
    logs = ensure_logs(work_dir, rows)
    output_dir = work_dir / f"run-{label}"
    shutil.rmtree(output_dir, ignore_errors=True)  # Fresh: no cache, no baseline model.
    command = [
        sys.executable,
        *("-m", "mtrec", "run", "--output-dir", str(output_dir)),
        # The shards by glob: given the folder, `mtrec run` reads the manifest as data too.
        *("--interactions", str(logs / "part-*.csv"), "--epochs", "2", "--no-cache"),
        *run_args,
    ]
    load = os.getloadavg()[0]
    print(f"[{label}] load {load:.2f}; {shlex.join(command)}", flush=True)
    logs_prefix = work_dir / f"run-{label}"
    code, wall, samples = run_sampled(command, logs_prefix)
    if code != 0:
        tail = Path(f"{logs_prefix}.err").read_text(errors="replace")[-4000:]
        sys.exit(f"[{label}] mtrec run failed ({code}); stderr tail ({logs_prefix}.err):\n{tail}")
    summary, windows = component_windows(output_dir)
    components = [
        Component(
            c.node,
            c.state,
            c.seconds,
            None if (top := window_peak(samples, start, end)) is None else top / GB,
            rows / c.seconds if c.seconds > 0 else None,
        )
        for c, (start, end) in zip(summary.components, windows, strict=True)
    ]
    eval_examples = summary.split_counts.get("eval", {}).get("examples")
    peak = max((rss for _, rss in samples), default=0) / GB
    print(f"[{label}] done in {wall:.0f} s, peak {peak:.2f} GB", flush=True)
    return SizeRun(label, rows, load, wall, peak, eval_examples, components)


def exponent(t1: float, t2: float, n1: int, n2: int) -> float | None:
    """log(t2/t1) / log(n2/n1), or None where either time is too short to mean anything."""
    if min(t1, t2) < MIN_EXPONENT_S or n1 == n2:
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or '-' where there is none."""
    return "-" if value is None or math.isnan(value) else format(value, spec)


def cells(seconds: float | None, peak_gb: float | None, rate: float | None) -> str:
    """A size's three columns: seconds, peak GB, rows per second (none for a component that
    took under a second: its rate says nothing, and would not fit its column)."""
    if seconds is None or seconds < MIN_EXPONENT_S:
        rate = None
    return f"{fmt(seconds, '.1f'):>10}{fmt(peak_gb, '.2f'):>7}{fmt(rate, ',.0f'):>10}"


def report(runs: list[SizeRun], load_at_start: float) -> dict[str, Any]:
    """Print the tables; return the same figures for --json."""
    last, prev = runs[-1], runs[-2] if len(runs) > 1 else None
    nodes = list(dict.fromkeys(c.node for r in runs for c in r.components))
    by_node = [{c.node: c for c in r.components} for r in runs]
    exponents: dict[str, float | None] = {}
    header = f"{'component':<28}" + "".join(
        f"{r.label + ' s':>10}{'GB':>7}{'rows/s':>10}" for r in runs
    )
    if prev:
        header += f"{'exp ' + prev.label + '->' + last.label:>16}"
    print(f"\nscale benchmark, {os.cpu_count()} cores, 1-min load at start {load_at_start:.2f}")
    print(header)
    for node in nodes:
        line = f"{node:<28}"
        for found in by_node:
            c = found.get(node)
            line += cells(c.seconds, c.peak_gb, c.rows_per_s) if c else cells(None, None, None)
        if prev:
            a, b = by_node[-2].get(node), by_node[-1].get(node)
            exponents[node] = (
                exponent(a.seconds, b.seconds, prev.rows, last.rows) if a and b else None
            )
            line += f"{fmt(exponents[node], '.2f'):>16}"
        print(line)
    line = f"{'TOTAL wall (whole run)':<28}"
    for r in runs:
        line += cells(r.wall_s, r.peak_gb, r.rows / r.wall_s)
    if prev:
        exponents["TOTAL"] = exponent(prev.wall_s, last.wall_s, prev.rows, last.rows)
        line += f"{fmt(exponents['TOTAL'], '.2f'):>16}"
    print(line)
    print(
        f"(exponents need {MIN_EXPONENT_S:.0f} s or more at both sizes; GB = peak RSS of the tree)"
    )
    for r in runs:
        print(
            f"{r.label}: {r.rows:,} rows, wall {r.wall_s:.1f} s, peak {r.peak_gb:.2f} GB, "
            f"eval examples {fmt(r.eval_examples, ',')}, 1-min load at its start {r.load_1m:.2f}"
        )
    marginal = None
    if prev:
        a, b = by_node[-2].get("Evaluator"), by_node[-1].get("Evaluator")
        if a and b and prev.eval_examples is not None and last.eval_examples is not None:
            if b.seconds > a.seconds:
                marginal = (last.eval_examples - prev.eval_examples) / (b.seconds - a.seconds)
        print(
            f"Evaluator marginal throughput {prev.label}->{last.label}: "
            + (
                f"{marginal:,.0f} eval examples/s"
                if marginal is not None
                else "- (its time did not grow: fixed cost and noise dominate)"
            )
        )
        print(f"peak memory {last.label}/{prev.label}: {last.peak_gb / prev.peak_gb:.2f}x")
    return {
        "cores": os.cpu_count(),
        "load_1m_at_start": load_at_start,
        "sizes": [dataclasses.asdict(r) for r in runs],
        "exponents": exponents,
        "evaluator_marginal_eval_examples_per_s": marginal,
    }


def git_commit() -> str:
    """HEAD's short hash, with '+dirty' when tracked files differ from it."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True)
        return done.stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "-uno", "-s") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1M,3M", help="row counts, e.g. 100k,1M,3M")
    parser.add_argument("--work-dir", default="/tmp/mtrec-scale", help="logs and run outputs")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--beam-arg", action="append", default=[], help="passed to `mtrec run`, repeatable"
    )
    parser.add_argument(
        "--extra", action="append", default=[], help="more `mtrec run` args, shell-quoted"
    )
    args = parser.parse_args()
    try:
        sizes = sorted({row_count(s) for s in args.sizes.split(",") if s.strip()})
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    run_args = [f"--beam-arg={a}" for a in args.beam_arg]
    run_args += [word for extra in args.extra for word in shlex.split(extra)]
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)

    load_at_start = os.getloadavg()[0]
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    runs = [run_size(work_dir, rows, run_args) for rows in sizes]
    figures = report(runs, load_at_start)
    if args.json:
        figures |= {"started": started, "commit": git_commit(), "command": shlex.join(sys.argv)}
        Path(args.json).write_text(json.dumps(figures, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
