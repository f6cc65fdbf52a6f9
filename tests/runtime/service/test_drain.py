"""SIGTERM drains the runtime: a stream that can finish within --grace-s finishes; one that
cannot ends typed before the grace runs out (gRPC: UNAVAILABLE "shutting down ... retry"; the
HTTP front: an SSE error event), never a cut connection; the process exits 0.

The long requests run ~1 s or more on the 8k-context tiny model (4096 tokens), far past the
short grace given here.
"""
from __future__ import annotations

import json
import queue
import signal
import threading
import time

import grpc
import httpx
import pytest

from inloop.services.common.grpc_client import insecure_channel
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import runtime_pb2_grpc
from tests.runtime.service.test_server import LONG, ServerProcess, long_dir  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)
SLACK_S = 1.0  # signal delivery and scheduling on a busy 2-core machine


def read_sse(url: str, body: dict, out: queue.Queue) -> None:
    """Stream `body` to `url`, putting ("data", payload) per event, then ("end", None)."""
    try:
        with httpx.stream("POST", url, json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    out.put(("data", line[6:]))
        out.put(("end", None))
    except httpx.HTTPError as exc:
        out.put(("cut", repr(exc)))
    except Exception as exc:  # noqa: BLE001 - anything else the client raised: say it, do not die silently
        out.put(("crash", repr(exc)))


def consume(stream, out: queue.Queue) -> None:
    """Read a gRPC stream to its end: ("ok", last chunk) or ("error", the RpcError)."""
    last = None
    try:
        for chunk in stream:
            last = chunk
        out.put(("ok", last, time.monotonic()))
    except grpc.RpcError as exc:
        out.put(("error", exc, time.monotonic()))


def test_streams_still_open_at_the_grace_end_end_typed(long_dir, tmp_path, monkeypatch):  # noqa: F811
    """An SSE stream generating and a gRPC stream behind it (queued, or batched beside it) when
    SIGTERM comes: both end typed before the grace runs out. Spans go to a collector that does
    not answer: its exporter retrying at shutdown must not hold the event loop the HTTP
    stream's ending needs (it once did, for 10 s)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.invalid:4317")  # a name that never resolves
    grace = 0.5  # far shorter than the ~1 s+ the two 4096-token requests take
    srv = ServerProcess(long_dir, tmp_path / "runtime.jsonl", "--grace-s", str(grace), "--http-port", "0")
    try:
        http = f"http://127.0.0.1:{srv.wait_log('http_listening', timeout_s=30)['port']}/v1/completions"
        events: queue.Queue = queue.Queue()
        body = {"prompt": "Hello", "max_tokens": LONG, "ignore_eos": True, "stream": True}
        threading.Thread(target=read_sse, args=(http, body, events), daemon=True).start()
        assert events.get(timeout=30)[0] == "data"  # generating
        stub = runtime_pb2_grpc.RuntimeStub(insecure_channel(srv.target))
        stream = stub.GenerateStream(pb.GenerateRequest(prompt="Hello", sampling=pb.SamplingParams(max_tokens=LONG)),
                                     timeout=60)
        ended: queue.Queue = queue.Queue()
        threading.Thread(target=consume, args=(stream, ended), daemon=True).start()
        time.sleep(0.2)  # the gRPC request is in the server (queued or generating)

        sent = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        kind, err, at = ended.get(timeout=grace + SLACK_S + 5)
        assert kind == "error", f"the gRPC stream finished instead: {err}"
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        assert "shutting down" in err.details() and "retry" in err.details()
        assert at - sent <= grace + SLACK_S

        last = None
        while (item := events.get(timeout=grace + SLACK_S + 5))[0] == "data":
            last = item[1]
        http_ended = time.monotonic() - sent
        assert item[0] == "end", item  # the server ended the response; the connection was not cut
        error = json.loads(last)["error"]
        assert "shutting down" in error["message"] and http_ended <= grace + SLACK_S, (error, http_ended)
        assert srv.proc.wait(timeout=30) == 0  # a clean exit; its timing is asserted above
    finally:
        srv.stop()
    assert srv.logs("shutting_down")[0]["grace_s"] == grace


def test_a_stream_that_fits_in_the_grace_finishes(long_dir, tmp_path):  # noqa: F811
    srv = ServerProcess(long_dir, tmp_path / "runtime.jsonl", "--grace-s", "20")
    try:
        stub = runtime_pb2_grpc.RuntimeStub(insecure_channel(srv.target))
        stream = stub.GenerateStream(pb.GenerateRequest(prompt="Hello", sampling=pb.SamplingParams(max_tokens=300)),
                                     timeout=60)
        chunks = iter(stream)
        next(chunks)
        srv.proc.send_signal(signal.SIGTERM)
        rest = list(chunks)
        assert rest and rest[-1].HasField("result"), rest[-1:]
        assert rest[-1].result.finish_reason in ("length", "stop")
        assert srv.proc.wait(timeout=30) == 0
    finally:
        srv.stop()
