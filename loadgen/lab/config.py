"""The lab's settings: the two hosts' names and addresses, the emulated delay, the run.

Each setting is declared once in SETTINGS (common/settings.py, as the services' are) and
layered the same way: a command-line flag, then env INLOOP_LAB_<KEY>, then the TOML file
(`deploy/lab/lab.toml` is the documented default), then the default. `LabConfig` is the frozen,
checked result:

    [lab]                        # topology and delay
    gpu_ns = "gpu-host"          # network namespace = the host name spans carry
    cpu_ns = "cpu-host"
    gpu_addr = "10.77.0.1"       # on the veth end inside gpu_ns
    cpu_addr = "10.77.0.2"
    mechanism = "auto"           # auto | netem | relay
    delay_ms = 0.25              # each way
    jitter_ms = 0.05
    [run]                        # what `inloop lab run` runs
    profiles = ["p00", "p04"]

An unknown table or key, or a value of the wrong type, is an error naming it, as in the
services' own config files.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from inloop.services.common.settings import ConfigError, Scope, Setting, convert, resolve

MECHANISMS = ("auto", "netem", "relay")
_NS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")   # Linux IFNAMSIZ - 1


class LabConfigError(ValueError):
    """A setting the lab cannot use; the message names it."""


def _lab(key, default, help="", **kw) -> Setting:
    return Setting(key, default, help, type=type(default), table="lab", **kw)


def _run(key, default, help="", **kw) -> Setting:
    kind = list if isinstance(default, tuple) else type(default)
    return Setting(key, default, help, type=kind, table="run", **kw)


# The help texts are `inloop lab`'s flags' (where a setting has one; the rest are file-only).
SETTINGS = [
    # [lab]: the two hosts and the link between them
    _lab("gpu_ns", "gpu-host", "the GPU host's namespace name (default gpu-host)"),
    _lab("cpu_ns", "cpu-host", "the CPU host's namespace name (default cpu-host)"),
    _lab("gpu_link", "veth-gpu"),
    _lab("cpu_link", "veth-cpu"),
    _lab("gpu_addr", "10.77.0.1"),
    _lab("cpu_addr", "10.77.0.2"),
    _lab("prefix_len", 24),
    _lab("mechanism", "auto", "how to delay: netem, the userspace relay, or auto = netem where it works (default)",
         choices=MECHANISMS),
    _lab("delay_ms", 0.25, "one-way delay between the hosts (default 0.25)"),
    _lab("jitter_ms", 0.05, "uniform ± on each delay, at most --delay-ms (default 0.05)"),
    _lab("runtime_port", 50051),
    _lab("tools_port", 50061),
    _lab("controller_port", 50071),
    _lab("otlp_port", 14317),
    _lab("relay_port", 50051),        # on cpu_addr: the runtime as the CPU host reaches it
    # [run]: the services' model and the matrix
    _run("model", "default", "the runtime's model: 'default' (SmolLM2) or an HF-layout directory"),
    _run("backend", "auto", "the runtime's backend (default auto)", choices=("cpu", "cuda", "auto")),
    _run("start_timeout_s", 300.0, "seconds each service gets to become healthy (default 300)"),
    _run("profiles", ("p00", "p04"), "a profile (repeatable; default p00 and p04)", flag="--profile",
         metavar="PROFILE"),
    _run("families", (), "a task family (repeatable; default all)", flag="--family"),  # () = every family
    _run("per_family", 1, "eval cases per family (default 1)"),
    _run("runs", 1, "repetitions of every pair (default 1)"),
    _run("warmups", 1, "unrecorded warm-up pairs per profile (default 1)"),
    _run("max_tokens", 64, "per model step (default 64)"),
]
BY_KEY = {s.key: s for s in SETTINGS}
SCOPE = Scope("lab", known={t: frozenset(s.key for s in SETTINGS if s.table == t) for t in ("lab", "run")},
              env_prefix="INLOOP_LAB_", describe_defaults=False)


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


# LabConfig's fields are SETTINGS' keys, types and defaults (named once, above)
_Fields = dataclasses.make_dataclass(
    "_Fields", [(s.key, tuple[str, ...] if s.type is list else s.type, dataclasses.field(default=s.default))
                for s in SETTINGS], frozen=True)


@dataclass(frozen=True)
class LabConfig(_Fields):
    """The lab's settings, checked together (addresses in one subnet, distinct names and ports)."""

    def __post_init__(self):
        for key in ("gpu_ns", "cpu_ns"):
            if not _NS_NAME.match(getattr(self, key)):
                raise LabConfigError(f"{key}={getattr(self, key)!r}: not a usable namespace name")
        for key in ("gpu_link", "cpu_link"):
            if not _IFNAME.match(getattr(self, key)):
                raise LabConfigError(f"{key}={getattr(self, key)!r}: an interface name of 1-15 letters, "
                                     "digits, '_', '.', '-'")
        if self.gpu_ns == self.cpu_ns or self.gpu_link == self.cpu_link:
            raise LabConfigError("the two namespaces, and the two link ends, need different names")
        try:
            net = ipaddress.ip_interface(f"{self.gpu_addr}/{self.prefix_len}").network
            same = ipaddress.ip_address(self.cpu_addr) in net
        except ValueError as exc:
            raise LabConfigError(f"gpu_addr/cpu_addr/prefix_len: {exc}") from None
        if not same or self.gpu_addr == self.cpu_addr:
            raise LabConfigError(f"gpu_addr {self.gpu_addr} and cpu_addr {self.cpu_addr} must be two "
                                 f"addresses of one /{self.prefix_len} subnet")
        if self.mechanism not in MECHANISMS:
            raise LabConfigError(f"mechanism={self.mechanism!r}: one of {', '.join(MECHANISMS)}")
        if not 0 <= self.jitter_ms <= self.delay_ms:
            raise LabConfigError(f"need 0 <= jitter_ms <= delay_ms, got {self.jitter_ms} and {self.delay_ms}")
        ports = {k: getattr(self, k) for k in ("tools_port", "controller_port", "otlp_port", "relay_port")}
        if len(set(ports.values())) != len(ports):
            raise LabConfigError(f"the CPU host's ports must differ: {ports}")
        if not self.profiles:
            raise LabConfigError("profiles: name at least one")

    # -- addresses, as the clients in the CPU host dial them --------------------------------
    @property
    def runtime_listen(self) -> str:
        return f"{self.gpu_addr}:{self.runtime_port}"

    @property
    def relay_listen(self) -> str:
        return f"{self.cpu_addr}:{self.relay_port}"

    @property
    def tools_target(self) -> str:
        return f"{self.cpu_addr}:{self.tools_port}"

    @property
    def controller_target(self) -> str:
        return f"{self.cpu_addr}:{self.controller_port}"

    @property
    def otlp_listen(self) -> str:
        return f"{self.cpu_addr}:{self.otlp_port}"

    def runtime_target(self, mechanism: str) -> str:
        """Where CPU-host clients reach the runtime: through the relay, or straight over the link."""
        return self.relay_listen if mechanism == "relay" else self.runtime_listen

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides) -> LabConfig:
    """Flags (`overrides` that are not None) > env INLOOP_LAB_<KEY> > the TOML file at `path` > defaults."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(BY_KEY))
    if unknown:
        raise LabConfigError(f"unknown lab setting(s) {', '.join(unknown)}")
    try:
        given = {k: convert(BY_KEY[k], v, k, "flag") for k, v in given.items()}
        values = resolve(SETTINGS, given, SCOPE, os.environ if env is None else env,
                         config=str(path) if path else None, config_source="lab config").values
    except ConfigError as exc:
        raise LabConfigError(str(exc)) from None
    return LabConfig(**{k: _tuple(v) for k, v in values.items()})
