"""Run one task case on one route and record what the reports need.

Both routes get the same TaskRequest (loadgen/requests.py); the internal route ignores the
fault spec and the tool hops' policy (its tools are function calls, there is no hop to
fault). Latency is the loadgen's wall clock around the call, the number a user of either
route waits for; the trace id in the reply joins the record to its spans.
"""
from __future__ import annotations

import time

import grpc

from inloop.loadgen.requests import case_to_request, result_steps
from inloop.loadgen.tasks import check
from inloop.loadgen.tasks.model import TaskCase

ROUTES = ("internal", "external")
# Tokens per model step for every task-running loadgen command (compare, matrix, loops,
# calibrate-gate): short steps keep a run of many tasks short. The client commands
# (`inloop task run`, `inloop generate`) default to 128 for one interactive answer.
STEP_MAX_TOKENS = 64


def add_step_max_tokens(parser) -> None:
    parser.add_argument("--max-tokens", type=int, default=STEP_MAX_TOKENS,
                        help=f"tokens per model step (default {STEP_MAX_TOKENS}, the loadgen's per-step default; "
                             f"`inloop task run` and `inloop generate` default to 128)")


class TaskRunner:
    def __init__(self, runtime: str, controller: str, max_tokens: int = STEP_MAX_TOKENS, deadline_ms: float = 60000,
                 security=None):
        """`security`: a services.common.security.ClientSecurity (mTLS, token) or None for plaintext."""
        from inloop.services.common.grpc_client import make_channel
        from inloop.v1 import controller_pb2_grpc, runtime_pb2_grpc

        self._channels = [make_channel(runtime, security), make_channel(controller, security)]
        self.stubs = {"internal": runtime_pb2_grpc.RuntimeStub(self._channels[0]),
                      "external": controller_pb2_grpc.ControllerStub(self._channels[1])}
        self.max_tokens, self.deadline_ms = max_tokens, deadline_ms

    def run(self, case: TaskCase, route: str, *, run_id: str, profile=None, gate=None,
            rep: int = 0, first: bool = False, label: str = "") -> dict:
        """One task; never raises for a failed task (an RPC error becomes error_type rpc_<CODE>)."""
        tag = label or (profile.name if profile else "")
        # One fault-counter key per profile run: "every 2nd tool call" then counts across the
        # run's tasks (a task makes one or two calls, so a per-task key would rarely fire).
        req = case_to_request(case, run_id=f"{run_id}-{tag}-r{rep}-{route}", max_tokens=self.max_tokens,
                              deadline_ms=self.deadline_ms, policy=profile.route_policy() if profile else None,
                              fault=profile.fault_spec(f"{run_id}-{tag}") if profile else None, gate=gate)
        record = {"profile": tag, "case": case.id, "family": case.family, "uses_tools": bool(case.tools),
                  "completion_tokens": 0, "route": route, "rep": rep,
                  "first": first, "ok": False, "passed": False, "error_type": "", "latency_ms": 0.0,
                  "retries": 0, "steps": 0, "model_steps": 0, "gate_fired": False, "trace_id": ""}
        started = time.perf_counter()
        try:
            res = self.stubs[route].RunTask(req, timeout=self.deadline_ms / 1e3 + 5)
        except grpc.RpcError as exc:
            record["latency_ms"] = (time.perf_counter() - started) * 1e3
            record["error_type"] = f"rpc_{exc.code().name}"
            record["error_message"] = exc.details() or ""
            return record
        record["latency_ms"] = (time.perf_counter() - started) * 1e3
        steps = result_steps(res)
        verdict = check(case, res.answer if res.ok else None, steps)
        record.update(ok=res.ok, passed=bool(res.ok and verdict.passed), error_type=res.error_type,
                      retries=res.retries, steps=len(res.steps), trace_id=res.trace_id,
                      model_steps=sum(1 for s in res.steps if s.kind == "model"),
                      gate_fired=any(s.kind == "gate" for s in res.steps),
                      completion_tokens=sum(s.usage.completion_tokens for s in res.steps if s.kind == "model"))
        answers = [s for s in res.steps if s.kind == "model"]
        if res.ok and answers:  # the answer step's confidence: what the uncertainty gate reads
            u = answers[-1].uncertainty
            record["answer_stats"] = {"mean_logprob": u.mean_logprob, "min_margin": u.min_margin}
        return record

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
