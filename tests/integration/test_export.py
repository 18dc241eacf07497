"""Export: a real Transform graph plus a trained model, saved, reloaded and compared."""

import dataclasses
import json
import math
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from mtrec import names as F
from mtrec.data import movielens
from mtrec.examples import to_examples
from mtrec.models.export import (
    METHOD_NAMES,
    SIGNATURES,
    export_model,
    serving_feature_spec,
    warmup_examples,
    write_warmup_requests,
)
from mtrec.models.recommend import Catalog, blended_score, item_features
from mtrec.models.training import cardinalities
from tests.support.training import EXPORT_CONFIG as CONFIG
from tests.support.training import KNOWN, recommend, serve, train_and_export


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_and_export(tmp_path_factory.mktemp("export"), CONFIG)


@pytest.fixture(scope="module")
def exported(trained):
    """(in-memory model, transform output, reloaded SavedModel)."""
    return trained.model, trained.output, trained.loaded


def meta_graph(export_dir: str | Path) -> Any:
    """The MetaGraphDef in ``export_dir``'s saved_model.pb, as TF Serving reads it."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = (Path(export_dir) / "saved_model.pb").read_bytes()
    return saved_model_pb2.SavedModel.FromString(saved).meta_graphs[0]


def test_signature_names_and_output_keys_are_exact(exported):
    _, _, loaded = exported
    assert set(loaded.signatures) == set(SIGNATURES)
    serving = loaded.signatures[F.SERVING_DEFAULT]
    assert set(serving.structured_outputs) == set(F.HEADS)
    assert set(serving.structured_input_signature[1]) == {"examples"}
    assert set(loaded.signatures[F.PREDICT_RAW].structured_input_signature[1]) == set(
        F.MODEL_INPUT_KEYS
    )


def test_classify_and_regress_signatures_are_what_tf_serving_requires(exported):
    _, _, loaded = exported
    defs = meta_graph(loaded.export_dir).signature_def
    assert {name: defs[name].method_name for name in METHOD_NAMES} == METHOD_NAMES
    assert defs[F.SERVING_DEFAULT].method_name == "tensorflow/serving/predict"
    assert set(defs[F.REGRESS_RATING].inputs) == {"inputs"}
    assert set(defs[F.REGRESS_RATING].outputs) == {"outputs"}
    assert set(defs[F.CLASSIFY[F.CLICK]].outputs) == {"scores", "classes"}
    rows = [KNOWN, {**KNOWN, "user_id": 7, "item_id": 2, "gender": "F"}]
    examples = tf.constant(to_examples(rows))
    served = serve(loaded, rows)
    rating = loaded.signatures[F.REGRESS_RATING](inputs=examples)["outputs"].numpy()
    np.testing.assert_allclose(rating, served[F.RATING], rtol=1e-5)
    for head, name in F.CLASSIFY.items():
        out = loaded.signatures[name](inputs=examples)
        np.testing.assert_allclose(out["scores"].numpy()[:, 1], served[head], rtol=1e-5)
        np.testing.assert_allclose(out["scores"].numpy().sum(axis=1), 1.0, rtol=1e-5)
        assert out["classes"].numpy().tolist() == [[b"0", b"1"]] * 2


def test_reloaded_model_matches_the_in_memory_model(exported):
    model, output, loaded = exported
    rows = [KNOWN, {**KNOWN, "user_id": 7, "item_id": 2, "gender": "F"}]
    served = serve(loaded, rows)
    raw_spec = {k: v for k, v in output.raw_feature_spec().items() if k in F.MODEL_INPUT_KEYS}
    parsed = tf.io.parse_example(tf.constant(to_examples(rows)), raw_spec)
    direct = model(output.transform_features_layer()(parsed), training=False)
    for head in F.HEADS:
        np.testing.assert_allclose(served[head], direct[head].numpy(), rtol=1e-5, atol=1e-6)


def test_raw_signature_agrees_with_the_example_signature(exported):
    _, _, loaded = exported
    raw = {key: tf.constant([KNOWN[key]]) for key in F.MODEL_INPUT_KEYS}
    raw = {k: tf.cast(v, tf.int64) if v.dtype == tf.int32 else v for k, v in raw.items()}
    by_raw = loaded.signatures[F.PREDICT_RAW](**raw)
    by_example = serve(loaded, [KNOWN])
    for head in F.HEADS:
        np.testing.assert_allclose(by_raw[head].numpy(), by_example[head], rtol=1e-5)


def test_predictions_respond_to_the_inputs(exported):
    _, _, loaded = exported
    base = serve(loaded, [KNOWN])
    changes = (
        {"item_id": 9},
        {"user_id": 20},
        {"gender": "F", "genres": "Romance"},
        {"history": "4:5 6:5"},
        {"history": ""},
    )
    for change in changes:
        other = serve(loaded, [{**KNOWN, **change}])
        assert any(abs(other[h][0] - base[h][0]) > 1e-6 for h in F.HEADS), change


def test_unknown_ids_are_served_from_oov_buckets_and_features_still_count(exported):
    _, _, loaded = exported
    cold = {**KNOWN, "user_id": 987_654, "item_id": 123_456}
    scores = serve(loaded, [cold, {**cold, "gender": "F", "age": 41, "occupation": "writer"}])
    assert np.all(np.isfinite(scores[F.RATING]))
    assert abs(scores[F.CLICK][0] - scores[F.CLICK][1]) > 1e-6  # Side features still count.
    # Everything else left out: neutral defaults, not extreme scores.
    sparse = serve(loaded, [{"user_id": 987_654, "item_id": 5}])
    assert 1.0 < sparse[F.RATING][0] < 5.5
    for head in F.BINARY_HEADS:
        assert 1e-3 < sparse[head][0] < 1 - 1e-3


def test_transform_features_signature_gives_tfma_the_masked_labels(exported):
    _, _, loaded = exported
    rows = [
        {**KNOWN, "rating": 4.0, "click": 1, "purchase": 1},
        {**KNOWN, "click": 0, "purchase": 0},
    ]
    out = loaded.signatures[F.TRANSFORM_FEATURES](examples=tf.constant(to_examples(rows)))
    assert out[F.RATING_WEIGHT_XF].numpy().tolist() == [1.0, 0.0]
    assert out[F.LABEL_XF[F.RATING]].numpy().tolist() == [4.0, 0.0]
    assert out[F.LABEL_XF[F.CLICK]].numpy().tolist() == [1.0, 0.0]


def test_export_writes_tf_serving_warmup_requests_that_the_model_answers(exported, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    _, output, loaded = exported
    path = write_warmup_requests(str(tmp_path), warmup_examples(output))
    records = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(path)
    ]
    assert [len(r.predict_log.request.inputs["examples"].string_val) for r in records] == [9, 1]
    for record in records:
        request = record.predict_log.request
        assert request.model_spec.signature_name == F.SERVING_DEFAULT
        examples = tf.make_ndarray(request.inputs["examples"])
        outputs = loaded.signatures[F.SERVING_DEFAULT](examples=tf.constant(examples))
        assert all(np.all(np.isfinite(outputs[h].numpy())) for h in F.HEADS)


# ----------------------------------------------------------------------------- recommend


def test_recommend_matches_brute_force_scoring_and_excludes_seen_items(exported):
    _, _, loaded = exported
    user = {"user_id": 3, "age": 30, "gender": "M", "occupation": "engineer", "zip_prefix": "123"}
    everything = recommend(loaded, user, k=10_000)
    catalog = sorted(everything["item_id"].tolist())
    assert len(catalog) > 10 and len(set(catalog)) == len(catalog)
    items = movielens.load(Path(loaded.source_dir)).items.set_index(F.ITEM_ID)
    rows = [
        {
            **user,
            "item_id": item,
            "genres": items.loc[item, F.GENRES],
            "year": int(items.loc[item, F.YEAR]),
            "title": items.loc[item, F.TITLE],
        }
        for item in catalog
    ]
    served = serve(loaded, rows)
    blend = (0.2, 0.5, 0.3)
    brute = (
        blend[0] * (served[F.RATING] - 1) / 4
        + blend[1] * served[F.CLICK]
        + blend[2] * served[F.PURCHASE]
    )
    seen = set(catalog[::3])
    order = [i for i in np.argsort(-brute, kind="stable") if catalog[i] not in seen][:5]
    top = recommend(loaded, user, k=5, exclude=sorted(seen), blend=blend)
    assert top["item_id"].tolist() == [catalog[i] for i in order]
    np.testing.assert_allclose(top["score"], brute[order], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(top[F.CLICK], served[F.CLICK][order], rtol=1e-4, atol=1e-5)
    assert not set(top["item_id"].tolist()) & seen
    # Excluding all but three items leaves three.
    assert len(recommend(loaded, user, k=5, exclude=catalog[3:])["item_id"]) == 3


def test_unseen_users_with_different_features_get_different_recommendations(exported):
    _, _, loaded = exported
    # The whole catalog's order: a top 10 of 30 items can coincide on a model this small.
    him = recommend(
        loaded, {"user_id": 99_999, "gender": "M", "age": 22, "occupation": "student"}, k=100
    )
    her = recommend(
        loaded, {"user_id": 99_998, "gender": "F", "age": 41, "occupation": "writer"}, k=100
    )
    assert him["item_id"].tolist() != her["item_id"].tolist()
    assert not np.allclose(him["score"], her["score"])
    # The export's blend weights can be overridden per request.
    clicks_only = recommend(loaded, {"user_id": 99_999, "gender": "M"}, k=10, blend=(0.0, 1.0, 0.0))
    np.testing.assert_allclose(clicks_only["score"], clicks_only[F.CLICK], rtol=1e-5)


def test_an_unseen_user_is_ranked_by_the_history_passed_and_its_items_left_out(exported):
    _, _, loaded = exported
    stranger = {"user_id": 99_997}
    catalog = sorted(recommend(loaded, stranger, k=10_000)["item_id"].tolist())
    firsts = " ".join(f"{item}:5" for item in catalog[:4])
    lasts = " ".join(f"{item}:5" for item in catalog[-4:])
    nothing = recommend(loaded, stranger, k=10_000)
    first = recommend(loaded, {**stranger, "history": firsts}, k=10_000)
    last = recommend(loaded, {**stranger, "history": lasts}, k=10_000)
    assert first["item_id"].tolist() != last["item_id"].tolist()
    before = dict(zip(nothing["item_id"].tolist(), nothing["score"].tolist(), strict=True))
    after = dict(zip(first["item_id"].tolist(), first["score"].tolist(), strict=True))
    assert not np.allclose([after[i] for i in after], [before[i] for i in after])
    # With no `exclude`, the history's items are left out; an `exclude` given replaces it.
    assert set(catalog) - set(first["item_id"].tolist()) == set(catalog[:4])
    assert set(catalog) - set(last["item_id"].tolist()) == set(catalog[-4:])
    chosen = recommend(loaded, {**stranger, "history": firsts}, k=10_000, exclude=[catalog[-1]])
    assert set(catalog) - set(chosen["item_id"].tolist()) == {catalog[-1]}
    # Tokens that are not item ids rank as unknown items and exclude nothing.
    odd = recommend(loaded, {**stranger, "history": "x:5 y 3.5"}, k=10_000)
    assert sorted(odd["item_id"].tolist()) == catalog


def test_an_item_named_by_its_id_alone_scores_with_its_catalog_features(exported):
    """A known item sent without its features scores as with them, in serving_default and
    predict_raw, and as recommend scores it; features a request gives are used as given; an
    unknown item alone keeps the neutral defaults. Rows of one batch do not mix."""
    _, _, loaded = exported
    user = {"user_id": 3, "age": 30, "gender": "M", "occupation": "engineer", "zip_prefix": "123"}
    ranked = recommend(loaded, user, k=10_000)
    item = int(ranked["item_id"][len(ranked["item_id"]) // 2])
    known = movielens.load(Path(loaded.source_dir)).items.set_index(F.ITEM_ID).loc[item]
    own = {F.GENRES: known[F.GENRES], F.YEAR: int(known[F.YEAR]), F.TITLE: known[F.TITLE]}
    alone = {**user, "item_id": item}
    wide = {**alone, **own, F.GENRES: "Action|Comedy|Drama|Horror|Romance|Thriller|War"}
    stranger = {**user, "item_id": 987_654}
    rows = [{**alone, **own}, alone, wide, stranger, {**stranger, **own}, alone]
    scored = serve(loaded, rows)
    for head in F.HEADS:
        np.testing.assert_allclose(scored[head][[1, 5]], scored[head][0], rtol=1e-5)
    assert abs(scored[F.CLICK][2] - scored[F.CLICK][0]) > 1e-6  # Given genres count.
    assert abs(scored[F.CLICK][4] - scored[F.CLICK][3]) > 1e-6  # No catalog row to take.
    at = ranked["item_id"].tolist().index(item)
    np.testing.assert_allclose(ranked[F.CLICK][at], scored[F.CLICK][1], rtol=1e-4, atol=1e-6)
    raw = {
        key: [row.get(key, F.MISSING_DEFAULTS.get(key, "")) for row in rows[:2]]
        for key in F.MODEL_INPUT_KEYS
    }
    by_raw = loaded.signatures[F.PREDICT_RAW](
        **{
            key: tf.constant(values, tf.string if isinstance(values[0], str) else tf.int64)
            for key, values in raw.items()
        }
    )
    np.testing.assert_allclose(by_raw[F.CLICK].numpy(), scored[F.CLICK][:2], rtol=1e-5)


# ------------------------------------------------------------------- a catalog at scale

BIG = 5_000
BLEND = (0.2, 0.5, 0.3)


def large_catalog(small: Catalog, cards: dict[str, int], size: int) -> Catalog:
    """``size`` items with random transformed features (ids, buckets and bags the model
    knows), so that their scores differ."""
    rng = np.random.default_rng(0)
    dense = {
        key: (rng.integers(0, cards[key], size) if key in cards else rng.normal(size=size)).astype(
            value.dtype
        )
        for key, value in small.dense.items()
    }
    rows = rng.integers(0, len(small), size)
    bags = {key: padded[rows] for key, padded in small.bags.items()}
    return Catalog(np.arange(1, size + 1, dtype=np.int64) * 3, dense, bags)


def export_with_candidates(trained, directory: Path, catalog: Catalog, candidates: int):
    """Export ``trained.model`` with ``retrieval.candidates`` set to ``candidates``."""
    model = trained.model
    config = model.config
    model.config = dataclasses.replace(
        config, retrieval=dataclasses.replace(config.retrieval, candidates=candidates)
    )
    try:
        export_model(model, trained.output, str(directory), catalog, BLEND)
    finally:
        model.config = config
    return tf.saved_model.load(str(directory))


def largest_constant(export_dir: Path) -> int:
    """Elements of the largest Const in saved_model.pb's graph and its functions."""
    graph = meta_graph(export_dir).graph_def
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    return max(
        math.prod(d.size for d in n.attr["value"].tensor.tensor_shape.dim)
        for n in nodes
        if n.op == "Const"
    )


