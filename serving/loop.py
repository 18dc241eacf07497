"""An asyncio event loop in a thread of its own: where the gRPC front end and the batcher
run, and how other threads (REST, the gRPC thread pool) hand work to it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopThread:
    """Runs one event loop until ``stop``; ``call`` runs a coroutine there and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def in_loop(self) -> bool:
        """Whether the caller runs in this loop's thread (where ``call`` would deadlock)."""
        return threading.current_thread() is self._thread

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop from another thread and return its result."""
        if self.in_loop():
            coroutine.close()
            raise RuntimeError("EventLoopThread.call from the loop's own thread")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        """Stop the loop once the callbacks already scheduled have run; wait for it."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)


# Loop iterations a lone call waits for others already on their way (read from the socket,
# not yet here) before it takes the loop: 4 kept the pool's throughput under 8 concurrent
# clients; 0 ran every call on the loop, one after the other (README's serving benchmark).
IDLE_HOPS = 4


class LoopCalls:
    """Blocking calls (model calls) made from an event loop: on the loop itself when no
    other is running or arriving, so a lone request crosses no thread; in a thread pool
    when others are, so concurrent calls overlap (TensorFlow runs them without the GIL)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: int, name: str) -> None:
        self.loop = loop
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=name)
        self.running = 0  # Changed on the loop only.

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        self.running += 1
        try:
            if self.running == 1:
                for _ in range(IDLE_HOPS):
                    await asyncio.sleep(0)
                    if self.running > 1:
                        break
                else:
                    return function(*args)
            return await self.loop.run_in_executor(self._pool, function, *args)
        finally:
            self.running -= 1

    def shutdown(self) -> None:
        """Wait for the calls in the pool."""
        self._pool.shutdown(wait=True)
