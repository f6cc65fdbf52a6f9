"""The loadgen's own OTLP/gRPC trace receiver: every span of a run, from every host, in memory.

    store = SpanStore()
    receiver = OtlpReceiver(store).start("127.0.0.1", 0)   # services export here
    setup_tracing("inloop-loadgen", (StoreProcessor(store),))   # and the loadgen's own spans
    ...
    spans = store.wait_for_trace(trace_id, services={"inloop-controller", ...}, timeout_s=5)

It speaks the OpenTelemetry collector protocol (`TraceService/Export` from opentelemetry-proto),
so services point `OTEL_EXPORTER_OTLP_ENDPOINT` at it exactly as they would at a collector;
against an existing deployment a collector can fan out to it. Spans are kept as plain dicts
(the report's `traces` format): trace_id, span_id, parent_span_id, name, service, host, kind,
start_ns, end_ns, status, attributes. `host` is the resource's `host.name` ("" when the
exporter sets none): in the two-host lab it says which host a span came from.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}


def _any_value(v):
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which) if which else None


def spans_from_request(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict]:
    out = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _any_value(kv.value) for kv in resource_spans.resource.attributes}
        service = str(resource.get("service.name", "unknown"))
        host = str(resource.get("host.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                out.append({
                    "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(), "name": s.name, "service": service, "host": host,
                    "kind": _KINDS.get(s.kind, str(s.kind)), "start_ns": s.start_time_unix_nano,
                    "end_ns": s.end_time_unix_nano, "status": _STATUS.get(s.status.code, str(s.status.code)),
                    "attributes": {kv.key: _any_value(kv.value) for kv in s.attributes},
                })
    return out


def span_from_sdk(span: ReadableSpan) -> dict:
    """The same dict for a span made in this process (the loadgen's client spans)."""
    ctx, parent = span.context, span.parent
    return {
        "trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else "",
        "name": span.name, "service": str(span.resource.attributes.get("service.name", "unknown")),
        "host": str(span.resource.attributes.get("host.name", "")),
        "kind": span.kind.name.lower(), "start_ns": span.start_time, "end_ns": span.end_time,
        "status": span.status.status_code.name.lower(),
        "attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (span.attributes or {}).items()},
    }


class SpanStore:
    """Spans by trace id; thread-safe; waiters wake as spans arrive."""

    def __init__(self):
        self._spans: dict[str, list[dict]] = defaultdict(list)
        self._cond = threading.Condition()

    def add(self, spans: list[dict]) -> None:
        with self._cond:
            for span in spans:
                self._spans[span["trace_id"]].append(span)
            self._cond.notify_all()

    def trace(self, trace_id: str) -> list[dict]:
        with self._cond:
            return sorted(self._spans.get(trace_id, ()), key=lambda s: (s["start_ns"], s["end_ns"]))

    def wait_for_trace(self, trace_id: str, complete, timeout_s: float = 5.0) -> list[dict]:
        """Wait until `complete(spans)` is true for the trace (or the timeout); return its spans.

        Services export in batches, so a trace's last spans arrive a little after the task's
        reply; `complete` says what a whole trace looks like (see hops.trace_is_complete).
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                spans = sorted(self._spans.get(trace_id, ()), key=lambda s: (s["start_ns"], s["end_ns"]))
                remaining = deadline - time.monotonic()
                if complete(spans) or remaining <= 0:
                    return spans
                self._cond.wait(min(remaining, 0.2))


class StoreProcessor(SpanProcessor):
    """A span processor that puts this process's finished spans straight into a SpanStore,
    until `close()` (a provider cannot drop a processor; a closed one just stops storing)."""

    def __init__(self, store: SpanStore):
        self.store: SpanStore | None = store

    def on_end(self, span: ReadableSpan) -> None:
        if self.store is not None:
            self.store.add([span_from_sdk(span)])

    def close(self) -> None:
        self.store = None


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: SpanStore):
        self.store = store

    def Export(self, request, context):
        self.store.add(spans_from_request(request))
        return trace_service_pb2.ExportTraceServiceResponse()


def mtls_credentials(cert: str, key: str, ca: str) -> grpc.ServerCredentials:
    """Server credentials that also require the exporter's certificate, signed by `ca`."""
    read = lambda path: open(path, "rb").read()  # noqa: E731
    return grpc.ssl_server_credentials([(read(key), read(cert))], root_certificates=read(ca),
                                       require_client_auth=True)


class OtlpReceiver:
    """A collector-protocol endpoint on a gRPC server of its own (plaintext: loopback or the lab's link)."""

    def __init__(self, store: SpanStore):
        self.store = store
        self._server: grpc.Server | None = None
        self.address = ""
        self.tls = False

    def start(self, host: str = "127.0.0.1", port: int = 0,
              credentials: grpc.ServerCredentials | None = None) -> "OtlpReceiver":
        """Listen on host:port (0 = a free port); with `credentials` (see `mtls_credentials`)
        exporters must speak TLS and present a certificate from the CA."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self.store), server)
        self.tls = credentials is not None
        address = f"{host}:{port}"
        bound = server.add_secure_port(address, credentials) if self.tls else server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"the OTLP receiver cannot bind {host}:{port}")
        server.start()
        self._server, self.address = server, f"{host}:{bound}"
        return self

    @property
    def endpoint(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT should say (http:// = plaintext gRPC, https:// = TLS)."""
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def stop(self, grace_s: float = 1.0) -> None:
        if self._server is not None:
            self._server.stop(grace_s).wait()
            self._server = None
