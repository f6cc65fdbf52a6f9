"""A property-based fuzzer over every RPC of the three services (hypothesis).

Requests are built from the protos' own descriptors: every field gets values of its type,
with the edges that break things (NaN, inf, 1e300, negative and huge integers, control
characters, U+202E, 2 KB strings, deep JSON) and, for fields whose meaning we know, values
that get past the shape checks (real roles, tool names, fault specs, small max_tokens), so
calls reach the engine and the tools, not only the validators.

A call fails the property when it ends INTERNAL or UNKNOWN (our code raised where it should
have answered), or more than GRACE_S after its deadline (the task's, or the call's own).
Statuses that a request's own fault spec asks for do not count: Tools.Call is sent without
fault headers, and on the external route faults end the task with a typed error, not the RPC.

    python -m tests.fuzz.rpc_fuzz --calls 2000     # the long run, against services it starts
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

from inloop.v1 import controller_pb2_grpc, runtime_pb2_grpc, tools_pb2, tools_pb2_grpc
from inloop.v1 import runtime_pb2 as pb

GRACE_S = 1.0
CALL_TIMEOUT_S = 3.0  # each call's own deadline
ROLES = ["system", "user", "assistant", "tool"]
TOOLS = ["search", "extract_receipt", "summarize", "calculator", "kv"]
HOSTILE = ["é", "a\nb", "\u202e", "\x00", "\ud7ff", "x" * 2000, " " * 500, "[" * 300, "{{}}", "%s%n", "\\"]
SPECS = ["every=2;status=UNAVAILABLE", "percent=50;seed=3;status=INTERNAL", "every=3;ms=100", "off",
         "every=0;status=OK", "every=2;\nstatus=UNAVAILABLE", "ms=1e9;every=1", "é"]

# what a field means, when it means something: (message name, field name) -> strategy
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_json = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | _text,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=8).map(lambda v: json.dumps(v, allow_nan=True))
_spec = st.sampled_from(SPECS) | _text
MEANINGS = {
    ("ChatMessage", "role"): st.sampled_from(ROLES) | _text,
    ("SamplingParams", "max_tokens"): st.integers(1, 8) | st.integers(-5, 5000),
    ("TaskRequest", "max_steps"): st.integers(0, 3) | st.integers(-5, 100),
    ("TaskRequest", "tools"): st.lists(st.sampled_from(TOOLS) | _text, max_size=3),
    ("TaskRequest", "tool_choice"): st.sampled_from(["", "none", "auto", "required", *TOOLS]) | _text,
    ("GenerateRequest", "tool_choice"): st.sampled_from(["", "none", "auto", "required", *TOOLS]) | _text,
    ("TaskRequest", "deadline_ms"): st.floats(0, 3000) | st.floats(allow_nan=True, allow_infinity=True),
    ("TaskRequest", "setup_json"): st.sampled_from(['{"kv": {"a": 1}}', "[" * 2000 + "]" * 2000,
                                                    '{"kv": {"n": 1e400}}', '{"changes": "x"}']) | _json,
    ("FaultSpec", "abort"): _spec, ("FaultSpec", "delay"): _spec,
    ("RoutePolicy", "attempts"): st.integers(0, 3) | st.integers(-10, 1000),
    ("ToolCallRequest", "name"): st.sampled_from(TOOLS) | _text,
    ("ToolCallRequest", "arguments_json"): st.sampled_from(['{"expression": "2+3"}', '{"op": "get", "key": "k"}',
                                                            '{"op": "put", "key": "k", "value": 1' + "0" * 400 + "}",
                                                            '{"text": "' + "a" + " " * 5000 + 'b"}',
                                                            '{"expression": "9**9**9"}', "[" * 5000]) | _json,
    ("ToolDefinition", "parameters_json"): st.sampled_from(['{"type": "object", "properties": []}',
                                                            '{"type": "object", "properties": {"a": {"enum": []}}}',
                                                            '{"type": "object"}']) | _json,
}
_SCALARS = {
    FieldDescriptor.TYPE_STRING: _text | st.sampled_from(HOSTILE),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: st.integers(-5, 20) | st.sampled_from([-2**31, 2**31 - 1]),
    FieldDescriptor.TYPE_INT64: st.integers(-5, 20) | st.sampled_from([-2**63, 2**63 - 1]),
    FieldDescriptor.TYPE_FLOAT: st.floats(-2, 2, width=32) | st.sampled_from([math.nan, math.inf, -math.inf, 1e-30,
                                                                               3e38]),
    FieldDescriptor.TYPE_DOUBLE: st.floats(-10, 10) | st.sampled_from([math.nan, math.inf, -1.0, 1e300, 1e-300]),
}


def messages(cls, depth: int = 0):
    """A strategy for `cls` (a generated message class), field by field."""
    desc = cls.DESCRIPTOR

    @st.composite
    def build(draw):
        msg = cls()
        for f in desc.fields:
            if draw(st.integers(0, 3)) == 0:  # leave it unset a quarter of the time
                continue
            value = _field(draw, desc.name, f, depth)
            if f.is_repeated:
                if f.type == FieldDescriptor.TYPE_MESSAGE:
                    getattr(msg, f.name).extend(value)
                else:
                    getattr(msg, f.name)[:] = value
            elif f.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, f.name).CopyFrom(value)
            else:
                setattr(msg, f.name, value)
        return msg
    return build()


def _field(draw, owner: str, f, depth: int):
    known = MEANINGS.get((owner, f.name))
    if known is not None and not (f.is_repeated and f.name != "tools"):
        return draw(known)
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        inner = messages(f.message_type._concrete_class, depth + 1) if depth < 3 else st.just(
            f.message_type._concrete_class())
        one = inner
    else:
        one = _SCALARS[f.type]
    if f.is_repeated:
        if f.name == "messages":  # a conversation: mostly short, sometimes none
            return draw(st.lists(one, min_size=0, max_size=3))
        return draw(st.lists(one, max_size=3) | st.lists(one, min_size=17, max_size=40))
    return draw(one)


# ---- mostly valid, partly hostile -------------------------------------------------------------------
def _chat(draw) -> list:
    n = draw(st.integers(1, 3))
    roles = [draw(st.sampled_from(["system", "user", "assistant"])) for _ in range(n - 1)] + ["user"]
    words = st.sampled_from(["What is 2+3?", "Add one visit to visits.", "Who founded Lumen Arc?", "hi",
                             "Summarize: a. b."])
    return [pb.ChatMessage(role=r, content=draw(words)) for r in roles]


@st.composite
def valid_generate(draw) -> pb.GenerateRequest:
    tools = draw(st.lists(st.sampled_from(TOOLS), max_size=2, unique=True))
    defs = [tools_pb2.ToolDefinition(name=t, description=t, parameters_json=json.dumps(
        {"type": "object", "properties": {"x": {"type": draw(st.sampled_from(["string", "integer", "boolean"]))}},
         "required": ["x"]})) for t in tools]
    choices = ["auto", "none", *(["required", *tools] * bool(tools))]
    return pb.GenerateRequest(messages=_chat(draw), tools=defs, tool_choice=draw(st.sampled_from(choices)),
                              sampling=pb.SamplingParams(max_tokens=draw(st.integers(1, 12)),
                                                         temperature=draw(st.sampled_from([0.0, 0.7, 1.5])),
                                                         top_p=draw(st.sampled_from([1.0, 0.9])),
                                                         seed=draw(st.integers(0, 99)),
                                                         stop=draw(st.lists(st.sampled_from(["\n", "."]), max_size=2)),
                                                         return_uncertainty=draw(st.booleans())),
                              session_id=draw(st.sampled_from(["", "s1", "s2"])))


@st.composite
def valid_task(draw) -> pb.TaskRequest:
    tools = draw(st.lists(st.sampled_from(TOOLS), max_size=3, unique=True))
    return pb.TaskRequest(
        task_id=draw(st.sampled_from(["", "t1", "t2"])), messages=_chat(draw), tools=tools,
        tool_choice=draw(st.sampled_from(["", "auto", "none", *(["required", *tools] if tools else [])])),
        max_steps=draw(st.integers(0, 3)), deadline_ms=draw(st.floats(200, 2500)),
        sampling=pb.SamplingParams(max_tokens=draw(st.integers(4, 48)), temperature=draw(st.sampled_from([0.0, 1.0]))),
        policy=pb.RoutePolicy(attempts=draw(st.integers(1, 3)), per_try_timeout_ms=draw(st.sampled_from([0.0, 100.0])),
                              backoff_base_ms=draw(st.sampled_from([1.0, 50.0, 5000.0])), backoff_max_ms=5000.0),
        fault=pb.FaultSpec(abort=draw(st.sampled_from(["", "every=2;status=UNAVAILABLE",
                                                       "percent=30;seed=1;status=INTERNAL"])),
                           delay=draw(st.sampled_from(["", "every=2;ms=300"])), key=draw(st.sampled_from(["", "k1"]))),
        gate=pb.GateConfig(enabled=draw(st.booleans()), threshold=draw(st.sampled_from([0.0, -1.0, 0.5]))),
        setup_json=draw(st.sampled_from(["", '{"kv": {"visits": 1}}',
                                         '{"kv": {"v": 1}, "changes": [{"before_tool_call": 1, "op": "increment", '
                                         '"key": "v", "amount": 2}]}'])))


@st.composite
def valid_tool_call(draw) -> tools_pb2.ToolCallRequest:
    name = draw(st.sampled_from(TOOLS))
    args = {"search": {"query": "lighthouse"}, "extract_receipt": {"text": "Shop\nTotal 3.00"},
            "summarize": {"text": "One. Two. Three."}, "calculator": {"expression": "2*(3+4)"},
            "kv": {"op": draw(st.sampled_from(["get", "put", "increment"])), "key": "k"}}[name]
    if name == "kv" and args["op"] == "put":
        args["value"] = 5
    return tools_pb2.ToolCallRequest(name=name, arguments_json=json.dumps(args),
                                     call_id=draw(st.sampled_from(["", "c1"])),
                                     idempotency_key=draw(st.sampled_from(["", "i1", "i2"])),
                                     session=draw(st.sampled_from(["", "s1"])))


def blended(valid, cls, odds: int = 6):
    """A valid request with some fields (one in `odds`, at every level) swapped for hostile values."""
    hostile = messages(cls)

    @st.composite
    def build(draw):
        return _blend(draw, draw(valid), draw(hostile), odds)
    return build()


def _blend(draw, good, bad, odds):
    out = type(good)()
    out.CopyFrom(good)
    for f in good.DESCRIPTOR.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE and not f.is_repeated:
            getattr(out, f.name).CopyFrom(_blend(draw, getattr(good, f.name), getattr(bad, f.name), odds))
        elif draw(st.integers(1, odds)) == 1:
            if f.is_repeated:
                del getattr(out, f.name)[:]
                getattr(out, f.name).extend(getattr(bad, f.name))
            elif f.has_presence and not bad.HasField(f.name):
                out.ClearField(f.name)
            else:
                setattr(out, f.name, getattr(bad, f.name))
    return out


# ---- calling ------------------------------------------------------------------------------------
@dataclass
class Tally:
    """Calls and statuses per RPC, and the calls that broke the property."""

    calls: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    bad: list = field(default_factory=list)

    def record(self, rpc: str, code: grpc.StatusCode, took: float, deadline: float, request, detail: str) -> None:
        self.calls[rpc] += 1
        self.statuses[(rpc, code.name)] += 1
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            self.bad.append((rpc, code.name, detail[:300], str(request)[:500]))
        elif took > deadline + GRACE_S:
            self.bad.append((rpc, f"took {took:.2f} s for a {deadline:.2f} s deadline", detail[:300],
                             str(request)[:500]))


def call_and_record(tally: Tally, rpc: str, fn, request, deadline: float) -> None:
    started = time.monotonic()
    code, detail = grpc.StatusCode.OK, ""
    try:
        out = fn(request, timeout=CALL_TIMEOUT_S)
        if hasattr(out, "__iter__") and not hasattr(out, "DESCRIPTOR"):
            for _ in out:  # a stream: read it to the end
                pass
    except grpc.RpcError as exc:
        code, detail = exc.code(), exc.details() or ""
    tally.record(rpc, code, time.monotonic() - started, deadline, request, detail)


def task_deadline(req: pb.TaskRequest) -> float:
    ms = req.deadline_ms if math.isfinite(req.deadline_ms) and req.deadline_ms > 0 else 60_000
    return min(ms / 1e3, CALL_TIMEOUT_S)


_EMPTY = {"Runtime.GetModelInfo": pb.GetModelInfoRequest, "Tools.List": tools_pb2.ListToolsRequest}


class Targets:
    """Stubs for every RPC of a running mesh: name -> (request strategy, call, deadline of a request)."""

    def __init__(self, runtime: str, tools: str, controller: str):
        rt = runtime_pb2_grpc.RuntimeStub(grpc.insecure_channel(runtime))
        tl = tools_pb2_grpc.ToolsStub(grpc.insecure_channel(tools))
        ct = controller_pb2_grpc.ControllerStub(grpc.insecure_channel(controller))
        call = CALL_TIMEOUT_S
        self.rpcs = {
            "Runtime.Generate": (blended(valid_generate(), pb.GenerateRequest), rt.Generate, lambda r: call),
            "Runtime.GenerateStream": (blended(valid_generate(), pb.GenerateRequest), rt.GenerateStream,
                                       lambda r: call),
            "Runtime.GetModelInfo": (messages(pb.GetModelInfoRequest), rt.GetModelInfo, lambda r: call),
            "Runtime.RunTask": (blended(valid_task(), pb.TaskRequest, 16), rt.RunTask, task_deadline),
            "Controller.RunTask": (blended(valid_task(), pb.TaskRequest, 16), ct.RunTask, task_deadline),
            # no fault headers: an abort the request asked for is not a finding
            "Tools.Call": (blended(valid_tool_call(), tools_pb2.ToolCallRequest),
                           lambda r, timeout: tl.Call(r, timeout=timeout, metadata=[
                               ("x-inloop-fault-abort", "off"), ("x-inloop-fault-delay", "off")]),
                           lambda r: call),
            "Tools.List": (messages(tools_pb2.ListToolsRequest), tl.List, lambda r: call),
        }

    def fuzz(self, rpc: str, calls: int, tally: Tally, seed: int | None = None) -> None:
        """`calls` requests drawn for `rpc`, each sent once."""
        from hypothesis import HealthCheck, given, settings

        strategy, fn, deadline = self.rpcs[rpc]
        if rpc in ("Runtime.GetModelInfo", "Tools.List"):  # no fields: nothing to vary, send it `calls` times
            for _ in range(calls):
                request = _EMPTY[rpc]()
                call_and_record(tally, rpc, fn, request, deadline(request))
            return

        @settings(max_examples=calls, deadline=None, database=None, derandomize=seed is None,
                  suppress_health_check=list(HealthCheck), phases=("generate",))
        @given(strategy)
        def run(request):
            call_and_record(tally, rpc, fn, request, deadline(request))

        if seed is not None:
            run._hypothesis_internal_use_seed = seed
        run()


def report(tally: Tally) -> str:
    lines = [f"{rpc:<24}{n:>6} calls  " + ", ".join(f"{code} {k}" for (r, code), k in sorted(tally.statuses.items())
                                                   if r == rpc) for rpc, n in sorted(tally.calls.items())]
    lines.append(f"findings: {len(tally.bad)}")
    lines += [f"  {b}" for b in tally.bad[:20]]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description="Fuzz every RPC of a mesh on loopback (a tiny model).")
    ap.add_argument("--calls", type=int, default=1000, help="requests per RPC")
    ap.add_argument("--seed", type=int, default=int(time.time()), help="hypothesis seed (printed)")
    args = ap.parse_args()
    from inloop.services.runtime.model.tiny import make_tiny
    from tests.service_procs import mesh_processes

    with tempfile.TemporaryDirectory(prefix="inloop-fuzz-") as tmp:
        root = Path(tmp)
        with mesh_processes(root, make_tiny("llama", root / "tiny")) as procs:
            targets, tally = Targets(*(p.target for p in procs)), Tally()
            for rpc in targets.rpcs:
                started = time.monotonic()
                targets.fuzz(rpc, args.calls, tally, seed=args.seed)
                print(f"{rpc}: {tally.calls[rpc]} calls in {time.monotonic() - started:.0f} s", flush=True)
            alive = all(p.proc.poll() is None for p in procs)
    print(f"seed {args.seed}\n" + report(tally) + f"\nservices alive after: {alive}")
    return 0 if alive and not tally.bad else 1


if __name__ == "__main__":
    sys.exit(main())
