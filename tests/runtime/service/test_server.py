"""The real runtime server, as a subprocess, over real gRPC, with a tiny real model.

`python -m inloop.services.cli runtime serve --port 0` prints the bound address; the tests wait
for the standard health service to say SERVING and then talk through the generated stub.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from inloop.services.common.grpc_client import insecure_channel
from inloop.services.runtime.model.tiny import make_tiny
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import runtime_pb2_grpc
from tests.service_procs import ServiceProcess

REPO = Path(__file__).resolve().parents[2]
LONG = 4096  # the server's max_tokens limit; ~1 s of work on the long-context tiny model


def ServerProcess(model_dir: Path, log_path: Path, *extra: str) -> ServiceProcess:  # noqa: N802 - reads as a class
    """`inloop runtime serve` on the numpy backend and a free port."""
    return ServiceProcess("runtime", ["serve", "--model", str(model_dir), "--backend", "cpu", "--port", "0", *extra],
                          log_path)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory) -> Path:
    """The tiny model with an 8k context, so one request can run ~1 s (4096 tokens)."""
    path = make_tiny("llama", tmp_path_factory.mktemp("tiny-llama-long"))
    cfg = json.loads((path / "config.json").read_text())
    cfg["max_position_embeddings"] = 8192  # RoPE needs no table; the weights fit any length
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    srv = ServerProcess(tiny_dir, tmp_path_factory.mktemp("logs") / "server.jsonl")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def busy_server(long_dir, tmp_path_factory):
    # one sequence in the batch and one waiting: the queue's limits show with a few requests
    srv = ServerProcess(long_dir, tmp_path_factory.mktemp("logs") / "busy.jsonl", "--max-queue", "1",
                        "--max-num-seqs", "1")
    yield srv
    srv.stop()


def stub_for(srv: ServerProcess):
    return runtime_pb2_grpc.RuntimeStub(insecure_channel(srv.target))


def chat(content: str = "What is 17 * 23?", **sampling) -> pb.GenerateRequest:
    req = pb.GenerateRequest(sampling=pb.SamplingParams(**sampling))
    req.messages.add(role="system", content="Answer briefly.")
    req.messages.add(role="user", content=content)
    return req


def check_uncertainty(u: pb.TokenUncertainty) -> None:
    assert u.logprob <= 0.0
    assert u.entropy >= 0.0
    assert 0.0 <= u.margin <= 1.0


# ---- good requests ----------------------------------------------------------------
@pytest.mark.timeout(60)
def test_generate_returns_text_usage_timings_and_uncertainty(server):
    req = chat(max_tokens=8, return_uncertainty=True)
    req.request_id = "r-1"
    resp = stub_for(server).Generate(req, timeout=20)
    assert resp.request_id == "r-1"
    assert resp.finish_reason in ("length", "stop")
    assert resp.usage.completion_tokens == len(resp.token_ids) > 0
    assert resp.usage.prompt_tokens > 0
    if resp.finish_reason == "length":
        assert resp.text
    t = resp.timings
    assert t.prefill_ms > 0 and t.queue_ms >= 0 and t.decode_ms >= 0
    assert t.ttft_ms >= t.prefill_ms
    assert [u.token_id for u in resp.token_uncertainty] == list(resp.token_ids)
    for u in resp.token_uncertainty:
        check_uncertainty(u)
    s, lps = resp.uncertainty, [u.logprob for u in resp.token_uncertainty]
    assert s.min_logprob == pytest.approx(min(lps)) and s.mean_logprob == pytest.approx(sum(lps) / len(lps))
    assert s.max_entropy >= s.mean_entropy >= 0 and 0 <= s.min_margin <= s.mean_margin <= 1


@pytest.mark.timeout(60)
def test_stream_tokens_add_up_to_the_final_response(server):
    stub = stub_for(server)
    chunks = list(stub.GenerateStream(chat(max_tokens=12, return_uncertainty=True), timeout=20))
    *tokens, last = chunks
    assert last.WhichOneof("chunk") == "result"
    assert all(c.WhichOneof("chunk") == "token" for c in tokens) and tokens
    final = last.result
    assert "".join(c.token.text for c in tokens) == final.text
    assert final.usage.completion_tokens == len(final.token_ids)
    assert final.timings.ttft_ms > 0
    for c in tokens:
        if c.token.HasField("uncertainty"):
            check_uncertainty(c.token.uncertainty)
            assert c.token.uncertainty.token_id == c.token.token_id
    # greedy is deterministic: the unary call gives the same tokens
    unary = stub.Generate(chat(max_tokens=12), timeout=20)
    assert list(unary.token_ids) == list(final.token_ids) and unary.text == final.text
    assert not unary.token_uncertainty and not unary.HasField("uncertainty")


@pytest.mark.timeout(60)
def test_model_info_health_and_reflection(server):
    channel = insecure_channel(server.target)
    info = runtime_pb2_grpc.RuntimeStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert (info.arch, info.backend, info.vocab_size, info.context_length) == ("llama", "cpu", 400, 2048)
    assert list(info.eos_token_ids) == [2] and info.max_queue == 16 and info.max_tokens_limit == LONG
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inloop.v1.Runtime"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=5)
    names = {s.name for s in answer.list_services_response.service}
    assert {"inloop.v1.Runtime", "grpc.health.v1.Health"} <= names


# ---- bad requests -----------------------------------------------------------------
def _bad_cases() -> list:
    unknown_role = chat()
    unknown_role.messages[1].role = "wizard"
    both = chat()
    both.prompt = "also a prompt"
    return [
        pytest.param(pb.GenerateRequest(), "messages", id="empty"),
        pytest.param(chat(max_tokens=0), "sampling.max_tokens", id="max_tokens=0"),
        pytest.param(chat(max_tokens=-3), "sampling.max_tokens", id="max_tokens<0"),
        pytest.param(chat(max_tokens=LONG + 1), "sampling.max_tokens", id="max_tokens>limit"),
        pytest.param(chat(temperature=-0.5), "sampling.temperature", id="temperature<0"),
        pytest.param(chat(top_p=0.0), "sampling.top_p", id="top_p=0"),
        pytest.param(chat(top_p=1.5), "sampling.top_p", id="top_p>1"),
        pytest.param(unknown_role, "messages[1].role", id="unknown-role"),
        pytest.param(both, "prompt", id="messages+prompt"),
        pytest.param(pb.GenerateRequest(prompt="tokens and logits " * 400), "prompt", id="prompt-too-long"),
        pytest.param(chat("tokens and logits " * 400), "messages", id="messages-too-long"),
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("request_msg, field", _bad_cases())
def test_bad_input_is_invalid_argument_naming_the_field(server, request_msg, field):
    stub = stub_for(server)
    for call in (stub.Generate, lambda r, timeout: list(stub.GenerateStream(r, timeout=timeout))):
        with pytest.raises(grpc.RpcError) as err:
            call(request_msg, timeout=20)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field}: "), err.value.details()
    ok = stub.Generate(chat(max_tokens=2), timeout=20)  # the server is still fine
    assert ok.usage.completion_tokens > 0


# ---- load, cancellation, deadlines, shutdown -------------------------------------
@pytest.mark.timeout(60)
def test_full_queue_is_resource_exhausted(busy_server):
    stub = stub_for(busy_server)  # --max-queue 1: one runs, one waits, the rest are refused
    calls = [stub.Generate.future(pb.GenerateRequest(prompt="Hello", sampling=pb.SamplingParams(max_tokens=LONG)),
                                  timeout=30) for _ in range(4)]
    try:
        # The four arrive in no guaranteed order: one runs, one waits, the other two are refused.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(c.done() for c in calls) < 2:
            time.sleep(0.02)
        rejected = [c for c in calls if c.done() and c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(rejected) >= 2, [c.code() if c.done() else "running" for c in calls]
        assert "queue is full" in rejected[0].details()
        assert any(not c.done() or c.code() == grpc.StatusCode.OK for c in calls)
    finally:
        for c in calls:
            c.cancel()


@pytest.mark.timeout(60)
def test_cancelled_stream_frees_the_worker_at_once(busy_server):
    stub = stub_for(busy_server)
    long_req = pb.GenerateRequest(prompt="Hello", request_id="cancel-me",
                                  sampling=pb.SamplingParams(max_tokens=LONG))
    call = stub.GenerateStream(long_req, timeout=30)
    stream = iter(call)
    first = [next(stream) for _ in range(5)]
    assert all(c.WhichOneof("chunk") == "token" for c in first)
    call.cancel()

    started = time.monotonic()
    nxt = stub.Generate(pb.GenerateRequest(prompt="Hello", sampling=pb.SamplingParams(max_tokens=8)), timeout=10)
    elapsed = time.monotonic() - started
    # Had the worker gone on with the cancelled request, this one would wait ~1 s for it.
    assert nxt.timings.queue_ms < 250, nxt.timings
    assert elapsed < 1.0
    done = busy_server.wait_log("request_done", request_id="cancel-me")
    assert done["finish_reason"] == "cancelled" and done["completion_tokens"] < LONG


@pytest.mark.timeout(60)
def test_deadline_stops_the_running_request(busy_server):
    stub = stub_for(busy_server)
    req = pb.GenerateRequest(prompt="Hello", request_id="deadline-me", sampling=pb.SamplingParams(max_tokens=LONG))
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(req, timeout=0.15)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    done = busy_server.wait_log("request_done", request_id="deadline-me")
    assert done["finish_reason"] == "cancelled" and done["completion_tokens"] < LONG


@pytest.mark.timeout(60)
def test_sigterm_stops_cleanly_with_exit_code_0(long_dir, tmp_path):
    srv = ServerProcess(long_dir, tmp_path / "sigterm.jsonl", "--grace-s", "0.5")
    call = stub_for(srv).GenerateStream(
        pb.GenerateRequest(prompt="Hello", sampling=pb.SamplingParams(max_tokens=LONG)), timeout=30)
    next(iter(call))  # a request is in flight when the signal arrives
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=15) == 0, srv.log_path.read_text()
    srv.stop()
    call.cancel()
    assert srv.logs("shutting_down")[0]["reason"] == "SIGTERM"
    assert srv.logs("stopped")


def test_generate_follows_a_response_json_schema(server):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "maximum": 9}},
              "required": ["ok", "n"], "additionalProperties": False}
    req = pb.GenerateRequest(sampling=pb.SamplingParams(max_tokens=100, temperature=1.0, seed=3),
                             response_json_schema=json.dumps(schema))
    req.messages.add(role="user", content="Answer in JSON")
    reply = stub_for(server).Generate(req, timeout=30)
    assert reply.finish_reason == "stop" and set(json.loads(reply.text)) == {"ok", "n"}
    bad = pb.GenerateRequest(response_json_schema='{"type": "object", "properties": []}')
    bad.messages.add(role="user", content="x")
    with pytest.raises(grpc.RpcError) as err:
        stub_for(server).Generate(bad, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "response_format.json_schema" in err.value.details()


def test_generate_returns_top_logprobs_over_grpc(server):
    """OpenAI's top_logprobs on gRPC: per token the most likely alternatives, most likely
    first; greedy, the chosen token is the first of them."""
    resp = stub_for(server).Generate(chat(max_tokens=6, return_uncertainty=True, top_logprobs=3), timeout=20)
    assert resp.token_uncertainty
    for u in resp.token_uncertainty:
        lps = [t.logprob for t in u.top]
        assert len(u.top) == 3 and lps == sorted(lps, reverse=True)
        assert u.logprob == pytest.approx(lps[0], abs=1e-5)
    with pytest.raises(grpc.RpcError) as err:
        stub_for(server).Generate(chat(max_tokens=2, top_logprobs=3), timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sampling.top_logprobs" in err.value.details()
