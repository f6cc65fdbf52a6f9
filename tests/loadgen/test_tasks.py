"""Task cases: enough of each family, answers the sources support, checkers that tell right
from wrong, stable splits, and data files that the generator reproduces byte for byte."""
from __future__ import annotations

import datetime as dt
import importlib.util
import json

import pytest

from inloop.loadgen.tasks import build_cases
from inloop.loadgen.tasks.checkers import (
    check,
    dates_in,
    numbers_in,
    reference_answer,
    reference_steps,
    sentences_of,
    text_positions,
    value_positions,
    word_count,
)
from inloop.loadgen.tasks.model import FAMILIES, SCENARIOS, TaskCase, load_cases, split_for

ALL = load_cases()
CORPUS = build_cases.load_corpus()
SEARCH_FAMILIES = ("search_grounded", "retrieval_correction", "confidence_gated_branching")


def by_family(family: str) -> list[TaskCase]:
    return [c for c in ALL if c.family == family]


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


needs_search = pytest.mark.skipif(not has_module("inloop.services.tools.functions.search"),
                                  reason="inloop.services.tools.functions.search (the BM25 tool) is not there yet")


@pytest.fixture(scope="module")
def bm25():
    from inloop.services.tools.functions.search import Bm25Index, Doc
    return Bm25Index([Doc(d["id"], d["title"], d["text"]) for d in CORPUS.values()])


def top_ids(index, query: str, k: int = 3) -> list[str]:
    return [doc.id for doc, _ in index.top(query, k)]


# ---- shape -----------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_twenty_cases_and_both_splits(family):
    cases = by_family(family)
    assert len(cases) >= 20
    assert {c.split for c in cases} == {"calibration", "eval"}
    assert all(c.split == split_for(c.id) for c in cases)


def test_ids_are_unique_and_splits_are_a_pure_function_of_the_id():
    ids = [c.id for c in ALL]
    assert len(ids) == len(set(ids))
    assert split_for("tool_state_adaptation-001") == split_for("tool_state_adaptation-001")
    calibration = load_cases(split="calibration")
    assert 0.2 < len(calibration) / len(ALL) < 0.4
    assert {c.id for c in calibration} | {c.id for c in load_cases(split="eval")} == set(ids)


def test_load_cases_filters_and_returns_fresh_objects():
    few = load_cases(limit_per_family=2)
    assert [c.family for c in few] == [f for f in FAMILIES for _ in range(2)]
    assert {c.family for c in load_cases(list(SCENARIOS))} == set(SCENARIOS)
    first = load_cases("general_short", limit_per_family=1)[0]
    first.messages.append({"role": "assistant", "content": "Paris"})  # what a loop does
    assert len(load_cases("general_short", limit_per_family=1)[0].messages) == 2
    with pytest.raises(ValueError, match="unknown task family"):
        load_cases("poetry")
    with pytest.raises(ValueError, match="unknown split"):
        load_cases(split="train")


def test_a_case_with_a_bad_tool_choice_is_refused():
    row = ALL[0].to_dict() | {"tool_choice": "calculator"}
    with pytest.raises(ValueError, match="tool_choice"):
        TaskCase.from_dict(row)


def test_corpus_is_well_formed():
    lines = build_cases.CORPUS.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert 80 <= len(rows) <= 150
    assert all(set(r) == {"id", "title", "text"} for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)


def test_generator_reproduces_the_committed_files():
    for family, cases in build_cases.build_all().items():
        committed = (build_cases.DATA_DIR / f"{family}.jsonl").read_text(encoding="utf-8")
        assert build_cases.render(cases) == committed, f"run python -m inloop.loadgen.tasks.build_cases ({family})"


# ---- the sources support the expected answers -------------------------------------------

@pytest.mark.parametrize("case", [c for c in ALL if c.family in SEARCH_FAMILIES], ids=lambda c: c.id)
def test_search_answers_are_in_the_doc_they_name(case):
    exp = case.expected
    doc = CORPUS[exp["doc_id"]]
    assert value_positions(doc["text"], exp["answer"], exp["kind"], exp.get("accept", []))
    if case.family == "retrieval_correction":
        alias = CORPUS[exp["alias_doc_id"]]["text"]
        assert not value_positions(alias, exp["answer"], exp["kind"], exp.get("accept", []))


@pytest.mark.parametrize("case", by_family("receipt_extract"), ids=lambda c: c.id)
def test_receipt_values_are_in_the_receipt(case):
    text, exp = case.expected["reference_calls"][0]["arguments"]["text"], case.expected
    assert text in case.question
    assert text_positions(text, exp["merchant"])
    assert dt.date.fromisoformat(exp["date"]) in [d for _, d in dates_in(text)]
    assert exp["total"] in [v for _, v in numbers_in(text)]


@pytest.mark.skipif(not has_module("inloop.services.tools.functions.extract_receipt"),
                    reason="inloop.services.tools.functions.extract_receipt is not there yet")
