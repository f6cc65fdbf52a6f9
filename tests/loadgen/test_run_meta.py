"""inloop.loadgen.run_meta: the weights' hash and its cache, host facts, and the artifact writer."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inloop.loadgen import run_meta as rm
from inloop.services.runtime.model.tiny import make_tiny


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own on-disk hash cache and an empty in-memory memo."""
    monkeypatch.setenv("INLOOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rm, "_SHA_MEMO", {})


def test_single_file_hash_is_what_sha256sum_prints(tiny_llama):
    expected = hashlib.sha256((tiny_llama / "model.safetensors").read_bytes()).hexdigest()
    assert rm.model_sha256(tiny_llama) == expected


def test_sharded_hash_combines_the_shards_in_name_order(tmp_path):
    model = make_tiny("llama", tmp_path / "sharded", shards=2)
    shards = sorted(model.glob("*.safetensors"))
    assert len(shards) == 2
    lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in shards)
    assert rm.model_sha256(model) == hashlib.sha256(lines.encode()).hexdigest()


def test_no_weights_gives_an_empty_hash(tmp_path):
    assert rm.model_sha256(None) == "" and rm.model_sha256(tmp_path) == "" and rm.model_sha256(tmp_path / "x") == ""


def test_hash_is_cached_on_disk_by_path_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"weights v1")
    real = hashlib.sha256(b"weights v1").hexdigest()
    assert rm.file_sha256(f) == real
    cache_file = tmp_path / "cache" / "sha256-cache.json"
    entry = json.loads(cache_file.read_text())[str(f.resolve())]
    assert entry["sha256"] == real and entry["size"] == len(b"weights v1")

    # A fresh process (empty memo) trusts the disk entry while mtime and size match...
    monkeypatch.setattr(rm, "_SHA_MEMO", {})
    cache = json.loads(cache_file.read_text())
    cache[str(f.resolve())]["sha256"] = "cached-value"
    cache_file.write_text(json.dumps(cache))
    assert rm.file_sha256(f) == "cached-value"
    # ...and re-hashes once the file changes.
    f.write_bytes(b"weights v2")
    os.utime(f, ns=(entry["mtime_ns"] + 10**9, entry["mtime_ns"] + 10**9))
    assert rm.file_sha256(f) == hashlib.sha256(b"weights v2").hexdigest()


def _fake_nvidia_smi(bin_dir: Path, stdout: str, code: int = 0) -> None:
    exe = bin_dir / "nvidia-smi"
    echoes = "".join(f"echo {shlex.quote(line)}\n" for line in stdout.splitlines())  # builtins only: PATH is bin_dir
    exe.write_text(f"#!/bin/sh\n{echoes}exit {code}\n")
    exe.chmod(0o755)


def test_gpu_name_from_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert rm.gpu_name() is None  # no nvidia-smi at all
    _fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)\n")
    assert rm.gpu_name() == "NVIDIA H100 80GB HBM3"
    _fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H200 (UUID: GPU-a)\nGPU 1: NVIDIA H200 (UUID: GPU-b)\n")
    assert rm.gpu_name() == "2x NVIDIA H200"
    _fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed because it couldn't communicate with the driver\n", 9)
    assert rm.gpu_name() is None


def test_run_meta_block(tiny_llama):
    args = argparse.Namespace(model=str(tiny_llama), out=Path("/tmp/x"), seeds=(1, 2), func=print)
    meta = rm.run_meta(args, "cpu", tiny_llama, seeds=[3], profiles={"p00": {"faults": "off"}})
    assert set(meta) == {"commit", "command", "host", "backend", "model", "seeds", "packages", "profiles", "args"}
    assert meta["model"]["name"] == tiny_llama.name and len(meta["model"]["sha256"]) == 64
    assert meta["args"] == {"model": str(tiny_llama), "out": "/tmp/x", "seeds": [1, 2]}  # no func, JSON types
    assert meta["seeds"] == [3] and meta["profiles"] == {"p00": {"faults": "off"}}
    assert meta["host"]["cores"] == os.cpu_count() and meta["host"]["cpu"]
    assert meta["packages"]["numpy"] and meta["packages"]["grpcio"]
    json.dumps(meta)  # serialisable as is
    remote = rm.run_meta(None, "cuda", None, seeds=[], model_name="smollm2")
    assert remote["model"] == {"name": "smollm2", "sha256": ""} and remote["args"] == {}


