"""The checked-in generated code matches the .proto files, and locked field numbers hold.

Both tests drive scripts/gen_protos.py itself, so there is one definition of "generated".
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools (the `test` extra) regenerates the code")

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"


def _load_gen():
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_gen()


@pytest.mark.timeout(120)
def test_checked_in_code_is_what_the_script_generates(tmp_path):
    written = gen.generate(tmp_path)  # refuses (GenError) on a grpcio-tools version mismatch
    assert written, "the generator wrote nothing"
    stale = []
    for path in written:
        rel = path.relative_to(tmp_path)
        checked_in = PROTO_ROOT / rel
        if not checked_in.exists():
            stale.append(f"{rel} is missing")
        elif checked_in.read_bytes() != path.read_bytes():
            stale.append(f"{rel} differs")
    assert not stale, "generated code is stale; run `python scripts/gen_protos.py`:\n" + "\n".join(stale)


def test_no_generated_file_without_its_proto():
    """A .proto that was removed must take its generated files with it."""
    protos = {p.with_suffix("") for p in gen.proto_files()}
    orphans = []
    for suffix in gen.GENERATED_SUFFIXES:
        for path in PROTO_ROOT.rglob(f"*{suffix}"):
            rel = path.relative_to(PROTO_ROOT)
            if rel.with_name(rel.name[: -len(suffix)]) not in protos:
                orphans.append(str(rel))
    assert not orphans, f"generated files without a .proto: {orphans}"


@pytest.mark.timeout(120)
def test_locked_field_numbers_never_change():
    current = gen.compile_lock(gen.proto_files())
    assert current, "no messages compiled"
    problems = []
    for rel_dir, fields in current.items():
        lock_path = PROTO_ROOT / rel_dir / gen.LOCK_NAME
        assert lock_path.exists(), f"{rel_dir}/{gen.LOCK_NAME} is missing; run scripts/gen_protos.py"
        problems += gen.lock_violations(gen.read_lock(lock_path), fields)
    assert not problems, "v1 rule broken:\n" + "\n".join(problems)


def test_lock_violations_reports_moves_and_removals():
    locked = {"p.M": {"a": 1, "b": 2}, "p.Gone": {"x": 1}}
    current = {"p.M": {"a": 1, "b": 3, "c": 4}}
    problems = gen.lock_violations(locked, current)
    assert any("p.M.b changed number 2 -> 3" in p for p in problems)
    assert any("message p.Gone disappeared" in p for p in problems)
    assert not any(".c" in p for p in problems), "a new field is allowed"
    grown = gen.merged_lock({"p.M": {"a": 1}}, {"p.M": {"a": 1, "c": 4}, "p.New": {"y": 1}})
    assert grown == {"p.M": {"a": 1, "c": 4}, "p.New": {"y": 1}}


def test_the_script_refuses_another_grpcio_tools_version():
    assert gen.check_tools_version() == gen.pinned_tools_version()
    with pytest.raises(gen.GenError, match="pins 0.0.1"):
        gen.check_tools_version(pinned="0.0.1")
