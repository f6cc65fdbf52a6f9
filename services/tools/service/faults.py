"""Fault injection on the tools service: per-key attempt counters, and which faults an attempt
gets. The vocabulary (abort/delay specs, their syntax and headers) is the contract's
(contract/faults.py); the server applies the decision before the tool runs.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import grpc

from inloop.services.contract.faults import FaultSpec


@dataclass(frozen=True)
class FaultDecision:
    key: str
    attempt: int           # 1-based count of attempts under `key`, this one included
    delay_s: float = 0.0
    abort: grpc.StatusCode | None = None

    @property
    def abort_message(self) -> str:
        return f"injected fault: abort {self.abort.name} (fault key {self.key!r}, attempt {self.attempt})"


@dataclass
class FaultInjector:
    """Per-key attempt counters and counts of injected faults; thread-safe, bounded."""

    max_keys: int = 4096  # least recently used keys are forgotten beyond this
    attempts: OrderedDict = field(default_factory=OrderedDict)
    injected: Counter = field(default_factory=Counter)  # "abort:UNAVAILABLE" / "delay" -> n
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def decide(self, spec: FaultSpec) -> FaultDecision:
        """Count this attempt under spec.key and say which faults it gets."""
        with self._lock:
            attempt = self.attempts.pop(spec.key, 0) + 1
            self.attempts[spec.key] = attempt
            while len(self.attempts) > self.max_keys:
                self.attempts.popitem(last=False)
            delay = spec.delay and spec.delay.trigger.fires(spec.key, "delay", attempt)
            abort = spec.abort and spec.abort.trigger.fires(spec.key, "abort", attempt)
            if delay:
                self.injected["delay"] += 1
            if abort:
                self.injected[f"abort:{spec.abort.grpc_status}"] += 1
        return FaultDecision(spec.key, attempt, spec.delay.fixed_delay_ms / 1e3 if delay else 0.0,
                             spec.abort.code if abort else None)

    def snapshot(self) -> dict:
        with self._lock:
            return {"keys": len(self.attempts), "injected": dict(self.injected)}
