"""Small file helpers shared by the CLI's outputs, the HTML report and the local runner."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def output_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder to write into, made if need be; a file there (or on the way)
    is a one-line ConfigError."""
    from mtrec.errors import ConfigError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{out}: cannot make the folder: {err.strerror}") from None
    return out


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging path beside ``path`` to write; on success one rename replaces
    ``path`` with it, so a reader never sees a half-written output. On an error (or a
    folder at ``path``) neither the output nor the staging file is left behind."""
    from mtrec.errors import ConfigError

    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{target}: is a directory; give a file name")
    output_folder(target.parent)
    staging = target.with_name(f".{target.name}.tmp")
    try:
        yield staging
        staging.replace(target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


LOCK_FILE = ".mtrec.lock"


@contextlib.contextmanager
def exclusive_folder(folder: str | os.PathLike, holder: str) -> Iterator[None]:
    """Hold ``folder`` for this process while the block runs. Another process holding it
    (``holder``, e.g. "mtrec run") is a one-line error naming its pid. The lock is the
    kernel's (flock): it ends with its holder however that ends, so none is left stale."""
    import fcntl

    from mtrec.errors import MtrecError

    path = output_folder(folder)
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
