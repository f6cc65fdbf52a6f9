"""Write loadgen/tasks/data/<family>.jsonl from sources.py and the search corpus.

    python -m inloop.loadgen.tasks.build_cases           # rewrite the data files
    python -m inloop.loadgen.tasks.build_cases --check   # exit 1 if a committed file differs

Deterministic: no clock, no `random` (whose algorithms may change between Python
versions); every choice a receipt needs comes from a SHA-256 of the case's position.
The committed files are the cases; this script only proves they follow from the sources.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import sys
from pathlib import Path

from inloop.loadgen.tasks import sources
from inloop.loadgen.tasks.checkers import sentences_of, word_count
from inloop.loadgen.tasks.model import DATA_DIR, FAMILIES, TaskCase

CORPUS = Path(__file__).resolve().parents[2] / "services" / "tools" / "data" / "corpus.jsonl"

SYSTEM = {
    "general_short": "Answer the question in a few words.",
    "reading_short": "Answer the question from the text in one short sentence.",
    "receipt_extract": "Call extract_receipt with the receipt text, then answer with the merchant, "
                       "the date (YYYY-MM-DD) and the total.",
    "search_grounded": "Use the search tool to find the answer, then answer in one short sentence.",
    "summarize_short": "Call summarize on the paragraph, then give the summary in at most two sentences.",
    "retrieval_correction": "Use the search tool to find the answer. If the results do not answer the "
                            "question, search again with different words. Answer in one short sentence.",
    "tool_state_adaptation": "You can read and change a key-value store with the kv tool. Values can "
                             "change while you work: answer with what the store says last.",
    "confidence_gated_branching": "Answer the question in one short sentence. If you are not sure, "
                                  "use the search tool.",
}
# (tools, tool_choice for the first step, max model steps): a forced first call where the
# family needs a tool, so even a 135M model starts right; "auto" where the choice is the test.
SHAPE = {
    "general_short": ([], "none", 1),
    "reading_short": ([], "none", 1),
    "receipt_extract": (["extract_receipt"], "extract_receipt", 3),
    "search_grounded": (["search"], "search", 3),
    "summarize_short": (["summarize"], "summarize", 3),
    "retrieval_correction": (["search"], "search", 5),
    "tool_state_adaptation": (["kv"], "kv", 5),
    "confidence_gated_branching": (["search"], "auto", 4),
}
STOPWORDS = frozenset("a an and are as at be by for from has have in is it its of on or that the this "
                      "to was were with about after also all by can into its more most over than".split())


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def load_corpus(path: Path = CORPUS) -> dict[str, dict]:
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {d["id"]: d for d in docs}


def _case(family: str, n: int, user: str, expected: dict, setup: dict | None = None) -> TaskCase:
    tools, choice, max_steps = SHAPE[family]
    messages = [{"role": "system", "content": SYSTEM[family]}, {"role": "user", "content": user}]
    return TaskCase(id=f"{family}-{n:03d}", family=family, messages=messages, tools=list(tools),
                    tool_choice=choice, max_steps=max_steps, expected=expected, setup=setup or {})


def _names_with_digits(text: str) -> list[str]:
    """"Moka 6", "Tab 8": a capitalised word and a number form a name, not an answer."""
    return re.findall(r"\b[A-Z][A-Za-z]*\s\d+\b", text)


def _answer(answer: str, kind: str, accept: list[str], question: str, **extra) -> dict:
    exp = {"answer": answer, "kind": kind}
    if accept:
        exp["accept"] = list(accept)
    if kind == "number" and _names_with_digits(question):
        exp["ignore"] = _names_with_digits(question)
    return exp | extra


def general_short() -> list[TaskCase]:
    return [_case("general_short", i, q, _answer(a, kind, acc, q, reference=a, reference_calls=[]))
            for i, (q, a, kind, acc) in enumerate(sources.GENERAL, 1)]


def reading_short(corpus: dict) -> list[TaskCase]:
    """search_grounded's questions with their document in the prompt and no tool: the same
    facts, model-only (the second no-tool family of the matrix's model-only/tool split)."""
    out = []
    for i, (doc_id, q, a, kind, acc) in enumerate(sources.SEARCH_GROUNDED, 1):
        doc = corpus[doc_id]
        user = f"Read this text:\n\n{doc['title']}. {doc['text']}\n\nQuestion: {q}"
        out.append(_case("reading_short", i, user, _answer(a, kind, acc, q, doc_id=doc_id, reference=a,
                                                           reference_calls=[])))
    return out


def _search_cases(family: str, rows: list, corpus: dict, **extra) -> list[TaskCase]:
    out = []
    for i, (doc_id, q, a, kind, acc) in enumerate(rows, 1):
        assert doc_id in corpus, doc_id
        calls = [{"name": "search", "arguments": {"query": q}}]
        out.append(_case(family, i, q, _answer(a, kind, acc, q, doc_id=doc_id, **extra, reference=a,
                                               reference_calls=calls)))
    return out


def retrieval_correction(corpus: dict) -> list[TaskCase]:
    out = []
    for i, (doc_id, alias, q, kw, second, a, kind, acc) in enumerate(sources.RETRIEVAL_CORRECTION, 1):
        assert doc_id in corpus and alias in corpus, (doc_id, alias)
        calls = [{"name": "search", "arguments": {"query": kw}},
                 {"name": "search", "arguments": {"query": second}}]
        out.append(_case("retrieval_correction", i, q, _answer(
            a, kind, acc, q, doc_id=doc_id, alias_doc_id=alias, first_queries=[q, kw],
            second_query=second, min_tool_calls={"search": 2}, reference=a, reference_calls=calls)))
    return out


def _topic_words(sentences: list[str], subject: list[str], doc_freq: dict[str, int]) -> list[str]:
    """The two rarest content words of each sentence: a summary built from any sentence
    names at least one, while a summary of some other paragraph almost never does."""
    skip = {w for name in subject for w in re.findall(r"[a-z0-9]+", name.lower())}
    picked: list[str] = []
    for sentence in sentences:
        words = sorted({w for w in re.findall(r"[a-z]+", sentence.lower())
                        if len(w) > 3 and w not in STOPWORDS and w not in skip},
                       key=lambda w: (doc_freq.get(w, 0), w))
        picked += [w for w in words[:2] if w not in picked]
    return picked


def summarize_short(corpus: dict) -> list[TaskCase]:
    doc_freq: dict[str, int] = {}
    for d in corpus.values():
        for w in set(re.findall(r"[a-z]+", f"{d['title']} {d['text']}".lower())):
            doc_freq[w] = doc_freq.get(w, 0) + 1
    out = []
    for i, (doc_id, subject) in enumerate(sources.SUMMARIZE, 1):
        text = corpus[doc_id]["text"]
        sentences = sentences_of(text)
        lengths = sorted((word_count(s) for s in sentences), reverse=True)
        max_words = lengths[0] + lengths[1] + 8  # two sentences and a short lead-in
        assert word_count(text) > max_words, f"{doc_id}: the paragraph itself would pass as short"
        expected = {"key_terms": [subject, _topic_words(sentences, subject, doc_freq)],
                    "max_words": max_words, "max_sentences": 3, "doc_id": doc_id,
                    "reference": " ".join(sentences[:2]),
                    "reference_calls": [{"name": "summarize", "arguments": {"text": text, "max_sentences": 2}}]}
        out.append(_case("summarize_short", i, f"Summarize this paragraph:\n\n{text}", expected))
    return out


_DATE_FORMATS = ("{d:%Y-%m-%d}", "{d:%m/%d/%Y}", "{d.day} {d:%b %Y}", "{d:%B} {d.day}, {d.year}")


def _receipt(i: int) -> tuple[str, dict]:
    """Receipt text in one of three layouts, and its merchant, ISO date and total."""
    merchant, address, catalogue = sources.MERCHANTS[i % len(sources.MERCHANTS)]
    for salt in range(100):  # a total with zero cents could be confused with an item count
        order = sorted(catalogue, key=lambda item: _h(i, salt, item[0]))[:2 + _h(i, salt, "n") % 3]
        lines = [(name, 1 + _h(i, salt, name, "qty") % 3, price) for name, price in order]
        subtotal = round(sum(q * p for _, q, p in lines), 2)
        rate = (0, 5, 8, 20)[_h(i, salt, "tax") % 4]
        tax = round(subtotal * rate / 100 + 1e-9, 2)
        total = round(subtotal + tax, 2)
        if round(total * 100) % 100:
            break
    date = dt.date(2025 + i % 2, 1 + _h(i, "m") % 12, 1 + _h(i, "d") % 28)
    when = _DATE_FORMATS[i % 4].format(d=date)
    layout = i % 3
    if layout == 0:  # a till slip: upper-case header, quantities in front
        body = [merchant.upper(), address, f"Date: {when}  Time: {9 + i % 9:02d}:{_h(i, 't') % 60:02d}", "-" * 30]
        body += [f"{q} x {n:<18}{q * p:>8.2f}" if q > 1 else f"{n:<22}{p:>8.2f}" for n, q, p in lines]
        body += ["-" * 30, f"SUBTOTAL{subtotal:>22.2f}"]
        body += [f"VAT {rate}%{tax:>{25 - len(str(rate))}.2f}"] if rate else []
        body += [f"TOTAL{total:>25.2f}", "Paid by card", "Thank you!"]
    elif layout == 1:  # labelled fields, euro signs
        body = [f"Merchant: {merchant}", f"Address: {address}", f"Date: {when}", "Items:"]
        body += [f"- {n}{f' x{q}' if q > 1 else ''}: €{q * p:.2f}" for n, q, p in lines]
        body += [f"Subtotal: €{subtotal:.2f}"] + ([f"Tax ({rate}%): €{tax:.2f}"] if rate else [])
        body += [f"Total: €{total:.2f}", f"Card ending {1000 + _h(i, 'card') % 9000}"]
    else:  # a shop welcome line, dot leaders, cash and change
        paid = (int(total) // 10 + 1) * 10
        body = [f"Welcome to {merchant}", address, when, ""]
        labels = [(f"{n} x{q}" if q > 1 else n, q * p) for n, q, p in lines]
        body += [f"{label} {'.' * (24 - len(label))} {amount:.2f}" for label, amount in labels]
        body += ([f"Tax {rate}% {'.' * 18} {tax:.2f}"] if rate else [])
        body += [f"AMOUNT DUE {'.' * 14} {total:.2f}", f"CASH {'.' * 20} {paid:.2f}",
                 f"CHANGE {'.' * 18} {paid - total:.2f}"]
    return "\n".join(body), {"merchant": merchant, "date": date.isoformat(), "total": total}


def receipt_extract() -> list[TaskCase]:
    out = []
    for i in range(24):
        text, exp = _receipt(i)
        exp |= {"reference": f"The merchant is {exp['merchant']}, the date is {exp['date']} and the "
                             f"total is {exp['total']:.2f}.",
                "reference_calls": [{"name": "extract_receipt", "arguments": {"text": text}}]}
        user = f"Here is a receipt:\n\n{text}\n\nWhat are the merchant, the date and the total?"
        out.append(_case("receipt_extract", i + 1, user, exp))
    return out


def _state_case(n: int, user: str, preload: dict, change: dict, new: str, stale: str, kind: str,
                calls: list[dict]) -> TaskCase:
    exp = _answer(new, kind, [], user, stale=stale, key=change["key"], min_tool_calls={"kv": len(calls)},
                  reference=new, reference_calls=calls)
    return _case("tool_state_adaptation", n, user, exp, {"kv": preload, "changes": [change]})


def tool_state_adaptation() -> list[TaskCase]:
    """Re-read a counter, re-read a status, and increment a counter someone else moved.

    The first two change between the task's two reads, so only the second read shows the
    answer; the third changes before the task's only call, so the prompt's number is stale.
    """
    out, n = [], 0
    for key, what, value, delta, writer in sources.COUNTERS:
        n += 1
        user = (f"The kv key `{key}` counts {what}. Another writer updates it while you work. Read it "
                "with the kv tool, then read it again, and answer with its current value.")
        change = {"before_tool_call": 2, "op": "increment", "key": key, "amount": delta, "writer": writer}
        reads = [{"name": "kv", "arguments": {"op": "get", "key": key}} for _ in range(2)]
        out.append(_state_case(n, user, {key: value}, change, str(value + delta), str(value), "number", reads))
    for key, what, old, new, writer in sources.STATUSES:
        n += 1
        user = (f"The kv key `{key}` holds {what}. Another service is changing it. Read it with the kv "
                "tool, then read it again, and answer with its latest value.")
        change = {"before_tool_call": 2, "op": "put", "key": key, "value": new, "writer": writer}
        reads = [{"name": "kv", "arguments": {"op": "get", "key": key}} for _ in range(2)]
        out.append(_state_case(n, user, {key: old}, change, new, old, "text", reads))
    for key, what, value, amount, delta, writer in sources.INCREMENTS:
        n += 1
        user = (f"The kv counter `{key}` ({what}) was {value} when this task was written. Increment it "
                f"by {amount} with the kv tool and answer with the value the store returns.")
        change = {"before_tool_call": 1, "op": "increment", "key": key, "amount": delta, "writer": writer}
        call = [{"name": "kv", "arguments": {"op": "increment", "key": key, "amount": amount}}]
        out.append(_state_case(n, user, {key: value}, change, str(value + delta + amount), str(value + amount),
                               "number", call))
    return out


def build_all(corpus: dict | None = None) -> dict[str, list[TaskCase]]:
    corpus = corpus or load_corpus()
    built = {
        "general_short": general_short(),
        "reading_short": reading_short(corpus),
        "receipt_extract": receipt_extract(),
        "search_grounded": _search_cases("search_grounded", sources.SEARCH_GROUNDED, corpus),
        "summarize_short": summarize_short(corpus),
        "retrieval_correction": retrieval_correction(corpus),
        "tool_state_adaptation": tool_state_adaptation(),
        "confidence_gated_branching": _search_cases("confidence_gated_branching", sources.CONFIDENCE_GATED,
                                                    corpus, verify_tools=["search"]),
    }
    assert tuple(built) == FAMILIES
    return built


def render(cases: list[TaskCase]) -> str:
    return "".join(case.to_json() + "\n" for case in cases)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for family, cases in build_all().items():
        path, text = DATA_DIR / f"{family}.jsonl", render(cases)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"{path.name}: {len(cases)} cases")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m inloop.loadgen.tasks.build_cases", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