def test_command_is_one_string_without_the_install_path():
    line = rm.command_line(["/opt/venv/bin/inloop", "loadgen", "load", "--goodput", "ttft:5 0"])
    assert line == "inloop loadgen load --goodput 'ttft:5 0'"


def test_write_run_never_overwrites(tmp_path):
    from inloop.loadgen.reporting import write_run

    now = datetime(2026, 11, 27, 1, 2, 3, tzinfo=UTC)
    meta = rm.run_meta(None, "cpu", None, [0], model_name="m")
    a = write_run(tmp_path, "load", meta, _load_section(1), now=now)["json"]
    b = write_run(tmp_path, "load", meta, _load_section(2), now=now)["json"]
    assert (tmp_path / "load-20261127T010203Z.html").exists() and (tmp_path / "load-20261127T010203Z-2.md").exists()
    assert a.name == "load-20261127T010203Z.json" and b.name == "load-20261127T010203Z-2.json"
    doc = json.loads(a.read_text())
    assert doc == {"schema": "inloop.loadgen/v1", "kind": "load", "created": "2026-11-27T01:02:03Z",
                   "meta": meta, "load": _load_section(1)}
    assert json.loads(b.read_text())["load"]["completed"] == 2


def _load_section(completed: int) -> dict:
    stats = dict.fromkeys(("mean", "median", "p90", "p95", "p99", "std"), 1.0)
    return {"mode": "concurrency", "concurrency": 1, "rate": None, "completed": completed, "failed": 0,
            "duration_s": 1.0, "request_throughput": 1.0, "output_throughput": 1.0,
            "total_token_throughput": 1.0, "goodput": None, "ttft_ms": stats, "tpot_ms": stats,
            "itl_ms": stats, "e2el_ms": stats}


def test_cache_forgets_files_that_are_gone(tmp_path):
    old, new = tmp_path / "old.safetensors", tmp_path / "new.safetensors"
    old.write_bytes(b"a")
    new.write_bytes(b"b")
    rm.file_sha256(old)
    old.unlink()
    rm.file_sha256(new)
    cache = json.loads((tmp_path / "cache" / "sha256-cache.json").read_text())
    assert list(cache) == [str(new.resolve())]


def test_a_gguf_file_is_named_by_its_stem_and_hashed_as_the_file(tmp_path):
    gguf = tmp_path / "SmolLM2-135M-Q8_0.gguf"
    gguf.write_bytes(b"GGUF weights")
    assert rm.resolve_model_dir(str(gguf)) == gguf
    meta = rm.run_meta(None, "cpu", rm.resolve_model_dir(str(gguf)), seeds=[])
    assert meta["model"] == {"name": "SmolLM2-135M-Q8_0", "sha256": hashlib.sha256(b"GGUF weights").hexdigest()}


def test_a_hub_id_is_its_cached_snapshot_named_with_its_commit(tmp_path, monkeypatch):
    from tests.runtime.model.test_hub import COMMIT, lay_out_hub_cache

    import huggingface_hub.constants

    # huggingface_hub reads HF_HOME once, at its import: point its cache constant here too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    model = make_tiny("llama", tmp_path / "tiny")
    lay_out_hub_cache(tmp_path / "hf", "tiny-org/tiny-llama", model)
    snapshot = rm.resolve_model_dir("tiny-org/tiny-llama")
    assert snapshot is not None and snapshot.name == COMMIT
    meta = rm.run_meta(None, "cpu", snapshot, seeds=[])
    expected = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    assert meta["model"] == {"name": "tiny-org/tiny-llama", "revision": COMMIT, "sha256": expected}
    assert rm.resolve_model_dir("tiny-org/not-pulled") is None  # nothing cached: nothing to hash, no download
