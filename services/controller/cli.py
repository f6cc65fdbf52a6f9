"""`inloop controller serve`: the external route's orchestrator.

    inloop controller serve --runtime 10.0.0.5:50051 --tools 127.0.0.1:50061 --port 50071

Every flag can also be given as env INLOOP_<FLAG> or in a TOML file (--config) under
[controller] or [common] (services/common/config.py). With --tls-*/--token-file the
service requires mTLS and the token, and its own hops to the runtime and the tools service
use the same certificate, CA and token (services/common/security.py).
"""
from __future__ import annotations

import argparse
import asyncio


def cmd_serve(args: argparse.Namespace) -> int:
    from inloop.services.common.serve_setup import prepare_service

    # before anything connects: a wrong setting fails at once, with how to fix it
    security = prepare_service(args, "controller")
    return asyncio.run(_serve(args, security))


async def _serve(args: argparse.Namespace, security=None) -> int:
    from inloop.services.common.grpc_client import make_channel
    from inloop.services.common.grpc_server import create_server, serve_until_signal
    from inloop.services.common.logging import get_logger
    from inloop.services.common.metrics import RpcMetricsInterceptor
    from inloop.services.common.security import read_token
    from inloop.services.common.serve_setup import start_metrics
    from inloop.services.controller.server import SERVICE_NAME, ControllerServicer
    from inloop.v1 import controller_pb2_grpc, runtime_pb2_grpc
    from inloop.v1 import runtime_pb2 as pb

    log = get_logger("services.controller.cli")
    peer = security.client() if security is not None else None  # our cert, CA and token for the hops
    endpoint = args.model_endpoint or f"grpc://{args.runtime}"
    tools_channel = make_channel(args.tools, peer, aio=True)
    http_client, runtime_channel, model_hop = None, None, None
    if endpoint.startswith(("http://", "https://")):
        from inloop.services.controller.openai_hop import OpenAIModelHop, upstream_model

        http_client = _http_client(args)
        key = read_token(args.model_endpoint_key_file) if args.model_endpoint_key_file else None
        model_name = args.model_endpoint_model or await upstream_model(http_client, endpoint, key, log)
        model_hop = lambda policy: OpenAIModelHop(http_client, endpoint, model_name, policy, key)  # noqa: E731
    else:
        runtime_channel = make_channel(endpoint.removeprefix("grpc://"), peer, aio=True)
        model_name = "model"
        try:  # the model's name labels model steps; the runtime may still be starting
            info = await runtime_pb2_grpc.RuntimeStub(runtime_channel).GetModelInfo(pb.GetModelInfoRequest(),
                                                                                     timeout=2)
            model_name = info.name or model_name
        except Exception as exc:  # noqa: BLE001 - informational only
            log.info("runtime_info_unavailable", runtime=endpoint, detail=str(exc)[:200])
    handle = create_server([SERVICE_NAME], host=args.host, port=args.port, interceptors=[RpcMetricsInterceptor()],
                           security=security)
    controller_pb2_grpc.add_ControllerServicer_to_server(
        ControllerServicer(runtime_channel, tools_channel, model_name, args.max_concurrency, model_hop), handle.server)
    await handle.start()
    await handle.set_serving()
    log.info("serving", address=handle.address, model_endpoint=endpoint, model=model_name, tools=args.tools)
    start_metrics(args)
    print(f"inloop controller listening on {handle.address}", flush=True)
    await serve_until_signal(handle, args.grace_s)
    if runtime_channel is not None:
        await runtime_channel.close()
    if http_client is not None:
        await http_client.aclose()
    await tools_channel.close()
    log.info("stopped")
    return 0


def _http_client(args: argparse.Namespace):
    """For an https upstream: the service's CA when given (else the system's), and its own
    certificate as a client certificate (mTLS to our runtime's HTTPS front)."""
    import httpx

    verify, cert = True, None
    if args.tls_ca:
        import ssl

        verify = ssl.create_default_context(cafile=args.tls_ca)
        if args.tls_cert and args.tls_key:
            verify.load_cert_chain(args.tls_cert, args.tls_key)
    return httpx.AsyncClient(verify=verify, cert=cert)


def register(sub) -> None:
    from inloop.services.common.config import add_serve_command
    add_serve_command(sub, "controller", help="the controller service (the external route)",
                      serve_help="serve inloop.v1.Controller (RunTask over the network)",
                      summary="Runs agent tasks by calling the runtime (Generate) and the tools service (Call) "
                              "over gRPC with deadlines, retries and faults.", command=cmd_serve, metavar="CMD")
