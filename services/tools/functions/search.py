"""`search`: BM25 (Okapi, Lucene's idf) over the small corpus the project ships.

The corpus is JSON lines `{"id", "title", "text"}`; title and text are indexed together.
Written here rather than taken from a package: it is forty lines, and owning it keeps
the ranking (and so the task checkers' expectations) fixed across dependency upgrades.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from inloop.services.contract.errors import ToolError

_WORD = re.compile(r"[a-z0-9]+")
# Words so common that they only add noise to a BM25 score over a small corpus.
STOPWORDS = frozenset(
    "a an and are as at be by for from has have how i in is it its of on or that the this "
    "to was what when where which who why will with does do did".split())


def tokenize(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    text: str


def load_corpus(path: Path) -> list[Doc]:
    """Read JSON lines; a bad line raises ValueError naming the file and line."""
    docs = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"search corpus {path} does not exist") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            docs.append(Doc(str(row["id"]), str(row["title"]), str(row["text"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{Path(path).name}:{lineno}: not a {{id, title, text}} object ({exc})") from None
    return docs


class Bm25Index:
    """Okapi BM25 with k1 = 1.5, b = 0.75 and the non-negative idf log(1 + (N-n+.5)/(n+.5))."""

    def __init__(self, docs: list[Doc], k1: float = 1.5, b: float = 0.75):
        self.docs = docs
        self.k1, self.b = k1, b
        self.term_freqs = [Counter(tokenize(f"{d.title} {d.text}")) for d in docs]
        self.lengths = [sum(tf.values()) for tf in self.term_freqs]
        self.avg_length = (sum(self.lengths) / len(docs)) if docs else 0.0
        doc_freq = Counter(term for tf in self.term_freqs for term in tf)
        n = len(docs)
        self.idf = {t: math.log(1.0 + (n - df + 0.5) / (df + 0.5)) for t, df in doc_freq.items()}

    def scores(self, query: str) -> list[float]:
        terms = tokenize(query)
        out = []
        for tf, length in zip(self.term_freqs, self.lengths):
            norm = self.k1 * (1.0 - self.b + self.b * length / (self.avg_length or 1.0))
            out.append(sum(self.idf.get(t, 0.0) * tf[t] * (self.k1 + 1.0) / (tf[t] + norm)
                           for t in terms if t in tf))
        return out

    def top(self, query: str, k: int) -> list[tuple[Doc, float]]:
        """The k best documents with a score > 0; ties keep corpus order (stable sort)."""
        scored = [(d, s) for d, s in zip(self.docs, self.scores(query)) if s > 0.0]
        scored.sort(key=lambda pair: -pair[1])
        return scored[:k]


def search(state, query: str, k: int = 3) -> dict:
    """The k corpus documents that best match `query`, best first (may be fewer than k)."""
    if not tokenize(query):
        raise ToolError(f"search query {query!r} has no searchable words; use a few keywords")
    hits = state.corpus.top(query, k)
    return {"query": query,
            "results": [{"id": d.id, "title": d.title, "text": d.text, "score": round(s, 4)}
                        for d, s in hits]}
