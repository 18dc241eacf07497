"""Data rules, one record at a time: parsing and checks, labels, negatives, splits, slices."""

import numpy as np
import pytest

from mtrec import names as F
from mtrec.data import build, parse
from mtrec.data import source as S
from mtrec.data.config import DataConfig
from mtrec.data.parse import RowError


def _csv(text: str) -> list:
    return list(parse.csv_rows("f.csv", iter(text.splitlines(keepends=True))))


def test_label_rules_click_and_purchase_threshold():
    rows = [{F.RATING: r} for r in (3.0, 4.0, 5.0)]
    labelled = [build.label(row, purchase_min_rating=4.0) for row in rows]
    assert [r[F.CLICK] for r in labelled] == [1, 1, 1]
    assert [r[F.PURCHASE] for r in labelled] == [0, 1, 1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "user_id,item_id,click,purchase,rating\n1,2,1,0,great\n",
            "column 'rating' must be numeric; row 1 has 'great'",
        ),
        (
            "user_id,item_id,click,purchase\n1,2,1,0\n1,2,2,0\n",
            "label 'click' must be 0 or 1; row 2 has 2",
        ),
        (
            "user_id,item_id,click,purchase,rating\n1,2,1,0,-3\n",
            "label 'rating' must be a positive number or empty (unknown); row 1 has -3",
        ),
        ("user_id,item_id,click,purchase\n1,,1,0\n", "column 'item_id' is empty on row 1"),
        (
            "user_id,item_id,click,purchase\n1.5,2,1,0\n",
            "column 'user_id' must hold integers; row 1 has 1.5",
        ),
        (
            "user_id,item_id,click,purchase\n9223372036854775808,2,1,0\n",
            "column 'user_id' must hold 64-bit integers; row 1 has 9223372036854775808",
        ),
        ("user_id,item_id,click,purchase\n", "the file has no data rows"),
    ],
)
def test_bad_log_rows_name_the_row_and_the_problem(content, message):
    errors = [r for r in _csv(content) if isinstance(r, RowError)]
    assert errors and errors[0].path == "f.csv"
    assert errors[0].message == message
    assert str(errors[0].as_error()) == f"f.csv: {message}"


def test_log_rows_are_typed_and_missing_values_get_the_shared_defaults():
    (row,) = _csv("user_id,item_id,click,purchase,zip_prefix,age,rating\n7,8,1,0,02139,,\n")
    assert row[F.USER_ID] == 7 and row[F.CLICK] == 1
    assert row[F.ZIP_PREFIX] == "02139"  # A string column that looks like a number stays text.
    assert row[F.RATING] is None  # Unknown, not 0.
    for column in (F.AGE, F.GENDER, F.OCCUPATION, F.YEAR, F.TITLE, F.GENRES, F.TIMESTAMP):
        assert row[column] == F.MISSING_DEFAULTS[column]


def test_missing_required_columns_are_named():
    with pytest.raises(Exception, match=r"f.csv: missing required column\(s\) purchase"):
        parse.check_log_columns(["user_id", "item_id", "click"], "f.csv")


def test_ratings_files_with_a_header_or_tab_separated_without_one():
    with_header = parse.ratings_rows(
        "r.csv", iter(["user_id,item_id,rating,timestamp\n", "1,2,3,100\n"])
    )
    tab = parse.ratings_rows("u1.base", iter(["1\t2\t3\t100\n"]))
    assert (
        list(with_header)
        == list(tab)
        == [{F.USER_ID: 1, F.ITEM_ID: 2, F.RATING: 3.0, F.TIMESTAMP: 100}]
    )
    (bad,) = parse.ratings_rows(
        "r.csv", iter(["user_id,item_id,rating,timestamp\n", "1,2,7,100\n"])
    )
    assert bad.message == "ratings must lie in [1, 5]; row 1 has 7"
    (bad,) = parse.ratings_rows("r.csv", iter(["user,item,rating\n", "1,2,3\n"]))
    assert bad.message == (
        "a ratings file needs the columns user_id,item_id,rating,timestamp; "
        "missing user_id, item_id, timestamp"
    )


