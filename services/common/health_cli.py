"""`inloop health TARGET`: ask any inloop service's standard gRPC health service."""
from __future__ import annotations

import sys


def _cmd(args) -> int:
    from inloop.services.common.grpc_client import wait_for_serving
    from inloop.services.common.security import SecurityError, client_security_from_args
    try:
        security = client_security_from_args(args)  # TLS only: Health needs no token
    except SecurityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        wait_for_serving(args.target, timeout_s=args.wait, service=args.service, security=security)
    except TimeoutError as exc:
        print(f"NOT SERVING: {exc}{refused_hint(args.target, str(exc))}", file=sys.stderr)
        return 1
    print(f"{args.target}: SERVING")
    return 0


def refused_hint(target: str, message: str) -> str:
    """What to do when nothing listens at `target` (named after the service whose default port it is)."""
    from inloop.services.common.serve_settings import PORTS

    low = message.lower()
    if "connection refused" not in low and "failed to connect" not in low:
        return ""
    port = target.rsplit(":", 1)[-1]
    named = [s for s, (grpc_port, _) in PORTS.items() if str(grpc_port) == port]
    start = f"`inloop {named[0]} serve`" if named else "the service (`inloop runtime|tools|controller serve`)"
    return f"; nothing listens there: start {start}, or check the host:port"


def register(sub) -> None:
    from inloop.services.common.client_cli import ShownDefaults

    p = sub.add_parser("health", help="check (or wait for) a service's gRPC health status",
                       description="Exit 0 once TARGET's grpc.health.v1 service reports SERVING, 1 if it "
                                   "does not within --wait seconds.", formatter_class=ShownDefaults)
    p.add_argument("target", help="host:port of a runtime, controller or tools service")
    p.add_argument("--wait", type=float, default=1.0, help="seconds to keep trying (default 1)")
    p.add_argument("--service", default="", help="a service name; '' asks about the whole server")
    from inloop.services.common.config import add_client_security_options
    add_client_security_options(p)
    p.set_defaults(func=_cmd)
