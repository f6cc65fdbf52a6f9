"""Layered configuration for every `inloop SERVICE serve`: flag > env > TOML > default.

Every serve option `--foo-bar` is a config key `foo_bar` that can come from, in order:

    1. the command line            --max-queue 32
    2. the environment             INLOOP_MAX_QUEUE=32
    3. the TOML file's service table   [runtime] max_queue = 32
    4. the TOML file's common table    [common]  max_queue = 32
    5. the option's argparse default

The file is `--config FILE` or `$INLOOP_CONFIG`. Values are typed by the argparse option
(its `type`, `choices`, and bool for flags such as `--plaintext`), and a bad value names
where it came from: `INLOOP_PORT='abc' (env): not an int`. Unknown tables or keys in the
file are errors that name them, so a typo never silently falls back to a default.

How: `add_common_serve_options(parser, service, port=..., metrics_port=...)` adds the options every service
shares and turns layering on for that parser. Layering hooks the parser's own
`parse_known_args`: just before parsing it records every option's default and replaces it
with argparse.SUPPRESS (so an absent flag leaves no attribute), and right after parsing it
fills the missing keys from env, TOML and the recorded defaults. Options added later with
a plain `parser.add_argument(...)` (e.g. `--metrics-port`) therefore get their env and
TOML forms too. The namespace also gets `config_sources` ({key: where it came from}),
which `inloop config show` prints.
"""
from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "INLOOP_"
CONFIG_ENV = "INLOOP_CONFIG"
COMMON_TABLE = "common"
SERVICES = ("runtime", "tools", "controller")
SERVE_COMMANDS = {"runtime": "inloop.services.runtime.service.cli", "tools": "inloop.services.tools.service.cli",
                  "controller": "inloop.services.controller.cli"}
# Standard variables read after INLOOP_<KEY> (same env layer), so OpenTelemetry's own
# spelling works as everywhere else.
EXTRA_ENV = {"otlp_endpoint": ("OTEL_EXPORTER_OTLP_ENDPOINT",)}
SOURCE_FLAG = "flag"
SOURCE_DEFAULT = "default"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_BOOL_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)
_NOT_KEYS = (argparse._HelpAction, argparse._VersionAction)


class ConfigError(ValueError):
    """A value, file or key that cannot be used; the message names its source."""


@dataclass(frozen=True)
class ResolvedConfig:
    """Every key's effective value and where it came from ("flag", "env INLOOP_PORT", ...)."""

    service: str
    values: dict[str, Any]
    sources: dict[str, str]


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


# ---- the options every service shares ------------------------------------------------------
def add_common_serve_options(parser: argparse.ArgumentParser, service: str, *, port: int,
                             metrics_port: int) -> None:
    """Add host/port/logging/shutdown/TLS/token/tracing/metrics options and enable layered config.

    Service-specific options may be added before or after this call, with plain
    `parser.add_argument`; all of them get env and TOML forms.
    """
    parser.add_argument("--config", default=None, metavar="FILE",
                        help=f"TOML file with [{service}] and [common] tables")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; a non-loopback one needs TLS files or --plaintext")
    parser.add_argument("--port", type=int, default=port, help="gRPC port; 0 picks a free one (printed)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--grace-s", type=float, default=5.0,
                        help="on SIGTERM, seconds running calls get to finish")
    sec = parser.add_argument_group("security", "mTLS with all three TLS files (from `inloop certs dev`); "
                                                "a bearer token with --token-file")
    sec.add_argument("--tls-cert", default=None, metavar="PEM", help="this service's certificate")
    sec.add_argument("--tls-key", default=None, metavar="PEM", help="its private key")
    sec.add_argument("--tls-ca", default=None, metavar="PEM",
                     help="CA that client certificates must chain to (and that peers' certificates do)")
    sec.add_argument("--plaintext", action=argparse.BooleanOptionalAction, default=False,
                     help="explicitly allow no TLS on a non-loopback address")
    sec.add_argument("--token-file", default=None, metavar="FILE",
                     help="every RPC but Health must send 'authorization: Bearer <token in FILE>'")
    parser.add_argument("--otlp-endpoint", default="", metavar="URL",
                        help="OTLP/gRPC trace collector, e.g. http://127.0.0.1:4317 "
                             "(also OTEL_EXPORTER_OTLP_ENDPOINT)")
    parser.add_argument("--metrics-port", type=int, default=metrics_port,
                        help="Prometheus /metrics port (bound on --host; HTTPS with the TLS files); "
                             "0 picks a free one, logged as metrics_listening; -1 = no metrics")
    enable_layered_config(parser, service)


