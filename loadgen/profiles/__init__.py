"""Fault profiles as files: `loadgen/profiles/*.toml` (p00–p05 ship; users add their own).

A profile is what one column of the routing matrix applies to every task, per request:
the route policy (deadlines, retries, backoff) the controller uses for its hops, and the
fault spec the controller forwards to the tools service in `x-inloop-fault-*` headers.
No service restarts between profiles.

    name = "p04"
    description = "mixed aggressive: ..."
    [fault]                      # optional; the tools service's spec syntax
    abort = "every=2;status=UNAVAILABLE"      # or "percent=10;seed=7;status=INTERNAL"
    delay = "every=3;ms=900"                  # or "percent=25;seed=1;ms=200"
    [policy]                     # RoutePolicy fields; all optional
    per_try_timeout_ms = 250     # one tool attempt's deadline (0 = the task's remaining time)
    runtime_per_try_timeout_ms = 0
    attempts = 2                 # tries per hop, 1 = no retry
    backoff_base_ms = 20         # exponential backoff with full jitter, capped at max
    backoff_max_ms = 20
    retry_on = ["UNAVAILABLE", "DEADLINE_EXCEEDED"]

`load_profiles(["p00", "my.toml"])` takes built-in names or paths; an unknown key or a bad
fault spec is an error that names the file and the key.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from inloop.services.contract.faults import parse_abort, parse_delay

PROFILE_DIR = Path(__file__).resolve().parent
BUILTIN = tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
POLICY_KEYS = {"per_try_timeout_ms": float, "runtime_per_try_timeout_ms": float, "attempts": int,
               "backoff_base_ms": float, "backoff_max_ms": float, "retry_on": list}


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    policy: dict = field(default_factory=dict)
    abort: str = ""
    delay: str = ""
    source: str = ""   # the file's text, recorded in the report's metadata

    def route_policy(self):
        from inloop.v1 import runtime_pb2 as pb
        return pb.RoutePolicy(**self.policy)

    def fault_spec(self, key: str):
        """The fault spec for one task run; `key` keeps its every-Nth counters apart."""
        from inloop.v1 import runtime_pb2 as pb
        return pb.FaultSpec(abort=self.abort, delay=self.delay, key=key)


def _path_for(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    if name_or_path in BUILTIN:
        return PROFILE_DIR / f"{name_or_path}.toml"
    raise ProfileError(f"no profile {name_or_path!r}: use one of {', '.join(BUILTIN)} or a path to a .toml file")


def load_profile(name_or_path: str) -> Profile:
    path = _path_for(name_or_path)
    try:
        text = path.read_text()
        doc = tomllib.loads(text)
    except OSError as exc:
        raise ProfileError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    unknown = set(doc) - {"name", "description", "fault", "policy"}
    if unknown:
        raise ProfileError(f"{path}: unknown keys {sorted(unknown)} (use name, description, [fault], [policy])")
    fault, policy = doc.get("fault", {}), doc.get("policy", {})
    if set(fault) - {"abort", "delay"}:
        raise ProfileError(f"{path}: [fault] takes abort and delay, not {sorted(set(fault) - {'abort', 'delay'})}")
    for key, parse in (("abort", parse_abort), ("delay", parse_delay)):
        try:
            parse(fault.get(key) or None, where=f"{path}: fault.{key}")
        except ValueError as exc:
            raise ProfileError(str(exc)) from None
    for key, value in policy.items():
        kind = POLICY_KEYS.get(key)
        if kind is None:
            raise ProfileError(f"{path}: unknown policy key {key!r} (use {', '.join(POLICY_KEYS)})")
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ProfileError(f"{path}: policy.{key} must be a list of gRPC status names")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ProfileError(f"{path}: policy.{key} must be a number >= 0, got {value!r}")
    return Profile(name=str(doc.get("name") or path.stem), description=str(doc.get("description", "")),
                   policy={k: POLICY_KEYS[k](v) for k, v in policy.items()},
                   abort=fault.get("abort", ""), delay=fault.get("delay", ""), source=text)


def load_profiles(names: list[str] | None) -> list[Profile]:
    profiles = [load_profile(n) for n in (names or BUILTIN)]
    seen = set()
    for p in profiles:
        if p.name in seen:
            raise ProfileError(f"two profiles are named {p.name!r}")
        seen.add(p.name)
    return profiles