def test_numbers_are_z_scored_against_training_and_a_missing_one_is_neutral(trained):
    """One analysis pass gives the z-scores (Transform reads the training split once): over
    the training rows they have mean 0 and deviation 1; a row without an age or a year
    takes the training mean, so its z-score is exactly 0."""
    columns = {key: [] for key in (F.transformed_name(F.AGE_Z), F.transformed_name(F.YEAR_Z))}
    for batch in trained.train:
        for key in columns:
            columns[key].append(tf.reshape(batch[key], [-1]).numpy())
    for key, parts in columns.items():
        values = np.concatenate(parts)
        assert abs(values.mean()) < 1e-4 and values.std() == pytest.approx(1.0, abs=1e-3), key
    spec = serving_feature_spec(trained.output.raw_feature_spec())  # As a request is read.
    rows = [KNOWN, {k: v for k, v in KNOWN.items() if k not in (F.AGE, F.YEAR)}]
    layer = trained.output.transform_features_layer()
    out = layer(tf.io.parse_example(tf.constant(to_examples(rows)), spec))
    for key in columns:
        known, missing = tf.reshape(out[key], [-1]).numpy()
        assert missing == 0.0 and known != 0.0, (key, known, missing)


def test_the_export_saves_no_optimizer_state(exported):
    _, _, loaded = exported
    saved = tf.train.list_variables(f"{loaded.export_dir}/variables/variables")
    assert saved and not [name for name, _ in saved if "optimizer" in name]


