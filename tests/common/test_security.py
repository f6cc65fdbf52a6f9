"""mTLS and bearer tokens (services/common/security.py) on real services over real gRPC.

A tools service runs as a subprocess with mTLS (certificates from `inloop certs dev`) and a
token file. The right client certificate and token work; a client without a certificate,
or with one from another CA, never gets past the handshake (UNAVAILABLE); a missing or
wrong token is UNAUTHENTICATED with a message that says what to send; Health answers
without the token. The controller's own hops carry its certificate and the token, checked
with a whole mesh under mTLS. A plaintext service on a non-loopback address refuses to start.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from inloop.services.common.certs_cli import make_dev_pki
from inloop.services.common.grpc_client import make_channel, wait_for_serving
from inloop.services.common.grpc_server import create_server
from inloop.services.common.security import (
    BearerTokenInterceptor,
    ClientSecurity,
    SecurityError,
    ServerSecurity,
    client_security_from_args,
    is_loopback,
    server_security_from_args,
)
from inloop.v1 import controller_pb2_grpc, tools_pb2_grpc
from inloop.v1 import runtime_pb2 as rpb
from inloop.v1 import tools_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-tests"
CALC = pb.ToolCallRequest(name="calculator", arguments_json=json.dumps({"expression": "6*7"}))

pytestmark = pytest.mark.timeout(120)


# ---- fixtures: a PKI, a second CA, a token, secured services ---------------------------------
@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tls")
    make_dev_pki(root / "ours")
    make_dev_pki(root / "other")   # a CA the services do not trust
    (root / "token").write_text(TOKEN + "\n")
    return root


def client(tls: Path, identity: str = "loadgen", ca: str = "ours", token: str | None = TOKEN,
           cert_from: str | None = "ours") -> ClientSecurity:
    read = lambda p: (tls / p).read_bytes()
    cert = read(f"{cert_from}/{identity}.crt") if cert_from else None
    key = read(f"{cert_from}/{identity}.key") if cert_from else None
    return ClientSecurity(cert, key, read(f"{ca}/ca.crt"), token)


def secure_flags(tls: Path, identity: str) -> list[str]:
    return ["--tls-cert", str(tls / "ours" / f"{identity}.crt"), "--tls-key", str(tls / "ours" / f"{identity}.key"),
            "--tls-ca", str(tls / "ours" / "ca.crt"), "--token-file", str(tls / "token")]


class SecureService:
    """`python -m inloop.services.cli SERVICE serve --port 0 ...` waited on over mTLS."""

    def __init__(self, service: str, args: list[str], log_path: Path, security: ClientSecurity):
        env = {**os.environ, "INLOOP_METRICS_PORT": "-1", "INLOOP_HTTP_PORT": "-1"}  # no fixed ports to collide on
        self.log = open(log_path, "w")  # noqa: SIM115 - the child writes to it until stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "inloop.services.cli", service, "serve", "--port", "0", *args],
                                     cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            line = ""
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"{service} did not start: {line!r}\n{log_path.read_text()}")
        self.target = line.rsplit(" ", 1)[-1].strip()
        wait_for_serving(self.target, timeout_s=60, security=security)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture(scope="module")
def tools(tls, tmp_path_factory):
    srv = SecureService("tools", secure_flags(tls, "tools"), tmp_path_factory.mktemp("logs") / "tools.jsonl",
                        client(tls, token=None))  # the readiness probe needs TLS, not the token
    yield srv
    srv.stop()


def call(target: str, security: ClientSecurity | None, request=CALC) -> pb.ToolCallResponse:
    with make_channel(target, security) as channel:
        return tools_pb2_grpc.ToolsStub(channel).Call(request, timeout=10)


def refused(target: str, security: ClientSecurity | None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(target, security)
    return err.value


# ---- the mTLS + token service --------------------------------------------------------------
def test_right_certificate_and_token_work_sync_and_aio(tools, tls):
    assert json.loads(call(tools.target, client(tls)).result_json)["result"] == 42

    async def aio_call():
        async with make_channel(tools.target, client(tls), aio=True) as channel:
            return await tools_pb2_grpc.ToolsStub(channel).Call(CALC, timeout=10)
    assert json.loads(asyncio.run(aio_call()).result_json)["result"] == 42


def test_no_client_certificate_is_refused_in_the_handshake(tools, tls):
    assert refused(tools.target, client(tls, cert_from=None)).code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(tools, tls):
    assert refused(tools.target, client(tls, cert_from="other")).code() == grpc.StatusCode.UNAVAILABLE


def test_a_server_the_client_cannot_verify_is_refused(tools, tls):
    # the client trusts only the other CA: the tools certificate does not verify
    assert refused(tools.target, client(tls, ca="other", cert_from="other")).code() == grpc.StatusCode.UNAVAILABLE


def test_a_plaintext_client_is_refused(tools):
    assert refused(tools.target, None).code() == grpc.StatusCode.UNAVAILABLE


def test_a_missing_token_is_unauthenticated_with_a_clear_message(tools, tls):
    err = refused(tools.target, client(tls, token=None))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing bearer token" in err.details() and "authorization: Bearer <token>" in err.details()


def test_a_wrong_token_is_unauthenticated(tools, tls):
    err = refused(tools.target, client(tls, token="not-" + TOKEN))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")


def test_health_needs_no_token_but_reflection_does(tools, tls):
    with make_channel(tools.target, client(tls, token=None)) as channel:
        for service in ("", "inloop.v1.Tools"):
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                           timeout=5))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_client_commands_take_the_same_flags(tools, tls):
    ours = tls / "ours"
    base = [sys.executable, "-m", "inloop.services.cli", "health", tools.target, "--wait", "5"]
    ok = subprocess.run([*base, "--tls-ca", str(ours / "ca.crt"), "--tls-cert", str(ours / "loadgen.crt"),
                         "--tls-key", str(ours / "loadgen.key")],
                        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    env = {**os.environ, "INLOOP_TLS_CA": str(ours / "ca.crt"), "INLOOP_TLS_CERT": str(ours / "loadgen.crt"),
           "INLOOP_TLS_KEY": str(ours / "loadgen.key")}
    assert subprocess.run(base, cwd=REPO, env=env, capture_output=True, timeout=60, check=False).returncode == 0


# ---- refusing to start ---------------------------------------------------------------------
def test_a_non_loopback_plaintext_bind_exits_with_how_to_fix_it():
    env = {k: v for k, v in os.environ.items() if not k.startswith("INLOOP_")}
    done = subprocess.run([sys.executable, "-m", "inloop.services.cli", "tools", "serve", "--host", "0.0.0.0",
                           "--port", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode != 0
    assert "refusing to listen on 0.0.0.0 without TLS" in done.stderr
    assert "--plaintext" in done.stderr and "--tls-cert" in done.stderr and "inloop certs dev" in done.stderr


def test_server_settings_are_checked(tls):
    ours = tls / "ours"
    ns = lambda **kw: __import__("argparse").Namespace(**{"host": "127.0.0.1", **kw})
    with pytest.raises(SecurityError, match="missing --tls-key, --tls-ca"):
        server_security_from_args(ns(tls_cert=str(ours / "tools.crt")))
    with pytest.raises(SecurityError, match="choose TLS or plaintext"):
        server_security_from_args(ns(tls_cert=str(ours / "tools.crt"), tls_key=str(ours / "tools.key"),
                                     tls_ca=str(ours / "ca.crt"), plaintext=True))
    with pytest.raises(SecurityError, match="is not the key of"):
        server_security_from_args(ns(tls_cert=str(ours / "tools.crt"), tls_key=str(ours / "runtime.key"),
                                     tls_ca=str(ours / "ca.crt")))
    with pytest.raises(SecurityError, match="not a PEM file"):
        server_security_from_args(ns(tls_cert=str(tls / "token"), tls_key=str(ours / "tools.key"),
                                     tls_ca=str(ours / "ca.crt")))
    with pytest.raises(SecurityError, match="No such file"):
        server_security_from_args(ns(token_file=str(tls / "missing")))
    assert server_security_from_args(ns(host="0.0.0.0", plaintext=True)).plaintext
    secured = server_security_from_args(ns(host="0.0.0.0", token_file=str(tls / "token"), tls_cert=str(
        ours / "tools.crt"), tls_key=str(ours / "tools.key"), tls_ca=str(ours / "ca.crt")))
    assert secured.tls and secured.token == TOKEN
    with pytest.raises(SecurityError, match="needs both --tls-cert and --tls-key"):
        client_security_from_args(ns(tls_cert=str(ours / "loadgen.crt")), env={})
    from_env = client_security_from_args(None, env={"INLOOP_TLS_CA": str(ours / "ca.crt"),
                                                    "INLOOP_TOKEN_FILE": str(tls / "token")})
    assert from_env.tls and from_env.token == TOKEN and from_env.cert_pem is None


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("::", False), ("10.0.0.5", False), ("gpu-host", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback
    if not loopback:
        with pytest.raises(SecurityError):
            create_server(["x"], host=host, port=0)


def test_the_token_check_compares_values():
    check = BearerTokenInterceptor(TOKEN)
    assert check.problem([("authorization", f"Bearer {TOKEN}")]) is None
    assert check.problem([("x-other", "1"), ("authorization", "Bearer nope"),
                          ("authorization", f"Bearer {TOKEN}")]) is None
    assert check.problem([]).startswith("missing bearer token")
    assert check.problem([("authorization", "Basic abc")]).startswith("malformed authorization")
    assert check.problem([("authorization", f"Bearer {TOKEN}x")]) == "invalid bearer token"
    # the scheme is case-insensitive (RFC 7235), the token is not
    assert check.problem([("authorization", f"bearer {TOKEN}")]) is None
    assert check.problem([("authorization", f"BEARER  {TOKEN} ")]) is None
    assert check.problem([("authorization", f"Bearer {TOKEN.upper()}")]) == "invalid bearer token"


def test_only_the_allowed_certificate_names_may_call(tools, tls):
    """Any certificate of the CA used to be able to call any service: the tools service
    takes the controller and the loadgen by default, not the runtime (nor the tools itself)."""
    assert json.loads(call(tools.target, client(tls, identity="controller")).result_json)["result"] == 42
    for name in ("runtime", "tools"):
        err = refused(tools.target, client(tls, identity=name))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and f"certificate {name} may not" in err.details()
    with make_channel(tools.target, client(tls, identity="runtime")) as channel:  # health stays open
        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_allow_peer_widens_who_may_call(tls, tmp_path):
    srv = SecureService("tools", [*secure_flags(tls, "tools"), "--allow-peer", "runtime"], tmp_path / "t.jsonl",
                        client(tls, token=None))
    try:
        assert json.loads(call(srv.target, client(tls, identity="runtime")).result_json)["result"] == 42
        assert refused(srv.target, client(tls, identity="loadgen")).code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        srv.stop()


# ---- plaintext on loopback with a token: the client interceptor, every call shape ----------
def test_token_over_plaintext_loopback_on_streaming_calls():
    """Reflection is a stream-stream RPC: the token must travel on it, sync and aio."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def body() -> None:
        handle = create_server(["inloop.v1.Probe"], host="127.0.0.1", port=0, security=ServerSecurity(token=TOKEN))
        await handle.start()
        try:
            async with make_channel(handle.address, ClientSecurity(token=TOKEN), aio=True) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                replies = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
                assert "inloop.v1.Probe" in {s.name for s in replies[0].list_services_response.service}

            def sync_calls():
                for token, ok in ((TOKEN, True), (None, False)):
                    with make_channel(handle.address, ClientSecurity(token=token)) as channel:
                        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                        try:
                            list(stub.ServerReflectionInfo(iter([request]), timeout=5))
                            assert ok
                        except grpc.RpcError as exc:
                            assert not ok and exc.code() == grpc.StatusCode.UNAUTHENTICATED
            await asyncio.to_thread(sync_calls)
        finally:
            await handle.server.stop(0)
    asyncio.run(body())


