"""Serving benchmark: gRPC Predict latency and throughput of `mtrec serve` against the
in-process signature call (the floor), on the same pushed model, in one run.

    python benchmarks/serving.py [--model_base_path mtrec_output/serving_model]

Cases: batch 1 and 100; 1 and 8 concurrent clients; server-side batching off and on; and
REST :predict over one keep-alive connection, batch 1. The servers run as `mtrec serve`
subprocesses on loopback; clients are threads here, each with its own channel or
connection, sending ready-made requests (so the client's own request building is not
timed). Prints one table with p50/p99 latency, throughput, ratios to the floor and, with
batching on, the merge factor: requests per model call, from the server's own Prometheus
batching metrics. It says whether the machine was otherwise idle (load average).

A last case measures gRPC itself: a server in its own process whose Predict returns one
ready-made response (no decoding, no model), under the same clients. Its 8-client rate is
the most any Python gRPC server can answer on this machine, so it bounds what batching can
gain over the unbatched server.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from mtrec import names as F
from mtrec.examples import to_examples
from mtrec.serving.server import ServerOptions


def latest_version(base: Path) -> Path:
    if not base.is_dir():
        raise SystemExit(f"serving.py: error: no push folder at {base}: run `make run` first")
    versions = sorted((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise SystemExit(f"no model version under {base}: run `make run` first")
    return versions[-1]


def sample_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "user_id": int(rng.integers(1, 944)),
            "item_id": int(rng.integers(1, 1683)),
            "gender": str(rng.choice(["M", "F"])),
            "age": int(rng.integers(18, 60)),
            "occupation": "engineer",
            "genres": "Drama|Comedy",
            "year": 1995,
        }
        for _ in range(n)
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed(call, seconds: float, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        call()
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return latencies


def floor(model_dir: Path, batch: int, seconds: float) -> dict:
    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    examples = tf.constant(to_examples(sample_rows(batch)))
    latencies = timed(lambda: signature(examples=examples), seconds)
    return summarise(latencies, batch, 1, seconds)


def summarise(latencies: list[float], batch: int, clients: int, seconds: float) -> dict:
    ordered = sorted(latencies)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "rows_per_s": len(latencies) * batch / seconds,
        "requests": len(latencies),
        "clients": clients,
    }


class Server:
    """`mtrec serve` in a subprocess, with Prometheus metrics on its REST port."""

    def __init__(
        self, base: Path, batching: bool, monitoring: Path, parameters: str | None = None
    ) -> None:
        self.port = free_port()
        self.rest_port = free_port()
        command = [
            sys.executable,
            "-m",
            "mtrec",
            "serve",
            "--port",
            str(self.port),
            "--rest_api_port",
            str(self.rest_port),
            "--monitoring_config_file",
            str(monitoring),
            "--model_base_path",
            str(base),
            "--file_system_poll_wait_seconds",
            "30",
        ]
        if batching:
            command.append("--enable_batching")
            if parameters:
                command += ["--batching_parameters_file", parameters]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        banner = self.process.stdout.readline()
        if "gRPC on" not in banner:
            raise SystemExit(f"mtrec serve did not start: {banner}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)

    def batches(self) -> tuple[float, float]:
        """(requests, model calls) the batcher has seen so far, from the server's metrics:
        the counts of its input and processed batch-size histograms."""
        connection = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=30)
        connection.request("GET", METRICS_PATH)
        text = connection.getresponse().read().decode()
        connection.close()
        counts = {}
        for line in text.splitlines():
            for name in ("input_batch_size", "processed_batch_size"):
                if line.startswith(f":tensorflow:serving:batching_session:{name}_count"):
                    counts[name] = counts.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return counts.get("input_batch_size", 0.0), counts.get("processed_batch_size", 0.0)


METRICS_PATH = "/monitoring/prometheus/metrics"


class ReadyAnswer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers every Predict with one ready-made response: what gRPC costs without a model."""

    def __init__(self) -> None:
        self.response = predict_pb2.PredictResponse()
        for head in F.HEADS:
            self.response.outputs[head].CopyFrom(tf.make_tensor_proto([0.5], tf.float32))

    def Predict(self, request, context):
        return self.response


