"""Spans say which host they came from: the OTLP receiver and the loadgen's own spans carry the
resource's `host.name` as `host` ("" when the exporter sets none), keeping every other key."""
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from inloop.loadgen.otlp_receiver import OtlpReceiver, SpanStore, StoreProcessor

KEYS = {"trace_id", "span_id", "parent_span_id", "name", "service", "host", "kind", "start_ns", "end_ns",
        "status", "attributes"}


def test_received_and_local_spans_carry_their_host():
    store = SpanStore()
    receiver = OtlpReceiver(store).start("127.0.0.1", 0)
    try:
        providers = {
            "gpu": TracerProvider(resource=Resource.create({"service.name": "inloop-runtime",
                                                            "host.name": "gpu-host"})),
            "bare": TracerProvider(resource=Resource({"service.name": "inloop-tools"})),   # no host.name
            "local": TracerProvider(resource=Resource.create({"service.name": "inloop-loadgen",
                                                              "host.name": "cpu-host"})),
        }
        for key in ("gpu", "bare"):
            providers[key].add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint)))
        providers["local"].add_span_processor(StoreProcessor(store))
        with providers["local"].get_tracer("t").start_as_current_span("call") as root:
            for key in ("gpu", "bare"):
                with providers[key].get_tracer("t").start_as_current_span(f"work {key}"):
                    pass
        for provider in providers.values():
            provider.shutdown()
        trace_id = format(root.get_span_context().trace_id, "032x")
        spans = store.wait_for_trace(trace_id, lambda s: len(s) == 3, timeout_s=10)
    finally:
        receiver.stop()
    by_name = {s["name"]: s for s in spans}
    assert {n: s["host"] for n, s in by_name.items()} == {"call": "cpu-host", "work gpu": "gpu-host", "work bare": ""}
    assert all(set(s) == KEYS for s in spans)
    assert by_name["work gpu"]["service"] == "inloop-runtime"
