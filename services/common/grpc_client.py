"""Client-side gRPC helpers: channels with our message limits, and readiness waits.

Every call an inloop client makes carries a deadline (`timeout=`); these helpers only
build channels and wait for a server's standard health service to say SERVING.
"""
from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_server import MAX_MESSAGE_BYTES
from services.common.telemetry import aio_client_interceptors, intercept_channel

SERVING = health_pb2.HealthCheckResponse.SERVING


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Keep idle channels alive across NAT / the lab's network namespaces; the server
        # side permits pings this often (see grpc_server.server_options).
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]


def insecure_channel(target: str, max_message_bytes: int = MAX_MESSAGE_BYTES) -> grpc.Channel:
    """A channel whose calls carry a CLIENT span and the W3C traceparent."""
    return intercept_channel(grpc.insecure_channel(target, options=channel_options(max_message_bytes)))


def aio_insecure_channel(target: str, max_message_bytes: int = MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=channel_options(max_message_bytes),
                                     interceptors=aio_client_interceptors())


def check_health(channel: grpc.Channel, service: str = "", timeout_s: float = 1.0) -> int:
    """One Health.Check with a deadline; returns the ServingStatus (raises grpc.RpcError)."""
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    return reply.status


def wait_for_serving(target: str, timeout_s: float = 30.0, service: str = "",
                     poll_s: float = 0.1) -> None:
    """Block until target's health service reports SERVING for `service`.

    Each probe has its own short deadline (a server that accepts the connection but
    hangs must not eat the whole budget). Raises TimeoutError with the last status seen.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with insecure_channel(target) as channel:
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
