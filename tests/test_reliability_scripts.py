"""scripts/soak.py and scripts/chaos_lab.py (run by hand, not in CI): their verdicts, on
made-up records, pass what should pass and fail what should fail."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chaos_verdict():
    chaos = load("chaos_lab")
    outages = [{"service": "runtime", "killed": 10.0, "back": 20.0}, {"service": "tools", "killed": 30.0, "back": 40.0}]
    task = {"kind": "task", "route": "external", "deadline_s": 10.0}
    events = [
        {**task, "started": 11.0, "ended": 11.5, "ok": False, "error_type": "runtime_hop_failed"},
        {**task, "route": "internal", "started": 12.0, "ended": 12.1, "ok": False, "error_type": "rpc_UNAVAILABLE"},
        {**task, "started": 20.2, "ended": 21.0, "ok": True, "error_type": ""},
        {"kind": "kv", "key": "k1", "ok": True, "started": 1.0, "ended": 1.1},
        {"kind": "kv", "key": "k2", "ok": False, "started": 31.0, "ended": 32.0, "code": "UNAVAILABLE"},
        {"kind": "kv", "key": "k2", "ok": True, "started": 40.1, "ended": 40.6},
        {"kind": "kv_final", "value": 2},
    ]
    good = chaos.analyse(events, outages)
    assert good["ok"] and good["first_success_after_back_s"] == {"runtime": 1.0, "tools": 0.6}
    doubled = chaos.analyse(events[:-1] + [{"kind": "kv_final", "value": 3}], outages)  # a write applied twice
    assert not doubled["ok"] and not doubled["kv_exact"]
    hung = chaos.analyse(events + [{**task, "started": 50.0, "ended": 70.0, "ok": False,
                                    "error_type": "deadline_exceeded"}], outages)
    assert not hung["ok"] and hung["late"]
    untyped = chaos.analyse(events + [{**task, "started": 50.0, "ended": 50.1, "ok": False,
                                       "error_type": "rpc_UNKNOWN"}], outages)
    assert not untyped["ok"] and untyped["untyped"]
    slow = chaos.analyse([e if e.get("ended") != 21.0 else {**e, "ended": 23.5} for e in events], outages)
    assert not slow["ok"] and slow["first_success_after_back_s"]["runtime"] == 3.5


def test_soak_verdict():
    soak = load("soak")
    args = argparse.Namespace(deadline_ms=20000, rss_tolerance=0.10, minutes=10, model="tiny", concurrency=4)
    runner = soak.Soak.__new__(soak.Soak)
    runner.args = args
    runner.profile = argparse.Namespace(name="p04")
    record = {"route": "external", "ok": False, "error_type": "tool_hop_failed", "ended_s": 1.0, "retries": 1}
    runner.records = [record, {**record, "ok": True, "error_type": ""}]
    steady = {"start": {"tools": 100.0}, "middle": {"tools": 104.0}, "end": {"tools": 109.0}}
    assert runner.verdict(steady, [], 600.0)["ok"]
    unfaulted = runner.records
    runner.records = [{**r, "retries": 0} for r in unfaulted]   # the faults never fired: proves nothing
    assert not runner.verdict(steady, [], 600.0)["faults_fired"] and not runner.verdict(steady, [], 600.0)["ok"]
    runner.records = unfaulted
    growing = {**steady, "end": {"tools": 115.0}}
    assert not runner.verdict(growing, [], 600.0)["ok"]
    runner.records.append({**record, "error_type": "rpc_INTERNAL"})
    result = runner.verdict(steady, [], 600.0)
    assert not result["ok"] and result["undocumented_errors"] == {"rpc_INTERNAL": 1}
