"""Benchmark: the ``recommend`` catalog at real size (issue 12, "A recommend catalog at real
size"). Export time, SavedModel size and ``recommend`` latency at ``--items`` items, next to
a small in-run baseline (``--baseline``), so the figures read as ratios.

Per size it builds data as the pipeline would, then trains only as much as the catalog needs:
- logs: ``mtrec.data.synth`` (``--rows-per-item`` x items rows, power-law users and items),
  plus ``coverage.csv``: one impression of every item on the first day, labelled by the
  same hidden relevance. The catalog is every item seen in training, so all of them must be
  in the training split, which the time split takes from the start;
- ``mtrec.data.build.run`` (time split) -> ``models/local_transform.analyze`` on the
  training split -> one epoch of the default ``ModelConfig`` (retrieval tower on, 100
  candidates) over the transformed training split;
- ``collect_catalog`` and ``export_model`` timed as the Trainer runs them; the same weights
  exported a second time with ``retrieval.candidates = 0``, so that the heads score the whole
  catalog (the path without the retrieval tower);
- each SavedModel: its size on disk (all, ``variables/``, ``saved_model.pb``), load time,
  and the ``recommend`` signature called in process, one user per call, k=10: p50/p99 over
  ``--calls`` calls, with no exclusion list and with ``--exclude`` items excluded;
- ``mtrec recommend`` end to end (a subprocess: import, load, score) on ``--cli-users`` users.

Not a test: the 2-core machines are shared and noisy, so it prints the load average too.

    .venv/bin/python benchmarks/catalog.py [--items 100000] [--baseline 1000] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils

from mtrec import names as F
from mtrec.data import build, synth
from mtrec.data import source as data_source
from mtrec.data.config import CURATED_SCHEMA, DataConfig
from mtrec.models import local_transform
from mtrec.models.export import export_model
from mtrec.models.hparams import ModelConfig
from mtrec.models.recommend import collect_catalog
from mtrec.models.training import cardinalities, fit

MB = 1e6
USER_INPUTS = (F.USER_ID, *F.USER_FEATURES)


def write_logs(logs: Path, items: int, rows_per_item: float, seed: int) -> synth.Catalog:
    """Synthetic logs of ``items`` items, plus one first-day impression of every item."""
    config = synth.SynthConfig(rows=max(int(items * rows_per_item), 100), items=items, seed=seed)
    synth.write_logs(logs, config)
    tables = synth.make_catalog(config)
    rng = np.random.default_rng(seed)
    users = rng.integers(0, config.n_users, items)
    every = np.arange(items)
    score = synth.relevance(tables, users, every)
    click = rng.random(items) < 1 / (1 + np.exp(-(synth.CLICK_BASE + score)))
    purchase = click & (rng.random(items) < 1 / (1 + np.exp(-(synth.PURCHASE_BASE + score))))
    user_text, item_text = tables.user_text.to_pylist(), tables.item_text.to_pylist()
    with open(logs / "coverage.csv", "w", encoding="utf-8") as out:
        out.write(",".join(synth.COLUMNS) + "\n")
        for user, item, c, p in zip(users, every, click, purchase, strict=True):
            rating = "5" if p else ""
            out.write(
                f"{user + 1},{item + 1},{rating},{int(c)},{int(p)},{config.start},"
                f"{user_text[user]},{item_text[item]}\n"
            )
    return tables


def transformed(pattern: str, output, batch_size: int) -> tf.data.Dataset:
    """The training split, parsed and transformed by the Transform graph, cached."""
    schema = text_format.Parse(Path(CURATED_SCHEMA).read_text(), schema_pb2.Schema())
    raw_spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    layer = output.transform_features_layer()
    files = sorted(tf.io.gfile.glob(pattern))
    return (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(batch_size)
        .map(lambda x: layer(tf.io.parse_example(x, raw_spec)))
        .cache()
    )


def du(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / MB
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / MB


def user_inputs(row: dict) -> dict[str, tf.Tensor]:
    """A known user's features, with no history (the signature requires the input; an
    empty one leaves the user's learned representation as it is)."""
    inputs = {
        key: tf.constant([row[key]], tf.int64 if key in (F.USER_ID, F.AGE) else tf.string)
        for key in USER_INPUTS
    }
    return {**inputs, F.HISTORY: tf.constant([""])}


