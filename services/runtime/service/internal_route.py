"""The internal route: the agent loop's ports as in-process adapters inside the runtime.

The model port submits each step to the same scheduler that serves Generate, with the task
id as its KV session, so a step prefills only what the previous step did not already cache.
The tool port calls the tools registry as plain functions over this process's kv store (the
runtime's --tool-state-db / --tool-state-redis: SQLite by default, as the tools service's), on a
worker thread since a store write may wait on the disk or Redis: no network hop of ours, no
fault injection (faults live on the tools service of the external route).
"""
from __future__ import annotations

import asyncio
import uuid

from inloop.services.common.agent_loop import run_agent
from inloop.services.contract.errors import HopError, InvalidRequest, TaskError, ToolError
from inloop.services.contract.generation import ChatMessage, GenerateRequest
from inloop.services.contract.task import ModelReply, TaskSpec, ToolReply
from inloop.services.runtime.service.scheduler import NotReady, QueueFull, RequestCancelled, RequestExpired, Scheduler
from inloop.services.tools.registry import execute
from inloop.services.tools.state import StateUnavailable, StoreBase


class EngineModelPort:
    provider = "inloop"

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self.name = str(scheduler.engine.info.get("name", "model"))

    async def step(self, task: TaskSpec, messages: list[dict], tool_choice: str) -> ModelReply:
        req = GenerateRequest(messages=[ChatMessage(m["role"], m["content"]) for m in messages],
                              sampling=task.sampling, request_id=uuid.uuid4().hex,
                              tools=task.tools, tool_choice=tool_choice, session_id=task.task_id)
        remaining = task.remaining_s()
        if remaining <= 0:
            raise HopError(TaskError.RUNTIME_TIMEOUT, "the task's deadline passed before the model step")
        try:
            handle = self.scheduler.submit(req, timeout_s=remaining)
        except (QueueFull, NotReady) as exc:
            raise HopError(TaskError.RUNTIME_HOP_FAILED, str(exc)) from None
        try:
            result = await handle.wait()
        except RequestExpired as exc:
            raise HopError(TaskError.RUNTIME_TIMEOUT, str(exc)) from None
        except (RequestCancelled, InvalidRequest) as exc:
            raise HopError(TaskError.RUNTIME_HOP_FAILED, str(exc)) from None
        finally:
            handle.cancel()  # no-op when finished; stops the worker if this task was cancelled
        if result.finish_reason == "cancelled":
            raise HopError(TaskError.RUNTIME_TIMEOUT, f"the deadline passed after {result.completion_tokens} tokens")
        return ModelReply(result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens,
                          result.uncertainty)


class LocalToolPort:
    def __init__(self, state: StoreBase):
        self.state = state

    async def call(self, task: TaskSpec, name: str, arguments: dict, call_id: str) -> ToolReply:
        if task.remaining_s() <= 0:
            raise HopError(TaskError.TOOL_TIMEOUT, "the task's deadline passed before the tool call")
        try:
            out = await asyncio.to_thread(execute, self.state, name, arguments, idempotency_key=call_id,
                                          session=task.task_id)
        except ToolError as exc:
            raise HopError(TaskError.TOOL_ERROR, str(exc)) from None
        except StateUnavailable as exc:  # the store is down or contended: nothing was applied
            raise HopError(TaskError.TOOL_HOP_FAILED, f"the kv store is unavailable: {exc}") from None
        return ToolReply(out.result)

    async def setup(self, task: TaskSpec, name: str, arguments: dict) -> None:
        await asyncio.to_thread(execute, self.state, name, arguments, session=task.task_id)


async def run_internal(task: TaskSpec, scheduler: Scheduler, state: StoreBase):
    """Run one task on the internal route; its KV session and tool state end with it."""
    try:
        return await run_agent(task, EngineModelPort(scheduler), LocalToolPort(state), route="internal")
    finally:
        # The session store is thread-safe; freeing a numpy cache from this thread is fine,
        # and the CUDA backend frees through the primary context, current on any thread.
        # Tool state stays (LRU-capped by the store), as it does on the tools service.
        scheduler.engine.end_session(task.task_id)
