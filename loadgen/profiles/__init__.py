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

`load_profiles(["p00", "my.toml"])` takes built-in names or paths. Each key is declared once in
SETTINGS and typed by the same mechanism as the services' and the lab's settings
(services/common/settings.py); an unknown table or key, a value of the wrong type or a bad
fault spec is an error that names the file and the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inloop.services.common.settings import SOURCE_DEFAULT, ConfigError, Scope, Setting, resolve
from inloop.services.contract.faults import parse_abort, parse_delay

PROFILE_DIR = Path(__file__).resolve().parent
BUILTIN = tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
SETTINGS = [
    Setting("name", "", "the profile's name (default: the file's)"),
    Setting("description", ""),
    Setting("abort", "", "the tools service's abort spec", table="fault"),
    Setting("delay", "", "the tools service's delay spec", table="fault"),
    *(Setting(key, 0.0, table="policy", type=float) for key in (
        "per_try_timeout_ms", "runtime_per_try_timeout_ms", "backoff_base_ms", "backoff_max_ms")),
    Setting("attempts", 1, table="policy", type=int),
    Setting("retry_on", [], "gRPC status names", table="policy", type=list),
]
SCOPE = Scope("profile", known={t: frozenset(s.key for s in SETTINGS if s.table == t) for t in ("", "fault", "policy")},
              env_prefix="INLOOP_PROFILE_", describe_defaults=False)
POLICY_KEYS = tuple(s.key for s in SETTINGS if s.table == "policy")


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
        r = resolve(SETTINGS, {}, SCOPE, env={}, config=str(path), config_source="profile")
    except OSError as exc:
        raise ProfileError(f"{path}: {exc.strerror}") from None
    except ConfigError as exc:
        raise ProfileError(str(exc)) from None
    given = {k for k, source in r.sources.items() if source != SOURCE_DEFAULT}
    for key, parse in (("abort", parse_abort), ("delay", parse_delay)):
        try:
            parse(r.values[key] or None, where=f"{path}: fault.{key}")
        except ValueError as exc:
            raise ProfileError(str(exc)) from None
    policy = {k: r.values[k] for k in POLICY_KEYS if k in given}
    for key, value in policy.items():
        if key != "retry_on" and value < 0:
            raise ProfileError(f"{path}: policy.{key} must be a number >= 0, got {value!r}")
    return Profile(name=r.values["name"] or path.stem, description=r.values["description"], policy=policy,
                   abort=r.values["abort"], delay=r.values["delay"], source=text)


def load_profiles(names: list[str] | None) -> list[Profile]:
    profiles = [load_profile(n) for n in (names or BUILTIN)]
    seen = set()
    for p in profiles:
        if p.name in seen:
            raise ProfileError(f"two profiles are named {p.name!r}")
        seen.add(p.name)
    return profiles