def latencies(signature, users: list[dict], exclude: list[list[int]], calls: int) -> list[float]:
    """Milliseconds per ``recommend`` call, one user per call, k=10, after 5 unmeasured."""
    seconds = []
    for n in range(calls + 5):
        inputs = user_inputs(users[n % len(users)])
        start = time.perf_counter()
        out = signature(
            **inputs,
            k=tf.constant([10], tf.int64),
            exclude=tf.constant(exclude[n % len(exclude)], tf.int64),
            blend=tf.constant([], tf.float32),
        )
        _ = out["item_id"].numpy()
        if n >= 5:
            seconds.append((time.perf_counter() - start) * 1000)
    return seconds


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


@dataclasses.dataclass
class Export:
    """One SavedModel's figures."""

    variant: str
    export_s: float
    total_mb: float
    variables_mb: float
    graph_mb: float
    load_s: float
    p50_ms: float
    p99_ms: float
    p50_excl_ms: float
    p99_excl_ms: float
    cli_s: float | None = None


@dataclasses.dataclass
class Size:
    items: int
    train_rows: int
    catalog: int
    build_s: float
    transform_s: float
    train_s: float
    catalog_s: float
    exports: list[Export]


def measure_export(
    model, output, catalog, export_dir: Path, args, users: list[dict], variant: str
) -> Export:
    shutil.rmtree(export_dir, ignore_errors=True)
    start = time.perf_counter()
    export_model(model, output, str(export_dir), catalog, tuple(model.config.blend_weights))
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    loaded = tf.saved_model.load(str(export_dir))
    load_s = time.perf_counter() - start
    signature = loaded.signatures[F.RECOMMEND]
    rng = np.random.default_rng(1)
    ids = catalog.item_ids
    excludes = [
        sorted(int(i) for i in rng.choice(ids, min(args.exclude, len(ids) - 20), replace=False))
        for _ in range(8)
    ]
    # Correctness at this size: excluded items never come back, and k items do.
    out = signature(
        **user_inputs(users[0]),
        k=tf.constant([10], tf.int64),
        exclude=tf.constant(excludes[0], tf.int64),
        blend=tf.constant([], tf.float32),
    )
    top = out["item_id"].numpy().tolist()
    assert len(top) == 10 and not set(top) & set(excludes[0]), top
    plain = latencies(signature, users, [[]], args.calls)
    excluded = latencies(signature, users, excludes, args.calls)
    del loaded, signature
    gc.collect()
    return Export(
        variant=variant,
        export_s=export_s,
        total_mb=du(export_dir),
        variables_mb=du(export_dir / "variables"),
        graph_mb=du(export_dir / "saved_model.pb"),
        load_s=load_s,
        p50_ms=percentile(plain, 50),
        p99_ms=percentile(plain, 99),
        p50_excl_ms=percentile(excluded, 50),
        p99_excl_ms=percentile(excluded, 99),
    )


