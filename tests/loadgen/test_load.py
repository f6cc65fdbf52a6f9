"""`loadgen load`: vLLM metrics by hand, Poisson arrivals, and real runs against a tiny runtime."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import time

import numpy as np
import pytest

from inloop.loadgen.load import cmd_load, poisson_offsets, register_load, run_load
from inloop.loadgen.load_metrics import calculate_metrics, parse_goodput
from inloop.loadgen.prompt_set import chat_prompts
from inloop.loadgen.report.schema import validate
from inloop.loadgen.runtime_launcher import RuntimeLauncher
from inloop.loadgen.stats import STAT_KEYS
from inloop.loadgen.stream_client import StreamResult
from inloop.services.cli import main as inloop
from inloop.services.common.grpc_client import aio_insecure_channel, wait_for_serving

MAX_TOKENS = 8


def main(argv: list[str]) -> int:
    """The command as a user runs it: `inloop loadgen load ...`."""
    return inloop(["loadgen", "load", *argv])


# ---- pure parts ---------------------------------------------------------------------------
def _ok(ttft, e2el, out, prompt=10, itl=()):
    return StreamResult("r", success=True, ttft_ms=ttft, e2el_ms=e2el, output_tokens=out,
                        prompt_tokens=prompt, itl_ms=list(itl))


def test_metrics_follow_vllm_rules_by_hand():
    results = [_ok(10.0, 50.0, 5, prompt=30, itl=[10.0] * 4),
               _ok(20.0, 20.0, 1, prompt=12),
               StreamResult("r3", error="RESOURCE_EXHAUSTED: queue full")]
    m = calculate_metrics(results, duration_s=2.0, goodput_slos=None)
    assert (m.completed, m.failed) == (2, 1)
    assert m.errors == {"RESOURCE_EXHAUSTED": 1}
    assert m.request_throughput == pytest.approx(1.0)              # 2 / 2 s
    assert m.output_throughput == pytest.approx(3.0)               # (5 + 1) / 2 s
    assert m.total_token_throughput == pytest.approx((42 + 6) / 2)  # failed prompts not counted
    assert m.tpot_ms["mean"] == pytest.approx(10.0)   # (50 - 10) / (5 - 1); the 1-token answer has none
    assert m.itl_ms["p99"] == pytest.approx(10.0)
    assert m.ttft_ms["mean"] == pytest.approx(15.0)
    assert m.e2el_ms["median"] == pytest.approx(35.0)
    assert m.goodput is None


def test_goodput_counts_requests_meeting_every_slo():
    results = [_ok(10.0, 50.0, 5), _ok(20.0, 20.0, 1)]
    assert calculate_metrics(results, 2.0, {"ttft": 15.0}).goodput == pytest.approx(0.5)
    # TPOT SLO: the 1-token answer counts as TPOT 0 (vLLM), the other has 10 ms > 5 ms.
    assert calculate_metrics(results, 2.0, {"tpot": 5.0}).goodput == pytest.approx(0.5)
    assert calculate_metrics(results, 2.0, {"ttft": 15.0, "e2el": 30.0}).goodput == 0.0
    assert calculate_metrics(results, 2.0, {"e2el": 100.0}).goodput == pytest.approx(1.0)


def test_parse_goodput():
    assert parse_goodput(["ttft:500", "TPOT:50", "e2el:4000"]) == {"ttft": 500.0, "tpot": 50.0, "e2el": 4000.0}
    for bad in (["itl:5"], ["ttft"], ["ttft:fast"], ["e2el:-1"]):
        with pytest.raises(ValueError, match="--goodput"):
            parse_goodput(bad)


def test_poisson_offsets_are_seeded_and_have_the_asked_rate():
    a = poisson_offsets(20000, rate=4.0, seed=1)
    assert a[0] == 0.0 and np.all(np.diff(a) >= 0)
    assert np.mean(np.diff(a)) == pytest.approx(0.25, rel=0.03)
    assert np.std(np.diff(a)) == pytest.approx(0.25, rel=0.05)   # exponential: std == mean
    assert np.array_equal(a, poisson_offsets(20000, 4.0, seed=1))
    assert not np.array_equal(a[:50], poisson_offsets(50, 4.0, seed=2))
    bursty = np.diff(poisson_offsets(20000, 4.0, seed=1, burstiness=0.25))
    assert np.mean(bursty) == pytest.approx(0.25, rel=0.05) and np.std(bursty) > 0.4  # gamma k=0.25: std = 2 * mean
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="rate"):
            poisson_offsets(3, bad, seed=0)


def test_prompt_set_is_seeded_and_varied():
    p = chat_prompts(40, seed=3)
    assert p == chat_prompts(40, seed=3) and p != chat_prompts(40, seed=4)
    lengths = [len(s.split()) for s in p]
    assert min(lengths) < 15 and max(lengths) > 40


# ---- against a real runtime -----------------------------------------------------------------
@pytest.fixture(scope="module")
def runtime(tiny_llama, tmp_path_factory):
    rt = RuntimeLauncher(str(tiny_llama), "cpu", log_path=tmp_path_factory.mktemp("rt") / "runtime.jsonl").start()
    wait_for_serving(rt.target, timeout_s=60)
    yield rt
    assert rt.stop() == 0


def _run(target, prompts, **kw):
    async def go():
        async with aio_insecure_channel(target) as channel:
            return await run_load(channel, prompts, MAX_TOKENS, **kw)
    return asyncio.run(go())


def _check_ordered(results, m, n):
    assert m.completed == n and m.failed == 0
    assert all(r.ttft_ms <= r.e2el_ms for r in results)
    assert all(r.output_tokens >= 1 and r.output_tokens <= MAX_TOKENS for r in results)
    for stats in (m.ttft_ms, m.e2el_ms, m.itl_ms):
        assert stats["p99"] >= stats["p95"] >= stats["median"] > 0
    assert m.ttft_ms["mean"] <= m.e2el_ms["mean"]
    assert m.output_throughput > 0 and m.total_token_throughput > m.output_throughput


def test_closed_loop_against_a_runtime(runtime):
    prompts = chat_prompts(8, seed=0)
    results, duration = _run(runtime.target, prompts, concurrency=3, warmup=1)
    m = calculate_metrics(results, duration)
    _check_ordered(results, m, 8)
    assert [r.request_id for r in results] == [f"load-{i}" for i in range(8)]  # prompt order kept
    # Streamed tokens: one ITL gap per token after the first.
    assert sum(len(r.itl_ms) for r in results) == sum(r.output_tokens - 1 for r in results)
    assert duration >= max(r.e2el_ms for r in results) / 1e3


def test_poisson_arrivals_against_a_runtime(runtime):
    prompts = chat_prompts(6, seed=1)
    results, duration = _run(runtime.target, prompts, rate=40.0, seed=1)
    m = calculate_metrics(results, duration)
    _check_ordered(results, m, 6)
    offsets = poisson_offsets(6, 40.0, seed=1)
    assert duration >= offsets[-1]
    sends = np.array([r.sent_at for r in results]) - min(r.sent_at for r in results)
    # Each request left at its arrival time: never early, and not held back behind earlier ones
    # (the slack only absorbs a busy CI machine's scheduling jitter).
    assert np.all(sends >= offsets - 0.002) and np.all(sends <= offsets + 0.25)


def test_cli_writes_the_artifact(runtime, tiny_llama, tmp_path, capsys):
    rc = main(["--target", runtime.target, "--num-prompts", "5", "--concurrency", "2", "--max-tokens",
               str(MAX_TOKENS), "--goodput", "ttft:60000", "e2el:60000", "--disable-tqdm", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Successful requests:" in out and "Mean TTFT (ms):" in out and "Request goodput (req/s):" in out
    [path] = tmp_path.glob("load-*.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == "inloop.loadgen/v1" and doc["kind"] == "load" and doc["created"].endswith("Z")
    validate(doc)  # the report's contract (loadgen/report/schema.py)
    load = doc["load"]
    assert set(load) >= {"mode", "concurrency", "rate", "completed", "failed", "duration_s", "request_throughput",
                         "output_throughput", "total_token_throughput", "goodput", "ttft_ms", "tpot_ms",
                         "itl_ms", "e2el_ms"}
    assert (load["mode"], load["concurrency"], load["rate"]) == ("concurrency", 2, None)
    assert load["completed"] == 5 and load["failed"] == 0 and load["errors"] == {}
    assert load["total_output_tokens"] >= 5 and load["total_input_tokens"] > load["total_output_tokens"]
    assert load["goodput"] == pytest.approx(load["request_throughput"])  # generous SLOs: all good
    assert all(set(load[k]) == set(STAT_KEYS) for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"))
    meta = doc["meta"]
    assert meta["backend"] == "cpu" and meta["seeds"] == [0] and meta["args"]["num_prompts"] == 5
    assert isinstance(meta["command"], str)
    assert meta["model"] == {"name": tiny_llama.name, "sha256": ""}  # --target: the weights are not ours to hash


def test_cli_starts_its_own_runtime_in_poisson_mode(tiny_llama, tmp_path, capsys):
    rc = main(["--model", str(tiny_llama), "--backend", "cpu", "--request-rate", "50", "--num-prompts", "4",
               "--max-tokens", "4", "--disable-tqdm", "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(next(tmp_path.glob("load-*.json")).read_text())
    assert (doc["load"]["mode"], doc["load"]["rate"], doc["load"]["completed"]) == ("poisson", 50.0, 4)
    assert len(doc["meta"]["model"]["sha256"]) == 64  # a local model: its weights are hashed


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_runtime_that_is_down_gives_failed_requests_quickly():
    target = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    results, _ = _run(target, chat_prompts(4, seed=0), concurrency=2, timeout_s=10)
    assert time.monotonic() - t0 < 5
    m = calculate_metrics(results, 1.0)
    assert (m.completed, m.failed) == (0, 4) and m.errors == {"UNAVAILABLE": 4}


def test_cli_says_clearly_that_the_runtime_is_down(capsys):
    rc = main(["--target", f"127.0.0.1:{_closed_port()}", "--num-prompts", "3", "--connect-timeout", "3"])
    assert rc == 1
    assert "did not answer GetModelInfo" in capsys.readouterr().err


def test_a_hung_runtime_fails_by_deadline_not_a_hang(tiny_llama, tmp_path):
    rt = RuntimeLauncher(str(tiny_llama), "cpu", log_path=tmp_path / "hung.jsonl").start()
    try:
        wait_for_serving(rt.target, timeout_s=60)
        rt.proc.send_signal(signal.SIGSTOP)  # accepts connections (kernel backlog), answers nothing
        t0 = time.monotonic()
        results, _ = _run(rt.target, chat_prompts(3, seed=0), concurrency=3, timeout_s=0.5)
        assert time.monotonic() - t0 < 5
        assert [r.status for r in results] == ["DEADLINE_EXCEEDED"] * 3
    finally:
        rt.proc.send_signal(signal.SIGCONT)
        rt.stop()


def test_registers_as_a_loadgen_subcommand(capsys):
    parser = argparse.ArgumentParser(prog="inloop loadgen")
    register_load(parser.add_subparsers())
    args = parser.parse_args(["load", "--target", "h:1", "--request-rate", "2.5", "--goodput", "ttft:100", "e2el:900"])
    assert args.func is cmd_load
    assert (args.target, args.request_rate, args.concurrency, args.goodput) == ("h:1", 2.5, None, ["ttft:100", "e2el:900"])
    for conflicting in (["load", "--target", "h:1", "--model", "m"],
                        ["load", "--target", "h:1", "--concurrency", "2", "--request-rate", "1"], ["load"]):
        with pytest.raises(SystemExit):
            parser.parse_args(conflicting)
    capsys.readouterr()


def test_cli_sweeps_concurrency_levels_against_one_runtime(runtime, tmp_path, capsys):
    rc = main(["--target", runtime.target, "--num-prompts", "3", "--concurrency", "1,2", "--max-tokens",
               str(MAX_TOKENS), "--disable-tqdm", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Concurrency sweep" in out and "TTFT p99" in out
    doc = json.loads(next(tmp_path.glob("load-*.json")).read_text())
    validate(doc)
    sweep = doc["load"]["sweep"]
    assert [lv["concurrency"] for lv in sweep] == [1, 2] and all(lv["completed"] == 3 for lv in sweep)
    assert doc["load"]["concurrency"] == 1 and doc["load"]["completed"] == 3   # the first level's
    page = next(tmp_path.glob("load-*.html")).read_text()
    assert "plot-sweep-throughput" in page and "plot-sweep-latency" in page and "Concurrency sweep" in page
    assert "Concurrency sweep" in next(tmp_path.glob("load-*.md")).read_text()


def test_concurrency_levels_parse_or_fail_clearly():
    from inloop.loadgen.load import _levels

    assert _levels("4") == [4] and _levels("1,2, 4,8") == [1, 2, 4, 8]
    for bad in ("0", "1,x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _levels(bad)
