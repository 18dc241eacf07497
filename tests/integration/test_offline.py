"""`mtrec score` and `mtrec recommend` on a real exported model, over CSV, JSON Lines and
TFRecord files written here: values typed by the model's raw feature spec, missing values
as names.MISSING_DEFAULTS, and every user error as one line."""

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mtrec import names as F
from mtrec.cli.main import build_parser, main
from mtrec.data import movielens
from mtrec.examples import to_example
from mtrec.models.hparams import ModelConfig
from tests.support.synthetic import make_movielens_dir
from tests.support.training import serve, train_and_export

CONFIG = ModelConfig(
    embedding_dim=8, side_dim=16, bottom_units=(16,), head_units=(8,), batch_size=64, epochs=3
)
# The synthetic MovieLens train_and_export trains on; item UNDATED has no year in the copy
# that --join-movielens reads.
MOVIELENS = {"n_users": 40, "n_items": 30, "ratings_per_user": 8}
UNDATED = 4
FEATURES = ("age", "gender", "occupation", "zip_prefix", "genres", "year", "title")
# Each pair as its CSV line (after user_id,item_id) and the typed row the model should see.
USER = {"age": 30, "gender": "M", "occupation": "engineer", "zip_prefix": "551"}
ITEM = {"genres": "Action|Comedy", "year": 0, "title": "Movie Blast 5"}
BASE = {"user_id": 3, "item_id": 5, **USER, **ITEM}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(root, SavedModel folder, the reloaded model) of one model trained and exported."""
    root = tmp_path_factory.mktemp("offline")
    result = train_and_export(root, CONFIG)
    return root, Path(result.loaded.export_dir), result.loaded


def run(capsys, *argv):
    """(exit code, stdout, stderr) of ``mtrec argv``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def score(capsys, model, path, tmp_path, *extra):
    output = tmp_path / f"{Path(path).name}.scores.csv"
    code, out, err = run(
        capsys, "score", "--model", model, "--input", path, "--output", output, *extra
    )
    assert code == 0, err
    return pd.read_csv(output), err


def expected(loaded, rows):
    """Each row's heads from serving_default, fed with explicitly typed tf.Examples."""
    served = serve(loaded, rows)
    return np.stack([served[head].reshape(-1) for head in F.HEADS], axis=1)


def heads(frame):
    return frame[list(F.HEADS)].to_numpy()


def write_csv(path, header, lines):
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


HEADER = "user_id,item_id,age,gender,occupation,zip_prefix,genres,year,title,comment"
CSV_LINES = [
    "3,5,30,M,engineer,551,Action|Comedy,,Movie Blast 5,year empty",
    "3,5,30,M,engineer,551,Action|Comedy,0,Movie Blast 5,year 0",
    "3,5,NaN,M,engineer,551,Action|Comedy,1990,Movie Blast 5,age NaN",
    "3,5,0,M,engineer,551,Action|Comedy,1990,Movie Blast 5,age 0",
    "7,2,41,F,writer,102,Romance,1975,Movie Love 2,another pair",
    "999,9999,22,,,,,,,unknown ids and empty strings",
]
CSV_ROWS = [
    BASE,
    BASE,
    {**BASE, "age": 0, "year": 1990},
    {**BASE, "age": 0, "year": 1990},
    {
        "user_id": 7,
        "item_id": 2,
        "age": 41,
        "gender": "F",
        "occupation": "writer",
        "zip_prefix": "102",
        "genres": "Romance",
        "year": 1975,
        "title": "Movie Love 2",
    },
    {"user_id": 999, "item_id": 9999, **{k: F.MISSING_DEFAULTS[k] for k in FEATURES}, "age": 22},
]


def test_score_types_the_documented_columns_by_the_models_spec(trained, capsys, tmp_path):
    _, model, loaded = trained
    path = write_csv(tmp_path / "pairs.csv", HEADER, CSV_LINES)
    scores, err = score(capsys, model, path, tmp_path)
    assert list(scores.columns) == ["user_id", "item_id", *F.HEADS]
    assert scores[["user_id", "item_id"]].values.tolist() == [
        [3, 5],
        [3, 5],
        [3, 5],
        [3, 5],
        [7, 2],
        [999, 9999],
    ]
    got = heads(scores)
    # zip_prefix "551" is read as the string the model takes, empty values as their defaults.
    np.testing.assert_allclose(got, expected(loaded, CSV_ROWS), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[0], got[1])  # A missing year is an explicit 0.
    np.testing.assert_array_equal(got[2], got[3])  # A NaN age is an explicit 0.
    assert not np.allclose(got[0], got[2])  # Scores move with the features...
    assert not np.allclose(got[0], got[4])  # ...and with the pair.
    assert np.isfinite(got).all()
    # The column the model does not know: one note, not an error.
    assert err.count("mtrec: note:") == 1
    assert f"{path}: ignored column(s) comment" in err
    assert "error" not in err


