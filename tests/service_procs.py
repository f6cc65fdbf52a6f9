"""Real inloop services as subprocesses, for tests that talk to them over real gRPC.

    srv = ServiceProcess("tools", ["serve", "--port", "0"], log_dir / "tools.jsonl")
    srv.target              # "127.0.0.1:PORT", read from the "inloop ... listening on" line
    srv.logs("tool_call")   # the JSON log lines of one event
    srv.stop()              # SIGTERM, then SIGKILL if it does not stop

Each process runs `python -m inloop.services.cli SERVICE ...` from the repository root, prints its
address on stdout (port 0 picks a free one) and is waited on until the standard health
service says SERVING. Its JSON logs (stderr) go to a file the tests can read.
"""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from inloop.loadgen.stack import read_listen_address, terminate
from inloop.services.common.grpc_client import wait_for_serving

REPO = Path(__file__).resolve().parents[1]


class ServiceProcess:
    def __init__(self, service: str, args: list[str], log_path: Path, start_timeout_s: float = 30.0):
        self.service = service
        self.args = list(args)
        self.log_path = Path(log_path)
        self._log_file = open(self.log_path, "a")
        extra = []
        if self.args[:1] == ["serve"] and "--metrics-port" not in self.args:
            extra = ["--metrics-port", "-1"]  # tests run many services at once: no default-port clashes
        if service == "runtime" and self.args[:1] == ["serve"] and "--http-port" not in self.args:
            extra += ["--http-port", "-1"]  # nor on the HTTP API's 8000
        if service == "tools" and self.args[:1] == ["serve"] and not {"--state-db", "--state-redis"} & set(self.args):
            # Each test's tools keep their kv state in their own file, not in the user's default one.
            extra += ["--state-db", str(self.log_path.with_suffix(".kv.sqlite3"))]
        if service == "runtime" and self.args[:1] == ["serve"] and \
                not {"--tool-state-db", "--tool-state-redis"} & set(self.args):
            extra += ["--tool-state-db", str(self.log_path.with_suffix(".kv.sqlite3"))]  # the same, inside
        cmd = [sys.executable, "-m", "inloop.services.cli", service, *self.args, *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log_file, text=True)
        self.target = self._read_address(start_timeout_s)
        wait_for_serving(self.target, timeout_s=start_timeout_s)

    @property
    def port(self) -> int:
        return int(self.target.rsplit(":", 1)[1])

    def _read_address(self, timeout_s: float) -> str:
        address = read_listen_address(self.proc, timeout_s)
        if not address:
            self.stop()
            raise RuntimeError(f"{self.service} did not start\n{self.log_path.read_text()}")
        return address

    def logs(self, event: str | None = None) -> list[dict]:
        records = []
        for line in self.log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # grpc core may print plain lines
                continue
            if event is None or rec.get("event") == event:
                records.append(rec)
        return records

    def wait_log(self, event: str, timeout_s: float = 5.0, **match) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for rec in self.logs(event):
                if all(rec.get(k) == v for k, v in match.items()):
                    return rec
            time.sleep(0.05)
        raise AssertionError(f"no {event} log with {match}; logs:\n{self.log_path.read_text()}")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send `sig` and wait for the process to end; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        self._log_file.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def stop(self, timeout_s: float = 15.0) -> int:
        code = terminate(self.proc, timeout_s)
        if not self._log_file.closed:
            self._log_file.close()
        return code


def runtime_process(model_dir: Path, log_path: Path, *extra: str) -> ServiceProcess:
    """A runtime on free ports; the HTTP API is off unless `extra` gives --http-port."""
    return ServiceProcess("runtime", ["serve", "--model", str(model_dir), "--backend", "cpu", "--port", "0", *extra],
                          log_path)


def tools_process(log_path: Path, port: int = 0, *extra: str) -> ServiceProcess:
    return ServiceProcess("tools", ["serve", "--port", str(port), *extra], log_path)


def controller_process(runtime: str, tools: str, log_path: Path, *extra: str) -> ServiceProcess:
    return ServiceProcess("controller", ["serve", "--runtime", runtime, "--tools", tools, "--port", "0", *extra],
                          log_path)


@contextlib.contextmanager
def mesh_processes(root: Path, model_dir: Path, *runtime_extra: str):
    """A runtime (numpy, `model_dir`), a tools service and a controller wired to both, on free
    ports, logging into `root`; stopped in reverse order on the way out."""
    procs: list[ServiceProcess] = []
    try:
        procs.append(runtime_process(model_dir, root / "runtime.jsonl", *runtime_extra))
        procs.append(tools_process(root / "tools.jsonl"))
        procs.append(controller_process(procs[0].target, procs[1].target, root / "controller.jsonl"))
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()
