"""The data component's Beam job on tiny data: labels, negatives, splits, determinism across
Beam workers, layouts, explicit splits, your own logs, and one-line errors on bad input."""

import collections
import gzip
import itertools
import json
import operator
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers

from mtrec import names as F
from mtrec.data import build, source
from mtrec.data.config import DataConfig, DataSummary
from mtrec.errors import DataError
from tests.support.beam import count_timed_streams
from tests.support.synthetic import make_interactions_csv, make_movielens_dir

TWO_WORKERS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def read_split(root: str, split: str) -> list[dict]:
    """Every example of a split as {column: first value (None when absent)}."""
    rows = []
    files = tf.io.gfile.glob(f"{root}/Split-{split}/*")
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        row = {}
        for key in F.EXAMPLE_COLUMNS:
            kind = feature[key].WhichOneof("kind") if key in feature else None
            values = list(getattr(feature[key], kind).value) if kind else []
            row[key] = values if key == F.GENRE else (values[0] if values else None)
        rows.append(row)
    return rows


def read_examples(path: Path) -> list[tf.train.Example]:
    """A file's examples, in order (compared as protos: their bytes order features as the
    writing process's protobuf map happened to)."""
    records = tf.data.TFRecordDataset(str(path), compression_type="GZIP")
    return [tf.train.Example.FromString(record.numpy()) for record in records]


@pytest.fixture(scope="module")
def movielens_dir(tmp_path_factory) -> Path:
    return make_movielens_dir(
        tmp_path_factory.mktemp("ml") / "ml", n_users=30, n_items=40, ratings_per_user=8
    )


@pytest.fixture(scope="module")
def built(movielens_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    return build.run(source.movielens(str(movielens_dir)), DataConfig(), str(out))


def test_movielens_labels_negatives_and_time_split(built, movielens_dir):
    root, summary = built
    ratings = pd.read_csv(
        movielens_dir / "u.data", sep="\t", names=[F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP]
    )
    splits = {name: read_split(root, name) for name in F.SPLITS}
    rows = [r for name in F.SPLITS for r in splits[name]]
    assert len(rows) == 5 * len(ratings)  # Each rating plus 4 sampled non-interactions.
    for name in F.SPLITS:
        assert len(splits[name]) == summary.splits[name]["examples"]
        assert summary.splits[name]["clicks"] == sum(r[F.CLICK] for r in splits[name])
    positives = {(r[F.USER_ID], r[F.ITEM_ID]) for r in rows if r[F.CLICK]}
    rated = set(zip(ratings[F.USER_ID], ratings[F.ITEM_ID], strict=True))
    assert positives == rated
    negatives = [r for r in rows if not r[F.CLICK]]
    assert not {(r[F.USER_ID], r[F.ITEM_ID]) for r in negatives} & rated
    assert all(r[F.RATING] is None and r[F.PURCHASE] == 0 for r in negatives)
    assert all((r[F.RATING] >= 4) == bool(r[F.PURCHASE]) for r in rows if r[F.CLICK])
    # Time: every eval row is after every valid row, which is after every train row.
    latest = {name: max(r[F.TIMESTAMP] for r in splits[name]) for name in F.SPLITS}
    earliest = {name: min(r[F.TIMESTAMP] for r in splits[name]) for name in F.SPLITS}
    assert latest[F.TRAIN] < earliest[F.VALID] and latest[F.VALID] < earliest[F.EVAL]
    share = len(splits[F.EVAL]) / len(rows)
    assert 0.08 <= share <= 0.12
    # History: the user's ratings strictly before the row's time, newest first, not its item.
    rated_at = {
        (u, i): (t, r)
        for u, i, r, t in ratings[[F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP]].itertuples(
            index=False
        )
    }
    for r in rows:
        tokens = [token.split(":") for token in r[F.HISTORY].decode().split()]
        seen = [rated_at[(r[F.USER_ID], int(item))] for item, _ in tokens]
        assert all(t < r[F.TIMESTAMP] for t, _ in seen)
        assert [t for t, _ in seen] == sorted((t for t, _ in seen), reverse=True)
        assert [float(rating) for _, rating in tokens] == [rating for _, rating in seen]
        assert str(r[F.ITEM_ID]) not in {item for item, _ in tokens}
        earlier = [t for (u, _), (t, _) in rated_at.items() if u == r[F.USER_ID]]
        assert len(tokens) == min(F.HISTORY_LENGTH, sum(t < r[F.TIMESTAMP] for t in earlier))
    assert set(splits[F.EVAL][0]) == set(F.EXAMPLE_COLUMNS)


def test_each_split_is_shuffled_across_users(built):
    root, _ = built
    for name in F.SPLITS:
        users = [r[F.USER_ID] for r in read_split(root, name)]
        changes = sum(a != b for a, b in itertools.pairwise(users))
        assert changes > 0.8 * len(users)  # Grouped by user: one change per user (30).


def test_summary_slices_and_rating_baseline(built):
    root, summary = built
    evaluation = read_split(root, F.EVAL)
    genders = collections.Counter(r[F.GENDER].decode() for r in evaluation)
    assert summary.eval_slice_counts[F.GENDER] == dict(genders)
    train_ratings = [r[F.RATING] for r in read_split(root, F.TRAIN) if r[F.RATING] is not None]
    mean = sum(train_ratings) / len(train_ratings)
    assert summary.train_rating_mean == pytest.approx(mean, rel=1e-5)
    eval_ratings = [r[F.RATING] for r in evaluation if r[F.RATING] is not None]
    rmse = (sum((r - mean) ** 2 for r in eval_ratings) / len(eval_ratings)) ** 0.5
    assert summary.baseline_rating_rmse == pytest.approx(rmse, rel=1e-5)
    assert summary.slices_at_least(1) and not summary.slices_at_least(10**9)


def test_same_examples_with_one_or_two_beam_workers_and_reused_when_unchanged(
    built, movielens_dir, tmp_path, monkeypatch
):
    root, summary = built
    # The job turns off the local runner's timed flushes, which can drop rows (local_beam).
    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)
    timed = count_timed_streams(monkeypatch)
    again, _ = build.run(
        source.movielens(str(movielens_dir)), DataConfig(), str(tmp_path), TWO_WORKERS
    )
    assert timed == [] and worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0
    assert again != root
    for name in F.SPLITS:  # The same files, one per bucket, each the same examples in order.
        one, two = (sorted((Path(r) / f"Split-{name}").iterdir()) for r in (root, again))
        assert [p.name for p in one] == [p.name for p in two]
        assert one[0].name.endswith(f"-of-{build.BUCKETS_AT_LEAST:05d}.gz")
        assert [read_examples(p) for p in one] == [read_examples(p) for p in two]
    reused, same = build.run(source.movielens(str(movielens_dir)), DataConfig(), str(tmp_path))
    assert reused == again and same == DataSummary.read(again)