def test_fit_traces_the_train_step_once(exported):
    """Weights and optimizer slots exist before the first step, so tf.function does not
    trace the step a second time after a first trace that created variables."""
    model, _, _ = exported
    assert model.train_function.experimental_get_tracing_count() == 1


def test_the_export_saves_no_keras_layer_functions(exported):
    """Neither the model nor Transform's graph is saved as a Keras object: their own call
    functions (traced again at every export, read by nobody) are absent; only the
    signatures' functions and what they call are saved."""
    _, _, loaded = exported
    graph = meta_graph(loaded.export_dir)
    names = [f.signature.name for f in graph.graph_def.library.function]
    assert names and not [n for n in names if "call_and_return_conditional_losses" in n]
    kinds = {node.WhichOneof("kind") for node in graph.object_graph_def.nodes}
    user_objects = [
        node.user_object.identifier
        for node in graph.object_graph_def.nodes
        if node.WhichOneof("kind") == "user_object"
    ]
    assert "variable" in kinds and not [i for i in user_objects if i.startswith("_tf_keras")]


def test_a_catalog_of_5000_items_is_saved_as_variables_and_recommends_exactly(trained, tmp_path):
    """At 5,000 items: no per-item constant in the graph (saved_model.pb does not grow with
    the catalog), and both recommend paths rank and exclude exactly, with an exclusion list
    of thousands."""
    catalog = large_catalog(trained.catalog, cardinalities(trained.output), BIG)
    small_graph = (Path(trained.loaded.export_dir) / "saved_model.pb").stat().st_size
    user = {"user_id": 3, "age": 30, "gender": "M", "occupation": "engineer", "zip_prefix": "123"}
    seen = sorted(np.random.default_rng(1).choice(catalog.item_ids, 4_000, replace=False).tolist())
    unseen = sorted(set(catalog.item_ids.tolist()) - set(seen))

    full = export_with_candidates(trained, tmp_path / "full", catalog, candidates=0)
    retrieval = export_with_candidates(trained, tmp_path / "retrieval", catalog, candidates=100)
    for name in ("full", "retrieval"):
        assert largest_constant(tmp_path / name) < BIG, name
        graph = (tmp_path / name / "saved_model.pb").stat().st_size
        assert graph < small_graph + 20_000, (name, graph, small_graph)

    # Every item scored by the model in memory, as the full path must.
    raw = {
        key: tf.constant([[user.get(key, 0 if key in ("item_id", "year") else "")]])
        for key in F.MODEL_INPUT_KEYS
    }
    raw = {k: tf.cast(v, tf.int64) if v.dtype == tf.int32 else v for k, v in raw.items()}
    features = trained.output.transform_features_layer()(raw)
    inputs = {key: tf.repeat(features[key][:1], BIG, axis=0) for key in F.USER_XF}
    inputs.update(
        item_features(
            {key: tf.constant(value) for key, value in catalog.dense.items()},
            {key: tf.constant(value) for key, value in catalog.bags.items()},
        )
    )
    heads = {key: value.numpy() for key, value in trained.model(inputs, training=False).items()}
    brute = blended_score(heads[F.RATING], heads[F.CLICK], heads[F.PURCHASE], np.array(BLEND))
    by_id = dict(zip(catalog.item_ids.tolist(), brute.tolist(), strict=True))

    top = recommend(full, user, k=10, exclude=seen)
    ids = top["item_id"].tolist()
    assert len(ids) == 10 and not set(ids) & set(seen)
    np.testing.assert_allclose(top["score"], [by_id[i] for i in ids], rtol=1e-4, atol=1e-5)
    eleventh = sorted((by_id[i] for i in unseen), reverse=True)[10]
    assert np.all(top["score"] >= eleventh - 1e-5)  # The best 10 of the unseen items.
    assert np.all(np.diff(top["score"]) <= 1e-6)

    near = recommend(retrieval, user, k=10, exclude=seen)["item_id"].tolist()
    assert len(near) == 10 and not set(near) & set(seen)
    # Excluding all but 10 items leaves those 10, whichever path.
    for loaded in (full, retrieval):
        left = recommend(loaded, user, k=20, exclude=catalog.item_ids[10:].tolist())
        assert sorted(left["item_id"].tolist()) == catalog.item_ids[:10].tolist()


