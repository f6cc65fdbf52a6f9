"""Reasoning ("thinking") text apart from the answer, for models whose chat template has
`<think>...</think>` (Qwen3, Qwen3.5, SmolLM3), as vLLM's reasoning parsers split it.

The model writes `<think>\n...\n</think>\n\nanswer`. Some templates open `<think>` in the
generation prompt themselves (Qwen3.5 with thinking on), so the output starts inside the
thought and only `</think>` shows. A thought cut off by max_tokens is all reasoning. With
thinking off (`enable_thinking=False`) the template closes an empty thought in the prompt
and the output is all answer. Newlines after `<think>` and blank space after `</think>` are
dropped; the split of a stream, fed piece by piece, equals the split of the whole text.
"""
from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def template_thinks(chat_template: str | None) -> bool:
    """Whether a chat template knows thinking blocks (so the output may hold one)."""
    return bool(chat_template) and THINK_CLOSE in chat_template


def opens_thought(prompt: str) -> bool:
    """Whether the rendered prompt ends inside an open `<think>` (the output starts thinking)."""
    return prompt.rstrip().endswith(THINK_OPEN)


class ReasoningSplit:
    """Feed the output text as it comes; each `feed` returns the (reasoning, answer) text safe
    to send now (a possible tag prefix is held back until the next piece or `flush`)."""

    def __init__(self, in_thought: bool):
        self.in_thought = in_thought
        self.state = "thought" if in_thought else "start"   # start -> thought -> answer
        self.buf = ""
        self.started = False     # the current part has had its first non-blank character
        self.reasoning = ""      # everything returned so far, for the whole result
        self.answer = ""

    def feed(self, delta: str) -> tuple[str, str]:
        self.buf += delta
        r, a = self._advance()
        self.reasoning += r
        self.answer += a
        return r, a

    def flush(self) -> tuple[str, str]:
        """The held text at the end of the output (a tag prefix that never completed)."""
        rest, self.buf = self.buf, ""
        if self.state == "thought":
            r, a = (rest if self.started else rest.lstrip("\n")), ""
        else:
            r, a = "", rest if self.started or self.state == "start" else rest.lstrip()
        self.reasoning += r
        self.answer += a
        return r, a

    @classmethod
    def split(cls, text: str, in_thought: bool) -> tuple[str, str]:
        """(reasoning, answer) of a whole output."""
        s = cls(in_thought)
        s.feed(text)
        s.flush()
        return s.reasoning, s.answer

    def _advance(self) -> tuple[str, str]:
        reasoning = answer = ""
        while True:
            if self.state == "start":
                stripped = self.buf.lstrip()
                if stripped.startswith(THINK_OPEN):
                    self.buf, self.state = stripped[len(THINK_OPEN):], "thought"
                    continue
                if stripped and THINK_OPEN.startswith(stripped) or not stripped:
                    return reasoning, answer                 # maybe the opening tag: wait
                self.state, self.started = "answer", True    # no thought: all answer, as written
                continue
            if self.state == "thought":
                if not self.started:
                    self.buf = self.buf.lstrip("\n")
                    self.started = bool(self.buf)
                end = self.buf.find(THINK_CLOSE)
                if end != -1:
                    reasoning += self.buf[:end]
                    self.buf, self.state, self.started = self.buf[end + len(THINK_CLOSE):], "answer", False
                    continue
                keep = _partial_suffix(self.buf, THINK_CLOSE)
                reasoning += self.buf[:len(self.buf) - keep]
                self.buf = self.buf[len(self.buf) - keep:]
                return reasoning, answer
            if not self.started:                             # blank space after the thought
                self.buf = self.buf.lstrip()
                self.started = bool(self.buf)
            answer += self.buf
            self.buf = ""
            return reasoning, answer


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of `text` that begins `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
