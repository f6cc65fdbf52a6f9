"""The lab's settings (defaults = deploy/lab/lab.toml, TOML errors, flag overrides) and the
wire-time split per hop, computed from traces shaped exactly as the matrix's."""
from __future__ import annotations

from pathlib import Path

import pytest

from inloop.loadgen.hop_overhead import hop_breakdown
from inloop.loadgen.lab.config import LabConfig, LabConfigError, load_config
from inloop.loadgen.lab.wire import lab_section, summary_lines, wire_samples

REPO = Path(__file__).resolve().parents[2]
MS = 1_000_000


# ---- settings ----------------------------------------------------------------------------------
def test_the_shipped_lab_toml_is_the_default():
    cfg = load_config(REPO / "deploy" / "lab" / "lab.toml")
    assert cfg == LabConfig()
    assert (cfg.delay_ms, cfg.jitter_ms, cfg.profiles) == (0.25, 0.05, ("p00", "p04"))
    assert cfg.runtime_target("relay") == "10.77.0.2:50051" and cfg.runtime_target("netem") == "10.77.0.1:50051"


def test_flags_win_over_env_over_the_file(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('[lab]\ndelay_ms = 2\njitter_ms = 0.5\ncpu_ns = "c1"\n[run]\nprofiles = ["p01"]\n')
    cfg = load_config(path, {}, delay_ms=3.0, jitter_ms=None, profiles=["p00", "p05"])
    assert (cfg.delay_ms, cfg.jitter_ms, cfg.cpu_ns, cfg.profiles) == (3.0, 0.5, "c1", ("p00", "p05"))
    env = {"INLOOP_LAB_JITTER_MS": "0.75", "INLOOP_LAB_DELAY_MS": "9", "INLOOP_LAB_PROFILES": "p02,p03"}
    cfg = load_config(path, env, delay_ms=3.0)
    assert (cfg.delay_ms, cfg.jitter_ms, cfg.cpu_ns, cfg.profiles) == (3.0, 0.75, "c1", ("p02", "p03"))
    with pytest.raises(LabConfigError, match=r"INLOOP_LAB_RUNS='many' \(env\): not an int"):
        load_config(path, {"INLOOP_LAB_RUNS": "many"})


@pytest.mark.parametrize("text, message", [
    ("[lab]\ndelay = 1\n", "unknown key"),
    ("[network]\n", "unknown table"),
    ("[lab]\ndelay_ms = 'slow'\n", r"delay_ms='slow' \(.*lab.toml \[lab\]\): not a float"),
    ("[lab]\ndelay_ms = 0.1\njitter_ms = 0.2\n", "jitter_ms <= delay_ms"),
    ("[lab]\ngpu_link = 'a-very-long-link-name'\n", "15"),
    ("[lab]\ncpu_addr = '10.78.0.2'\n", "one /24 subnet"),
    ("[lab]\nmechanism = 'tc'\n", "one of auto, netem, relay"),
    ("[lab]\ncpu_ns = 'gpu-host'\n", "different names"),
    ("[lab]\notlp_port = 50061\n", "ports must differ"),
])
def test_bad_settings_are_named(tmp_path, text, message):
    path = tmp_path / "lab.toml"
    path.write_text(text)
    with pytest.raises(LabConfigError, match=message):
        load_config(path)


# ---- wire time per hop ----------------------------------------------------------------------------
class Trace:
    """Build a task's spans the way the services emit them (ms offsets)."""

    def __init__(self):
        self.spans: list[dict] = []

    def add(self, name, service, kind, start, end, parent=None, rpc=False, status="ok", host="cpu-host"):
        span = {"trace_id": "t" * 32, "span_id": f"{len(self.spans) + 1:016x}",
                "parent_span_id": parent["span_id"] if parent else "", "name": name, "service": service,
                "host": host, "kind": kind, "start_ns": int(start * MS), "end_ns": int(end * MS), "status": status,
                "attributes": {"rpc.system": "grpc"} if rpc else {}}
        self.spans.append(span)
        return span


def external_task() -> list[dict]:
    t = Trace()
    call = t.add("/inloop.v1.Controller/RunTask", "inloop-loadgen", "client", 0, 100, rpc=True)
    server = t.add("/inloop.v1.Controller/RunTask", "inloop-controller", "server", 1, 99, call, rpc=True)  # 2 ms
    agent = t.add("invoke_agent external", "inloop-controller", "internal", 2, 98, server)
    chat = t.add("chat tiny", "inloop-controller", "client", 10, 40, agent)
    attempt = t.add("/inloop.v1.Runtime/Generate", "inloop-controller", "client", 11, 39, chat, rpc=True)
    t.add("/inloop.v1.Runtime/Generate", "inloop-runtime", "server", 13, 37, attempt, rpc=True, host="gpu-host")  # 4
    tool = t.add("execute_tool calculator", "inloop-controller", "internal", 50, 60, agent)
    attempt = t.add("/inloop.v1.Tools/Call", "inloop-controller", "client", 51, 59, tool, rpc=True)
    t.add("/inloop.v1.Tools/Call", "inloop-tools", "server", 52, 58, attempt, rpc=True)  # 2 ms
    # A tool hop that timed out: the client gave up at 71 ms, the server went on to 90 ms.
    failed = t.add("execute_tool kv", "inloop-controller", "internal", 61, 72, agent, status="error")
    attempt = t.add("/inloop.v1.Tools/Call", "inloop-controller", "client", 61, 71, failed, rpc=True, status="error")
    t.add("/inloop.v1.Tools/Call", "inloop-tools", "server", 62, 90, attempt, rpc=True)
    return t.spans


def internal_task() -> list[dict]:
    t = Trace()
    call = t.add("/inloop.v1.Runtime/RunTask", "inloop-loadgen", "client", 0, 50, rpc=True)
    server = t.add("/inloop.v1.Runtime/RunTask", "inloop-runtime", "server", 3, 47, call, rpc=True,
                   host="gpu-host")  # 6 ms
    agent = t.add("invoke_agent internal", "inloop-runtime", "internal", 4, 46, server, host="gpu-host")
    t.add("chat tiny", "inloop-runtime", "internal", 5, 40, agent, host="gpu-host")
    return t.spans


def record(route: str, spans: list[dict]) -> dict:
    """A matrix record after loadgen.trace_analysis.attach_breakdowns."""
    parts = hop_breakdown(spans)
    return {"route": route, "profile": "p00", "hops": {k: v for k, v in parts.items() if k != "hops"},
            "hop_rows": parts["hops"], "trace_id": spans[0]["trace_id"]}


def test_wire_time_is_split_per_hop_and_failed_hops_are_left_out():
    samples = wire_samples([record("external", external_task()), record("internal", internal_task()),
                            {"route": "internal", "profile": "p00"}])   # an untraced task counts nowhere
    expected = {"loadgen->runtime": [6.0], "controller->runtime": [4.0], "loadgen->controller": [2.0],
                "controller->tools": [2.0]}
    assert samples.keys() == expected.keys()
    for hop, values in expected.items():
        assert samples[hop] == pytest.approx(values), hop


def test_lab_section_compares_cross_host_with_same_host():
    cfg = LabConfig(delay_ms=1.0, jitter_ms=0.1)
    traces = {"a": external_task(), "b": internal_task()}
    section = lab_section([record("external", traces["a"]), record("internal", traces["b"])], traces, cfg, "relay")
    assert (section["mechanism"], section["delay_ms"], section["jitter_ms"]) == ("relay", 1.0, 0.1)
    hops = section["wire_by_hop"]
    assert hops["loadgen->runtime"]["cross_host"] and not hops["controller->tools"]["cross_host"]
    assert hops["controller->runtime"]["from"] == "cpu-host" and hops["controller->runtime"]["to"] == "gpu-host"
    c = section["comparison"]
    assert (c["cross_host_mean_ms"], c["same_host_mean_ms"], c["excess_ms"]) == pytest.approx((5.0, 2.0, 3.0))
    assert (c["loadgen_excess_ms"], c["controller_excess_ms"], c["round_trip_ms"]) == pytest.approx((4.0, 2.0, 2.0))
    assert section["hosts"]["gpu-host"]["sampled_spans"] == 4 and section["hosts"]["cpu-host"]["sampled_spans"] == 12
    assert "relay" in section["hosts"]["cpu-host"]["services"]
    text = "\n".join(summary_lines(section))
    assert "cross-host 5.000 ms vs same-host 2.000 ms: +3.000 ms" in text


def test_a_hop_without_samples_reads_as_missing_not_zero():
    section = lab_section([record("internal", internal_task())], {}, LabConfig(), "netem")
    assert section["wire_by_hop"]["controller->tools"] == {**section["wire_by_hop"]["controller->tools"],
                                                           "n": 0, "mean_ms": None}
    assert section["comparison"]["same_host_mean_ms"] is None and section["comparison"]["excess_ms"] is None
    assert "relay" not in section["hosts"]["cpu-host"]["services"]
    assert "n/a" in "\n".join(summary_lines(section))
