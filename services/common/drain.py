"""Draining on SIGTERM: calls still open when the grace period runs out end with a typed,
retryable status instead of being cut.

gRPC's own `server.stop(grace)` cancels whatever is still running at the end of the grace
period, and a client then sees CANCELLED (or a stream that just stops), which says nothing
about why. `Drain` ends those calls a little before that, on our terms: the handler is
cancelled where it waits (its `finally` blocks run: a generation stops, a slot is freed) and
the call ends UNAVAILABLE, "shutting down", which every retry policy treats as "try again,
elsewhere". The HTTP front listens to the same `Drain` and ends its SSE streams with an error
event.

    drain = Drain()
    server = grpc.aio.server(interceptors=[..., DrainInterceptor(drain)])
    drain.begin(grace_s)          # on SIGTERM, beside server.stop(grace_s)
"""
from __future__ import annotations

import asyncio
import inspect

import grpc

# Health and reflection are quick and answer NOT_SERVING during the drain; not wrapped.
UNWRAPPED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class Drain:
    """The shutdown clock shared by the gRPC interceptor and the HTTP front."""

    def __init__(self):
        self.begun = False
        self.grace_s = 0.0
        self._open: dict[asyncio.Task, bool] = {}  # the RPC's task -> inside the handler right now
        self._expired: asyncio.Event | None = None
        self._drained: set[asyncio.Task] = set()

    @staticmethod
    def margin(grace_s: float) -> float:
        """How long before gRPC's own cut we end the open calls: time for the status to go out."""
        return min(0.5, grace_s / 4)

    @property
    def expired_event(self) -> asyncio.Event:
        if self._expired is None:
            self._expired = asyncio.Event()
        return self._expired

    @property
    def expired(self) -> bool:
        return self._expired is not None and self._expired.is_set()

    def message(self) -> str:
        return (f"the service is shutting down and this call did not finish within its grace period "
                f"({self.grace_s:g} s); retry it (another replica, or this one once it is back)")

    def begin(self, grace_s: float) -> None:
        """Start the clock: at grace_s - margin, end what is still open."""
        if self.begun:
            return
        self.begun, self.grace_s = True, grace_s
        asyncio.get_running_loop().call_later(max(grace_s - self.margin(grace_s), 0.0), self._expire)

    def _expire(self) -> None:
        self.expired_event.set()
        for task, inside in list(self._open.items()):
            if inside and not task.done():
                # The task waits inside the handler (not in gRPC's own code): safe to cancel there.
                self._drained.add(task)
                task.cancel()

    # ---- per call (used by DrainInterceptor) --------------------------------------------------
    def enter(self) -> asyncio.Task:
        task = asyncio.current_task()
        self._open[task] = False
        return task

    def inside(self, task: asyncio.Task, flag: bool) -> None:
        self._open[task] = flag

    def leave(self, task: asyncio.Task) -> None:
        self._open.pop(task, None)
        self._drained.discard(task)

    def was_drained(self, task: asyncio.Task) -> bool:
        if task in self._drained:
            self._drained.discard(task)
            task.uncancel()  # our cancel, handled here: the call goes on to send its status
            return True
        return False


class DrainInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every RPC (all four shapes) so that `Drain` can end it typed at the grace's end."""

    def __init__(self, drain: Drain):
        self.drain = drain

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(UNWRAPPED_PREFIXES):
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._call(handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._call(handler.stream_unary), handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer)

    def _call(self, behavior):
        drain = self.drain

        async def call(request, context):
            task = drain.enter()
            try:
                drain.inside(task, True)
                try:
                    return await behavior(request, context)
                except asyncio.CancelledError:
                    if not drain.was_drained(task):
                        raise
            finally:
                drain.leave(task)
            await context.abort(grpc.StatusCode.UNAVAILABLE, drain.message())
        return call

    def _stream(self, behavior):
        drain = self.drain

        async def stream(request, context):
            task = drain.enter()
            try:
                produced = behavior(request, context)
                if not inspect.isasyncgen(produced):  # a coroutine that writes with context.write
                    drain.inside(task, True)
                    try:
                        await produced
                        return
                    except asyncio.CancelledError:
                        if not drain.was_drained(task):
                            raise
                else:
                    try:
                        while not drain.expired:
                            drain.inside(task, True)
                            try:
                                item = await produced.__anext__()
                            except StopAsyncIteration:
                                return
                            finally:
                                drain.inside(task, False)
                            yield item  # gRPC writes it: not ours to cancel meanwhile
                    except asyncio.CancelledError:
                        if not drain.was_drained(task):
                            raise
                    finally:
                        await produced.aclose()  # the handler's finally blocks (stop the generation)
            finally:
                drain.leave(task)
            await context.abort(grpc.StatusCode.UNAVAILABLE, drain.message())
        return stream
