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
        hold = 0
        for stop in self.stops:  # the longest tail of text that is a prefix of a stop string
            for n in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        safe_end = max(self.emitted, len(self.text) - hold)
        out = self.text[self.emitted:safe_end]
        self.emitted = safe_end
        return out, False

    def flush(self) -> str:
        out = self.text[self.emitted:]
        self.emitted = len(self.text)
        return out
