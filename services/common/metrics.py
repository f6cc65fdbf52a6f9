"""Prometheus metrics for every inloop service: the metric objects, the RPC interceptor, the endpoint.

One registry per process (`REGISTRY`), served on the service's metrics port at /metrics:

    start_metrics_server(9101, "127.0.0.1")          # -1 = off, 0 = a free port (logged)
    server = create_server([...], interceptors=[RpcMetricsInterceptor()])
    TOKENS.labels(model, "output").inc(n)

Names follow the OpenTelemetry semantic conventions as an OTLP -> Prometheus translation
writes them (`rpc.server.duration` -> `rpc_server_duration_seconds`, `gen_ai.request.model`
-> `gen_ai_request_model`), so dashboards work the same whether a service is scraped directly
or through a collector. As in those conventions `rpc_grpc_status_code` is the NUMERIC gRPC
status ("0" = OK, "3" = INVALID_ARGUMENT, "14" = UNAVAILABLE, ...).

Every series is registered in every process (one module), but a labelled metric shows
samples only where something observed it: the tools service exports no gen_ai_* samples.
The label-less GPU gauge is registered only once a runtime runs on the cuda backend, so no
process reports a GPU memory it does not have.

Metrics must never break a request: every hook runs through `_safely`, which logs a
failure (once per hook, with its traceback) and returns, and the interceptor records in a
`finally` that cannot raise into the RPC.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import make_server

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from inloop.services.common.logging import get_logger

log = get_logger(__name__)

# Counters and histograms would otherwise also export a `*_created` series each; dashboards
# never use them and they double what Prometheus stores.
prometheus_client.disable_created_metrics()

REGISTRY = CollectorRegistry()
HANDSHAKE_TIMEOUT_S = 10.0  # a metrics connection that has not finished TLS by then is dropped
# CPU, memory, open fds and Python GC of this process, as every Prometheus client exports them.
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)
prometheus_client.GCCollector(registry=REGISTRY)

# ---- buckets (seconds) ----------------------------------------------------------------
# RPCs: a tools call is ~1 ms, a Generate or a whole task up to tens of seconds.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# OpenTelemetry's GenAI advice for gen_ai.server.request.duration.
REQUEST_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# TTFT: GenAI advice, with 0.5 ms and 2.5 ms added for the cuda backend's 2 ms target.
TTFT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                1.0, 2.5, 5.0, 7.5, 10.0)
# Per output token: from the cuda backend's 0.35 ms/token target to a slow CPU's 100+ ms.
TPOT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
                0.2, 0.3, 0.5, 1.0, 2.5)
# One hop call (with its per-try deadline) and a whole agent task (several model steps).
HOP_BUCKETS = RPC_BUCKETS
TASK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

# ---- every service --------------------------------------------------------------------
RPC_LABELS = ("rpc_service", "rpc_method", "rpc_grpc_status_code")
RPC_DURATION = Histogram("rpc_server_duration_seconds", "Server-side duration of a gRPC call, to its final status",
                         RPC_LABELS, buckets=RPC_BUCKETS, registry=REGISTRY)
RPC_REQUESTS = Counter("rpc_server_requests_total", "gRPC calls served, by method and final status",
                       RPC_LABELS, registry=REGISTRY)
QUEUE_DEPTH = Gauge("inloop_queue_depth", "Requests waiting or in flight in this service", ("service",),
                    registry=REGISTRY)
# State a service keeps between calls, so a long run's memory shows before it hurts.
STATE = Gauge("inloop_state", "State kept between calls: kv_bytes and sessions (tools), kv_sessions and "
                              "kv_positions (the runtime's KV session store)", ("service", "what"), registry=REGISTRY)

# ---- runtime --------------------------------------------------------------------------
MODEL_LABEL = ("gen_ai_request_model",)
REQUEST_DURATION = Histogram("gen_ai_server_request_duration_seconds",
                             "Generation request duration, accepted to last token (queue time included)",
                             MODEL_LABEL, buckets=REQUEST_BUCKETS, registry=REGISTRY)
TIME_TO_FIRST_TOKEN = Histogram("gen_ai_server_time_to_first_token_seconds",
                                "Time from accepting a request to its first output token (queue time included)",
                                MODEL_LABEL, buckets=TTFT_BUCKETS, registry=REGISTRY)
TIME_PER_OUTPUT_TOKEN = Histogram("gen_ai_server_time_per_output_token_seconds",
                                  "Mean time per output token after the first, per request",
                                  MODEL_LABEL, buckets=TPOT_BUCKETS, registry=REGISTRY)
TOKENS = Counter("inloop_tokens_total", "Tokens processed: prompt (input) and generated (output)",
                 ("gen_ai_request_model", "gen_ai_token_type"), registry=REGISTRY)
# Registered by enable_gpu_memory() only (a cuda runtime): see the module docstring.
GPU_MEMORY_USED = Gauge("inloop_gpu_memory_used_bytes",
                        "Device memory in use on the runtime's GPU (cuMemGetInfo: total - free)", registry=None)

# ---- tools ----------------------------------------------------------------------------
FAULTS_INJECTED = Counter("inloop_faults_injected_total", "Faults injected into tools calls, by kind",
                          ("fault",), registry=REGISTRY)

# ---- controller (hops) and both routes (tasks) ----------------------------------------
HOP_DURATION = Histogram("inloop_hop_duration_seconds", "One call over a hop (each retry is its own call)",
                         ("hop", "outcome"), buckets=HOP_BUCKETS, registry=REGISTRY)
HOP_RETRIES = Counter("inloop_hop_retries_total", "Calls over a hop beyond the first try", ("hop",),
                      registry=REGISTRY)
TASK_DURATION = Histogram("inloop_task_duration_seconds", "One agent task, start to result",
                          ("route", "outcome"), buckets=TASK_BUCKETS, registry=REGISTRY)
TASKS = Counter("inloop_tasks_total", "Agent tasks finished, by route and error type ('' = ok)",
                ("route", "error_type"), registry=REGISTRY)


# ---- never break a request ----------------------------------------------------------
_failed_hooks: set[str] = set()


def _safely(fn: Callable) -> Callable:
    """Run a metrics hook; an exception is logged (with traceback the first time), never raised."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # a metric must not fail the work it measures
            if fn.__name__ not in _failed_hooks:
                _failed_hooks.add(fn.__name__)
                log.error("metrics_hook_failed", hook=fn.__name__, exc_info=exc)
            else:
                log.debug("metrics_hook_failed", hook=fn.__name__, error=f"{type(exc).__name__}: {exc}")
            return None
    return wrapper


