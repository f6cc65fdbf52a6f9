"""Layered configuration for every `inloop SERVICE serve`: flag > env > TOML > default.

Every serve option `--foo-bar` is a config key `foo_bar` that can come from, in order:

    1. the command line            --max-queue 32
    2. the environment             INLOOP_MAX_QUEUE=32
    3. the TOML file's service table   [runtime] max_queue = 32
    4. the TOML file's common table    [common]  max_queue = 32
    5. the option's default

The file is `--config FILE` or `$INLOOP_CONFIG`. Each option is declared once, with its type
and default, in serve_settings.py; the mechanism (typing, the TOML checks, the help line that
names the env form and the default) is settings.py, shared with the lab and the profiles. A
bad value names where it came from (`INLOOP_PORT='abc' (env): not an int`); unknown tables or
keys in the file are errors that name them, so a typo never silently falls back to a default.

    add_serve_command(subparsers, "runtime", ..., command=cmd_serve)   # the flags, then layered()

`layered` resolves the remaining layers just before the command runs and records
`args.config_sources` ({key: where it came from}), which `inloop config show` prints.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping

from inloop.services.common.serve_settings import serve_scope, serve_settings
from inloop.services.common.settings import ConfigError, Resolved, add_arguments, given_flags, resolve

__all__ = ["ConfigError", "Resolved", "add_client_security_options", "add_serve_command", "add_serve_settings",
           "effective",
           "export_otlp_endpoint", "layered"]


# ---- a service's serve command -------------------------------------------------------------
def add_serve_command(subparsers, service: str, help: str, serve_help: str, summary: str,
                      command: Callable, metavar: str = "SUBCOMMAND") -> argparse.ArgumentParser:
    """`inloop SERVICE` (alone: its help) and `inloop SERVICE serve` with every serve setting,
    layered before `command(args)` runs. Returns the serve parser."""
    parent = subparsers.add_parser(service, help=help)
    parent.set_defaults(func=lambda _args: (parent.print_help(), 2)[1])
    sub = parent.add_subparsers(dest=f"{service}_command", metavar=metavar)
    serve = sub.add_parser("serve", help=serve_help,
                           description=f"{summary} Every --foo-bar flag can also be set as env INLOOP_FOO_BAR or "
                                       f"as foo_bar in the --config TOML file's [{service}] or [common] table "
                                       f"(flag > env > [{service}] > [common] > default).")
    add_serve_settings(serve, service)
    serve.set_defaults(func=layered(service, serve, command))
    return serve


def add_serve_settings(parser: argparse.ArgumentParser, service: str) -> None:
    """Every serve flag of `service`: host/port/logging/shutdown/TLS/token/tracing/metrics, then its own."""
    add_arguments(parser, serve_settings(service), serve_scope(service))


def effective(service: str, given: Mapping, env: Mapping[str, str] | None = None) -> Resolved:
    """Every serve setting of `service` from the given flags ({key: value}) and the layers below."""
    return resolve(serve_settings(service), given, serve_scope(service), os.environ if env is None else env)


def layered(service: str, parser: argparse.ArgumentParser, command: Callable) -> Callable:
    """`command(args)` with every setting filled in; a bad value or file is a usage error (exit 2)."""
    def run(args: argparse.Namespace):
        try:
            resolved = effective(service, given_flags(args, serve_settings(service)))
        except ConfigError as exc:
            parser.error(str(exc))  # usage + message, exit 2
        for key, value in resolved.values.items():
            setattr(args, key, value)
        args.config_sources = dict(resolved.sources)
        return command(args)
    return run


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
