#!/usr/bin/env python3
"""Print the package dependency graph of inloop, grouped as the layer contracts group it.

    python3 scripts/import_graph.py            one line per package: what it imports
    python3 scripts/import_graph.py --dot      the same as Graphviz (dot -Tsvg > graph.svg)

A package is a layer of pyproject.toml's [tool.importlinter] contract (or a sub-package of
one, with --depth); every import counts, those inside functions too.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import import_tree  # noqa: E402


def layer_packages() -> list[str]:
    """The modules named in the layers contract, top to bottom."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in cfg["contracts"] if c["type"] == "layers")["layers"]
    return [name.strip() for layer in layers for name in layer.replace("|", ":").split(":")]


def package_of(module: str, packages: list[str], depth: int) -> str | None:
    for p in packages:
        if module == p or module.startswith(p + "."):
            extra = module[len(p) + 1:].split(".")[:depth] if module != p else []
            return ".".join([p, *extra]) if extra and extra[0] else p
    return None


def edges(depth: int) -> tuple[list[str], dict[str, set[str]]]:
    import grimp

    packages = layer_packages()
    with tempfile.TemporaryDirectory(prefix="inloop-graph-") as tmp:
        sys.path.insert(0, str(import_tree.link(REPO, Path(tmp))))
        graph = grimp.build_graph("inloop", cache_dir=None)
    out: dict[str, set[str]] = {}
    for m in graph.modules:
        src = package_of(m, packages, depth)
        if src is None:
            continue
        out.setdefault(src, set())
        for imported in graph.find_modules_directly_imported_by(m):
            dst = package_of(imported, packages, depth)
            if dst is not None and dst != src:
                out[src].add(dst)
    order = {p: i for i, p in enumerate(packages)}
    return sorted(out, key=lambda p: (order[package_of(p, packages, 0)], p)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dot", action="store_true", help="write Graphviz instead of text")
    ap.add_argument("--depth", type=int, default=0, help="split each layer package this many levels further")
    args = ap.parse_args()
    nodes, graph = edges(args.depth)
    if args.dot:
        print("digraph inloop {\n  rankdir=TB; node [shape=box, fontname=monospace];")
        for src in nodes:
            for dst in sorted(graph[src]):
                print(f'  "{src}" -> "{dst}";')
        print("}")
        return
    for src in nodes:
        print(f"{src}\n    -> {', '.join(sorted(graph[src])) or '(nothing of ours)'}")


if __name__ == "__main__":
    main()
