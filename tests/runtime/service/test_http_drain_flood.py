"""The HTTP front's drain when tokens arrive faster than the stream sends them: the SSE error
event goes out at the grace's end even though the token queue is never empty then (an engine
outpacing a busy event loop). The stream used to serve the queue first and never ended; uvicorn
then cut it. In process, with a scheduler that floods tokens and never finishes."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from inloop.services.common.drain import Drain
from inloop.services.contract.generation import TokenEvent
from inloop.services.runtime.service.http_server import make_app

pytestmark = pytest.mark.timeout(30)


class FloodHandle:
    submitted_at = 0.0

    def __init__(self):
        self.cancelled = False
        self._never = asyncio.get_running_loop().create_future()

    async def wait(self):
        return await self._never

    def cancel(self):
        self.cancelled = True


class FloodingScheduler:
    """Each loop turn posts a burst of tokens, more than the stream sends in that turn."""

    def __init__(self):
        self.handle: FloodHandle | None = None

    def submit(self, req, on_token=None, timeout_s=None):
        self.handle = FloodHandle()
        asyncio.get_running_loop().create_task(self._flood(on_token))
        return self.handle

    async def _flood(self, on_token):
        index = 0
        while not self.handle.cancelled:
            for _ in range(8):
                on_token(TokenEvent(index=index, token_id=5, text="x"))
                index += 1
            await asyncio.sleep(0)


async def stream_until_drained() -> tuple[list[dict], FloodHandle]:
    drain, scheduler = Drain(), FloodingScheduler()
    app = make_app(scheduler, served_name="tiny", drain=drain)
    events: list[dict] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        async def expire_soon():
            await asyncio.sleep(0.2)
            drain.grace_s = 0.2
            drain.expired_event.set()
        expiring = asyncio.create_task(expire_soon())
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 100, "stream": True}
        async with client.stream("POST", "/v1/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        await expiring
    return events, scheduler.handle


def test_the_drain_error_goes_out_while_tokens_keep_coming():
    events, handle = asyncio.run(asyncio.wait_for(stream_until_drained(), 10))
    assert len(events) > 1 and "choices" in events[0]  # it was streaming tokens
    assert "shutting down" in events[-1]["error"]["message"]  # and ended typed, not cut
    assert handle.cancelled  # the generation was stopped
