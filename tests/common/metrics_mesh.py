"""Runtime + tools + controller as real processes, exercised, then scraped by a real Prometheus.

`start_metrics_mesh(root)` starts the three services (tiny random llama, numpy backend,
every gRPC and metrics port picked free), makes a fixed set of calls that touch every
metric family, starts Prometheus on the three metrics ports and waits until each target
has been scraped. Tests then ask Prometheus (`mesh.prometheus.value(...)`), never the
services, so what they check is what a dashboard would see.

The calls, and what each must leave behind (tests/common/test_metrics.py asserts them):
  runtime   Generate OK, GenerateStream OK, Generate max_tokens=0 (INVALID_ARGUMENT, once),
            one internal RunTask                 -> rpc_*, gen_ai_*, inloop_tokens_total, tasks
  tools     Call OK, Call with x-inloop-fault-abort every=1 (UNAVAILABLE, injected),
            one Call with key FAULT_KEY (attempt 1 of that key: no fault)
  controller one external RunTask with abort every=2 under FAULT_KEY and 3 attempts: its
            first tool call is attempt 2 of the key, so it is aborted once and retried
                                                 -> inloop_hop_*, inloop_hop_retries_total
  health    checked on every service, and must NOT be counted by the RPC metrics.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from inloop.services.common.grpc_client import check_health, insecure_channel
from inloop.services.contract.faults import HEADER_ABORT, HEADER_DELAY, HEADER_KEY
from inloop.services.runtime.model.tiny import make_tiny
from inloop.v1 import controller_pb2_grpc, runtime_pb2_grpc, tools_pb2, tools_pb2_grpc
from inloop.v1 import runtime_pb2 as pb
from tests.common.prometheus_harness import Prometheus
from tests.service_procs import ServiceProcess, controller_process, runtime_process, tools_process

FAULT_KEY = "metrics-mesh-retry"
NO_FAULTS = [(HEADER_ABORT, "off"), (HEADER_DELAY, "off")]
JOBS = ("runtime", "tools", "controller")


def metrics_port(proc: ServiceProcess) -> int:
    """The port a service logged in its `metrics_listening` line (started with --metrics-port 0)."""
    return int(proc.wait_log("metrics_listening", timeout_s=10)["port"])


@dataclass
class MetricsMesh:
    runtime: ServiceProcess
    tools: ServiceProcess
    controller: ServiceProcess
    prometheus: Prometheus | None = None
    calls: dict = field(default_factory=dict)  # what exercise() did, for the assertions

    def processes(self) -> list[ServiceProcess]:
        return [self.runtime, self.tools, self.controller]

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
        for proc in reversed(self.processes()):
            proc.stop()


def task_request(task_id: str, question: str, tool: str, **fields) -> pb.TaskRequest:
    req = pb.TaskRequest(task_id=task_id, tools=[tool], tool_choice="required", max_steps=2, deadline_ms=20_000,
                         sampling=pb.SamplingParams(max_tokens=96), **fields)
    req.messages.add(role="user", content=question)
    return req


def exercise(mesh: MetricsMesh) -> None:
    """The fixed set of calls described in the module docstring."""
    runtime = runtime_pb2_grpc.RuntimeStub(insecure_channel(mesh.runtime.target))
    tools = tools_pb2_grpc.ToolsStub(insecure_channel(mesh.tools.target))
    controller = controller_pb2_grpc.ControllerStub(insecure_channel(mesh.controller.target))

    hello = pb.GenerateRequest(sampling=pb.SamplingParams(max_tokens=6))
    hello.messages.add(role="user", content="Say hello.")
    runtime.Generate(hello, timeout=30)
    chunks = list(runtime.GenerateStream(hello, timeout=30))
    assert chunks and chunks[-1].HasField("result")
    bad = pb.GenerateRequest(sampling=pb.SamplingParams(max_tokens=0))
    bad.messages.add(role="user", content="x")
    try:
        runtime.Generate(bad, timeout=10)
        raise AssertionError("max_tokens=0 was accepted")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    internal = runtime.RunTask(task_request("metrics-internal", "What is 17 * 23?", "calculator"), timeout=40)
    assert internal.route == "internal"

    calc = tools_pb2.ToolCallRequest(name="calculator", arguments_json=json.dumps({"expression": "2+3"}))
    tools.Call(calc, timeout=5, metadata=NO_FAULTS)
    try:
        tools.Call(calc, timeout=5, metadata=[(HEADER_ABORT, "every=1;status=UNAVAILABLE"),
                                              (HEADER_KEY, "metrics-mesh-direct")])
        raise AssertionError("the injected abort did not fire")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE
    # Attempt 1 under FAULT_KEY: not a multiple of 2, so it passes; the task's first try is attempt 2.
    tools.Call(calc, timeout=5, metadata=[(HEADER_ABORT, "every=2;status=UNAVAILABLE"), (HEADER_KEY, FAULT_KEY)])
    external = controller.RunTask(task_request(
        "metrics-external", "What is 17 * 23?", "calculator",
        policy=pb.RoutePolicy(attempts=3, backoff_base_ms=5, backoff_max_ms=20),
        fault=pb.FaultSpec(abort="every=2;status=UNAVAILABLE", key=FAULT_KEY)), timeout=40)
    assert external.route == "external" and external.retries >= 1, external

    for proc in mesh.processes():
        with insecure_channel(proc.target) as channel:
            check_health(channel)
    mesh.calls = {"internal_task": internal, "external_task": external}


def start_metrics_mesh(root: Path) -> MetricsMesh:
    """Start, exercise and scrape the mesh; the caller must call .stop()."""
    root = Path(root)
    model = make_tiny("llama", root / "tiny-llama")
    started: list[ServiceProcess] = []
    mesh: MetricsMesh | None = None
    try:
        started.append(runtime_process(model, root / "runtime.jsonl", "--metrics-port", "0"))
        started.append(tools_process(root / "tools.jsonl", 0, "--metrics-port", "0"))
        started.append(controller_process(started[0].target, started[1].target, root / "controller.jsonl",
                                          "--metrics-port", "0"))
        mesh = MetricsMesh(*started)
        exercise(mesh)
        targets = {job: f"127.0.0.1:{metrics_port(proc)}" for job, proc in zip(JOBS, mesh.processes())}
        mesh.prometheus = Prometheus.start(targets, root / "prometheus")
        mesh.prometheus.wait_until_scraped()
        return mesh
    except BaseException:
        if mesh is not None:
            mesh.stop()
        else:
            for proc in reversed(started):
                proc.stop()
        raise
