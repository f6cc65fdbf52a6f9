"""The equality check of two greedy generations and the run summary, on synthetic records with
known answers."""
from __future__ import annotations

import math

import pytest
from inloop.loadgen.eval.arms import CONSTRAINED, HF, UNCONSTRAINED
from inloop.loadgen.eval.bfcl_report import markdown, summarize
from inloop.loadgen.eval.equality import first_divergence

EOS = {2}


def rec(item_id, arm, ids, margins=None, result="text", category="simple_python", latency=100.0, error=None):
    r = {"id": item_id, "category": category, "arm": arm, "token_ids": ids, "margins": margins or [0.5] * len(ids),
         "result": result, "text": result if isinstance(result, str) else f"<tool_call>{result}", "latency_ms": latency, "completion_tokens": len(ids),
         "finish_reason": "length" if len(ids) > 1 else "stop"}
    if error:
        r["error"] = error
    return r


def test_equal_sequences_and_a_trailing_eos_on_one_side_only():
    assert first_divergence("a", rec("a", UNCONSTRAINED, [5, 6, 7]), rec("a", HF, [5, 6, 7]), EOS) is None
    assert first_divergence("a", rec("a", UNCONSTRAINED, [5, 6]), rec("a", HF, [5, 6, 2]), EOS) is None


def test_divergence_at_a_near_tie_and_a_real_one():
    d = first_divergence("a", rec("a", UNCONSTRAINED, [5, 6, 7], [0.3, 2e-5, 0.4]),
                         rec("a", HF, [5, 9, 7], [0.3, 5e-5, 0.4]), EOS)
    assert (d.step, d.ours_token, d.other_token, d.near_tie) == (1, 6, 9, True)
    d = first_divergence("a", rec("a", UNCONSTRAINED, [5, 6], [0.3, 2e-5]), rec("a", HF, [5, 9], [0.3, 0.2]), EOS)
    assert d.near_tie is False and d.other_margin == pytest.approx(0.2)


def test_one_side_stops_early():
    d = first_divergence("a", rec("a", UNCONSTRAINED, [5, 2], [0.3, 0.6]), rec("a", HF, [5, 8, 9], [0.3, 0.1, 0.2]),
                         EOS)
    assert (d.step, d.ours_token, d.other_token, d.near_tie) == (1, None, 8, False)


def test_missing_margins_are_never_a_near_tie():
    d = first_divergence("a", {"token_ids": [1, 3], "margins": []}, {"token_ids": [1, 4], "margins": [0, 0]}, EOS)
    assert math.isnan(d.ours_margin) and not d.near_tie


def test_summary_counts_accuracy_valid_calls_latency_and_equality():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    items = [{"id": f"s{i}", "category": "simple_python", "tools": tools} for i in range(4)] + \
            [{"id": f"i{i}", "category": "irrelevance", "tools": tools} for i in range(2)]
    call = [{"f": "{}"}]
    records = [rec("s0", CONSTRAINED, [1], result=call, latency=10), rec("s1", CONSTRAINED, [1], result=call, latency=30),
               rec("s2", CONSTRAINED, [1], latency=20), rec("s3", CONSTRAINED, [], error="boom", latency=0),
               rec("i0", CONSTRAINED, [1], category="irrelevance"), rec("i1", CONSTRAINED, [1], category="irrelevance",
                                                                        result=call)]
    records += [rec(i["id"], UNCONSTRAINED, [4, 5], category=i["category"]) for i in items]
    records += [rec(i["id"], HF, [4, 5] if i["id"] != "s1" else [4, 6], [0.5, 3e-5], category=i["category"])
                for i in items]
    records[[r["arm"] == UNCONSTRAINED and r["id"] == "s1" for r in records].index(True)]["margins"] = [0.5, 1e-5]
    verdicts = [{"arm": CONSTRAINED, "id": "s0", "valid": True}, {"arm": CONSTRAINED, "id": "s1", "valid": False},
                {"arm": CONSTRAINED, "id": "i0", "valid": True}, {"arm": UNCONSTRAINED, "id": "i0", "valid": True},
                {"arm": UNCONSTRAINED, "id": "i1", "valid": True}]
    records.append(rec("extra", HF, [1]))   # answered by one arm only: not scored
    s = summarize(items, records, verdicts, EOS)
    assert (s["items_scored"], s["records_left_out"]) == (6, 1)
    assert s["accuracy"][f"{CONSTRAINED}|simple_python"]["passed"] == 1
    assert s["accuracy"][f"{CONSTRAINED}|simple_python"]["n"] == 4
    assert s["accuracy"][f"{CONSTRAINED}|all"]["passed"] == 2
    assert s["accuracy"][f"{UNCONSTRAINED}|irrelevance"]["rate"] == 1.0
    assert s["valid_call"][f"{CONSTRAINED}|simple_python"]["valid"] == 2
    assert f"{CONSTRAINED}|irrelevance" not in s["valid_call"]
    assert s["latency"][CONSTRAINED]["n"] == 5 and s["latency"][CONSTRAINED]["p50_ms"] == 30
    assert s["latency"][UNCONSTRAINED]["cut"] == 6 and s["latency"][CONSTRAINED]["cut"] == 0
    eq = s["equality"]
    assert (eq["compared"], eq["equal"], eq["near_ties"], eq["real"]) == (6, 5, 1, 0)
    assert eq["divergences"][0]["id"] == "s1" and eq["divergences"][0]["step"] == 1
    assert s["constrained_vs_free"] == {"compared": 6, "same_text": 3, "constrained_opened_a_call": 3}
    assert s["errors"] == [{"arm": CONSTRAINED, "id": "s3", "error": "boom"}]
    md = markdown(s, {"model": "m", "max_tokens": 8, "wall_s": 1.0})
    assert "| simple_python | 0.25 [" in md and "5 of 6 items generated the same tokens" in md
    assert "| s1 | 1 | 5 | 6 |" in md
