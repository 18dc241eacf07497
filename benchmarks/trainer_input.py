"""The Trainer's input: passes over Transform's training examples, mtrec's reader against
tfx_bsl's ``tf_dataset_factory``, on the output of a pipeline run.

Times full passes (read, shuffle, batch, parse; nothing trained) of both readers with the
Trainer's settings, alternating, and prints the median seconds and their ratio. Run
``make run`` first (or pass another run's ``--output-dir``).

    .venv/bin/python benchmarks/trainer_input.py [--output-dir mtrec_output] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def _latest(folder: Path) -> Path:
    """The newest execution's folder under a component output (TFX numbers them)."""
    runs = sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not runs:
        raise FileNotFoundError(f"{folder} holds no output")
    return runs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="mtrec_output", help="a pipeline run's output")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    transform = Path(args.output_dir) / "pipeline_root" / "Transform"
    if not transform.is_dir():
        sys.exit(f"trainer_input.py: error: {transform} not found; run the pipeline first")

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tensorflow_transform as tft
    from tfx_bsl.public import tfxio

    from mtrec.models.hparams import ModelConfig
    from mtrec.models.training import make_dataset

    tft_output = tft.TFTransformOutput(str(_latest(transform / "transform_graph")))
    pattern = str(_latest(transform / "transformed_examples") / "Split-train" / "*")
    config = ModelConfig()

    def factory() -> tf.data.Dataset:
        options = tfxio.TensorFlowDatasetOptions(
            batch_size=config.batch_size,
            num_epochs=1,
            shuffle=True,
            shuffle_buffer_size=config.shuffle_buffer,
            shuffle_seed=config.seed,
        )
        schema = tft_output.transformed_metadata.schema
        return tfxio.TFExampleRecord(pattern, schema=schema).TensorFlowDataset(options)

    readers = {
        "tfx_bsl tf_dataset_factory": factory,
        "mtrec read_examples": lambda: make_dataset([pattern], tft_output, config, True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    rows = 0
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, make in readers.items():
            start, rows = time.perf_counter(), 0
            for batch in make():
                rows += int(tf.shape(batch[next(iter(batch))])[0])
            seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        f"one shuffled pass over {rows:,} training examples ({pattern}), batch "
        f"{config.batch_size}, buffer {config.shuffle_buffer}, {args.repeats} repeats"
    )
    for name, values in seconds.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:28s} median {medians[name]:6.2f} s  ({runs})")
    base, ours = medians["tfx_bsl tf_dataset_factory"], medians["mtrec read_examples"]
    print(f"speed-up: {base / ours:.2f}x")
    print(f"1-min load average: {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