def test_jsonl_and_tfrecord_inputs_score_as_the_csv_does(trained, capsys, tmp_path):
    _, model, _ = trained
    csv_scores, _ = score(
        capsys, model, write_csv(tmp_path / "pairs.csv", HEADER, CSV_LINES[:1]), tmp_path
    )
    reference = heads(csv_scores)[0]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {**BASE, "year": None},  # zip_prefix "551" as a string.
                {**BASE, "zip_prefix": 551, "year": ""},  # As a number: the same text.
                {**BASE, "genres": ["Action", "Comedy"], "age": 30.0},
                {"item_id": 5, "user_id": "3", **USER, **ITEM, "extra": [1, 2]},
            ]
        )
        + "\n\n"  # A blank line is no row.
    )
    scores, err = score(capsys, model, jsonl, tmp_path)
    assert len(scores) == 4
    for row in heads(scores):
        np.testing.assert_array_equal(row, reference)
    assert f"{jsonl}: ignored column(s) extra" in err
    # Gzipped CSV and JSON Lines read as their text does.
    for name, text in (
        ("pairs.csv.gz", "\n".join([HEADER, CSV_LINES[0]]) + "\n"),
        ("pairs.jsonl.gz", jsonl.read_text()),
    ):
        zipped = tmp_path / name
        zipped.write_bytes(gzip.compress(text.encode()))
        scores, _ = score(capsys, model, zipped, tmp_path)
        assert len(scores) == (1 if name.startswith("pairs.csv") else 4)
        for row in heads(scores):
            np.testing.assert_array_equal(row, reference)
    # The pipeline's shape of example: labels and slice columns ride along and are ignored.
    labelled = {
        **BASE,
        "rating": 4.0,
        "click": 1,
        "purchase": 0,
        "timestamp": 881250949,
        "age_bucket": "25-34",
        "genre": ["Action", "Comedy"],
    }
    for name, compression in (("pairs.tfrecord", ""), ("pairs.tfrecord.gz", "GZIP")):
        path = tmp_path / name
        with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression)) as writer:
            writer.write(to_example(labelled))
            writer.write(to_example({"user_id": 3, "item_id": 5, **USER, **ITEM}))
        scores, err = score(capsys, model, path, tmp_path)
        assert len(scores) == 2
        for row in heads(scores):
            np.testing.assert_array_equal(row, reference)
        assert "note" not in err


def test_the_pipelines_own_examples_can_be_scored(trained, capsys, tmp_path):
    root, model, _ = trained
    examples = sorted(root.glob("data/*/Split-train/*.gz"))[0]  # One file per shuffle bucket.
    count = sum(1 for _ in tf.data.TFRecordDataset(str(examples), compression_type="GZIP"))
    scores, err = score(capsys, model, examples, tmp_path)
    assert len(scores) == count > 0
    assert np.isfinite(heads(scores)).all()
    assert scores[F.CLICK].std() > 0
    assert "note" not in err


@pytest.mark.parametrize(
    ("name", "lines", "message"),
    [
        (
            "pairs.csv",
            ["user_id,item_id,age", "3,5,30", "3,5,abc"],
            "{path}, row 2, column 'age': 'abc' is not an integer (the model reads age as int64)",
        ),
        (
            "pairs.csv",
            ["user_id,item_id,year", "3,5,1990.5"],
            "{path}, row 1, column 'year': '1990.5' is not an integer "
            "(the model reads year as int64)",
        ),
        (
            "pairs.csv",
            ["user_id,item_id", "3,", "3,5"],
            "{path}, row 1, column 'item_id': a value is required, found none",
        ),
        (
            "pairs.csv",
            ["user_id,item_id", "3,5", "1180591620717411303424,5"],
            "{path}, row 2, column 'user_id': '1180591620717411303424' is not a 64-bit integer "
            "(the model reads user_id as int64)",
        ),
        (
            "pairs.jsonl",
            ['{"user_id": 3, "item_id": 5, "age": 1e30}'],
            "{path}, line 1, column 'age': 1e+30 is not a 64-bit integer "
            "(the model reads age as int64)",
        ),
        (
            "pairs.jsonl",
            ['{"user_id": 3, "item_id": 5}', "", '{"user_id": 3, "item_id": 5, "age": "x"}'],
            "{path}, line 3, column 'age': 'x' is not an integer (the model reads age as int64)",
        ),
        (
            "pairs.jsonl",
            ['{"user_id": 3, "item_id": 5', ""],
            "{path}, line 1: not JSON (Expecting ',' delimiter)",
        ),
        (
            "pairs.csv",
            ["user,item", "3,5"],
            "{path}: scoring needs column(s) user_id, item_id; found user, item",
        ),
        (  # Named as gzipped but plain text.
            "pairs.csv.gz",
            ["user_id,item_id", "3,5"],
            "{path}: not a readable CSV (Not a gzipped file (b'us'))",
        ),
        (
            "pairs.jsonl.gz",
            ['{"user_id": 3, "item_id": 5}'],
            "{path}: not a readable gzip file (Not a gzipped file (b'{{\"'))",
        ),
    ],
)
def test_a_bad_value_is_one_error_naming_file_row_and_column(
    trained, capsys, tmp_path, name, lines, message
):
    _, model, _ = trained
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    output = tmp_path / "scores.csv"
    code, out, err = run(capsys, "score", "--model", model, "--input", path, "--output", output)
    assert code == 2
    assert err == f"mtrec: error: {message.format(path=path)}\n"
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # No staging file left either.


