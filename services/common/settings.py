"""Settings declared once, layered one way: flag > env > TOML table(s) > default.

Every configurable value of a service (`inloop SERVICE serve`), of the lab (`inloop lab`) and
of a fault profile (loadgen/profiles/*.toml) is one `Setting`: its key, type, default and
help. From that one declaration come its command-line flag (`--foo-bar`), its environment
variable (`INLOOP_FOO_BAR`, or the scope's own prefix), the TOML key that sets it (`foo_bar`),
how a value from any of them is typed, and the `--help` line that names all of them.

    SCOPE = Scope("runtime", tables=("runtime", "common"), known=...)   # where values come from
    add_arguments(parser, SETTINGS, SCOPE)        # flags; an absent flag leaves no attribute
    resolved = resolve(SETTINGS, given, SCOPE)    # values + where each came from

A bad value names where it came from (`INLOOP_PORT='abc' (env): not an int`), and a TOML file
with an unknown table or key is an error naming it, so a typo never falls back to a default.
"""
from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

SOURCE_FLAG = "flag"
SOURCE_DEFAULT = "default"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A value, file or key that cannot be used; the message names its source."""


@dataclass(frozen=True)
class Setting:
    key: str                          # the TOML key; the flag is --key-with-dashes unless `flag` says
    default: Any = None
    help: str = ""
    type: type = str                  # str | int | float | bool | list (a list of `item`)
    item: type = str
    choices: tuple | None = None
    metavar: str | None = None
    group: str = ""                   # a titled argparse group on --help ("" = the command's own options)
    table: str = ""                   # the TOML table, where a scope splits its keys across tables
    env_also: tuple[str, ...] = ()    # standard variables read after our own (OTEL_EXPORTER_OTLP_ENDPOINT)
    negatable: bool = False           # a bool as --x/--no-x rather than a plain --x switch
    flag: str = ""                    # the flag, where it is not --key-with-dashes (--profile for profiles)

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")


@dataclass(frozen=True)
class Scope:
    """Where one command's values come from.

    tables: the TOML tables read for a key, highest first (a service: its own, then
    [common]); a setting with `table` set is read from that table alone. `known`: every
    table the file may have, with the keys it may hold. `describe_defaults`: --help lines
    end with "[env NAME; default: VALUE]"."""

    name: str
    tables: tuple[str, ...] = ()
    known: Mapping[str, frozenset[str]] = field(default_factory=dict)
    env_prefix: str = "INLOOP_"
    describe_defaults: bool = True

    def env_name(self, key: str) -> str:
        return self.env_prefix + key.upper()


@dataclass(frozen=True)
class Resolved:
    """Every key's effective value and where it came from ("flag", "env INLOOP_PORT", ...)."""

    values: dict[str, Any]
    sources: dict[str, str]


# ---- the command line -------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, settings: list[Setting], scope: Scope) -> None:
    """One flag per setting, in order, grouped as declared. Flags default to absent
    (argparse.SUPPRESS), so `resolve` can tell a given flag from a default."""
    groups: dict[str, Any] = {}
    for s in settings:
        target = parser
        if s.group:
            if s.group not in groups:
                title, _, description = s.group.partition("\n")
                groups[s.group] = parser.add_argument_group(title, description or None)
            target = groups[s.group]
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _help(s, scope), "dest": s.key}
        if s.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if s.negatable else "store_true"
        else:
            kwargs["type"] = s.item if s.type is list else s.type
            if s.type is list:
                kwargs["action"] = "append"
            if s.choices is not None:
                kwargs["choices"] = s.choices
            if s.metavar is not None:
                kwargs["metavar"] = s.metavar
        target.add_argument(s.flag_name, **kwargs)


def _help(s: Setting, scope: Scope) -> str:
    if not scope.describe_defaults:
        return s.help
    default = ",".join(map(str, s.default)) if isinstance(s.default, (list, tuple)) else s.default
    shown = "unset" if default in (None, "") else str(default).replace("%", "%%")
    return f"{s.help} [env {scope.env_name(s.key)}; default: {shown}]".lstrip()


def given_flags(args: argparse.Namespace, settings: list[Setting]) -> dict[str, Any]:
    """The settings the command line gave (absent flags left no attribute)."""
    return {s.key: getattr(args, s.key) for s in settings if hasattr(args, s.key)}


