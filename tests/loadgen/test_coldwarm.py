"""`loadgen coldwarm` against a real runtime subprocess serving a tiny model."""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from datetime import datetime

import pytest

from inloop.loadgen.coldwarm import cmd_coldwarm, register_coldwarm
from inloop.loadgen.report.schema import validate
from inloop.services.cli import main as inloop


def main(argv: list[str]) -> int:
    """The command as a user runs it: `inloop loadgen coldwarm ...`."""
    return inloop(["loadgen", "coldwarm", *argv])


def test_coldwarm_measures_a_fresh_runtime_and_writes_the_artifact(tiny_llama, tmp_path, capsys):
    rc = main(["--model", str(tiny_llama), "--backend", "cpu", "--warm-requests", "4", "--warmup", "1",
               "--max-tokens", "6", "--out", str(tmp_path), "--runtime-log", str(tmp_path / "rt.jsonl")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Start -> healthy (ms):" in out and "Exit code after SIGTERM:" in out

    [path] = tmp_path.glob("coldwarm-*.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == "inloop.loadgen/v1" and doc["kind"] == "coldwarm"
    assert datetime.fromisoformat(doc["created"]).utcoffset().total_seconds() == 0
    cw = doc["coldwarm"]
    validate(doc)  # the report's contract (loadgen/report/schema.py)
    assert set(cw) == {"start_to_healthy_ms", "cold_ttft_ms", "cold_e2e_ms", "warm", "exit_code"}
    assert cw["exit_code"] == 0
    assert set(cw["warm"]) == {"n", "mean_ms", "p95_ms", "p99_ms", "ttft_mean_ms"}
    # A process start (interpreter, imports, model load) takes far longer than a tiny request.
    assert cw["start_to_healthy_ms"] > cw["cold_e2e_ms"] > 0
    assert 0 < cw["cold_ttft_ms"] <= cw["cold_e2e_ms"]
    w = cw["warm"]
    assert w["n"] == 4
    assert w["p99_ms"] >= w["p95_ms"] > 0 and w["mean_ms"] > 0
    assert 0 < w["ttft_mean_ms"] <= w["mean_ms"]

    meta = doc["meta"]
    assert meta["backend"] == "cpu" and meta["model"]["name"] == tiny_llama.name
    weights = (tiny_llama / "model.safetensors").read_bytes()
    assert meta["model"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert set(meta["packages"]) == {"grpcio", "protobuf", "numpy", "inloop"}
    assert meta["args"]["warm_requests"] == 4 and meta["profiles"] == {}
    assert isinstance(meta["host"]["cores"], int) and meta["host"]["cpu"]

    # The runtime really stopped gracefully on SIGTERM: its log ends with the stop events.
    events = [json.loads(line).get("event") for line in (tmp_path / "rt.jsonl").read_text().splitlines()
              if line.startswith("{")]
    assert "serving" in events and events[-1] == "stopped"


def test_a_model_that_cannot_load_fails_fast_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "bad-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    t0 = time.monotonic()
    log = tmp_path / "rt.jsonl"
    rc = main(["--model", str(bad), "--backend", "cpu", "--start-timeout", "60", "--runtime-log", str(log)])
    err = capsys.readouterr().err
    assert rc == 1
    assert time.monotonic() - t0 < 30   # the child's exit ends the wait, not --start-timeout
    assert "before it was healthy" in err and "model_load_failed" in err
    assert f"log kept at {log}" in err


@pytest.mark.parametrize("argv", [["--warm-requests", "0"], ["--max-tokens", "0"], ["--warmup", "-1"]])
def test_bad_arguments_are_refused_before_starting_anything(argv, capsys):
    assert main(["--model", "/nonexistent", *argv]) == 2
    assert "must be" in capsys.readouterr().err


def test_registers_as_a_loadgen_subcommand():
    parser = argparse.ArgumentParser(prog="inloop loadgen")
    register_coldwarm(parser.add_subparsers())
    args = parser.parse_args(["coldwarm", "--model", "m", "--backend", "cuda", "--warm-requests", "3"])
    assert args.func is cmd_coldwarm
    assert (args.model, args.backend, args.warm_requests, args.warmup) == ("m", "cuda", 3, 2)