def test_explicit_ratings_split_keeps_eval_apart(movielens_dir, tmp_path):
    ratings = pd.read_csv(
        movielens_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"]
    )
    train_file, eval_file = tmp_path / "base.csv", tmp_path / "u1.test"
    ratings.iloc[48:].to_csv(train_file, index=False)  # Like u1: the first rows are test.
    ratings.iloc[:48].to_csv(eval_file, sep="\t", header=False, index=False)  # Raw u1 format.
    root, _ = build.run(
        source.ratings(str(train_file), str(eval_file), str(movielens_dir)),
        DataConfig(),
        str(tmp_path / "out"),
    )
    pairs = lambda rows: [(r[F.USER_ID], r[F.ITEM_ID], r[F.CLICK]) for r in rows]  # noqa: E731
    evaluation = pairs(read_split(root, F.EVAL))
    valid = pairs(read_split(root, F.VALID))
    train = pairs(read_split(root, F.TRAIN)) + valid
    eval_rated = set(ratings.iloc[:48][["user_id", "item_id"]].itertuples(index=False, name=None))
    base_rated = set(ratings.iloc[48:][["user_id", "item_id"]].itertuples(index=False, name=None))
    assert {(u, i) for u, i, c in evaluation if c} == eval_rated
    assert {(u, i) for u, i, c in train if c} == base_rated
    assert len(evaluation) == 48 * 5 and len(train) == (len(ratings) - 48) * 5
    # Negatives are never rated pairs (eval negatives avoid train ratings too).
    assert not {(u, i) for u, i, c in evaluation if not c} & (eval_rated | base_rated)
    assert not {(u, i) for u, i, c in train if not c} & base_rated
    # Validation: each user's most recent train ratings, at least one per user with two.
    per_user = ratings.iloc[48:].groupby("user_id").size()
    assert {u for u, _, c in valid if c} == set(per_user[per_user >= 2].index)
    # History: an eval row's is every base rating of its user; no eval item is in any history.
    for r in read_split(root, F.EVAL) + read_split(root, F.TRAIN):
        items = {int(t.split(":")[0]) for t in r[F.HISTORY].decode().split()}
        assert not {(r[F.USER_ID], i) for i in items} & eval_rated
    for r in read_split(root, F.EVAL):
        items = {int(t.split(":")[0]) for t in r[F.HISTORY].decode().split()}
        assert items == {i for u, i in base_rated if u == r[F.USER_ID]}


