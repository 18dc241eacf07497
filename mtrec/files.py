"""Small file helpers shared by the CLI's outputs and the HTML report."""

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