# ---- layering ---------------------------------------------------------------------------------
def resolve(settings: list[Setting], given: Mapping[str, Any], scope: Scope,
            env: Mapping[str, str] | None = None, config: str | None = None,
            config_source: str = SOURCE_FLAG) -> Resolved:
    """Fill every setting the command line did not give: env, then the TOML file's tables,
    then the default. The file is `config` if given, else the `config` setting's value
    (flag, then env) where the scope has one."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    by_key = {s.key: s for s in settings}
    if config is None and "config" in by_key:
        if "config" in given:
            config, config_source = given["config"], SOURCE_FLAG
        elif env.get(scope.env_name("config")):
            config, config_source = env[scope.env_name("config")], f"env {scope.env_name('config')}"
        else:
            config_source = SOURCE_DEFAULT
        values["config"], sources["config"] = config, config_source
    data = load_toml(config, config_source, scope) if config else {}

    for s in settings:
        if s.key in values:
            continue
        if s.key in given:
            values[s.key], sources[s.key] = given[s.key], SOURCE_FLAG
            continue
        for var in (scope.env_name(s.key), *s.env_also):
            if env.get(var, "") != "":
                values[s.key], sources[s.key] = convert(s, env[var], var, "env"), f"env {var}"
                break
        else:
            for table in ((s.table,) if s.table else scope.tables):
                section = data if table == "" else data.get(table, {})
                if s.key in section:
                    where = f"{config} [{table}]" if table else str(config)
                    values[s.key], sources[s.key] = convert(s, section[s.key], s.key, where), where
                    break
            else:
                values[s.key], sources[s.key] = s.default, SOURCE_DEFAULT
    return Resolved(values, sources)


def load_toml(path: str, origin: str, scope: Scope) -> dict:
    """Read a TOML file; every table must be one the scope knows, every key one it holds
    (the table "" holds the file's top-level keys, where a scope has any)."""
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
    check_keys(data, path, scope)
    return data


def check_keys(data: dict, path: str, scope: Scope) -> None:
    tables = [t for t in scope.known if t]
    loose = [k for k, v in data.items() if not isinstance(v, dict) and k not in scope.known.get("", ())]
    if loose and "" in scope.known:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(loose)} (top-level keys are "
                          f"{', '.join(sorted(scope.known['']))}; tables are {', '.join(f'[{t}]' for t in tables)})")
    if loose:
        inside = " or ".join(f"[{t}]" for t in (scope.tables or tables)[::-1])
        raise ConfigError(f"{path}: key(s) {', '.join(loose)} outside a table; put them under {inside}")
    unknown_tables = sorted(k for k, v in data.items() if isinstance(v, dict) and k not in scope.known)
    if unknown_tables:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(f'[{t}]' for t in unknown_tables)}; "
                          f"tables are {', '.join(f'[{t}]' for t in tables)}")
    for table, keys in data.items():
        if not isinstance(keys, dict):
            continue
        unknown = sorted(set(keys) - scope.known[table])
        if unknown:
            hints = [f"{k} (did you mean {k.replace('-', '_')}?)" if k.replace("-", "_") in scope.known[table]
                     else k for k in unknown]
            raise ConfigError(f"{path} [{table}]: unknown key(s) {', '.join(hints)}")


# ---- typing one value -------------------------------------------------------------------------
def convert(s: Setting, raw: Any, name: str, where: str) -> Any:
    """Type `raw` (env text or a TOML value) as the setting says; errors name the source."""
    def fail(why: str) -> ConfigError:
        return ConfigError(f"{name}={raw!r} ({where}): {why}")

    if s.type is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
            return raw.strip().lower() in _TRUE
        raise fail("not a boolean (true/false, 1/0, yes/no, on/off)")
    if s.type is list:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list):
            raise fail("not a list")
        return [_one(s, s.item, item, fail) for item in items]
    return _one(s, s.type, raw, fail)


def _one(s: Setting, kind: Callable, raw: Any, fail) -> Any:
    if isinstance(raw, str):
        try:
            value = kind(raw.strip()) if kind in (int, float) else kind(raw)
        except (ValueError, TypeError) as exc:
            raise fail(_type_words(kind) if kind in (int, float) else str(exc)) from None
    elif kind is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise fail(_type_words(kind))
    if s.choices is not None and value not in s.choices:
        raise fail(f"not one of {', '.join(map(str, s.choices))}")
    return value


def _type_words(kind) -> str:
    return {int: "not an int", float: "not a float", str: "not a string"}.get(
        kind, f"not a valid {getattr(kind, '__name__', 'value')}")
