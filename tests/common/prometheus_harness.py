"""A real Prometheus server for tests: scrape running inloop services, then ask its HTTP API.

    prom = Prometheus.start({"tools": "127.0.0.1:9102"}, tmp_dir)   # 1 s scrape interval
    prom.wait_until_scraped(["tools"])          # every target up, first scrape stored
    prom.value('sum(inloop_faults_injected_total{fault="abort"})')   # -> 2.0 (None: no series)
    prom.metric_names()                         # every __name__ Prometheus stored
    prom.stop()

It runs the `prometheus` binary of the Debian package (scripts/system-packages.txt) with its
storage in the temp dir and its API on a free loopback port; queries go through the
standard /api/v1/query and /api/v1/label/__name__/values endpoints with urllib, so the
test sees exactly what a Grafana dashboard would.
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

SCRAPE_INTERVAL_S = 1
BINARY = "prometheus"


def prometheus_binary() -> str:
    """The prometheus binary's path; the error names the package and the installer."""
    path = shutil.which(BINARY)
    if path is None:
        raise FileNotFoundError("the `prometheus` binary is not installed: it is Debian package `prometheus`, "
                                "listed in scripts/system-packages.txt (bash scripts/system_packages.sh)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_config(targets: dict[str, str]) -> str:
    """prometheus.yml scraping each job's one target every SCRAPE_INTERVAL_S, path /metrics."""
    lines = ["global:", f"  scrape_interval: {SCRAPE_INTERVAL_S}s", f"  scrape_timeout: {SCRAPE_INTERVAL_S}s",
             "scrape_configs:"]
    for job, target in targets.items():
        lines += [f"  - job_name: {json.dumps(job)}", "    metrics_path: /metrics",
                  "    static_configs:", f"      - targets: [{json.dumps(target)}]"]
    return "\n".join(lines) + "\n"


class Prometheus:
    def __init__(self, proc: subprocess.Popen, base_url: str, log_path: Path, jobs: tuple[str, ...]):
        self.proc, self.base_url, self.log_path, self.jobs = proc, base_url, log_path, jobs

    @classmethod
    def start(cls, targets: dict[str, str], workdir: Path, timeout_s: float = 30.0) -> Prometheus:
        """Write the config, start the server, and wait until its API answers."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(scrape_config(targets))
        port = free_port()
        log_path = workdir / "prometheus.log"
        cmd = [prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        prom = cls(proc, f"http://127.0.0.1:{port}", log_path, tuple(targets))
        try:
            prom._wait_ready(timeout_s)
        except BaseException:
            prom.stop()
            raise
        return prom

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout_s:.0f} s:\n{self.log_path.read_text()}")

    # ---- the HTTP API ---------------------------------------------------------------
    def _get(self, path: str, **params) -> dict:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus API {path} {params}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        """An instant query's vector: [{"metric": {labels}, "value": [ts, "text"]}, ...]."""
        data = self._get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", f"{promql!r} is not a vector query"
        return data["result"]

    def value(self, promql: str) -> float | None:
        """The single value of `promql` (wrap it in sum() etc.), or None when it has no series."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, f"{promql!r} returned {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def metric_names(self) -> set[str]:
        """Every metric name Prometheus has stored (histograms as their _bucket/_sum/_count)."""
        return set(self._get("/api/v1/label/__name__/values"))

    def wait_until_scraped(self, jobs=None, timeout_s: float = 30.0) -> None:
        """Wait until each job's target is up and has been scraped at least once."""
        jobs = tuple(jobs or self.jobs)
        deadline = time.monotonic() + timeout_s
        up: dict[str, float] = {}
        while time.monotonic() < deadline:
            up = {r["metric"]["job"]: float(r["value"][1]) for r in self.query("up")}
            if all(up.get(job) == 1.0 for job in jobs):
                return
            time.sleep(0.25)
        targets = self._get("/api/v1/targets")
        raise TimeoutError(f"targets not all up after {timeout_s:.0f} s: up={up}\n{json.dumps(targets)[:2000]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
