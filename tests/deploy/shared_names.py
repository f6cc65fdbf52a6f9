"""The names the deploy files must agree on, as the lead fixed them for every service.

Services, ports, health service names, configuration keys and Prometheus metric names are
shared between the services (which implement them) and deploy/ (which only refers to them).
The deploy tests check every reference in deploy/ against this one list, so a typo in a unit,
an env file, the compose file, a manifest or a dashboard query fails a test instead of a
deployment. When the lead changes a shared name, this file and deploy/ change together.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inloop.services.common.serve_settings import OWN, common

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

INSTALL_BIN = "/opt/inloop/.venv/bin/inloop"   # where the systemd units and images install inloop
ETC = "/etc/inloop"                            # config, env files and the bearer token
TLS_DIR = "/etc/inloop/tls"                    # ca.crt and <name>.crt / <name>.key


@dataclass(frozen=True)
class Service:
    name: str            # runtime | tools | controller (also the compose/k8s service name)
    port: int            # default gRPC port
    metrics_port: int    # default Prometheus port, path /metrics
    health: str          # the grpc.health.v1 service name besides ""
    http_port: int | None = None  # the OpenAI-compatible HTTP API (the runtime's)

    @property
    def keys(self) -> frozenset[str]:
        """Configuration keys beyond COMMON_KEYS: the service's own settings, as declared once."""
        return frozenset(s.key for s in OWN[self.name])

    @property
    def unit(self) -> str:
        return f"inloop-{self.name}.service"


COMMON_KEYS = frozenset(s.key for s in common("runtime")) - {"config"}

SERVICES = {
    s.name: s for s in (
        Service("runtime", 50051, 9101, "inloop.v1.Runtime", http_port=8000),
        Service("tools", 50061, 9102, "inloop.v1.Tools"),
        Service("controller", 50071, 9103, "inloop.v1.Controller"),
    )
}

# Environment variables the deploy files may set besides INLOOP_<KEY>: the model/cubin cache
# directory (services/runtime/model/default_model.py), the TOML file, and OpenTelemetry's own.
EXTRA_ENV = frozenset({"INLOOP_CACHE", "INLOOP_CONFIG"})
EXTRA_ENV_PREFIXES = ("OTEL_",)

# Prometheus metric name -> type. A histogram is queried through its _bucket/_sum/_count series.
METRICS = {
    "rpc_server_duration_seconds": "histogram",
    "rpc_server_requests_total": "counter",
    "inloop_queue_depth": "gauge",
    "gen_ai_server_request_duration_seconds": "histogram",
    "gen_ai_server_time_to_first_token_seconds": "histogram",
    "gen_ai_server_time_per_output_token_seconds": "histogram",
    "inloop_tokens_total": "counter",
    "inloop_faults_injected_total": "counter",
    "inloop_hop_duration_seconds": "histogram",
    "inloop_hop_retries_total": "counter",
    "inloop_task_duration_seconds": "histogram",
    "inloop_tasks_total": "counter",
    "inloop_gpu_memory_used_bytes": "gauge",
    # the batching core (vLLM's names under our prefix)
    "inloop_num_requests_running": "gauge",
    "inloop_num_requests_waiting": "gauge",
    "inloop_kv_cache_usage_perc": "gauge",
    "inloop_kv_cache_blocks": "gauge",
    "inloop_prefix_cache_queries_total": "counter",
    "inloop_prefix_cache_hits_total": "counter",
    "inloop_num_preemptions_total": "counter",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_family(series: str) -> str | None:
    """The shared metric a series name belongs to (histograms via their suffixes), else None."""
    if series in METRICS:
        return series
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and METRICS.get(base) == "histogram":
            return base
    return None


def allowed_keys(service: str) -> frozenset[str]:
    return COMMON_KEYS | SERVICES[service].keys


def env_name(key: str) -> str:
    """The variable a config key is read from: --foo-bar / foo_bar -> INLOOP_FOO_BAR."""
    return "INLOOP_" + key.upper()


def unknown_env(service: str, names) -> list[str]:
    """Of the variable names given, those that are neither a config key of `service` nor allowed extras."""
    known = {env_name(k) for k in allowed_keys(service)} | EXTRA_ENV
    return sorted(n for n in names if n not in known and not n.startswith(EXTRA_ENV_PREFIXES))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a systemd EnvironmentFile (comments and blank lines skipped)."""
    env = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip() == key and key, f"{path.name}:{number}: not KEY=VALUE: {line!r}"
        assert key not in env, f"{path.name}:{number}: {key} set twice"
        env[key] = value
    return env
