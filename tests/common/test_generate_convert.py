"""Wire <-> contract for Generate (common/generate_convert.py): every request field the
engine reads survives the trip, and per-token alternatives reach the wire."""
from __future__ import annotations

import json

from inloop.services.common.generate_convert import (
    request_from_proto, sampling_from_proto, sampling_to_proto, uncertainty_to_proto,
)
from inloop.services.contract.generation import SamplingParams, TokenStats
from inloop.v1 import runtime_pb2 as pb


def test_sampling_round_trips_with_top_logprobs():
    sp = SamplingParams(max_tokens=7, temperature=0.5, top_k=3, top_p=0.5, seed=11, stop=("x",),
                        return_uncertainty=True, top_logprobs=4)
    assert sampling_from_proto(sampling_to_proto(sp)) == sp


def test_request_fields_reach_the_contract():
    msg = pb.GenerateRequest(prompt="p", tool_choice="required", session_id="s", parallel_tool_calls=True,
                             response_json_schema=json.dumps({"type": "object"}))
    req = request_from_proto(msg)
    assert (req.parallel_tool_calls, req.tool_choice, req.session_id) == (True, "required", "s")
    assert req.response_schema == {"type": "object"}
    assert request_from_proto(pb.GenerateRequest(prompt="p")).parallel_tool_calls is False  # gRPC: one call


def test_alternatives_go_on_the_wire_most_likely_first():
    st = TokenStats(-0.1, 0.5, 0.8, (("a", -0.1), ("b", -2.5)))
    u = uncertainty_to_proto(5, st)
    assert [(t.token, t.logprob) for t in u.top] == [("a", -0.1), ("b", -2.5)] and u.token_id == 5