def run_cli(export_dir: Path, users: list[dict], work: Path, args) -> float:
    """Wall seconds of ``mtrec recommend`` (a fresh process) on ``--cli-users`` users."""
    users_csv, seen_csv, out_csv = work / "users.csv", work / "seen.csv", work / "recs.csv"
    chosen = users[: args.cli_users]
    with open(users_csv, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, USER_INPUTS)
        writer.writeheader()
        writer.writerows({key: row[key] for key in USER_INPUTS} for row in chosen)
    with open(seen_csv, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow([F.USER_ID, F.ITEM_ID])
        for row in chosen:
            writer.writerows([row[F.USER_ID], item] for item in range(1, args.exclude + 1))
    mtrec = Path(sys.executable).with_name("mtrec")
    command = [str(mtrec), "recommend", "--model", str(export_dir), "--users", str(users_csv)]
    command += ["--exclude-seen", str(seen_csv), "--k", "10", "--output", str(out_csv)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    with open(out_csv, encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 10 * len(chosen), len(rows)
    assert all(int(r[F.ITEM_ID]) > args.exclude for r in rows)  # Seen items left out.
    return seconds


def measure(items: int, args) -> Size:
    work = Path(args.work_dir) / f"items-{items}"
    shutil.rmtree(work, ignore_errors=True)
    logs = work / "logs"
    tables = write_logs(logs, items, args.rows_per_item, args.seed)

    start = time.perf_counter()
    examples, summary = build.run(data_source.logs(str(logs)), DataConfig(), str(work / "data"))
    build_s = time.perf_counter() - start
    train_pattern = str(Path(examples) / f"Split-{F.TRAIN}" / "*")
    start = time.perf_counter()
    output = local_transform.analyze(train_pattern, work, "catalog-benchmark")
    transform_s = time.perf_counter() - start

    config = ModelConfig(epochs=1)
    train = transformed(train_pattern, output, config.batch_size)
    start = time.perf_counter()
    model, _ = fit(train, None, cardinalities(output), config)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    catalog = collect_catalog(train, output.vocabulary_by_name(F.ITEM_ID))
    catalog_s = time.perf_counter() - start
    print(f"  {items:,} items: catalog of {len(catalog):,} items", flush=True)

    # Known users with their features, as a client would send them.
    user_text = tables.user_text.to_pylist()
    rng = np.random.default_rng(2)
    users = []
    for index in rng.choice(len(user_text), min(50, len(user_text)), replace=False):
        age, gender, occupation, zip_prefix = user_text[index].split(",")
        users.append(
            {
                F.USER_ID: int(index) + 1,
                F.AGE: int(age),
                F.GENDER: gender,
                F.OCCUPATION: occupation,
                F.ZIP_PREFIX: zip_prefix,
            }
        )

    exports = []
    retrieval = measure_export(
        model, output, catalog, work / "export-retrieval", args, users, "retrieval (100)"
    )
    if args.cli_users:
        retrieval.cli_s = run_cli(work / "export-retrieval", users, work, args)
    exports.append(retrieval)
    # The same weights, the heads scoring every catalog item (retrieval.candidates = 0).
    default_config = model.config
    model.config = dataclasses.replace(
        default_config, retrieval=dataclasses.replace(default_config.retrieval, candidates=0)
    )
    try:
        full = measure_export(
            model, output, catalog, work / "export-full", args, users, "full catalog"
        )
    finally:
        model.config = default_config
    if args.cli_users:
        full.cli_s = run_cli(work / "export-full", users, work, args)
    exports.append(full)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return Size(
        items=items,
        train_rows=summary.splits[F.TRAIN]["examples"],
        catalog=len(catalog),
        build_s=build_s,
        transform_s=transform_s,
        train_s=train_s,
        catalog_s=catalog_s,
        exports=exports,
    )


def print_table(sizes: list[Size], args) -> None:
    base = sizes[0]
    print()
    print(
        f"recommend catalog benchmark: k=10, one user per call, {args.calls} calls, "
        f"exclusion list of {args.exclude} items; load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print()
    print(
        "| items | catalog | train rows | variant | collect_catalog s | export s | SavedModel MB "
        "| variables/ MB | saved_model.pb MB | load s | p50 ms | p99 ms | p50 ms, excl. "
        "| p99 ms, excl. | `mtrec recommend` s |"
    )
    print("|" + "---|" * 15)
    for size in sizes:
        for e in size.exports:
            cli = f"{e.cli_s:.1f} ({args.cli_users} users)" if e.cli_s is not None else "-"
            print(
                f"| {size.items:,} | {size.catalog:,} | {size.train_rows:,} | {e.variant} "
                f"| {size.catalog_s:.1f} | {e.export_s:.1f} | {e.total_mb:.1f} "
                f"| {e.variables_mb:.1f} | {e.graph_mb:.2f} | {e.load_s:.1f} "
                f"| {e.p50_ms:.1f} | {e.p99_ms:.1f} | {e.p50_excl_ms:.1f} | {e.p99_excl_ms:.1f} "
                f"| {cli} |"
            )
    if len(sizes) > 1:
        print()
        print(f"Ratios, {sizes[-1].items:,} items / {base.items:,} items:")
        for big, small in zip(sizes[-1].exports, base.exports, strict=True):
            print(
                f"  {big.variant}: export x{big.export_s / small.export_s:.1f}, "
                f"SavedModel x{big.total_mb / small.total_mb:.1f}, "
                f"saved_model.pb x{big.graph_mb / small.graph_mb:.1f}, "
                f"p50 x{big.p50_ms / small.p50_ms:.1f}, "
                f"p50 excl. x{big.p50_excl_ms / small.p50_excl_ms:.1f}"
            )
    print(
        "(data build / Transform / 1 training epoch, s: "
        + "; ".join(
            f"{s.items:,}: {s.build_s:.0f} / {s.transform_s:.0f} / {s.train_s:.0f}" for s in sizes
        )
        + ")"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=1_000, help="0: no baseline")
    parser.add_argument("--rows-per-item", type=float, default=1.0)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--exclude", type=int, default=100)
    parser.add_argument("--cli-users", type=int, default=10, help="0: skip the CLI")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/mtrec-catalog-benchmark")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    sizes = []
    for items in [n for n in (args.baseline, args.items) if n]:
        print(f"Size {items:,} items ...", flush=True)
        sizes.append(measure(items, args))
    print_table(sizes, args)
    if args.json:
        Path(args.json).write_text(
            json.dumps([dataclasses.asdict(s) for s in sizes], indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