def test_a_random_valid_split_of_explicit_ratings_is_held_out_like_eval(movielens_dir, tmp_path):
    ratings = pd.read_csv(
        movielens_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"]
    )
    train_file, eval_file = tmp_path / "base.csv", tmp_path / "u1.test"
    ratings.iloc[48:].to_csv(train_file, index=False)
    ratings.iloc[:48].to_csv(eval_file, index=False)
    files = source.ratings(str(train_file), str(eval_file), str(movielens_dir))
    clicked = lambda rows: {(r[F.USER_ID], r[F.ITEM_ID]) for r in rows if r[F.CLICK]}  # noqa: E731
    latest_root, _ = build.run(files, DataConfig(), str(tmp_path / "latest"))
    root, _ = build.run(files, DataConfig(valid_split="random"), str(tmp_path / "random"))
    valid, train = read_split(root, F.VALID), read_split(root, F.TRAIN)
    latest_valid = clicked(read_split(latest_root, F.VALID))
    # As many per user as the latest split holds back, but drawn: not the same pairs.
    count = lambda pairs: sorted(u for u, _ in pairs)  # noqa: E731
    assert count(clicked(valid)) == count(latest_valid) and clicked(valid) != latest_valid
    kept = clicked(train)
    for r in valid + train:
        items = {(r[F.USER_ID], int(t.split(":")[0])) for t in r[F.HISTORY].decode().split()}
        assert not items & clicked(valid)  # No held-out item in a train or valid history.
        if r in valid:  # A held-out row sees every train rating of its user.
            assert items == {(u, i) for u, i in kept if u == r[F.USER_ID]}
    base = set(ratings.iloc[48:][["user_id", "item_id"]].itertuples(index=False, name=None))
    for r in read_split(root, F.EVAL):  # Eval rows still see all of the train file.
        items = {int(t.split(":")[0]) for t in r[F.HISTORY].decode().split()}
        assert items == {i for u, i in base if u == r[F.USER_ID]}
    with pytest.raises(ValueError, match="valid_split 'random' applies to explicit"):
        build.run(
            source.movielens(str(movielens_dir)),
            DataConfig(valid_split="random"),
            str(tmp_path / "t"),
        )


def test_your_own_logs_keep_their_labels_in_a_folder_of_shards(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    make_interactions_csv(logs / "part-0.csv", n_rows=150, seed=1)
    make_interactions_csv(logs / "part-1.csv", n_rows=150, seed=2)
    (logs / "_manifest.json").write_text("{}")  # Hidden files are not data.
    frame = pd.concat([pd.read_csv(p) for p in sorted(logs.iterdir())])
    root, summary = build.run(source.logs(str(logs)), DataConfig(), str(tmp_path / "out"))
    assert sum(s["examples"] for s in summary.splits.values()) == 300
    assert sum(s["clicks"] for s in summary.splits.values()) == int(frame[F.CLICK].sum())
    rows = [r for name in F.SPLITS for r in read_split(root, name)]
    assert all(r[F.AGE] == 0 and r[F.OCCUPATION] == b"unknown" for r in rows)  # Defaults.


def test_gzipped_csv_logs_build_the_same_examples_as_plain_ones(tmp_path):
    plain, zipped = tmp_path / "plain", tmp_path / "zipped"
    plain.mkdir()
    zipped.mkdir()
    for index in range(2):
        make_interactions_csv(plain / f"part-{index}.csv", n_rows=150, seed=index + 1)
    (zipped / "part-0.csv").write_bytes((plain / "part-0.csv").read_bytes())  # Mixed.
    (zipped / "part-1.csv.gz").write_bytes(gzip.compress((plain / "part-1.csv").read_bytes()))
    built = [
        build.run(source.logs(str(folder)), DataConfig(), str(tmp_path / f"out-{folder.name}"))
        for folder in (plain, zipped)
    ]
    assert built[0][1].splits == built[1][1].splits
    key = operator.itemgetter(F.USER_ID, F.ITEM_ID, F.TIMESTAMP)
    for name in F.SPLITS:
        assert sorted(read_split(built[0][0], name), key=key) == sorted(
            read_split(built[1][0], name), key=key
        )
    damaged = tmp_path / "damaged.csv.gz"
    damaged.write_bytes((zipped / "part-1.csv.gz").read_bytes()[:600])  # Cut short.
    with pytest.raises(DataError) as err:
        build.run(source.logs(str(damaged)), DataConfig(), str(tmp_path / "out-damaged"))
    assert str(err.value) == (
        f"{damaged}: not a readable gzip file: "
        "Compressed file ended before the end-of-stream marker was reached"
    )


def test_a_csv_saved_by_excel_reads_as_a_plain_one(tmp_path):
    """A byte-order mark ("CSV UTF-8") before the header and CRLF line ends."""
    plain = make_interactions_csv(tmp_path / "plain.csv", n_rows=150, seed=1)
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\n", b"\r\n"))
    summaries = [
        build.run(source.logs(str(path)), DataConfig(), str(tmp_path / f"out-{path.stem}"))[1]
        for path in (plain, excel)
    ]
    assert summaries[0].splits == summaries[1].splits


def test_explicit_log_files(tmp_path):
    train = make_interactions_csv(tmp_path / "train.csv", n_rows=200, seed=1)
    evaluation = make_interactions_csv(tmp_path / "eval.csv", n_rows=50, seed=2)
    _, summary = build.run(
        source.logs(train=str(train), eval_=str(evaluation)), DataConfig(), str(tmp_path / "out")
    )
    assert summary.splits[F.EVAL]["examples"] == 50
    assert summary.splits[F.TRAIN]["examples"] + summary.splits[F.VALID]["examples"] == 200
    assert summary.splits[F.EVAL]["clicks"] == int(pd.read_csv(evaluation)[F.CLICK].sum())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        (
            "user_id,item_id,click\n1,2,1\n",
            "missing required column(s) purchase; required: user_id, item_id, click, purchase",
        ),
        (
            "user_id,item_id,click,purchase,timestamp\n1,2,1,0,5\n3,4,1,0,6\n5,6,2,0,7\n",
            "label 'click' must be 0 or 1; row 3 has 2",
        ),
        (
            "user_id,item_id,click,purchase,timestamp\n1,2,1,0,5\n3,4,1,0,5\n",
            "a time-based split needs a timestamp column with distinct values",
        ),
    ],
)
def test_bad_logs_are_one_line_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        build.run(source.logs(str(path)), DataConfig(), str(tmp_path / "out"))
    assert str(err.value) == f"{path}: {message}"
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "out").glob("logs-*"))  # Nothing half-written is left.


