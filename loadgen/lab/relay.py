"""The lab's userspace delay relay: a TCP proxy that holds every chunk for delay ± jitter.

    inloop lab relay --listen 10.77.0.2:50051 --upstream 10.77.0.1:50051 --delay-ms 0.25 --jitter-ms 0.05

The lab emulates the network between a GPU host and a CPU host in one VPC. Where the kernel
has `netem` the lab delays packets with `tc`; where it does not ("Specified qdisc kind is
unknown"), this relay sits on the path between the hosts instead. It accepts connections,
opens one upstream connection per accepted one, and relays bytes both ways; each chunk
read from one side is written to the other side no earlier than `delay + U(-jitter,
+jitter)` after it arrived. It never looks inside the bytes, so TLS runs end to end
between client and service (the client must dial an address that the service's
certificate names: the lab puts both hosts' addresses in every certificate).

Order: each direction is a FIFO delay line whose deliver-at times never decrease
(`deliver_at = max(arrival + hold, previous deliver_at)`), flushed by one timer, so
chunks leave in the order they came even when jitter draws a shorter hold for a later one.
TCP_NODELAY is set on both sockets: Nagle would otherwise add its own wait to small frames.

Timing: asyncio's default selector (epoll) sleeps in whole milliseconds, rounding up,
which would turn a 0.25 ms hold into ~1 ms. The relay's loop therefore uses
`selectors.SelectSelector`, whose select(2) timeout has microsecond resolution; the
lab's handful of connections is far below select's 1024-descriptor limit.

Closing: an EOF from one side is delivered (as a half-close, `write_eof`) after the data
before it; when both directions have carried their EOF the connection is closed. A reset or
error on either side aborts both at once, as a broken link would. A refused upstream closes
the accepted connection straight away.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import selectors
import signal
import socket
import sys
from collections import deque
from dataclasses import dataclass, field

HIGH_WATER = 4 * 1024 * 1024   # bytes held in one delay line before the source is paused
LOW_WATER = 1024 * 1024
PR_SET_TIMERSLACK = 29         # linux/prctl.h


@dataclass(frozen=True)
class Delay:
    """How long each chunk is held, in seconds: `delay_s` ± up to `jitter_s`, uniformly."""

    delay_s: float
    jitter_s: float = 0.0

    def __post_init__(self):
        if self.delay_s < 0 or self.jitter_s < 0 or self.jitter_s > self.delay_s:
            raise ValueError(f"need 0 <= jitter <= delay, got delay {self.delay_s}s jitter {self.jitter_s}s")

    def hold(self, rng: random.Random) -> float:
        return self.delay_s + (rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0)


def deliver_at(arrival: float, hold: float, previous: float) -> float:
    """When a chunk leaves: after its hold, but never before the chunk ahead of it."""
    return max(arrival + hold, previous)


@dataclass
class RelayStats:
    """What the relay did; `lateness` is how far after its deliver-at time a chunk really left."""

    connections: int = 0
    refused_upstream: int = 0
    chunks: int = 0
    bytes: int = 0
    lateness_sum_s: float = 0.0
    lateness_max_s: float = 0.0
    holds: list[float] = field(default_factory=list)   # recent arrival -> write times (s), for tests

    def as_dict(self) -> dict:
        mean = self.lateness_sum_s / self.chunks if self.chunks else 0.0
        return {"connections": self.connections, "refused_upstream": self.refused_upstream,
                "chunks": self.chunks, "bytes": self.bytes, "lateness_mean_us": round(mean * 1e6, 1),
                "lateness_max_us": round(self.lateness_max_s * 1e6, 1)}


class _DelayLine:
    """One direction of one connection: chunks from `src` reach `dst` after their hold, in order."""

    def __init__(self, relay: DelayRelay, conn: _Connection, src: asyncio.Transport, dst: asyncio.Transport):
        self.relay, self.conn, self.src, self.dst = relay, conn, src, dst
        self.loop = relay.loop
        self.queue: deque[tuple[float, float, bytes | None]] = deque()   # (deliver_at, arrival, data or EOF)
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.queued = 0
        self.dst_paused = False
        self.src_paused = False
        self.eof_delivered = False

    def push(self, data: bytes | None) -> None:
        now = self.loop.time()
        self.last = deliver_at(now, self.relay.delay.hold(self.relay.rng), self.last)
        self.queue.append((self.last, now, data))
        self.queued += len(data or b"")
        self._update_reading()
        if self.timer is None:
            self.timer = self.loop.call_at(self.last, self._flush)

    def set_dst_paused(self, paused: bool) -> None:
        self.dst_paused = paused
        self._update_reading()

    def _update_reading(self) -> None:
        """Pause the source while the line holds too much or the destination cannot take more."""
        want_pause = self.dst_paused or self.queued > HIGH_WATER
        if want_pause and not self.src_paused:
            self.src_paused = True
            self.src.pause_reading()
        elif self.src_paused and not self.dst_paused and self.queued < LOW_WATER and not self.src.is_closing():
            self.src_paused = False
            self.src.resume_reading()

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        stats = self.relay.stats
        while self.queue and self.queue[0][0] <= now:
            at, arrival, data = self.queue.popleft()
            late = now - at
            stats.lateness_sum_s += late
            stats.lateness_max_s = max(stats.lateness_max_s, late)
            if self.dst.is_closing():
                continue
            if data is None:
                self.eof_delivered = True
                try:
                    if self.dst.can_write_eof():
                        self.dst.write_eof()
                except OSError:   # the destination already went away (ENOTCONN): nothing left to say
                    self.conn.close(abort=True)
                    return
                self.conn.maybe_finished()
                continue
            self.dst.write(data)
            self.queued -= len(data)
            stats.chunks += 1
            stats.bytes += len(data)
            if len(stats.holds) < 100_000:
                stats.holds.append(now - arrival)
        self._update_reading()
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class _Side(asyncio.Protocol):
    """One socket of a relayed connection (the accepted client, or the upstream)."""

    def __init__(self, conn: _Connection):
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.outbound: _DelayLine | None = None   # the line that carries what this side sends
        self.inbound: _DelayLine | None = None    # the line that writes into this side

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.outbound.push(data)

    def eof_received(self) -> bool:
        self.outbound.push(None)
        return True   # keep the socket open: the other direction may still be sending

    def pause_writing(self) -> None:
        if self.inbound is not None:
            self.inbound.set_dst_paused(True)

    def resume_writing(self) -> None:
        if self.inbound is not None:
            self.inbound.set_dst_paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost(exc)


class _Connection:
    """An accepted client and its upstream connection, joined by two delay lines."""

    def __init__(self, relay: DelayRelay):
        self.relay = relay
        self.client = _ClientSide(self)
        self.upstream: _Side | None = None
        self.lines: list[_DelayLine] = []
        self.closed = False

    async def connect(self) -> None:
        loop, relay = self.relay.loop, self.relay
        try:
            _, self.upstream = await loop.create_connection(lambda: _Side(self), *relay.upstream)
        except OSError:
            relay.stats.refused_upstream += 1
            self.close(abort=True)
            return
        if self.closed:   # the client went away while we were connecting
            self.upstream.transport.abort()
            return
        c, u = self.client, self.upstream
        c.outbound = u.inbound = _DelayLine(relay, self, c.transport, u.transport)
        u.outbound = c.inbound = _DelayLine(relay, self, u.transport, c.transport)
        self.lines = [c.outbound, u.outbound]
        c.transport.resume_reading()

    def maybe_finished(self) -> None:
        if self.lines and all(line.eof_delivered for line in self.lines):
            self.close()

    def lost(self, exc: Exception | None) -> None:
        # exc is None only when we closed the socket ourselves; anything else breaks both ways.
        self.close(abort=exc is not None)

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for line in self.lines:
            line.cancel()
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None and not side.transport.is_closing():
                side.transport.abort() if abort else side.transport.close()
        self.relay.connections.discard(self)


class _ClientSide(_Side):
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        transport.pause_reading()   # nothing to relay to until the upstream connection is up
        relay = self.conn.relay
        relay.stats.connections += 1
        relay.connections.add(self.conn)
        task = relay.loop.create_task(self.conn.connect())
        relay.tasks.add(task)
        task.add_done_callback(relay.tasks.discard)


class DelayRelay:
    """A TCP relay to `upstream` (host, port) that holds each chunk for `delay` each way."""

    def __init__(self, upstream: tuple[str, int], delay: Delay, seed: int | None = None):
        self.upstream = upstream
        self.delay = delay
        self.rng = random.Random(seed)
        self.stats = RelayStats()
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port (0 = a free port); returns the bound address."""
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(lambda: _Connection(self).client, host, port,
                                                    reuse_address=True)
        return self.server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        """Stop listening and abort every open connection."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close(abort=True)
        for task in list(self.tasks):
            task.cancel()
        if self.server is not None:
            await self.server.wait_closed()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose timers wake within microseconds (see the module docstring).

    Also shrinks the calling thread's timer slack (prctl PR_SET_TIMERSLACK) from Linux's
    default 50 us to 1 ns, so the kernel does not batch the relay's wake-ups late: measured
    on a loaded 2-core host, a chunk then leaves ~30 us after its deliver-at time instead of
    ~90 us. Call it in the thread that will run the loop.
    """
    _tighten_timer_slack()
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def _tighten_timer_slack() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the default slack only costs accuracy
        pass


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


