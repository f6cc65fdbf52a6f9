"""The runtime's gRPC servicer: thin, over the scheduler.

Each RPC converts the proto, validates, submits to the scheduler and converts back.
Failures map to the status a client can act on:
  INVALID_ARGUMENT    bad input (the message names the field: "messages[0].role: ...")
  RESOURCE_EXHAUSTED  the wait queue is full
  UNAVAILABLE         the model is loading, or the server is shutting down
  CANCELLED / DEADLINE_EXCEEDED  the request was dropped before it ran
  INTERNAL            a bug; logged with its traceback, the server keeps serving
When the client cancels or its deadline passes, the request is cancelled in the
scheduler, so the worker stops at the next token instead of generating for nobody.
The scheduler logs every request that ran (`request_done`, with tokens and timings,
also for cancelled ones); this module logs every request it turned away.
"""
from __future__ import annotations

import asyncio
import uuid

import grpc

from inloop.services.common import generate_convert as convert
from inloop.services.common import metrics
from inloop.services.common.logging import get_logger
from inloop.services.common.task_rpc import accept_task, finish_task, guarded
from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.generation import MAX_TOKENS_LIMIT, GenerateRequest
from inloop.services.runtime.service.internal_route import run_internal
from inloop.services.runtime.service.scheduler import (
    NotReady, QueueFull, RequestCancelled, RequestExpired, RequestHandle, Scheduler,
)
from inloop.services.tools.state import StoreBase, ToolState
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import runtime_pb2_grpc

log = get_logger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Runtime"].full_name  # "inloop.v1.Runtime"

_STATUS = (  # exception type -> status code; the exception's message is the detail
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (RequestCancelled, grpc.StatusCode.CANCELLED),
    (RequestExpired, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code, str(exc)
    # a bug: the caller gets no class names or internals, the log has the traceback
    return grpc.StatusCode.INTERNAL, "internal error; the runtime's log has the details"


def _unless_expired(handle: RequestHandle, result):
    """A request the worker stopped at its deadline ends DEADLINE_EXCEEDED, not OK.

    The worker checks the deadline a hair before grpc does, so without this the client
    could get a truncated "cancelled" answer as a success.
    """
    if result.finish_reason == "cancelled" and handle.expired():
        raise RequestExpired(f"the deadline passed after {result.completion_tokens} tokens")
    return result


class RuntimeServicer(runtime_pb2_grpc.RuntimeServicer):
    def __init__(self, scheduler: Scheduler, max_tokens_limit: int = MAX_TOKENS_LIMIT,
                 tool_state: StoreBase | None = None, settings: dict[str, str] | None = None):
        self.scheduler = scheduler
        self.settings = dict(settings or {})  # the serve settings, reported by GetModelInfo
        self.max_tokens_limit = max_tokens_limit
        self.tool_state = tool_state or ToolState()
        metrics.track_queue_depth("runtime", lambda: self.scheduler.depth())

    async def RunTask(self, request: pb.TaskRequest, context: grpc.aio.ServicerContext):
        """The internal route: the whole agent loop in this process."""
        task = await accept_task(request, context, log)
        try:
            self.scheduler.engine  # noqa: B018 - raises NotReady while loading
        except NotReady as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        outcome = await guarded(run_internal(task, self.scheduler, self.tool_state), task, context, log)
        return finish_task(outcome, "internal", request, log)

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        req = await self._accept(request, context)
        handle = await self._submit(req, context)
        try:
            result = _unless_expired(handle, await handle.wait())
        except Exception as exc:
            await self._fail(context, req, "Generate", exc)
        finally:
            handle.cancel()  # a no-op when it finished; stops the worker when we were cancelled
        return convert.result_to_proto(result, req.request_id, self._model_name())

    async def GenerateStream(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        req = await self._accept(request, context)
        events: asyncio.Queue = asyncio.Queue()
        handle = await self._submit(req, context, on_token=events.put_nowait)
        finished = asyncio.ensure_future(handle.wait())
        # Runs after every token already posted to the loop, so None is always last.
        finished.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                yield convert.event_to_chunk(event)
            try:
                result = _unless_expired(handle, finished.result())
            except Exception as exc:
                await self._fail(context, req, "GenerateStream", exc)
        finally:
            handle.cancel()
            finished.cancel()
        yield convert.result_to_chunk(convert.result_to_proto(result, req.request_id, self._model_name()))

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext):
        try:
            info = self.scheduler.engine.info
        except NotReady as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return convert.info_to_proto(info, self.max_tokens_limit, self.scheduler.max_queue, self.settings)

    # ---- helpers ------------------------------------------------------------------
    async def _accept(self, request: pb.GenerateRequest, context) -> GenerateRequest:
        """Convert and validate before queueing, so bad input never waits behind others."""
        request_id = request.request_id or uuid.uuid4().hex
        try:
            req = convert.request_from_proto(request, request_id)
        except InvalidRequest as exc:
            await self._fail(context, GenerateRequest(request_id=request_id), "convert", exc)
        try:
            req.validate()
            try:
                req.sampling.validate(self.max_tokens_limit)
            except InvalidRequest as exc:
                raise exc.within("sampling") from None
        except InvalidRequest as exc:
            await self._fail(context, req, "validate", exc)
        return req

    async def _submit(self, req: GenerateRequest, context, on_token=None) -> RequestHandle:
        remaining = context.time_remaining()  # None without a client deadline
        try:
            handle = self.scheduler.submit(req, on_token=on_token, timeout_s=remaining)
        except (QueueFull, NotReady) as exc:
            await self._fail(context, req, "submit", exc)
        # Fires on cancel, deadline and normal end alike; cancelling a finished handle is a no-op.
        context.add_done_callback(lambda _ctx: handle.cancel())
        return handle

    async def _fail(self, context, req: GenerateRequest, stage: str, exc: BaseException):
        code, detail = status_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("request_failed", request_id=req.request_id, stage=stage, code=code.name,
                      detail=detail, exc_info=exc)
            detail = f"{detail} (request {req.request_id})"
        else:
            log.info("request_rejected", request_id=req.request_id, stage=stage, code=code.name, detail=detail)
        await context.abort(code, detail)  # raises: ends the RPC with this status

    def _model_name(self) -> str:
        return str(self.scheduler.engine.info.get("name", ""))
