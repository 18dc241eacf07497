"""`--distribution multi_worker_mirrored`, really run: examples from the data component's
Beam job, TFX's Transform, then two worker processes on loopback, each with its own
TF_CONFIG, training on that same Transform output with the pipeline's run_fn. The chief's
export is blessed by the pipeline's Evaluator executor (its default rules), pushed by TFX's
Pusher and served over gRPC by `mtrec serve`'s server."""

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from mtrec import names as F
from mtrec.components.thresholds import EvaluationSettings
from mtrec.examples import to_examples
from mtrec.models.export import SIGNATURES
from mtrec.models.training import HISTORY_FILE, weights_digest
from mtrec.serving import config
from mtrec.serving.server import ModelServer, ServerOptions
from tests.support import multi_worker as mw

WORKERS = 2
MODEL = {
    "embedding_dim": 8,
    "side_dim": 16,
    "bottom_units": [16],
    "head_units": [8],
    "batch_size": 64,  # The global batch: 32 per worker.
    "learning_rate": 0.01,
    "epochs": 4,
    "early_stopping_patience": 4,  # No early stop: the history must hold every epoch.
    "warm_start_epochs": 3,  # Warm runs learn for more than one epoch (the last test).
    "distribution": "multi_worker_mirrored",
}
# A man and a woman, each with an Action and a Romance movie: in the synthetic data men
# rate Action higher and women Romance. Unknown ids (OOV buckets), so that only the side
# features tell them apart.
ROWS = [
    {"user_id": 9001 + u, "item_id": 9001 + i, "gender": gender, "age": 30, "genres": genres}
    for u, gender in enumerate(("M", "F"))
    for i, genres in enumerate(("Action", "Romance"))
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Examples, Transform, then the two workers: chief (worker 0) and worker 1 get the same
    inputs and their own output artifacts."""
    root = tmp_path_factory.mktemp("multi_worker")
    transform = mw.run_transform(mw.build_examples(root), root)
    specs = [
        mw.WorkerSpec(transform, str(root / name / "model"), str(root / name / "model_run"), MODEL)
        for name in ("chief", "worker1")
    ]
    workers = mw.launch(specs, root / "logs", timeout_s=300)
    for worker in workers:
        assert worker.returncode == 0, f"worker {worker.index}: {worker.log[-3000:]}"
    return {"root": root, "transform": transform, "specs": specs, "workers": workers}


@pytest.fixture(scope="module")
def exported(cluster):
    """The chief's SavedModel, where TFX's Trainer puts it."""
    return tf.saved_model.load(str(Path(cluster["specs"][0].model) / "Format-Serving"))


def predict(loaded, rows):
    outputs = loaded.signatures[F.SERVING_DEFAULT](examples=tf.constant(to_examples(rows)))
    return {head: value.numpy() for head, value in outputs.items()}


def test_both_workers_train_in_one_cluster(cluster):
    for worker in cluster["workers"]:
        line = worker.strategy()
        assert f"task worker:{worker.index} of {WORKERS} workers" in line
        assert f"chief: {worker.index == 0}" in line
        assert f"{WORKERS} replicas in sync, global batch 64" in line


def test_workers_end_with_equal_weights_which_the_chief_exported(cluster, exported):
    chief, worker = (w.digest() for w in cluster["workers"])
    assert chief is not None and chief == worker  # Synchronous all-reduce.
    trained = [v for v in exported.model_variables if v.trainable]
    assert weights_digest(trained) == chief


def test_only_the_chief_keeps_the_model_and_the_history(cluster):
    chief, worker = cluster["specs"]
    assert (Path(chief.model) / "Format-Serving" / "saved_model.pb").is_file()
    # The warm-start bundle beside it; every worker wrote one (reading the weights all-reduces
    # some), and worker 1's went with its temporary folder.
    assert (Path(chief.model) / "warm_start" / "manifest.json").is_file()
    # Worker 1 exported to a temporary folder beside its model dir and removed it; Keras
    # removed its TensorBoard folder too.
    assert [p.name for p in Path(worker.model).iterdir()] == []
    assert [p.name for p in Path(worker.model_run).iterdir()] == []
    history = json.loads((Path(chief.model_run) / HISTORY_FILE).read_text())
    assert len(history["loss"]) == MODEL["epochs"]
    assert np.all(np.isfinite(history["total_loss"]))
    # Metrics are global values, not summed over the workers (which made AUCs exceed 1).
    for name in ("click_auc", "purchase_auc", "val_click_auc", "val_purchase_auc"):
        assert all(0.0 <= value <= 1.0 for value in history[name]), (name, history[name])
    assert history["val_click_auc"][-1] > 0.6
    assert history["val_rating_rmse"][-1] < 1.0


def test_the_chief_export_serves_finite_predictions_that_move_with_inputs(exported):
    assert set(exported.signatures) == set(SIGNATURES)
    scores = predict(exported, ROWS)
    for head in F.HEADS:
        assert scores[head].shape == (len(ROWS),)
        assert np.all(np.isfinite(scores[head]))
        assert np.ptp(scores[head]) > 1e-3, (head, scores[head])
    assert np.all((scores[F.CLICK] > 0) & (scores[F.CLICK] < 1))
    rating = scores[F.RATING].reshape(2, 2)  # [user][item]
    assert rating[0, 0] > rating[0, 1] and rating[1, 1] > rating[1, 0], rating


def test_the_chief_export_is_blessed_pushed_and_served_over_grpc(cluster, exported, tmp_path):
    model_uri = cluster["specs"][0].model
    examples = cluster["transform"].examples
    blessing = mw.evaluate(examples, model_uri, EvaluationSettings(), tmp_path / "eval")
    assert (Path(blessing.uri) / "BLESSED").exists()
    # The same model fails a bar it cannot reach, and is then not pushed.
    strict = EvaluationSettings(overrides=(("min_auc", 0.999),))
    refused = mw.evaluate(examples, model_uri, strict, tmp_path / "strict")
    assert (Path(refused.uri) / "NOT_BLESSED").exists()
    serving = tmp_path / "serving_model"
    assert mw.push(model_uri, refused, serving, tmp_path / "strict") is None
    version = mw.push(model_uri, blessing, serving, tmp_path / "push")
    assert version is not None and [p.name for p in serving.iterdir()] == [version]

    options = ServerOptions(models=tuple(config.single_model("mtrec", str(serving))), port=0)
    server = ModelServer(options).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mtrec"
        request.model_spec.signature_name = F.SERVING_DEFAULT
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(to_examples(ROWS)))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=30)
    finally:
        channel.close()
        server.stop(grace=1)
    assert response.model_spec.version.value == int(version)
    expected = predict(exported, ROWS)
    for head in F.HEADS:
        np.testing.assert_allclose(
            tf.make_ndarray(response.outputs[head]), expected[head], rtol=1e-5
        )


@pytest.fixture(scope="module")
def warm_cluster(cluster):
    """The same two workers again, with the chief's model as the Trainer's ``base_model``
    (continuous training): every worker restores the chief's warm-start bundle."""
    root = cluster["root"]
    base = cluster["specs"][0].model
    specs = [
        mw.WorkerSpec(
            cluster["transform"],
            str(root / "warm" / name / "model"),
            str(root / "warm" / name / "model_run"),
            MODEL,
            base_model=base,
        )
        for name in ("chief", "worker1")
    ]
    workers = mw.launch(specs, root / "warm_logs", timeout_s=300)
    for worker in workers:
        assert worker.returncode == 0, f"worker {worker.index}: {worker.log[-3000:]}"
    return {"specs": specs, "workers": workers}


def test_a_warm_start_across_two_workers_starts_from_the_base_model_and_keeps_learning(
    cluster, warm_cluster
):
    chief, worker = (w.digest() for w in warm_cluster["workers"])
    assert chief is not None and chief == worker
    cold = json.loads((Path(cluster["specs"][0].model_run) / HISTORY_FILE).read_text())
    warm = json.loads((Path(warm_cluster["specs"][0].model_run) / HISTORY_FILE).read_text())
    assert warm["warm_start"]["warm_started"] is True
    base = Path(cluster["specs"][0].model) / "Format-Serving"
    assert warm["warm_start"]["base_model"] == str(base)
    assert warm["warm_start"]["carried"]["user_id"] == 100  # Every user of the tiny data.
    assert warm["warm_start"]["new"]["user_id"] == 0
    assert warm["epochs_run"] <= MODEL["warm_start_epochs"]
    # Every worker starts from the base model's trained weights, exactly: the data (so the
    # vocabularies) did not change, so every row is carried to where it was.
    base_digest = cluster["workers"][0].digest()
    assert [w.start_digest() for w in warm_cluster["workers"]] == [base_digest] * WORKERS
    # And keeps learning from there (multi-worker training is not bit-reproducible: the
    # bounds allow for its noise).
    assert max(warm["val_click_auc"]) > cold["val_click_auc"][-1] - 0.03, (cold, warm)
    assert min(warm["val_rating_rmse"]) < cold["val_rating_rmse"][-1] + 0.05, (cold, warm)
