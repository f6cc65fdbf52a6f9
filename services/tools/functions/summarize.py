"""`summarize`: extractive summary by word frequency (Luhn's idea, the classic baseline).

Sentences are scored by the mean normalised frequency of their content words; the best
`max_sentences` are kept in their original order, so the summary reads like the text.
Deterministic: equal scores keep the earlier sentence.
"""
from __future__ import annotations

import re
from collections import Counter

from inloop.services.contract.errors import ToolError
from inloop.services.tools.functions.search import tokenize

# A sentence ends at . ! or ? followed by whitespace and a capital, digit or quote; this
# keeps "e.g. this" and "3.5 million" inside one sentence. Line breaks also end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])|\n\s*\n|\n(?=\s*[-*•]\s)")


def split_sentences(text: str) -> list[str]:
    parts = (p.strip() for p in _SENTENCE_END.split(text.strip()))
    return [p for p in parts if p]


def score_sentences(sentences: list[str]) -> list[float]:
    words = [tokenize(s) for s in sentences]
    freq = Counter(w for ws in words for w in ws)
    top = max(freq.values(), default=1)
    # Mean, not sum, so a long sentence does not win only by being long; the length
    # factor (full weight from 5 content words up) keeps short fragments from winning.
    return [(sum(freq[w] / top for w in ws) / len(ws)) * min(1.0, len(ws) / 5) if ws else 0.0
            for ws in words]


def summarize(state, text: str, max_sentences: int = 2) -> dict:
    """The `max_sentences` most central sentences of `text`, in their original order."""
    sentences = split_sentences(text)
    if not sentences:
        raise ToolError("summarize needs text with at least one sentence")
    scores = score_sentences(sentences)
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    keep = sorted(ranked[:max_sentences])
    picked = [sentences[i] for i in keep]
    return {"summary": " ".join(picked), "sentences": picked,
            "sentence_count": len(sentences)}
