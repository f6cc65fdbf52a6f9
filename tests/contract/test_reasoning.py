"""Thought apart from answer: the whole-text split and the streamed one agree."""
from __future__ import annotations

import pytest

from inloop.services.contract.reasoning import ReasoningSplit, opens_thought, template_thinks

CASES = [  # (output, the prompt opened <think>, (reasoning, answer))
    ("<think>\nplan it\n</think>\n\nThe answer.", False, ("plan it\n", "The answer.")),
    ("plan it\n</think>\n\nThe answer.", True, ("plan it\n", "The answer.")),
    ("Just an answer", False, ("", "Just an answer")),
    ("<think>\nstill thinking when max_tokens hit", False, ("still thinking when max_tokens hit", "")),
    ("cut off inside the thought </thi", True, ("cut off inside the thought </thi", "")),
    ("<think>\n\n</think>\n\nHi <think> is text here", False, ("", "Hi <think> is text here")),
    ("<thi", False, ("", "<thi")),
    ("", True, ("", "")),
]


@pytest.mark.parametrize("text,in_thought,expected", CASES)
def test_the_split_of_a_stream_is_the_split_of_the_whole(text, in_thought, expected):
    assert ReasoningSplit.split(text, in_thought) == expected
    for cut in range(len(text) + 1):
        s = ReasoningSplit(in_thought)
        parts = [s.feed(text[:cut]), s.feed(text[cut:]), s.flush()]
        assert ("".join(p[0] for p in parts), "".join(p[1] for p in parts)) == expected, cut
    s = ReasoningSplit(in_thought)
    parts = [s.feed(ch) for ch in text] + [s.flush()]
    assert ("".join(p[0] for p in parts), "".join(p[1] for p in parts)) == expected


def test_template_and_prompt_checks():
    assert template_thinks("{{ '<think>\\n\\n</think>\\n\\n' }}") and not template_thinks("{{ x }}")
    assert opens_thought("<|im_start|>assistant\n<think>\n")
    assert not opens_thought("<|im_start|>assistant\n<think>\n\n</think>\n\n")
