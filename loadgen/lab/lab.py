"""`inloop lab up | run | down | status`: the two-host lab, from nothing back to nothing.

    up      namespaces + veth link, delay (netem or the relay), certificates + token, then
            the runtime in the GPU host, tools and controller in the CPU host; waits for health
    run     up (unless up), `inloop loadgen matrix` inside the CPU host against them, the
            wire-time comparison added to the report, then down
    down    every process in the lab's namespaces (SIGTERM, then SIGKILL), then the namespaces
            and links; idempotent
    status  what exists

The state directory holds `state.json` (the configuration, the mechanism, every process
started), `tls/`, `token` and `logs/`. `down` stops what `ip netns pids` finds in the
namespaces as well as what state.json names, so it cleans up after a crash too. A failing
step of `up` or `run`, SIGTERM, SIGHUP or Ctrl-C all end in `down`.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from inloop.loadgen.lab import netns
from inloop.loadgen.lab.config import LabConfig, load_config
from inloop.loadgen.lab.processes import (
    REPO, LabError, LabProc, Secrets, host_env, python_cli, relay_argv, service_argv, spawn, wait_healthy,
)

DEFAULT_STATE_DIR = "/run/inloop-lab"


def say(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


# ---- state ---------------------------------------------------------------------------------
class LabState:
    """STATE_DIR/state.json: what the lab made, so `down` and `status` work from any process."""

    def __init__(self, root: Path, cfg: LabConfig, mechanism: str = "", procs: list[LabProc] | None = None):
        self.root, self.cfg, self.mechanism = Path(root), cfg, mechanism
        self.procs = procs or []

    @property
    def path(self) -> Path:
        return self.root / "state.json"

    @property
    def secrets(self) -> Secrets:
        return Secrets(self.root)

    @property
    def runtime_target(self) -> str:
        return self.cfg.runtime_target(self.mechanism)

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"config": self.cfg.to_dict(), "mechanism": self.mechanism,
               "procs": [p.to_dict() for p in self.procs]}
        self.path.write_text(json.dumps(doc, indent=1) + "\n")

    @classmethod
    def load(cls, root: Path) -> LabState | None:
        try:
            doc = json.loads((Path(root) / "state.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return cls(root, load_config(None, **doc["config"]), doc.get("mechanism", ""),
                   [LabProc(**p) for p in doc.get("procs", [])])

    def is_up(self) -> bool:
        present = netns.namespaces()
        return (bool(self.procs) and {self.cfg.gpu_ns, self.cfg.cpu_ns} <= present
                and all(p.running() for p in self.procs))


# ---- up ------------------------------------------------------------------------------------
def up(cfg: LabConfig, state_dir: Path) -> LabState:
    """Bring the lab up (or return the one that is up); on any failure tear down and raise."""
    netns.check_can_run()
    existing = LabState.load(state_dir)
    if existing is not None and existing.is_up():
        say(f"already up ({existing.cfg.gpu_ns} + {existing.cfg.cpu_ns}, {existing.mechanism}); "
            f"using it as it is")
        return existing
    if existing is not None:
        say("a lab that is only partly up was found: tearing it down first")
        down(existing.cfg, state_dir)
    state = LabState(state_dir, cfg)
    try:
        _bring_up(state)
    except BaseException:
        say("setup failed: tearing down")
        down(cfg, state_dir)
        raise
    return state


def _bring_up(state: LabState) -> None:
    cfg, started = state.cfg, time.monotonic()
    state.save()   # from here on `down` knows the names, even if this process dies
    netns.create_hosts(cfg)
    say(f"namespaces {cfg.gpu_ns} ({cfg.gpu_addr}) and {cfg.cpu_ns} ({cfg.cpu_addr}) joined by "
        f"{cfg.gpu_link} <-> {cfg.cpu_link}")
    state.mechanism = _delay_mechanism(cfg)
    state.save()
    state.secrets.write(cfg)
    say(f"mTLS certificates (SANs {cfg.gpu_addr}, {cfg.cpu_addr}) and a token in {state.root}")
    logs = state.root / "logs"
    if state.mechanism == "relay":
        state.procs.append(spawn("relay", cfg.cpu_ns, relay_argv(cfg), logs))
        say(f"relay in {cfg.cpu_ns}: {cfg.relay_listen} -> {cfg.runtime_listen}")
    sec = state.secrets
    for service, ns in (("runtime", cfg.gpu_ns), ("tools", cfg.cpu_ns)):
        state.procs.append(spawn(service, ns, service_argv(service, cfg, sec, state.runtime_target), logs))
    state.save()
    say(f"runtime ({cfg.model}, {cfg.backend}) in {cfg.gpu_ns} on {cfg.runtime_listen}, tools in {cfg.cpu_ns} "
        f"on {cfg.tools_target}; waiting for health")
    wait_healthy("runtime", state.runtime_target, cfg, sec, state.procs, cfg.start_timeout_s)
    wait_healthy("tools", cfg.tools_target, cfg, sec, state.procs, cfg.start_timeout_s)
    state.procs.append(spawn("controller", cfg.cpu_ns, service_argv("controller", cfg, sec, state.runtime_target),
                             logs))
    state.save()
    wait_healthy("controller", cfg.controller_target, cfg, sec, state.procs, cfg.start_timeout_s)
    say(f"up in {time.monotonic() - started:.1f}s: controller {cfg.controller_target}, runtime via "
        f"{state.runtime_target}, OTLP to {cfg.otlp_listen}")


def _delay_mechanism(cfg: LabConfig) -> str:
    if cfg.mechanism == "relay":
        say(f"delay {cfg.delay_ms} ± {cfg.jitter_ms} ms each way by the userspace relay (as configured)")
        return "relay"
    ok, why = netns.try_netem(cfg)
    if ok:
        say(f"delay {cfg.delay_ms} ± {cfg.jitter_ms} ms each way by tc netem on both link ends")
        return "netem"
    if cfg.mechanism == "netem":
        raise LabError(f"mechanism = netem, but tc netem fails here: {why}")
    say(f"tc netem unavailable ({why}); delay {cfg.delay_ms} ± {cfg.jitter_ms} ms each way by the userspace relay")
    return "relay"


# ---- down ----------------------------------------------------------------------------------
def down(cfg: LabConfig, state_dir: Path, grace_s: float = 10.0) -> list[str]:
    """Stop every lab process and remove namespaces and links; returns what it did."""
    netns.check_can_run()
    with _signals_ignored():
        state = LabState.load(state_dir)
        configs = [cfg] + ([state.cfg] if state is not None and state.cfg != cfg else [])
        done = []
        pids = set()
        for c in configs:
            for ns in (c.gpu_ns, c.cpu_ns):
                pids.update(netns.ns_pids(ns))
        if state is not None:   # a process whose namespace is already gone
            pids.update(p.pid for p in state.procs if p.running())
        if pids:
            ended = netns.stop_processes(sorted(pids), grace_s)
            done.append(f"stopped {len(ended)} process(es): "
                        + ", ".join(f"{pid} {how}" for pid, how in sorted(ended.items())))
        for c in configs:
            done.extend(netns.delete_hosts(c))
        if state is not None:
            state.path.unlink(missing_ok=True)
    say("down: " + ("; ".join(done) if done else "nothing to remove"))
    return done


@contextlib.contextmanager
def _signals_ignored():
    """Teardown runs to the end: a second Ctrl-C must not leave half a lab behind."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_end_in_teardown():
    """SIGTERM and SIGHUP raise SystemExit (Ctrl-C already raises KeyboardInterrupt), so the
    caller's finally/except runs `down`. A signal the caller ignores stays ignored (`nohup
    inloop lab run` must survive its terminal closing)."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    sigs = [s for s in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_IGN]
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---- run -----------------------------------------------------------------------------------
def run(cfg: LabConfig, state_dir: Path, out_dir: Path, keep_up: bool = False) -> Path:
    """up, the matrix in the CPU host, the lab's analysis into the report, down; returns the
    artifact's path."""
    from inloop.loadgen.lab.wire import add_lab_section

    out_dir = Path(out_dir).resolve()
    state = None
    try:
        state = up(cfg, state_dir)
        artifact = run_matrix(state, out_dir)
        add_lab_section(artifact, state.cfg, state.mechanism)
        return artifact
    finally:
        if not keep_up:
            down(state.cfg if state is not None else cfg, state_dir)
        if state is not None:   # after down: the logs then end with each service's last words
            _keep_logs(state, out_dir)


