"""What the client commands (`inloop task run`, `inloop generate`, `inloop health`) share: where
they connect by default, their one --max-tokens default, and the one line they print when a
call fails for a reason the user can fix (nothing listening, the wrong service, no TLS).

    target = route_target(args.route, args.target)     # follows the route; env, then the default port
    except grpc.RpcError as exc:
        print(rpc_failure_line(exc, target, "controller"), file=sys.stderr)

Env: INLOOP_RUNTIME (the runtime's host:port, the same variable the controller's --runtime
reads), INLOOP_CONTROLLER (the controller's). INLOOP_RUNTIME_TARGET is the old name of
INLOOP_RUNTIME: still read, with a warning.
"""
from __future__ import annotations

import argparse
import os
import sys

from inloop.services.common.serve_settings import PORTS

CLIENT_MAX_TOKENS = 128  # every client command's --max-tokens default (the loadgen's is per step: 64)
RUNTIME_ENV, CONTROLLER_ENV, TOOLS_ENV = "INLOOP_RUNTIME", "INLOOP_CONTROLLER", "INLOOP_TOOLS"
DEPRECATED_RUNTIME_ENV = "INLOOP_RUNTIME_TARGET"
ENV = {"runtime": RUNTIME_ENV, "controller": CONTROLLER_ENV, "tools": TOOLS_ENV}
ROUTE_SERVICE = {"internal": "runtime", "external": "controller"}  # who runs the loop on each route


def default_address(service: str) -> str:
    return f"127.0.0.1:{PORTS[service][0]}"


def service_target(service: str, given: str | None = None) -> str:
    """`given` (a flag), else $INLOOP_<SERVICE> (for the runtime also the deprecated
    $INLOOP_RUNTIME_TARGET, with a warning), else 127.0.0.1:<the service's default port>."""
    if given:
        return given
    value = os.environ.get(ENV[service], "")
    if not value and service == "runtime" and os.environ.get(DEPRECATED_RUNTIME_ENV):
        value = os.environ[DEPRECATED_RUNTIME_ENV]
        print(f"warning: {DEPRECATED_RUNTIME_ENV} is deprecated; set {RUNTIME_ENV} instead (the name "
              f"`inloop controller serve --runtime` reads too)", file=sys.stderr)
    return value or default_address(service)


def route_target(route: str, given: str | None = None) -> str:
    """The address `inloop task run --route ROUTE` sends to: the runtime (internal) or the
    controller (external)."""
    return service_target(ROUTE_SERVICE[route], given)


def target_help(services: str, env: str, default: str) -> str:
    return f"{services} host:port (default: ${env}, else {default})"


def has_default(action: argparse.Action) -> bool:
    """A default worth showing: not None, not an off switch, not an empty string (0 is one)."""
    default = action.default
    return not (default is None or default is False or default == "" or default is argparse.SUPPRESS)


class ShownDefaults(argparse.HelpFormatter):
    """--help shows each option's default, unless the help says it already or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower() or not has_default(action):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def add_max_tokens(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=int, default=CLIENT_MAX_TOKENS,
                        help="most tokens to generate per model step (default %(default)s)")


def start_hint(service: str) -> str:
    flag = "--target" if service != "tools" else "the target"
    return (f"start it (`inloop {service} serve`), or point {flag} (or ${ENV[service]}) at the host:port "
            f"where it runs")


def rpc_failure_line(exc, target: str, service: str) -> str:
    """One line for a failed call: what happened and what to do, where we can tell; else the
    status and its details."""
    import grpc

    code, details = exc.code(), exc.details() or ""
    low = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and ("connection refused" in low or "failed to connect" in low
                                                or "dns resolution failed" in low or "name resolution" in low):
        why = "connection refused" if "refused" in low else "cannot connect"
        if "ssl" in low or "handshake" in low or "tls" in low:
            return (f"error: TLS handshake with {target} failed ({details[-160:]}); check --tls-ca/--tls-cert/"
                    f"--tls-key against the service's certificates (`inloop certs dev`)")
        return f"error: no inloop {service} answers at {target} ({why}); {start_hint(service)}"
    if code == grpc.StatusCode.UNAVAILABLE and ("ssl" in low or "handshake" in low or "tls" in low):
        return (f"error: TLS with {target} failed ({details[-160:]}); a service started with --tls-* files needs "
                f"--tls-ca (and --tls-cert/--tls-key), one without them needs none")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return (f"error: {target} is not a {service} (it does not serve this call: {details[:120]}); point "
                f"--target (or ${ENV[service]}) at the {service} (default {default_address(service)})")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"error: {target} refused the call: {details[:200]}; pass --token-file (or $INLOOP_TOKEN_FILE)"
    return f"error: {code.name}: {details}"
