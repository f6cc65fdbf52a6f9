"""The arms of `inloop eval bfcl` against a real runtime (gRPC and its HTTP front) on a tiny
random llama, and HF transformers on the same weights: one rendered prompt for all of them,
the same answers through both transports, and greedy equality with HF."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from inloop.loadgen.eval.arms import (
    CONSTRAINED,
    HF,
    REQUIRED,
    UNCONSTRAINED,
    GrpcArms,
    Item,
    OpenAIArms,
)
from inloop.loadgen.eval.bfcl import interleave, render_prompt
from inloop.loadgen.eval.bfcl_calls import is_valid_call
from inloop.loadgen.eval.bfcl_schema import to_openai_tools
from inloop.loadgen.eval.equality import first_divergence
from inloop.services.contract.generation import ChatMessage, GenerateRequest
from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.tiny import make_tiny
from inloop.services.runtime.model.tokenizer import Tokenizer

from tests.conftest import requires_reference
from tests.service_procs import ServiceProcess

CASES = json.loads((Path(__file__).parent / "fixtures" / "bfcl_function_docs.json").read_text())["cases"]
QUESTION = [{"role": "user", "content": "Find the area of a triangle with a base of 10 units and height of 5 units."}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("bfcl")
    model = make_tiny("llama", root / "tiny")
    # a generous start timeout: this runs beside long jobs on a shared 2-core machine
    proc = ServiceProcess("runtime", ["serve", "--model", str(model), "--backend", "cpu", "--port", "0", "--http-port",
                                      "0", "--served-model-name", "tiny"], root / "runtime.jsonl", start_timeout_s=180)
    port = proc.wait_log("http_listening", timeout_s=30)["port"]
    grpc_arms, http_arms = GrpcArms(proc.target), OpenAIArms(f"http://127.0.0.1:{port}/v1")
    yield model, grpc_arms, http_arms
    grpc_arms.close()
    http_arms.close()
    proc.stop()


def items(model: Path, max_tokens: int = 10) -> list[Item]:
    tok = Tokenizer(model)
    out = []
    for case, category in ((CASES[0], "simple_python"), (CASES[1], "parallel"), (CASES[8], "multiple")):
        tools = to_openai_tools(case["hinted"])
        out.append(Item(case["id"], category, QUESTION, tools, render_prompt(tok, QUESTION, tools), max_tokens))
    return out


def test_rendered_prompt_is_the_engines(stack):
    model, _, _ = stack
    engine = Engine.load(model)
    for it in items(model):
        assert it.prompt == engine.render(GenerateRequest(messages=[ChatMessage(**m) for m in it.messages],
                                                          tools=it.tools))
        assert "<tools>" in it.prompt and it.tools[0]["function"]["name"] in it.prompt


def test_constrained_and_unconstrained_see_the_same_prompt(stack):
    model, grpc_arms, _ = stack
    tok = Tokenizer(model)
    for it in items(model):
        c, u = grpc_arms.constrained(it), grpc_arms.unconstrained(it)
        n = len(tok.encode(it.prompt, add_special_tokens=True))
        assert c["prompt_tokens"] == u["prompt_tokens"] == n
        assert c["arm"] == CONSTRAINED and u["arm"] == UNCONSTRAINED
        assert 0 < u["completion_tokens"] <= it.max_tokens and len(u["margins"]) == u["completion_tokens"]
        assert all(len(t) == 2 for t in u["top2"])   # the two most likely tokens at every step
        assert c["finish_reason"] in ("stop", "length", "tool_calls")


def test_grpc_and_http_give_the_same_answers(stack):
    model, grpc_arms, http_arms = stack
    for it in items(model):
        g, h = grpc_arms.unconstrained(it), http_arms.unconstrained(it)
        assert g["text"] == h["text"] and g["result"] == h["result"]
        # our /v1/completions returns no logprobs (yet): the margins of the HTTP arm come only
        # from servers that do
        assert h["margins"] == [] or h["margins"] == pytest.approx(g["margins"], abs=1e-5)
        gc, hc = grpc_arms.constrained(it), http_arms.constrained(it)
        assert gc["result"] == hc["result"]


def test_the_required_arm_forces_a_call(stack):
    """A random model never opens a call by itself; forced (tool_choice required), every answer
    is a call to an offered function from its first token, over gRPC and HTTP alike, and one
    whose arguments fit in max_tokens (numbers and a short string; the tiny model's tokens are
    a byte or two, and a random model fills a free string to its cap) is a well-formed call."""
    model, grpc_arms, http_arms = stack
    for k, it in enumerate(items(model, max_tokens=256)):
        for answer in (grpc_arms.constrained(it, REQUIRED), http_arms.constrained(it, REQUIRED)):
            assert answer["arm"] == REQUIRED and answer["text"].startswith("<tool_call>"), answer
            names = {t["function"]["name"] for t in it.tools}
            assert any(f'"name": "{n}"' in answer["text"] for n in names), answer["text"][:200]
            if k == 0:  # calculate_triangle_area(base: int, height: int, unit: str)
                assert is_valid_call(answer["result"], it.tools), answer


@requires_reference
def test_hf_generates_what_we_generate(stack):
    from inloop.loadgen.eval.arms import HFArm

    model, grpc_arms, _ = stack
    hf, tok = HFArm(model, threads=1), Tokenizer(model)
    for it in items(model, max_tokens=16):
        assert hf.prompt_ids(it.prompt) == tok.encode(it.prompt, add_special_tokens=True)
        ours, theirs = grpc_arms.unconstrained(it), hf.unconstrained(it)
        assert theirs["arm"] == HF and len(theirs["margins"]) == len(theirs["token_ids"])
        d = first_divergence(it.id, ours, theirs, set(hf.eos if isinstance(hf.eos, list) else [hf.eos]))
        assert d is None or d.near_tie, d


def test_interleave_takes_categories_in_turn(stack):
    model, _, _ = stack
    its = items(model) + items(model)
    assert [i.category for i in interleave(its)] == ["simple_python", "parallel", "multiple"] * 2
