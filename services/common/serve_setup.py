"""What every `inloop SERVICE serve` does before it binds, in one place.

    security = prepare_service(args, "tools")   # JSON logs, OTLP endpoint, tracing, mTLS/token
    ...
    start_metrics(args)                           # /metrics on --metrics-port (HTTPS with TLS files)

A security setting that cannot work ends the process here, with exit code 2 and a message
saying how to fix it, before any model loads or port binds.
"""
from __future__ import annotations

import argparse
import sys


def prepare_service(args: argparse.Namespace, service: str):
    """Configure logging and tracing for `service` and return its checked ServerSecurity."""
    from inloop.services.common.config import export_otlp_endpoint
    from inloop.services.common.logging import configure_logging
    from inloop.services.common.security import SecurityError, server_security_from_args
    from inloop.services.common.telemetry import setup_tracing

    configure_logging(service, args.log_level)
    export_otlp_endpoint(args)  # before setup_tracing, which reads it
    setup_tracing(f"inloop-{service}")
    try:
        return server_security_from_args(args)
    except SecurityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def start_metrics(args: argparse.Namespace) -> int | None:
    """The Prometheus endpoint of a serve command's --metrics-port, bound on its --host."""
    from inloop.services.common.metrics import metrics_tls, start_metrics_server

    return start_metrics_server(args.metrics_port, args.host, metrics_tls(args))
