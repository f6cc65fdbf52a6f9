"""Hop overhead from spans: the parts of hand-built traces, and what a hole in a trace does."""
import pytest

from inloop.loadgen.hop_overhead import hop_breakdown, mean_breakdown, trace_is_complete

MS = 1_000_000


def span(sid, parent, name, kind, start_ms, end_ms, service="svc", status="unset", rpc=False):
    return {"trace_id": "t", "span_id": sid, "parent_span_id": parent, "name": name, "service": service,
            "kind": kind, "start_ns": int(start_ms * MS), "end_ns": int(end_ms * MS), "status": status,
            "attributes": {"rpc.system": "grpc"} if rpc else {}}


def external_trace():
    """loadgen -> controller (0..100 ms): a model hop (one attempt) and a tool hop with a
    failed attempt, 20 ms of backoff and a second attempt."""
    return [
        span("L", "", "inloop.v1.Controller/RunTask", "client", 0, 100, "inloop-loadgen", rpc=True),
        span("S", "L", "/inloop.v1.Controller/RunTask", "server", 2, 98, "inloop-controller", rpc=True),
        span("A", "S", "invoke_agent external", "internal", 3, 97, "inloop-controller"),
        span("H1", "A", "chat m", "client", 4, 54, "inloop-controller"),
        span("C1", "H1", "/inloop.v1.Runtime/Generate", "client", 5, 53, "inloop-controller", rpc=True),
        span("R1", "C1", "/inloop.v1.Runtime/Generate", "server", 6, 51, "inloop-runtime", rpc=True),
        span("H2", "A", "execute_tool search", "internal", 55, 95, "inloop-controller"),
        span("C2", "H2", "/inloop.v1.Tools/Call", "client", 56, 66, "inloop-controller", status="error", rpc=True),
        span("T2", "C2", "/inloop.v1.Tools/Call", "server", 57, 65, "inloop-tools", status="error", rpc=True),
        span("C3", "H2", "/inloop.v1.Tools/Call", "client", 86, 94, "inloop-controller", rpc=True),
        span("T3", "C3", "/inloop.v1.Tools/Call", "server", 87, 92, "inloop-tools", rpc=True),
    ]


def test_external_parts_are_measured_from_their_own_spans():
    b = hop_breakdown(external_trace(), end_to_end_ms=101.0)
    assert b["model_ms"] == pytest.approx(45)                 # R1
    assert b["tools_ms"] == pytest.approx(5)                  # T3 (the final attempt)
    assert b["retry_ms"] == pytest.approx(10 + 20)            # C2 whole + the gap C2 -> C3
    # wire: loadgen->controller (100-96) + model hop (48-45) + final tool attempt (8-5)
    assert b["wire_ms"] == pytest.approx(4 + 3 + 3)
    # controller: server 96 - hops (50 + 40) + outside-attempt time in hops (2 + 2)
    assert b["controller_ms"] == pytest.approx(96 - 90 + 2 + 2)
    assert b["other_ms"] == pytest.approx(1.0)
    assert b["sum_error_pct"] == pytest.approx(1 / 101 * 100)
    assert [h["attempts"] for h in b["hops"]] == [1, 2]


def test_internal_hops_are_in_process_work():
    spans = [
        span("L", "", "inloop.v1.Runtime/RunTask", "client", 0, 50, "inloop-loadgen", rpc=True),
        span("S", "L", "/inloop.v1.Runtime/RunTask", "server", 1, 49, "inloop-runtime", rpc=True),
        span("A", "S", "invoke_agent internal", "internal", 1.5, 48.5, "inloop-runtime"),
        span("H1", "A", "chat m", "internal", 2, 40, "inloop-runtime"),
        span("H2", "A", "execute_tool kv", "internal", 41, 43, "inloop-runtime"),
    ]
    b = hop_breakdown(spans, end_to_end_ms=50.0)
    assert (b["model_ms"], b["tools_ms"], b["retry_ms"]) == pytest.approx((38, 2, 0))
    assert b["wire_ms"] == pytest.approx(2) and b["controller_ms"] == pytest.approx(48 - 40)
    assert b["sum_error_pct"] == pytest.approx(0, abs=1e-9)


def test_a_missing_server_span_is_incomplete_and_shows_in_the_sum():
    spans = [s for s in external_trace() if s["span_id"] != "R1"]
    assert trace_is_complete(external_trace()) and not trace_is_complete(spans)
    # Were it analysed anyway, the model's time would land on the wire, not vanish.
    b = hop_breakdown(spans, end_to_end_ms=101.0)
    assert b["model_ms"] == 0 and b["wire_ms"] == pytest.approx(4 + 48 + 3)


def test_a_trace_without_its_server_span_is_refused():
    with pytest.raises(ValueError, match="RunTask server span"):
        hop_breakdown([span("L", "", "inloop.v1.Controller/RunTask", "client", 0, 1, rpc=True)])


def test_mean_breakdown():
    rows = [hop_breakdown(external_trace(), 101.0), hop_breakdown(external_trace(), 99.0)]
    mean = mean_breakdown(rows)
    assert mean["n"] == 2 and mean["end_to_end_ms"] == pytest.approx(100.0)
    assert mean_breakdown([]) == {"n": 0}
