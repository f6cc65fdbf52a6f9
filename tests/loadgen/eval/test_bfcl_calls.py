"""Replies -> BFCL's FC results, and the valid-call test."""
from __future__ import annotations

import json

from inloop.loadgen.eval.bfcl_calls import (
    is_valid_call,
    result_from_openai_message,
    result_from_text,
)

TOOLS = [{"type": "function", "function": {"name": "calc_area", "parameters": {"type": "object", "properties": {}}}},
         {"type": "function", "function": {"name": "spotify_play", "parameters": {"type": "object", "properties": {}}}}]


def test_plain_text_stays_text():
    assert result_from_text("The area is 25.") == "The area is 25."


def test_hermes_calls_become_name_to_arguments_json():
    text = ('<tool_call>\n{"name": "spotify_play", "arguments": {"artist": "Taylor Swift", "duration": 20}}\n'
            '</tool_call>\n<tool_call>\n{"name": "spotify_play", "arguments": {"artist": "Maroon 5", "duration": 15}}\n'
            "</tool_call>")
    result = result_from_text(text)
    assert [list(c) for c in result] == [["spotify_play"], ["spotify_play"]]
    assert json.loads(result[1]["spotify_play"]) == {"artist": "Maroon 5", "duration": 15}
    assert is_valid_call(result, TOOLS)


def test_text_before_a_call_still_counts_as_the_call():
    result = result_from_text('Sure.\n<tool_call>{"name": "calc_area", "arguments": {"base": 10}}</tool_call>')
    assert result == [{"calc_area": '{"base": 10}'}]


def test_malformed_or_cut_calls_stay_text():
    for text in ('<tool_call>\n{"name": "calc_area", "arguments": {"base": 1',     # cut by max_tokens
                 '<tool_call>{"name": "calc_area", "arguments": [1, 2]}</tool_call>',  # arguments not an object
                 '<tool_call>{name: calc_area}</tool_call>'):                      # not JSON
        assert result_from_text(text) == text
        assert not is_valid_call(result_from_text(text), TOOLS)


def test_openai_message_with_tool_calls_and_without():
    msg = {"content": None, "tool_calls": [{"id": "c1", "type": "function",
                                            "function": {"name": "calc_area", "arguments": '{"base": 3}'}}]}
    assert result_from_openai_message(msg) == [{"calc_area": '{"base": 3}'}]
    assert result_from_openai_message({"content": "no call", "tool_calls": []}) == "no call"
    assert result_from_openai_message({"content": None}) == ""


def test_valid_call_needs_an_offered_name_and_object_arguments():
    assert not is_valid_call([{"unknown_tool": "{}"}], TOOLS)
    assert not is_valid_call([{"calc_area": "[1]"}], TOOLS)
    assert not is_valid_call([{"calc_area": "{bad"}], TOOLS)
    assert not is_valid_call([], TOOLS)
    assert not is_valid_call("text", TOOLS)
    assert is_valid_call([{"calc_area": "{}"}], TOOLS)


def test_top_logprobs_in_the_legacy_and_the_chat_form():
    from inloop.loadgen.eval.arms import _top_logprobs

    legacy = {"top_logprobs": [{"a": -0.1, "b": -2.0}, None]}
    chat = {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1},
                                                                          {"token": "b", "logprob": -2.0}]}]}
    assert _top_logprobs(legacy) == [{"a": -0.1, "b": -2.0}, {}]
    assert _top_logprobs(chat) == [{"a": -0.1, "b": -2.0}]
    assert _top_logprobs({}) == []
