"""Training: raw examples through Transform's graph, the fit loop, and the TFX ``run_fn``."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx import v1 as tfx

from mtrec import names as F
from mtrec.models.export import export_model
from mtrec.models.hparams import ModelConfig
from mtrec.models.model import SELECTION_LOSS, MultiTaskRecommender
from mtrec.models.recommend import ITEM_ID_XF, Catalog, collect_catalog, item_features
from mtrec.models.warm_start import WarmStart, bundle_dir, restore, save_bundle

log = logging.getLogger(__name__)

EMBEDDED_XF = (*F.USER_CATEGORICAL_XF, *F.ITEM_CATEGORICAL_XF, *F.ITEM_MULTIVALENT_XF)
HISTORY_FILE = "history.json"
# What BalancedLoss adds to the logs (an early_stopping criterion in ModelConfig).
BALANCED_LOSS = "balanced_loss"
# The one metric per head that the per-epoch line shows (its validation value when there is one).
HEADLINE_METRICS = {F.RATING: "rating_rmse", F.CLICK: "click_auc", F.PURCHASE: "purchase_auc"}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy named in the config (the cluster comes from TF_CONFIG).

    MultiWorkerMirroredStrategy must be created before any other TensorFlow op runs in the
    process (it configures collective ops at start-up), so callers create it first.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the shared outputs: the chief task of a cluster, else
    worker 0; always true without a cluster."""
    return bool(strategy.extended.should_checkpoint)


def describe_strategy(strategy: tf.distribute.Strategy, global_batch: int) -> str:
    """One line on where this process trains, e.g. ``CollectiveAllReduceStrategy: task
    worker:1 of 2 workers (chief: False), 2 replicas in sync, global batch 64``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    replicas = strategy.num_replicas_in_sync
    name = type(strategy).__name__
    if resolver is None or not resolver.task_type:
        return f"{name}: {replicas} replica(s) in sync, global batch {global_batch}"
    workers = len(resolver.cluster_spec().as_dict().get(resolver.task_type, []))
    return (
        f"{name}: task {resolver.task_type}:{resolver.task_id} of {workers} "
        f"{resolver.task_type}s (chief: {is_chief(strategy)}), {replicas} replicas in sync, "
        f"global batch {global_batch}"
    )


def worker_export_dir(export_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this process saves the model: ``export_dir`` on the chief; on another worker a
    ``workertemp_<task id>`` folder beside it, removed after saving. Every worker must save,
    since saving reads variables that are all-reduced across workers (TF's multi-worker
    guide); only the chief's copy is kept."""
    if is_chief(strategy):
        return export_dir
    task_id = strategy.cluster_resolver.task_id
    parent, base = os.path.split(os.path.normpath(export_dir))
    return os.path.join(parent, f"workertemp_{task_id}", base)


def weights_digest(variables: Sequence[tf.Variable]) -> str:
    """A short SHA-256 of the values of ``variables`` (a model's trainable weights, in
    order): equal on every worker of a synchronous cluster, and logged so that a run, or
    the SavedModel it wrote, can be checked for it."""
    digest = hashlib.sha256()
    for variable in variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()[:16]


def cardinalities(tft_output: tft.TFTransformOutput) -> dict[str, int]:
    """Bucket count of every embedded feature, read from the Transform output's schema."""
    return {key: int(tft_output.num_buckets_for_transformed_feature(key)) for key in EMBEDDED_XF}


def label_statistics(
    dataset: tf.data.Dataset, cardinality: int | None = None, clicked_only: bool = True
) -> tuple[dict[str, float], np.ndarray | None]:
    """In one pass: each label's mean (rating over observed interactions only) and, given
    the item cardinality, the clicks (or, not ``clicked_only``, the rows) per item index:
    the in-batch softmaxes' correction."""
    sums = {"rating": 0.0, "rated": 0.0, "click": 0.0, "purchase": 0.0, "n": 0.0}
    counts = None if cardinality is None else np.zeros(cardinality)
    for batch in dataset:
        weight = batch[F.RATING_WEIGHT_XF]
        clicks = batch[F.LABEL_XF[F.CLICK]]
        sums["rating"] += float(tf.reduce_sum(batch[F.LABEL_XF[F.RATING]] * weight))
        sums["rated"] += float(tf.reduce_sum(weight))
        sums["click"] += float(tf.reduce_sum(clicks))
        sums["purchase"] += float(tf.reduce_sum(batch[F.LABEL_XF[F.PURCHASE]]))
        sums["n"] += float(tf.shape(weight)[0])
        if counts is not None:
            items = batch[F.transformed_name(F.ITEM_ID)].numpy().reshape(-1)
            np.add.at(counts, items[clicks.numpy().reshape(-1) > 0] if clicked_only else items, 1)
    if not sums["n"]:
        raise ValueError("the training split is empty")
    priors = {
        F.RATING: sums["rating"] / max(sums["rated"], 1.0),
        F.CLICK: sums["click"] / sums["n"],
        F.PURCHASE: sums["purchase"] / sums["n"],
    }
    return priors, counts