# ------------------------------------------------------------- history over TF Serving's API


def test_history_is_served_over_grpc_predict_as_in_process(trained, tmp_path):
    """The exported model behind the server, over gRPC Predict with TF Serving's protos:
    serving_default (tf.Examples), predict_raw and recommend answer a history exactly as
    the SavedModel does in process, and the signatures' metadata lists it."""
    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc as service

    from mtrec.serving import config
    from mtrec.serving.server import ModelServer, ServerOptions

    base = tmp_path / "mtrec"
    shutil.copytree(trained.loaded.export_dir, base / "1")
    options = ServerOptions(
        models=tuple(config.single_model("mtrec", str(base))), port=0, rest_api_port=0
    )
    server = ModelServer(options).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = service.PredictionServiceStub(channel)
    loaded = trained.loaded

    def call(signature: str, inputs: dict) -> dict:
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "mtrec", signature
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        response = stub.Predict(request, timeout=30)
        return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}

    try:
        rows = [{**KNOWN, "history": h} for h in ("2:4 7 1:1", "4:5 6:5", "")]
        examples = np.array(to_examples(rows), dtype=object)
        over_grpc = call(F.SERVING_DEFAULT, {"examples": examples})
        in_process = loaded.signatures[F.SERVING_DEFAULT](examples=tf.constant(examples))
        for head in F.HEADS:
            np.testing.assert_allclose(over_grpc[head], in_process[head].numpy(), rtol=1e-6)
            assert len(set(np.round(over_grpc[head], 6).tolist())) == 3  # It moves.
        raw = {key: np.array([rows[1][key]]) for key in F.MODEL_INPUT_KEYS}
        raw = {k: v.astype(np.int64) if v.dtype.kind == "i" else v for k, v in raw.items()}
        over_grpc = call(F.PREDICT_RAW, raw)
        in_process = loaded.signatures[F.PREDICT_RAW](**{k: tf.constant(v) for k, v in raw.items()})
        for head in F.HEADS:
            np.testing.assert_allclose(over_grpc[head], in_process[head].numpy(), rtol=1e-6)
        user = {"user_id": 99_996, "history": "2:5 7:4"}
        inputs = {
            "user_id": np.array([99_996], np.int64),
            "age": np.array([0], np.int64),
            **{key: np.array([b""]) for key in ("gender", "occupation", "zip_prefix")},
            "history": np.array([user["history"].encode()]),
            "k": np.array([5], np.int64),
            "exclude": np.array([], np.int64),
            "blend": np.array([], np.float32),
        }
        over_grpc = call(F.RECOMMEND, inputs)
        in_process = recommend(loaded, user, k=5)
        assert over_grpc["item_id"].tolist() == in_process["item_id"].tolist()
        # Over REST, the empty `exclude` and `blend` lists take the signature's types.
        body = {
            key: [v.decode() if isinstance(v, bytes) else v.item() for v in value]
            for key, value in inputs.items()
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/mtrec:predict",
            data=json.dumps({"signature_name": F.RECOMMEND, "inputs": body}).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            over_rest = json.loads(response.read())["outputs"]
        assert over_rest["item_id"] == in_process["item_id"].tolist()
        assert not {2, 7} & set(over_grpc["item_id"].tolist())
        np.testing.assert_allclose(over_grpc["score"], in_process["score"], rtol=1e-6)

        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata.model_spec.name = "mtrec"
        defs = get_model_metadata_pb2.SignatureDefMap()
        stub.GetModelMetadata(metadata, timeout=30).metadata["signature_def"].Unpack(defs)
        for signature in (F.PREDICT_RAW, F.RECOMMEND):
            assert (
                defs.signature_def[signature].inputs[F.HISTORY].dtype == tf.string.as_datatype_enum
            )
    finally:
        channel.close()
        server.stop(grace=1)
