"""Task cases: what one agent task asks, offers and expects, and how to load them.

A case is data, not code: `loadgen/tasks/data/<family>.jsonl` holds one JSON object per
line (written by `build_cases.py`, committed, reproduced exactly by it). Both routes run
the same `TaskCase` through the one agent loop; `checkers.check` grades the result.

Fields the loop reads:
  messages     the conversation to start from, [{"role": "system"|"user", "content": str}]
  tools        names of the tools offered (services/tools registry names); [] offers none
  tool_choice  "none" | "auto" | "required" | a tool name, for the FIRST model step; after a
               tool result the loop should offer the tools with "auto" (as the OpenAI Agents
               SDK's reset_tool_choice does), or a forced call would repeat forever
  max_steps    the most model steps the task may take (a tool call follows a model step)
  setup        initial tool state and scripted changes, see below

`setup` (empty for most families):
  {"kv": {key: value, ...},                 preload the task's kv namespace before step 1
   "changes": [{"before_tool_call": n,      apply just before the task's n-th tool call
                                            runs (1-based, counting tool steps, never retry
                                            attempts), as another writer would
                "op": "put" | "increment", "key": str, "value"?: any, "amount"?: number,
                "writer": str}]}           who made the change (for traces and reports)

`expected` is what the checker needs; its keys per family are documented in checkers.py.
`split` is not stored: it is derived from the id (see `split_for`), so adding a case never
moves another case between the calibration and eval splits.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"

BASIC_FAMILIES = ("general_short", "reading_short", "receipt_extract", "search_grounded", "summarize_short")
SCENARIOS = ("retrieval_correction", "tool_state_adaptation", "confidence_gated_branching")
FAMILIES = BASIC_FAMILIES + SCENARIOS
SPLITS = ("calibration", "eval")
TOOL_NAMES = ("search", "extract_receipt", "summarize", "calculator", "kv")
CALIBRATION_PERCENT = 30  # the uncertainty gate's threshold is fitted on this share of cases


def split_for(case_id: str) -> str:
    """"calibration" for about 30% of ids, "eval" for the rest; a pure function of the id."""
    bucket = int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "big") % 100
    return "calibration" if bucket < CALIBRATION_PERCENT else "eval"


@dataclass(frozen=True)
class TaskCase:
    id: str
    family: str
    messages: list[dict[str, str]]
    tools: list[str]
    tool_choice: str
    max_steps: int
    expected: dict[str, Any]
    setup: dict[str, Any] = field(default_factory=dict)
    split: str = ""  # filled from the id when empty

    def __post_init__(self) -> None:
        if not self.split:
            object.__setattr__(self, "split", split_for(self.id))
        problems = _problems(self)
        if problems:
            raise ValueError(f"task case {self.id!r}: " + "; ".join(problems))

    @property
    def question(self) -> str:
        """The last user message: what the task asks."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    def to_dict(self) -> dict[str, Any]:
        """The stored form: every field but `split`, which is derived from the id."""
        row = asdict(self)
        del row["split"]
        return row

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "TaskCase":
        # Deep copies: the loop appends to messages, and one case must not leak into another run.
        row = copy.deepcopy(row)
        stored_split = row.pop("split", "")
        case = cls(**row)
        if stored_split and stored_split != case.split:
            raise ValueError(f"task case {case.id!r}: split {stored_split!r} disagrees with its id "
                             f"({case.split!r}); splits are derived from ids, drop the field")
        return case


def _problems(case: TaskCase) -> list[str]:
    out = []
    if case.family not in FAMILIES:
        out.append(f"family {case.family!r} is not one of {', '.join(FAMILIES)}")
    if case.split not in SPLITS:
        out.append(f"split {case.split!r} is not one of {', '.join(SPLITS)}")
    unknown = [t for t in case.tools if t not in TOOL_NAMES]
    if unknown:
        out.append(f"unknown tools {unknown} (known: {', '.join(TOOL_NAMES)})")
    if case.tool_choice not in ("none", "auto", "required") and case.tool_choice not in case.tools:
        out.append(f"tool_choice {case.tool_choice!r} must be none, auto, required or an offered tool")
    if case.tool_choice in ("required",) and not case.tools:
        out.append("tool_choice 'required' needs at least one tool")
    if not case.messages or case.messages[-1].get("role") != "user":
        out.append("messages must end with a user message")
    if any(set(m) != {"role", "content"} for m in case.messages):
        out.append("each message must be exactly {role, content}")
    if case.max_steps < 1:
        out.append("max_steps must be >= 1")
    return out


def _read_family(family: str) -> list[TaskCase]:
    path = DATA_DIR / f"{family}.jsonl"
    cases = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            case = TaskCase.from_dict(json.loads(line))
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path.name}:{lineno}: {exc}") from None
        if case.family != family:
            raise ValueError(f"{path.name}:{lineno}: case {case.id!r} says family {case.family!r}")
        cases.append(case)
    return cases


def load_cases(family: str | list[str] | None = None, split: str | None = None,
               limit_per_family: int | None = None) -> list[TaskCase]:
    """Cases of one family, several, or all (in FAMILIES order, file order within each).

    `split` keeps only "calibration" or "eval" cases; `limit_per_family` keeps the first N of
    each family after the split filter (CI runs a few per family). Every call returns fresh
    objects, so a caller may mutate a case's messages without affecting the next caller.
    """
    families = FAMILIES if family is None else ([family] if isinstance(family, str) else list(family))
    for name in families:
        if name not in FAMILIES:
            raise ValueError(f"unknown task family {name!r}; known: {', '.join(FAMILIES)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if limit_per_family is not None and limit_per_family < 0:
        raise ValueError("limit_per_family must be >= 0")
    out: list[TaskCase] = []
    for name in families:
        cases = [c for c in _read_family(name) if split is None or c.split == split]
        out.extend(cases if limit_per_family is None else cases[:limit_per_family])
    return out
