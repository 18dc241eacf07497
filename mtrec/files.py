"""Small file helpers shared by the CLI's outputs, the HTML report and the local runner."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging path beside ``path`` to write; on success one rename replaces
    ``path`` with it, so a reader never sees a half-written output."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp")
    yield staging
    staging.replace(target)


LOCK_FILE = ".mtrec.lock"


@contextlib.contextmanager
def exclusive_folder(folder: str | os.PathLike, holder: str) -> Iterator[None]:
    """Hold ``folder`` for this process while the block runs. Another process holding it
    (``holder``, e.g. "mtrec run") is a one-line error naming its pid. The lock is the
    kernel's (flock): it ends with its holder however that ends, so none is left stale."""
    import fcntl

    from mtrec.errors import MtrecError

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_FILE, "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            pid = lock.read().strip() or "unknown"
            raise MtrecError(
                f"{path}: another {holder} (pid {pid}) is using this folder; wait for it to end"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield
