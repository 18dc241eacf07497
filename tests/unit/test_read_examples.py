"""The Trainer's reader of Transform's examples: every record once per epoch, parsed as
tfx_bsl's factory parses them, shuffled the same way for the same seed."""

from pathlib import Path

import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from mtrec.models.training import read_examples

SPEC = {
    "id": tf.io.FixedLenFeature([], tf.int64),
    "pair": tf.io.FixedLenFeature([2], tf.float32),
    "bag": tf.io.VarLenFeature(tf.int64),
}
SCHEMA = """
feature { name: "id" type: INT shape { dim { size: 1 } } presence { min_fraction: 1 } }
feature { name: "pair" type: FLOAT shape { dim { size: 2 } } presence { min_fraction: 1 } }
feature { name: "bag" type: INT }
"""


def _example(index: int) -> bytes:
    feature = {
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
        "pair": tf.train.Feature(float_list=tf.train.FloatList(value=[index, -index])),
        "bag": tf.train.Feature(int64_list=tf.train.Int64List(value=list(range(index % 3)))),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write(folder: Path, files: int, rows: int, gzipped: bool = True) -> str:
    """``rows`` examples with ids 0.. spread over ``files`` files; returns their pattern."""
    folder.mkdir()
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzipped else "")
    suffix = ".gz" if gzipped else ""
    for part in range(files):
        with tf.io.TFRecordWriter(str(folder / f"part-{part}{suffix}"), options) as writer:
            for index in range(part, rows, files):
                writer.write(_example(index))
    return str(folder / "part-*")


def _rows(dataset: tf.data.Dataset) -> list[tuple]:
    rows = []
    for batch in dataset:
        bags = tf.sparse.to_dense(batch["bag"], default_value=-1).numpy()
        for index, pair, bag in zip(batch["id"].numpy(), batch["pair"].numpy(), bags, strict=True):
            rows.append((int(index), tuple(pair.tolist()), tuple(int(v) for v in bag if v >= 0)))
    return rows


@pytest.mark.unit
def test_every_record_once_parsed_as_tfx_bsl_parses_it(tmp_path):
    pattern = _write(tmp_path / "examples", files=3, rows=200)
    rows = _rows(read_examples([pattern], SPEC, batch_size=16))
    assert sorted(r[0] for r in rows) == list(range(200))
    schema = text_format.Parse(SCHEMA, schema_pb2.Schema())
    reference = tfxio.TFExampleRecord(pattern, schema=schema).TensorFlowDataset(
        tfxio.TensorFlowDatasetOptions(batch_size=16, num_epochs=1, shuffle=False)
    )
    assert sorted(rows) == sorted(_rows(reference))
    assert rows[4] == (4, (4.0, -4.0), (0,))  # Files in turn: ids in order.


@pytest.mark.unit
def test_the_shuffle_mixes_files_and_depends_on_the_seed_only(tmp_path):
    pattern = _write(tmp_path / "examples", files=2, rows=300)

    def order(seed: int) -> list[int]:
        dataset = read_examples([pattern], SPEC, 32, shuffle_buffer=100, seed=seed)
        return [r[0] for r in _rows(dataset)]

    first = order(7)
    assert sorted(first) == list(range(300))
    assert first == order(7)
    assert first != order(8)
    assert first != sorted(first)
    # Unshuffled, one record from each file in turn: part-0 holds the even ids, part-1 the odd.
    assert [r[0] for r in _rows(read_examples([pattern], SPEC, 32))] == list(range(300))


@pytest.mark.unit
def test_plain_files_and_the_errors(tmp_path):
    pattern = _write(tmp_path / "plain", files=1, rows=5, gzipped=False)
    assert [r[0] for r in _rows(read_examples([pattern], SPEC, 4))] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"^no example files match \['/nowhere/\*'\]$"):
        read_examples(["/nowhere/*"], SPEC, 4)
    _write(tmp_path / "mixed", files=1, rows=2)
    (tmp_path / "mixed" / "part-9").write_bytes(b"")
    with pytest.raises(ValueError, match="^example files mix gzipped and plain TFRecords"):
        read_examples([str(tmp_path / "mixed" / "*")], SPEC, 4)


@pytest.mark.unit
def test_no_autotuning_thread_whose_join_stalls_each_new_epoch(tmp_path):
    """Deleting an iterator joins tf.data's autotuning thread; the Trainer stalled there for
    seconds between epochs. The reader turns it off, and the Trainer's dataset keeps that
    through its own options (sharding, prefetch)."""
    pattern = _write(tmp_path / "examples", files=2, rows=20)
    dataset = read_examples([pattern], SPEC, batch_size=4, shuffle_buffer=8, seed=1)
    assert dataset.options().autotune.enabled is False
    sharding = tf.data.Options()  # As make_dataset shards the Trainer's batches.
    sharding.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    sharded = dataset.with_options(sharding).prefetch(tf.data.AUTOTUNE)
    assert sharded.options().autotune.enabled is False
    assert len(_rows(sharded)) == 20
