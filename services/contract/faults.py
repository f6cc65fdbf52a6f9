"""The fault-spec vocabulary (Envoy/Istio's `abort` and `delay`): what a fault is, how it is
written, and the headers that carry it. The tools service injects them (tools/faults.py);
the controller, the task validation and the loadgen's profiles parse and write them here.

A fault fires on every Nth attempt (`every`) or on a percentage of attempts (`percent`,
drawn from a `seed`). `abort` ends the call with a gRPC status; `delay` waits a fixed
time first. Delay is applied before abort, as Envoy's fault filter does, so one attempt
can be both delayed and aborted. Faults apply to `Tools.Call` only (List and health are
never faulted), and act before the tool runs: an aborted call never touches state.

The service default comes from flags (`--fault-abort`, `--fault-delay`, `--fault-key`) or
a JSON file (`--fault-config`); a caller overrides it per request with metadata headers:

    x-inloop-fault-abort   every=2;status=UNAVAILABLE  |  percent=10;seed=7;status=INTERNAL  |  off
    x-inloop-fault-delay   every=3;ms=900              |  percent=25;seed=1;ms=200           |  off
    x-inloop-fault-key     p03-run-1   (the counter key; default "" = one shared counter)

A header replaces that kind of fault of the default (`off` removes it); a missing header
keeps the default. The same spec as JSON (also what `FaultSpec.to_dict` writes):

    {"key": "p03-run-1", "abort": {"every_nth": 2, "grpc_status": "UNAVAILABLE"},
     "delay": {"percentage": 25, "seed": 1, "fixed_delay_ms": 200}}

Istio's spellings are accepted too (grpcStatus, fixedDelay "900ms", percentage {"value": 25}).

Counting: attempts are counted per key, and EVERY attempt that reaches the service counts,
retries included, so "every 2nd" means the 2nd, 4th, ... attempt under that key whatever
the caller's retry policy. A percentage draw depends only on (seed, key, kind, attempt
number), so the same sequence of attempts under the same key faults the same way each run.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

import grpc

from inloop.services.contract.errors import FaultSpecError

HEADER_ABORT = "x-inloop-fault-abort"
HEADER_DELAY = "x-inloop-fault-delay"
HEADER_KEY = "x-inloop-fault-key"
MAX_DELAY_MS = 60_000
_OFF = {"", "off", "none"}
# Every accepted spelling -> the canonical name (snake_case as in Envoy's API, Istio's camelCase).
_ALIASES = {
    "every": "every_nth", "every_nth": "every_nth", "everyNth": "every_nth", "nth": "every_nth",
    "percent": "percentage", "percentage": "percentage", "seed": "seed",
    "status": "grpc_status", "grpc_status": "grpc_status", "grpcStatus": "grpc_status",
    "ms": "fixed_delay_ms", "fixed_delay_ms": "fixed_delay_ms", "fixedDelayMs": "fixed_delay_ms",
    "fixedDelay": "fixed_delay", "fixed_delay": "fixed_delay",
}


@dataclass(frozen=True)
class Trigger:
    """When a fault fires: on attempts N, 2N, 3N, ... or on `percentage`% of attempts."""

    every_nth: int = 0
    percentage: float = 0.0
    seed: int = 0

    def fires(self, key: str, kind: str, attempt: int) -> bool:
        if self.every_nth:
            return attempt % self.every_nth == 0
        return _draw(self.seed, key, kind, attempt) < self.percentage

    def to_dict(self) -> dict:
        if self.every_nth:
            return {"every_nth": self.every_nth}
        return {"percentage": self.percentage, "seed": self.seed}


def _draw(seed: int, key: str, kind: str, attempt: int) -> float:
    """A uniform number in [0, 100) fixed by its inputs (no shared RNG, so order-free)."""
    digest = hashlib.blake2b(f"{seed}|{key}|{kind}|{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100.0


@dataclass(frozen=True)
class Abort:
    trigger: Trigger
    grpc_status: str  # a grpc.StatusCode name, e.g. "UNAVAILABLE"

    @property
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.grpc_status]


@dataclass(frozen=True)
class Delay:
    trigger: Trigger
    fixed_delay_ms: int


@dataclass(frozen=True)
class FaultSpec:
    abort: Abort | None = None
    delay: Delay | None = None
    key: str = ""

    @property
    def empty(self) -> bool:
        return self.abort is None and self.delay is None

    # ---- parsing ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict | None) -> "FaultSpec":
        data = dict(data or {})
        unknown = set(data) - {"abort", "delay", "key"}
        if unknown:
            raise FaultSpecError(f"unknown fault spec field(s) {sorted(unknown)}; use abort, delay, key")
        return cls(abort=_abort(_canonical(data["abort"], "abort")) if data.get("abort") else None,
                   delay=_delay(_canonical(data["delay"], "delay")) if data.get("delay") else None,
                   key=str(data.get("key") or ""))

    @classmethod
    def from_json(cls, text: str) -> "FaultSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise FaultSpecError(f"fault spec is not JSON: {exc}") from None

    @classmethod
    def from_strings(cls, abort: str | None = None, delay: str | None = None, key: str = "") -> "FaultSpec":
        """From the header/flag syntax ("every=2;status=UNAVAILABLE"); None or "off" = none."""
        return cls(abort=parse_abort(abort), delay=parse_delay(delay), key=key or "")

    def with_headers(self, metadata: Iterable[tuple[str, Any]]) -> "FaultSpec":
        """This spec (the service default) overridden by a request's fault headers."""
        headers = {k.lower(): v for k, v in metadata or ()}
        abort, delay = self.abort, self.delay
        if HEADER_ABORT in headers:
            abort = parse_abort(_text(headers[HEADER_ABORT]), where=HEADER_ABORT)
        if HEADER_DELAY in headers:
            delay = parse_delay(_text(headers[HEADER_DELAY]), where=HEADER_DELAY)
        key = _text(headers[HEADER_KEY]).strip() if HEADER_KEY in headers else self.key
        return FaultSpec(abort, delay, key)

    # ---- writing (the controller forwards a spec with these) ----------------------
    def to_dict(self) -> dict:
        out: dict = {"key": self.key}
        if self.abort:
            out["abort"] = {**self.abort.trigger.to_dict(), "grpc_status": self.abort.grpc_status}
        if self.delay:
            out["delay"] = {**self.delay.trigger.to_dict(), "fixed_delay_ms": self.delay.fixed_delay_ms}
        return out

    def to_headers(self) -> list[tuple[str, str]]:
        """gRPC metadata that makes the tools service apply exactly this spec."""
        def rule(trigger: Trigger) -> str:
            return (f"every={trigger.every_nth}" if trigger.every_nth
                    else f"percent={trigger.percentage:g};seed={trigger.seed}")
        return [
            (HEADER_ABORT, f"{rule(self.abort.trigger)};status={self.abort.grpc_status}" if self.abort else "off"),
            (HEADER_DELAY, f"{rule(self.delay.trigger)};ms={self.delay.fixed_delay_ms}" if self.delay else "off"),
            (HEADER_KEY, self.key),
        ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(text: str, where: str) -> dict:
    """"every=2;status=UNAVAILABLE" -> {"every": "2", "status": "UNAVAILABLE"}."""
    bad = next((c for c in text if not " " <= c <= "~"), None)
    if bad is not None:  # it travels in a gRPC header: a newline or U+202E would never arrive
        raise FaultSpecError(f"{where}: must be printable ASCII, found {bad!r}")
    out = {}
    for part in filter(None, (p.strip() for p in re.split(r"[;,]", text))):
        name, sep, value = part.partition("=")
        if not sep or not value.strip():
            raise FaultSpecError(f"{where}: {part!r} is not name=value (example: every=2;status=UNAVAILABLE)")
        out[name.strip()] = value.strip()
    return out


def _canonical(data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise FaultSpecError(f"{where} must be an object, not {data!r}")
    out = {}
    for name, value in data.items():
        if name not in _ALIASES:
            raise FaultSpecError(f"{where}: unknown field {name!r}")
        out[_ALIASES[name]] = value
    return out


def _number(data: dict, name: str, where: str, kind=int):
    value = data.get(name)
    if isinstance(value, dict) and set(value) == {"value"}:  # Istio: percentage: {value: 25}
        value = value["value"]
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise FaultSpecError(f"{where}: {name} must be a number, not {value!r}") from None


def _trigger(data: dict, where: str) -> Trigger:
    has_every, has_percent = "every_nth" in data, "percentage" in data
    if has_every == has_percent:
        raise FaultSpecError(f"{where}: give exactly one of every=N or percent=P")
    if has_every:
        every = _number(data, "every_nth", where)
        if every < 1:
            raise FaultSpecError(f"{where}: every must be >= 1, not {every}")
        return Trigger(every_nth=every)
    percent = _number(data, "percentage", where, float)
    if not 0.0 <= percent <= 100.0:
        raise FaultSpecError(f"{where}: percent must be in [0, 100], not {percent}")
    return Trigger(percentage=percent, seed=_number({"seed": data.get("seed", 0)}, "seed", where))


def _status_name(value: Any, where: str) -> str:
    text = str(value).strip().upper()
    by_number = {str(code.value[0]): code.name for code in grpc.StatusCode}
    name = by_number.get(text, text)
    if name not in grpc.StatusCode.__members__ or name == "OK":
        raise FaultSpecError(f"{where}: status {value!r} is not a gRPC error status "
                             "(e.g. UNAVAILABLE, INTERNAL, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED)")
    return name


def _duration_ms(value: Any, where: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", str(value))
    if not m:
        raise FaultSpecError(f"{where}: fixedDelay {value!r} must look like 900ms or 0.9s")
    return round(float(m.group(1)) * (1 if m.group(2) == "ms" else 1000))


def _abort(data: dict, where: str = "abort") -> Abort:
    extra = set(data) - {"every_nth", "percentage", "seed", "grpc_status"}
    if extra or "grpc_status" not in data:
        raise FaultSpecError(f"{where}: needs status=NAME with every=N or percent=P[;seed=S]"
                             + (f" (unexpected: {sorted(extra)})" if extra else ""))
    return Abort(_trigger(data, where), _status_name(data["grpc_status"], where))


def _delay(data: dict, where: str = "delay") -> Delay:
    if "fixed_delay" in data:  # Istio's duration string; `data` is our own copy
        data["fixed_delay_ms"] = _duration_ms(data.pop("fixed_delay"), where)
    extra = set(data) - {"every_nth", "percentage", "seed", "fixed_delay_ms"}
    if extra or "fixed_delay_ms" not in data:
        raise FaultSpecError(f"{where}: needs ms=N with every=N or percent=P[;seed=S]"
                             + (f" (unexpected: {sorted(extra)})" if extra else ""))
    ms = _number(data, "fixed_delay_ms", where)
    if not 0 <= ms <= MAX_DELAY_MS:
        raise FaultSpecError(f"{where}: ms must be in [0, {MAX_DELAY_MS}], not {ms}")
    return Delay(_trigger(data, where), ms)


def parse_abort(text: str | None, where: str = "abort") -> Abort | None:
    if text is None or text.strip().lower() in _OFF:
        return None
    return _abort(_canonical(_pairs(text, where), where), where)


def parse_delay(text: str | None, where: str = "delay") -> Delay | None:
    if text is None or text.strip().lower() in _OFF:
        return None
    return _delay(_canonical(_pairs(text, where), where), where)
