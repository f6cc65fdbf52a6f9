"""Building and running an asyncio gRPC server the way every inloop service does.

Every server has the standard `grpc.health.v1.Health` service and server reflection
(so grpcurl / grpc_health_probe / Kubernetes probes work without our protos). Health
starts NOT_SERVING for the overall server ("") and for each named service; the service
calls `set_serving()` only once it can really answer (model loaded), and shutdown flips
everything to NOT_SERVING before the grace period, so load balancers drain first.

    handle = create_server(["inloop.v1.Runtime"], host="127.0.0.1", port=0)
    runtime_pb2_grpc.add_RuntimeServicer_to_server(servicer, handle.server)
    await handle.start()
    await handle.set_serving()
    await serve_until_signal(handle, grace_s=5.0)

Transport security comes from a `ServerSecurity` (services/common/security.py): mTLS
credentials on the port, the bearer-token interceptor, and the rule that a server
without TLS binds only loopback unless plaintext was chosen explicitly.
"""
from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from typing import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from inloop.services.common.drain import Drain, DrainInterceptor
from inloop.services.common.logging import get_logger
from inloop.services.common.security import ServerSecurity
from inloop.services.common.telemetry import server_interceptors, shutdown_tracing

log = get_logger(__name__)

# Large enough for long prompts and full uncertainty traces; the gRPC default is 4 MiB.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Accept client keepalive pings every 10 s even without active calls, so idle
        # channels between hosts (the split-host lab) are not torn down with GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


@dataclass
class ServerHandle:
    """A built server with its health servicer; `port` is the bound port (never 0)."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    host: str
    port: int
    tls: bool = False
    drain: Drain = field(default_factory=Drain)  # ends calls still open at the grace's end, typed

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        # The aio health servicer defaults "" to SERVING; we are not, until set_serving().
        await self._set_all(NOT_SERVING)
        await self.server.start()

    async def set_serving(self) -> None:
        await self._set_all(SERVING)

    async def set_not_serving(self) -> None:
        # Permanent: later set() calls are ignored, so nothing flips back mid-shutdown.
        await self.health.enter_graceful_shutdown()

    async def _set_all(self, status) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)


def create_server(
    service_names: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    security: ServerSecurity | None = None,
) -> ServerHandle:
    """A grpc.aio server bound to host:port (0 = a free port) with health and reflection.

    Add the service's own servicers to `handle.server` before `await handle.start()`.
    `security` (default: plaintext, loopback only) adds mTLS and the token check; a
    plaintext non-loopback bind without its explicit opt-in raises SecurityError.
    """
    security = security or ServerSecurity()
    security.check_bind(host)
    # Tracing first, so the server span is open (and records the status) when the token
    # check or the service's own interceptors refuse a call; the service's interceptors
    # (metrics) before the token check, so refused calls are counted too.
    # The drain last, nearest the handler: what it ends is still counted and traced.
    drain = Drain()
    server = grpc.aio.server(interceptors=[*server_interceptors(), *interceptors, *security.interceptors(),
                                           DrainInterceptor(drain)],
                             options=server_options(max_message_bytes))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    reflection.enable_server_reflection(
        (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    address = f"{host}:{port}"
    credentials = security.server_credentials()
    try:
        bound = (server.add_secure_port(address, credentials) if credentials is not None
                 else server.add_insecure_port(address))
    except RuntimeError as exc:  # newer grpc raises where older returned 0
        raise OSError(f"cannot bind {address}: {exc}") from None
    if bound == 0:  # grpc returns 0 instead of raising when the bind fails
        raise OSError(f"cannot bind {host}:{port} (in use, or not an address of this host)")
    return ServerHandle(server, health_servicer, names, host, bound, tls=credentials is not None, drain=drain)


async def serve_until_signal(handle: ServerHandle, grace_s: float = 5.0, on_drain=()) -> str:
    """Run until SIGTERM/SIGINT (or the server stops), then stop gracefully.

    On the signal: health goes NOT_SERVING, new RPCs are refused, running RPCs get
    `grace_s` seconds to finish; those still open just before it ends get UNAVAILABLE
    ("shutting down ... retry", services/common/drain.py), and gRPC cancels what is left.
    `on_drain` callables run at the signal (the runtime's HTTP front starts its own drain
    there, on the same clock). Returns what stopped it.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    signalled = asyncio.ensure_future(stop.wait())
    # Never cancel this one: grpc shares its future with shutdown(), which would then
    # raise CancelledError; it completes by itself once the server has stopped.
    terminated = asyncio.ensure_future(handle.server.wait_for_termination())
    try:
        await asyncio.wait({signalled, terminated}, return_when=asyncio.FIRST_COMPLETED)
        reason = received[0] if received else "server terminated"
        log.info("shutting_down", reason=reason, grace_s=grace_s)
        handle.drain.begin(grace_s)
        for begin in on_drain:
            begin()
        await handle.set_not_serving()
        await handle.server.stop(grace_s)
        await terminated
        # send the last spans before the process exits; off the event loop, since an exporter
        # whose collector does not answer retries for seconds, and the HTTP front's streams
        # still need the loop to end typed
        await asyncio.to_thread(shutdown_tracing)
        return reason
    finally:
        signalled.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
