"""Replay ``assets.extra/tf_serving_warmup_requests`` the way TF Serving does before a new
version serves: each record is a PredictionLog whose request runs through the same path
as a live request (at most 1,000 records: more fail the version, as in TF Serving)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mtrec import names as F
from mtrec.serving.manager import Servable

if TYPE_CHECKING:
    from mtrec.serving.inference import Inference

MAX_WARMUP_RECORDS = 1000


def replay_warmup(servable: Servable, inference: Inference, iterations: int = 1) -> int:
    """Run every warmup request against ``servable`` ``iterations`` times (TF Serving's
    --num_request_iterations_for_warmup) and return how many records there were; raise on
    the first failure, and past MAX_WARMUP_RECORDS records (as saved_model_warmup_util.cc)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(servable.path, F.WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    records = 0
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        run = _warmup_call(servable, inference, log, path)
        for _ in range(max(1, iterations)):
            run()
        records += 1
        if records > MAX_WARMUP_RECORDS:
            raise ValueError(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
    return records


def _warmup_call(servable: Servable, inference: Inference, log: Any, path: str) -> Any:
    """The call one warmup record makes: Predict, Classify, Regress or MultiInference."""
    from mtrec.serving.inference import examples_from_input
    from mtrec.serving.tensors import from_proto

    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        signature = request.model_spec.signature_name or F.SERVING_DEFAULT
        inputs = {k: from_proto(k, v) for k, v in request.inputs.items()}
        return lambda: inference.predict_on(servable, signature, inputs)
    if kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        signature = request.model_spec.signature_name or F.SERVING_DEFAULT
        method = F.CLASSIFY_METHOD if kind == "classify_log" else F.REGRESS_METHOD
        examples = examples_from_input(request.input)
        return lambda: inference.examples_on(servable, signature, method, examples)
    if kind == "multi_inference_log":
        request = log.multi_inference_log.request
        examples = examples_from_input(request.input)
        return lambda: [
            inference.examples_on(
                servable,
                task.model_spec.signature_name or F.SERVING_DEFAULT,
                task.method_name,
                examples,
            )
            for task in request.tasks
        ]
    raise ValueError(f"unsupported warmup record type '{kind}' in {path}")
