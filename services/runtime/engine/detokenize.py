"""Incremental detokenization and stop strings for streamed output."""
from __future__ import annotations

from inloop.services.runtime.model.tokenizer import Tokenizer


class IncrementalDecoder:
    """Turns a growing list of ids into text deltas.

    Byte-level BPE can split one character over several tokens, so a partial character
    (decoded as U+FFFD) is held back until the token that completes it arrives. Only a
    short window of ids is re-decoded each step (the prefix/read offsets of TGI and vLLM).
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self.tokenizer.decode(self.ids[self._prefix:self._read])
        new_text = self.tokenizer.decode(self.ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return new_text[len(prefix_text):]
        return ""


def _overlap(text: str, stop: str) -> int:
    """The length of the longest proper prefix of `stop` that `text` ends with, in time linear
    in len(stop) (the prefix function of stop, a separator, text's tail; trying each length
    with endswith is quadratic)."""
    tail = text[-(len(stop) - 1):] if len(stop) > 1 else ""
    s = [*stop, None, *tail]  # None: a separator no character equals
    pi = [0] * len(s)
    for i in range(1, len(s)):
        k = pi[i - 1]
        while k and s[i] != s[k]:
            k = pi[k - 1]
        pi[i] = k + 1 if s[i] == s[k] else k
    return min(pi[-1], len(stop) - 1) if tail else 0


class StopMatcher:
    """Finds stop strings in the generated text and holds back text that may start one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.text = ""
        self.emitted = 0

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add a delta; return (text safe to emit now, whether a stop string was hit)."""
        self.text += delta
        for stop in self.stops:
            at = self.text.find(stop, max(0, self.emitted - len(stop)))
            if at != -1:
                self.text = self.text[:at]
                out = self.text[self.emitted:]
                self.emitted = len(self.text)
                return out, True
        # hold back the longest tail of text that is a prefix of a stop string
        hold = max((_overlap(self.text, stop) for stop in self.stops), default=0)
        safe_end = max(self.emitted, len(self.text) - hold)
        out = self.text[self.emitted:safe_end]
        self.emitted = safe_end
        return out, False

    def flush(self) -> str:
        out = self.text[self.emitted:]
        self.emitted = len(self.text)
        return out
