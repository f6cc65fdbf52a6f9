"""Deterministic checkers: did a task's final answer (and its steps) do what the case asks?

Lenient on form, strict on facts. "1,250", "1250.0" and "1.25 thousand" are the same
number and "six" is 6; "2026-04-18", "18 April 2026", "April 18th, 2026" and "04/18/2026"
are the same date; entities match case-insensitively on word boundaries ("Tallow & Reed"
= "tallow and reed"). But the fact itself must be there: 1251 is not 1250, and an answer
that names a stale value after the new one has not adapted.

`expected` keys, by family:
  answer families (general_short, reading_short, search_grounded, retrieval_correction,
  confidence_gated_branching, tool_state_adaptation):
    answer   the fact, as a string ("4,200 mAh", "Ines Calloway", "2026-04-18")
    kind     "text" | "number" | "date": how `answer` is compared
    accept   (text) other spellings that also count, e.g. a surname alone
    ignore   phrases whose digits are names, not answers ("Moka 6"); removed before numbers
             are read, so "the Moka 6 brews 4 cups" does not pass for 6
    stale    (tool_state_adaptation) the value before the change; the answer must not end on it
    doc_id   the corpus document that supports the answer (search families)
  receipt_extract: merchant, date (ISO), total (number)
  summarize_short: key_terms (groups of alternatives; every group must match), max_words,
    max_sentences, doc_id
  any family: min_tool_calls {tool: n} successful calls the run must have made;
    verify_tools (confidence_gated_branching) the tools whose use counts as verification;
    reference (a correct final answer) and reference_calls (the tool calls of a correct run).

`steps` are the task result's steps as dicts: {"kind": "model"|"tool"|"gate", "name",
"arguments", "status"}; a step counts as done when its status is missing or ok/success.
"""
from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from inloop.loadgen.tasks.model import TaskCase

OK_STATUSES = frozenset({"", "ok", "success", "succeeded", "done"})
MONEY_TOLERANCE = 0.005  # half a cent: totals are compared to the cent, no looser


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    reason: str  # "ok", or every problem found, joined with "; "
    details: dict[str, Any] = field(default_factory=dict)  # tool_calls, verified, ...


# ---- normalisation -------------------------------------------------------------------

