"""The agent loop's two ports. The internal route plugs in in-process adapters (the engine,
tools as function calls), the external route network clients (the controller's hops); the
loop itself (common/agent_loop.py) is written once against these."""
from __future__ import annotations

from typing import Protocol

from inloop.services.contract.task import ModelReply, TaskSpec, ToolReply


class ModelPort(Protocol):
    name: str       # the model, as `chat {name}` spans name it
    provider: str   # gen_ai.provider.name: "inloop" for our runtime

    async def step(self, task: TaskSpec, messages: list[dict], tool_choice: str) -> ModelReply:
        """One model step on the conversation so far; raises HopError when the hop fails."""


class ToolPort(Protocol):
    async def call(self, task: TaskSpec, name: str, arguments: dict, call_id: str) -> ToolReply:
        """Run one tool call in the task's state namespace; raises HopError (TOOL_ERROR when
        the tool refused the call)."""

    async def setup(self, task: TaskSpec, name: str, arguments: dict) -> None:
        """An environment write (preloaded state, another writer's change): no faults, no steps."""
