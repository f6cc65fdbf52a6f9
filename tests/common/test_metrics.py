"""Prometheus metrics (services/common/metrics.py): the interceptor, the hooks, the endpoint,
and a real Prometheus scraping the three services.

Unit tests read this process's REGISTRY before and after, so they measure deltas and do
not care what other tests in the process recorded. The scrape tests share one module-scoped
mesh (tests/common/conftest.py): three service processes and a Prometheus server.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import grpc
import prometheus_client
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from inloop.services.common import metrics
from inloop.services.common.metrics import REGISTRY, RpcMetricsInterceptor
from inloop.services.contract.generation import GenerateResult, Timings
from inloop.services.controller.hops import Policy
from tests.controller.test_hops import FAST, FlakyTools, call_tool

pytestmark = pytest.mark.timeout(180)
SERVICE = "test.v1.Probe"
OK, CANCELLED, UNKNOWN, INVALID, DEADLINE, UNAVAILABLE = "0", "1", "2", "3", "4", "14"


def sample(name: str, **labels) -> float:
    """A sample of REGISTRY, 0 when the series does not exist yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def rpc_count(method: str, code: str, service: str = SERVICE) -> float:
    return sample("rpc_server_requests_total", rpc_service=service, rpc_method=method, rpc_grpc_status_code=code)


def rpc_observations(method: str, code: str, service: str = SERVICE) -> float:
    return sample("rpc_server_duration_seconds_count", rpc_service=service, rpc_method=method,
                  rpc_grpc_status_code=code)


# ---- the interceptor, on an in-process server -------------------------------------------
async def _ok(request, context):
    return request


async def _bad(request, context):
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "messages: must not be empty")


async def _boom(request, context):
    raise ValueError("a bug")


async def _slow(request, context):
    await asyncio.sleep(10)
    return request


async def _stream(request, context):
    for i in range(3):
        yield bytes([i])


def _handlers():
    same = {"request_deserializer": None, "response_serializer": None}
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Ok": grpc.unary_unary_rpc_method_handler(_ok, **same),
        "Bad": grpc.unary_unary_rpc_method_handler(_bad, **same),
        "Boom": grpc.unary_unary_rpc_method_handler(_boom, **same),
        "Slow": grpc.unary_unary_rpc_method_handler(_slow, **same),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream, **same),
    })


async def _with_probe_server(body):
    server = grpc.aio.server(interceptors=[RpcMetricsInterceptor()])
    server.add_generic_rpc_handlers((_handlers(),))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await body(channel)
    finally:
        await server.stop(0)


async def _until(predicate, timeout_s: float = 5.0) -> None:
    """The server records a cancelled call when its handler unwinds, a moment after the client."""
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def test_interceptor_counts_ok_and_invalid_argument_with_their_labels():
    before = {m: (rpc_count(m, c), rpc_observations(m, c)) for m, c in (("Ok", OK), ("Bad", INVALID))}
    health_before = rpc_count("Check", OK, "grpc.health.v1.Health")

    async def body(channel):
        assert await channel.unary_unary(f"/{SERVICE}/Ok")(b"hi") == b"hi"
        assert await channel.unary_unary(f"/{SERVICE}/Ok")(b"again") == b"again"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(f"/{SERVICE}/Bad")(b"x")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())

    asyncio.run(_with_probe_server(body))
    assert rpc_count("Ok", OK) - before["Ok"][0] == 2
    assert rpc_observations("Ok", OK) - before["Ok"][1] == 2
    assert rpc_count("Bad", INVALID) - before["Bad"][0] == 1
    assert rpc_observations("Bad", INVALID) - before["Bad"][1] == 1
    assert rpc_count("Bad", OK) == 0  # an abort is never counted as OK
    assert rpc_count("Check", OK, "grpc.health.v1.Health") == health_before == 0  # probes are not measured


