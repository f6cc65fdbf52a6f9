"""Every `inloop SERVICE serve` setting of every service, declared once (common/settings.py).

A service's CLI builds its flags from its list here, and a config file is checked against all
of them: a service table holds that service's keys, [common] any service's (one file for a
whole host). Precedence: flag > env INLOOP_<KEY> > TOML [service] > TOML [common] > default.
"""
from __future__ import annotations

from inloop.services.common.settings import Scope, Setting

SERVICES = ("runtime", "tools", "controller")
COMMON_TABLE = "common"
PORTS = {"runtime": (50051, 9101), "tools": (50061, 9102), "controller": (50071, 9103)}  # gRPC, metrics
# (the runtime's HTTP API: 8000, vLLM's default)
# Who calls whom: the loadgen drives both routes, the controller calls the runtime and the tools.
CALLERS = {"runtime": ("controller", "loadgen"), "tools": ("controller", "loadgen"), "controller": ("loadgen",)}
SECURITY = ("security\nmTLS with all three TLS files (from `inloop certs dev`); a bearer token with "
            "--token-file")


def common(service: str) -> list[Setting]:
    """Host, port, logging, shutdown, TLS, token, tracing and metrics: what every service has."""
    port, metrics_port = PORTS[service]
    return [
        Setting("config", None, f"TOML file with [{service}] and [common] tables", metavar="FILE"),
        Setting("host", "127.0.0.1", "address to bind; a non-loopback one needs TLS files or --plaintext"),
        Setting("port", port, "gRPC port; 0 picks a free one (printed)", type=int),
        Setting("log_level", "info", "", choices=("debug", "info", "warning", "error")),
        Setting("grace_s", 5.0, "on SIGTERM, seconds running calls get to finish", type=float),
        Setting("tls_cert", None, "this service's certificate", metavar="PEM", group=SECURITY),
        Setting("tls_key", None, "its private key", metavar="PEM", group=SECURITY),
        Setting("tls_ca", None, "CA that client certificates must chain to (and that peers' certificates do)",
                metavar="PEM", group=SECURITY),
        Setting("plaintext", False, "explicitly allow no TLS on a non-loopback address", type=bool,
                negatable=True, group=SECURITY),
        Setting("token_file", None, "every RPC but Health must send 'authorization: Bearer <token in FILE>'",
                metavar="FILE", group=SECURITY),
        Setting("allow_peer", CALLERS[service], "with mTLS, a client certificate's common name that may call "
                                                "(repeatable; `inloop certs dev` names them)", type=list,
                metavar="NAME", group=SECURITY),
        Setting("otlp_endpoint", "", "OTLP/gRPC trace collector, e.g. http://127.0.0.1:4317 "
                                     "(also OTEL_EXPORTER_OTLP_ENDPOINT)", metavar="URL",
                env_also=("OTEL_EXPORTER_OTLP_ENDPOINT",)),
        Setting("metrics_port", metrics_port, "Prometheus /metrics port (bound on --host; HTTPS with the TLS "
                                              "files); 0 picks a free one, logged as metrics_listening; -1 = no "
                                              "metrics", type=int),
    ]


RUNTIME = [
    Setting("model", "default", "'default', an HF-layout model directory, a .gguf file, or a Hub id "
            "ORG/NAME[@REVISION] (through the HF cache; HF_TOKEN, HF_HUB_OFFLINE)"),
    Setting("backend", "auto", "cuda needs a GPU; auto picks cuda where one answers, else cpu",
            choices=("cpu", "cuda", "auto")),
    Setting("enable_prefix_caching", True, "automatic prefix caching (as vLLM v1's): a full KV block is kept "
                                           "under the hash of its tokens, and a later prompt that starts with "
                                           "the same tokens skips their prefill", type=bool, negatable=True),
    Setting("prefix_cache", None, "the older name of --enable-prefix-caching (wins where given)", type=bool,
            negatable=True),
    Setting("max_queue", 16, "requests that may wait to join the running batch; more get RESOURCE_EXHAUSTED "
                             "(HTTP 429)", type=int),
    Setting("batching", "auto", "auto: continuous batching on cpu (and for Qwen3.5 on cuda), one request at a "
                                "time through CUDA graphs for a dense model on cuda (the lowest latency for one "
                                "agent); on: continuous batching on cuda too (fused kernels, a CUDA graph per "
                                "batch size for decode steps, each row batch invariant); off: one request at a time",
            choices=("auto", "on", "off")),
    Setting("max_num_seqs", 32, "sequences in the running batch at once (continuous batching)", type=int),
    Setting("max_num_batched_tokens", 512, "tokens one engine step runs, decode rows and prefill chunks "
                                           "together; a longer prompt is prefilled in chunks", type=int),
    Setting("block_size", 16, "positions per KV cache block (the unit of paging and of prefix caching)", type=int),
    Setting("kv_cache_memory", "2GiB", "memory of the KV block pool, bytes or with a unit (512MiB, 2GiB, 1.5GB); "
                                       "a hybrid model's (Qwen3.5) linear-attention states, 2 per --max-num-seqs, "
                                       "come out of it", metavar="SIZE"),
    Setting("max_model_len", 8192, "the longest sequence (prompt plus output) served, in tokens; capped by the "
                                   "model's own and by what the KV pool holds", type=int),
    Setting("http_port", 8000, "OpenAI-compatible HTTP API port (/v1/chat/completions, ...); 0 picks a free one "
                               "(printed); -1 = no HTTP API", type=int),
    Setting("served_model_name", "", "the model name the HTTP API answers to (default: the model directory's "
                                     "name)"),
    Setting("kv_session_ttl_s", 600.0, "seconds a kept KV cache (a task's session, a prefix-cache entry) may "
                                       "sit unused before it is freed", type=float),
    Setting("tool_state_db", "", "SQLite file (WAL) holding the internal route's kv values and idempotency "
                                 "records, so a restart loses nothing (default: $STATE_DIRECTORY/kv.sqlite3 under "
                                 "systemd, else ~/.local/state/inloop/runtime/kv.sqlite3); ':memory:' keeps them in "
                                 "the process", metavar="PATH"),
    Setting("tool_state_redis", "", "Redis URL holding the internal route's kv state instead, shared by every "
                                    "runtime replica that names it (use another database than the tools "
                                    "service's, e.g. /1, so the two routes' records stay apart); overrides "
                                    "--tool-state-db", metavar="URL"),
]

