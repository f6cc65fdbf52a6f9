"""Fault specs: parsing every form, and deterministic every-Nth / percentage decisions."""
from __future__ import annotations

import grpc
import pytest

from inloop.services.contract.errors import FaultSpecError
from inloop.services.contract.faults import (
    HEADER_ABORT,
    HEADER_DELAY,
    HEADER_KEY,
    Abort,
    Delay,
    FaultSpec,
    Trigger,
    parse_abort,
    parse_delay,
)
from inloop.services.tools.service.faults import FaultInjector

EVERY = FaultSpec(abort=Abort(Trigger(every_nth=2), "UNAVAILABLE"),
                  delay=Delay(Trigger(every_nth=3), 900), key="p03")


def test_header_strings_parse():
    assert FaultSpec.from_strings("every=2;status=UNAVAILABLE", "every=3;ms=900", "p03") == EVERY
    assert parse_abort("percent=10; seed=7; status=internal") == Abort(Trigger(percentage=10.0, seed=7), "INTERNAL")
    assert parse_abort("every=1;status=14").grpc_status == "UNAVAILABLE"  # numeric codes too
    assert parse_delay("percent=25;seed=1;ms=200") == Delay(Trigger(percentage=25.0, seed=1), 200)
    assert parse_abort("off") is None and parse_delay("") is None and parse_delay(None) is None


def test_dict_and_istio_forms_round_trip():
    assert FaultSpec.from_dict(EVERY.to_dict()) == EVERY
    assert FaultSpec.from_json('{"abort": {"every_nth": 2, "grpc_status": "UNAVAILABLE"}}').abort == EVERY.abort
    istio = FaultSpec.from_dict({"abort": {"percentage": {"value": 10}, "grpcStatus": "INTERNAL"},
                                 "delay": {"percentage": {"value": 50}, "fixedDelay": "0.2s"}})
    assert istio.abort == Abort(Trigger(percentage=10.0), "INTERNAL")
    assert istio.delay == Delay(Trigger(percentage=50.0), 200)
    assert FaultSpec.from_dict(None).empty and FaultSpec.from_dict({}).empty


@pytest.mark.parametrize("text, message", [
    ("every=2", "needs status=NAME"),
    ("status=UNAVAILABLE", "exactly one of every=N or percent=P"),
    ("every=2;percent=5;status=INTERNAL", "exactly one of"),
    ("every=0;status=INTERNAL", "every must be >= 1"),
    ("percent=101;status=INTERNAL", r"percent must be in \[0, 100\]"),
    ("every=x;status=INTERNAL", "must be a number"),
    ("every=1;status=OK", "not a gRPC error status"),
    ("every=1;status=BROKEN", "not a gRPC error status"),
    ("every=1;status=INTERNAL;colour=red", "unknown field 'colour'"),
    ("every", "is not name=value"),
])
def test_bad_abort_specs_say_what_to_fix(text, message):
    with pytest.raises(FaultSpecError, match=message):
        parse_abort(text, where=HEADER_ABORT)


def test_bad_delay_and_dict_specs():
    with pytest.raises(FaultSpecError, match="ms must be in"):
        parse_delay("every=1;ms=100000")
    with pytest.raises(FaultSpecError, match="needs ms=N"):
        parse_delay("every=1")
    with pytest.raises(FaultSpecError, match="900 sec"):
        FaultSpec.from_dict({"delay": {"every_nth": 1, "fixedDelay": "900 sec"}})
    with pytest.raises(FaultSpecError, match="unknown fault spec field"):
        FaultSpec.from_dict({"abort": None, "retry": {}})
    with pytest.raises(FaultSpecError, match="not JSON"):
        FaultSpec.from_json("{nope")


def test_headers_override_the_default_per_kind():
    default = EVERY
    assert default.with_headers([]) == default
    assert default.with_headers([(HEADER_ABORT, "off")]) == FaultSpec(None, EVERY.delay, "p03")
    swapped = default.with_headers([(HEADER_DELAY, "every=1;ms=5"), (HEADER_KEY, "run-2")])
    assert swapped == FaultSpec(EVERY.abort, Delay(Trigger(every_nth=1), 5), "run-2")
    assert FaultSpec().with_headers(EVERY.to_headers()) == EVERY
    assert EVERY.with_headers(FaultSpec(key="k").to_headers()) == FaultSpec(key="k")  # "off" clears both


def test_every_nth_counts_every_attempt_per_key():
    injector = FaultInjector()
    decisions = [injector.decide(EVERY) for _ in range(6)]
    assert [d.attempt for d in decisions] == [1, 2, 3, 4, 5, 6]
    assert [d.abort for d in decisions] == [None, grpc.StatusCode.UNAVAILABLE] * 3
    assert [d.delay_s for d in decisions] == [0, 0, 0.9, 0, 0, 0.9]
    # Another key has its own counter; the first key's continues where it stopped.
    other = FaultSpec(abort=EVERY.abort, key="other")
    assert injector.decide(other).attempt == 1
    assert injector.decide(EVERY).attempt == 7
    assert injector.snapshot()["injected"] == {"abort:UNAVAILABLE": 3, "delay": 2}


def test_percentage_is_deterministic_per_key_and_roughly_right():
    spec = FaultSpec.from_strings("percent=30;seed=7;status=INTERNAL", key="run-a")

    def pattern(s: FaultSpec, n: int = 400) -> list[bool]:
        injector = FaultInjector()
        return [injector.decide(s).abort is not None for _ in range(n)]

    first = pattern(spec)
    assert first == pattern(spec)  # same key + seed: the same attempts fault, run after run
    assert 0.22 < sum(first) / len(first) < 0.38
    assert pattern(FaultSpec(abort=spec.abort, key="run-b")) != first
    reseeded = FaultSpec.from_strings("percent=30;seed=8;status=INTERNAL", key="run-a")
    assert pattern(reseeded) != first
    never = FaultSpec.from_strings("percent=0;status=INTERNAL", "percent=100;ms=1")
    assert all(d.abort is None and d.delay_s == 0.001 for d in map(FaultInjector().decide, [never] * 50))


def test_injector_forgets_least_recent_keys():
    injector = FaultInjector(max_keys=2)
    for key in ("a", "b", "a", "c"):
        injector.decide(FaultSpec(key=key))
    assert list(injector.attempts) == ["a", "c"]
    assert injector.decide(FaultSpec(key="b")).attempt == 1
