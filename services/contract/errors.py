"""The error kinds every layer raises and catches, and the typed errors a task can end with.

A service maps them to its wire: InvalidRequest -> INVALID_ARGUMENT (gRPC) / 400 (HTTP);
a tool's ToolError -> INVALID_ARGUMENT on the tools service, `tool_error` inside a task.
"""
from __future__ import annotations

from enum import StrEnum


class InvalidRequest(ValueError):
    """Bad input; `field` names the offending request field (maps to INVALID_ARGUMENT)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message

    def within(self, parent: str) -> "InvalidRequest":
        """The same error one level down: "seed" inside "sampling" is "sampling.seed"."""
        return InvalidRequest(f"{parent}.{self.field}", self.message)


class ToolError(ValueError):
    """A tool refused valid-looking input (division by zero, increment of a string...).

    The message is written for the caller (a person or the model) to act on; the tools
    service answers it with INVALID_ARGUMENT, the internal route gets the same exception.
    """


class ToolArgumentError(ToolError):
    """The call itself is wrong: unknown tool, or arguments that do not match the schema."""


class ToolCallParseError(ValueError):
    """The model's text opens a tool call that is not valid JSON of the right shape."""


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed; the message names the part and the fix."""


class TaskError(StrEnum):
    """Why a task failed (TaskResult.error_type, a step's error_type). A StrEnum, so each
    member is its wire string ("tool_timeout") and compares equal to it."""

    TOOL_HOP_FAILED = "tool_hop_failed"        # the tools hop failed for good (after its retries)
    TOOL_TIMEOUT = "tool_timeout"              # ... or ran out of time
    RUNTIME_HOP_FAILED = "runtime_hop_failed"  # the model hop failed for good
    RUNTIME_TIMEOUT = "runtime_timeout"        # ... or ran out of time
    TOOL_ERROR = "tool_error"                  # the tool refused the call (the model is told why)
    TOOL_OUTCOME_UNKNOWN = "tool_outcome_unknown"  # a write's hop ran out of time: it may have been applied
    BAD_TOOL_CALL = "bad_tool_call"            # the model's call is malformed or names no offered tool
    MAX_STEPS = "max_steps"                    # no answer within the task's model steps
    DEADLINE_EXCEEDED = "deadline_exceeded"    # the task's own deadline passed between steps


# The errors a hop (the model or a tool, across a network or in process) ends with.
HOP_ERRORS = (TaskError.TOOL_HOP_FAILED, TaskError.TOOL_TIMEOUT, TaskError.RUNTIME_HOP_FAILED,
              TaskError.RUNTIME_TIMEOUT)


class HopError(Exception):
    """A hop that failed for good (after its retries): error_type is one of HOP_ERRORS,
    or TOOL_ERROR when the tool itself refused the call (bad arguments, division by zero)."""

    def __init__(self, error_type: TaskError, message: str, attempts: int = 1):
        super().__init__(message)
        self.error_type = TaskError(error_type)
        self.attempts = attempts
