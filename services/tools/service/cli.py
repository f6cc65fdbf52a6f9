"""`inloop tools serve`: the tools service (search, extract_receipt, summarize, calculator, kv).

    inloop tools serve --port 50061
    inloop tools serve --port 50061 --fault-abort "every=2;status=UNAVAILABLE" --fault-delay "every=3;ms=900"
    inloop tools serve --fault-config faults.json     # {"key": ..., "abort": {...}, "delay": {...}}

Every flag can also be given as env INLOOP_<FLAG> or in a TOML file (--config) under
[tools] or [common] (services/common/config.py); --tls-*/--token-file secure it
(services/common/security.py).

Fault flags set the service default; callers override it per request with the
x-inloop-fault-* headers (services/contract/faults.py, services/tools/README.md).
Also runnable without the `inloop` entry point: `python -m inloop.services.cli tools serve`.
Heavy imports happen inside the handler, so `inloop --help` stays fast.
"""
from __future__ import annotations

import argparse
import sys

DEFAULT_PORT = 50061


def _default_faults(args: argparse.Namespace):
    """The service-default FaultSpec: a JSON file, then the flags on top of it."""
    from inloop.services.contract.faults import FaultSpec, parse_abort, parse_delay

    spec = FaultSpec()
    if args.fault_config:
        with open(args.fault_config, encoding="utf-8") as f:
            spec = FaultSpec.from_json(f.read())
    return FaultSpec(
        abort=parse_abort(args.fault_abort, "--fault-abort") if args.fault_abort is not None else spec.abort,
        delay=parse_delay(args.fault_delay, "--fault-delay") if args.fault_delay is not None else spec.delay,
        key=args.fault_key if args.fault_key is not None else spec.key)


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from inloop.services.common.logging import get_logger
    from inloop.services.common.serve_setup import prepare_service, start_metrics
    from inloop.services.contract.errors import FaultSpecError
    from inloop.services.tools.service.server import serve
    from inloop.services.tools.state import DEFAULT_CORPUS, Limits, open_store

    security = prepare_service(args, "tools")
    log = get_logger("services.tools.cli")
    try:
        faults = _default_faults(args)
    except (FaultSpecError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.max_concurrency < 1:
        print("error: --max-concurrency must be >= 1", file=sys.stderr)
        return 2
    if args.max_sessions < 1:
        print("error: --max-sessions must be >= 1", file=sys.stderr)
        return 2
    try:  # open the store first: an unreachable Redis or unwritable file fails the start, not a call
        state = open_store(args.state_db, args.state_redis, args.corpus or DEFAULT_CORPUS,
                           Limits(max_sessions=args.max_sessions))
    except Exception as exc:  # sqlite3 / redis errors, a directory we may not create
        where = f"--state-redis {args.state_redis}" if args.state_redis else f"--state-db {args.state_db or 'default'}"
        log.error("state_failed", error=str(exc), where=where)
        print(f"error: cannot open the kv state ({where}): {exc}", file=sys.stderr)
        return 1
    log.info("state_opened", state=state.describe(), **state.stats())
    try:  # index before binding: a broken corpus fails the start, not the first search
        docs = state.load_corpus()
    except ValueError as exc:
        log.error("corpus_failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        state.close()
        return 1
    log.info("corpus_loaded", path=str(state.corpus_path), docs=docs)
    start_metrics(args)
    try:
        asyncio.run(serve(state, host=args.host, port=args.port, default_faults=faults,
                          max_concurrency=args.max_concurrency, grace_s=args.grace_s,
                          security=security))
    except OSError as exc:  # the port is taken or not ours
        log.error("bind_failed", error=str(exc))
        return 1
    finally:
        state.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from inloop.services.common.config import add_serve_command
    add_serve_command(subparsers, "tools", help="the tools service (search, receipts, kv, ...)",
                      serve_help="serve the tools over gRPC (inloop.v1.Tools, health, reflection)",
                      summary="Serve the tools over gRPC.", command=cmd_serve)
