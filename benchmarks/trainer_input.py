"""The Trainer's input: passes over a pipeline run's raw training examples, with the
Trainer's settings (batch, shuffle buffer, seed); nothing is trained.

Times, alternating, full passes of: tfx_bsl's ``tf_dataset_factory`` and mtrec's
``read_examples`` (read, shuffle, batch, parse); ``transformed_batches`` (the same, then
Transform's graph: what every epoch would cost without a transformed copy); and
``make_dataset``, the Trainer's own, once to write its transformed copy and once to read it
back (every epoch after). Prints the median seconds and the ratios. Run ``make run`` first
(or pass another run's ``--output-dir``).

    .venv/bin/python benchmarks/trainer_input.py [--output-dir mtrec_output] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
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
    root = Path(args.output_dir) / "pipeline_root"
    if not (root / "Transform").is_dir():
        sys.exit(f"trainer_input.py: error: {root / 'Transform'} not found; run the pipeline first")

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tensorflow_transform as tft
    from tfx_bsl.public import tfxio

    from mtrec.models.hparams import ModelConfig
    from mtrec.models.training import make_dataset, read_examples, transformed_batches

    tft_output = tft.TFTransformOutput(str(_latest(root / "Transform" / "transform_graph")))
    examples = [p for p in root.iterdir() if p.name.endswith("ExampleGen")]
    if not examples:
        sys.exit(f"trainer_input.py: error: no ExampleGen output under {root}")
    pattern = str(_latest(examples[0] / "examples") / "Split-train" / "*")
    config = ModelConfig()
    spec = tft_output.raw_feature_spec()

    def factory() -> tf.data.Dataset:
        options = tfxio.TensorFlowDatasetOptions(
            batch_size=config.batch_size,
            num_epochs=1,
            shuffle=True,
            shuffle_buffer_size=config.shuffle_buffer,
            shuffle_seed=config.seed,
        )
        schema = tft_output.raw_metadata.schema
        return tfxio.TFExampleRecord(pattern, schema=schema).TensorFlowDataset(options)

    scratch = Path(tempfile.mkdtemp(prefix="trainer-input-"))
    saved: list[tf.data.Dataset] = []

    def write_copy() -> tf.data.Dataset:
        shutil.rmtree(scratch / "train", ignore_errors=True)
        saved[:] = [make_dataset([pattern], tft_output, config, True, str(scratch / "train"))]
        return tf.data.Dataset.range(0)

    buffer, seed = config.shuffle_buffer, config.seed
    readers = {
        "tfx_bsl tf_dataset_factory": factory,
        "mtrec read_examples": lambda: read_examples(
            [pattern], spec, config.batch_size, buffer, seed
        ),
        "transformed_batches": lambda: transformed_batches(
            [pattern], tft_output, config.batch_size, buffer, seed
        ),
        "make_dataset: write the copy": write_copy,
        "make_dataset: read the copy": lambda: saved[0],
    }
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    counted: dict[str, int] = {}
    load = os.getloadavg()[0]
    try:
        for _ in range(args.repeats):
            for name, make in readers.items():
                start, rows = time.perf_counter(), 0
                for batch in make():
                    rows += int(tf.shape(batch[next(iter(batch))])[0])
                seconds[name].append(time.perf_counter() - start)
                counted[name] = rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        f"one shuffled pass over {counted['mtrec read_examples']:,} raw training examples "
        f"({pattern}), batch {config.batch_size}, buffer {buffer}, {args.repeats} repeats"
    )
    for name, values in seconds.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:30s} median {medians[name]:6.2f} s  ({runs})")
    base, ours = medians["tfx_bsl tf_dataset_factory"], medians["mtrec read_examples"]
    print(f"read_examples speed-up over tf_dataset_factory: {base / ours:.2f}x")
    transform, copy = medians["transformed_batches"], medians["make_dataset: read the copy"]
    print(
        f"a pass over the transformed copy against transforming each pass: {transform / copy:.2f}x"
    )
    print(f"1-min load average: {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
