"""Export for TF Serving and TFMA: the Transform graph and the model in one SavedModel.

Signatures:
- ``serving_default``: serialized tf.Example (no labels) in, {rating, click, purchase} out.
- ``predict_raw``: one rank-1 tensor per raw feature, for clients that build no tf.Example.
- ``transform_features``: serialized tf.Example in, dense transformed features out (TFMA
  reads labels and the rating weight from it).
- ``recommend`` (when a catalog is given): top-k items for one user over the whole catalog
  (see models/recommend.py).
- ``regress_rating``, ``classify_click``, ``classify_purchase``: TF Serving's Regress and
  Classify APIs (input ``inputs``: serialized tf.Examples; outputs ``outputs``, or
  ``scores`` and ``classes`` for the labels "0" and "1"). ``tf.saved_model.save`` writes
  every signature as a predict signature, so their method names are set afterwards.
Features a request leaves out take neutral defaults, and unknown ids map to OOV buckets; a
known item named by its id alone takes its features from the catalog (as ``recommend``
scores it).
The export also writes ``assets.extra/tf_serving_warmup_requests``, which TF Serving replays
before it serves a new version.
"""

from __future__ import annotations

import math
import os
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.saved import saved_transform_io_v2

from mtrec import names as F
from mtrec.models.recommend import (
    Catalog,
    attach_catalog,
    make_recommend_fn,
    with_catalog_features,
)

SIGNATURES = (
    F.SERVING_DEFAULT,
    F.PREDICT_RAW,
    F.TRANSFORM_FEATURES,
    F.REGRESS_RATING,
    *F.CLASSIFY.values(),
    F.RECOMMEND,
)
METHOD_NAMES = {
    F.REGRESS_RATING: F.REGRESS_METHOD,
    **{name: F.CLASSIFY_METHOD for name in F.CLASSIFY.values()},
}
EXAMPLES_INPUT = "examples"
TF_SERVING_INPUTS = "inputs"  # The input name TF Serving's Classify and Regress require.
WARMUP_BATCH = 8


def serving_feature_spec(raw_spec: dict[str, Any]) -> dict[str, tf.io.FixedLenFeature]:
    """Parsing spec for model inputs only, each with a default so it may be left out."""
    spec = {}
    for key in F.MODEL_INPUT_KEYS:
        feature = raw_spec[key]
        # A feature a request leaves out is what a missing value is in the training examples.
        default = F.MISSING_DEFAULTS.get(key, "" if feature.dtype == tf.string else 0)
        # A VarLenFeature (no shape) is served as one value per example.
        shape = list(feature.shape) if hasattr(feature, "shape") else [1]
        spec[key] = tf.io.FixedLenFeature(
            shape, feature.dtype, default_value=[default] * math.prod(shape) if shape else default
        )
    return spec


class TransformGraph(tf.Module):
    """Transform's graph as the export applies and saves it: what TFT's
    ``TransformFeaturesLayer`` does, as a plain module. That layer is a Keras model, and
    ``tf.saved_model.save`` traces every Keras model's own call functions again, which
    nobody loads (about half of an export's 8 s on a four-week MovieLens window)."""

    def __init__(self, tft_output: tft.TFTransformOutput) -> None:
        super().__init__(name="transform_graph")
        self._loader = saved_transform_io_v2.SavedModelLoader(tft_output.transform_savedmodel_dir)
        # Tracked as the layer tracks it, so the graph's tables and assets are saved too.
        self._loader_tracked_dict = self._loader.__dict__

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return self._loader.apply_transform_model(inputs)


