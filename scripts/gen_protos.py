#!/usr/bin/env python
"""Regenerate the Python code of every .proto under proto/ — the ONE way to do it.

    python scripts/gen_protos.py            # writes beside the .proto files
    python scripts/gen_protos.py --out DIR  # writes into DIR (tests compare it with the tree)

Writes `*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py` and one `fields.lock.json` per proto
directory (message -> field name -> number). The lock only grows: a field that is new is
appended; a locked field that moved or disappeared makes this script refuse, because that
breaks every deployed client (see the v1 rule at the top of each .proto).

Generated code depends on the protoc inside grpcio-tools, so the installed grpcio-tools
must be exactly the version pinned in pyproject.toml; anything else is refused rather
than producing a diff that only reflects a different compiler.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
LOCK_NAME = "fields.lock.json"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

Lock = dict[str, dict[str, int]]  # full message name -> field name -> number


class GenError(RuntimeError):
    """A reason to refuse generating; the message says what to do."""


def pinned_tools_version(pyproject: Path = REPO / "pyproject.toml") -> str:
    match = re.search(r'"grpcio-tools==([^"]+)"', pyproject.read_text())
    if not match:
        raise GenError(f"{pyproject.name} pins no grpcio-tools version (expected 'grpcio-tools==X')")
    return match.group(1)


def check_tools_version(pinned: str | None = None) -> str:
    pinned = pinned or pinned_tools_version()
    try:
        installed = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        raise GenError(f"grpcio-tools is not installed; pip install grpcio-tools=={pinned}") from None
    if installed != pinned:
        raise GenError(
            f"grpcio-tools {installed} is installed but pyproject.toml pins {pinned}; "
            f"pip install grpcio-tools=={pinned} (its protoc decides the generated code)"
        )
    return installed


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto under root, relative to root (protoc's import paths)."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def _protoc(args: list[str]) -> None:
    # grpc_tools ships the well-known types (google/protobuf/*.proto) beside its protoc.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise GenError(f"protoc failed ({done.returncode}):\n{done.stderr}")


def compile_lock(files: list[Path]) -> dict[Path, Lock]:
    """Field numbers of `files` as protoc sees them, grouped by proto directory."""
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        _protoc([f"--descriptor_set_out={out}", *map(str, files)])
        fdset = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    locks: dict[Path, Lock] = {}
    for fd in fdset.file:
        lock = locks.setdefault(Path(fd.name).parent, {})
        for msg in fd.message_type:
            _add_message(lock, fd.package, msg)
    return locks


def _add_message(lock: Lock, scope: str, msg) -> None:
    name = f"{scope}.{msg.name}" if scope else msg.name
    lock[name] = {f.name: f.number for f in msg.field}
    for nested in msg.nested_type:
        _add_message(lock, name, nested)


def lock_violations(locked: Lock, current: Lock) -> list[str]:
    """What in `locked` is gone or renumbered in `current` (new fields are fine)."""
    problems = []
    for msg, fields in sorted(locked.items()):
        if msg not in current:
            problems.append(f"message {msg} disappeared (locked fields: {sorted(fields)})")
            continue
        for name, number in sorted(fields.items()):
            now = current[msg].get(name)
            if now is None:
                problems.append(f"{msg}.{name} = {number} disappeared (mark it `reserved {number};`)")
            elif now != number:
                problems.append(f"{msg}.{name} changed number {number} -> {now}")
    return problems


def read_lock(path: Path) -> Lock:
    return json.loads(path.read_text()) if path.exists() else {}


def merged_lock(locked: Lock, current: Lock) -> Lock:
    """The old lock with every new message and field appended."""
    merged = {msg: dict(fields) for msg, fields in locked.items()}
    for msg, fields in current.items():
        merged.setdefault(msg, {}).update(fields)
    return merged


def write_lock(path: Path, lock: Lock) -> None:
    ordered = {m: dict(sorted(f.items(), key=lambda kv: kv[1])) for m, f in sorted(lock.items())}
    path.write_text(json.dumps(ordered, indent=2) + "\n")


def generate(out_root: Path = PROTO_ROOT) -> list[Path]:
    """Generate code and locks into out_root; returns the written paths."""
    check_tools_version()
    files = proto_files()
    if not files:
        raise GenError(f"no .proto files under {PROTO_ROOT.name}/")
    locks = compile_lock(files)
    problems = []
    for rel_dir, current in locks.items():
        problems += lock_violations(read_lock(PROTO_ROOT / rel_dir / LOCK_NAME), current)
    if problems:
        raise GenError("field numbers are locked (v1 rule):\n  " + "\n  ".join(problems))

    out_root.mkdir(parents=True, exist_ok=True)
    _protoc([f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}",
             *map(str, files)])
    written = []
    for f in files:
        stem = out_root / f.parent / f.stem
        written += [stem.with_name(stem.name + suffix) for suffix in GENERATED_SUFFIXES]
    for rel_dir, current in locks.items():
        lock_path = out_root / rel_dir / LOCK_NAME
        write_lock(lock_path, merged_lock(read_lock(PROTO_ROOT / rel_dir / LOCK_NAME), current))
        written.append(lock_path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT,
                        help="output root (default: proto/, beside the .proto files)")
    args = parser.parse_args(argv)
    try:
        written = generate(args.out.resolve())
    except GenError as exc:
        print(f"gen_protos: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path.relative_to(args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
