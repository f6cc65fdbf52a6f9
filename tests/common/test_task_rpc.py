"""The two ends of RunTask (services/common/task_rpc.py): a bug inside a task's run ends the
call INTERNAL naming the task, with the traceback in the log, not UNKNOWN with a class path."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from inloop.services.common.task_rpc import guarded
from inloop.services.contract.task import TaskSpec


class Aborted(Exception):
    pass


class Context:
    async def abort(self, code, details):
        self.code, self.details = code, details
        raise Aborted()


class Log:
    def __init__(self):
        self.lines = []

    def error(self, event, **kw):
        self.lines.append((event, kw))


def test_a_bug_in_a_task_is_internal_naming_the_task_and_logged():
    async def broken():
        raise RecursionError("maximum recursion depth exceeded")

    context, log = Context(), Log()
    with pytest.raises(Aborted):
        asyncio.run(guarded(broken(), TaskSpec("t-9", [], []), context, log))
    assert context.code == grpc.StatusCode.INTERNAL and "t-9" in context.details
    assert "Recursion" not in context.details and "class" not in context.details
    assert log.lines[0][0] == "task_failed" and isinstance(log.lines[0][1]["exc_info"], RecursionError)


def test_an_outcome_passes_through():
    async def fine():
        return "outcome"

    assert asyncio.run(guarded(fine(), TaskSpec("t-1", [], []), Context(), Log())) == "outcome"
