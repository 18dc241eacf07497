"""An asyncio event loop in a thread of its own: where the gRPC front end and the batcher
run, and how other threads (REST, the gRPC thread pool) hand work to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
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
