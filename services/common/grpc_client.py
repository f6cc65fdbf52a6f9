"""Client-side gRPC helpers: channels with our message limits, and readiness waits.

Every call an inloop client makes carries a deadline (`timeout=`); these helpers only
build channels and wait for a server's standard health service to say SERVING.

    security = client_security_from_args(args)          # --tls-*, --token-file, env INLOOP_*
    with make_channel("10.0.0.5:50051", security) as channel: ...
    channel = make_channel(target, security, aio=True)   # grpc.aio, e.g. the controller's hops

Every channel carries the OpenTelemetry client interceptors; with a `ClientSecurity` it is
TLS (client certificate when given) and sends the bearer token on every call.
"""
from __future__ import annotations

import json
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inloop.services.common.grpc_server import MAX_MESSAGE_BYTES
from inloop.services.common.security import ClientSecurity, client_security_from_args  # noqa: F401 - re-exported
from inloop.services.common.telemetry import aio_client_interceptors, intercept_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Keep idle channels alive across NAT / the lab's network namespaces; the server
        # side permits pings this often (see grpc_server.server_options).
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # Reconnect within about a second of a peer coming back: gRPC's default backoff grows
        # to 120 s, so after a 25 s outage the first success came 15 s after the peer was up.
        # (Not min_reconnect_backoff_ms: it is also the connect timeout, and a peer that accepts
        # but never answers must fail a call by its deadline, not as UNAVAILABLE.)
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # Spread calls over every address the target resolves to (a Kubernetes headless service's
        # pods, or "ipv4:10.0.0.5:50061,10.0.0.6:50061"): gRPC's default pick_first would pin a
        # long-lived channel to one replica. One address behaves as before.
        ("grpc.service_config", ROUND_ROBIN),
    ]


def make_channel(target: str, security: ClientSecurity | None = None, aio: bool = False,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
    """A channel to `target` whose calls carry a CLIENT span, the W3C traceparent and, with
    `security`, TLS credentials and the bearer token. `aio=True` gives a grpc.aio channel."""
    security = security or ClientSecurity()
    options = channel_options(max_message_bytes)
    credentials = security.channel_credentials()
    if aio:
        interceptors = [*aio_client_interceptors(), *security.aio_interceptors()]
        if credentials is not None:
            return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    channel = (grpc.secure_channel(target, credentials, options=options) if credentials is not None
               else grpc.insecure_channel(target, options=options))
    token = security.sync_interceptors()
    if token:
        channel = grpc.intercept_channel(channel, *token)
    return intercept_channel(channel)


def insecure_channel(target: str, max_message_bytes: int = MAX_MESSAGE_BYTES) -> grpc.Channel:
    """A plaintext channel whose calls carry a CLIENT span and the W3C traceparent."""
    return make_channel(target, None, aio=False, max_message_bytes=max_message_bytes)


def aio_insecure_channel(target: str, max_message_bytes: int = MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    return make_channel(target, None, aio=True, max_message_bytes=max_message_bytes)


def check_health(channel: grpc.Channel, service: str = "", timeout_s: float = 1.0) -> int:
    """One Health.Check with a deadline; returns the ServingStatus (raises grpc.RpcError)."""
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    return reply.status


def wait_for_serving(target: str, timeout_s: float = 30.0, service: str = "",
                     poll_s: float = 0.1, security: ClientSecurity | None = None) -> None:
    """Block until target's health service reports SERVING for `service`.

    Each probe has its own short deadline (a server that accepts the connection but
    hangs must not eat the whole budget). Raises TimeoutError with the last status seen.
    A TLS service needs `security` (Health itself needs no token).
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with make_channel(target, security) as channel:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{target} not SERVING after {timeout_s:.1f}s (last: {last})")
            try:
                status = check_health(channel, service, timeout_s=min(1.0, remaining))
                if status == SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
