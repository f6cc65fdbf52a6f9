#!/usr/bin/env python3
"""Check the layer contracts (pyproject.toml [tool.importlinter]) with import-linter.

    python3 scripts/lint_imports.py [LINT-IMPORTS ARGS...]      (e.g. --verbose)

An editable install maps `inloop.services` and `inloop.loadgen` onto the repository's folders
with an import hook, which import-linter's graph builder does not follow; so the checkout is
linked as the `inloop` namespace first (scripts/import_tree.py) and linted from there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import import_tree  # noqa: E402


def main() -> int:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        print("lint_imports: lint-imports is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="inloop-lint-") as tmp:
        src = import_tree.link(REPO, Path(tmp))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        return subprocess.run([exe, str(REPO / "pyproject.toml"), "--no-cache", *sys.argv[1:]],
                              cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
