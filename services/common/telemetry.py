"""OpenTelemetry for every inloop process: one tracer provider, OTLP export, gRPC propagation.

    setup_tracing("inloop-runtime")      # once, before the server or channels are built
    server = grpc.aio.server(interceptors=server_interceptors())
    channel = grpc.aio.insecure_channel(target, interceptors=aio_client_interceptors())
    with tracer().start_as_current_span("chat SmolLM2", kind=SpanKind.CLIENT) as span: ...
    shutdown_tracing()                   # flush on the way out (serve_until_signal does it)

Trace context travels as the W3C `traceparent` header in gRPC metadata (the
opentelemetry-instrumentation-grpc interceptors inject and extract it), so a task's spans
from every host share one trace. Spans are exported over OTLP/gRPC when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set; without it they are still
made (logs carry their ids) but go nowhere. Health checks and reflection are not traced:
probes every second would bury the spans people look for.
"""
from __future__ import annotations

import os
import threading

import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors as _aio_client_interceptors
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

INSTRUMENTATION = "inloop"
_lock = threading.Lock()
_provider: TracerProvider | None = None


def otlp_endpoint() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")


def setup_tracing(service_name: str, extra_processors: tuple[SpanProcessor, ...] = ()) -> TracerProvider:
    """Install the process's tracer provider (first call wins; later calls return it).

    `OTEL_SERVICE_NAME` overrides `service_name`, as everywhere in OpenTelemetry.
    `extra_processors` lets a process keep its own spans too (the loadgen keeps them in memory);
    they are attached on every call, so a second run in the same process gets its spans too.
    """
    global _provider
    with _lock:
        if _provider is not None:
            for processor in extra_processors:
                _provider.add_span_processor(processor)
            return _provider
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name})
        provider = TracerProvider(resource=resource)
        endpoint = otlp_endpoint()
        if endpoint:
            # Imported here: the exporter pulls in its own gRPC stack, only worth it when used.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            # An http:// endpoint means plaintext (the exporter reads the scheme); the batch
            # delay is short so a report waits little for the last spans of a run.
            delay_ms = int(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "500"))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint),
                                                           schedule_delay_millis=delay_ms,
                                                           max_queue_size=8192))
        for processor in extra_processors:
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        _provider = provider
        return provider


def shutdown_tracing() -> None:
    """Flush and stop exporting (pending spans are sent first). Safe to call more than once."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(INSTRUMENTATION)


def _untraced_services():
    # health_check() covers grpc.health.v1; reflection is matched by its service prefix.
    return filters.negate(filters.any_of(filters.health_check(),
                                         filters.service_prefix("grpc.reflection")))


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Interceptors for a grpc.aio server: a SERVER span per RPC, parented by the caller's traceparent."""
    return [aio_server_interceptor(filter_=_untraced_services())]


def aio_client_interceptors() -> list:
    """Interceptors for a grpc.aio channel: a CLIENT span per call, traceparent injected."""
    return list(_aio_client_interceptors(filter_=_untraced_services()))


class _SyncClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Traceparent on every call; a CLIENT span around unary calls.

    Ours rather than the instrumentation's sync interceptor, which hands back a plain
    generator for server-streaming calls: callers then lose `call.cancel()`, and a client
    that stops reading a stream could no longer stop the server's work.
    """

    def intercept_unary_unary(self, continuation, details, request):
        method = details.method
        if method.startswith(_UNTRACED_PREFIXES):
            return continuation(details, request)
        service, _, name = method.lstrip("/").partition("/")
        span = tracer().start_span(method.lstrip("/"), kind=trace.SpanKind.CLIENT, attributes={
            "rpc.system": "grpc", "rpc.service": service, "rpc.method": name})
        outcome = continuation(_with_traceparent(details, trace.set_span_in_context(span)), request)

        def finish(call) -> None:  # when the call completes: at once for blocking calls
            code = call.code()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:
                span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            span.end()

        outcome.add_done_callback(finish)
        return outcome

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(_with_traceparent(details), request)


_UNTRACED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def _with_traceparent(details, context=None):
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    metadata = list(details.metadata or ()) + list(carrier.items())
    return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                        details.wait_for_ready, details.compression)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


def intercept_channel(channel: grpc.Channel) -> grpc.Channel:
    """Wrap a synchronous channel so its calls carry the traceparent (and unary ones a CLIENT span)."""
    return grpc.intercept_channel(channel, _SyncClientInterceptor())


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits, or "" outside a span."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