def label_priors(dataset: tf.data.Dataset, max_batches: int = 100) -> dict[str, float]:
    """The label means from the first ``max_batches`` shuffled batches: they only set each
    head's starting bias."""
    return label_statistics(dataset.take(max_batches))[0]


def item_counts(
    dataset: tf.data.Dataset, cardinality: int, clicked_only: bool = True
) -> np.ndarray:
    """Training clicks (or rows) per item index, for the in-batch softmaxes' correction."""
    return label_statistics(dataset, cardinality, clicked_only)[1]


def epoch_line(epoch: int, epochs: int, logs: dict[str, float], seconds: float) -> str:
    """One epoch in a line: total loss, the (validation) selection loss early stopping watches,
    each head's headline metric and the time, e.g. ``epoch 2/20  loss=6.9312
    val_selection_loss=1.9666  val_rating_rmse=1.0275  val_click_auc=0.5773 ...  0.3s``."""
    prefix = "val_" if f"val_{SELECTION_LOSS}" in logs else ""
    total = logs.get("total_loss", logs.get("loss"))
    shown = {"loss": total} if total is not None else {}
    for name in (SELECTION_LOSS, BALANCED_LOSS, *HEADLINE_METRICS.values()):
        if prefix + name in logs:
            shown[prefix + name] = logs[prefix + name]
    fields = "  ".join(f"{key}={float(value):.4f}" for key, value in shown.items())
    return f"epoch {epoch}/{epochs}  {fields}  {seconds:.1f}s"


class BalancedLoss(tf_keras.callbacks.Callback):
    """Adds ``val_balanced_loss`` to each epoch's logs: the mean over heads of the head's
    validation loss divided by its first epoch's, so each head's relative progress weighs
    the same (the weighted selection loss follows the rating MSE, the largest)."""

    def __init__(self) -> None:
        super().__init__()
        self.first: dict[str, float] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.first = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or f"val_{F.RATING}_loss" not in logs:
            return
        losses = {head: float(logs[f"val_{head}_loss"]) for head in F.HEADS}
        if not self.first:
            self.first = {head: max(loss, 1e-12) for head, loss in losses.items()}
        ratios = [losses[head] / self.first[head] for head in F.HEADS]
        logs[f"val_{BALANCED_LOSS}"] = float(np.mean(ratios))