@pytest.mark.parametrize(
    ("command", "output", "suffix"),
    [("score", "scores.jsonl", ".jsonl"), ("recommend", "top.csv.gz", ".gz")],
)
def test_an_output_named_as_another_format_is_one_line(
    trained, capsys, tmp_path, command, output, suffix
):
    _, model, _ = trained
    rows = write_csv(tmp_path / "rows.csv", "user_id,item_id", ["3,5"])
    source = "--input" if command == "score" else "--users"
    target = tmp_path / output
    code, _, err = run(capsys, command, "--model", model, source, rows, "--output", target)
    assert code == 2
    assert (
        err
        == f"mtrec: error: --output {target}: the output is plain CSV; name it .csv, not {suffix}\n"
    )
    assert not target.exists()


def test_a_folder_that_is_not_a_saved_model_is_one_line(trained, capsys, tmp_path):
    _, saved, _ = trained
    pairs = write_csv(tmp_path / "pairs.csv", "user_id,item_id", ["3,5"])
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"not a protocol buffer")
    no_variables = tmp_path / "push" / "7"
    no_variables.mkdir(parents=True)
    (no_variables / "saved_model.pb").write_bytes((saved / "saved_model.pb").read_bytes())
    cases = {
        tmp_path / "absent": "{m}: no such model folder",
        pairs: "{m}: not a model folder (a SavedModel or a push folder)",
        empty: "{m}: neither a SavedModel nor a folder of numbered versions",
        corrupt: "{m}: not a loadable SavedModel (",
        tmp_path / "push": f"{no_variables}: not a loadable SavedModel (",
    }
    for model, message in cases.items():
        for command in (
            ["score", "--input", pairs],
            ["recommend", "--users", pairs],
        ):
            output = tmp_path / "out.csv"
            code, _, err = run(capsys, *command, "--model", model, "--output", output)
            assert code == 2, (model, err)
            assert err.startswith(f"mtrec: error: {message.format(m=model)}"), err
            assert err.count("\n") == 1 and "Traceback" not in err
            assert not output.exists()


@pytest.fixture
def movielens_cache(tmp_path, monkeypatch):
    """The synthetic MovieLens the model trained on, as fetch() finds it in the cache (no
    network), with item UNDATED released in an unknown year."""
    cache = tmp_path / "cache"
    make_movielens_dir(cache / "ml-100k", undated_items=(UNDATED,), **MOVIELENS)
    monkeypatch.setenv("MTREC_CACHE_DIR", str(cache))
    assert movielens.fetch() == cache / "ml-100k"
    return movielens.load(cache / "ml-100k")


def test_score_join_movielens_with_a_movie_without_a_year(
    trained, capsys, tmp_path, movielens_cache
):
    _, model, loaded = trained
    tables = movielens_cache
    items = tables.items.set_index(F.ITEM_ID)
    assert np.isnan(items.loc[UNDATED, F.YEAR])  # The joined column is float NaN.
    users = tables.users.set_index(F.USER_ID)
    pairs = write_csv(
        tmp_path / "pairs.csv", "user_id,item_id,gender", ["3,4,F", "5,6,", "999,4,F"]
    )
    scores, _ = score(capsys, model, pairs, tmp_path, "--join-movielens")

    def known(user, item, **own):
        row = {"user_id": user, "item_id": item, **own}
        if user in users.index:
            row.update({k: users.loc[user, k] for k in F.USER_FEATURES})
        year = items.loc[item, F.YEAR]
        return {
            **row,
            "age": int(row.get("age", 0)),
            "genres": items.loc[item, F.GENRES],
            "title": items.loc[item, F.TITLE],
            "year": 0 if np.isnan(year) else int(year),
        }

    rows = [
        known(3, UNDATED),  # MovieLens's gender replaces the file's.
        known(5, 6),
        # A user MovieLens does not know keeps the file's features (or their defaults).
        known(999, UNDATED, gender="F", occupation="unknown", zip_prefix="unknown"),
    ]
    assert rows[0]["year"] == 0 and rows[1]["year"] > 0
    np.testing.assert_allclose(heads(scores), expected(loaded, rows), rtol=1e-5, atol=1e-6)


