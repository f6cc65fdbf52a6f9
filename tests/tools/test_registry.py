"""The registry (schemas, argument checks, idempotent writes) and the bounded state."""
from __future__ import annotations

import threading

import pytest

from inloop.services.contract.errors import ToolArgumentError, ToolError
from inloop.services.contract.tool_schema import openai_definitions, validate_arguments
from inloop.services.tools.functions.kv import kv
from inloop.services.tools.registry import TOOLS, call_tool, execute
from inloop.services.tools.state import ToolState


@pytest.fixture
def state() -> ToolState:
    return ToolState()


def test_openai_definitions_shape():
    defs = openai_definitions()
    assert [d["function"]["name"] for d in defs] == ["search", "extract_receipt", "summarize",
                                                     "calculator", "kv"]
    for d in defs:
        assert d["type"] == "function"
        params = d["function"]["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
        assert set(params["required"]) <= set(params["properties"])
        assert d["function"]["description"]


@pytest.mark.parametrize("name, args, message", [
    ("", {}, "tool name is empty"),
    ("rm", {}, "unknown tool 'rm'; offered tools: search"),
    ("calculator", ["1+1"], "must be a JSON object, not array"),
    ("calculator", {}, "calculator: missing required argument.*expression"),
    ("calculator", {"expression": "1", "mode": "x"}, "unknown argument.*mode"),
    ("calculator", {"expression": 12}, "calculator.expression must be string, not integer"),
    ("calculator", {"expression": ""}, "calculator.expression must not be empty"),
    ("search", {"query": "a", "k": 2.0}, "search.k must be integer, not number"),
    ("search", {"query": "a", "k": True}, "search.k must be integer, not boolean"),
    ("search", {"query": "a", "k": 0}, "search.k must be >= 1"),
    ("kv", {"op": "delete", "key": "a"}, "kv.op must be one of 'get', 'put', 'increment'"),
    ("kv", {"op": "put", "key": "a", "value": [1]}, "kv.value must be string or number or boolean"),
    ("kv", {"op": "increment", "key": "a", "amount": float("nan")}, "kv.amount must be number"),
])
def test_validate_arguments_messages(name, args, message):
    with pytest.raises(ToolArgumentError, match=message):
        validate_arguments(name, args)


def test_every_tool_runs_through_call_tool(state):
    assert call_tool(state, "calculator", {"expression": "6*7"})["result"] == 42
    assert call_tool(state, "summarize", {"text": "One. Two three."})["sentences"]
    assert call_tool(state, "extract_receipt", {"text": "Shop\nTea 1.00\nTotal 1.00"})["total"] == 1.0
    assert "results" in call_tool(state, "search", {"query": "mountain", "k": 2})
    assert call_tool(state, "kv", {"op": "get", "key": "x"})["version"] == 0
    assert set(TOOLS) == {"search", "extract_receipt", "summarize", "calculator", "kv"}


def test_kv_get_put_increment_versions(state):
    sess = state.session("t1")
    assert kv(sess, "get", "n") == {"op": "get", "key": "n", "value": None, "version": 0, "found": False}
    assert kv(sess, "increment", "n")["value"] == 1
    out = kv(sess, "increment", "n", amount=2.5)
    assert (out["value"], out["version"], out["previous"]) == (3.5, 2, 1)
    assert kv(sess, "put", "name", value="ada") == {"op": "put", "key": "name", "value": "ada", "version": 1}
    with pytest.raises(ToolError, match="not a number"):
        kv(sess, "increment", "name")
    with pytest.raises(ToolError, match="needs a value"):
        kv(sess, "put", "name")
    with pytest.raises(ToolError, match="takes no amount"):
        kv(sess, "get", "n", amount=1)


def test_sessions_are_separate_namespaces(state):
    call_tool(state, "kv", {"op": "put", "key": "k", "value": "a"}, session="s1")
    assert call_tool(state, "kv", {"op": "get", "key": "k"}, session="s2")["found"] is False
    assert call_tool(state, "kv", {"op": "get", "key": "k"}, session="s1")["value"] == "a"


def test_same_idempotency_key_twice_increments_once(state):
    args = {"op": "increment", "key": "counter"}
    first = execute(state, "kv", args, idempotency_key="call-1", session="t")
    again = execute(state, "kv", args, idempotency_key="call-1", session="t")
    assert (first.replayed, again.replayed) == (False, True)
    assert first.result == again.result == {"op": "increment", "key": "counter", "value": 1,
                                            "version": 1, "previous": 0}
    assert call_tool(state, "kv", args, idempotency_key="call-2", session="t")["value"] == 2
    assert call_tool(state, "kv", {"op": "get", "key": "counter"}, session="t")["value"] == 2
    with pytest.raises(ToolArgumentError, match="already used for a different call"):
        execute(state, "kv", {"op": "increment", "key": "other"}, idempotency_key="call-1", session="t")


def test_concurrent_retries_with_one_key_apply_once(state):
    args = {"op": "increment", "key": "c"}
    threads = [threading.Thread(target=call_tool, args=(state, "kv", args, "same", "t")) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert call_tool(state, "kv", {"op": "get", "key": "c"}, session="t")["value"] == 1


def test_read_only_tools_ignore_idempotency_keys(state):
    out = execute(state, "calculator", {"expression": "1+1"}, idempotency_key="k")
    assert not out.replayed and not state.session().idempotency


def test_state_is_bounded():
    state = ToolState(max_sessions=3, max_keys=2, max_idempotency=2)
    for i in range(5):
        state.session(f"s{i}")
    assert state.stats()["sessions"] == 3 and state.evicted_sessions == 2
    sess = state.session("s4")
    for key in "abc":
        kv(sess, "put", key, value=1)
    assert list(sess.kv) == ["b", "c"]
    for i in range(3):
        call_tool(state, "kv", {"op": "increment", "key": "n"}, idempotency_key=f"k{i}", session="s4")
    assert list(sess.idempotency) == ["k1", "k2"]
    assert state.drop_session("s4") and not state.drop_session("s4")


def test_kv_bytes_are_bounded_over_all_sessions():
    """600 puts of 900 KB once took the tools service to 598 MB: values are capped in size and
    the kv bytes of all sessions in total, the least recently used session going first."""
    with pytest.raises(ToolArgumentError, match="the limit is 4096"):
        call_tool(ToolState(), "kv", {"op": "put", "key": "k", "value": "x" * 5000})
    state = ToolState(max_bytes=20_000)
    for i in range(100):
        call_tool(state, "kv", {"op": "put", "key": f"k{i % 3}", "value": "x" * 4000}, session=f"s{i}")
        assert state.used_bytes <= 20_000 + 4100
    assert state.used_bytes == sum(state.session(f"s{i}").size() for i in range(95, 100))
    assert call_tool(state, "kv", {"op": "get", "key": "k0"}, session="s99")["found"]  # the newest stays
    assert state.stats()["evicted_sessions"] >= 90 and state.stats()["kv_bytes"] == state.used_bytes
