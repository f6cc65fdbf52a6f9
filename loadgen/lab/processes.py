"""The lab's processes: the services (and the relay) inside their namespaces, and their health.

Every process is `ip netns exec NS python -m inloop.services.cli ...` started in a session of its
own, so it outlives `inloop lab up` and a Ctrl-C in the terminal reaches the lab, which
then tears down in order, rather than each service at once. Output goes to
`STATE_DIR/logs/<name>.log`. Each service gets

    OTEL_RESOURCE_ATTRIBUTES=host.name=<namespace>   so its spans say which host they came from
    OTEL_BSP_SCHEDULE_DELAY=100                      the report waits for each trace's last spans

and the lab's mTLS files and token (`secrets`). Health is asked from inside the CPU host
with `inloop health ... --tls-*` (the root namespace cannot reach the lab's addresses), so
the runtime's check already goes the way every client goes: through the relay, over mTLS,
checking that the runtime's certificate names the address dialled.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from inloop.loadgen.lab.config import LabConfig
from inloop.loadgen.lab.netns import alive, exec_argv, start_time

REPO = Path(__file__).resolve().parents[2]
METRICS_PORTS = {"runtime": 9101, "tools": 9102, "controller": 9103}
HEALTH_NAMES = {"runtime": "inloop.v1.Runtime", "tools": "inloop.v1.Tools", "controller": "inloop.v1.Controller"}


class LabError(RuntimeError):
    """A lab step that failed; the message says which and quotes what the process logged."""


@dataclass
class LabProc:
    """One process the lab started (what `state.json` records)."""

    name: str
    ns: str
    pid: int
    started: int | None    # /proc start time: with pid, identifies the process
    log: str
    argv: list[str]
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "popen"}

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return alive(self.pid) and start_time(self.pid) == self.started

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True)
class Secrets:
    """The lab's TLS files and token, under STATE_DIR/tls and STATE_DIR/token."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "tls" / "ca.crt"

    def cert(self, identity: str) -> Path:
        return self.root / "tls" / f"{identity}.crt"

    def key(self, identity: str) -> Path:
        return self.root / "tls" / f"{identity}.key"

    @property
    def token(self) -> Path:
        return self.root / "token"

    def write(self, cfg: LabConfig) -> None:
        """A dev CA whose certificates name both hosts' addresses (a client through the relay
        dials the CPU host's address, yet the runtime answers the TLS handshake), and a token."""
        from inloop.services.common.certs_cli import make_dev_pki

        make_dev_pki(self.root / "tls", sans=[cfg.gpu_addr, cfg.cpu_addr])
        fd = os.open(self.token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")

    def server_flags(self, identity: str) -> list[str]:
        return ["--tls-cert", str(self.cert(identity)), "--tls-key", str(self.key(identity)),
                "--tls-ca", str(self.ca), "--token-file", str(self.token)]

    def client_flags(self, token: bool = True) -> list[str]:
        """What a client in the CPU host passes: the loadgen identity (and the token)."""
        flags = ["--tls-ca", str(self.ca), "--tls-cert", str(self.cert("loadgen")),
                 "--tls-key", str(self.key("loadgen"))]
        return flags + (["--token-file", str(self.token)] if token else [])


def python_cli(*args: str) -> list[str]:
    """`inloop ARGS...` as this interpreter runs it (no reliance on PATH inside the namespace)."""
    return [sys.executable, "-m", "inloop.services.cli", *args]


def host_env(ns: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process on lab host `ns`: its spans carry host.name=ns."""
    env = dict(os.environ if base is None else base)
    env.pop("OTEL_SERVICE_NAME", None)               # would rename every service alike
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)     # each service gets --otlp-endpoint instead
    attrs = [a for a in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if a and not a.startswith("host.name=")]
    env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join([*attrs, f"host.name={ns}"])
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(name: str, ns: str, argv: list[str], log_dir: Path) -> LabProc:
    """Start `argv` inside `ns`, in its own session, output appended to log_dir/<name>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:   # a new lab, a new log
        popen = subprocess.Popen(exec_argv(ns, argv), cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=host_env(ns), start_new_session=True)
    # `ip netns exec` execs argv (no fork), so this pid is the service's own.
    return LabProc(name, ns, popen.pid, start_time(popen.pid), str(log_path), argv, popen)


def service_argv(service: str, cfg: LabConfig, sec: Secrets, runtime_target: str) -> list[str]:
    """`inloop SERVICE serve ...` bound to its host's address, with mTLS, token and OTLP export."""
    otlp = ["--otlp-endpoint", f"https://{cfg.otlp_listen}"]  # span export over mTLS too
    metrics = ["--metrics-port", str(METRICS_PORTS[service])]
    if service == "runtime":
        where = ["--host", cfg.gpu_addr, "--port", str(cfg.runtime_port), "--model", cfg.model,
                 "--backend", cfg.backend]
    elif service == "tools":
        # The kv state survives a tools restart (the chaos script kills it) and stays in the lab.
        where = ["--host", cfg.cpu_addr, "--port", str(cfg.tools_port),
                 "--state-db", str(sec.root / "tools-kv.sqlite3")]
    else:
        where = ["--host", cfg.cpu_addr, "--port", str(cfg.controller_port),
                 "--runtime", runtime_target, "--tools", cfg.tools_target]
    return python_cli(service, "serve", *where, *metrics, *sec.server_flags(service), *otlp)


def relay_argv(cfg: LabConfig) -> list[str]:
    return python_cli("lab", "relay", "--listen", cfg.relay_listen, "--upstream", cfg.runtime_listen,
                      "--delay-ms", str(cfg.delay_ms), "--jitter-ms", str(cfg.jitter_ms))


def wait_healthy(service: str, target: str, cfg: LabConfig, sec: Secrets, watch: list[LabProc],
                 timeout_s: float) -> None:
    """Ask `target`'s health service from inside the CPU host until SERVING; fail early, with the
    log's tail, when a process in `watch` exits first (a bad model path fails in seconds)."""
    argv = exec_argv(cfg.cpu_ns, python_cli("health", target, "--wait", str(timeout_s),
                                            "--service", HEALTH_NAMES[service], *sec.client_flags(token=False)))
    probe = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=host_env(cfg.cpu_ns))
    try:
        while probe.poll() is None:
            dead = next((p for p in watch if not p.running()), None)
            if dead is not None:
                raise LabError(f"{dead.name} in {dead.ns} exited while waiting for {service} "
                               f"(see {dead.log}):\n{dead.log_tail()}")
            time.sleep(0.1)
    finally:
        if probe.poll() is None:
            probe.kill()
        output = probe.communicate()[0] or ""
    if probe.returncode != 0:
        logs = "\n".join(f"--- {p.name} ({p.log})\n{p.log_tail()}" for p in watch)
        raise LabError(f"{service} at {target} not healthy within {timeout_s:.0f}s: {output.strip()}\n{logs}")