def test_interceptor_records_streams_cancels_deadlines_and_bugs():
    before = {(m, c): rpc_count(m, c) for m, c in
              (("Stream", OK), ("Slow", DEADLINE), ("Slow", CANCELLED), ("Boom", UNKNOWN))}

    async def body(channel):
        assert [r async for r in channel.unary_stream(f"/{SERVICE}/Stream")(b"")] == [b"\0", b"\1", b"\2"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(f"/{SERVICE}/Slow")(b"", timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        call = channel.unary_unary(f"/{SERVICE}/Slow")(b"")
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(f"/{SERVICE}/Boom")(b"")
        assert err.value.code() == grpc.StatusCode.UNKNOWN
        await _until(lambda: rpc_count("Slow", DEADLINE) > before[("Slow", DEADLINE)]
                     and rpc_count("Slow", CANCELLED) > before[("Slow", CANCELLED)])

    asyncio.run(_with_probe_server(body))
    assert rpc_count("Stream", OK) - before[("Stream", OK)] == 1
    assert rpc_count("Slow", DEADLINE) - before[("Slow", DEADLINE)] == 1
    assert rpc_count("Slow", CANCELLED) - before[("Slow", CANCELLED)] == 1
    assert rpc_count("Boom", UNKNOWN) - before[("Boom", UNKNOWN)] == 1
    # a call that runs into its deadline is timed to its end (0.2 s), not to its start
    assert sample("rpc_server_duration_seconds_sum", rpc_service=SERVICE, rpc_method="Slow",
                  rpc_grpc_status_code=DEADLINE) >= 0.15


def test_split_method():
    assert metrics.split_method("/inloop.v1.Tools/Call") == ("inloop.v1.Tools", "Call")


# ---- the hooks ----------------------------------------------------------------------------
def _result(prompt: int, completion: int, ttft_ms: float) -> GenerateResult:
    return GenerateResult(text="", token_ids=[], finish_reason="length", prompt_tokens=prompt,
                          completion_tokens=completion, timings=Timings(ttft_ms=ttft_ms))


def test_generation_histograms_and_tokens_observe():
    model = "unit-model"
    names = ("gen_ai_server_request_duration_seconds", "gen_ai_server_time_to_first_token_seconds",
             "gen_ai_server_time_per_output_token_seconds")
    before = {n: (sample(f"{n}_count", gen_ai_request_model=model), sample(f"{n}_sum", gen_ai_request_model=model))
              for n in names}
    tokens_before = (sample("inloop_tokens_total", gen_ai_request_model=model, gen_ai_token_type="input"),
                     sample("inloop_tokens_total", gen_ai_request_model=model, gen_ai_token_type="output"))
    # accepted at t=100 s, first token 50 ms later, 11 tokens by t=101.05 s: TPOT = 1.0 / 10
    metrics.observe_generation(model, 100.0, _result(prompt=32, completion=11, ttft_ms=50.0), now=101.05)
    delta = {n: (sample(f"{n}_count", gen_ai_request_model=model) - before[n][0],
                 sample(f"{n}_sum", gen_ai_request_model=model) - before[n][1]) for n in names}
    assert delta[names[0]][0] == 1 and delta[names[0]][1] == pytest.approx(1.05)
    assert delta[names[1]][0] == 1 and delta[names[1]][1] == pytest.approx(0.05)
    assert delta[names[2]][0] == 1 and delta[names[2]][1] == pytest.approx(0.1)
    assert sample("inloop_tokens_total", gen_ai_request_model=model, gen_ai_token_type="input") - tokens_before[0] == 32
    assert sample("inloop_tokens_total", gen_ai_request_model=model, gen_ai_token_type="output") - tokens_before[1] == 11
    # one output token has a TTFT but no time per output token
    metrics.observe_generation(model, 0.0, _result(prompt=4, completion=1, ttft_ms=10.0), now=0.01)
    assert sample(f"{names[2]}_count", gen_ai_request_model=model) - before[names[2]][0] == 1
    assert sample(f"{names[1]}_count", gen_ai_request_model=model) - before[names[1]][0] == 2


def test_task_hop_fault_and_queue_hooks():
    t0 = (sample("inloop_tasks_total", route="internal", error_type=""),
          sample("inloop_tasks_total", route="external", error_type="tool_hop_failed"),
          sample("inloop_task_duration_seconds_count", route="external", outcome="error"),
          sample("inloop_faults_injected_total", fault="delay"))
    metrics.observe_task("internal", 0.5, "")
    metrics.observe_task("external", 2.0, "tool_hop_failed")
    metrics.observe_fault("delay")
    assert sample("inloop_tasks_total", route="internal", error_type="") - t0[0] == 1
    assert sample("inloop_tasks_total", route="external", error_type="tool_hop_failed") - t0[1] == 1
    assert sample("inloop_task_duration_seconds_count", route="external", outcome="error") - t0[2] == 1
    assert sample("inloop_faults_injected_total", fault="delay") - t0[3] == 1
    depth = [3]
    metrics.track_queue_depth("unit", lambda: depth[0])
    assert sample("inloop_queue_depth", service="unit") == 3
    depth[0] = 0  # read at scrape time: never a stale value
    assert sample("inloop_queue_depth", service="unit") == 0


def test_a_tools_hop_records_each_try_and_the_retry():
    before = (sample("inloop_hop_retries_total", hop="tools"),
              sample("inloop_hop_duration_seconds_count", hop="tools", outcome="error"),
              sample("inloop_hop_duration_seconds_count", hop="tools", outcome="ok"))
    reply, _ = call_tool(FlakyTools(fail_first=1), Policy(attempts=3, **FAST))
    assert reply.attempts == 2
    assert sample("inloop_hop_retries_total", hop="tools") - before[0] == 1
    assert sample("inloop_hop_duration_seconds_count", hop="tools", outcome="error") - before[1] == 1
    assert sample("inloop_hop_duration_seconds_count", hop="tools", outcome="ok") - before[2] == 1


def test_a_failing_hook_is_logged_not_raised():
    assert metrics.observe_generation("m", 0.0, object()) is None  # no prompt_tokens: AttributeError inside
    assert "observe_generation" in metrics._failed_hooks


# ---- GPU memory ---------------------------------------------------------------------------
def _engine(backend) -> SimpleNamespace:
    return SimpleNamespace(model=SimpleNamespace(backend=backend))


def test_gpu_memory_is_only_set_for_the_cuda_backend():
    calls = []
    cpu = SimpleNamespace(name="numpy", device=SimpleNamespace(memory_info=lambda: calls.append(1)))
    metrics.observe_gpu_memory(_engine(cpu))
    assert calls == []  # the cpu backend never reaches a driver call
    cuda = SimpleNamespace(name="cuda", device=SimpleNamespace(memory_info=lambda: (6 << 30, 80 << 30)))
    metrics.observe_gpu_memory(_engine(cuda))
    assert REGISTRY.get_sample_value("inloop_gpu_memory_used_bytes") == float(74 << 30)


@pytest.mark.gpu
def test_gpu_memory_from_a_real_device():
    from inloop.services.runtime.backends.cuda.driver import Device, cuda_available

    ok, why = cuda_available()
    if not ok:
        pytest.skip(f"no CUDA device: {why}")
    device = Device(0)
    free, total = device.memory_info()
    assert 0 < free <= total == device.info.total_memory
    metrics.observe_gpu_memory(_engine(SimpleNamespace(name="cuda", device=device)))
    used = REGISTRY.get_sample_value("inloop_gpu_memory_used_bytes")
    assert 0 < used <= total  # the context itself holds some memory


# ---- the endpoint -------------------------------------------------------------------------
def test_metrics_server_port_zero_minus_one_and_taken():
    port = metrics.start_metrics_server(0, "127.0.0.1")
    assert port and port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "# TYPE rpc_server_requests_total counter" in text
    assert "# TYPE gen_ai_server_time_to_first_token_seconds histogram" in text
    assert "process_cpu_seconds_total" in text and "_created" not in text
    assert metrics.start_metrics_server(-1) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert metrics.start_metrics_server(taken.getsockname()[1], "127.0.0.1") is None  # logged, not raised


def test_a_service_with_tls_serves_metrics_over_https_to_certified_scrapers_only(tmp_path):
    import argparse
    import ssl

    from inloop.services.common.certs_cli import make_dev_pki

    make_dev_pki(tmp_path)
    args = argparse.Namespace(tls_cert=str(tmp_path / "tools.crt"), tls_key=str(tmp_path / "tools.key"),
                              tls_ca=str(tmp_path / "ca.crt"))
    assert metrics.metrics_tls(argparse.Namespace(tls_cert=None, tls_key=None, tls_ca=None)) is None
    port = metrics.start_metrics_server(0, "127.0.0.1", metrics.metrics_tls(args))
    url = f"https://localhost:{port}/metrics"
    scraper = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    scraper.load_cert_chain(str(tmp_path / "loadgen.crt"), str(tmp_path / "loadgen.key"))
    with urllib.request.urlopen(url, context=scraper, timeout=5) as resp:
        assert "rpc_server_requests_total" in resp.read().decode()
    anonymous = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))  # no client certificate
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(url, context=anonymous, timeout=5).read()
    with pytest.raises((ConnectionError, urllib.error.URLError, http.client.HTTPException)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()  # no plaintext
    # an idle TCP connection that never starts TLS used to block the endpoint for as long as it stayed open
    with socket.create_connection(("127.0.0.1", port)):
        started = time.monotonic()
        with urllib.request.urlopen(url, context=scraper, timeout=5) as resp:
            assert "rpc_server_requests_total" in resp.read().decode()
        assert time.monotonic() - started < 2


# ---- a real Prometheus scraping the three services ------------------------------------------
def test_prometheus_scrapes_rpc_metrics_from_every_service(metrics_mesh):
    prom = metrics_mesh.prometheus
    runtime_bad = prom.value('sum(rpc_server_requests_total{job="runtime",rpc_service="inloop.v1.Runtime",'
                             f'rpc_method="Generate",rpc_grpc_status_code="{INVALID}"}})')
    assert runtime_bad == 1
    assert prom.value('sum(rpc_server_requests_total{job="runtime",rpc_method="GenerateStream",'
                      f'rpc_grpc_status_code="{OK}"}})') == 1
    # Generate OK: ours, plus one per model step of the external task (through the controller)
    assert prom.value(f'sum(rpc_server_requests_total{{job="runtime",rpc_method="Generate",'
                      f'rpc_grpc_status_code="{OK}"}})') >= 2
    assert prom.value(f'sum(rpc_server_requests_total{{job="tools",rpc_service="inloop.v1.Tools",'
                      f'rpc_method="Call",rpc_grpc_status_code="{UNAVAILABLE}"}})') >= 2
    assert prom.value('sum(rpc_server_requests_total{job="controller",rpc_service="inloop.v1.Controller",'
                      f'rpc_method="RunTask",rpc_grpc_status_code="{OK}"}})') == 1
    assert prom.value('sum(rpc_server_duration_seconds_count{job="controller",rpc_method="RunTask"})') == 1
    assert prom.query('rpc_server_requests_total{rpc_service=~"grpc.health.*|grpc.reflection.*"}') == []
    assert {r["metric"]["service"] for r in prom.query("inloop_queue_depth")} == {"runtime", "tools", "controller"}
    assert prom.value("sum(inloop_queue_depth)") == 0  # every call has finished


def test_prometheus_scrapes_generation_fault_hop_and_task_metrics(metrics_mesh):
    prom = metrics_mesh.prometheus
    assert prom.value('sum(inloop_faults_injected_total{job="tools",fault="abort"})') >= 2
    assert prom.value('sum(inloop_tokens_total{job="runtime",gen_ai_token_type="output"})') > 0
    assert prom.value('sum(inloop_tokens_total{job="runtime",gen_ai_token_type="input"})') > 0
    assert prom.value('sum(gen_ai_server_time_to_first_token_seconds_count{job="runtime"})') >= 3
    assert prom.value('sum(gen_ai_server_request_duration_seconds_count{job="runtime"})') >= 3
    external = metrics_mesh.calls["external_task"]
    assert prom.value('sum(inloop_hop_retries_total{job="controller",hop="tools"})') == external.retries
    assert prom.value('sum(inloop_hop_duration_seconds_count{job="controller",hop="tools",outcome="error"})') >= 1
    assert prom.value('sum(inloop_hop_duration_seconds_count{job="controller",hop="runtime",outcome="ok"})') >= 1
    for route, job in (("internal", "runtime"), ("external", "controller")):
        assert prom.value(f'sum(inloop_tasks_total{{job="{job}",route="{route}"}})') == 1
        assert prom.value(f'sum(inloop_task_duration_seconds_count{{job="{job}",route="{route}"}})') == 1
    error_type = metrics_mesh.calls["internal_task"].error_type
    assert prom.value(f'sum(inloop_tasks_total{{route="internal",error_type="{error_type}"}})') == 1


def test_scraped_metric_names_hold_every_service_metric(scraped_metric_names):
    histograms = ("rpc_server_duration_seconds", "gen_ai_server_request_duration_seconds",
                  "gen_ai_server_time_to_first_token_seconds", "gen_ai_server_time_per_output_token_seconds",
                  "inloop_hop_duration_seconds", "inloop_task_duration_seconds")
    expected = {f"{h}_{part}" for h in histograms for part in ("bucket", "sum", "count")}
    expected |= {"rpc_server_requests_total", "inloop_queue_depth", "inloop_tokens_total",
                 "inloop_faults_injected_total", "inloop_hop_retries_total", "inloop_tasks_total", "up"}
    assert expected <= scraped_metric_names, sorted(expected - scraped_metric_names)
    assert "inloop_gpu_memory_used_bytes" not in scraped_metric_names  # the numpy backend has no GPU


def test_every_metric_the_grafana_dashboard_queries_was_scraped(scraped_metric_names):
    """The provisioned dashboard (deploy/grafana) reads only series a real Prometheus scraped
    from the running services: a renamed metric breaks this, not a dashboard in production."""
    from tests.deploy.test_dashboard_and_prometheus import DASHBOARD, expressions, series_names

    queried = {name for _, expr in expressions(json.loads(DASHBOARD.read_text())) for name in series_names(expr)}
    assert len(queried) >= 6, queried
    assert queried <= scraped_metric_names, sorted(queried - scraped_metric_names)


def test_state_gauges_read_at_each_scrape():
    held = {"bytes": 10}
    metrics.track_state("tools", "kv_bytes", lambda: held["bytes"])
    text = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    assert 'inloop_state{service="tools",what="kv_bytes"} 10.0' in text
    held["bytes"] = 20
    assert 'inloop_state{service="tools",what="kv_bytes"} 20.0' in prometheus_client.generate_latest(
        metrics.REGISTRY).decode()


def test_batching_gauges_and_counters_read_at_each_scrape():
    counts = {"running": 3, "waiting": 1, "blocks_used": 30, "blocks_free": 90, "pinned_blocks": 4,
              "preemptions": 2, "prefix_cache_queries": 500, "prefix_cache_hits": 320}
    metrics.track_batching(lambda: counts, lambda: 5)
    text = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    for line in ("inloop_num_requests_running 3.0", "inloop_num_requests_waiting 6.0",
                 "inloop_kv_cache_usage_perc 0.25", 'inloop_kv_cache_blocks{state="pinned"} 4.0',
                 "inloop_prefix_cache_queries_total 500.0", "inloop_prefix_cache_hits_total 320.0",
                 "inloop_num_preemptions_total 2.0"):
        assert line in text, line
    counts["running"] = 7
    metrics.track_batching(lambda: counts, lambda: 0)   # a second engine replaces the first
    text = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    assert "inloop_num_requests_running 7.0" in text and text.count("# TYPE inloop_num_requests_running") == 1