def test_the_extract_receipt_tool_reads_every_receipt():
    from inloop.services.tools.functions.extract_receipt import extract_receipt
    for case in by_family("receipt_extract"):
        got = extract_receipt(None, case.expected["reference_calls"][0]["arguments"]["text"])
        exp = case.expected
        assert (got["merchant"].lower(), got["date"], got["total"]) == \
            (exp["merchant"].lower(), exp["date"], exp["total"]), case.id


@pytest.mark.parametrize("case", by_family("summarize_short"), ids=lambda c: c.id)
def test_any_extractive_summary_names_the_key_terms(case):
    paragraph = CORPUS[case.expected["doc_id"]]["text"]
    assert paragraph in case.question
    for sentence in sentences_of(paragraph):
        for group in case.expected["key_terms"]:
            assert any(text_positions(sentence, term) for term in group), (sentence, group)
    assert word_count(paragraph) > case.expected["max_words"]


@pytest.mark.skipif(not has_module("inloop.services.tools.functions.summarize"),
                    reason="inloop.services.tools.functions.summarize is not there yet")
def test_the_summarize_tool_output_passes_the_checker():
    from inloop.services.tools.functions.summarize import summarize
    for case in by_family("summarize_short"):
        summary = summarize(None, **case.expected["reference_calls"][0]["arguments"])["summary"]
        assert check(case, summary, reference_steps(case)).passed, case.id


@needs_search
@pytest.mark.parametrize("case", by_family("retrieval_correction"), ids=lambda c: c.id)
def test_the_first_query_misses_and_the_second_finds(case, bm25):
    exp = case.expected
    for query in exp["first_queries"]:
        hits = top_ids(bm25, query)
        assert exp["doc_id"] not in hits, f"{query!r} already finds the answer"
        assert exp["alias_doc_id"] in hits, f"{query!r} does not show the rename"
    assert exp["doc_id"] in top_ids(bm25, exp["second_query"])


@needs_search
@pytest.mark.parametrize("case", by_family("search_grounded") + by_family("confidence_gated_branching"),
                         ids=lambda c: c.id)
def test_the_question_itself_finds_its_doc(case, bm25):
    assert case.expected["doc_id"] in top_ids(bm25, case.question)


@pytest.mark.skipif(not has_module("inloop.services.tools.state"), reason="inloop.services.tools.state is not there yet")
@pytest.mark.parametrize("case", by_family("tool_state_adaptation"), ids=lambda c: c.id)
def test_the_scripted_changes_lead_to_the_expected_value(case):
    """Replay the reference calls with the setup's changes against the real kv tool."""
    from inloop.services.tools.functions.kv import kv
    from inloop.services.tools.state import ToolState

    session = ToolState().session(case.id)
    for key, value in case.setup["kv"].items():
        kv(session, "put", key, value=value)
    changes = case.setup["changes"]
    result = None
    for n, call in enumerate(case.expected["reference_calls"], 1):
        for change in (c for c in changes if c["before_tool_call"] == n):
            kv(session, change["op"], change["key"], value=change.get("value"), amount=change.get("amount"))
        result = kv(session, **call["arguments"])
    assert str(result["value"]) == case.expected["answer"]
    assert len(case.expected["reference_calls"]) >= max(c["before_tool_call"] for c in changes)


@pytest.mark.skipif(not (has_module("inloop.services.common.agent_loop") and has_module("inloop.services.tools.registry")),
                    reason="the agent loop or the tool registry is not there yet")
def test_a_scripted_model_passes_every_case_through_the_real_loop_and_tools():
    """The reference calls, run by the one agent loop against the real tools, with each case's
    setup applied by the loop. For tool_state_adaptation the scripted model answers with
    what the last kv call returned, so the case passes only if the loop applied the change
    at the point the setup names."""
    import asyncio
    import dataclasses
    import time

    from inloop.services.common.agent_loop import run_agent
    from inloop.services.contract.errors import HopError, ToolError
    from inloop.services.contract.task import ModelReply, TaskSpec, ToolReply
    from inloop.services.contract.tool_calls import ToolCall
    from inloop.services.contract.tool_schema import openai_definitions
    from inloop.services.tools.registry import call_tool
    from inloop.services.tools.state import ToolState

    definitions = {d["function"]["name"]: d for d in openai_definitions()}

    class ScriptedModel:
        name, provider = "scripted", "test"

        def __init__(self, case: TaskCase):
            self.case = case
            self.calls = [ToolCall(c["name"], c["arguments"]).to_text() for c in case.expected["reference_calls"]]

        async def step(self, task, messages, tool_choice):
            if self.calls:
                return ModelReply(self.calls.pop(0), "stop")
            if self.case.family == "tool_state_adaptation":
                return ModelReply(f"It is {json.loads(messages[-1]['content'])['value']}.", "stop")
            return ModelReply(reference_answer(self.case), "stop")

    class LocalTools:
        def __init__(self):
            self.state = ToolState()

        async def call(self, task, name, arguments, call_id):
            try:
                return ToolReply(call_tool(self.state, name, arguments, call_id, task.task_id))
            except ToolError as exc:
                raise HopError("tool_error", str(exc)) from None

        async def setup(self, task, name, arguments):
            call_tool(self.state, name, arguments, "", task.task_id)

    async def run(case: TaskCase):
        spec = TaskSpec(task_id=case.id, messages=case.messages, tools=[definitions[t] for t in case.tools],
                        tool_choice=case.tool_choice, max_steps=case.max_steps, deadline=time.monotonic() + 30,
                        setup=case.setup, family=case.family)
        return await run_agent(spec, ScriptedModel(case), LocalTools())

    for case in ALL:
        outcome = asyncio.run(run(case))
        result = check(case, outcome.answer, [dataclasses.asdict(s) for s in outcome.steps])
        assert outcome.ok and result.passed, (case.id, outcome.error_type, result.reason)


