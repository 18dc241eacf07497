"""Headless Chromium (Debian's `chromium` package), used the way a person would: open a
page, let it load, read back the DOM and take a screenshot.

Also a script: ``python -m tests.browser PAGE.html SHOT.png`` writes a screenshot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# As on these machines' closed network: no background connections, no sandbox as root.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
)


def chromium() -> str | None:
    """The Chromium binary, or None where it is not installed."""
    return (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


def _run(page: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="mtrec-chromium-") as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )


def dump_dom(page: Path) -> str:
    """The DOM after the page's load event, as Chromium serialises it."""
    return _run(page, "--dump-dom").stdout


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 4000) -> Path:
    """A PNG of the page's first ``height`` pixels at ``width``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(page, f"--screenshot={out.resolve()}", f"--window-size={width},{height}")
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


if __name__ == "__main__":
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2]), *(int(v) for v in sys.argv[3:5])))
