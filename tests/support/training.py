"""Shared training helpers: a batch shaped like Transform's output, and a model trained,
exported and reloaded on tiny synthetic MovieLens data as the pipeline would."""

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from mtrec import names as F
from mtrec.data import build
from mtrec.data import source as data_source
from mtrec.data.config import DataConfig
from mtrec.examples import to_examples
from mtrec.models import local_transform
from mtrec.models.export import export_model
from mtrec.models.hparams import ModelConfig
from mtrec.models.recommend import collect_catalog
from mtrec.models.training import cardinalities, fit, transformed_batches
from tests.support.synthetic import make_movielens_dir

CARDS = {
    "user_id_xf": 11,
    "gender_xf": 3,
    "occupation_xf": 4,
    "zip_prefix_xf": 5,
    "age_bucket_xf": 7,
    "item_id_xf": 13,
    "year_bucket_xf": 10,
    "genres_xf": 6,
    "title_xf": 20,
}
SMALL = ModelConfig(
    embedding_dim=4, side_dim=8, bottom_units=(8,), head_units=(4,), batch_size=16, epochs=2
)


# A small model that the export tests train, export and reload.
EXPORT_CONFIG = ModelConfig(
    embedding_dim=8, side_dim=16, bottom_units=(16,), head_units=(8,), batch_size=64, epochs=3
)
# A known user and item with every raw feature, as a request sends them.
KNOWN = {
    "user_id": 3,
    "item_id": 5,
    "age": 30,
    "gender": "M",
    "occupation": "engineer",
    "zip_prefix": "123",
    "genres": "Action|Comedy",
    "year": 1990,
    "title": "Movie Blast 5",
    "history": "2:4 7 1:1",
}


def transformed_batch(n: int = 32, seed: int = 0) -> dict:
    """A batch shaped like Transform's output: ids, bags of tokens, numbers, labels."""
    rng = np.random.default_rng(seed)
    batch = {
        key: tf.constant(rng.integers(0, card - 1, n), tf.int64)
        for key, card in CARDS.items()
        if key not in F.ITEM_MULTIVALENT_XF
    }
    for key in F.ITEM_MULTIVALENT_XF:
        lengths = rng.integers(0, 3, n)
        indices = [[row, j] for row, length in enumerate(lengths) for j in range(length)]
        values = rng.integers(0, CARDS[key] - 1, len(indices))
        batch[key] = tf.SparseTensor(
            np.array(indices, np.int64).reshape(-1, 2), values, [n, max(int(lengths.max()), 1)]
        )
    batch["age_z_xf"] = tf.constant(rng.normal(size=n), tf.float32)
    batch["year_z_xf"] = tf.constant(rng.normal(size=n), tf.float32)
    # Histories of 0-5 known items (-1 pads) with ratings' z-scores.
    lengths = rng.integers(0, 6, n)
    present = np.arange(F.HISTORY_LENGTH)[None, :] < lengths[:, None]
    items = rng.integers(0, CARDS["item_id_xf"] - 1, (n, F.HISTORY_LENGTH))
    batch[F.HISTORY_XF] = tf.constant(np.where(present, items, -1), tf.int64)
    ratings = rng.normal(size=(n, F.HISTORY_LENGTH)).astype(np.float32)
    batch[F.HISTORY_RATING_XF] = tf.constant(np.where(present, ratings, 0.0), tf.float32)
    click = rng.integers(0, 2, n).astype(np.float32)
    batch[F.LABEL_XF[F.CLICK]] = tf.constant(click)
    batch[F.LABEL_XF[F.PURCHASE]] = tf.constant(click * rng.integers(0, 2, n))
    batch[F.LABEL_XF[F.RATING]] = tf.constant(click * rng.integers(1, 6, n), tf.float32)
    batch[F.RATING_WEIGHT_XF] = tf.constant(click)
    return batch


def run_transform(examples: str, out_dir: Path) -> tft.TFTransformOutput:
    """Analyze the training examples with the real preprocessing_fn, as Transform does."""
    return local_transform.analyze(examples, out_dir, "test")


def transformed_dataset(examples: str, output: tft.TFTransformOutput) -> tf.data.Dataset:
    """The examples at ``examples`` (a file pattern: a split's shards), transformed as the
    Trainer transforms them, in batches of 64 held in memory."""
    return transformed_batches([examples], output, 64).cache()


@dataclasses.dataclass
class Trained:
    """A model trained and exported on tiny synthetic MovieLens data, and its parts."""

    model: object
    history: dict
    output: tft.TFTransformOutput
    catalog: object
    train: tf.data.Dataset
    loaded: object  # The reloaded SavedModel.


def train_and_export(root: Path, config: ModelConfig) -> Trained:
    """Transform, fit and export ``config`` as the pipeline would, then reload it."""
    source = make_movielens_dir(root / "ml", n_users=40, n_items=30, ratings_per_user=8)
    examples, _ = build.run(data_source.movielens(str(source)), DataConfig(), str(root / "data"))
    train_files = str(Path(examples) / f"Split-{F.TRAIN}" / "*")
    output = run_transform(train_files, root)
    train = transformed_dataset(train_files, output)
    model, history = fit(train, None, cardinalities(output), config)
    catalog = collect_catalog(train, output.vocabulary_by_name(F.ITEM_ID))
    export_model(model, output, str(root / "saved"), catalog, (0.2, 0.5, 0.3))
    loaded = tf.saved_model.load(str(root / "saved"))
    loaded.export_dir = str(root / "saved")  # For the tests that read saved_model.pb.
    loaded.source_dir = str(source)  # For brute-force scoring of the catalog.
    return Trained(model, history, output, catalog, train, loaded)


def serve(loaded, rows):
    outputs = loaded.signatures[F.SERVING_DEFAULT](examples=tf.constant(to_examples(rows)))
    return {head: value.numpy() for head, value in outputs.items()}


def recommend(loaded, user, k, exclude=(), blend=()):
    raw = {
        "user_id": [user.get("user_id", -1)],
        "age": [user.get("age", 0)],
        "gender": [user.get("gender", "")],
        "occupation": [user.get("occupation", "")],
        "zip_prefix": [user.get("zip_prefix", "")],
        "history": [user.get("history", "")],
    }
    inputs = {
        key: tf.constant(value, tf.int64 if key in ("user_id", "age") else tf.string)
        for key, value in raw.items()
    }
    out = loaded.signatures[F.RECOMMEND](
        **inputs,
        k=tf.constant([k], tf.int64),
        exclude=tf.constant(list(exclude), tf.int64),
        blend=tf.constant(list(blend), tf.float32),
    )
    return {key: value.numpy() for key, value in out.items()}