# ---- the whole mesh under mTLS: the controller's hops carry its certificate and token ------
def test_controller_hops_use_mtls_and_the_token(tls, tools, tmp_path):
    from inloop.services.runtime.model.tiny import make_tiny

    model = make_tiny("llama", tmp_path / "tiny")
    task_id = f"mtls-{os.getpid()}-{id(tmp_path)}"
    runtime = SecureService("runtime", ["--model", str(model), "--backend", "cpu", *secure_flags(tls, "runtime")],
                            tmp_path / "runtime.jsonl", client(tls, token=None))
    try:
        controller = SecureService("controller", ["--runtime", runtime.target, "--tools", tools.target,
                                                  *secure_flags(tls, "controller")],
                                   tmp_path / "controller.jsonl", client(tls, token=None))
        try:
            # setup_json makes the controller write to the tools service before the first
            # model step: a deterministic tools hop, whatever the random model then writes
            req = rpb.TaskRequest(task_id=task_id, max_steps=1, deadline_ms=30_000,
                                  setup_json=json.dumps({"kv": {"probe": 7}}),
                                  sampling=rpb.SamplingParams(max_tokens=8),
                                  messages=[rpb.ChatMessage(role="user", content="Hello")])
            with make_channel(controller.target, client(tls)) as channel:
                result = controller_pb2_grpc.ControllerStub(channel).RunTask(req, timeout=60)
        finally:
            controller.stop()
    finally:
        runtime.stop()
    steps = [(s.kind, s.status, s.error_type) for s in result.steps]
    model_steps = [s for s in result.steps if s.kind == "model"]
    assert model_steps and model_steps[0].status == "ok", steps       # controller -> runtime over mTLS
    get = pb.ToolCallRequest(name="kv", arguments_json=json.dumps({"op": "get", "key": "probe"}), session=task_id)
    assert json.loads(call(tools.target, client(tls), get).result_json)["value"] == 7  # controller -> tools
