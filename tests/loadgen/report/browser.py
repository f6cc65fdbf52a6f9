"""Headless Chromium for the report tests: dump a page's DOM after its scripts ran, screenshot it.

Debian's `chromium` (scripts/system-packages.txt) runs once per call with a fresh profile,
no sandbox (CI runs as root), no GPU and every background network feature off, so a run
is hermetic and takes about a second. Console messages go to stderr (--enable-logging),
which the callers scan for uncaught errors and blocked fetches.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--enable-logging=stderr", "--v=0")


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(page: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    binary = chromium_binary()
    assert binary, "chromium is not installed (bash scripts/system_packages.sh)"
    with tempfile.TemporaryDirectory(prefix="inloop-chromium-") as profile:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout, check=False)


def console_problems(stderr: str) -> list[str]:
    """Console lines that report an error: uncaught exceptions, refused (CSP-blocked) fetches."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line
            and any(word in line for word in ("Uncaught", "Error", "error", "Refused", "Failed"))]


def dump_dom(page: Path, width: int = 1200, height: int = 900) -> tuple[str, str]:
    """(the DOM after load, chromium's stderr)."""
    proc = _run(page, f"--window-size={width},{height}", "--dump-dom")
    assert proc.returncode == 0, f"chromium --dump-dom failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout, proc.stderr


def screenshot(page: Path, png: Path, width: int, height: int) -> tuple[int, int]:
    """Write a PNG of the page's first `height` CSS pixels; returns its (width, height)."""
    proc = _run(page, f"--window-size={width},{height}", f"--screenshot={png}")
    assert proc.returncode == 0 and png.exists(), f"chromium --screenshot failed: {proc.stderr[-2000:]}"
    return png_size(png)


def png_size(png: Path) -> tuple[int, int]:
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    return struct.unpack(">II", head[16:24])
