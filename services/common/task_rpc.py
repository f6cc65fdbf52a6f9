"""Both ends of a RunTask call, shared by the controller (the external route) and the runtime
(the internal route): take the request as a TaskSpec or abort the call with INVALID_ARGUMENT,
and report a finished task (the task metric, one log line, the TaskResult)."""
from __future__ import annotations

import asyncio

import grpc

from inloop.services.common import metrics
from inloop.services.common.task_convert import outcome_to_proto, task_from_proto
from inloop.services.common.telemetry import current_trace_id
from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.task import TaskOutcome, TaskSpec
from inloop.v1 import runtime_pb2 as pb


async def accept_task(request: pb.TaskRequest, context: grpc.aio.ServicerContext, log) -> TaskSpec:
    """The task, with the call's remaining deadline; a bad request ends the call here."""
    try:
        return task_from_proto(request, context.time_remaining())
    except InvalidRequest as exc:
        log.info("task_rejected", task_id=request.task_id, detail=str(exc))
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise  # abort raises; this line only satisfies the type checker


async def guarded(run, task: TaskSpec, context: grpc.aio.ServicerContext, log):
    """Await a task's run; a bug in it ends the call INTERNAL naming the task (the log has the
    traceback), never UNKNOWN with an exception's class path."""
    try:
        return await run
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line between a bug and the caller
        log.error("task_failed", task_id=task.task_id, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL,
                            f"internal error in task {task.task_id}; the service's log has the details")


def finish_task(outcome: TaskOutcome, route: str, request: pb.TaskRequest, log) -> pb.TaskResult:
    metrics.observe_task(route, outcome.latency_ms / 1e3, outcome.error_type)
    log.info("task_done", task_id=outcome.task_id, route=route, ok=outcome.ok, error_type=outcome.error_type,
             steps=len(outcome.steps), retries=outcome.retries, latency_ms=round(outcome.latency_ms, 1))
    return outcome_to_proto(outcome, route, request.family, trace_id=current_trace_id())
