"""Server-side batching: concurrent small requests become one model call.

Everything but the model call runs on one asyncio event loop, the gRPC front end's: a gRPC
``Predict`` is decoded, queued, answered and encoded there, with no hand-off between threads
(with many Python threads, those hand-offs cost more than the model; see the README's
serving benchmark). Requests for the same (servable, signature, input layout) wait in one
queue. When a batch thread is free, the next batch forms: it waits a few loop iterations for
requests that are already arriving, then takes the oldest queue's requests, up to
``max_batch_size`` rows, once they fill it or its oldest request has waited
``batch_timeout_micros``. The model runs once on the rows concatenated along axis 0 (on the
loop itself, or in one of ``num_batch_threads`` threads when there are several), and each
request gets its slice of every output. Threads other than the loop's (REST, Classify and
Regress) queue through ``submit``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
from collections.abc import Callable, Mapping

import grpc
import numpy as np

from mtrec.serving.config import BatchingConfig
from mtrec.serving.errors import ServingError, request_errors
from mtrec.serving.loop import EventLoopThread, LoopCalls
from mtrec.serving.monitoring import ServingMetrics

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
Run = Callable[[Mapping[str, np.ndarray]], Arrays]

# Loop iterations a forming batch waits for requests already on their way: a request read
# from the socket needs a few iterations to reach the queue. 64 empty iterations of a plain
# asyncio loop take about 0.1 ms; under load each iteration also answers and reads requests.
GATHER_HOPS = 32


class _Request:
    __slots__ = ("future", "inputs", "queued_at", "rows")

    def __init__(
        self, inputs: Mapping[str, np.ndarray], rows: int, future: asyncio.Future, now: float
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.queued_at = now


class Batcher:
    """Merges requests per key. ``run`` (on the loop) and ``submit`` (from other threads)
    return a request's outputs once its batch has run."""

    def __init__(
        self,
        config: BatchingConfig,
        metrics: ServingMetrics | None = None,
        loop: EventLoopThread | None = None,
        unbatched_threads: int = 16,
    ) -> None:
        self.config = config
        # TF Serving's batching_session metrics, and the queue's length at scrape time.
        self.metrics = metrics
        if metrics is not None:
            metrics.watch_batching_queue(lambda: self._pending)
        self._own_loop = loop is None
        self._loop_thread = loop if loop is not None else EventLoopThread("batching")
        self.loop = self._loop_thread.loop
        # More than one batch thread: model calls run in a pool; one: on the loop itself,
        # which measured faster (see the README's serving benchmark).
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(
                config.num_batch_threads, thread_name_prefix="batch"
            )
            if config.num_batch_threads > 1
            else None
        )
        # Requests that are not batched (a full batch already, or not batchable) run on their
        # own: on the loop when nothing else of theirs runs, else in as many threads as the
        # gRPC server's.
        self._alone = LoopCalls(self.loop, unbatched_threads, "unbatched")
        self._queues: dict[tuple, collections.deque[_Request]] = {}
        self._rows: dict[tuple, int] = {}
        self._runs: dict[tuple, Run] = {}
        self._pending = 0  # Requests queued.
        self._running = 0  # Batches in the batch threads.
        self._waiting: asyncio.Handle | None = None  # The forming batch's next step.
        self._closed = False
        self._idle: asyncio.Event | None = None  # Set once closed and nothing is left.
        self.batches = 0  # Model calls made, and the requests they served.
        self.batched_requests = 0

    def submit(self, key: tuple, run: Run, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """``run`` from a thread other than the loop's: wait there for the outputs."""
        return self._loop_thread.call(self.run(key, run, inputs))

    async def run(self, key: tuple, run: Run, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Run ``inputs`` (each with the same leading batch size) in some batch."""
        rows = {int(v.shape[0]) for v in inputs.values() if v.ndim}
        if len(rows) != 1 or any(v.ndim == 0 for v in inputs.values()):
            return await self._run_alone(run, inputs)  # Not batchable along axis 0.
        count = rows.pop()
        if self.metrics is not None:
            self.metrics.input_batch_size.observe(value=count)
        if count >= self.config.max_batch_size:
            if self.metrics is not None:
                self.metrics.processed_batch_size.observe(value=count)
                self.metrics.wrapped_run_count.increment()
            return await self._run_alone(run, inputs)  # Already a full batch.
        if self._closed:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        if self._pending >= self.config.max_enqueued_batches * self.config.max_batch_size:
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE, "the batching queue is full; retry later"
            )
        layout = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
        full_key = (key, layout)
        request = _Request(inputs, count, self.loop.create_future(), self.loop.time())
        self._queues.setdefault(full_key, collections.deque()).append(request)
        self._rows[full_key] = self._rows.get(full_key, 0) + count
        self._runs[full_key] = run
        self._pending += 1
        self._schedule(full=self._rows[full_key] >= self.config.max_batch_size)
        return await request.future

    async def _run_alone(self, run: Run, inputs: Mapping[str, np.ndarray]) -> Arrays:
        try:
            return await self._alone.call(run, inputs)
        finally:
            self._check_idle()

    def _schedule(self, full: bool = False) -> None:
        """Start forming the next batch: unless one is forming (a full queue cuts its wait
        short) or every batch thread is busy (a finished batch calls again)."""
        if not self._pending or self._running >= self.config.num_batch_threads:
            return
        if self._waiting is not None:
            if not (full or self._closed):
                return
            self._waiting.cancel()
        elif not self._closed:
            self._waiting = self.loop.call_soon(self._gather, 1)
            return
        self._decide()

    def _gather(self, hops: int) -> None:
        """One loop iteration of waiting for requests on their way (a request that fills
        its queue ends the wait through ``_schedule``)."""
        if hops < GATHER_HOPS:
            self._waiting = self.loop.call_soon(self._gather, hops + 1)
            return
        self._decide()

    def _decide(self) -> None:
        """Launch batches while threads are free: the oldest queue's, once it is full, its
        oldest request has waited the timeout, or the batcher is closing."""
        self._waiting = None
        timeout = self.config.batch_timeout_micros / 1e6
        while self._pending and self._running < self.config.num_batch_threads:
            key = min((k for k, q in self._queues.items() if q), key=self._oldest)
            due = self._queues[key][0].queued_at + timeout
            full = self._rows[key] >= self.config.max_batch_size
            if full or self._closed or self.loop.time() >= due:
                self._launch(key)
            else:
                self._waiting = self.loop.call_at(due, self._decide)
                return

    def _oldest(self, key: tuple) -> float:
        return self._queues[key][0].queued_at

    def _launch(self, key: tuple) -> None:
        """Take up to ``max_batch_size`` rows of ``key``'s queue and run them in a thread."""
        queue = self._queues[key]
        batch: list[_Request] = []
        rows = 0
        while queue and (not batch or rows + queue[0].rows <= self.config.max_batch_size):
            request = queue.popleft()
            batch.append(request)
            rows += request.rows
        self._rows[key] -= rows
        self._pending -= len(batch)
        batch = [r for r in batch if not r.future.done()]  # Cancelled by their clients.
        if not batch:
            return
        self._running += 1
        self.batches += 1
        self.batched_requests += len(batch)
        if self.metrics is not None:
            self._record_batch(batch, sum(r.rows for r in batch))
        run = self._counted(self._runs[key])
        if self._executor is None:
            self._run_here(run, batch)
            return
        future = self.loop.run_in_executor(self._executor, _run_batch, run, batch)
        future.add_done_callback(functools.partial(self._finished, batch))

    def _run_here(self, run: Run, batch: list[_Request]) -> None:
        """One batch thread: the loop's own. The model call blocks the loop (TensorFlow
        runs it without the GIL), and no thread hands anything to another."""
        outcome = self.loop.create_future()
        try:
            outcome.set_result(_run_batch(run, batch))
        except request_errors() as err:
            outcome.set_exception(err)
        finally:
            if not outcome.done():  # A bug: its requests are answered INTERNAL, and it
                # propagates to the loop, whose exception handler logs it.
                outcome.set_exception(
                    ServingError(grpc.StatusCode.INTERNAL, "the batch failed; see the log")
                )
            self._finished(batch, outcome)

    def _finished(self, batch: list[_Request], future: asyncio.Future) -> None:
        """Answer a batch's requests (on the loop) and form the next batch."""
        self._running -= 1
        error = future.exception()
        if error is None:
            for request, outputs in zip(batch, future.result(), strict=False):
                if not request.future.done():
                    request.future.set_result(outputs)
        else:
            if not isinstance(error, request_errors()):  # A bug: logged, answered INTERNAL.
                log.error("a batched model call failed", exc_info=error)
                error = ServingError(grpc.StatusCode.INTERNAL, "the batch failed; see the log")
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
        self._check_idle()
        # The next batch forms in a later callback: a batch run on the loop finishes inside
        # _decide, and calling back into it here would recurse once per queued batch.
        self.loop.call_soon(self._schedule)

    def _record_batch(self, batch: list[_Request], rows: int) -> None:
        """TF Serving's queuing latency per request and the batch's size."""
        assert self.metrics is not None
        now = self.loop.time()
        for request in batch:
            self.metrics.queuing_latency.observe(
                self.metrics.THREAD_POOL, value=int((now - request.queued_at) * 1e6)
            )
        self.metrics.processed_batch_size.observe(value=rows)

    def _counted(self, run: Run) -> Run:
        """``run``, counting its model calls (wrapped_run_count)."""
        if self.metrics is None:
            return run
        counter = self.metrics.wrapped_run_count

        def counted(inputs: Mapping[str, np.ndarray]) -> Arrays:
            counter.increment()
            return run(inputs)

        return counted

    def _check_idle(self) -> None:
        if self._idle is not None and not (self._pending or self._running or self._alone.running):
            self._idle.set()

    async def _drain(self) -> None:
        self._closed = True
        self._idle = asyncio.Event()
        self._schedule()
        self._check_idle()
        await self._idle.wait()

    def close(self) -> None:
        """Finish queued requests, then stop the batch threads (and the loop, if ours)."""
        if self._closed:
            return
        self._loop_thread.call(self._drain())
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._alone.shutdown()
        if self._own_loop:
            self._loop_thread.stop()
        if self.batches:
            log.info(
                "batching: %d requests in %d model calls (%.1f per call)",
                self.batched_requests,
                self.batches,
                self.batched_requests / self.batches,
            )


def _run_batch(run: Run, batch: list[_Request]) -> list[Arrays]:
    """In a batch thread: each request's outputs, from one call on the merged rows."""
    if len(batch) == 1:
        return [run(batch[0].inputs)]
    merged = {k: np.concatenate([r.inputs[k] for r in batch]) for k in batch[0].inputs}
    outputs = run(merged)
    total = sum(r.rows for r in batch)
    if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
        return [run(r.inputs) for r in batch]  # Outputs not split by row: one by one.
    answers, start = [], 0
    for request in batch:
        stop = start + request.rows
        answers.append({k: v[start:stop] for k, v in outputs.items()})
        start = stop
    return answers
