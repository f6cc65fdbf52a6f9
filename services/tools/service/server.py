"""The tools service's gRPC servicer: thin, over the registry, with fault injection.

`Tools.Call`, in order:
  1. fault headers parsed over the service default  (bad header -> INVALID_ARGUMENT)
  2. concurrency gate                               (full -> RESOURCE_EXHAUSTED)
  3. the attempt is counted under its fault key; an injected delay is slept (asyncio, so
     a cancelled call stops waiting), then an injected abort ends the call
  4. a call whose deadline has passed is not executed (DEADLINE_EXCEEDED)
  5. arguments parsed and checked, the tool runs     (bad input -> INVALID_ARGUMENT)
Faults act before the tool, so an aborted or expired attempt never changes state.
Oversized requests never reach us: gRPC's own max_receive_message_length refuses them
with RESOURCE_EXHAUSTED. Anything unexpected is INTERNAL, logged with its traceback;
the service keeps serving.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc

from inloop.services.common import metrics
from inloop.services.common.grpc_server import create_server, serve_until_signal
from inloop.services.common.logging import get_logger
from inloop.services.contract import validation
from inloop.services.contract.errors import FaultSpecError, InvalidRequest, ToolError
from inloop.services.contract.faults import FaultSpec
from inloop.services.contract.tool_schema import TOOL_SCHEMAS
from inloop.services.tools.registry import TOOLS, execute
from inloop.services.tools.service.faults import FaultDecision, FaultInjector
from inloop.services.tools.state import StateUnavailable, StoreBase
from inloop.v1 import tools_pb2 as pb
from inloop.v1 import tools_pb2_grpc

log = get_logger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Tools"].full_name  # "inloop.v1.Tools"
# Tool calls carry a receipt or a query, not documents: 1 MiB is generous, and a smaller
# limit turns a runaway caller into a clear RESOURCE_EXHAUSTED instead of memory use.
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_KEY_CHARS = 256
TOOL_TIMEOUT_S = 5.0     # a tool runs in milliseconds; past this it is a bug, answered DEADLINE_EXCEEDED
TOOL_THREADS = 4         # tools run off the event loop, so health and other calls stay answered


class Rejected(Exception):
    """Ends a call with `code`; raised inside, turned into context.abort at the top."""

    def __init__(self, code: grpc.StatusCode, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def parse_arguments(text: str) -> dict:
    """The arguments object; "" means no arguments (what OpenAI sends for a no-arg tool).
    The contract's JSON check refuses NaN, numbers beyond float range and deep nesting."""
    if not text.strip():
        return {}
    try:
        return validation.parse_json("arguments_json", text)
    except InvalidRequest as exc:
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT,
                       f"{exc}; send one JSON object, e.g. {{\"expression\": \"2+3\"}}") from None


def check_names(request: pb.ToolCallRequest) -> None:
    """The call's session and idempotency key name state that lives on: bounded, printable."""
    for field in ("session", "idempotency_key", "call_id"):
        try:
            validation.header_text(field, getattr(request, field), MAX_KEY_CHARS)
        except InvalidRequest as exc:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None


