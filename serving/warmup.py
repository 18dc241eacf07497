"""Replay ``assets.extra/tf_serving_warmup_requests`` the way TF Serving does before a new
version serves: each record is a PredictionLog whose request runs through the same path
as a live request (up to 1,000 records, as in TF Serving)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mtrec import names as F
from mtrec.serving.manager import Servable

if TYPE_CHECKING:
    from mtrec.serving.inference import Inference

MAX_WARMUP_RECORDS = 1000


def replay_warmup(servable: Servable, inference: Inference) -> int:
    """Run every warmup request against ``servable``; raise on the first failure."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from mtrec.serving.inference import (
        examples_from_input,
    )
    from mtrec.serving.tensors import from_proto

    path = os.path.join(servable.path, F.WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    replayed = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            request = log.predict_log.request
            inference.predict_on(
                servable,
                request.model_spec.signature_name or F.SERVING_DEFAULT,
                {k: from_proto(k, v) for k, v in request.inputs.items()},
            )
        elif kind in ("classify_log", "regress_log"):
            request = getattr(log, kind).request
            inference.examples_on(
                servable,
                request.model_spec.signature_name or F.SERVING_DEFAULT,
                F.CLASSIFY_METHOD if kind == "classify_log" else F.REGRESS_METHOD,
                examples_from_input(request.input),
            )
        else:
            raise ValueError(f"unsupported warmup record type '{kind}' in {path}")
        replayed += 1
    return replayed
