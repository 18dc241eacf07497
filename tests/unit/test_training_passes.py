"""The Trainer's passes over the training data besides fitting: the label statistics in one
pass, and a catalog that stops reading once it has every item."""

from collections.abc import Iterator

import numpy as np
import pytest
import tensorflow as tf

from mtrec import names as F
from mtrec.models.recommend import ITEM_ID_XF, collect_catalog
from mtrec.models.training import item_counts, label_priors, label_statistics

ITEMS = 6


def _label_batches(rng: np.random.Generator, n_batches: int, size: int = 16) -> list[dict]:
    batches = []
    for _ in range(n_batches):
        click = (rng.uniform(size=(size, 1)) < 0.4).astype(np.float32)
        batches.append(
            {
                F.LABEL_XF[F.RATING]: rng.integers(1, 6, (size, 1)).astype(np.float32),
                F.RATING_WEIGHT_XF: click.copy(),  # Rated exactly when clicked.
                F.LABEL_XF[F.CLICK]: click,
                F.LABEL_XF[F.PURCHASE]: click * (rng.uniform(size=(size, 1)) < 0.5),
                ITEM_ID_XF: rng.integers(0, ITEMS, (size, 1)),
            }
        )
    return batches


def _dataset(batches: list[dict]) -> tf.data.Dataset:
    keys = batches[0].keys()
    return tf.data.Dataset.from_tensor_slices(
        {k: np.concatenate([b[k] for b in batches]) for k in keys}
    ).batch(len(batches[0][ITEM_ID_XF]))


@pytest.mark.unit
def test_label_statistics_give_the_label_means_and_clicks_per_item_in_one_pass():
    batches = _label_batches(np.random.default_rng(3), 5)
    column = {k: np.concatenate([b[k] for b in batches]).reshape(-1) for k in batches[0]}
    priors, counts = label_statistics(_dataset(batches), ITEMS)
    rated = column[F.RATING_WEIGHT_XF] > 0
    assert priors == pytest.approx(
        {
            F.RATING: column[F.LABEL_XF[F.RATING]][rated].mean(),
            F.CLICK: column[F.LABEL_XF[F.CLICK]].mean(),
            F.PURCHASE: column[F.LABEL_XF[F.PURCHASE]].mean(),
        }
    )
    clicked = column[ITEM_ID_XF][column[F.LABEL_XF[F.CLICK]] > 0]
    np.testing.assert_array_equal(counts, np.bincount(clicked, minlength=ITEMS))
    np.testing.assert_array_equal(item_counts(_dataset(batches), ITEMS), counts)
    # Every row's item: the candidates of the mixed retrieval softmax.
    np.testing.assert_array_equal(
        item_counts(_dataset(batches), ITEMS, clicked_only=False),
        np.bincount(column[ITEM_ID_XF], minlength=ITEMS),
    )
    # label_priors reads the first batches only.
    assert label_priors(_dataset(batches), max_batches=1) == pytest.approx(
        label_statistics(_dataset(batches[:1]))[0]
    )
    with pytest.raises(ValueError, match="the training split is empty"):
        label_statistics(_dataset(batches).take(0))


def _catalog_batch(item_ids: list[int], bag_values: list[int]) -> dict:
    """Transformed item columns for ``item_ids``, row i's bags holding ``bag_values[i]``."""
    n = len(item_ids)
    bag = tf.sparse.from_dense(tf.constant([[value, 0] for value in bag_values], tf.int64))
    return {
        ITEM_ID_XF: tf.constant(item_ids, tf.int64)[:, None],
        **{key: tf.constant(item_ids, tf.int64)[:, None] for key in F.ITEM_CATEGORICAL_XF},
        **{key: tf.fill([n, 1], 0.5) for key in F.ITEM_NUMERIC_XF},
        **{key: bag for key in F.ITEM_MULTIVALENT_XF},
    }


@pytest.mark.unit
def test_the_catalog_stops_reading_once_every_item_is_seen():
    read = []

    def batches() -> Iterator[dict]:
        # Item 1 comes twice in the first batch and again later, each time with other bags.
        for ids, values in (([0, 1, 1], [1, 2, 3]), ([2, 0], [4, 5]), ([1, 3], [6, 7])):
            read.append(ids)
            yield _catalog_batch(ids, values)
        raise AssertionError("read past the batch that completed the catalog")

    vocabulary = [b"10", b"20", b"30", b"40"]
    catalog = collect_catalog(batches(), vocabulary)
    assert len(read) == 3
    np.testing.assert_array_equal(catalog.item_ids, [10, 20, 30, 40])
    # Each item's features come from its first occurrence, in the batch and across them.
    for key in F.ITEM_MULTIVALENT_XF:
        np.testing.assert_array_equal(catalog.bags[key], [[1], [2], [4], [7]])