def recommend(capsys, model, users, tmp_path, *extra):
    output = tmp_path / f"{Path(users).name}.recs.csv"
    code, _, err = run(
        capsys,
        "recommend",
        "--model",
        model,
        "--users",
        users,
        "--k",
        5,
        "--output",
        output,
        *extra,
    )
    assert code == 0, err
    return pd.read_csv(output), err


def test_recommend_reads_csv_and_jsonl_alike_and_types_by_the_spec(trained, capsys, tmp_path):
    _, model, _ = trained
    csv_users = write_csv(
        tmp_path / "users.csv",
        "user_id,age,gender,occupation,zip_prefix,note",
        ["3,30,M,engineer,551,x", "7,,,,,y", "999,41,F,writer,102,z"],
    )
    jsonl_users = tmp_path / "users.jsonl"
    jsonl_users.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"user_id": 3, **USER, "zip_prefix": 551},
                {"user_id": 7, "age": None},
                {
                    "user_id": 999,
                    "age": 41,
                    "gender": "F",
                    "occupation": "writer",
                    "zip_prefix": "102",
                },
            ]
        )
    )
    explicit = write_csv(
        tmp_path / "explicit.csv",
        "user_id,age,gender,occupation,zip_prefix",
        ["3,30,M,engineer,551", "7,0,unknown,unknown,unknown", "999,41,F,writer,102"],
    )
    from_csv, err = recommend(capsys, model, csv_users, tmp_path)
    assert f"{csv_users}: ignored column(s) note" in err
    from_jsonl, _ = recommend(capsys, model, jsonl_users, tmp_path)
    from_explicit, _ = recommend(capsys, model, explicit, tmp_path)
    assert list(from_csv.columns) == ["user_id", "rank", "item_id", "score", *F.HEADS]
    assert from_csv["user_id"].tolist() == [3] * 5 + [7] * 5 + [999] * 5
    assert from_csv["rank"].tolist() == [1, 2, 3, 4, 5] * 3
    pd.testing.assert_frame_equal(from_csv, from_jsonl)
    # Empty values are MISSING_DEFAULTS: the same as writing them out.
    pd.testing.assert_frame_equal(from_csv, from_explicit)
    # Each user's own list: the features move the scores.
    first = from_csv.groupby("user_id")["score"].first()
    assert first.nunique() == 3
    # Items a user has seen are left out.
    top = int(from_csv.loc[from_csv["user_id"] == 3, "item_id"].iloc[0])
    seen = write_csv(tmp_path / "seen.csv", "user_id,item_id,rating", [f"3,{top},5"])
    excluded, _ = recommend(capsys, model, csv_users, tmp_path, "--exclude-seen", seen)
    assert top not in excluded.loc[excluded["user_id"] == 3, "item_id"].tolist()
    pd.testing.assert_frame_equal(
        excluded[excluded["user_id"] != 3].reset_index(drop=True),
        from_csv[from_csv["user_id"] != 3].reset_index(drop=True),
    )


def test_recommend_join_movielens_uses_the_user_side(trained, capsys, tmp_path, movielens_cache):
    _, model, _ = trained
    users = movielens_cache.users.set_index(F.USER_ID)
    ids = write_csv(tmp_path / "ids.csv", "user_id,genres", ["3,Western", "5,"])
    explicit = write_csv(
        tmp_path / "explicit.csv",
        "user_id,age,gender,occupation,zip_prefix",
        [
            ",".join(str(v) for v in [user, *(users.loc[user, k] for k in F.USER_FEATURES)])
            for user in (3, 5)
        ],
    )
    joined, _ = recommend(capsys, model, ids, tmp_path, "--join-movielens")
    plain, _ = recommend(capsys, model, explicit, tmp_path)
    pd.testing.assert_frame_equal(joined, plain)


@pytest.mark.parametrize(("command", "option"), [("score", "--input"), ("recommend", "--users")])
def test_help_documents_the_input_formats(capsys, command, option):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert option in text
    assert ".jsonl" in text and ".tfrecord" in text