def add_client_security_options(parser: argparse.ArgumentParser) -> None:
    """--tls-cert/--tls-key/--tls-ca/--token-file for a client command; read them with
    services.common.security.client_security_from_args (flag, else env INLOOP_TLS_CERT, ...)."""
    group = parser.add_argument_group("security", "TLS to a service started with --tls-* files, and its "
                                                  "bearer token; each also from env INLOOP_TLS_CERT, ...")
    group.add_argument("--tls-cert", default=None, metavar="PEM", help="client certificate (mTLS)")
    group.add_argument("--tls-key", default=None, metavar="PEM", help="its private key")
    group.add_argument("--tls-ca", default=None, metavar="PEM", help="CA to verify the server with (enables TLS)")
    group.add_argument("--token-file", default=None, metavar="FILE", help="send 'authorization: Bearer <token>'")


def export_otlp_endpoint(args: argparse.Namespace) -> None:
    """Hand a configured otlp_endpoint to OpenTelemetry; call before setup_tracing().

    An https:// endpoint is the span export over TLS; a service that has its own TLS files
    then presents them there too (mTLS to a collector or the loadgen's receiver), through the
    exporter's standard variables, unless those are set already."""
    endpoint = getattr(args, "otlp_endpoint", "")
    if endpoint:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if endpoint.startswith("https://"):
        for var, key in (("OTEL_EXPORTER_OTLP_CERTIFICATE", "tls_ca"),
                         ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "tls_cert"),
                         ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "tls_key")):
            if getattr(args, key, None):
                os.environ.setdefault(var, str(getattr(args, key)))


# ---- hooking a parser ----------------------------------------------------------------------
def enable_layered_config(parser: argparse.ArgumentParser, service: str) -> argparse.ArgumentParser:
    """Make `parser` resolve its options from flag > env > TOML > default (idempotent)."""
    if getattr(parser, "_inloop_service", None):
        return parser
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}")
    if not any(a.dest == "config" for a in parser._actions):
        parser.add_argument("--config", default=None, metavar="FILE", help=f"TOML config file (env {CONFIG_ENV})")
    raw_parse = parser.parse_known_args
    parser._inloop_service = service
    parser._inloop_defaults = {}
    parser._inloop_raw_parse = raw_parse

    def parse_known_args(args=None, namespace=None):
        given, extras = parse_given(parser, args, namespace)
        try:
            resolved = resolve(parser, given, os.environ)
        except ConfigError as exc:
            parser.error(str(exc))  # usage + message, exit 2
        apply(given, resolved)
        return given, extras

    parser.parse_known_args = parse_known_args
    return parser


