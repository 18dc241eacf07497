"""The Trainer's input: raw examples through Transform's graph, written once to a local
copy and read back every epoch, every example once per pass, reshuffled per pass."""

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from tensorflow.python.autograph.impl import api as autograph_api
from tfx import v1 as tfx

from mtrec import names as F
from mtrec.data import build
from mtrec.data import source as data_source
from mtrec.data.config import DataConfig
from mtrec.models.hparams import ModelConfig
from mtrec.models.training import (
    HISTORY_FILE,
    TRANSFORMED_SHARDS,
    make_dataset,
    run_fn,
    transformed_batches,
)
from tests.support.synthetic import make_movielens_dir
from tests.support.training import run_transform

CONFIG = ModelConfig(batch_size=16, shuffle_buffer=64, seed=3)
KEYS = (
    F.transformed_name(F.USER_ID),
    F.transformed_name(F.ITEM_ID),
    F.LABEL_XF[F.RATING],
    F.LABEL_XF[F.CLICK],
    F.RATING_WEIGHT_XF,
)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer_input")
    source = make_movielens_dir(root / "ml", n_users=30, n_items=25, ratings_per_user=8)
    examples, _ = build.run(data_source.movielens(str(source)), DataConfig(), str(root / "data"))
    pattern = str(Path(examples) / f"Split-{F.TRAIN}" / "*")
    return pattern, run_transform(pattern, root)


def rows(dataset) -> list[tuple]:
    """One pass, as (user, item, rating, click, rating weight, history...) per example."""
    out = []
    for batch in dataset:
        columns = [batch[key].numpy().reshape(-1) for key in KEYS]
        history = batch[F.HISTORY_XF].numpy()
        out += [(*values, *history[i]) for i, values in enumerate(zip(*columns, strict=True))]
    return out


def test_a_pass_over_the_copy_holds_every_example_once_as_transformed(split, tmp_path):
    pattern, output = split
    expected = rows(transformed_batches([pattern], output, CONFIG.batch_size))
    assert len(expected) > 200
    dataset = make_dataset([pattern], output, CONFIG, True, str(tmp_path / "copy"))
    # No autotuning thread, whose join stalled each new epoch (test_read_examples.py).
    assert dataset.options().autotune.enabled is False
    first, second = rows(dataset), rows(dataset)
    assert sorted(first) == sorted(expected) == sorted(second)
    assert first != second  # Each pass takes the shards and batches in a new order.
    assert first != expected  # The records went through the shuffle buffer once.
    # Labels, not only ids, survived the copy: a fifth of the examples are rated clicks.
    ratings = np.array([row[2] for row in first])
    weights = np.array([row[4] for row in first])
    assert 0 < weights.sum() < len(first) and set(ratings[weights == 0]) == {0.0}
    shards = [p for p in (tmp_path / "copy").rglob("*") if p.is_file()]
    assert len(shards) >= TRANSFORMED_SHARDS


def test_the_same_seed_gives_the_same_order_and_no_shuffle_keeps_the_files_order(split, tmp_path):
    pattern, output = split
    one = make_dataset([pattern], output, CONFIG, True, str(tmp_path / "one"))
    two = make_dataset([pattern], output, CONFIG, True, str(tmp_path / "two"))
    assert rows(one) == rows(two)
    plain = make_dataset([pattern], output, CONFIG, False, str(tmp_path / "plain"))
    unshuffled = rows(transformed_batches([pattern], output, CONFIG.batch_size))
    assert rows(plain) == unshuffled == rows(plain)


def converted_by_autograph(work: Callable[[], object]) -> set[str]:
    """The names of the functions AutoGraph rewrote while ``work`` ran."""
    with mock.patch.object(
        autograph_api, "_convert_actual", wraps=autograph_api._convert_actual
    ) as convert:
        work()
    return {
        getattr(call.args[0], "__qualname__", repr(call.args[0])) for call in convert.call_args_list
    }


def test_transforming_the_batches_applies_no_autograph(split):
    """tf.data converts a map's function with AutoGraph unless told not to; rewriting the
    Transform layer's call code took about 4 s of every Trainer."""
    pattern, output = split
    converted = converted_by_autograph(
        lambda: next(iter(transformed_batches([pattern], output, CONFIG.batch_size)))
    )
    # Only read_examples' one-line parsing lambda may be converted.
    assert converted <= {"read_examples.<locals>.<lambda>"}, converted


def test_the_trainer_has_autograph_rewrite_nothing_of_its_own(split, tmp_path):
    """Nothing the Trainer traces branches on a tensor, so AutoGraph rewrites none of it:
    not Keras's train and test functions, tf.data's functions or the metric results read
    after each epoch (together about 1 s of every Trainer). What is left is TF's own
    wrapper of each signature inside tf.saved_model.save."""
    pattern, output = split
    fn_args = tfx.components.FnArgs(
        train_files=[pattern],
        eval_files=[pattern.replace(f"Split-{F.TRAIN}", f"Split-{F.VALID}")],
        transform_output=os.path.dirname(output.transform_savedmodel_dir),
        serving_model_dir=str(tmp_path / "serving"),
        model_run_dir=str(tmp_path / "run"),
        custom_config={"model": {"batch_size": 16, "epochs": 2}},
    )
    converted = converted_by_autograph(lambda: run_fn(fn_args))
    assert converted == {"canonicalize_signatures.<locals>.signature_wrapper"}, converted
    assert (tmp_path / "serving" / "saved_model.pb").is_file()
    history = json.loads((tmp_path / "run" / HISTORY_FILE).read_text())
    assert history["epochs_run"] == len(history["val_click_auc"]) in (1, 2)


def test_a_copy_that_does_not_fit_is_one_clear_error(split, tmp_path):
    """The kernel refuses writes past a file size limit (EFBIG), as a full disk refuses
    them (ENOSPC): the Trainer says what failed and what to do, not TF's op trace."""
    pattern, output = split
    transform_dir = str(Path(output.transform_savedmodel_dir).parent)
    script = textwrap.dedent(
        f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process.
        import tensorflow_transform as tft
        from mtrec.models.hparams import ModelConfig
        from mtrec.models.training import make_dataset
        config = ModelConfig(batch_size=16, shuffle_buffer=64, seed=3)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000, resource.RLIM_INFINITY))
        try:
            make_dataset([{pattern!r}], tft.TFTransformOutput({transform_dir!r}),
                         config, True, {str(tmp_path / "copy")!r})
        except OSError as err:
            print("ERROR:", err)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("ERROR:"))
    assert line == (
        f"ERROR: the Trainer could not write its transformed copy of the examples to "
        f"{tmp_path / 'copy'}: File too large. It needs about 700 bytes per example; set "
        "TMPDIR to a folder on a disk with room"
    )
