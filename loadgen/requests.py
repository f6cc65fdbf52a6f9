"""A task case as the TaskRequest both routes take."""
from __future__ import annotations

import json

from inloop.loadgen.tasks.model import TaskCase
from inloop.v1 import runtime_pb2 as pb


def case_to_request(case: TaskCase, *, run_id: str = "", max_tokens: int = 96, deadline_ms: float = 60000,
                    policy: pb.RoutePolicy | None = None, fault: pb.FaultSpec | None = None,
                    gate: pb.GateConfig | None = None) -> pb.TaskRequest:
    """`run_id` makes task ids (and so KV sessions and tool-state namespaces) unique per run."""
    req = pb.TaskRequest(
        task_id=f"{case.id}-{run_id}" if run_id else case.id, family=case.family,
        messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in case.messages],
        tools=list(case.tools), tool_choice=case.tool_choice, max_steps=case.max_steps,
        sampling=pb.SamplingParams(max_tokens=max_tokens), deadline_ms=deadline_ms,
        setup_json=json.dumps(case.setup) if case.setup else "",
    )
    for field, value in (("policy", policy), ("fault", fault), ("gate", gate)):
        if value is not None:
            getattr(req, field).CopyFrom(value)
    return req


def result_steps(result: pb.TaskResult) -> list[dict]:
    """Steps as the checkers read them."""
    return [{"kind": s.kind, "name": s.name, "status": s.status, "error_type": s.error_type,
             "arguments": json.loads(s.arguments_json) if s.arguments_json else None, "text": s.text}
            for s in result.steps]
