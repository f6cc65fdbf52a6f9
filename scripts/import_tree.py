#!/usr/bin/env python3
"""Make a checkout importable as the installed `inloop` namespace, without installing it.

The wheel (and an editable install) maps proto/inloop -> inloop, services -> inloop.services
and loadgen -> inloop.loadgen (setup.py). Where pip cannot run (the GPU machine's image
python, a baseline tree exported by gpu_baseline.py), this builds the same namespace from
symlinks into DEST/inloop; put DEST first on PYTHONPATH:

    python3 scripts/import_tree.py . /tmp/inloop-src   # prints /tmp/inloop-src
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

# namespace entry -> where it is in a checkout (the same map as setup.py's package_dir)
LINKS = {"__init__.py": "proto/inloop/__init__.py", "v1": "proto/inloop/v1",
         "services": "services", "loadgen": "loadgen"}


def link(tree: Path, dest: Path) -> Path:
    """DEST/inloop made of links into `tree` (replacing an older one); returns DEST.
    Parts the tree lacks (a baseline export has no loadgen/) are left out."""
    tree, dest = tree.resolve(), dest.resolve()
    ns = dest / "inloop"
    shutil.rmtree(ns, ignore_errors=True)
    ns.mkdir(parents=True)
    for name, rel in LINKS.items():
        if (tree / rel).exists():
            (ns / name).symlink_to(tree / rel)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree", type=Path, help="a checkout or an exported tree (with proto/ and services/)")
    ap.add_argument("dest", type=Path, help="where to build DEST/inloop; put DEST on PYTHONPATH")
    args = ap.parse_args()
    print(link(args.tree, args.dest))


if __name__ == "__main__":
    main()