def test_movielens_side_files_parse_the_same_in_both_layouts():
    grouplens_item = "7|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|" + "|".join("0" * 13)
    (item,) = parse.item_rows("u.item", iter([grouplens_item + "\n"]), S.GROUPLENS)
    recbole = [
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n",
        "7\tToy Story\t1995\tAnimation Children's Comedy\n",
    ]
    (same,) = parse.item_rows("ml-100k.item", iter(recbole), S.RECBOLE)
    assert (
        item
        == same
        == {
            F.ITEM_ID: 7,
            F.TITLE: "Toy Story",
            F.YEAR: 1995,
            F.GENRES: "Animation|Children's|Comedy",
        }
    )
    (undated,) = parse.item_rows(
        "u.item", iter(["267|unknown||||" + "|".join("0" * 19) + "\n"]), S.GROUPLENS
    )
    assert undated[F.YEAR] == 0  # Unknown: Transform fills the training mean.
    (user,) = parse.user_rows("u.user", iter(["1|24|M|technician|k1a2b\n"]), S.GROUPLENS)
    assert user == {
        F.USER_ID: 1,
        F.AGE: 24,
        F.GENDER: "M",
        F.OCCUPATION: "technician",
        F.ZIP_PREFIX: "K1A",
    }


def test_negatives_avoid_the_excluded_items_and_depend_on_user_and_seed_only():
    catalog = np.arange(1, 101)
    rated = {1, 2, 3}
    first = build.sample_negatives(catalog, rated, 12, build.user_rng(42, 5, 0))
    again = build.sample_negatives(catalog, rated, 12, build.user_rng(42, 5, 0))
    other_user = build.sample_negatives(catalog, rated, 12, build.user_rng(42, 6, 0))
    assert first == again != other_user
    assert len(set(first)) == 12 and not set(first) & rated
    # A heavy user: few candidates left, drawn from exactly those.
    dense = build.sample_negatives(catalog, set(range(1, 96)), 8, build.user_rng(42, 5, 0))
    assert set(dense) <= set(range(96, 101)) and len(dense) == 8
    assert build.sample_negatives(catalog, set(range(1, 101)), 4, build.user_rng(1, 1, 0)) == []


def test_cutoffs_split_by_time_and_explicit_files_keep_eval():
    config = DataConfig(eval_fraction=0.2, valid_fraction=0.25)
    quantiles = list(range(101))  # Timestamps 0..100.
    cutoffs = build._cutoffs(quantiles, True, config)
    assert (cutoffs["eval"], cutoffs["valid"]) == (80, 60)
    split = [
        build._split_by_time({F.TIMESTAMP: t, build.ROLE: S.INTERACTIONS}, cutoffs, config)
        for t in (0, 60, 61, 80, 81, 100)
    ]
    assert split == [F.TRAIN, F.TRAIN, F.VALID, F.VALID, F.EVAL, F.EVAL]
    explicit = build._cutoffs(quantiles, False, config)
    assert explicit["eval"] is None and explicit["valid"] == 75
    row = {F.TIMESTAMP: 0, build.ROLE: S.EVAL}
    assert build._split_by_time(row, explicit, config) == F.EVAL


def test_slice_columns():
    assert [build.item_popularity(c) for c in (0, 20, 21, 100, 101)] == [
        "cold",
        "cold",
        "mid",
        "mid",
        "popular",
    ]
    assert [build.age_bucket(a) for a in (17, 30, 60, 0)] == ["under 18", "25-34", "56+", "unknown"]
    assert build.genre_list("Comedy|Drama") == ["Comedy", "Drama"]
    assert build.genre_list("") == ["unknown"]


def test_tfrecord_frames_are_byte_identical_to_tensorflows_writer(tmp_path):
    import tensorflow as tf

    records = [b"", b"a", bytes(range(256)) * 40]
    path = tmp_path / "records.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    assert build.tfrecord_frames(records) == path.read_bytes()


def test_a_shuffle_bucket_is_in_the_same_order_whatever_order_its_files_are_read_in(monkeypatch):
    def row(user: int, item: int, purchase: int) -> dict:
        return {F.USER_ID: user, F.ITEM_ID: item, F.TIMESTAMP: 7, F.PURCHASE: purchase}

    first = [(0.5, row(1, 2, 0)), (0.25, row(3, 4, 0))]
    second = [(0.5, row(1, 2, 1)), (0.75, row(5, 6, 0))]  # The same event, purchase logged.
    orders = []
    for files in ([first, second], [second, first]):
        monkeypatch.setattr(build.spill, "read", lambda paths, f=files: [p for x in f for p in x])
        orders.append(build._in_key_order(["a", "b"]))
    assert orders[0] == orders[1]
    assert [(r[F.USER_ID], r[F.PURCHASE]) for r in orders[0]] == [(3, 0), (1, 0), (1, 1), (5, 0)]
