"""`inloop config show`: every serve setting of a service, its effective value and its source.

    inloop config show --service runtime
    inloop config show --service controller --config /etc/inloop/inloop.toml --json
    inloop config show --service tools -- --port 0 --fault-abort "every=2;status=UNAVAILABLE"

It resolves exactly as `inloop SERVICE serve` would (the same settings, the same layers:
flag > env INLOOP_* > TOML [service] > TOML [common] > default), without starting anything,
so "why does the runtime listen on that port?" has a one-line answer.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from inloop.services.common.serve_settings import SERVICES


def effective_config(service: str, serve_args: list[str], config: str | None = None,
                     env=None) -> tuple[dict, dict]:
    """({key: value}, {key: source}) for `inloop SERVICE serve SERVE_ARGS` (raises ConfigError)."""
    from inloop.services.common.config import ConfigError, add_serve_settings, effective
    from inloop.services.common.serve_settings import serve_settings
    from inloop.services.common.settings import given_flags

    parser = argparse.ArgumentParser(prog=f"inloop {service} serve", add_help=False, exit_on_error=False)
    add_serve_settings(parser, service)
    argv = (["--config", config] if config else []) + list(serve_args)
    try:
        given, extras = parser.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise ConfigError(f"`{service} serve`: {exc}") from None
    if extras:
        raise ConfigError(f"unrecognized arguments for `{service} serve`: {' '.join(extras)}")
    resolved = effective(service, given_flags(given, serve_settings(service)), os.environ if env is None else env)
    return resolved.values, resolved.sources


def _cmd_show(args: argparse.Namespace) -> int:
    from inloop.services.common.config import ConfigError

    extra = list(args.serve_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    try:
        values, sources = effective_config(args.service, extra, args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: {"value": values[k], "source": sources[k]} for k in sorted(values)}, indent=2))
        return 0
    width = max(len(k) for k in values)
    rows = [(k, "" if values[k] is None else str(values[k]), sources[k]) for k in sorted(values)]
    vwidth = min(max(len(v) for _, v, _ in rows), 48)
    print(f"{'key':<{width}}  {'value':<{vwidth}}  source")
    for key, value, source in rows:
        print(f"{key:<{width}}  {value:<{vwidth}}  {source}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("config", help="show the effective configuration of a service")
    csub = p.add_subparsers(dest="config_command", metavar="CMD")
    s = csub.add_parser(
        "show", help="print every serve setting of a service with its value and where it came from",
        description="Resolves a service's serve options as `inloop SERVICE serve` would: command-line flag > "
                    "env INLOOP_<KEY> > TOML [SERVICE] table > TOML [common] table > default; the TOML file is "
                    "--config FILE or $INLOOP_CONFIG. Serve flags after `--` act as given on the command line.")
    s.add_argument("--service", required=True, choices=SERVICES)
    s.add_argument("--config", default=None, metavar="FILE", help="TOML file (default $INLOOP_CONFIG)")
    s.add_argument("--json", action="store_true", help="print {key: {value, source}} as JSON")
    s.add_argument("serve_args", nargs=argparse.REMAINDER, metavar="-- SERVE_FLAGS",
                   help="flags for `inloop SERVICE serve`, e.g. -- --port 0 --plaintext")
    s.set_defaults(func=_cmd_show)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
