"""A channel from make_channel is back within about a second of its peer returning (gRPC's
default reconnect backoff grows to minutes: after a 25 s outage the controller needed 15 s)."""
from __future__ import annotations

import asyncio
import socket
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from inloop.services.common.grpc_client import make_channel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def ok(stub) -> bool:
    try:
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.2)
        return True
    except grpc.RpcError:
        return False


def test_a_channel_reconnects_within_about_a_second_of_the_peer_returning():
    async def scenario() -> float:
        port = free_port()
        server = await start(port)
        channel = make_channel(f"127.0.0.1:{port}", aio=True)
        stub = health_pb2_grpc.HealthStub(channel)
        assert await ok(stub)
        await server.stop(0)
        outage_end = time.monotonic() + 12.0  # the default backoff (1 s x 1.6^n) would wait ~4 s more
        while time.monotonic() < outage_end:
            assert not await ok(stub)
            await asyncio.sleep(0.2)
        server = await start(port)
        back = time.monotonic()
        while not await ok(stub):
            await asyncio.sleep(0.05)
            assert time.monotonic() - back < 10, "never reconnected"
        took = time.monotonic() - back
        await channel.close()
        await server.stop(0)
        return took

    assert asyncio.run(scenario()) < 1.5
