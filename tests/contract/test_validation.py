"""The contract's input checks: each bad value raises InvalidRequest naming its field."""
from __future__ import annotations

import math

import pytest

from inloop.services.contract import validation
from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.generation import SamplingParams


def refused(fn, *args) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        fn(*args)
    return err.value


@pytest.mark.parametrize("kw, field", [
    ({"seed": -1}, "seed"), ({"seed": 2 ** 63}, "seed"),
    ({"temperature": 1e-30}, "temperature"), ({"temperature": 1e6}, "temperature"),
    ({"temperature": math.nan}, "temperature"), ({"top_p": math.nan}, "top_p"),
    ({"stop": ("x",) * 17}, "stop"), ({"stop": ("a" * 257,)}, "stop[0]"), ({"stop": ("",)}, "stop[0]"),
])
def test_sampling_settings_that_would_break_the_sampler_are_refused(kw, field):
    assert refused(SamplingParams(**kw).validate).field == field


def test_greedy_and_ordinary_sampling_pass():
    SamplingParams(temperature=0.0, seed=0, stop=("\n",) * 16).validate()
    SamplingParams(temperature=1e-5, top_p=0.5, seed=2 ** 63 - 1).validate()


@pytest.mark.parametrize("text", ["é", "a\nb", "\u202e", "x" * 300])
def test_header_text_refuses_what_a_grpc_header_cannot_carry(text):
    assert refused(validation.header_text, "fault.key", text).field == "fault.key"


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 1e300])
def test_durations_are_finite_and_bounded(value):
    assert refused(validation.milliseconds, "deadline_ms", value).field == "deadline_ms"


def test_retry_on_takes_only_statuses_a_retry_can_help():
    assert validation.retry_on("policy.retry_on", ["UNAVAILABLE"]) == ("UNAVAILABLE",)
    assert refused(validation.retry_on, "policy.retry_on", ["UNAVAILABLE", "INVALID_ARGUMENT"]).field == \
        "policy.retry_on[1]"
    assert refused(validation.retry_on, "policy.retry_on", ["unavailabel"]).field == "policy.retry_on[0]"


@pytest.mark.parametrize("text, message", [
    ("[" * 1000 + "]" * 1000, "nests deeper"), ("[" * 40 + "]" * 40, "nests deeper"),
    ('{"a": NaN}', "NaN"), ('{"a": 1e400}', "non-finite"), ('{"a": 1' + "0" * 400 + "}", "beyond the range"),
    ("{", "not JSON"),
])
def test_parse_json_refuses_what_typed_checks_cannot_hold(text, message):
    assert message in str(refused(validation.parse_json, "setup_json", text))


def test_depth_is_iterative_and_exact():
    assert validation.depth(1) == 0 and validation.depth([]) == 1 and validation.depth({"a": [1, {"b": 2}]}) == 3
    deep = []
    for _ in range(10_000):
        deep = [deep]
    assert validation.depth(deep) == 10_001


@pytest.mark.parametrize("schema, field", [
    ({"type": "object", "properties": []}, "p.properties"),
    ({"type": "object", "properties": {"a": {"enum": []}}}, "p.properties.a.enum"),
    ({"type": "frob"}, "p.type"), ({"type": "object", "required": "a"}, "p.required"),
    ({"type": "array", "items": 3}, "p.items"), ({"type": "number", "minimum": "0"}, "p.minimum"),
    ("object", "p"),
])
def test_tool_schemas_the_decoder_cannot_follow_are_refused(schema, field):
    assert refused(validation.tool_schema, "p", schema).field == field


@pytest.mark.parametrize("setup, field", [
    ([1], "setup_json"), ({"kv": [1]}, "setup_json.kv"), ({"kv": {"a": {"b": 1}}}, "setup_json.kv"),
    ({"other": 1}, "setup_json"), ({"changes": "x"}, "setup_json.changes"),
    ({"changes": [{"before_tool_call": 0, "op": "put", "key": "a"}]}, "setup_json.changes[0].before_tool_call"),
    ({"changes": [{"before_tool_call": 1, "op": "delete", "key": "a"}]}, "setup_json.changes[0].op"),
])
def test_task_setup_of_the_wrong_shape_is_refused(setup, field):
    assert refused(validation.task_setup, "setup_json", setup).field == field
