"""The same bad input gets the same answer from Runtime.Generate and from RunTask on both
routes: INVALID_ARGUMENT with the same message, naming the field, from the one validation
layer in the contract. And nothing a caller sends makes a task outlive its deadline."""
from __future__ import annotations

import math
import time

import grpc
import pytest

from inloop.services.common.grpc_client import insecure_channel
from inloop.services.runtime.model.tiny import make_tiny
from inloop.v1 import controller_pb2_grpc, runtime_pb2_grpc
from inloop.v1 import runtime_pb2 as pb
from tests.service_procs import mesh_processes

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    with mesh_processes(root, make_tiny("llama", root / "tiny")) as (runtime, _, controller):
        yield (runtime_pb2_grpc.RuntimeStub(insecure_channel(runtime.target)),
               controller_pb2_grpc.ControllerStub(insecure_channel(controller.target)))


def sampling(**kw) -> pb.SamplingParams:
    return pb.SamplingParams(max_tokens=kw.pop("max_tokens", 4), **kw)


# (sampling fields, extra user messages) -> the field the answer names; shared by all three calls
SHARED = [
    pytest.param({"seed": -1}, "sampling.seed", id="negative-seed"),
    pytest.param({"temperature": 1e-30}, "sampling.temperature", id="temperature-tiny"),
    pytest.param({"temperature": 1e30}, "sampling.temperature", id="temperature-huge"),
    pytest.param({"temperature": math.nan}, "sampling.temperature", id="temperature-nan"),
    pytest.param({"top_p": math.nan}, "sampling.top_p", id="top_p-nan"),
    pytest.param({"max_tokens": 0}, "sampling.max_tokens", id="max_tokens-0"),
    pytest.param({"stop": ["x"] * 100}, "sampling.stop", id="100-stop-strings"),
    pytest.param({"stop": ["y" * 2000]}, "sampling.stop[0]", id="long-stop-string"),
    pytest.param({"role": "robot"}, "messages[0].role", id="unknown-role"),
]


def requests(fields: dict):
    fields = dict(fields)
    role = fields.pop("role", "user")
    gen = pb.GenerateRequest(sampling=sampling(**fields))
    gen.messages.add(role=role, content="hi")
    gen.messages.add(role="user", content="What is 2+3?")
    task = pb.TaskRequest(sampling=sampling(**fields), deadline_ms=5_000)
    task.messages.add(role=role, content="hi")
    task.messages.add(role="user", content="What is 2+3?")
    return gen, task


def answer(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)
    return err.value.code(), err.value.details()


@pytest.mark.parametrize("fields, field", SHARED)
def test_generate_and_both_routes_answer_bad_input_alike(stubs, fields, field):
    runtime, controller = stubs
    gen, task = requests(fields)
    answers = {answer(runtime.Generate, gen), answer(runtime.RunTask, task), answer(controller.RunTask, task)}
    assert len(answers) == 1, answers
    ((code, details),) = answers
    assert code == INVALID and details.startswith(f"{field}: ") and len(details) < 300, details


TASK_ONLY = [
    pytest.param({"deadline_ms": math.nan}, "deadline_ms", id="nan-deadline"),
    pytest.param({"deadline_ms": 1e300}, "deadline_ms", id="huge-deadline"),
    pytest.param({"fault": pb.FaultSpec(key="é")}, "fault.key", id="non-ascii-fault-key"),
    pytest.param({"fault": pb.FaultSpec(key="a\nb")}, "fault.key", id="newline-fault-key"),
    pytest.param({"fault": pb.FaultSpec(key="\u202e")}, "fault.key", id="bidi-fault-key"),
    pytest.param({"fault": pb.FaultSpec(abort="every=2;\nstatus=UNAVAILABLE")}, "fault.abort", id="newline-abort"),
    pytest.param({"policy": pb.RoutePolicy(backoff_base_ms=1e12)}, "policy.backoff_base_ms", id="huge-backoff"),
    pytest.param({"policy": pb.RoutePolicy(retry_on=["INVALID_ARGUMENT"])}, "policy.retry_on[0]",
                 id="retry-invalid-argument"),
    pytest.param({"policy": pb.RoutePolicy(retry_on=["UNAVAILABEL"])}, "policy.retry_on[0]", id="retry-typo"),
    pytest.param({"setup_json": "[" * 1000 + "]" * 1000}, "setup_json", id="deep-setup"),
    pytest.param({"setup_json": '{"kv": [1, 2]}'}, "setup_json.kv", id="setup-wrong-shape"),
    pytest.param({"setup_json": '{"kv": {"n": 1e400}}'}, "setup_json", id="setup-infinite-number"),
    pytest.param({"task_id": "x" * 500}, "task_id", id="long-task-id"),
]


@pytest.mark.parametrize("fields, field", TASK_ONLY)
def test_both_routes_refuse_a_bad_task_alike_and_at_once(stubs, fields, field):
    runtime, controller = stubs
    task = pb.TaskRequest(sampling=sampling(), deadline_ms=5_000, tools=["kv"], tool_choice="kv")
    task.messages.add(role="user", content="Increment the counter named visits")
    for name, value in fields.items():
        if isinstance(value, (pb.FaultSpec, pb.RoutePolicy)):
            getattr(task, name).CopyFrom(value)
        else:
            setattr(task, name, value)
    started = time.monotonic()
    answers = {answer(runtime.RunTask, task), answer(controller.RunTask, task)}
    assert time.monotonic() - started < 5
    assert len(answers) == 1, answers
    ((code, details),) = answers
    assert code == INVALID and details.startswith(f"{field}: "), details


def test_huge_backoff_ends_the_task_at_its_deadline(stubs):
    """Within the bounds, a long backoff is still capped at the time the task has left."""
    _, controller = stubs
    task = pb.TaskRequest(sampling=sampling(max_tokens=96), deadline_ms=1_000, tools=["calculator"],
                          tool_choice="calculator",
                          fault=pb.FaultSpec(abort="every=1;status=UNAVAILABLE", key="backoff"),
                          policy=pb.RoutePolicy(attempts=5, backoff_base_ms=3_000_000, backoff_max_ms=3_000_000))
    task.messages.add(role="user", content="What is 2+3?")
    started = time.monotonic()
    result = controller.RunTask(task, timeout=30)
    assert not result.ok and result.error_type in ("tool_timeout", "deadline_exceeded")
    assert time.monotonic() - started < 2.0
