"""Every RPC of the three services under 100 fuzzed requests each (tests/fuzz/rpc_fuzz.py):
no INTERNAL or UNKNOWN from our code, no call ending more than a second after its deadline,
and every service alive and serving afterwards. The long run is `python -m tests.fuzz.rpc_fuzz`."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inloop.services.runtime.model.tiny import make_tiny
from tests.fuzz.rpc_fuzz import Tally, Targets, report
from tests.service_procs import mesh_processes

CALLS_PER_RPC = 100
RPCS = ("Runtime.Generate", "Runtime.GenerateStream", "Runtime.GetModelInfo", "Runtime.RunTask",
        "Controller.RunTask", "Tools.Call", "Tools.List")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    with mesh_processes(root, make_tiny("llama", root / "tiny")) as procs:
        yield procs, Targets(*(p.target for p in procs))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("rpc", RPCS)
def test_fuzzed_requests_get_typed_answers_within_their_deadlines(mesh, rpc):
    _, targets = mesh
    tally = Tally()
    targets.fuzz(rpc, CALLS_PER_RPC, tally)
    assert tally.calls[rpc] == CALLS_PER_RPC
    assert not tally.bad, report(tally)


def test_every_service_is_alive_and_serving_after_the_fuzzing(mesh):
    procs, _ = mesh
    for p in procs:
        assert p.proc.poll() is None, f"{p} exited"
        with grpc.insecure_channel(p.target) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