def serve_ready_answers(port: int) -> None:
    """The no-op server, with as many gRPC threads as `mtrec serve` has; runs until killed."""
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(ServerOptions.grpc_workers))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(ReadyAnswer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def transport_alone(seconds: float) -> list[tuple]:
    """Batch-1 gRPC Predict against the no-op server in a subprocess, 1 and 8 clients."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--ready-answers", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        if process.stdout.readline().strip() != "ready":
            raise SystemExit("the no-op gRPC server did not start")
        return [(TRANSPORT, 1, clients, "-", load(port, 1, clients, seconds)) for clients in (1, 8)]
    finally:
        process.kill()
        process.wait(timeout=60)


TRANSPORT = "gRPC, no-op server (transport)"


def rest_load(port: int, seconds: float) -> dict:
    """Batch-1 REST :predict over one keep-alive connection."""
    example = base64.b64encode(to_examples(sample_rows(1))[0]).decode()
    body = json.dumps(
        {"signature_name": "serving_default", "inputs": {"examples": [{"b64": example}]}}
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call() -> None:
        connection.request(
            "POST", "/v1/models/mtrec:predict", body, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise SystemExit(f"REST predict failed: {response.status} {payload[:200]!r}")

    latencies = timed(call, seconds)
    connection.close()
    return summarise(latencies, 1, 1, seconds)


def load(port: int, batch: int, clients: int, seconds: float) -> dict:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mtrec"
    request.model_spec.signature_name = "serving_default"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(to_examples(sample_rows(batch))))
    results: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        barrier.wait()
        results[index] = timed(lambda: stub.Predict(request, timeout=30), seconds)
        channel.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarise([x for r in results for x in r], batch, clients, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", default="mtrec_output/serving_model")
    parser.add_argument("--seconds", type=float, default=5.0, help="per case")
    parser.add_argument(
        "--batching_parameters_file",
        help="for the batching-on server (default: mtrec serve's defaults)",
    )
    parser.add_argument(
        "--only-batched",
        action="store_true",
        help="skip the unbatched server (for trying batching parameters)",
    )
    parser.add_argument("--ready-answers", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ready_answers:
        serve_ready_answers(args.ready_answers)
        return
    base = Path(args.model_base_path).resolve()
    model_dir = latest_version(base)
    load_1m = os.getloadavg()[0]
    print(
        f"model {model_dir}; {os.cpu_count()} CPUs; {args.seconds:g} s per case; load average "
        f"{load_1m:.2f} before the run ("
        + ("otherwise idle" if load_1m < 0.5 else "NOT idle: other work shares the cores")
        + ")"
    )
    scratch = tempfile.TemporaryDirectory(prefix="mtrec-serving-bench-")  # Removed at exit.
    monitoring = Path(scratch.name) / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    floors = {batch: floor(model_dir, batch, args.seconds) for batch in (1, 100)}
    rows = [
        ("in-process signature call (floor)", batch, 1, "-", floors[batch]) for batch in (1, 100)
    ]
    for batching in (True,) if args.only_batched else (False, True):
        server = Server(base, batching, monitoring, args.batching_parameters_file)
        try:
            for batch in (1, 100):
                for clients in (1, 8):
                    before = server.batches()
                    result = load(server.port, batch, clients, args.seconds)
                    after = server.batches()
                    calls = after[1] - before[1]
                    result["merge"] = (after[0] - before[0]) / calls if calls else None
                    rows.append(
                        ("gRPC Predict", batch, clients, "on" if batching else "off", result)
                    )
            rows.append(
                (
                    "REST :predict, keep-alive",
                    1,
                    1,
                    "on" if batching else "off",
                    rest_load(server.rest_port, args.seconds),
                )
            )
        finally:
            server.stop()
    rows += transport_alone(args.seconds)
    header = (
        f"{'case':<36}{'batch':>6}{'clients':>8}{'batching':>9}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'rows/s':>10}{'p50/floor':>10}{'rows/s vs unbatched':>21}"
        f"{'requests/call':>15}"
    )
    print(header)
    unbatched = {(r[0], r[1], r[2]): r[4]["rows_per_s"] for r in rows if r[3] == "off"}
    if not unbatched:
        unbatched = {(r[0], r[1], r[2]): r[4]["rows_per_s"] for r in rows}
    for case, batch, clients, batching, result in rows:
        ratio = f"{result['p50_ms'] / floors[batch]['p50_ms']:.2f}x" if case != TRANSPORT else ""
        speedup = (
            f"{result['rows_per_s'] / unbatched[(case, batch, clients)]:.2f}x"
            if batching == "on"
            else ""
        )
        merge = result.get("merge")
        merged = f"{merge:.2f}" if batching == "on" and merge is not None else ""
        print(
            f"{case:<36}{batch:>6}{clients:>8}{batching:>9}{result['p50_ms']:>9.2f}"
            f"{result['p99_ms']:>9.2f}{result['rows_per_s']:>10.0f}{ratio:>10}"
            f"{speedup:>21}{merged:>15}"
        )
    single = {r[0]: r[4]["p50_ms"] for r in rows if r[1:4] == (1, 1, "off") and r[0] != rows[0][0]}
    if len(single) == 2:
        ratio = single["REST :predict, keep-alive"] / single["gRPC Predict"]
        print(f"REST keep-alive batch-1 p50 / gRPC batch-1 p50 (batching off): {ratio:.2f}x")
    eight = {r[0]: r[4]["rows_per_s"] for r in rows if r[1:4] in ((1, 8, "off"), (1, 8, "-"))}
    if len(eight) == 2:
        print(
            f"8 batch-1 clients: the no-op server answers {eight[TRANSPORT]:.0f} requests/s, "
            f"{eight[TRANSPORT] / eight['gRPC Predict']:.2f}x the unbatched server's "
            f"{eight['gRPC Predict']:.0f} (batching's 3x target needs "
            f"{3 * eight['gRPC Predict']:.0f}, model included)"
        )


if __name__ == "__main__":
    main()
