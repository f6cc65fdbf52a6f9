"""The lab's delay relay alone, on loopback: a blocking echo server behind it, plain sockets in
front. Measures the delay and jitter it adds, checks that bytes keep their order under heavy
jitter, and that EOFs, refused upstreams and a stopped relay close connections cleanly."""
from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import statistics
import threading
import time

import pytest

from inloop.loadgen.lab.relay import Delay, DelayRelay, deliver_at, new_event_loop

pytestmark = pytest.mark.timeout(60)


# ---- helpers: an echo server, a relay in a thread, round trips ---------------------------------
@contextlib.contextmanager
def echo_server(close_after_greeting: bytes | None = None):
    """Echoes every byte back; on EOF it half-closes too. With `close_after_greeting` it
    sends that and closes at once instead (a server that ends the conversation)."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            if close_after_greeting is not None:
                conn.sendall(close_after_greeting)
                return
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield srv.getsockname()[:2]
    finally:
        stop.set()
        srv.close()


@contextlib.contextmanager
def relay_to(upstream, delay_ms: float, jitter_ms: float = 0.0, seed: int = 7):
    """A DelayRelay on its own event loop thread; yields (relay, (host, port))."""
    box, ready = {}, threading.Event()

    def run() -> None:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        relay = DelayRelay(tuple(upstream), Delay(delay_ms / 1e3, jitter_ms / 1e3), seed=seed)
        box["relay"], box["loop"] = relay, loop
        box["addr"] = loop.run_until_complete(relay.start("127.0.0.1", 0))
        ready.set()
        loop.run_forever()
        loop.run_until_complete(relay.stop())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box["relay"], box["addr"]
    finally:
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        thread.join(10)


def stop_relay(relay: DelayRelay) -> None:
    """Call relay.stop() on its own loop and wait for it."""
    asyncio.run_coroutine_threadsafe(relay.stop(), relay.loop).result(10)


def connect(addr) -> socket.socket:
    s = socket.create_connection(addr, timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        assert chunk, f"connection closed after {len(got)} of {n} bytes"
        got += chunk
    return got


def round_trips_ms(addr, n: int, size: int = 64) -> list[float]:
    with connect(addr) as s:
        out = []
        for i in range(n):
            msg = bytes([i % 256]) * size
            t0 = time.perf_counter()
            s.sendall(msg)
            assert recv_exactly(s, size) == msg
            out.append((time.perf_counter() - t0) * 1e3)
    return out


# ---- delay and jitter ----------------------------------------------------------------------------
def test_deliver_at_never_goes_backwards():
    rng = random.Random(3)
    last, t = 0.0, 0.0
    for _ in range(10_000):
        t += rng.uniform(0, 0.002)
        at = deliver_at(t, Delay(0.003, 0.003).hold(rng), last)
        assert at >= last and at >= t
        last = at
    # A later chunk with a shorter hold waits for the one ahead of it.
    assert deliver_at(1.0, 0.5, previous=3.0) == 3.0


def test_delay_bounds_are_checked():
    with pytest.raises(ValueError, match="jitter <= delay"):
        Delay(0.001, 0.002)
    with pytest.raises(ValueError):
        Delay(-0.001)


def test_each_way_delay_and_jitter_on_an_echo():
    delay, jitter = 5.0, 1.0
    with echo_server() as up:
        direct = statistics.median(round_trips_ms(up, 50))
        with relay_to(up, delay, jitter) as (relay, addr):
            rtts = round_trips_ms(addr, 100)
    holds_ms = [h * 1e3 for h in relay.stats.holds]   # read once the relay's thread has ended
    # A round trip holds one chunk each way: never less than 2 x (delay - jitter) ...
    assert min(rtts) >= 2 * (delay - jitter)
    # ... and about 2 x delay on the whole (the jitter averages out; scheduling adds a little).
    assert 2 * delay - 0.5 <= statistics.median(rtts) - direct < 2 * delay + 2.0, rtts
    # Inside the relay every hold lies in delay ± jitter (plus a late wake-up), and they spread.
    assert len(holds_ms) == 200
    assert min(holds_ms) >= delay - jitter
    assert statistics.median(holds_ms) < delay + jitter
    spread = statistics.pstdev(holds_ms)
    assert 0.3 < spread < 1.0, spread   # uniform ±1 ms: 1/sqrt(3) = 0.58 ms


def test_sub_millisecond_delay_is_not_rounded_up_to_whole_milliseconds():
    """epoll-based asyncio loops sleep in whole ms; 0.25 ms each way would become >= 2 ms a trip."""
    with echo_server() as up:
        direct = statistics.median(round_trips_ms(up, 100))
        with relay_to(up, 0.25) as (_, addr):
            rtts = round_trips_ms(addr, 300)
    extra = statistics.median(rtts) - direct
    assert 0.5 <= extra < 1.5, (extra, direct)


# ---- order ------------------------------------------------------------------------------------------
def test_order_is_kept_under_jitter_as_large_as_the_delay():
    payload = b"".join(i.to_bytes(4, "big") for i in range(50_000))   # 200 kB of counters
    with echo_server() as up, relay_to(up, 2.0, 2.0) as (relay, addr), connect(addr) as s:
        received = bytearray()

        def reader() -> None:
            while chunk := s.recv(65536):
                received.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        for i in range(0, len(payload), 100):   # many small writes: many chunks, each with its own draw
            s.sendall(payload[i:i + 100])
            if i % 5000 == 0:
                time.sleep(0.0005)
        s.shutdown(socket.SHUT_WR)
        t.join(20)
    assert bytes(received) == payload
    assert relay.stats.chunks > 20   # the relay really handled many separately delayed chunks


# ---- closing ------------------------------------------------------------------------------------------
def test_half_close_reaches_the_server_after_the_data_and_the_reply_comes_back():
    with echo_server() as up, relay_to(up, 1.0) as (relay, addr):
        with connect(addr) as s:
            s.sendall(b"hello, world")
            s.shutdown(socket.SHUT_WR)            # EOF travels behind the data
            got = b""
            while chunk := s.recv(100):
                got += chunk
        assert got == b"hello, world"             # the echo, then the server's own EOF
        deadline = time.monotonic() + 5
        while relay.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not relay.connections              # both EOFs delivered: the connection is gone


def test_server_that_closes_first_delivers_its_bytes_then_eof():
    with echo_server(close_after_greeting=b"bye") as up, relay_to(up, 1.0) as (_, addr), connect(addr) as s:
        assert recv_exactly(s, 3) == b"bye"
        assert s.recv(10) == b""


def test_refused_upstream_closes_the_client_at_once():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]    # nothing listens there once closed
    with relay_to(("127.0.0.1", closed_port), 1.0) as (relay, addr), connect(addr) as s:
        t0 = time.monotonic()
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 2
        assert relay.stats.refused_upstream == 1


def test_stopping_the_relay_closes_open_connections():
    with echo_server() as up, relay_to(up, 1.0) as (relay, addr), connect(addr) as s:
        s.sendall(b"x")
        assert recv_exactly(s, 1) == b"x"
        stop_relay(relay)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        with pytest.raises(OSError):
            connect(addr).close()