# ---- the checkers ------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_the_reference_run_passes(case):
    result = check(case, reference_answer(case), reference_steps(case))
    assert result.passed, result.reason


def wrong_answers(case: TaskCase) -> list[str]:
    """Plausible wrong answers: unsure, off by one, another case's answer, a stale value."""
    exp, out = case.expected, ["I am not sure."]
    if case.family == "receipt_extract":
        right = reference_answer(case)
        out += [right.replace(f"{exp['total']:.2f}", f"{exp['total'] + 1:.2f}"),
                right.replace(exp["date"], (dt.date.fromisoformat(exp["date"]) + dt.timedelta(1)).isoformat()),
                right.replace(exp["merchant"], "Harbour Lights Cinema" if "Bakery" in exp["merchant"]
                              else "Brindle & Daughters Bakery")]
    elif case.family == "summarize_short":
        paragraph = CORPUS[exp["doc_id"]]["text"]
        out += [paragraph] + [reference_answer(c) for c in by_family(case.family) if c.id != case.id]
    elif exp["kind"] == "number":
        value = [v for _, v in numbers_in(exp["answer"])][0]
        out.append(f"{value + 1:,.2f}")
    elif exp["kind"] == "date":
        out.append((dt.date.fromisoformat(exp["answer"]) + dt.timedelta(1)).isoformat())
    else:
        out += [c.expected["answer"] for c in by_family(case.family)
                if not value_positions(c.expected["answer"], exp["answer"], "text", exp.get("accept", []))][:2]
    if "stale" in exp:
        out += [exp["stale"], f"It was {exp['answer']} but now it is {exp['stale']}."]
    return out


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_wrong_answers_fail(case):
    for answer in wrong_answers(case):
        result = check(case, answer, reference_steps(case))
        assert not result.passed, f"{answer!r} passed"
    assert not check(case, "", reference_steps(case)).passed


def test_retrieval_correction_needs_two_searches():
    case = by_family("retrieval_correction")[0]
    one_search = reference_steps(case)[:3]
    result = check(case, reference_answer(case), one_search)
    assert not result.passed and "2 successful search" in result.reason
    failed = [dict(s, status="tool_hop_failed") if s["kind"] == "tool" else s for s in reference_steps(case)]
    assert not check(case, reference_answer(case), failed).passed


def test_confidence_gated_records_whether_it_verified():
    case = by_family("confidence_gated_branching")[0]
    assert check(case, reference_answer(case), reference_steps(case)).details["verified"] is True
    direct = check(case, reference_answer(case), reference_steps(case)[:1])
    assert direct.passed and direct.details["verified"] is False and direct.details["gate_fired"] is False
    gated = [reference_steps(case)[0], {"kind": "gate", "name": "mean_logprob", "status": "ok"}]
    gated += reference_steps(case)[1:]
    assert check(case, reference_answer(case), gated).details["gate_fired"] is True


def test_stale_then_new_passes_new_then_stale_fails():
    case = next(c for c in by_family("tool_state_adaptation") if c.expected["kind"] == "number")
    new, stale, steps = case.expected["answer"], case.expected["stale"], reference_steps(case)
    assert check(case, f"It changed from {stale} to {new}.", steps).passed
    assert not check(case, f"It is {new}, no wait, {stale}.", steps).passed


@pytest.mark.parametrize("answer, expected, kind", [
    ("It holds 4200 mAh.", "4,200 mAh", "number"),
    ("About 1.25 thousand people", "1,250", "number"),
    ("six cups", "6", "number"),
    ("11,600,000 passengers", "11.6 million", "number"),
    ("April 18th, 2026", "2026-04-18", "date"),
    ("18 April 2026", "2026-04-18", "date"),
    ("04/18/2026", "2026-04-18", "date"),
    ("TALLOW AND REED", "Tallow & Reed", "text"),
])
def test_formatting_is_lenient(answer, expected, kind):
    assert value_positions(answer, expected, kind)


@pytest.mark.parametrize("answer, expected, kind, ignore", [
    ("It holds 4201 mAh.", "4,200 mAh", "number", []),
    ("The Moka 6 brews 4 cups.", "6", "number", ["Moka 6"]),
    ("2026-04-19", "2026-04-18", "date", []),
    ("unlocked", "locked", "text", []),
])
def test_facts_are_strict(answer, expected, kind, ignore):
    assert not value_positions(answer, expected, kind, ignore=ignore)
