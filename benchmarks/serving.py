"""Serving benchmark: gRPC Predict latency and throughput of `mtrec serve` against the
in-process signature call (the floor), on the same pushed model, in one run.

    python benchmarks/serving.py [--model_base_path mtrec_output/serving_model]

Cases: batch 1 and 100; 1 and 8 concurrent clients; server-side batching off and on. The
servers run as `mtrec serve` subprocesses on loopback; clients are threads here, each with
its own channel, sending ready-made requests (so the client's own proto building is not
timed). Prints one table with p50/p99 latency, throughput and ratios to the floor.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from mtrec.examples import to_examples


def latest_version(base: Path) -> Path:
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
    """`mtrec serve` in a subprocess."""

    def __init__(self, base: Path, batching: bool, parameters: str | None = None) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "mtrec",
            "serve",
            "--port",
            str(self.port),
            "--rest_api_port",
            "0",
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    args = parser.parse_args()
    base = Path(args.model_base_path).resolve()
    model_dir = latest_version(base)
    print(f"model {model_dir}; {os.cpu_count()} CPUs; {args.seconds:g} s per case")
    floors = {batch: floor(model_dir, batch, args.seconds) for batch in (1, 100)}
    rows = [
        ("in-process signature call (floor)", batch, 1, "-", floors[batch]) for batch in (1, 100)
    ]
    for batching in (True,) if args.only_batched else (False, True):
        server = Server(base, batching, args.batching_parameters_file)
        try:
            for batch in (1, 100):
                for clients in (1, 8):
                    rows.append(
                        (
                            "gRPC Predict",
                            batch,
                            clients,
                            "on" if batching else "off",
                            load(server.port, batch, clients, args.seconds),
                        )
                    )
        finally:
            server.stop()
    header = (
        f"{'case':<36}{'batch':>6}{'clients':>8}{'batching':>9}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'rows/s':>10}{'p50/floor':>10}{'rows/s vs unbatched':>21}"
    )
    print(header)
    unbatched = {(r[1], r[2]): r[4]["rows_per_s"] for r in rows if r[3] == "off"}
    if not unbatched:
        unbatched = {(r[1], r[2]): r[4]["rows_per_s"] for r in rows}
    for case, batch, clients, batching, result in rows:
        ratio = result["p50_ms"] / floors[batch]["p50_ms"]
        speedup = (
            f"{result['rows_per_s'] / unbatched[(batch, clients)]:.2f}x" if batching == "on" else ""
        )
        print(
            f"{case:<36}{batch:>6}{clients:>8}{batching:>9}{result['p50_ms']:>9.2f}"
            f"{result['p99_ms']:>9.2f}{result['rows_per_s']:>10.0f}{ratio:>9.2f}x"
            f"{speedup:>21}"
        )


if __name__ == "__main__":
    main()
