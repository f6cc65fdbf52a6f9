"""Start `inloop runtime serve` as a child process and time it until it is healthy.

    rt = RuntimeLauncher(model="default", backend="cpu").start()   # spawns, reads the port
    start_to_healthy_ms = await rt.wait_healthy(channel)            # polls grpc.health.v1
    code = rt.stop()                                                # SIGTERM; 0 = clean stop

The runtime prints "inloop runtime listening on HOST:PORT" on stdout as soon as it
listens (port 0 picks a free one), then loads the model while its health service answers
NOT_SERVING; SERVING means the model is loaded. `spawned_at` is taken right before the
fork, so start -> healthy includes interpreter start, imports and the model load, which is
what a user waiting for a fresh runtime sees. Its JSON logs (stderr) go to a file whose
tail is quoted in every error, so a failed start says why.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inloop.loadgen.stack import read_listen_address, terminate

_REPO = Path(__file__).resolve().parents[1]


class RuntimeLaunchError(RuntimeError):
    """The runtime did not start, did not become healthy, or died on the way."""


class RuntimeLauncher:
    def __init__(self, model: str, backend: str = "auto", host: str = "127.0.0.1",
                 log_path: str | Path | None = None, extra_args: list[str] | None = None):
        self.cmd = [sys.executable, "-m", "inloop.services.cli", "runtime", "serve", "--model", str(model),
                    "--backend", backend, "--host", host, "--port", "0", "--metrics-port", "0", "--http-port", "0",
                    *(extra_args or [])]
        self._own_log = log_path is None
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="inloop-runtime-", suffix=".jsonl")
            os.close(fd)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.target = ""
        self.spawned_at = 0.0   # time.perf_counter() right before the spawn

    # ---- start ------------------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> RuntimeLauncher:
        """Spawn the runtime and read its address; raises RuntimeLaunchError on failure."""
        self._log = open(self.log_path, "a")  # noqa: SIM115 -- the child writes to it until stop() closes it
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=_REPO, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, text=True)
        self.target = read_listen_address(self.proc, timeout_s)
        if not self.target:
            code = self.stop()
            raise RuntimeLaunchError(f"runtime did not start listening within {timeout_s:.0f}s "
                                     f"(exit code {code})\n{self.log_tail()}")
        return self

    async def wait_healthy(self, channel, timeout_s: float = 300.0, poll_s: float = 0.01) -> float:
        """Poll grpc.health.v1 on `channel` (an aio channel to self.target) until SERVING.

        Returns milliseconds from the spawn to the SERVING reply. Each probe has its own
        short deadline; the child exiting (e.g. a model that fails to load) ends the wait
        at once instead of after `timeout_s`. `poll_s` bounds the timing's resolution.
        """
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeLaunchError(f"runtime exited with code {code} before it was healthy "
                                         f"(last health: {last})\n{self.log_tail()}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return (time.perf_counter() - self.spawned_at) * 1e3
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(poll_s)
        raise RuntimeLaunchError(f"runtime at {self.target} not SERVING after {timeout_s:.0f}s "
                                 f"(last health: {last})\n{self.log_tail()}")

    # ---- stop -------------------------------------------------------------------------
    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code
        (0 for the runtime's graceful stop; -9 when it had to be killed)."""
        if self.proc is None:
            return None
        code = terminate(self.proc, timeout_s)
        if not self._log.closed:
            self._log.close()
        return code

    def cleanup(self) -> None:
        """Remove the log file when it was a temporary one (call after a successful run)."""
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no runtime log)"
        return f"runtime log ({self.log_path}), last lines:\n" + "\n".join(text[-lines:])
