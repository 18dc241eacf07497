"""MovieLens as continuous-training logs: weekly span folders of impressions in the
bring-your-own contract, sampled negatives that were never rated, real labels, spans big
enough to split; and finding the span folders of a logs directory."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtrec import names as F
from mtrec.data import movielens, spans, synth
from mtrec.data import parse as data_parse
from mtrec.errors import DataError
from tests.support.synthetic import make_movielens_dir

NEGATIVES = 3
MIN_RATINGS = 100


@pytest.fixture(scope="module")
def movielens_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ml")
    return make_movielens_dir(
        root / "ml", n_users=40, n_items=60, ratings_per_user=25, undated_items=(3,)
    )


@pytest.fixture(scope="module")
def written(movielens_dir, tmp_path_factory) -> tuple[Path, list[int]]:
    out = tmp_path_factory.mktemp("logs")
    found = spans.write_movielens_spans(
        movielens_dir, out, negatives=NEGATIVES, min_ratings=MIN_RATINGS
    )
    return out, found


def read_span(out: Path, span: int) -> pd.DataFrame:
    path = out / synth.span_name(span) / spans.MOVIELENS_FILE
    return pd.read_csv(path, dtype={F.ZIP_PREFIX: str}, keep_default_na=False, na_values=[""])


def test_one_folder_per_week_each_with_enough_ratings(written, movielens_dir):
    out, found = written
    assert found == list(range(1, len(found) + 1)) and len(found) >= 3
    assert sorted(p.name for p in out.iterdir()) == [
        synth.SPANS_MANIFEST,
        *(synth.span_name(s) for s in found),
    ]
    assert spans.find_spans(out) == {s: out / synth.span_name(s) for s in found}
    ratings = movielens.load(movielens_dir).ratings
    frames = [read_span(out, s) for s in found]
    clicks = [int(f[F.CLICK].sum()) for f in frames]
    assert sum(clicks) == len(ratings)
    assert min(clicks) >= MIN_RATINGS
    assert [len(f) for f in frames] == [c * (1 + NEGATIVES) for c in clicks]
    # Weekly: a span lasts a week, or a few when short weeks were merged into the next.
    for frame in frames:
        assert frame[F.TIMESTAMP].is_monotonic_increasing
        assert frame[F.TIMESTAMP].max() - frame[F.TIMESTAMP].min() < 4 * 7 * synth.DAY_S
    stamps = pd.concat(frames)[F.TIMESTAMP]
    assert stamps.is_monotonic_increasing


def test_rows_follow_the_contract_with_real_labels(written, movielens_dir):
    out, found = written
    tables = movielens.load(movielens_dir)
    frame = pd.concat([read_span(out, s) for s in found], ignore_index=True)
    assert list(frame.columns) == list(synth.COLUMNS)
    clicked = frame[F.CLICK] == 1
    # A rating is a click, bought at 4 stars or more; a negative has no rating, no labels.
    assert frame.loc[clicked, F.RATING].notna().all()
    assert (frame.loc[clicked, F.PURCHASE] == (frame.loc[clicked, F.RATING] >= 4)).all()
    assert frame.loc[~clicked, F.RATING].isna().all()
    assert (frame.loc[~clicked, F.PURCHASE] == 0).all()
    positives = frame.loc[clicked, [F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP]]
    pd.testing.assert_frame_equal(
        positives.sort_values([F.TIMESTAMP, F.USER_ID, F.ITEM_ID]).reset_index(drop=True),
        tables.ratings.sort_values([F.TIMESTAMP, F.USER_ID, F.ITEM_ID]).reset_index(drop=True),
        check_dtype=False,
    )
    # Each rating is followed by its negatives: same user, same time, items never rated.
    owner = clicked.cumsum()
    negatives = frame[~clicked]
    first = frame[clicked].set_index(owner[clicked])
    assert (negatives[F.USER_ID].to_numpy() == first.loc[owner[~clicked], F.USER_ID]).all()
    assert (negatives[F.TIMESTAMP].to_numpy() == first.loc[owner[~clicked], F.TIMESTAMP]).all()
    rated = set(zip(tables.ratings[F.USER_ID], tables.ratings[F.ITEM_ID], strict=True))
    pairs = zip(negatives[F.USER_ID], negatives[F.ITEM_ID], strict=True)
    assert not [pair for pair in pairs if pair in rated]
    assert negatives[F.ITEM_ID].between(1, 60).all()
    assert negatives[F.ITEM_ID].nunique() > 30  # Uniform over the catalog, not a few items.
    # Side features joined from the user and item tables; item 3 has no year: left empty.
    users = tables.users.set_index(F.USER_ID)
    assert (frame[F.AGE].to_numpy() == users.loc[frame[F.USER_ID], F.AGE].to_numpy()).all()
    assert frame.loc[frame[F.ITEM_ID] == 3, F.YEAR].isna().all()
    assert frame.loc[frame[F.ITEM_ID] != 3, F.YEAR].notna().all()
    assert frame[F.TITLE].str.startswith("Movie ").all()


def test_span_files_pass_the_data_components_row_checks(written):
    out, found = written
    path = str(out / synth.span_name(found[0]) / spans.MOVIELENS_FILE)
    with open(path, newline="") as handle:
        checked = list(data_parse.csv_rows(path, handle))
    assert not [row for row in checked if isinstance(row, data_parse.RowError)]
    assert len(checked) == len(read_span(out, found[0]))


def test_same_seed_same_spans_and_rewriting_replaces_them(movielens_dir, tmp_path):
    first = spans.write_movielens_spans(movielens_dir, tmp_path / "a", min_ratings=MIN_RATINGS)
    again = spans.write_movielens_spans(movielens_dir, tmp_path / "b", min_ratings=MIN_RATINGS)
    other = spans.write_movielens_spans(
        movielens_dir, tmp_path / "c", seed=7, min_ratings=MIN_RATINGS
    )
    assert first == again == other

    def content(name: str) -> bytes:
        return (tmp_path / name / "span-0001" / spans.MOVIELENS_FILE).read_bytes()

    assert content("a") == content("b") != content("c")
    # Fewer, longer spans over the same folder: the extra old span folders go.
    fewer = spans.write_movielens_spans(movielens_dir, tmp_path / "a", days=35, negatives=0)
    assert len(fewer) < len(first)
    assert sorted(spans.find_spans(tmp_path / "a")) == fewer


@pytest.mark.parametrize(
    "counts, expected",
    [
        ([300, 50, 60, 250, 400], [1, 2, 2, 2, 3]),  # Short weeks join the next one.
        ([300, 250, 20], [1, 2, 2]),  # A short tail joins the last span.
        ([20, 30], [1, 1]),  # Too few for even one: a single span.
    ],
)
def test_short_weeks_are_merged_into_the_following_span(counts, expected):
    week = 7 * synth.DAY_S
    stamps = np.concatenate([1_000 + k * week + np.arange(n) for k, n in enumerate(counts)]).astype(
        np.int64
    )
    cut = spans.cut_weeks(stamps, days=7, min_rows=200)
    assert cut.tolist() == np.repeat(expected, counts).tolist()


def test_a_user_who_rated_everything_gets_no_negatives():
    rated = pd.DataFrame({F.USER_ID: [1, 1, 2], F.ITEM_ID: [1, 2, 1]})
    drawn = spans.sample_unrated(np.array([1, 2, 2]), rated, np.array([1, 2]), 2, seed=0)
    assert drawn.tolist() == [[-1, -1], [2, 2], [2, 2]]


def test_find_spans_reads_tfx_span_names(tmp_path):
    for name in ("span-3", "span-0010", "span-x", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "span-4").write_text("a file, not a span")
    assert spans.find_spans(tmp_path) == {3: tmp_path / "span-3", 10: tmp_path / "span-0010"}
    (tmp_path / "span-03").mkdir()
    with pytest.raises(DataError, match="span 3 twice"):
        spans.find_spans(tmp_path)


def test_span_files_skip_hidden_and_metadata_files(tmp_path):
    for name in ("part-00000.csv", "_synth.json", ".part-00001.csv.tmp", "b.csv"):
        (tmp_path / name).write_text("")
    assert [p.name for p in spans.span_files(tmp_path)] == ["b.csv", "part-00000.csv"]
