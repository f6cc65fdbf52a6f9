"""Chaos in the two-host lab (not in CI; needs root and iproute2, like `inloop lab`).

    sudo .venv/bin/python scripts/chaos_lab.py                     # tiny model, 90 s
    sudo .venv/bin/python scripts/chaos_lab.py --model default --duration-s 180 --out chaos.json

Brings the lab up (deploy/lab/lab.toml: runtime in gpu-host, tools + controller in cpu-host,
mTLS + token everywhere), then, while a driver inside the CPU host sends tasks on both routes
and kv increments straight to the tools service without pause:

    at 30% of the run   the runtime is killed (SIGKILL) and, 10% later, started again
    at 60% of the run   the tools service is killed (SIGKILL) and, 10% later, started again

and checks what the issue asks of it:
- every task ends typed within its deadline (a documented TaskError, or a gRPC status for the
  internal route whose peer is down; never a hang, never UNKNOWN/INTERNAL);
- after each peer is back (healthy), the first success comes within 2 s (runtime: a task whose
  model steps ran, passing or not: the tiny model's answers are random; tools: a kv write);
- kv state is exactly what the successful writes say: each increment has its own idempotency
  key and is retried with it until it succeeds, so the counter must equal the number of
  increments that succeeded (the tools keep it in SQLite across the kill).

Prints a JSON summary (and --out), exits 0 when all hold. `drive` is the part that runs
inside the CPU host (started by the main command; not meant to be run by hand).
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_SUCCESS_S = 2.0
SLACK_S = 2.0
TYPED_RPC = {"rpc_UNAVAILABLE", "rpc_DEADLINE_EXCEEDED", "rpc_RESOURCE_EXHAUSTED"}
# Task ends that mean the runtime answered (the model's own outcome, not a failed hop).
MODEL_OUTCOMES = {"bad_tool_call", "max_steps", "tool_error"}


# ---- the driver, inside the CPU host ----------------------------------------------------------
def drive(args: argparse.Namespace) -> int:
    import grpc

    from inloop.loadgen.task_runner import TaskRunner
    from inloop.loadgen.tasks import load_cases
    from inloop.services.common.grpc_client import make_channel
    from inloop.services.common.security import client_security_from_args
    from inloop.v1 import tools_pb2, tools_pb2_grpc

    security = client_security_from_args(args)
    # The services export their spans to the loadgen's receiver (the lab's otlp_listen): listen
    # there as the matrix would, so their exports (and their shutdown flush) succeed.
    from inloop.loadgen.otlp_receiver import OtlpReceiver, SpanStore, mtls_credentials

    host, _, port = args.otlp_listen.rpartition(":")
    spans = SpanStore()
    receiver = OtlpReceiver(spans).start(host, int(port), mtls_credentials(args.tls_cert, args.tls_key, args.tls_ca))
    stop_at = time.time() + args.duration_s
    out = open(args.events, "a")
    lock = threading.Lock()

    def emit(**record) -> None:
        with lock:
            out.write(json.dumps(record) + "\n")
            out.flush()

    cases = load_cases(None, split="eval", limit_per_family=1)
    runner = TaskRunner(args.runtime, args.controller, max_tokens=16, deadline_ms=args.deadline_ms,
                        security=security)

    def tasks(worker: int) -> None:
        n = worker
        while time.time() < stop_at:
            route = ("internal", "external")[n % 2]
            started = time.time()
            record = runner.run(cases[n % len(cases)], route, run_id=f"chaos-{worker}", rep=n)
            emit(kind="task", route=route, started=started, ended=time.time(), ok=record["ok"],
                 error_type=record["error_type"], deadline_s=args.deadline_ms / 1e3)
            n += 2
            if not record["ok"]:
                time.sleep(0.05)  # a peer that is down fails a task at once: do not spin

    def kv_writer() -> None:
        stub = tools_pb2_grpc.ToolsStub(make_channel(args.tools, security))
        n = 0
        while time.time() < stop_at:
            n += 1
            key = f"chaos-inc-{n}"
            request = tools_pb2.ToolCallRequest(name="kv", arguments_json='{"op": "increment", "key": "counter"}',
                                                session=args.session, idempotency_key=key)
            while True:  # the same idempotency key until it lands: applied exactly once
                started = time.time()
                try:
                    reply = stub.Call(request, timeout=1.0)
                    emit(kind="kv", key=key, ok=True, started=started, ended=time.time(), replayed=reply.replayed)
                    break
                except grpc.RpcError as exc:
                    emit(kind="kv", key=key, ok=False, started=started, ended=time.time(), code=exc.code().name)
                    if time.time() >= stop_at + 15:  # give up only well after the run
                        emit(kind="kv_abandoned", key=key)
                        return
                    time.sleep(0.05)
            time.sleep(0.05)
        reply = stub.Call(tools_pb2.ToolCallRequest(name="kv", arguments_json='{"op": "get", "key": "counter"}',
                                                    session=args.session), timeout=5)
        emit(kind="kv_final", value=json.loads(reply.result_json)["value"])

    threads = [threading.Thread(target=tasks, args=(w,)) for w in range(2)] + [threading.Thread(target=kv_writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runner.close()
    time.sleep(3)  # the services' last span batches
    emit(kind="spans", traces=len(spans._spans), spans=sum(len(v) for v in spans._spans.values()))
    receiver.stop()
    return 0


# ---- the conductor, in the root namespace -----------------------------------------------------
def restart(state, name: str, log_dir: Path) -> float:
    """Start `name` again with the argv the lab gave it; returns the wall time it is healthy."""
    from inloop.loadgen.lab.processes import spawn, wait_healthy

    old = next(p for p in state.procs if p.name == name)
    new = spawn(name, old.ns, old.argv, log_dir)
    state.procs[state.procs.index(old)] = new
    state.save()
    cfg = state.cfg
    target = state.runtime_target if name == "runtime" else cfg.tools_target
    wait_healthy(name, target, cfg, state.secrets, [new], cfg.start_timeout_s)
    return time.time()


def kill(state, name: str) -> float:
    proc = next(p for p in state.procs if p.name == name)
    if proc.popen is not None:
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=15)
    else:
        import os
        os.kill(proc.pid, signal.SIGKILL)
    return time.time()


def _first_after(events: list[dict], back: float) -> float | None:
    after = sorted(e["ended"] for e in events if e["ended"] >= back)
    return round(after[0] - back, 3) if after else None


def analyse(events: list[dict], outages: list[dict]) -> dict:
    from inloop.services.contract.errors import TaskError

    typed = {e.value for e in TaskError} | TYPED_RPC
    tasks = [e for e in events if e["kind"] == "task"]
    untyped = [t for t in tasks if not t["ok"] and t["error_type"] not in typed]
    late = [t for t in tasks if t["ended"] - t["started"] > t["deadline_s"] + SLACK_S]
    recovery, first_ok = {}, {}
    for outage in outages:
        if outage["service"] == "runtime":
            # A success of the runtime: a task whose model steps ran, whatever the (tiny, random)
            # model then said; a task that passes end to end is reported beside it.
            done = [e for e in tasks if e["ok"] or e["error_type"] in MODEL_OUTCOMES]
            first_ok[outage["service"]] = _first_after([e for e in tasks if e["ok"]], outage["back"])
        else:
            done = [e for e in events if e["kind"] == "kv" and e["ok"]]
        recovery[outage["service"]] = _first_after(done, outage["back"])
    succeeded = {e["key"] for e in events if e["kind"] == "kv" and e["ok"]}
    abandoned = {e["key"] for e in events if e["kind"] == "kv_abandoned"}
    final = next((e["value"] for e in events if e["kind"] == "kv_final"), None)
    kv_ok = final is not None and len(succeeded) <= final <= len(succeeded) + len(abandoned)
    recovered = all(v is not None and v <= FIRST_SUCCESS_S for v in recovery.values())
    received = next((e for e in events if e["kind"] == "spans"), {})
    return {"ok": bool(tasks) and not untyped and not late and recovered and kv_ok,
            "traces_received": received.get("traces"), "spans_received": received.get("spans"),
            "tasks": len(tasks), "tasks_ok": sum(t["ok"] for t in tasks),
            "errors": sorted({t["error_type"] for t in tasks if not t["ok"]}),
            "untyped": untyped[:5], "late": late[:5],
            "first_success_after_back_s": recovery, "first_passing_task_after_back_s": first_ok, "kv_successful_increments": len(succeeded),
            "kv_abandoned": len(abandoned), "kv_final": final, "kv_exact": kv_ok, "outages": outages}


def conduct(args: argparse.Namespace) -> int:
    from inloop.loadgen.lab import netns
    from inloop.loadgen.lab.config import load_config
    from inloop.loadgen.lab.lab import down, up

    with tempfile.TemporaryDirectory(prefix="inloop-chaos-") as tmp:
        work = Path(tmp)
        model = args.model
        if model == "tiny":
            from inloop.services.runtime.model.tiny import make_tiny
            model = str(make_tiny("llama", work / "tiny-llama"))
        cfg = load_config(args.config, model=model, backend=args.backend)
        state_dir = Path(args.state_dir)
        state = up(cfg, state_dir)
        events_path = work / "events.jsonl"
        outages = []
        try:
            sec = state.secrets
            argv = [sys.executable, str(Path(__file__).resolve()), "drive", "--runtime", state.runtime_target,
                    "--controller", cfg.controller_target, "--tools", cfg.tools_target,
                    "--duration-s", str(args.duration_s), "--events", str(events_path),
                    "--otlp-listen", cfg.otlp_listen,
                    "--session", f"chaos-{int(time.time())}", *sec.client_flags()]
            driver = subprocess.Popen(netns.exec_argv(cfg.cpu_ns, argv), cwd=REPO)
            began = time.time()
            for service, at in (("runtime", 0.3), ("tools", 0.6)):
                time.sleep(max(began + at * args.duration_s - time.time(), 0))
                killed = kill(state, service)
                print(f"chaos: killed {service}", file=sys.stderr, flush=True)
                time.sleep(0.1 * args.duration_s)
                back = restart(state, service, state_dir / "logs" / f"restart-{service}")
                print(f"chaos: {service} healthy again after {back - killed:.1f}s", file=sys.stderr, flush=True)
                outages.append({"service": service, "killed": killed, "back": back})
            driver.wait(timeout=args.duration_s + 120)
        finally:
            down(state.cfg, state_dir)
        events = [json.loads(line) for line in events_path.read_text().splitlines()] if events_path.exists() else []
    summary = analyse(events, outages)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if summary["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    d = sub.add_parser("drive", help="(internal) the load inside the CPU host")
    d.add_argument("--runtime", required=True)
    d.add_argument("--controller", required=True)
    d.add_argument("--tools", required=True)
    d.add_argument("--duration-s", type=float, required=True)
    d.add_argument("--deadline-ms", type=float, default=10000)
    d.add_argument("--events", required=True)
    d.add_argument("--session", required=True)
    d.add_argument("--otlp-listen", required=True)
    for flag in ("--tls-ca", "--tls-cert", "--tls-key", "--token-file"):
        d.add_argument(flag)
    p.add_argument("--config", default=str(REPO / "deploy" / "lab" / "lab.toml"), help="the lab's TOML")
    p.add_argument("--state-dir", default="/run/inloop-lab", help="the lab's state directory")
    p.add_argument("--model", default="tiny", help="'tiny' (default), 'default' (SmolLM2) or a model directory")
    p.add_argument("--backend", default="cpu", help="the runtime's backend (default cpu)")
    p.add_argument("--duration-s", type=float, default=90.0, help="how long the load runs (default 90)")
    p.add_argument("--out", default="", help="also write the JSON summary here")
    args = p.parse_args(argv)
    return drive(args) if args.cmd == "drive" else conduct(args)


if __name__ == "__main__":
    sys.exit(main())