def test_a_missing_input_is_named(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}/nope.csv: no such file"):
        source.logs(str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="not a MovieLens-100K directory"):
        source.movielens(str(tmp_path))


class _LosesRowsOnce:
    """Pipelines for ``build.run_job`` whose first run ends as one that lost a bundle of rows
    in the runner would: its tally records fewer rows written than read."""

    def __init__(self, scratch: Path) -> None:
        self.scratch, self.runs = scratch, 0

    def __call__(self) -> beam.Pipeline:
        self.runs += 1
        pipeline = beam.Pipeline(options=PipelineOptions([]))
        if self.runs > 1:
            return pipeline
        run = pipeline.run

        def run_and_lose(*args, **kwargs):
            result = run(*args, **kwargs)
            result.wait_until_finish()
            path = self.scratch / build.SUMMARY_FILE
            summary = json.loads(path.read_text())
            rows, read = summary["tally"][F.TRAIN]
            summary["tally"][F.TRAIN] = [rows - 5, read - 1]  # A positive, its 4 negatives.
            path.write_text(json.dumps(summary))
            return result

        pipeline.run = run_and_lose
        return pipeline


def test_a_run_that_lost_rows_is_cleared_and_run_again(movielens_dir, built, tmp_path):
    data = source.movielens(str(movielens_dir))
    pipelines = _LosesRowsOnce(tmp_path / "scratch")
    output = tmp_path / "examples"
    summary = build.run_job(
        pipelines,
        data.kind,
        data.layout,
        build.resolve_files(data.base, data.roles),
        DataConfig(),
        str(output),
        str(tmp_path / "scratch"),
    )
    assert pipelines.runs == 2
    assert summary.splits == built[1].splits
    assert not (tmp_path / "scratch" / build.SPILL_DIR).exists()  # Bucket files removed.
    for name in F.SPLITS:  # The first run's shards are gone: no row twice.
        assert len(read_split(str(output), name)) == summary.splits[name]["examples"]


def test_lost_rows_are_one_error_with_the_counts():
    summary = {
        "splits": {"train": {"examples": 30}, "valid": {"examples": 5}, "eval": {"examples": 10}}
    }
    build.check_tally({"read": 9, "train": [30, 6], "valid": [5, 1], "eval": [10, 2]}, summary)
    with pytest.raises(build.RowsLostError) as lost:
        build.check_tally({"read": 10, "train": [25, 5], "valid": [5, 1], "eval": [10, 2]}, summary)
    assert str(lost.value) == (
        "the data job read 10 interactions but wrote 8 of them (examples written per split, of "
        "those counted: train 25 of 30, valid 5 of 5, eval 10 of 10): the Beam runner lost "
        "rows; nothing was published"
    )
    with pytest.raises(build.RowsLostError, match="without its row counts"):
        build.check_tally(None, summary)
