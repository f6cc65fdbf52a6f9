"""Task families and agentic scenarios with deterministic checkers.

    from inloop.loadgen.tasks import load_cases, check
    for case in load_cases(limit_per_family=3):
        result = run_task(case)                      # the agent loop, either route
        graded = check(case, result.final_answer, result.steps)

The cases live in data/<family>.jsonl (written by build_cases.py from sources.py and the
search corpus, services/tools/data/corpus.jsonl); model.py defines them, checkers.py
grades them.
"""
from inloop.loadgen.tasks.checkers import CheckResult, check, reference_answer, reference_steps
from inloop.loadgen.tasks.model import BASIC_FAMILIES, FAMILIES, SCENARIOS, SPLITS, TaskCase, load_cases, split_for

__all__ = ["BASIC_FAMILIES", "FAMILIES", "SCENARIOS", "SPLITS", "CheckResult", "TaskCase", "check",
           "load_cases", "reference_answer", "reference_steps", "split_for"]
