"""`inloop controller serve`: the external route's orchestrator."""
from __future__ import annotations

import argparse
import asyncio


async def _serve(args: argparse.Namespace) -> int:
    from inloop.v1 import controller_pb2_grpc
    from inloop.v1 import runtime_pb2 as pb
    from inloop.v1 import runtime_pb2_grpc
    from services.common.grpc_client import aio_insecure_channel
    from services.common.grpc_server import create_server, serve_until_signal
    from services.common.logging import configure_logging, get_logger
    from services.controller.server import SERVICE_NAME, ControllerServicer

    configure_logging("controller", args.log_level)
    from services.common.telemetry import setup_tracing
    setup_tracing("inloop-controller")
    log = get_logger("services.controller.cli")
    runtime_channel = aio_insecure_channel(args.runtime)
    tools_channel = aio_insecure_channel(args.tools)
    model_name = "model"
    try:  # the model's name labels model steps; the runtime may still be starting
        info = await runtime_pb2_grpc.RuntimeStub(runtime_channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=2)
        model_name = info.name or model_name
    except Exception as exc:  # noqa: BLE001 - informational only
        log.info("runtime_info_unavailable", runtime=args.runtime, detail=str(exc)[:200])
    handle = create_server([SERVICE_NAME], host=args.host, port=args.port)
    controller_pb2_grpc.add_ControllerServicer_to_server(
        ControllerServicer(runtime_channel, tools_channel, model_name, args.max_concurrency), handle.server)
    await handle.start()
    await handle.set_serving()
    log.info("serving", address=handle.address, runtime=args.runtime, tools=args.tools)
    print(f"inloop controller listening on {handle.address}", flush=True)
    await serve_until_signal(handle, args.grace_s)
    await runtime_channel.close()
    await tools_channel.close()
    log.info("stopped")
    return 0


def register(sub) -> None:
    p = sub.add_parser("controller", help="the controller service (the external route)")
    csub = p.add_subparsers(dest="controller_command", metavar="CMD")
    s = csub.add_parser("serve", help="serve inloop.v1.Controller (RunTask over the network)",
                        description="Runs agent tasks by calling the runtime (Generate) and the tools "
                                    "service (Call) over gRPC with deadlines, retries and faults.")
    s.add_argument("--runtime", default="127.0.0.1:50051", help="the runtime's host:port")
    s.add_argument("--tools", default="127.0.0.1:50061", help="the tools service's host:port")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for other hosts)")
    s.add_argument("--port", type=int, default=50071, help="0 picks a free port (printed)")
    s.add_argument("--max-concurrency", type=int, default=64, help="tasks at once; more get RESOURCE_EXHAUSTED")
    s.add_argument("--grace-s", type=float, default=5.0, help="seconds running tasks get on SIGTERM")
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    s.set_defaults(func=lambda a: asyncio.run(_serve(a)))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