class EpochLog(tf_keras.callbacks.Callback):
    """Logs ``epoch_line`` at INFO after each epoch, in place of Keras's own progress output."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self._start = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        log.info(epoch_line(epoch + 1, self.epochs, logs or {}, time.monotonic() - self._start))


def build_model(
    cards: dict[str, int], config: ModelConfig, priors: dict[str, float] | None = None
) -> MultiTaskRecommender:
    """A compiled model (call inside the strategy scope when distributing)."""
    model = MultiTaskRecommender(cards, config, priors)
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    return model


def fit(
    train: tf.data.Dataset,
    valid: tf.data.Dataset | None,
    cards: dict[str, int],
    config: ModelConfig,
    log_dir: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
    initial_weights: Callable[[MultiTaskRecommender], WarmStart] | None = None,
    counts: tf.data.Dataset | None = None,
    catalog: Catalog | None = None,
) -> tuple[MultiTaskRecommender, dict]:
    """Train under ``strategy`` (else the configured one) with early stopping on validation
    loss. ``config.batch_size`` is the global batch: each replica takes its share of it.

    ``counts`` (e.g. ``train`` itself, when a pass over it is cheap) gives the
    label priors and the items' click counts in one full pass; without it they come from
    ``train`` (the priors from its first 100 batches, the counts from a pass of their own).

    ``initial_weights`` (e.g. a partial of ``warm_start.restore``) gets the model built on
    one training batch and may assign its weights; when it reports a warm start, training
    runs at most ``config.warm_start_epochs`` epochs. Its report is then returned in the
    history as ``history["warm_start"]`` (a dict; the other entries are per-epoch lists).

    ``catalog`` (``collect_catalog``) is what retrieval.negatives "catalog" scores against.
    """
    if strategy is None:
        strategy = make_strategy(config.distribution)
    log.info("Training with %s", describe_strategy(strategy, config.batch_size))
    tf_keras.utils.set_random_seed(config.seed)
    item_cardinality = cards[F.transformed_name(F.ITEM_ID)]
    per_item = None
    # The candidates the in-batch softmaxes correct for: the batch's clicked items, or with
    # mixed retrieval negatives every row's item.
    clicked_only = config.retrieval.negatives == "clicks"
    if counts is None:
        priors = label_priors(train)
    else:
        priors, per_item = label_statistics(counts, item_cardinality, clicked_only)
    log.info("Label priors from the training split: %s", priors)
    warm = None
    with strategy.scope():
        model = build_model(cards, config, priors)
        # On one replica every weight and the optimizer's slots exist before fit() traces
        # the train step: a first call that creates variables makes tf.function trace the
        # step twice (about 1.5 s of a small run). Not across replicas: under
        # multi_worker_mirrored, weights built eagerly before fit() left the cold model
        # unable to learn in some seeds (tests/integration/test_multi_worker.py).
        one_replica = strategy.num_replicas_in_sync == 1
        if one_replica or initial_weights is not None:
            model.build_weights(next(iter(train)))
        if one_replica:
            model.optimizer.build(model.trainable_variables)
        if initial_weights is not None:
            # After the priors set the heads' biases, so restored values win; before the
            # item frequencies, which are recounted on this training split.
            warm = initial_weights(model)
        if model.item_log_probability is not None:
            if per_item is None:
                per_item = item_counts(train, item_cardinality, clicked_only)
            model.set_item_frequencies(per_item)
        if config.trains_on_catalog:
            if catalog is None:
                raise ValueError("retrieval.negatives 'catalog' needs fit()'s catalog")
            model.set_catalog_items(*catalog_items(catalog, item_cardinality))
    epochs = config.epochs
    if warm is not None and warm.warm_started:
        epochs = config.warm_start_epochs
        log.info("Warm-started: at most %d epochs (warm_start_epochs)", epochs)
        # Equal to the base run's trained digest when no vocabulary changed: a check that
        # every worker starts from the base model's weights.
        log.info("Warm-start weights digest: %s", weights_digest(model.trainable_weights))
    # BalancedLoss first: the callbacks after it (and the history) read what it adds.
    callbacks: list[tf_keras.callbacks.Callback] = [BalancedLoss(), EpochLog(epochs)]
    if config.learning_rate_decay < 1:
        rate, decay = config.learning_rate, config.learning_rate_decay
        callbacks.append(
            tf_keras.callbacks.LearningRateScheduler(lambda epoch, _: rate * decay**epoch)
        )
    stopping = None
    if valid is not None:
        stopping = tf_keras.callbacks.EarlyStopping(
            monitor=f"val_{config.early_stopping}",
            patience=config.early_stopping_patience,
            restore_best_weights=True,
        )
        callbacks.append(stopping)
    if log_dir:
        callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    # Keras's own per-epoch line (20-odd metrics) only with verbose logging (mtrec -v).
    history = model.fit(
        train,
        validation_data=valid,
        epochs=epochs,
        callbacks=callbacks,
        verbose=2 if log.isEnabledFor(logging.DEBUG) else 0,
    )
    if stopping is not None and stopping.stopped_epoch > 0:
        log.info(
            "Early stopping after %d of %d epochs: kept the weights of epoch %d",
            stopping.stopped_epoch + 1,
            epochs,
            stopping.best_epoch + 1,
        )
    result: dict[str, Any] = {
        key: [float(v) for v in values] for key, values in history.history.items()
    }
    if warm is not None:
        result["warm_start"] = warm.to_dict()
    return model, result


def catalog_items(catalog: Catalog, item_cardinality: int) -> tuple[dict[str, Any], np.ndarray]:
    """The catalog's items as model inputs, and each item-vocabulary index's row among them
    (-1 for the OOV buckets): what ``set_catalog_items`` takes."""
    indices = catalog.dense[ITEM_ID_XF].astype(np.int64)
    rows = np.full(item_cardinality, -1, np.int64)
    rows[indices] = np.arange(len(indices))
    features = item_features(
        {key: tf.constant(value) for key, value in catalog.dense.items()},
        {key: tf.constant(padded, tf.int64) for key, padded in catalog.bags.items()},
    )
    return features, rows


# Files read at once, one record from each in turn (an epoch mixes them beyond the buffer).
READ_CYCLE = 16


def read_examples(
    file_patterns: Sequence[str],
    feature_spec: Mapping[str, Any],
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Batches parsed from tf.Example TFRecord files (gzipped or not): the files taken in
    turn a record at a time, shuffled through ``shuffle_buffer`` records when it is set,
    then parsed a batch at a time.

    Not tfx_bsl's ``data_accessor.tf_dataset_factory``: it reads through a parallel
    interleave that cost about 7 s per pass over MovieLens-100K's 405,000 training examples
    on 2 cores, against under 2 s here (README, "Trainer input")."""
    files = sorted({path for pattern in file_patterns for path in tf.io.gfile.glob(pattern)})
    if not files:
        raise ValueError(f"no example files match {list(file_patterns)}")
    gzipped = {path.endswith(".gz") for path in files}
    if len(gzipped) > 1:
        raise ValueError(f"example files mix gzipped and plain TFRecords: {files}")
    compression = "GZIP" if gzipped.pop() else ""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:
        dataset = dataset.shuffle(len(files), seed=seed)
    # No num_parallel_calls: a parallel interleave hands every record across threads.
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression),
        cycle_length=min(len(files), READ_CYCLE),
        block_length=1,
    )
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    spec = dict(feature_spec)
    dataset = dataset.batch(batch_size).map(
        lambda records: tf.io.parse_example(records, spec),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return _without_autotuning(dataset)


def _without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """No tf.data autotuning thread: deleting an iterator joins it (RootDataset::Iterator's
    destructor, in a py-spy stack), and that stalled the Trainer 2 to 4 s between some
    epochs (Keras makes an iterator per epoch) on 2 cores. AUTOTUNE then means the default
    parallelism for a map. README, "Trainer input"."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


# The Trainer's transformed copy of a split is written in this many shards; each epoch takes
# them in a new order, a batch from each in turn, so batches mix across the whole split.
TRANSFORMED_SHARDS = 16
# What the transformed copy takes on disk per example (MovieLens-100K, the default model's
# features: README, "Trainer input"); said when the copy does not fit.
COPY_BYTES_PER_EXAMPLE = 700


def transformed_batches(
    file_patterns: Sequence[str],
    tft_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of transformed features (labels included) from raw tf.Examples: Transform's
    graph applied a batch at a time, as the exported model applies it to a request."""
    # Not converted by AutoGraph, which tf.data applies to a map's function by default: the
    # layer's Python branches on the config only, and rewriting TFT's and Keras's call code
    # took about 4 s of each Trainer (README, "Trainer fixed cost").
    layer = tf.autograph.experimental.do_not_convert(tft_output.transform_features_layer())
    dataset = read_examples(
        file_patterns, tft_output.raw_feature_spec(), batch_size, shuffle_buffer, seed
    )
    return dataset.map(layer, num_parallel_calls=tf.data.AUTOTUNE)  # read_examples' options hold.


def make_dataset(
    file_patterns: Sequence[str],
    tft_output: tft.TFTransformOutput,
    config: ModelConfig,
    shuffle: bool,
    folder: str,
) -> tf.data.Dataset:
    """Batches for ``fit``: the raw examples transformed once, now, into ``folder`` (local
    scratch, about 700 bytes per example), then read back on every pass.

    Transform does not write transformed examples (README, "Trainer input"): applying its
    graph here once, with no Beam, tf.Example encoding or gzip, costs a few seconds where
    materializing cost Transform about 20. With ``shuffle`` the records pass once through
    the shuffle buffer before batching, and each pass takes the shards in a new order and
    shuffles batches through a buffer of as many rows."""
    batches = transformed_batches(
        file_patterns,
        tft_output,
        config.batch_size,
        config.shuffle_buffer if shuffle else 0,
        config.seed,
    )
    try:
        batches.enumerate().save(folder, shard_func=lambda index, _: index % TRANSFORMED_SHARDS)
    except (tf.errors.ResourceExhaustedError, tf.errors.OutOfRangeError) as err:
        # A full disk (ENOSPC) or a file size limit (EFBIG): what to do, not TF's op trace.
        reason = err.message.split(" [Op:")[0].rsplit("; ", 1)[-1].strip()
        raise OSError(
            f"the Trainer could not write its transformed copy of the examples to {folder}: "
            f"{reason}. It needs about {COPY_BYTES_PER_EXAMPLE} bytes per example; set TMPDIR "
            "to a folder on a disk with room"
        ) from None

    def read_shards(shards: tf.data.Dataset) -> tf.data.Dataset:
        if shuffle:
            shards = shards.shuffle(TRANSFORMED_SHARDS, seed=config.seed)
        return shards.interleave(lambda shard: shard, cycle_length=TRANSFORMED_SHARDS)

    dataset = tf.data.Dataset.load(folder, reader_func=read_shards).map(lambda _, batch: batch)
    if shuffle:
        dataset = dataset.shuffle(max(1, config.shuffle_buffer // config.batch_size), config.seed)
    # Across workers, shard batches rather than files: every worker transforms the same
    # seeded order and keeps its share.
    sharding = tf.data.Options()
    sharding.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # A loaded dataset starts a new pipeline: it takes no options from the one saved.
    return _without_autotuning(dataset).with_options(sharding).prefetch(tf.data.AUTOTUNE)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry: fit on 'train', early-stop on 'valid', export for serving.

    With ``multi_worker_mirrored`` every worker runs this with its own TF_CONFIG; only the
    chief writes the history, the serving model and the warm-start bundle beside it.

    Given a ``base_model`` (the previous blessed model, continuous training), unless
    ``custom_config["warm_start"]`` is false, the model starts from its bundle's weights,
    table rows mapped by token (see warm_start.py), or from scratch when that is impossible.
    """
    custom = fn_args.custom_config or {}
    config = ModelConfig.from_dict(custom.get("model", {}))
    strategy = make_strategy(config.distribution)  # Before any other op, as MWMS requires.
    scratch = tempfile.mkdtemp(prefix="mtrec-trainer-")
    try:
        # With AutoGraph off throughout: nothing the Trainer traces branches on a tensor,
        # and tf.data's map functions and Keras's metric results, read eagerly after each
        # epoch, were otherwise rewritten first (README, "Trainer fixed cost").
        tf.autograph.experimental.do_not_convert(_train_and_export)(
            fn_args, custom, config, strategy, scratch
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train_and_export(
    fn_args: tfx.components.FnArgs,
    custom: dict,
    config: ModelConfig,
    strategy: tf.distribute.Strategy,
    scratch: str,
) -> None:
    """``run_fn``'s work, with ``scratch`` the local folder for the transformed splits."""
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    train = make_dataset(fn_args.train_files, tft_output, config, True, f"{scratch}/train")
    valid = make_dataset(fn_args.eval_files, tft_output, config, False, f"{scratch}/valid")
    base_model = fn_args.base_model if custom.get("warm_start", True) else None
    initial_weights = None
    if base_model:
        initial_weights = functools.partial(
            restore, tft_output=tft_output, base_model_path=base_model
        )
    # Before fit: the "catalog" retrieval softmax trains against it; the export saves it.
    catalog = collect_catalog(train, tft_output.vocabulary_by_name(F.ITEM_ID))
    log.info("Recommend catalog: %d items", len(catalog))
    model, history = fit(
        train,
        valid,
        cardinalities(tft_output),
        config,
        fn_args.model_run_dir,
        strategy,
        initial_weights=initial_weights,
        counts=train,
        catalog=catalog,
    )
    log.info("Trained weights digest: %s", weights_digest(model.trainable_weights))
    # For benchmarks and reports: whether this run was warm-started, and how long it trained.
    if "warm_start" not in history:
        reason = "warm_start is off" if fn_args.base_model else "no base model"
        history["warm_start"] = WarmStart(fn_args.base_model or "", False, reason).to_dict()
    history["epochs_run"] = len(history["loss"])
    if is_chief(strategy):
        tf.io.gfile.makedirs(fn_args.model_run_dir)
        with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE), "w") as out:
            json.dump(history, out, indent=1)
    export_dir = worker_export_dir(fn_args.serving_model_dir, strategy)
    export_model(model, tft_output, export_dir, catalog, tuple(config.blend_weights))
    # Beside Format-Serving, in the Model artifact: never pushed. Every worker writes one (a
    # worker's goes with its temporary folder), since reading the weights of a model
    # distributed across workers all-reduces some of them: the chief alone would wait.
    save_bundle(model, tft_output, bundle_dir(export_dir))
    if export_dir != fn_args.serving_model_dir:
        tf.io.gfile.rmtree(os.path.dirname(export_dir))