# ---- hooks the services call ------------------------------------------------------------
@_safely
def track_queue_depth(service: str, depth: Callable[[], float]) -> None:
    """Report `depth()` as inloop_queue_depth{service=...}, read at each scrape (never stale)."""
    QUEUE_DEPTH.labels(service).set_function(_guarded(depth))


@_safely
def track_state(service: str, what: str, read: Callable[[], float]) -> None:
    """Report read() as inloop_state{service, what}, read at each scrape."""
    STATE.labels(service, what).set_function(_guarded(read))


def _guarded(depth: Callable[[], float]) -> Callable[[], float]:
    def read() -> float:
        try:
            return float(depth())
        except Exception:  # noqa: BLE001 - a broken reader must not fail the whole scrape
            return float("nan")
    return read


class BatchingCollector:
    """The batching core's state, read at each scrape, under vLLM's metric names with our
    prefix: num_requests_running/waiting, kv_cache_usage_perc, prefix_cache_queries/hits
    (tokens), num_preemptions, and the KV blocks by state (used, free, pinned)."""

    def __init__(self, counts: Callable[[], dict], queued: Callable[[], int]):
        self.counts, self.queued = counts, queued

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        try:
            c, queued = self.counts(), self.queued()
        except Exception:  # noqa: BLE001 - a broken reader must not fail the whole scrape
            return
        total = c["blocks_used"] + c["blocks_free"]
        yield GaugeMetricFamily("inloop_num_requests_running", "Sequences in the running batch",
                                value=c["running"])
        yield GaugeMetricFamily("inloop_num_requests_waiting", "Requests waiting to join the batch (queued, "
                                "or admitted and waiting for KV blocks)", value=c["waiting"] + queued)
        yield GaugeMetricFamily("inloop_kv_cache_usage_perc", "Fraction of KV blocks held (1 = full)",
                                value=c["blocks_used"] / total if total else 0.0)
        blocks = GaugeMetricFamily("inloop_kv_cache_blocks", "KV blocks by state", labels=("state",))
        for state in ("used", "free", "pinned"):
            blocks.add_metric((state,), c[f"blocks_{state}"] if state != "pinned" else c["pinned_blocks"])
        yield blocks
        yield CounterMetricFamily("inloop_prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                  value=c["prefix_cache_queries"])
        yield CounterMetricFamily("inloop_prefix_cache_hits", "Prompt tokens found in the prefix cache "
                                  "(their prefill skipped)", value=c["prefix_cache_hits"])
        yield CounterMetricFamily("inloop_num_preemptions", "Sequences preempted for want of KV blocks "
                                  "(recomputed later)", value=c["preemptions"])


_batching: BatchingCollector | None = None


@_safely
def track_batching(counts: Callable[[], dict], queued: Callable[[], int]) -> None:
    """Export the batching core's counts (engine/core.py EngineCore.counts); the last engine wins."""
    global _batching
    if _batching is not None:
        REGISTRY.unregister(_batching)
    _batching = BatchingCollector(counts, queued)
    REGISTRY.register(_batching)


@_safely
def observe_generation(model: str, submitted_at: float, result: Any, now: float | None = None) -> None:
    """Per generation request: duration, TTFT, time per output token, tokens in and out.

    `submitted_at` is the time.monotonic() at which the request was accepted; `result` is a
    GenerateResult whose timings.ttft_ms already counts the queue time.
    """
    now = time.monotonic() if now is None else now
    e2e_s = max(now - submitted_at, 0.0)
    REQUEST_DURATION.labels(model).observe(e2e_s)
    TOKENS.labels(model, "input").inc(result.prompt_tokens)
    TOKENS.labels(model, "output").inc(result.completion_tokens)
    if result.completion_tokens >= 1:
        ttft_s = result.timings.ttft_ms / 1e3
        TIME_TO_FIRST_TOKEN.labels(model).observe(ttft_s)
        if result.completion_tokens >= 2:  # vLLM's TPOT: (e2e - ttft) / (output tokens - 1)
            TIME_PER_OUTPUT_TOKEN.labels(model).observe(max(e2e_s - ttft_s, 0.0) / (result.completion_tokens - 1))


_gpu_registered = False


def enable_gpu_memory() -> None:
    """Register inloop_gpu_memory_used_bytes (idempotent); only a cuda runtime calls this."""
    global _gpu_registered
    if not _gpu_registered:
        REGISTRY.register(GPU_MEMORY_USED)
        _gpu_registered = True


@_safely
def observe_gpu_memory(engine: Any) -> None:
    """Set the GPU memory gauge when `engine` runs on the cuda backend; a no-op otherwise.

    Call it on the thread that owns the engine: the driver call needs the device's context,
    which that thread already has current.
    """
    backend = getattr(getattr(engine, "model", None), "backend", None)
    if getattr(backend, "name", "") != "cuda":
        return
    free, total = backend.device.memory_info()
    enable_gpu_memory()
    GPU_MEMORY_USED.set(total - free)


@_safely
def observe_fault(kind: str) -> None:
    """One injected fault: kind is "abort" or "delay"."""
    FAULTS_INJECTED.labels(kind).inc()


@_safely
def observe_hop_call(hop: str, seconds: float, ok: bool, retry: bool) -> None:
    """One call over a hop ("runtime" | "tools"); `retry` when it was not the first try."""
    HOP_DURATION.labels(hop, "ok" if ok else "error").observe(seconds)
    if retry:
        HOP_RETRIES.labels(hop).inc()


@_safely
def observe_task(route: str, seconds: float, error_type: str) -> None:
    """One finished agent task on `route` ("internal" | "external"); error_type "" = ok."""
    TASK_DURATION.labels(route, "error" if error_type else "ok").observe(seconds)
    TASKS.labels(route, error_type or "").inc()


# ---- the endpoint -----------------------------------------------------------------------
def start_metrics_server(port: int | None, host: str = "127.0.0.1", tls: tuple[str, str, str] | None = None) -> int | None:
    """Serve REGISTRY at http(s)://host:port/metrics on a daemon thread; returns the bound port.

    port < 0 or None: metrics off (returns None). port 0: a free port. The bound address is
    logged as `metrics_listening` (the JSON log line tests and operators read the port from).
    A port that cannot be bound is logged as `metrics_bind_failed` and the service runs
    without metrics: losing the scrape endpoint must not take the service down with it.
    `tls` = (cert, key, ca) files: a service that speaks mTLS on gRPC serves its metrics over
    HTTPS and requires the scraper's certificate from the same CA, so nothing it serves to
    other hosts is plaintext unless plaintext was asked for.
    """
    if port is None or port < 0:
        log.info("metrics_disabled")
        return None
    try:
        httpd = _serve_metrics(host, port, tls)
    except OSError as exc:
        log.error("metrics_bind_failed", host=host, port=port, error=str(exc))
        return None
    bound = httpd.server_address[1]
    log.info("metrics_listening", address=f"{_url_host(host)}:{bound}", host=host, port=bound, path="/metrics",
             scheme="https" if tls else "http")
    return bound


class _TLSPerConnection(ThreadingWSGIServer):
    """HTTPS whose handshake runs in each connection's own thread, under a timeout.
    prometheus_client wraps the listening socket instead, so the handshake ran inside
    accept(): one idle TCP connection that never sent a ClientHello blocked every scrape."""

    context: ssl.SSLContext

    def finish_request(self, request, client_address):
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):  # a silent or non-TLS peer: drop it, keep serving
            return
        super().finish_request(tls, client_address)

    def handle_error(self, request, client_address):  # a scraper that went away mid-reply
        pass


