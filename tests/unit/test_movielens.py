"""MovieLens-100K's pandas tables (recommend's feature lookup, the quality benchmark): both
published layouts parse to the same tables, and another folder is a clear error."""

from pathlib import Path

import pandas as pd
import pytest

from mtrec import names as F
from mtrec.data import movielens
from mtrec.errors import DataError
from tests.support.synthetic import make_movielens_dir


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
