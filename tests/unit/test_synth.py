"""Synthetic logs: the bring-your-own contract, exact sharding, determinism whatever the
chunks, power-law shape, consistent side features, label rules and a learnable signal."""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtrec import names as F
from mtrec.cli import synth as synth_cli
from mtrec.data import parse as data_parse
from mtrec.data import synth
from mtrec.errors import MtrecError

ROWS = 2_000


def read_logs(directory: Path) -> pd.DataFrame:
    """Every shard, in order, as one table (empty ratings read as NaN)."""
    files = sorted(directory.glob("part-*.csv"))
    return pd.concat([pd.read_csv(f, dtype={F.ZIP_PREFIX: str}) for f in files], ignore_index=True)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> tuple[synth.SynthLogs, pd.DataFrame]:
    out = tmp_path_factory.mktemp("synth")
    written = synth.write_logs(out, synth.SynthConfig(rows=ROWS, seed=7, shards=3))
    return written, read_logs(out)


def test_shards_hold_exactly_the_rows_in_time_order(logs, tmp_path):
    written, frame = logs
    assert [p.name for p in written.files] == [f"part-0000{k}-of-00003.csv" for k in range(3)]
    assert written.rows == len(frame) == ROWS
    assert written.rows_per_file == (666, 667, 667)
    assert [len(pd.read_csv(p)) for p in written.files] == list(written.rows_per_file)
    assert frame[F.TIMESTAMP].is_monotonic_increasing
    manifest = json.loads((written.files[0].parent / synth.MANIFEST).read_text())
    assert [f["rows"] for f in manifest["files"]] == [666, 667, 667]


def test_columns_follow_the_bring_your_own_contract(logs):
    written, frame = logs
    header = written.files[1].read_text().splitlines()[0]
    assert header.split(",") == list(synth.COLUMNS)
    assert set(synth.COLUMNS) == {
        F.USER_ID,
        F.ITEM_ID,
        F.RATING,
        F.CLICK,
        F.PURCHASE,
        F.TIMESTAMP,
        *F.USER_FEATURES,
        *F.ITEM_FEATURES,
    }
    # Each shard passes the data component's own checks of a logs file.
    path = str(written.files[0])
    with open(path, newline="") as handle:
        checked = list(data_parse.csv_rows(path, handle))
    assert not [row for row in checked if isinstance(row, data_parse.RowError)]
    assert len(checked) == written.rows_per_file[0]
    assert frame[F.ZIP_PREFIX].str.len().eq(3).all()  # Leading zeros kept.
    assert frame[F.GENDER].isin(["F", "M"]).all()
    assert frame[F.AGE].between(13, 85).all() and frame[F.YEAR].between(1920, 2100).all()
    genres = {g for value in frame[F.GENRES] for g in value.split(F.GENRE_SEPARATOR)}
    assert genres <= set(synth.GENRES) and len(genres) > 5


def test_labels_purchase_only_on_clicks_and_rating_only_on_some_clicks(logs):
    _, frame = logs
    assert set(frame[F.CLICK]) == {0, 1} and set(frame[F.PURCHASE]) == {0, 1}
    assert (frame[F.PURCHASE] <= frame[F.CLICK]).all()
    rated = frame[F.RATING].notna()
    assert (frame.loc[rated, F.CLICK] == 1).all()
    assert set(frame.loc[rated, F.RATING]) <= {1, 2, 3, 4, 5}
    assert 0.15 < frame[F.CLICK].mean() < 0.4  # Impressions, mostly not clicked.
    assert 0.1 < frame.loc[frame[F.CLICK] == 1, F.PURCHASE].mean() < 0.5
    assert 0.2 < rated[frame[F.CLICK] == 1].mean() < 0.7


def test_side_features_are_the_same_on_every_row_of_a_user_or_item(logs):
    _, frame = logs
    assert frame.groupby(F.USER_ID)[list(F.USER_FEATURES)].nunique().max().max() == 1
    assert frame.groupby(F.ITEM_ID)[list(F.ITEM_FEATURES)].nunique().max().max() == 1


