"""The loadgen's OTLP receiver, fed by the real OTLP/gRPC exporter of the OpenTelemetry SDK."""
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from inloop.loadgen.otlp_receiver import OtlpReceiver, SpanStore, StoreProcessor


def _provider(service: str, processor) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor)
    return provider


def test_spans_from_two_processes_join_one_trace():
    store = SpanStore()
    receiver = OtlpReceiver(store).start("127.0.0.1", 0)
    try:
        remote = _provider("inloop-tools", SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint)))
        local = _provider("inloop-loadgen", StoreProcessor(store))
        with local.get_tracer("t").start_as_current_span("call", kind=SpanKind.CLIENT) as parent:
            with remote.get_tracer("t").start_as_current_span(
                    "execute_tool search", attributes={"gen_ai.tool.name": "search", "n": 3, "ok": True,
                                                       "tags": ["a", "b"]}):
                pass
        remote.shutdown()
        trace_id = format(parent.get_span_context().trace_id, "032x")
        spans = store.wait_for_trace(trace_id, lambda s: len(s) == 2, timeout_s=10)
    finally:
        receiver.stop()
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"call", "execute_tool search"}
    tool, call = by_name["execute_tool search"], by_name["call"]
    assert tool["service"] == "inloop-tools" and call["service"] == "inloop-loadgen"
    assert tool["parent_span_id"] == call["span_id"] and call["parent_span_id"] == ""
    assert call["kind"] == "client" and tool["kind"] == "internal"
    assert tool["attributes"] == {"gen_ai.tool.name": "search", "n": 3, "ok": True, "tags": ["a", "b"]}
    assert call["start_ns"] <= tool["start_ns"] <= tool["end_ns"] <= call["end_ns"]


def test_waiting_for_a_trace_that_never_completes_returns_what_arrived():
    store = SpanStore()
    assert store.wait_for_trace("0" * 32, lambda s: bool(s), timeout_s=0.2) == []


def test_the_receiver_can_require_mtls_from_exporters(tmp_path, monkeypatch):
    import argparse

    from inloop.loadgen.otlp_receiver import mtls_credentials
    from inloop.services.common.certs_cli import make_dev_pki
    from inloop.services.common.config import export_otlp_endpoint

    make_dev_pki(tmp_path / "tls")
    store = SpanStore()
    receiver = OtlpReceiver(store).start("127.0.0.1", 0, mtls_credentials(
        str(tmp_path / "tls/loadgen.crt"), str(tmp_path / "tls/loadgen.key"), str(tmp_path / "tls/ca.crt")))
    try:
        assert receiver.endpoint.startswith("https://")
        for var in ("OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            monkeypatch.delenv(var, raising=False)
        # A service with TLS files and an https:// endpoint presents its own certificate.
        args = argparse.Namespace(otlp_endpoint=receiver.endpoint, tls_cert=str(tmp_path / "tls/tools.crt"),
                                  tls_key=str(tmp_path / "tls/tools.key"), tls_ca=str(tmp_path / "tls/ca.crt"))
        export_otlp_endpoint(args)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)  # undone after the test
        good = _provider("inloop-tools", SimpleSpanProcessor(OTLPSpanExporter()))
        with good.get_tracer("t").start_as_current_span("with a certificate") as span:
            pass
        good.shutdown()
        spans = store.wait_for_trace(format(span.get_span_context().trace_id, "032x"), bool, timeout_s=10)
        assert [s["name"] for s in spans] == ["with a certificate"]
        # Without a client certificate the export is refused (nothing arrives).
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_CLIENT_KEY")
        bad = _provider("inloop-tools", SimpleSpanProcessor(OTLPSpanExporter(timeout=2)))
        with bad.get_tracer("t").start_as_current_span("without") as span2:
            pass
        bad.shutdown()
        assert store.wait_for_trace(format(span2.get_span_context().trace_id, "032x"), bool, timeout_s=1) == []
    finally:
        receiver.stop()


def test_each_run_in_one_process_keeps_its_own_client_spans():
    """setup_tracing's provider is per process; a second loadgen run there still gets its spans."""
    from opentelemetry import trace

    from inloop.services.common.telemetry import setup_tracing

    first, second = SpanStore(), SpanStore()
    p1, p2 = StoreProcessor(first), StoreProcessor(second)
    setup_tracing("inloop-loadgen", (p1,))
    p1.close()
    setup_tracing("inloop-loadgen", (p2,))
    with trace.get_tracer("t").start_as_current_span("second run") as span:
        pass
    tid = format(span.get_span_context().trace_id, "032x")
    assert [s["name"] for s in second.trace(tid)] == ["second run"] and first.trace(tid) == []
    p2.close()