TOOLS = [
    Setting("max_concurrency", 64, "calls in progress at once; more get RESOURCE_EXHAUSTED", type=int),
    Setting("fault_abort", None, 'default abort fault, e.g. "every=2;status=UNAVAILABLE" or '
                                 '"percent=10;seed=7;status=INTERNAL" ("off" = none)', metavar="SPEC"),
    Setting("fault_delay", None, 'default delay fault, e.g. "every=3;ms=900" or "percent=25;seed=1;ms=200"',
            metavar="SPEC"),
    Setting("fault_key", None, "default fault counter key (default '')"),
    Setting("fault_config", None, "default faults as JSON ({key, abort, delay}); the flags above override it",
            metavar="FILE"),
    Setting("corpus", None, "search corpus, JSON lines {id, title, text}"),
    Setting("max_sessions", 1024, "kv namespaces kept; the least recently used is evicted beyond this", type=int),
    Setting("state_db", "", "SQLite file (WAL) holding the kv values and idempotency records, so a restart "
                            "loses nothing (default: $STATE_DIRECTORY/kv.sqlite3 under systemd, else "
                            "~/.local/state/inloop/tools/kv.sqlite3); ':memory:' keeps them in the process",
            metavar="PATH"),
    Setting("state_redis", "", "Redis URL (redis://HOST:6379/0, rediss:// for TLS) holding the kv state instead, "
                               "shared by every tools replica that names it; overrides --state-db", metavar="URL"),
]

CONTROLLER = [
    Setting("runtime", "127.0.0.1:50051", "the runtime's host:port"),
    Setting("tools", "127.0.0.1:50061", "the tools service's host:port"),
    Setting("max_concurrency", 64, "tasks at once; more get RESOURCE_EXHAUSTED", type=int),
    Setting("model_endpoint", "", "where model steps go: grpc://HOST:PORT (our runtime's gRPC API; default: "
                                  "--runtime) or http(s)://HOST:PORT/v1 (any OpenAI-compatible server)",
            metavar="URL"),
    Setting("model_endpoint_model", "", "the model name to send an OpenAI upstream (default: its /v1/models' first)"),
    Setting("model_endpoint_key_file", None, "a file holding the OpenAI upstream's API key (sent as a bearer token)",
            metavar="FILE"),
]

OWN = {"runtime": RUNTIME, "tools": TOOLS, "controller": CONTROLLER}


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str | int) -> int:
    """Bytes from "2GiB", "512MiB", "1.5GB", "1073741824" (k/m/g alone are binary, as vLLM's)."""
    s = str(text).strip().lower().replace(" ", "")
    number = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(number):]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise ValueError(f"{text!r} is not a size: give bytes or a number with B, KB, MB, GB, KiB, MiB, GiB, "
                         "TiB (e.g. 2GiB)") from None
    if value < 1:
        raise ValueError(f"{text!r}: a size must be at least one byte")
    return int(value)


def serve_settings(service: str) -> list[Setting]:
    """Every setting of `inloop SERVICE serve`, in --help order."""
    if service not in OWN:
        raise ValueError(f"unknown service {service!r}")
    return common(service) + OWN[service]


def keys(service: str) -> frozenset[str]:
    return frozenset(s.key for s in serve_settings(service)) - {"config"}  # a file cannot name another file


def serve_scope(service: str) -> Scope:
    """[service] over [common]; a service table holds its own keys, [common] any service's."""
    own = {s: keys(s) for s in SERVICES}
    known = {COMMON_TABLE: frozenset().union(*own.values()), **own}
    return Scope(service, tables=(service, COMMON_TABLE), known=known)