def test_users_and_items_follow_a_power_law(logs):
    written, frame = logs
    assert (written.users, written.items) == (synth.MIN_USERS, synth.MIN_ITEMS)
    items = frame[F.ITEM_ID].value_counts()
    users = frame[F.USER_ID].value_counts()
    # Uniform draws would give the top 10% about 10% of the rows.
    assert items.iloc[: written.items // 10].sum() > 0.4 * ROWS
    assert users.iloc[: written.users // 10].sum() > 0.25 * ROWS
    assert items.max() > 10 * items.median()


def test_same_seed_same_files_whatever_the_chunk_size(tmp_path):
    contents = []
    for name, chunk_rows in (("a", 100_000), ("b", 333), ("c", 1)):
        config = synth.SynthConfig(rows=700, seed=3, shards=2, chunk_rows=chunk_rows)
        written = synth.write_logs(tmp_path / name, config)
        contents.append([p.read_bytes() for p in written.files])
    assert contents[0] == contents[1] == contents[2]
    other = synth.write_logs(tmp_path / "d", synth.SynthConfig(rows=700, seed=4, shards=2))
    assert [p.read_bytes() for p in other.files] != contents[0]


def test_rewriting_replaces_the_old_shards_only(tmp_path):
    synth.write_logs(tmp_path, synth.SynthConfig(rows=300, shards=3))
    (tmp_path / "notes.txt").write_text("mine")
    synth.write_logs(tmp_path, synth.SynthConfig(rows=200, shards=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        synth.MANIFEST,
        "notes.txt",
        "part-00000-of-00002.csv",
        "part-00001-of-00002.csv",
    ]


def test_clicks_follow_a_learnable_signal():
    config = synth.SynthConfig(rows=20_000, seed=1)
    catalog = synth.make_catalog(config)
    rows = synth.generate(config, catalog, 0, config.rows)
    click = rows[F.CLICK]
    # The generator's own relevance separates clicks clearly...
    score = synth.relevance(catalog, rows["users"], rows["items"])
    low, high = np.quantile(score, [0.25, 0.75])
    assert click[score >= high].mean() - click[score <= low].mean() > 0.3
    # ...and so do the written features alone: click rates per gender x main genre on the
    # first 80% of rows rank the last 20% (AUC well above 0.5).
    gender = catalog.user_gender[rows["users"]]
    genre = catalog.item_genre_mix[rows["items"]].argmax(axis=1)
    cell = gender * len(synth.GENRES) + genre
    cut = int(0.8 * config.rows)
    cells = len(synth.GENRES) * 2
    clicks = np.bincount(cell[:cut], weights=click[:cut], minlength=cells)
    seen = np.bincount(cell[:cut], minlength=cells)
    rate = (clicks + 1) / (seen + 4)
    assert auc(click[cut:], rate[cell[cut:]]) > 0.56


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC, ties counted half."""
    ranks = pd.Series(scores).rank().to_numpy()
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rows": 0}, "rows must be at least 1"),
        ({"rows": 5, "shards": 6}, "shards must be between 1 and rows"),
        ({"rows": 5, "users": 0}, "users must be at least 1"),
        ({"rows": 5, "seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_settings_are_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        synth.SynthConfig(**options)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mtrec data")
    synth_cli.add_parser(parser.add_subparsers(dest="data_command", required=True))
    return parser.parse_args(argv)


def test_cli_writes_the_logs_and_says_where(tmp_path, capsys):
    out = tmp_path / "logs"
    args = parse(["synth", "--rows", "1k", "--output", str(out), "--shards", "2", "--items", "60"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "Wrote 1,000 rows (100 users, 60 items) in 2 files" in printed
    assert str(out / "part-*-of-00002.csv") in printed
    assert len(read_logs(out)) == 1_000 and read_logs(out)[F.ITEM_ID].max() <= 60


def test_cli_reports_bad_settings_as_user_errors(tmp_path):
    args = parse(["synth", "--rows", "10", "--output", str(tmp_path), "--shards", "20"])
    with pytest.raises(MtrecError, match="shards must be between 1 and rows"):
        args.func(args)
    (tmp_path / "file").write_text("")
    args = parse(["synth", "--rows", "10", "--output", str(tmp_path / "file")])
    with pytest.raises(MtrecError, match="not a directory"):
        args.func(args)


@pytest.mark.parametrize(
    "text, rows", [("2000", 2000), ("2_000", 2000), ("100k", 100_000), ("3M", 3_000_000)]
)
def test_row_counts_take_k_and_m(text, rows):
    assert synth_cli.row_count(text) == rows


def test_a_row_count_that_is_not_one_is_refused():
    with pytest.raises(argparse.ArgumentTypeError, match="not a row count"):
        synth_cli.row_count("lots")


# ----------------------------------------------------------------------------- spans

SPAN_ROWS = 600


def span_frames(written: list[synth.SpanLogs]) -> list[pd.DataFrame]:
    return [read_logs(s.logs.files[0].parent) for s in written]


@pytest.fixture(scope="module")
def spans(tmp_path_factory) -> tuple[Path, list[synth.SpanLogs]]:
    out = tmp_path_factory.mktemp("spans")
    config = synth.SynthConfig(rows=SPAN_ROWS, seed=5, shards=2, days=7)
    return out, synth.write_spans(out, config, spans=3, drift=0.8)


def test_spans_are_folders_of_shards_with_the_rows_of_one_config_each(spans):
    out, written = spans
    assert sorted(p.name for p in out.iterdir()) == [
        synth.SPANS_MANIFEST,
        "span-0001",
        "span-0002",
        "span-0003",
    ]
    for span in written:
        folder = out / synth.span_name(span.span)
        assert sorted(p.name for p in folder.iterdir()) == [
            synth.MANIFEST,
            "part-00000-of-00002.csv",
            "part-00001-of-00002.csv",
        ]
        assert span.logs.rows_per_file == (300, 300)
        assert len(read_logs(folder)) == SPAN_ROWS
    assert [s.drift for s in written] == pytest.approx([0.0, 0.4, 0.8])
    manifest = json.loads((out / synth.SPANS_MANIFEST).read_text())
    assert [f["rows"] for f in manifest["folders"]] == [SPAN_ROWS] * 3
    # One catalog throughout: the same users and items recur across spans.
    frames = span_frames(written)
    assert len(set(frames[0][F.USER_ID]) & set(frames[2][F.USER_ID])) > 50


def test_span_times_follow_each_other_and_lie_inside_their_span(spans):
    _, written = spans
    week = 7 * synth.DAY_S
    assert [(s.start, s.end) for s in written] == [
        (synth.START_TIMESTAMP + k * week, synth.START_TIMESTAMP + (k + 1) * week) for k in range(3)
    ]
    frames = span_frames(written)
    for span, frame in zip(written, frames, strict=True):
        stamps = frame[F.TIMESTAMP]
        assert stamps.is_monotonic_increasing
        assert span.start <= stamps.min() and stamps.max() < span.end
        assert stamps.max() - stamps.min() > 0.9 * week  # Spread over the whole span.
    assert pd.concat(frames)[F.TIMESTAMP].is_monotonic_increasing


def genre_click_rates(frame: pd.DataFrame, min_rows: int = 1_000) -> pd.Series:
    """Click rate per genre, over the rows whose item has it (genres with enough rows)."""
    genres = frame[F.GENRES].str.split(F.GENRE_SEPARATOR).explode()
    clicks = frame[F.CLICK].reindex(genres.index)
    counts = genres.value_counts()
    return clicks.groupby(genres).mean()[counts[counts >= min_rows].index].sort_index()


def test_drift_moves_click_rates_per_genre_from_the_first_span_to_the_last(tmp_path):
    config = synth.SynthConfig(rows=20_000, seed=0, shards=1)
    changes, overall = {}, {}
    for drift in (0.0, 1.0):
        written = synth.write_spans(tmp_path / str(drift), config, spans=2, drift=drift)
        first, last = span_frames(written)
        changes[drift] = (genre_click_rates(last) - genre_click_rates(first)).abs()
        overall[drift] = abs(last[F.CLICK].mean() - first[F.CLICK].mean())
    # Without drift the genres' click rates stay within sampling noise; with full drift
    # they move by about 5 points on average, over 20 for one genre.
    assert changes[0.0].mean() < 0.01 and changes[0.0].max() < 0.03
    assert changes[1.0].mean() > 0.04 and changes[1.0].max() > 0.2
    # The overall click rate stays put: relevance is re-centred per span.
    assert overall[0.0] < 0.01 and overall[1.0] < 0.02


def test_spans_are_the_same_for_the_same_seed_and_the_first_does_not_drift(tmp_path):
    def contents(name: str, seed: int, drift: float) -> list[bytes]:
        config = synth.SynthConfig(rows=300, seed=seed, shards=1, chunk_rows=128)
        written = synth.write_spans(tmp_path / name, config, spans=2, drift=drift)
        return [s.logs.files[0].read_bytes() for s in written]

    same = contents("a", 1, 0.5)
    assert contents("b", 1, 0.5) == same
    assert contents("c", 2, 0.5) != same
    no_drift = contents("d", 1, 0.0)
    assert no_drift[0] == same[0] and no_drift[1] != same[1]


def test_rewriting_spans_replaces_old_span_folders_only(tmp_path):
    config = synth.SynthConfig(rows=100, shards=1)
    synth.write_spans(tmp_path, config, spans=4)
    (tmp_path / "span-0002" / "notes.txt").write_text("mine")
    (tmp_path / "README").write_text("mine")
    synth.write_spans(tmp_path, config, spans=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README",
        synth.SPANS_MANIFEST,
        "span-0001",
        "span-0002",
    ]
    assert [p.name for p in (tmp_path / "span-0002").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "spans, drift, message",
    [(0, 1.0, "spans must be at least 1"), (2, 1.5, "drift must be between 0 and 1")],
)
def test_bad_span_settings_are_value_errors(tmp_path, spans, drift, message):
    with pytest.raises(ValueError, match=message):
        synth.write_spans(tmp_path, synth.SynthConfig(rows=10, shards=1), spans, drift)
    assert not list(tmp_path.iterdir())  # Refused before writing anything.


def test_cli_writes_spans(tmp_path, capsys):
    out = tmp_path / "logs"
    argv = ["synth", "--rows", "200", "--spans", "3", "--drift", "0.5", "--output", str(out)]
    args = parse([*argv, "--shards", "1", "--span-days", "1"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "Wrote 3 spans of 200 rows (1 days each; 100 users, 50 items)" in printed
    assert "drifting 0 -> 0.5" in printed
    assert str(out / "span-0001 .. span-0003") in printed
    frames = [read_logs(out / f"span-000{k}") for k in (1, 2, 3)]
    assert [len(f) for f in frames] == [200, 200, 200]
    assert frames[2][F.TIMESTAMP].max() < synth.START_TIMESTAMP + 3 * synth.DAY_S


def test_cli_refuses_drift_without_spans_and_a_bad_drift(tmp_path):
    args = parse(["synth", "--rows", "10", "--output", str(tmp_path), "--drift", "0.5"])
    with pytest.raises(MtrecError, match="--drift and --span-days need --spans"):
        args.func(args)
    args = parse(["synth", "--rows", "10", "--output", str(tmp_path), "--spans", "2"])
    args.drift, args.shards = 2.0, 1
    with pytest.raises(MtrecError, match="drift must be between 0 and 1"):
        args.func(args)
