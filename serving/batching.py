"""Server-side batching: concurrent small requests become one model call.

Requests for the same (servable, signature, input layout) wait in one queue. A batch
thread takes the oldest request, then keeps taking requests until the batch holds
``max_batch_size`` rows or ``batch_timeout_micros`` have passed, runs the model once on the
rows concatenated along axis 0, and hands each request its slice of every output.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping

import grpc
import numpy as np

from mtrec.serving.config import BatchingConfig
from mtrec.serving.errors import ServingError, request_errors
from mtrec.serving.monitoring import ServingMetrics

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
Run = Callable[[Mapping[str, np.ndarray]], Arrays]


class _Request:
    __slots__ = ("future", "inputs", "queued_ns", "rows")

    def __init__(self, inputs: Mapping[str, np.ndarray], rows: int) -> None:
        self.inputs = inputs
        self.rows = rows
        self.queued_ns = time.perf_counter_ns()
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class Batcher:
    """Merges requests per key; ``submit`` blocks until the request's outputs are ready."""

    def __init__(self, config: BatchingConfig, metrics: ServingMetrics | None = None) -> None:
        self.config = config
        # TF Serving's batching_session metrics, and the queue's length at scrape time.
        self.metrics = metrics
        if metrics is not None:
            metrics.watch_batching_queue(lambda: self._pending)
        self._queues: dict[tuple, collections.deque[_Request]] = {}
        self._runs: dict[tuple, Run] = {}
        self._ready = threading.Condition()
        self._pending = 0
        self._closed = False
        self.batches = 0  # Model calls made, and the requests they served.
        self.batched_requests = 0
        self._threads: dict[int, threading.Thread] = {}
        for index in range(config.num_batch_threads):
            self._start_thread(index)

    def submit(self, key: tuple, run: Run, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Run ``inputs`` (each with the same leading batch size) in some batch."""
        rows = {int(v.shape[0]) for v in inputs.values() if v.ndim}
        if len(rows) != 1 or any(v.ndim == 0 for v in inputs.values()):
            return run(inputs)  # Not batchable along axis 0: run alone.
        request = _Request(inputs, rows.pop())
        if self.metrics is not None:
            self.metrics.input_batch_size.observe(value=request.rows)
        if request.rows >= self.config.max_batch_size:
            if self.metrics is not None:
                self.metrics.processed_batch_size.observe(value=request.rows)
                self.metrics.wrapped_run_count.increment()
            return run(inputs)  # Already a full batch.
        layout = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
        full_key = (key, layout)
        with self._ready:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            max_queued = self.config.max_enqueued_batches * self.config.max_batch_size
            if self._pending >= max_queued:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE, "the batching queue is full; retry later"
                )
            self._queues.setdefault(full_key, collections.deque()).append(request)
            self._runs[full_key] = run
            self._pending += 1
            self._ready.notify()
        return request.future.result()

    def _take_batch(self) -> tuple[Run, list[_Request]] | None:
        """The next batch: wait for a first request, then fill until full or timed out."""
        timeout = self.config.batch_timeout_micros / 1e6
        with self._ready:
            while not self._closed and not any(self._queues.values()):
                self._ready.wait()
            if self._closed and not any(self._queues.values()):
                return None
            key = min(
                (k for k, q in self._queues.items() if q), key=lambda k: id(self._queues[k][0])
            )  # Any non-empty queue.
            queue = self._queues[key]
            batch = [queue.popleft()]
            rows = batch[0].rows
            deadline = time.monotonic() + timeout
            while rows < self.config.max_batch_size:
                if queue and rows + queue[0].rows <= self.config.max_batch_size:
                    request = queue.popleft()
                    batch.append(request)
                    rows += request.rows
                    continue
                if queue:  # The next request does not fit: run what we have.
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._ready.wait(remaining)
            self._pending -= len(batch)
            self.batches += 1
            self.batched_requests += len(batch)
            run = self._runs[key]
        if self.metrics is not None:
            self._record_batch(batch, rows)
        return run, batch

    def _record_batch(self, batch: list[_Request], rows: int) -> None:
        """TF Serving's queuing latency per request and the batch's size."""
        assert self.metrics is not None
        now = time.perf_counter_ns()
        for request in batch:
            self.metrics.queuing_latency.observe(
                self.metrics.THREAD_POOL, value=(now - request.queued_ns) // 1000
            )
        self.metrics.processed_batch_size.observe(value=rows)

    def _start_thread(self, index: int) -> None:
        thread = threading.Thread(
            target=self._work, args=(index,), name=f"batch-{index}", daemon=True
        )
        self._threads[index] = thread
        thread.start()

    def _work(self, index: int) -> None:
        closed = False
        try:
            while (taken := self._take_batch()) is not None:
                run, batch = taken
                _run_batch(self._counted(run), batch)
            closed = True
        finally:
            # _run_batch let a bug through (having answered its batch): threading.excepthook
            # logs its traceback and a new thread takes this one's place.
            if not closed:
                self._start_thread(index)

    def _counted(self, run: Run) -> Run:
        """``run``, counting its model calls (wrapped_run_count)."""
        if self.metrics is None:
            return run
        counter = self.metrics.wrapped_run_count

        def counted(inputs: Mapping[str, np.ndarray]) -> Arrays:
            counter.increment()
            return run(inputs)

        return counted

    def close(self) -> None:
        """Finish queued requests, then stop the batch threads."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for index in self._threads:
            self._threads[index].join(timeout=30)
        if self.batches:
            log.info(
                "batching: %d requests in %d model calls (%.1f per call)",
                self.batched_requests,
                self.batches,
                self.batched_requests / self.batches,
            )


def _run_batch(run: Run, batch: list[_Request]) -> None:
    try:
        if len(batch) == 1:
            batch[0].future.set_result(run(batch[0].inputs))
            return
        merged = {k: np.concatenate([r.inputs[k] for r in batch]) for k in batch[0].inputs}
        outputs = run(merged)
        total = sum(r.rows for r in batch)
        if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
            for request in batch:  # Outputs not split by row: run one by one.
                request.future.set_result(run(request.inputs))
            return
        start = 0
        for request in batch:
            stop = start + request.rows
            request.future.set_result({k: v[start:stop] for k, v in outputs.items()})
            start = stop
    except request_errors() as err:  # What a model call can raise: every request gets it.
        _fail(batch, err)
    finally:
        # Anything else is a bug; it propagates to the batch thread (see _work), but no
        # request of this batch is left waiting.
        if not all(request.future.done() for request in batch):
            _fail(batch, ServingError(grpc.StatusCode.INTERNAL, "the batch failed; see the log"))


def _fail(batch: list[_Request], error: BaseException) -> None:
    """Fail every request of ``batch`` that has no answer yet."""
    for request in batch:
        if not request.future.done():
            request.future.set_exception(error)
