"""Start the three services on this host for a loadgen run, pointed at the loadgen's OTLP receiver.

    with LocalStack(model="default", backend="cpu", log_dir=out / "logs",
                    otlp_endpoint=receiver.endpoint) as stack:
        stack.runtime, stack.controller        # "127.0.0.1:PORT" targets

Each service is `python -m inloop.services.cli SERVICE serve --port 0 ...`; it prints
"... listening on HOST:PORT" on stdout and is then polled through grpc.health.v1 until
SERVING. Its JSON logs go to `log_dir/<service>.jsonl`, and a failed start quotes their
tail. Stop sends SIGTERM (the services drain and flush their last spans) and reports any
service that did not exit cleanly. Against services that already run elsewhere, the loadgen
takes their addresses instead (`--runtime`, `--controller`) and starts nothing.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from inloop.services.common.grpc_client import wait_for_serving

_REPO = Path(__file__).resolve().parents[1]


class StackError(RuntimeError):
    pass


def read_listen_address(proc: subprocess.Popen, timeout_s: float) -> str:
    """The HOST:PORT from a service's first stdout line ("inloop ... listening on HOST:PORT"),
    or "" when it printed something else, exited, or said nothing within `timeout_s`."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout_s)
    except queue.Empty:
        return ""
    return line.rsplit(" ", 1)[-1].strip() if "listening on" in line else ""


def terminate(proc: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM (a service drains and flushes its spans), SIGKILL if it has not exited within
    `timeout_s`; closes its stdout pipe. Returns the exit code (0 = a clean stop)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None and not proc.stdout.closed:
        proc.stdout.close()
    return proc.returncode


class ServiceProc:
    """One service as a child process; `target` is its address once started."""

    def __init__(self, service: str, args: list[str], log_path: Path, env: dict[str, str]):
        self.service, self.log_path = service, Path(log_path)
        # Free ports for gRPC and metrics: several stacks (and tests) may run on one host.
        self.cmd = [sys.executable, "-m", "inloop.services.cli", service, "serve", "--port", "0",
                    "--metrics-port", "0", *args]
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.cmd, cwd=_REPO, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, text=True, env={**os.environ, **env})
        self.target = ""

    def wait_started(self, timeout_s: float) -> None:
        self.target = read_listen_address(self.proc, timeout_s)
        if not self.target:
            code = self.stop()
            raise StackError(f"{self.service} did not start (exit code {code})\n{self.log_tail()}")
        try:
            wait_for_serving(self.target, timeout_s=timeout_s)
        except TimeoutError as exc:
            self.stop()
            raise StackError(f"{self.service}: {exc}\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        code = terminate(self.proc, timeout_s)
        self._log.close()
        return code


class LocalStack:
    """runtime, tools and controller on loopback, exporting spans to `otlp_endpoint`."""

    def __init__(self, model: str, backend: str, log_dir: Path, otlp_endpoint: str = "",
                 host: str = "127.0.0.1", start_timeout_s: float = 300.0, max_queue: int = 64,
                 runtime_args: tuple[str, ...] = ()):
        self.model, self.backend, self.host = model, backend, host
        self.log_dir = Path(log_dir)
        self.start_timeout_s = start_timeout_s
        self.max_queue = max_queue
        self.runtime_args = tuple(runtime_args)
        # A short batch delay: the report waits for each sampled trace's last spans.
        self.env = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
        if otlp_endpoint:
            self.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
        self.procs: dict[str, ServiceProc] = {}

    def start(self) -> "LocalStack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            # Spawn runtime and tools together (the runtime's model load is the slow part).
            self._spawn("runtime", ["--model", self.model, "--backend", self.backend, "--host", self.host,
                                    "--max-queue", str(self.max_queue), "--http-port", "0",
                                    "--tool-state-db", str(self.log_dir / "runtime-kv.sqlite3"), *self.runtime_args])
            # The run's kv state in its own file beside the logs, not in the user's default store.
            self._spawn("tools", ["--host", self.host, "--state-db", str(self.log_dir / "tools-kv.sqlite3")])
            for name in ("runtime", "tools"):
                self.procs[name].wait_started(self.start_timeout_s)
            self._spawn("controller", ["--host", self.host, "--runtime", self.runtime, "--tools", self.tools])
            self.procs["controller"].wait_started(self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, service: str, args: list[str]) -> None:
        self.procs[service] = ServiceProc(service, args, self.log_dir / f"{service}.jsonl", self.env)

    @property
    def runtime(self) -> str:
        return self.procs["runtime"].target

    @property
    def tools(self) -> str:
        return self.procs["tools"].target

    @property
    def controller(self) -> str:
        return self.procs["controller"].target

    def stop(self) -> dict[str, int | None]:
        """Controller first (it holds channels to the others); returns each exit code."""
        codes = {}
        for name in ("controller", "tools", "runtime"):
            if name in self.procs:
                codes[name] = self.procs[name].stop()
        self.procs.clear()
        return codes

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