def run_matrix(state: LabState, out_dir: Path) -> Path:
    """`inloop loadgen matrix` inside the CPU host against the lab; returns its JSON artifact."""
    cfg, sec = state.cfg, state.secrets
    args = ["loadgen", "matrix", "--runtime", state.runtime_target, "--controller", cfg.controller_target,
            "--otlp-listen", cfg.otlp_listen, "--otlp-tls", *sec.client_flags(), "--out", str(out_dir),
            "--per-family", str(cfg.per_family), "--runs", str(cfg.runs), "--warmups", str(cfg.warmups),
            "--max-tokens", str(cfg.max_tokens)]
    for profile in cfg.profiles:
        args += ["--profile", profile]
    for family in cfg.families:
        args += ["--family", family]
    say(f"running the matrix in {cfg.cpu_ns} (profiles {', '.join(cfg.profiles)}, TLS + token)")
    proc = subprocess.Popen(netns.exec_argv(cfg.cpu_ns, python_cli(*args)), cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=None, text=True, env=host_env(cfg.cpu_ns),
                            start_new_session=True)
    artifact = None
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith("wrote json: "):
                artifact = Path(line.removeprefix("wrote json: ").strip())
        proc.wait()
    finally:
        if proc.poll() is None:   # interrupted: the matrix goes with the lab
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or artifact is None:
        raise LabError(f"`inloop loadgen matrix` in {cfg.cpu_ns} failed (exit {proc.returncode})")
    return artifact


def _keep_logs(state: LabState, out_dir: Path) -> None:
    """Copy the services' logs next to the report (the state directory is reused)."""
    src = state.root / "logs"
    if src.is_dir():
        shutil.copytree(src, out_dir / "lab-logs", dirs_exist_ok=True)


# ---- status --------------------------------------------------------------------------------
def status(cfg: LabConfig, state_dir: Path) -> dict:
    """What exists: per namespace its addresses and processes; the state file's record."""
    netns.check_can_run()
    state = LabState.load(state_dir)
    use = state.cfg if state is not None else cfg
    doc = netns.describe(use)
    doc["state_dir"] = str(state_dir)
    doc["up"] = bool(state and state.is_up())
    if state is not None:
        doc["mechanism"] = state.mechanism
        doc["delay_ms"], doc["jitter_ms"] = use.delay_ms, use.jitter_ms
        doc["processes"] = [{"name": p.name, "ns": p.ns, "pid": p.pid, "running": p.running(), "log": p.log}
                            for p in state.procs]
        doc["targets"] = {"runtime": state.runtime_target, "controller": use.controller_target,
                          "tools": use.tools_target, "otlp": use.otlp_listen}
    return doc
