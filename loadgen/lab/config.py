"""The lab's settings: the two hosts' names and addresses, the emulated delay, the run.

One frozen dataclass, `LabConfig`, built from the defaults below, then a TOML file
(`deploy/lab/lab.toml` is the documented default), then command-line flags:

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

An unknown table or key is an error naming it, as in the services' own config files.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

MECHANISMS = ("auto", "netem", "relay")
_NS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")   # Linux IFNAMSIZ - 1


class LabConfigError(ValueError):
    """A setting the lab cannot use; the message names it."""


@dataclass(frozen=True)
class LabConfig:
    # [lab]: the two hosts and the link between them
    gpu_ns: str = "gpu-host"
    cpu_ns: str = "cpu-host"
    gpu_link: str = "veth-gpu"
    cpu_link: str = "veth-cpu"
    gpu_addr: str = "10.77.0.1"
    cpu_addr: str = "10.77.0.2"
    prefix_len: int = 24
    mechanism: str = "auto"
    delay_ms: float = 0.25
    jitter_ms: float = 0.05
    runtime_port: int = 50051
    tools_port: int = 50061
    controller_port: int = 50071
    otlp_port: int = 4317
    relay_port: int = 50051          # on cpu_addr: the runtime as the CPU host reaches it
    # [run]: the services' model and the matrix
    model: str = "default"
    backend: str = "auto"
    start_timeout_s: float = 300.0
    profiles: tuple[str, ...] = ("p00", "p04")
    families: tuple[str, ...] = ()   # empty = every task family
    per_family: int = 1
    runs: int = 1
    warmups: int = 1
    max_tokens: int = 64

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


_TABLES = {
    "lab": ("gpu_ns", "cpu_ns", "gpu_link", "cpu_link", "gpu_addr", "cpu_addr", "prefix_len", "mechanism",
            "delay_ms", "jitter_ms", "runtime_port", "tools_port", "controller_port", "otlp_port", "relay_port"),
    "run": ("model", "backend", "start_timeout_s", "profiles", "families", "per_family", "runs", "warmups",
            "max_tokens"),
}
_TYPES = {f.name: f.type for f in dataclasses.fields(LabConfig)}


def _typed(key: str, value, where: str):
    kind = _TYPES[key]
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if kind.startswith("tuple") and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise LabConfigError(f"{where}: {key}={value!r} is not {kind.replace('tuple[str, ...]', 'a list of strings')}")


def load_config(path: str | Path | None = None, **overrides) -> LabConfig:
    """Defaults, then the TOML file at `path` (if any), then `overrides` that are not None."""
    values: dict = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise LabConfigError(f"lab config {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise LabConfigError(f"lab config {path}: not valid TOML: {exc}") from None
        unknown_tables = sorted(set(data) - set(_TABLES))
        if unknown_tables:
            raise LabConfigError(f"{path}: unknown table(s) {', '.join(unknown_tables)}; tables are [lab] and [run]")
        for table, keys in data.items():
            if not isinstance(keys, dict):
                raise LabConfigError(f"{path}: {table} must be a table")
            unknown = sorted(set(keys) - set(_TABLES[table]))
            if unknown:
                raise LabConfigError(f"{path} [{table}]: unknown key(s) {', '.join(unknown)}")
            for key, value in keys.items():
                values[key] = _typed(key, value, f"{path} [{table}]")
    for key, value in overrides.items():
        if value is not None:
            values[key] = tuple(value) if isinstance(value, list) else value
    return LabConfig(**values)