def layered_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's config keys (option dests) -> actions, with defaults moved aside.

    Each new action's default is recorded and replaced by SUPPRESS, and its help gains
    its env name and default, so `--help` documents every form.
    """
    defaults = parser._inloop_defaults
    options = {}
    for action in parser._actions:
        if not action.option_strings or isinstance(action, _NOT_KEYS):
            continue
        if action.dest not in defaults:
            defaults[action.dest] = action.default
            if action.help is not argparse.SUPPRESS:
                shown = "unset" if action.default in (None, "") else str(action.default).replace("%", "%%")
                env = CONFIG_ENV if action.dest == "config" else env_name(action.dest)
                action.help = f"{action.help or ''} [env {env}; default: {shown}]".lstrip()
            action.default = argparse.SUPPRESS
        options[action.dest] = action
    return options


def parse_given(parser, args=None, namespace=None) -> tuple[argparse.Namespace, list[str]]:
    """Parse only what is on the command line: absent options leave no attribute."""
    layered_options(parser)
    return parser._inloop_raw_parse(args, namespace)


def apply(namespace: argparse.Namespace, resolved: ResolvedConfig) -> None:
    for key, value in resolved.values.items():
        setattr(namespace, key, value)
    namespace.config_sources = dict(resolved.sources)


# ---- resolution ----------------------------------------------------------------------------
def resolve(parser: argparse.ArgumentParser, given: argparse.Namespace, env: Mapping[str, str]) -> ResolvedConfig:
    """Fill every key of `parser` that the command line did not give, remembering its source."""
    service = parser._inloop_service
    options = layered_options(parser)
    defaults = parser._inloop_defaults
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    if hasattr(given, "config"):
        values["config"], sources["config"] = given.config, SOURCE_FLAG
    elif env.get(CONFIG_ENV):
        values["config"], sources["config"] = env[CONFIG_ENV], f"env {CONFIG_ENV}"
    else:
        values["config"], sources["config"] = defaults.get("config"), SOURCE_DEFAULT
    own_keys = set(options) - {"config"}  # the file cannot name another file
    tables = load_toml(values["config"], sources["config"], service, own_keys) if values["config"] else {}

    for key, action in options.items():
        if key == "config":
            continue
        if hasattr(given, key):
            values[key], sources[key] = getattr(given, key), SOURCE_FLAG
            continue
        for var in (env_name(key), *EXTRA_ENV.get(key, ())):
            if env.get(var, "") != "":
                values[key], sources[key] = convert(action, env[var], var, "env"), f"env {var}"
                break
        else:
            for table in (service, COMMON_TABLE):
                if key in tables.get(table, {}):
                    where = f"{values['config']} [{table}]"
                    values[key], sources[key] = convert(action, tables[table][key], key, where), where
                    break
            else:
                values[key], sources[key] = defaults[key], SOURCE_DEFAULT
    return ResolvedConfig(service, values, sources)


def load_toml(path: str, origin: str, service: str, own_keys: set[str]) -> dict[str, dict]:
    """Read the TOML file; every table must be a service or [common], every key known."""
    where = f"config file {path} ({origin})"
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{where}: not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    loose = [k for k, v in data.items() if not isinstance(v, dict)]
    if loose:
        raise ConfigError(f"{path}: key(s) {', '.join(loose)} outside a table; "
                          f"put them under [{COMMON_TABLE}] or [{service}]")
    unknown_tables = sorted(set(data) - {COMMON_TABLE, *SERVICES})
    if unknown_tables:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(f'[{t}]' for t in unknown_tables)}; "
                          f"tables are [{COMMON_TABLE}], {', '.join(f'[{s}]' for s in SERVICES)}")
    for table, keys in data.items():
        # [common] may hold any service's key (one file for a whole host); a service
        # table only its own. Other services' keys are read from their parsers.
        if table == service:
            known = own_keys
        elif table == COMMON_TABLE:
            known = own_keys.union(*(service_keys(s) for s in SERVICES if s != service))
        else:
            known = service_keys(table)
        unknown = sorted(set(keys) - known)
        if unknown:
            hints = [f"{k} (did you mean {k.replace('-', '_')}?)" if k.replace("-", "_") in known else k
                     for k in unknown]
            raise ConfigError(f"{path} [{table}]: unknown key(s) {', '.join(hints)}")
    return data


def service_keys(service: str) -> set[str]:
    """The config keys of `inloop SERVICE serve` (built from its real parser)."""
    return set(layered_options(serve_parser(service))) - {"config"}


def serve_parser(service: str) -> argparse.ArgumentParser:
    """A fresh `inloop SERVICE serve` parser, exactly as the CLI builds it."""
    import importlib

    root = argparse.ArgumentParser(prog="inloop")
    sub = root.add_subparsers()
    importlib.import_module(SERVE_COMMANDS[service]).register(sub)
    service_parser = sub.choices[service]
    for action in service_parser._actions:
        if isinstance(action, argparse._SubParsersAction) and "serve" in action.choices:
            return action.choices["serve"]
    raise LookupError(f"{SERVE_COMMANDS[service]} registers no 'serve' command")


# ---- typing one value ----------------------------------------------------------------------
def convert(action: argparse.Action, raw: Any, name: str, where: str) -> Any:
    """Type `raw` (env text or a TOML value) as the option would; errors name the source."""
    def fail(why: str) -> ConfigError:
        return ConfigError(f"{name}={raw!r} ({where}): {why}")

    if isinstance(action, _BOOL_ACTIONS):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
            return raw.strip().lower() in _TRUE
        raise fail("not a boolean (true/false, 1/0, yes/no, on/off)")
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list):
            raise fail("not a list")
        return [_convert_one(action, item, fail) for item in items]
    return _convert_one(action, raw, fail)


def _convert_one(action: argparse.Action, raw: Any, fail) -> Any:
    type_fn = action.type or str
    if isinstance(raw, str):
        try:
            value = type_fn(raw.strip()) if type_fn in (int, float) else type_fn(raw)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise fail(_type_words(type_fn) if type_fn in (int, float) else str(exc)) from None
    elif type_fn is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif type_fn is int and isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise fail(_type_words(type_fn))
    if action.choices is not None and value not in action.choices:
        raise fail(f"not one of {', '.join(map(str, action.choices))}")
    return value


def _type_words(type_fn) -> str:
    return {int: "not an int", float: "not a float", str: "not a string"}.get(
        type_fn, f"not a valid {getattr(type_fn, '__name__', 'value')}")
