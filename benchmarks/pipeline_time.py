"""Benchmark: the full pipeline on MovieLens-100K, cold and then cached.

Runs the real CLI twice in a fresh output directory and prints each component's wall time
(from MLMD) for both runs, the total wall time of each run, and the eval metrics per head.
Not a test: timings on a shared 2-core machine are noisy.

    .venv/bin/python benchmarks/pipeline_time.py [--output-dir DIR] [-- extra mtrec run args]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def timed_run(output_dir: Path, extra: list[str]) -> tuple[float, Any]:
    """One `mtrec run`, timed end to end as a user would see it; and its RunSummary."""
    # Here, not at the top: they import TensorFlow, which --help need not wait for.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME
    from mtrec.pipeline.local_runner import metadata_path
    from mtrec.results import store as results

    command = [sys.executable, "-m", "mtrec", "run", "--output-dir", str(output_dir), *extra]
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        sys.exit(f"mtrec run failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    store = results.open_store(metadata_path(output_dir))
    return seconds, results.latest_run(store, DEFAULT_PIPELINE_NAME)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", help="default: a new temporary directory")
    parser.add_argument("extra", nargs="*", help="extra arguments for `mtrec run`")
    args = parser.parse_args()
    output_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="mtrec-bench-"))
    cold_s, cold = timed_run(output_dir, args.extra)
    cached_s, cached = timed_run(output_dir, args.extra)

    cached_by_node = {c.node: c for c in cached.components}
    print(f"MovieLens-100K pipeline benchmark ({os.cpu_count()} cores), output {output_dir}")
    print(f"{'component':<28}{'cold s':>9}{'cached s':>10}  cached-run state")
    for component in cold.components:
        again = cached_by_node.get(component.node)
        print(
            f"{component.node:<28}{component.seconds:>9.1f}"
            f"{(again.seconds if again else float('nan')):>10.1f}  "
            f"{again.state if again else '-'}"
        )
    print(f"{'TOTAL wall (incl. start-up)':<28}{cold_s:>9.1f}{cached_s:>10.1f}")
    print(f"cached/cold wall ratio: {cached_s / cold_s:.2f}")
    print(f"blessed: {cold.blessed}; pushed to: {cold.pushed_to}")
    for line in cold.failed_thresholds:
        print(f"  failed threshold: {line}")
    print("eval metrics (overall slice, cold run):")
    for head, values in cold.metrics.items():
        print(f"  {head:<9}" + "  ".join(f"{k}={v:.4f}" for k, v in values.items()))


if __name__ == "__main__":
    main()