def normalize_text(text: str) -> str:
    """Lowercase ASCII words separated by single spaces ("Tallow & Reed!" -> "tallow and reed")."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = text.lower().replace("&", " and ")
    return " ".join(re.findall(r"[a-z0-9]+", text))


def text_positions(haystack: str, needle: str) -> list[int]:
    """Where `needle` occurs in `haystack` as whole words, after normalisation."""
    hay, pin = f" {normalize_text(haystack)} ", f" {normalize_text(needle)} "
    if not pin.strip():
        return []
    return [m.start() for m in re.finditer(f"(?={re.escape(pin)})", hay)]


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUE = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9}
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9.,])(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?![\d])(?:\s*(?P<scale>thousand|million|billion)\b)?", re.I)
_WORD_NUMBER = re.compile(
    rf"\b(?P<tens>{'|'.join(_TENS)})(?:[- ](?P<unit>{'|'.join(_UNITS[1:10])}))?\b"
    rf"|\b(?P<word>{'|'.join(_UNITS)})\b", re.I)


def numbers_in(text: str, ignore: list[str] | tuple[str, ...] = ()) -> list[tuple[int, float]]:
    """(position, value) of every number written in `text`, digits or words, in order."""
    for phrase in ignore:  # a name like "Kite 4" holds a digit that is not an answer
        text = re.sub(re.escape(phrase), lambda m: " " * len(m.group()), text, flags=re.I)
    found = []
    for m in _NUMBER.finditer(text):
        value = float(m.group("num").replace(",", ""))
        if m.group("scale"):
            value *= _SCALE[m.group("scale").lower()]
        found.append((m.start(), value))
    for m in _WORD_NUMBER.finditer(text):
        if m.group("word"):
            value = _WORD_VALUE[m.group("word").lower()]
        else:
            value = _WORD_VALUE[m.group("tens").lower()] + (_WORD_VALUE[m.group("unit").lower()]
                                                            if m.group("unit") else 0)
        found.append((m.start(), float(value)))
    return sorted(found)


def parse_number(text: str) -> float:
    """The one number an expected answer states ("4,200 mAh" -> 4200.0)."""
    values = numbers_in(text)
    if len(values) != 1:
        raise ValueError(f"expected answer {text!r} must state exactly one number, found {len(values)}")
    return values[0][1]


def same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=MONEY_TOLERANCE if b != int(b) else 1e-9)


_MONTH = (r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_ORD = r"(?:st|nd|rd|th)?"
_DATE_PATTERNS = (
    re.compile(r"(?<!\d)(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?!\d)"),
    re.compile(r"(?<!\d)(?P<a>\d{1,2})[-/.](?P<b>\d{1,2})[-/.](?P<y>\d{4})(?!\d)"),
    re.compile(rf"(?<!\w)(?P<d>\d{{1,2}}){_ORD}(?:\s+of)?[\s-]+{_MONTH},?[\s-]+(?P<y>\d{{4}})(?!\d)", re.I),
    re.compile(rf"(?<!\w){_MONTH}\s+(?P<d>\d{{1,2}}){_ORD},?\s+(?P<y>\d{{4}})(?!\d)", re.I),
)


def _safe_date(y: int, m: int, d: int) -> dt.date | None:
    try:
        return dt.date(y, m, d)
    except ValueError:
        return None


def dates_in(text: str) -> list[tuple[int, dt.date]]:
    """(position, date) of every date in `text`. 04/05/2026 yields both readings: the
    checker cannot know which order the writer meant, and either is a fair rendering."""
    found = []
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            g = m.groupdict()
            if g.get("mon"):
                month = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                         "dec"].index(g["mon"][:3].lower()) + 1
                candidates = [_safe_date(int(g["y"]), month, int(g["d"]))]
            elif g.get("a"):
                a, b = int(g["a"]), int(g["b"])
                candidates = [_safe_date(int(g["y"]), b, a), _safe_date(int(g["y"]), a, b)]
            else:
                candidates = [_safe_date(int(g["y"]), int(g["m"]), int(g["d"]))]
            found += [(m.start(), d) for d in candidates if d is not None]
    return sorted(set(found))


def sentences_of(text: str) -> list[str]:
    """Sentences end at . ! ? before a capital, digit or quote, so "1.7 L" stays whole."""
    parts = re.split(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])|\n\s*\n", text.strip())
    return [p.strip() for p in parts if p.strip()]


def word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9]+(?:['’.,-][A-Za-z0-9]+)*", text))


# ---- one expected value in an answer -----------------------------------------------

def value_positions(answer: str, value: str, kind: str, accept: list[str] = (),
                    ignore: list[str] = ()) -> list[int]:
    """Positions where the answer states `value` (or, for text, any accepted spelling)."""
    if kind == "number":
        want = parse_number(value)
        return [pos for pos, got in numbers_in(answer, ignore) if same_number(got, want)]
    if kind == "date":
        want = dt.date.fromisoformat(value)
        return [pos for pos, got in dates_in(answer) if got == want]
    if kind == "text":
        return sorted(p for spelling in [value, *accept] for p in text_positions(answer, spelling))
    raise ValueError(f"unknown answer kind {kind!r} (text, number or date)")


def _answer_problems(case: TaskCase, answer: str) -> list[str]:
    exp = case.expected
    kind, accept, ignore = exp["kind"], exp.get("accept", []), exp.get("ignore", [])
    hits = value_positions(answer, exp["answer"], kind, accept, ignore)
    if not hits:
        return [f"answer does not state {exp['answer']!r} ({kind})"]
    if "stale" in exp:
        stale = value_positions(answer, exp["stale"], kind, [], ignore)
        if stale and max(stale) > max(hits):
            return [f"answer ends on the stale value {exp['stale']!r}, not the current {exp['answer']!r}"]
    return []


def _receipt_problems(case: TaskCase, answer: str) -> list[str]:
    exp, problems = case.expected, []
    merchant = re.sub(r"^the\s+", "", exp["merchant"], flags=re.I)
    if not text_positions(answer, merchant):
        problems.append(f"merchant {exp['merchant']!r} missing")
    if not any(d == dt.date.fromisoformat(exp["date"]) for _, d in dates_in(answer)):
        problems.append(f"date {exp['date']} missing")
    if not any(same_number(v, float(exp["total"])) for _, v in numbers_in(answer)):
        problems.append(f"total {exp['total']:.2f} missing")
    return problems


def _summary_problems(case: TaskCase, answer: str) -> list[str]:
    exp, problems = case.expected, []
    words, sentences = word_count(answer), len(sentences_of(answer))
    if words > exp["max_words"]:
        problems.append(f"summary has {words} words, more than {exp['max_words']}")
    if sentences > exp["max_sentences"]:
        problems.append(f"summary has {sentences} sentences, more than {exp['max_sentences']}")
    for group in exp["key_terms"]:
        if not any(text_positions(answer, term) for term in group):
            problems.append(f"summary names none of {group}")
    return problems


# ---- steps ---------------------------------------------------------------------------

def step_ok(step: dict) -> bool:
    return str(step.get("status") or "").lower() in OK_STATUSES


def tool_calls(steps: list[dict]) -> Counter:
    """Successful tool steps per tool name."""
    return Counter(s.get("name", "") for s in steps if s.get("kind") == "tool" and step_ok(s))


def check(case: TaskCase, final_answer: str | None, steps: list[dict] | None = None) -> CheckResult:
    """Grade one run of `case`: passed, the reason, and details for reports."""
    steps = steps or []
    calls = tool_calls(steps)
    details: dict[str, Any] = {"tool_calls": dict(calls),
                               "model_steps": sum(1 for s in steps if s.get("kind") == "model"),
                               "gate_fired": any(s.get("kind") == "gate" for s in steps)}
    if case.family == "confidence_gated_branching":
        # Recorded, not required: the report compares success with and without the gate.
        details["verified"] = any(calls[t] for t in case.expected.get("verify_tools", ["search"]))
    answer = (final_answer or "").strip()
    if not answer:
        return CheckResult(False, "empty final answer", details)
    if case.family == "receipt_extract":
        problems = _receipt_problems(case, answer)
    elif case.family == "summarize_short":
        problems = _summary_problems(case, answer)
    else:
        problems = _answer_problems(case, answer)
    for tool, need in case.expected.get("min_tool_calls", {}).items():
        if calls[tool] < need:
            problems.append(f"needs {need} successful {tool} call(s), made {calls[tool]}")
    return CheckResult(not problems, "; ".join(problems) or "ok", details)


def reference_answer(case: TaskCase) -> str:
    """A final answer that passes: what a correct run would say."""
    return case.expected["reference"]


def reference_steps(case: TaskCase) -> list[dict]:
    """The steps of a correct run: a model step, then each reference call and a model step."""
    steps = [{"kind": "model", "name": "", "arguments": {}, "status": "ok"}]
    for call in case.expected.get("reference_calls", []):
        steps.append({"kind": "tool", "name": call["name"], "arguments": call["arguments"], "status": "ok"})
        steps.append({"kind": "model", "name": "", "arguments": {}, "status": "ok"})
    return steps
