"""The answering loop of `inloop eval bfcl`: resume, budget, stop, and a failed request."""
from __future__ import annotations

import io
import json
import threading
import time

from inloop.loadgen.eval.arms import CONSTRAINED, Item
from inloop.loadgen.eval.bfcl import _lane

ITEMS = [Item(f"simple_python_{i}", "simple_python", [], [], "p", 8) for i in range(3)]


class Answers:
    """Stands in for the transport below the arms (a runtime is tested in test_arms.py)."""

    def __init__(self, fail_on: str = ""):
        self.fail_on, self.asked = fail_on, []

    def constrained(self, item, arm=CONSTRAINED):
        self.asked.append(item.id)
        if item.id == self.fail_on:
            raise RuntimeError("deadline exceeded")
        return {"id": item.id, "arm": CONSTRAINED, "latency_ms": 1.0, "finish_reason": "stop", "result": "x"}


def run(done=(), budget_s=0.0, stop=False, fail_on="", t_start=None):
    client, f, ev = Answers(fail_on), io.StringIO(), threading.Event()
    if stop:
        ev.set()
    _lane([CONSTRAINED], ITEMS, set(done), {CONSTRAINED: client}, None, f, threading.Lock(),
          t_start or time.perf_counter(), budget_s, ev)
    return client.asked, [json.loads(line) for line in f.getvalue().splitlines()]


def test_answers_every_item_and_skips_what_is_done():
    asked, recs = run(done={(CONSTRAINED, "simple_python_1")})
    assert asked == ["simple_python_0", "simple_python_2"] and [r["id"] for r in recs] == asked


def test_a_spent_budget_or_a_stop_answers_nothing_more():
    assert run(budget_s=1.0, t_start=time.perf_counter() - 5) == ([], [])
    assert run(stop=True) == ([], [])


def test_a_failed_request_is_a_record_with_its_error_and_the_run_goes_on():
    asked, recs = run(fail_on="simple_python_1")
    assert len(asked) == 3 and recs[1]["error"] == "RuntimeError: deadline exceeded"
    assert recs[1]["result"] == "" and recs[1]["finish_reason"] == "error" and "error" not in recs[2]


def test_records_keep_the_last_answer_per_arm_and_item(tmp_path):
    from inloop.loadgen.eval.bfcl import load_records

    path = tmp_path / "records.jsonl"
    lines = [{"arm": CONSTRAINED, "id": "a", "error": "boom"}, {"arm": CONSTRAINED, "id": "b"},
             {"arm": CONSTRAINED, "id": "a", "result": "ok"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert load_records(path) == [{"arm": CONSTRAINED, "id": "a", "result": "ok"}, {"arm": CONSTRAINED, "id": "b"}]
    assert load_records(tmp_path / "missing.jsonl") == []
