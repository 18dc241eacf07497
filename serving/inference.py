"""What both front ends (gRPC and REST) call: Predict, Classify, Regress, metadata and
status, over the model manager and the optional batcher."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from mtrec import names as F
from mtrec.serving.batching import Batcher
from mtrec.serving.errors import ServingError, invalid
from mtrec.serving.loop import LoopCalls
from mtrec.serving.manager import ModelManager, Servable
from mtrec.serving.monitoring import ServingMetrics
from mtrec.serving.tensors import check_inputs


class Inference:
    """Resolves the servable, checks the request against the signature, runs it."""

    def __init__(
        self,
        manager: ModelManager,
        batcher: Batcher | None = None,
        metrics: ServingMetrics | None = None,
        calls: LoopCalls | None = None,
    ) -> None:
        self.manager = manager
        self.batcher = batcher
        self.metrics = metrics  # runtime_latency of model calls (None: not recorded).
        self.calls = calls  # How predict_async runs a model call without a batcher.

    def predict(
        self,
        name: str,
        version: int | None,
        label: str | None,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> tuple[Servable, str, dict[str, Any]]:
        servable, signature = self._resolve(name, version, label, signature_name)
        outputs = self.predict_on(servable, signature, inputs)
        return servable, signature, _filtered(outputs, output_filter, signature)

    async def predict_async(
        self,
        name: str,
        version: int | None,
        label: str | None,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> tuple[Servable, str, dict[str, Any]]:
        """``predict`` on an event loop (the batcher's, or that of ``calls``): with
        batching, the request waits there for its batch, holding no thread."""
        servable, signature = self._resolve(name, version, label, signature_name)
        key, run, checked = _model_call(servable, signature, inputs)
        start = time.perf_counter_ns()
        if self.batcher is not None:
            outputs = await self.batcher.run(key, run, checked)
        elif self.calls is not None:
            outputs = await self.calls.call(run, checked)
        else:
            raise RuntimeError("predict_async needs a batcher or loop calls")
        self._record_runtime(servable, "Predict", start)
        return servable, signature, _filtered(outputs, output_filter, signature)

    def predict_on(
        self,
        servable: Servable,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        api: str = "Predict",
    ) -> dict[str, np.ndarray]:
        """Check ``inputs`` against ``signature`` of a given servable and run it. A run
        that succeeds is timed in ``runtime_latency`` under ``api`` (Predict, Classify,
        Regress), batching included, as TF Serving times its session's Run."""
        key, run, checked = _model_call(servable, signature, inputs)
        start = time.perf_counter_ns()
        if self.batcher is None:
            outputs = run(checked)
        else:
            outputs = self.batcher.submit(key, run, checked)
        self._record_runtime(servable, api, start)
        return outputs

    def _resolve(
        self, name: str, version: int | None, label: str | None, signature_name: str
    ) -> tuple[Servable, str]:
        """The servable a request names, and its signature (the default when unnamed)."""
        return self.manager.resolve(name, version, label), signature_name or F.SERVING_DEFAULT

    def _record_runtime(self, servable: Servable, api: str, start_ns: int) -> None:
        if self.metrics is not None:
            self.metrics.runtime_latency.observe(
                servable.name,
                api,
                self.metrics.RUNTIME,
                value=(time.perf_counter_ns() - start_ns) // 1000,
            )

    def run_examples(
        self,
        name: str,
        version: int | None,
        label: str | None,
        signature_name: str,
        method: str,
        examples: list[bytes],
    ) -> tuple[Servable, str, dict[str, Any]]:
        """Classify or Regress: serialized tf.Examples into a signature of ``method``."""
        servable, signature = self._resolve(name, version, label, signature_name)
        return servable, signature, self.examples_on(servable, signature, method, examples)

    def examples_on(
        self, servable: Servable, signature: str, method: str, examples: list[bytes]
    ) -> dict[str, np.ndarray]:
        definition = servable.signature_defs.get(signature)
        if signature not in servable.model.signatures:  # As TF Serving's classifier.cc and
            # regressor.cc (Predict says FAILED_PRECONDITION instead).
            raise invalid(f"No signature was found with the name: {signature}")
        actual = definition.method_name if definition is not None else F.PREDICT_METHOD
        if actual != method:
            kind = "classification" if method == F.CLASSIFY_METHOD else "regression"
            raise invalid(
                f"Expected {kind} signature method_name to be {method}. Was: "
                f"{actual} (signature '{signature}')"
            )
        if not examples:
            raise invalid("Input is empty: the request has no examples")
        api = "Classify" if method == F.CLASSIFY_METHOD else "Regress"
        return self.predict_on(
            servable, signature, {"inputs": np.array(examples, dtype=object)}, api
        )

    def multi_inference(self, tasks: Sequence[Any], examples: list[bytes]) -> tuple[Servable, list]:
        """MultiInference: classify and regress tasks of one model on the same examples.
        Returns the servable and, per task, (signature, method, outputs). The checks and
        their codes are TF Serving's (servables/tensorflow/multi_inference.cc)."""
        name, version, label = "", None, None
        signatures: set[str] = set()
        for task in tasks:
            spec = task.model_spec
            if not spec.name:
                raise invalid("Found ModelSpec with an empty model name.")
            if not name:
                name = spec.name
                if spec.WhichOneof("version_choice") == "version":
                    version = spec.version.value
                elif spec.WhichOneof("version_choice") == "version_label":
                    label = spec.version_label or None
            elif spec.name != name:
                raise invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            signature = spec.signature_name or F.SERVING_DEFAULT
            if signature in signatures:
                raise invalid(f"Duplicate evaluation of signature: {signature}")
            signatures.add(signature)
        servable = self.manager.resolve(name, version, label)
        for task in tasks:
            signature = task.model_spec.signature_name or F.SERVING_DEFAULT
            if signature not in servable.model.signatures:
                raise invalid(f"Requested signature not found in model graph: {signature}")
            if task.method_name not in (F.CLASSIFY_METHOD, F.REGRESS_METHOD):
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"Unsupported signature method_name: {task.method_name}",
                )
        results = []
        for task in tasks:
            signature = task.model_spec.signature_name or F.SERVING_DEFAULT
            outputs = self.examples_on(servable, signature, task.method_name, examples)
            results.append((signature, task.method_name, outputs))
        return servable, results


