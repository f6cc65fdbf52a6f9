"""The whole two-host lab on a tiny model: `inloop lab up`, a refused client across the link,
`inloop lab run` (p00 + p04, TLS on), and what is left afterwards (nothing); plus a failing
step and a SIGTERM, both of which must tear everything down.

Needs root and iproute2 (network namespaces); skips with the reason elsewhere. The run uses
a 5 ms delay rather than the default 0.25 ms: on a shared 2-core host the relay's own
copying and the services' scheduling add about 1 ms to a cross-host call even with no delay
at all, so only a delay well above that proves the delay itself reaches the wire time.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inloop.loadgen.lab.netns import alive
from inloop.loadgen.report.schema import validate

REPO = Path(__file__).resolve().parents[2]
GPU, CPU = "gpu-host", "cpu-host"
DELAY_MS, JITTER_MS = 5.0, 1.0
SERVICES = {"inloop-loadgen", "inloop-controller", "inloop-runtime", "inloop-tools"}


def _netns_problem() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "the lab needs iproute2's `ip` (scripts/system-packages.txt)"
    probe = f"inloop-probe-{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"`ip netns add` fails here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


_PROBLEM = _netns_problem()
pytestmark = [pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or ""), pytest.mark.timeout(300)]


def inloop(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inloop.services.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line names `text` (every lab process names its state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def write_config(path: Path, model: Path, **lab) -> Path:
    lab_keys = {"delay_ms": DELAY_MS, "jitter_ms": JITTER_MS, "mechanism": "auto", **lab}
    lines = ["[lab]", *(f"{k} = {json.dumps(v)}" for k, v in lab_keys.items()),
             "[run]", f"model = {json.dumps(str(model))}", 'backend = "cpu"', "start_timeout_s = 90.0",
             'profiles = ["p00", "p04"]', "per_family = 1", "runs = 1", "warmups = 1", "max_tokens = 64"]
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_nothing_left(state_dir: Path, names: tuple[str, ...], links: tuple[str, ...]) -> None:
    assert not namespaces() & set(names), namespaces()
    for link in links:
        assert subprocess.run(["ip", "link", "show", "dev", link], capture_output=True, check=False).returncode != 0, link
    assert processes_mentioning(str(state_dir)) == []
    assert not (state_dir / "state.json").exists()


# ---- one lab: up, checks, run ------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(tiny_llama, tmp_path_factory):
    if {GPU, CPU} & namespaces():
        pytest.skip(f"namespaces {GPU}/{CPU} already exist here (a lab is up: `inloop lab down`)")
    root = tmp_path_factory.mktemp("lab")
    base = ["--config", write_config(root / "lab.toml", tiny_llama), "--state-dir", root / "state"]
    result = {"root": root, "state": root / "state", "out": root / "out"}
    try:
        started = time.monotonic()
        up = inloop("lab", "up", *base)
        assert up.returncode == 0, up.stderr[-4000:]
        result["up"] = json.loads(up.stdout)
        result["status"] = json.loads(inloop("lab", "status", "--json", *base).stdout)
        probe = subprocess.run(["ip", "netns", "exec", CPU, sys.executable, "-m", "tests.lab.refusal_probe",
                                result["up"]["runtime"], root / "state" / "tls", root / "state" / "token"],
                               cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert probe.returncode == 0, probe.stderr[-3000:]
        result["probe"] = json.loads(probe.stdout)
        run = inloop("lab", "run", *base, "--out", result["out"], timeout=240)
        assert run.returncode == 0, run.stderr[-4000:]
        result["run"], result["wall_s"] = run, time.monotonic() - started
        result["after"] = json.loads(inloop("lab", "status", "--json", *base).stdout)
    finally:
        inloop("lab", "down", *base)
    (path,) = result["out"].glob("matrix-*.json")
    result["doc"] = json.loads(path.read_text())
    result["artifact"] = path
    return result


def test_up_starts_each_service_in_its_host(lab):
    status = lab["status"]
    assert status["up"] and status["mechanism"] in ("netem", "relay")
    where = {p["name"]: p["ns"] for p in status["processes"] if p["running"]}
    expected = {"runtime": GPU, "tools": CPU, "controller": CPU}
    if status["mechanism"] == "relay":
        expected["relay"] = CPU
        assert lab["up"]["runtime"] == "10.77.0.2:50051"   # clients reach the runtime through the relay
    assert where == expected
    assert status["hosts"][GPU]["exists"] and any("10.77.0.1/24" in a for a in status["hosts"][GPU]["addresses"])


def test_client_without_certificate_or_token_is_refused_across_the_link(lab):
    probe = lab["probe"]
    assert probe["no_client_cert"].startswith("UNAVAILABLE"), probe   # no TLS handshake without a certificate
    assert probe["no_token"].startswith("UNAUTHENTICATED") and "bearer token" in probe["no_token"], probe
    assert probe["full"].startswith("OK"), probe


def test_run_writes_a_report_with_the_lab_section(lab):
    doc = lab["doc"]
    validate(doc)
    assert lab["artifact"].with_suffix(".md").exists() and lab["artifact"].with_suffix(".html").exists()
    assert [p["name"] for p in doc["matrix"]["profiles"]] == ["p00", "p04"]
    section = doc["matrix"]["lab"]
    assert section["mechanism"] == lab["status"]["mechanism"]
    assert (section["delay_ms"], section["jitter_ms"]) == (DELAY_MS, JITTER_MS)
    assert set(section["hosts"]) == {GPU, CPU}
    assert "lab: wire time cross-host" in lab["run"].stdout
    assert (lab["out"] / "lab-logs" / "runtime.log").exists()
    assert lab["wall_s"] < 150


def test_one_report_holds_spans_from_both_hosts_in_linked_traces(lab):
    doc = lab["doc"]
    spans = [s for trace in doc["traces"].values() for s in trace]
    assert {s["host"] for s in spans} == {GPU, CPU}
    assert all(s["host"] == (GPU if s["service"] == "inloop-runtime" else CPU) for s in spans)
    runs = {r["trace_id"]: r for r in doc["runs"]}
    external = [t for t, trace in doc["traces"].items() if runs[t]["route"] == "external"
                and any(s["service"] == "inloop-tools" for s in trace)]
    assert external, "no external trace with a tool call was sampled"
    trace = doc["traces"][external[0]]
    assert {s["service"] for s in trace} == SERVICES
    ids = {s["span_id"] for s in trace}
    roots = [s for s in trace if not s["parent_span_id"]]
    assert len(roots) == 1 and roots[0]["service"] == "inloop-loadgen"
    assert all(s["parent_span_id"] in ids for s in trace if s["parent_span_id"])


def test_cross_host_wire_time_exceeds_same_host_by_a_round_trip(lab):
    section = lab["doc"]["matrix"]["lab"]
    assert all(hop["n"] > 0 for hop in section["wire_by_hop"].values()), section["wire_by_hop"]
    c = section["comparison"]
    assert c["round_trip_ms"] == 2 * DELAY_MS
    assert c["excess_ms"] >= 0.8 * 2 * DELAY_MS, c


def test_nothing_is_left_after_the_run(lab):
    assert not lab["after"]["up"] and not any(h["exists"] for h in lab["after"]["hosts"].values())
    assert_nothing_left(lab["state"], (GPU, CPU), ("veth-gpu", "veth-cpu"))
    # (a stopped service may linger a moment as a zombie until init reaps it: that is not running)
    assert not any(alive(p["pid"]) for p in lab["status"]["processes"])


# ---- failures end in teardown ----------------------------------------------------------------------
def test_a_failing_step_still_tears_everything_down(tiny_llama, tmp_path):
    names, links = ("ilt-gpu", "ilt-cpu"), ("ilt-vg", "ilt-vc")
    cfg = write_config(tmp_path / "lab.toml", tmp_path / "no-such-model", gpu_ns=names[0], cpu_ns=names[1],
                       gpu_link=links[0], cpu_link=links[1])
    t0 = time.monotonic()
    done = inloop("lab", "run", "--config", cfg, "--state-dir", tmp_path / "state", "--out", tmp_path / "out")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "runtime in ilt-gpu exited" in done.stderr and "tearing down" in done.stderr
    assert time.monotonic() - t0 < 60
    assert_nothing_left(tmp_path / "state", names, links)


def test_sigterm_during_run_tears_everything_down(tiny_llama, tmp_path):
    names, links = ("ils-gpu", "ils-cpu"), ("ils-vg", "ils-vc")
    cfg = write_config(tmp_path / "lab.toml", tiny_llama, gpu_ns=names[0], cpu_ns=names[1],
                       gpu_link=links[0], cpu_link=links[1])
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "inloop.services.cli", "lab", "run", "--config", cfg, "--state-dir",
                             state, "--out", tmp_path / "out"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:   # until the services are starting
            try:
                if any(p["name"] == "runtime" for p in json.loads((state / "state.json").read_text())["procs"]):
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "down: stopped" in err
    assert_nothing_left(state, names, links)
