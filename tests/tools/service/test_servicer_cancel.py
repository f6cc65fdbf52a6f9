"""How the tools servicer logs a call that gRPC cancels mid-delay: DEADLINE_EXCEEDED when the
call's deadline has passed (gRPC cancels the handler then, and on a loaded host that can come
before the delay's own deadline check), CANCELLED when the caller gave up first. Driven
in-process with a stand-in for the gRPC context, so the order of the two is not left to timing."""
from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from inloop.services.contract.faults import HEADER_DELAY, HEADER_KEY
from inloop.services.tools.service.server import ToolsServicer
from inloop.services.tools.state import ToolState
from inloop.v1 import tools_pb2 as pb


class Context:
    def __init__(self, remaining: float):
        self.remaining = remaining

    def invocation_metadata(self):
        return ((HEADER_DELAY, "every=1;ms=900"), (HEADER_KEY, "cancel-test"))

    def time_remaining(self):
        return self.remaining


@pytest.mark.parametrize("deadline_passed,code", [(True, "DEADLINE_EXCEEDED"), (False, "CANCELLED")])
def test_a_call_cancelled_mid_delay_is_logged_by_why(tmp_path, deadline_passed, code):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "d1", "title": "t", "text": "x"}) + "\n")
    servicer = ToolsServicer(ToolState(corpus))
    logged = []
    servicer._log = lambda c, *a, **k: logged.append(c)
    context = Context(remaining=5.0)  # longer than the 900 ms delay: the servicer sleeps it all

    async def scenario():
        request = pb.ToolCallRequest(name="calculator", arguments_json='{"expression": "1+1"}', call_id="c")
        task = asyncio.ensure_future(servicer.Call(request, context))
        await asyncio.sleep(0.05)  # inside the injected delay
        if deadline_passed:
            context.remaining = -0.01
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert logged == [getattr(grpc.StatusCode, code)]