def _model_call(
    servable: Servable, signature: str, inputs: Mapping[str, np.ndarray]
) -> tuple[tuple, Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]], dict]:
    """What running ``signature`` on ``inputs`` takes: the batch key (requests that may
    share a model call: the same loaded servable and signature), the call, and the inputs
    checked against the signature."""
    function = servable.signature(signature)
    checked = check_inputs(signature, function, inputs)
    key = (servable.name, servable.version, id(servable), signature)
    return key, functools.partial(call_signature, function), checked


def _filtered(
    outputs: dict[str, Any], output_filter: Sequence[str], signature: str
) -> dict[str, Any]:
    """The outputs a Predict's ``output_filter`` names (all of them when it is empty)."""
    if not output_filter:
        return outputs
    unknown = sorted(set(output_filter) - set(outputs))
    if unknown:
        raise invalid(
            f"output_filter names '{unknown[0]}', which signature "
            f"'{signature}' does not output (outputs: "
            f"{', '.join(sorted(outputs))})"
        )
    return {k: outputs[k] for k in output_filter}


def call_signature(function: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Call a concrete function; TensorFlow's complaints about the data are the client's."""
    import tensorflow as tf

    try:
        outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as err:
        raise invalid(tf_error_text(getattr(err, "message", str(err)))) from None
    return {k: v.numpy() for k, v in outputs.items()}


def tf_error_text(message: str) -> str:
    """The line of a TensorFlow error that says what was wrong, without the graph trace
    ("Graph execution error: Detected at node ... defined at ...")."""
    noise = ("Graph execution error", "Detected at node", "File ", "<stack traces")
    lines = [
        line
        for line in message.strip().splitlines()
        if line.strip() and not line[0].isspace() and not line.startswith(noise)
    ]
    line = lines[0] if lines else message.strip()
    return line.split("\t [[")[0].split(" [[")[0].strip()[:500]


def examples_from_input(input_proto: Any) -> list[bytes]:
    """A tensorflow_serving.Input (example_list, or example_list_with_context, whose context
    features are merged into every example) as serialized tf.Examples."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        listed = input_proto.example_list_with_context
        merged = []
        for example in listed.examples:
            combined = type(example)()
            combined.CopyFrom(listed.context)
            combined.MergeFrom(example)
            merged.append(combined.SerializeToString())
        return merged
    raise invalid("Input is empty: set input.example_list or input.example_list_with_context")


def as_serving_error(error: BaseException) -> ServingError:
    """Any exception as a ServingError (INTERNAL unless it already is one)."""
    if isinstance(error, ServingError):
        return error
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