async def _serve(args: argparse.Namespace) -> None:
    relay = DelayRelay(args.upstream, Delay(args.delay_ms / 1e3, args.jitter_ms / 1e3), args.seed)
    host, port = await relay.start(*args.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"inloop lab relay listening on {host}:{port} -> {args.upstream[0]}:{args.upstream[1]}, "
          f"delay {args.delay_ms} ms ± {args.jitter_ms} ms each way, scheduling {args.priority}", flush=True)
    await stop.wait()
    await relay.stop()
    print("relay stats " + json.dumps(relay.stats.as_dict()), flush=True)


def raise_priority() -> str:
    """Run ahead of the services on a busy host, as a network would; returns what was granted.

    The relay stands in for a link, which does not wait for a CPU: on a 2-core host shared
    with the runtime, a relay at normal priority was measured to send chunks ~0.5 ms late on
    average (11 ms at worst), more than the delay it emulates. SCHED_FIFO (lowest real-time
    priority) lets its wake-ups preempt ordinary processes; it sleeps between chunks, so it
    takes little CPU. Without the privilege, a nice value of -10; else nothing.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return "SCHED_FIFO 1"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        return "nice -10"
    except OSError:
        return "normal"


def _cmd(args: argparse.Namespace) -> int:
    try:
        Delay(args.delay_ms / 1e3, args.jitter_ms / 1e3)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.priority = raise_priority() if args.raise_priority else "normal"
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_serve(args))
    return 0


def register_relay(lsub) -> None:
    """Add `relay` to the `inloop lab` sub-commands."""
    p = lsub.add_parser("relay", help="run the userspace delay relay alone (the lab starts it itself)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT", help="where clients connect")
    p.add_argument("--upstream", type=_address, required=True, metavar="HOST:PORT", help="where to relay to")
    p.add_argument("--delay-ms", type=float, default=0.25, help="hold per chunk, each way (default 0.25)")
    p.add_argument("--jitter-ms", type=float, default=0.05,
                   help="uniform ± on the hold, at most --delay-ms (default 0.05)")
    p.add_argument("--seed", type=int, default=None, help="seed of the jitter draws (default: random)")
    p.add_argument("--raise-priority", action=argparse.BooleanOptionalAction, default=True,
                   help="run as SCHED_FIFO (else nice -10) so that busy services do not delay the relay "
                        "beyond its setting (default on; needs root)")
    p.set_defaults(func=_cmd)