def export_model(
    model: tf.keras.Model,
    tft_output: tft.TFTransformOutput,
    export_dir: str,
    catalog: Catalog | None = None,
    blend_weights: tuple[float, float, float] = (0.0, 1.0, 0.0),
) -> None:
    """Save ``model`` with Transform's graph and all signatures to ``export_dir``; with a
    ``catalog`` also the ``recommend`` signature, ranking by ``blend_weights``."""
    module = tf.Module()
    # The model's variables, not the Keras model: tracking the model makes
    # tf.saved_model.save serialize every Keras layer's own call functions (each traced
    # again, with AutoGraph), which nothing reads back: TF Serving and TFMA call the
    # signatures. On ML-100K that was about 6 of the export's 13 s.
    module.model_variables = list(model.variables)
    module.transform_graph = TransformGraph(tft_output)
    raw_spec = tft_output.raw_feature_spec()
    input_spec = serving_feature_spec(raw_spec)
    labelled_spec = {**input_spec, **{head: raw_spec[head] for head in F.HEADS}}

    if catalog is not None:
        attach_catalog(module, catalog)
    missing = {key: input_spec[key].default_value[0] for key in F.ITEM_FEATURES}

    def predict(raw_features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = module.transform_graph(raw_features)
        if catalog is not None:  # An item named by its id alone takes the catalog's features.
            transformed = with_catalog_features(module, raw_features, transformed, missing)
        outputs = model(transformed, training=False)
        return {head: tf.identity(outputs[head], name=head) for head in F.HEADS}

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)], autograph=False
    )
    def serve_examples(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return predict(tf.io.parse_example(examples, input_spec))

    @tf.function(autograph=False)
    def serve_raw(**raw: tf.Tensor) -> dict[str, tf.Tensor]:
        shaped = {
            key: tf.reshape(value, [-1, *input_spec[key].shape]) for key, value in raw.items()
        }
        return predict(shaped)

    raw_inputs = {
        key: tf.TensorSpec([None], input_spec[key].dtype, name=key) for key in F.MODEL_INPUT_KEYS
    }

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)], autograph=False
    )
    def transform_features(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = module.transform_graph(tf.io.parse_example(examples, labelled_spec))
        return {
            key: value for key, value in transformed.items() if isinstance(value, tf.Tensor)
        }  # Signatures carry dense tensors only.

    examples_spec = [tf.TensorSpec([None], tf.string, name=TF_SERVING_INPUTS)]

    @tf.function(input_signature=examples_spec, autograph=False)
    def regress_rating(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": serve_examples(inputs)[F.RATING]}

    def classifier(head: str) -> Any:
        @tf.function(input_signature=examples_spec, autograph=False)
        def classify(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            positive = serve_examples(inputs)[head]
            scores = tf.stack([1.0 - positive, positive], axis=1)
            classes = tf.broadcast_to(tf.constant([b"0", b"1"]), tf.shape(scores))
            return {"scores": scores, "classes": classes}

        return classify

    signatures = {
        F.SERVING_DEFAULT: serve_examples,
        F.PREDICT_RAW: serve_raw.get_concrete_function(**raw_inputs),
        F.TRANSFORM_FEATURES: transform_features,
        F.REGRESS_RATING: regress_rating,
        **{name: classifier(head) for head, name in F.CLASSIFY.items()},
        **(
            {F.RECOMMEND: make_recommend_fn(module, model, catalog, input_spec, blend_weights)}
            if catalog is not None
            else {}
        ),
    }
    # Serving reads no optimizer state, and Adam's two slots per weight would triple the
    # saved variables (the item embeddings most, which grow with the catalog). Detached as
    # Keras's own save(include_optimizer=False) does, and put back after.
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        model.optimizer = None
        model._delete_tracking("optimizer")
    try:
        tf.saved_model.save(module, export_dir, signatures=signatures)
    finally:
        if optimizer is not None:
            model.optimizer = optimizer
    set_method_names(export_dir, METHOD_NAMES)
    write_warmup_requests(export_dir, warmup_examples(tft_output))


def set_method_names(export_dir: str, methods: dict[str, str]) -> None:
    """Mark signatures as classify/regress in saved_model.pb, as TF Serving requires."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as source:
        proto.ParseFromString(source.read())
    for graph in proto.meta_graphs:
        for name, method in methods.items():
            graph.signature_def[name].method_name = method
    with tf.io.gfile.GFile(path, "wb") as target:
        target.write(proto.SerializeToString())


def warmup_examples(tft_output: tft.TFTransformOutput) -> list[bytes]:
    """Requests for the most frequent training users and items, plus one unknown pair, with
    histories of the most frequent items."""
    from mtrec.examples import to_examples  # Deferred: serving depends on models.

    users = tft_output.vocabulary_by_name(F.USER_ID)[:WARMUP_BATCH]
    items = tft_output.vocabulary_by_name(F.ITEM_ID)[:WARMUP_BATCH]
    # Histories of the most frequent items (their lengths vary), and one that is empty.
    history = [f"{int(item)}{F.HISTORY_RATING_SEPARATOR}4" for item in items]
    rows = [
        {F.USER_ID: int(user), F.ITEM_ID: int(item), F.HISTORY: " ".join(history[:index])}
        for index, (user, item) in enumerate(zip(users, items, strict=False))
    ]
    # Cold start: both ids unknown, ranked by a history.
    rows.append({F.USER_ID: -1, F.ITEM_ID: -1, F.HISTORY: " ".join(history)})
    return to_examples(rows)


def write_warmup_requests(export_dir: str, examples: list[bytes]) -> str:
    """TF Serving's warmup file: one batch Predict request and one single-example request."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(export_dir, F.WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for batch in (examples, examples[:1]):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=F.SERVING_DEFAULT)
            )
            request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path
