"""Data layer: labelling rules, negatives, splits, loaders and bad-input messages."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtrec import names as F
from mtrec.data import dataset, movielens
from mtrec.errors import DataError
from tests.support.synthetic import make_interactions_csv, make_movielens_dir


def test_label_rules_click_and_purchase_threshold():
    ratings = pd.DataFrame(
        {
            F.USER_ID: [1, 1, 2],
            F.ITEM_ID: [1, 2, 3],
            F.RATING: [3.0, 4.0, 5.0],
            F.TIMESTAMP: [1, 2, 3],
        }
    )
    labelled = dataset.label_ratings(ratings, purchase_min_rating=4.0)
    assert labelled[F.CLICK].tolist() == [1, 1, 1]
    assert labelled[F.PURCHASE].tolist() == [0, 1, 1]


def test_negatives_are_unrated_reproducible_and_unlabelled():
    positives = dataset.label_ratings(
        pd.DataFrame(
            {
                F.USER_ID: [1, 1, 2],
                F.ITEM_ID: [1, 2, 3],
                F.RATING: [5.0, 2.0, 4.0],
                F.TIMESTAMP: [10, 20, 30],
            }
        ),
        4.0,
    )
    items = np.arange(1, 21)
    first = dataset.sample_negatives(positives, items, per_positive=4, seed=7)
    again = dataset.sample_negatives(positives, items, per_positive=4, seed=7)
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 12
    rated = set(zip(positives[F.USER_ID], positives[F.ITEM_ID], strict=True))
    assert not rated & set(zip(first[F.USER_ID], first[F.ITEM_ID], strict=True))
    assert first[F.RATING].isna().all()
    assert (first[F.CLICK] == 0).all() and (first[F.PURCHASE] == 0).all()
    # Each negative carries the timestamp of a positive of the same user.
    assert sorted(first.loc[first[F.USER_ID] == 1, F.TIMESTAMP].unique()) == [10, 20]
    assert len(dataset.sample_negatives(positives, items, 4, seed=8).merge(first)) < 12


def test_time_split_puts_the_most_recent_rows_in_eval():
    frame = pd.DataFrame({F.TIMESTAMP: np.arange(100), F.CLICK: 1, F.USER_ID: 1})
    past, recent = dataset.time_split(frame, 0.2)
    assert len(recent) == 20 and past[F.TIMESTAMP].max() < recent[F.TIMESTAMP].min()


def test_slice_columns_come_from_training_interactions():
    train = pd.DataFrame(
        {
            F.USER_ID: [1] * 3 + [2] * 30 + [4] * 101,
            F.ITEM_ID: [7] * 3 + [8] * 30 + [9] * 101,
            F.CLICK: 1,
            F.AGE: 30,
            F.GENRES: "Drama",
        }
    )
    evaluation = pd.DataFrame(
        {
            F.USER_ID: [1, 2, 3, 4],
            F.ITEM_ID: [7, 8, 9, 10],
            F.CLICK: 1,
            F.AGE: [17, 30, 60, 0],
            F.GENRES: ["Comedy|Drama", "Drama", "", "Action"],
        }
    )
    out = dataset.add_slice_columns({"train": train, "eval": evaluation}, cold_max=20)
    assert out["eval"][F.USER_ACTIVITY].tolist() == ["cold", "warm", "cold", "warm"]
    assert out["eval"][F.ITEM_POPULARITY].tolist() == ["cold", "mid", "popular", "cold"]
    assert out["eval"][F.AGE_BUCKET].tolist() == ["under 18", "25-34", "56+", "unknown"]
    assert out["eval"][F.GENRE].tolist() == [
        ["Comedy", "Drama"],
        ["Drama"],
        ["unknown"],
        ["Action"],
    ]


def test_grouplens_and_recbole_layouts_parse_to_the_same_tables(tmp_path: Path):
    grouplens = make_movielens_dir(tmp_path / "gl", n_users=5, n_items=8, ratings_per_user=3)
    tables = movielens.load(grouplens)
    recbole = tmp_path / "rb"
    recbole.mkdir()
    inter = tables.ratings.rename(
        columns={
            F.USER_ID: "user_id:token",
            F.ITEM_ID: "item_id:token",
            F.RATING: "rating:float",
            F.TIMESTAMP: "timestamp:float",
        }
    )
    inter.to_csv(recbole / "ml-100k.inter", sep="\t", index=False)
    users = pd.read_csv(grouplens / "u.user", sep="|", header=None, dtype=str)
    users.columns = [
        "user_id:token",
        "age:token",
        "gender:token",
        "occupation:token",
        "zip_code:token",
    ]
    users.to_csv(recbole / "ml-100k.user", sep="\t", index=False)
    items = pd.DataFrame(
        {
            "item_id:token": tables.items[F.ITEM_ID],
            "movie_title:token_seq": tables.items[F.TITLE],
            "release_year:token": tables.items[F.YEAR],
            "class:token_seq": tables.items[F.GENRES].str.replace("|", " "),
        }
    )
    items.to_csv(recbole / "ml-100k.item", sep="\t", index=False)
    other = movielens.load(recbole)
    pd.testing.assert_frame_equal(tables.ratings, other.ratings, check_dtype=False)
    pd.testing.assert_frame_equal(tables.users, other.users, check_dtype=False)
    assert tables.items[F.GENRES].tolist() == other.items[F.GENRES].tolist()
    assert not tables.items[F.TITLE].str.contains(r"\(\d{4}\)").any()  # Year cut from titles.


def test_not_a_movielens_directory_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match="not a MovieLens-100K directory"):
        movielens.load(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("user_id,item_id,click\n1,2,1\n", "missing required column(s) purchase"),
        (
            "user_id,item_id,click,purchase,rating\n1,2,1,0,great\n",
            "column 'rating' must be numeric; row 1 has 'great'",
        ),
        ("user_id,item_id,click,purchase\n1,2,2,0\n", "label 'click' must be 0 or 1"),
        (
            "user_id,item_id,click,purchase,rating\n1,2,1,0,-3\n",
            "label 'rating' must be a positive",
        ),
        ("user_id,item_id,click,purchase\n1,,1,0\n", "column 'item_id' is empty on row 1"),
        ("user_id,item_id,click,purchase\n", "the file has no data rows"),
    ],
)
def test_bad_interaction_files_name_the_file_and_the_problem(tmp_path: Path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        dataset.read_interactions(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_examples_round_trip_through_tfrecords(tmp_path: Path):
    import tensorflow as tf

    source = make_movielens_dir(tmp_path / "ml", n_users=20, n_items=30, ratings_per_user=5)
    info = dataset.build_movielens(source, tmp_path / "data", dataset.DataConfig())
    splits = info.manifest["splits"]
    assert sum(s["clicks"] for s in splits.values()) == 100
    assert sum(s["examples"] for s in splits.values()) == 500
    records = tf.data.TFRecordDataset(
        str(Path(info.root) / "eval" / "data.tfrecord.gz"), compression_type="GZIP"
    )
    examples = [tf.train.Example.FromString(r.numpy()) for r in records]
    assert len(examples) == splits["eval"]["examples"]
    for example in examples:
        feature = example.features.feature
        assert set(feature) == set(F.EXAMPLE_COLUMNS)
        has_rating = len(feature[F.RATING].float_list.value) == 1
        assert has_rating == (feature[F.CLICK].int64_list.value[0] == 1)
    # Same source and config: reused, not rewritten.
    again = dataset.build_movielens(source, tmp_path / "data", dataset.DataConfig())
    assert again.root == info.root and again.manifest == info.manifest


def test_bring_your_own_files_keep_their_labels(tmp_path: Path):
    train = make_interactions_csv(tmp_path / "train.csv", n_rows=200, seed=1)
    evaluation = make_interactions_csv(tmp_path / "eval.csv", n_rows=50, seed=2)
    info = dataset.build_from_files(train, evaluation, tmp_path / "data", dataset.DataConfig())
    splits = info.manifest["splits"]
    assert info.manifest["mode"] == "explicit"
    assert splits["eval"]["examples"] == 50
    assert splits["train"]["examples"] + splits["valid"]["examples"] == 200
    assert splits["eval"]["clicks"] == int(pd.read_csv(evaluation)[F.CLICK].sum())


def _pairs(path: Path) -> list[tuple[int, int, int]]:
    """(user, item, click) of every example in a written split."""
    import tensorflow as tf

    out = []
    for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        out.append(tuple(feature[k].int64_list.value[0] for k in (F.USER_ID, F.ITEM_ID, F.CLICK)))
    return out


def test_explicit_ratings_split_keeps_eval_apart(tmp_path: Path):
    source = make_movielens_dir(tmp_path / "ml", n_users=30, n_items=40, ratings_per_user=8)
    ratings = pd.read_csv(
        source / "u.data",
        sep="\t",
        header=None,
        names=["user_id", "item_id", "rating", "timestamp"],
    )
    train_file, eval_file = tmp_path / "base.csv", tmp_path / "test.csv"
    ratings.iloc[48:].to_csv(train_file, index=False)  # Like u1: the first rows are test.
    ratings.iloc[:48].to_csv(eval_file, index=False)
    info = dataset.build_from_ratings(
        train_file, eval_file, source, tmp_path / "data", dataset.DataConfig()
    )
    assert info.manifest["mode"] == "explicit-ratings"
    root = Path(info.root)
    evaluation = _pairs(root / "eval" / "data.tfrecord.gz")
    train = _pairs(root / "train" / "data.tfrecord.gz") + _pairs(
        root / "valid" / "data.tfrecord.gz"
    )
    eval_rated = set(ratings.iloc[:48][["user_id", "item_id"]].itertuples(index=False, name=None))
    base_rated = set(ratings.iloc[48:][["user_id", "item_id"]].itertuples(index=False, name=None))
    # Eval positives are exactly the eval file; train positives exactly the train file.
    assert {(u, i) for u, i, c in evaluation if c} == eval_rated
    assert {(u, i) for u, i, c in train if c} == base_rated
    assert len(evaluation) == 48 * 5 and len(train) == (len(ratings) - 48) * 5
    # Negatives are never rated pairs (eval negatives avoid train ratings too).
    assert not {(u, i) for u, i, c in evaluation if not c} & (eval_rated | base_rated)
    assert not {(u, i) for u, i, c in train if not c} & base_rated
    # Validation: each user's most recent train ratings, at least one per user.
    valid = _pairs(root / "valid" / "data.tfrecord.gz")
    per_user = ratings.iloc[48:].groupby("user_id").size()
    assert {u for u, _, c in valid if c} == set(per_user[per_user >= 2].index)


def test_ratings_files_are_checked(tmp_path: Path):
    bad = tmp_path / "r.csv"
    bad.write_text("user_id,item_id,rating,timestamp\n1,2,7,100\n")
    with pytest.raises(DataError, match=r"ratings must lie in \[1, 5\]; row 1 has 7"):
        dataset.read_ratings(bad)
    bad.write_text("user,item,rating\n1,2,3\n")
    with pytest.raises(
        DataError,
        match="needs the columns user_id,item_id,rating,timestamp; "
        "missing user_id, item_id, timestamp",
    ):
        dataset.read_ratings(bad)
