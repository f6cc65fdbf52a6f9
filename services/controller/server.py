"""The controller's servicer: Controller.RunTask, the external route.

It runs the one agent loop (services/common/agent_loop.py) with gRPC ports: the model step
is Runtime.Generate, the tool step is Tools.Call, each with the task's route policy
(per-try deadline, retries with backoff) and its fault spec forwarded to the tools service.
Concurrency is bounded: tasks beyond `max_concurrency` get RESOURCE_EXHAUSTED.
"""
from __future__ import annotations

import asyncio

import grpc

from inloop.services.common import metrics
from inloop.services.common.agent_loop import run_agent
from inloop.services.common.logging import get_logger
from inloop.services.common.task_rpc import accept_task, finish_task, guarded
from inloop.services.controller.hops import Faults, Policy, RuntimeHop, ToolsHop
from inloop.v1 import controller_pb2_grpc
from inloop.v1 import runtime_pb2 as pb

log = get_logger(__name__)
SERVICE_NAME = "inloop.v1.Controller"


class ControllerServicer(controller_pb2_grpc.ControllerServicer):
    def __init__(self, runtime_channel: grpc.aio.Channel | None, tools_channel: grpc.aio.Channel,
                 model_name: str = "model", max_concurrency: int = 64, model_hop=None):
        """`model_hop(policy)` makes the model port of one task; default: Runtime.Generate over
        `runtime_channel` (an OpenAI HTTP upstream passes its own, services/controller/openai_hop.py)."""
        self.runtime_channel = runtime_channel
        self.model_hop = model_hop or (lambda policy: RuntimeHop(runtime_channel, policy, model_name))
        self.tools_channel = tools_channel
        self.model_name = model_name
        self._slots = asyncio.Semaphore(max_concurrency)
        self.max_concurrency = max_concurrency
        self.in_flight = 0  # tasks holding a slot; only touched on the event loop's thread
        metrics.track_queue_depth("controller", lambda: self.in_flight)

    async def RunTask(self, request: pb.TaskRequest, context: grpc.aio.ServicerContext):
        task = await accept_task(request, context, log)
        if self._slots.locked():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the controller is running {self.max_concurrency} tasks; retry later")
        async with self._slots:
            self.in_flight += 1
            try:
                model = self.model_hop(Policy.from_proto(request.policy, "runtime"))
                tools = ToolsHop(self.tools_channel, Policy.from_proto(request.policy, "tools"),
                                 Faults.from_proto(request.fault))
                outcome = await guarded(run_agent(task, model, tools, route="external"), task, context, log)
            finally:
                self.in_flight -= 1
        return finish_task(outcome, "external", request, log)