class ToolsServicer(tools_pb2_grpc.ToolsServicer):
    def __init__(self, state: StoreBase, default_faults: FaultSpec = FaultSpec(),
                 injector: FaultInjector | None = None, max_concurrency: int = 64):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, not {max_concurrency}")
        self.state = state
        self.default_faults = default_faults
        self.injector = injector or FaultInjector()
        self._pool = ThreadPoolExecutor(TOOL_THREADS, thread_name_prefix="tool")
        self.max_concurrency = max_concurrency
        self.in_flight = 0  # only touched on the event loop's thread: no lock needed
        metrics.track_queue_depth("tools", lambda: self.in_flight)
        metrics.track_state("tools", "kv_bytes", lambda: state.used_bytes)
        metrics.track_state("tools", "sessions", lambda: state.stats()["sessions"])

    async def List(self, request: pb.ListToolsRequest, context) -> pb.ListToolsResponse:
        return pb.ListToolsResponse(tools=[
            pb.ToolDefinition(name=s.name, description=s.description, parameters_json=json.dumps(s.parameters))
            for s in TOOL_SCHEMAS.values()])

    async def Call(self, request: pb.ToolCallRequest, context) -> pb.ToolCallResponse:
        call_id = request.call_id or uuid.uuid4().hex
        started = time.perf_counter()
        fields = {"call_id": call_id, "tool": request.name, "session": request.session}
        decision: FaultDecision | None = None
        try:
            spec = self._fault_spec(context)
            if self.in_flight >= self.max_concurrency:
                raise Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the tools service is at its limit of {self.max_concurrency} "
                               "concurrent calls; retry with backoff")
            self.in_flight += 1
            try:
                check_names(request)
                decision = self.injector.decide(spec)
                await self._inject(decision, context)
                response = await self._run_off_loop(request, call_id, context)
            finally:
                self.in_flight -= 1
        except Rejected as exc:
            self._log(exc.code, started, fields, decision, detail=exc.detail)
            await context.abort(exc.code, exc.detail)  # raises: ends the RPC
        except asyncio.CancelledError:  # the caller cancelled, or its deadline passed mid-delay
            # gRPC cancels the handler when the deadline passes; on a loaded host that can come
            # before the delay's own deadline check, so the log says which of the two it was.
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                self._log(grpc.StatusCode.DEADLINE_EXCEEDED, started, fields, decision,
                          detail="deadline passed during an injected delay; the tool did not run")
            else:
                self._log(grpc.StatusCode.CANCELLED, started, fields, decision, detail="cancelled by the caller")
            raise
        self._log(grpc.StatusCode.OK, started, fields, decision, replayed=response.replayed)
        return response

    # ---- steps --------------------------------------------------------------------
    def _fault_spec(self, context) -> FaultSpec:
        try:
            return self.default_faults.with_headers(context.invocation_metadata())
        except FaultSpecError as exc:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, f"bad fault header: {exc}") from None

    async def _inject(self, decision: FaultDecision, context) -> None:
        """Sleep an injected delay (never past the deadline), then an injected abort."""
        if decision.delay_s:
            metrics.observe_fault("delay")
            remaining = context.time_remaining()
            if remaining is not None and remaining < decision.delay_s:
                # The caller gives up first: wait only as long as it waits, then stop,
                # so the tool never runs for a caller that is gone.
                await asyncio.sleep(max(remaining, 0.0))
                raise Rejected(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"deadline passed during an injected delay of {decision.delay_s * 1e3:.0f} ms "
                               f"(fault key {decision.key!r}, attempt {decision.attempt}); the tool did not run")
            await asyncio.sleep(decision.delay_s)
        if decision.abort is not None:
            metrics.observe_fault("abort")
            raise Rejected(decision.abort, decision.abort_message)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise Rejected(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the tool ran")

    async def _run_off_loop(self, request: pb.ToolCallRequest, call_id: str, context) -> pb.ToolCallResponse:
        """The tool on a worker thread, bounded by the call's deadline and TOOL_TIMEOUT_S. A
        write keeps its idempotency record even if the caller is gone by then: its retry
        (same key) is answered from the record."""
        remaining = context.time_remaining()
        timeout = TOOL_TIMEOUT_S if remaining is None else max(min(remaining, TOOL_TIMEOUT_S), 0.0)
        work = asyncio.get_running_loop().run_in_executor(self._pool, self._run, request, call_id)
        try:
            return await asyncio.wait_for(work, timeout)
        except asyncio.TimeoutError:
            raise Rejected(grpc.StatusCode.DEADLINE_EXCEEDED,
                           f"tool {request.name!r} ran past {timeout:.3f} s (the call's deadline or "
                           f"{TOOL_TIMEOUT_S:g} s)") from None

    def _run(self, request: pb.ToolCallRequest, call_id: str) -> pb.ToolCallResponse:
        args = parse_arguments(request.arguments_json)
        try:
            outcome = execute(self.state, request.name, args, request.idempotency_key, request.session)
        except ToolError as exc:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except StateUnavailable as exc:  # the store is down or contended: nothing was applied, retry
            log.warning("state_unavailable", call_id=call_id, tool=request.name, error=str(exc))
            raise Rejected(grpc.StatusCode.UNAVAILABLE, f"{exc}; the call was not applied, retry it") from None
        except Exception as exc:  # a bug in a tool: report it (the log has the traceback), keep serving
            log.error("tool_failed", call_id=call_id, tool=request.name, exc_info=exc)
            raise Rejected(grpc.StatusCode.INTERNAL, f"internal error in tool {request.name!r} "
                                                     f"(call {call_id}); the service log has the details") from None
        return pb.ToolCallResponse(result_json=json.dumps(outcome.result, ensure_ascii=False),
                                   call_id=call_id, replayed=outcome.replayed)

    def _log(self, code: grpc.StatusCode, started: float, fields: dict,
             decision: FaultDecision | None, **extra) -> None:
        if decision is not None:
            fields = {**fields, "fault_key": decision.key, "attempt": decision.attempt,
                      "injected_delay_ms": round(decision.delay_s * 1e3),
                      "injected_abort": decision.abort.name if decision.abort else None}
        ms = round((time.perf_counter() - started) * 1e3, 3)
        log.info("tool_call", code=code.name, ms=ms, **fields, **extra)


async def serve(state: StoreBase, *, host: str = "127.0.0.1", port: int = 0,
                default_faults: FaultSpec = FaultSpec(), max_concurrency: int = 64,
                grace_s: float = 5.0, max_message_bytes: int = MAX_MESSAGE_BYTES, security=None) -> str:
    """Serve until SIGTERM/SIGINT, then stop gracefully; returns what stopped it.

    `security` (a services.common.security.ServerSecurity) adds mTLS and the token check.
    """
    servicer = ToolsServicer(state, default_faults, max_concurrency=max_concurrency)
    handle = create_server([SERVICE_NAME], host=host, port=port, max_message_bytes=max_message_bytes,
                           interceptors=[metrics.RpcMetricsInterceptor()], security=security)
    tools_pb2_grpc.add_ToolsServicer_to_server(servicer, handle.server)
    await handle.start()
    await handle.set_serving()  # nothing to load: the corpus was indexed before we bound
    log.info("serving", address=handle.address, tools=list(TOOLS), max_concurrency=max_concurrency,
             state=state.describe(),
             default_faults=default_faults.to_dict(), max_message_bytes=max_message_bytes)
    print(f"inloop tools listening on {handle.address}", flush=True)
    reason = await serve_until_signal(handle, grace_s)
    log.info("stopped", reason=reason, faults=servicer.injector.snapshot(), **state.stats())
    return reason