def _serve_metrics(host: str, port: int, tls: tuple[str, str, str] | None):
    """The /metrics app on a daemon thread, one thread per connection."""
    server_class: type = ThreadingWSGIServer
    if tls is not None:
        cert, key, ca = tls
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(cert, key)
        server_class = type("MetricsTLSServer", (_TLSPerConnection,), {"context": context})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("MetricsServer", (server_class,), {"address_family": family})
    httpd = make_server(host, port, make_wsgi_app(REGISTRY), server_class, handler_class=_SilentHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd


def metrics_tls(args) -> tuple[str, str, str] | None:
    """The serve options' TLS files, when all three are set (else None: plain HTTP)."""
    files = tuple(getattr(args, k, None) for k in ("tls_cert", "tls_key", "tls_ca"))
    return files if all(files) else None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ---- the RPC interceptor ----------------------------------------------------------------
UNMEASURED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def split_method(path: str) -> tuple[str, str]:
    """'/inloop.v1.Tools/Call' -> ('inloop.v1.Tools', 'Call')."""
    service, _, method = path.lstrip("/").rpartition("/")
    return service, method


def _final_code(context: Any, exc: BaseException | None) -> int:
    """The numeric status the client sees, from the handler's exit and what it set on the context."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return (grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED).value[0]
    code = context.code()  # set by context.abort() or set_code(); None when untouched
    if code is not None:
        return code.value[0] if isinstance(code, grpc.StatusCode) else int(code)
    if exc is not None:  # an unhandled exception: grpc answers UNKNOWN
        return grpc.StatusCode.UNKNOWN.value[0]
    return grpc.StatusCode.OK.value[0]


@_safely
def _record(service: str, method: str, code: int, started: float) -> None:
    labels = (service, method, str(code))
    RPC_DURATION.labels(*labels).observe(time.perf_counter() - started)
    RPC_REQUESTS.labels(*labels).inc()


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC but health and reflection, by method and final status.

    Works for all four call shapes; for streaming responses the duration runs to the last
    message (or the cancel). Aborted calls count under their abort status, cancelled ones
    as CANCELLED (DEADLINE_EXCEEDED when the deadline passed), unhandled errors as UNKNOWN.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        path = handler_call_details.method
        if handler is None or path.startswith(UNMEASURED_PREFIXES):
            return handler
        service, method = split_method(path)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _timed_call(handler.unary_unary, service, method), handler.request_deserializer,
                handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _timed_stream(handler.unary_stream, service, method), handler.request_deserializer,
                handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _timed_call(handler.stream_unary, service, method), handler.request_deserializer,
                handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            _timed_stream(handler.stream_stream, service, method), handler.request_deserializer,
            handler.response_serializer)


def _timed_call(behavior, service: str, method: str):
    """Wrap a handler that returns one response."""
    async def call(request_or_iterator, context):
        started, error = time.perf_counter(), None
        try:
            return await behavior(request_or_iterator, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _record(service, method, _safe_code(context, error), started)
    return call


def _timed_stream(behavior, service: str, method: str):
    """Wrap a handler that streams responses: an async generator, or a coroutine using context.write."""
    async def stream(request_or_iterator, context):
        started, error = time.perf_counter(), None
        try:
            produced = behavior(request_or_iterator, context)
            if inspect.isasyncgen(produced):
                async for response in produced:
                    yield response
            else:
                await produced
        except BaseException as exc:
            error = exc
            raise
        finally:
            _record(service, method, _safe_code(context, error), started)
    return stream


def _safe_code(context: Any, exc: BaseException | None) -> int:
    try:
        return _final_code(context, exc)
    except Exception:  # noqa: BLE001 - an odd context must not turn into a failed RPC
        return grpc.StatusCode.UNKNOWN.value[0]
