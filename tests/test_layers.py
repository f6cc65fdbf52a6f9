"""The layer contracts (pyproject.toml [tool.importlinter]) hold, and cover every module."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the namespace's folders: module name prefix -> where its files are in a checkout
FOLDERS = {"inloop.services": REPO / "services", "inloop.loadgen": REPO / "loadgen", "inloop": REPO / "proto/inloop"}


def layer_modules() -> list[str]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in cfg["contracts"] if c["type"] == "layers"]
    return [m.strip() for layer in layers for m in layer.replace("|", ":").split(":")]


def modules() -> dict[str, Path]:
    out = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((prefix, *parts))
            out.setdefault(name, path)  # inloop.services' own files, not proto/inloop's view of them
    return out


def test_lint_imports_keeps_the_layer_contracts():
    run = subprocess.run([sys.executable, str(REPO / "scripts/lint_imports.py")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in run.stdout


def test_every_module_is_in_a_layer():
    """A module no layer names would be checked by nothing; only the bare packages above the
    layers (inloop, inloop.services, ...) are left out, and they import nothing."""
    layers = layer_modules()
    for name, path in modules().items():
        if any(name == m or name.startswith(m + ".") for m in layers):
            continue
        assert any(m.startswith(name + ".") for m in layers), f"{name} ({path}) is in no layer"
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], \
            f"{name} sits above the layers and must not import anything"


def test_import_graph_prints_each_layer():
    run = subprocess.run([sys.executable, str(REPO / "scripts/import_graph.py")], capture_output=True, text=True,
                         check=True)
    lines = run.stdout.splitlines()
    assert lines[0] == "inloop.services.cli" and "inloop.services.contract" in lines
    contract = lines[lines.index("inloop.services.contract") + 1]
    assert contract.strip() == "-> (nothing of ours)"
