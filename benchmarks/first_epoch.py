"""The Trainer's fixed cost: tracing the train and test steps, with and without AutoGraph.

Builds the default model on a batch shaped like Transform's output and times the first call
of Keras's train and test functions (trace and one step), for the steps as shipped
(``do_not_convert``: no AutoGraph rewriting) and for the same steps converted by AutoGraph,
as they were before. Each variant runs in its own process, alternating, so neither inherits
the other's traced functions; the ratio of medians is the figure to read.

    .venv/bin/python benchmarks/first_epoch.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(convert: bool) -> dict[str, float]:
    """Seconds for the first train call and the first test call, in this process."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    from mtrec.models.hparams import ModelConfig
    from mtrec.models.model import MultiTaskRecommender
    from mtrec.models.training import build_model
    from tests.support.training import CARDS, transformed_batch

    dataset = tf.data.Dataset.from_tensor_slices(transformed_batch(256, 0)).batch(256).repeat()
    model = build_model(CARDS, ModelConfig(), None)
    if convert:  # The steps as they were: AutoGraph rewrites them and all they call.
        for name in ("train_step", "test_step"):
            step = getattr(MultiTaskRecommender, name).__wrapped__
            setattr(model, name, types.MethodType(step, model))
    start = time.perf_counter()
    model.make_train_function()(iter(dataset))
    train = time.perf_counter() - start
    start = time.perf_counter()
    model.make_test_function()(iter(dataset))
    return {"train": train, "test": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("converted", "shipped"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "converted")))
        return
    load = os.getloadavg()[0]
    found: dict[str, list[dict[str, float]]] = {"converted": [], "shipped": []}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for _ in range(args.repeats):
        for variant in found:
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            ).stdout
            found[variant].append(json.loads(out.strip().splitlines()[-1]))
    print(f"1-min load average: {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(
        f"{'step':<6}{'AutoGraph s':>13}{'shipped s':>11}{'ratio':>8}   (median of {args.repeats})"
    )
    for step in ("train", "test"):
        before = statistics.median(r[step] for r in found["converted"])
        after = statistics.median(r[step] for r in found["shipped"])
        print(f"{step:<6}{before:>13.2f}{after:>11.2f}{before / after:>7.1f}x")


if __name__ == "__main__":
    main()
