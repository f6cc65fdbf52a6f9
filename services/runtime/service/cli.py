"""`inloop runtime serve` (the gRPC runtime) and `inloop generate` (a streaming client).

    inloop runtime serve --model default --backend auto --port 50051
    inloop generate "What is 17 * 23?" --max-tokens 64 --uncertainty

Every serve flag can also be given as env INLOOP_<FLAG> or in a TOML file (--config) under
[runtime] or [common] (services/common/config.py); --tls-*/--token-file secure the service
and `generate` alike (services/common/security.py).
Heavy imports (grpc, numpy, the engine) happen inside the handlers, so `inloop --help`
stays fast.
"""
from __future__ import annotations

import argparse
import sys

DEFAULT_PORT = 50051


# ---- serve ------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from inloop.services.common.serve_setup import prepare_service

    # before the model loads: a wrong setting fails in a second, not after the load
    security = prepare_service(args, "runtime")
    return asyncio.run(_serve(args, security))


def batch_config(args: argparse.Namespace):
    """The batching core's sizes from the serve flags (a bad one fails before the model loads)."""
    from inloop.services.common.serve_settings import parse_size
    from inloop.services.runtime.engine.engine import BatchConfig

    prefix = args.enable_prefix_caching if args.prefix_cache is None else args.prefix_cache
    return BatchConfig(kv_cache_memory=parse_size(args.kv_cache_memory), block_size=args.block_size,
                       max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                       enable_prefix_caching=bool(prefix), batching=args.batching)


def _load_engine(model: str, backend: str, batch, max_model_len: int, kv_session_ttl_s: float = 600.0):
    """Runs on the scheduler's worker thread: resolving the model may convert a GGUF or download
    from the Hub."""
    from inloop.services.common import metrics
    from inloop.services.common.logging import get_logger
    from inloop.services.runtime.engine.engine import Engine
    from inloop.services.runtime.model.resolve import model_name, resolve_model

    model_dir = resolve_model(model)
    engine = Engine.load(model_dir, backend=backend, max_context=max_model_len,
                         kv_session_ttl_s=kv_session_ttl_s, batch=batch)
    engine.info["name"] = model_name(model, model_dir)  # a Hub id, not its snapshot's commit hash
    if engine.sessions is not None:  # a runner without the batching core keeps per-task caches
        metrics.track_state("runtime", "kv_sessions", lambda: len(engine.sessions))
        metrics.track_state("runtime", "kv_positions", engine.sessions.held_positions)
    # Before health says SERVING: the first real request should not pay for graph capture.
    get_logger(__name__).info("warmed_up", seconds=round(engine.warm_up(), 3), step_runner=engine.runner.name)
    engine.prefix_cache = batch.enable_prefix_caching
    return engine


async def _serve(args: argparse.Namespace, security=None) -> int:
    import asyncio

    from inloop.services.common.grpc_server import create_server, serve_until_signal
    from inloop.services.common.logging import get_logger
    from inloop.services.common.metrics import RpcMetricsInterceptor
    from inloop.services.common.serve_setup import start_metrics
    from inloop.services.runtime.service.scheduler import Scheduler
    from inloop.services.runtime.service.server import SERVICE_NAME, RuntimeServicer
    from inloop.v1 import runtime_pb2_grpc

    log = get_logger("services.runtime.cli")
    batch = batch_config(args)
    tool_state = _open_tool_state(args, log)
    if tool_state is None:
        return 1
    scheduler = Scheduler(lambda: _load_engine(args.model, args.backend, batch, args.max_model_len,
                                               args.kv_session_ttl_s), args.max_queue).start()
    handle = create_server([SERVICE_NAME], host=args.host, port=args.port, interceptors=[RpcMetricsInterceptor()],
                           security=security)
    from inloop.services.common.serve_settings import RUNTIME
    settings = {s.key: str(getattr(args, s.key)) for s in RUNTIME if hasattr(args, s.key)}
    servicer = RuntimeServicer(scheduler, tool_state=tool_state, settings=settings)
    runtime_pb2_grpc.add_RuntimeServicer_to_server(servicer, handle.server)
    # Listen while the model loads: health answers NOT_SERVING, so probes and
    # wait_for_serving see "starting" rather than "connection refused".
    await handle.start()
    log.info("listening", address=handle.address, model=args.model, max_queue=args.max_queue)
    start_metrics(args)
    print(f"inloop runtime listening on {handle.address}", flush=True)
    try:
        http = await _start_http(args, scheduler, security, log, handle.drain)
    except OSError as exc:
        log.error("http_bind_failed", host=args.host, port=args.http_port, error=str(exc))
        print(f"error: the HTTP API cannot listen on {args.host}:{args.http_port} ({exc}); choose another "
              "--http-port, 0 for a free one, or -1 for none", file=sys.stderr)
        await handle.server.stop(0)
        scheduler.close()
        tool_state.close()
        return 1

    from inloop.services.runtime.service.http_server import begin_http_drain
    # On SIGTERM both fronts drain at once, on one clock (--grace-s), not one after the other.
    serving = asyncio.ensure_future(serve_until_signal(
        handle, args.grace_s, on_drain=[lambda: begin_http_drain(http)] if http is not None else []))
    ready = asyncio.wrap_future(scheduler.ready)
    try:
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and ready.exception() is not None:
            exc = ready.exception()
            log.error("model_load_failed", model=args.model, error=f"{type(exc).__name__}: {exc}")
            await handle.server.stop(0)
            await serving
            return 1
        if ready.done():
            info = ready.result().info
            log.info("serving", address=handle.address, backend=info.get("backend"),
                     requested_backend=args.backend, model=info.get("name"), arch=info.get("arch"),
                     dtype=info.get("dtype"), context_length=info.get("context_length"))
            await handle.set_serving()
        await serving  # returns after SIGTERM/SIGINT and the graceful stop
    finally:
        ready.cancel()
        if http is not None:
            from inloop.services.runtime.service.http_server import stop_http
            await stop_http(http)
        # off the event loop: close() joins the worker (up to 10 s) while the last streams end
        await asyncio.to_thread(scheduler.close)
        tool_state.close()
    log.info("stopped")
    return 0


def _open_tool_state(args: argparse.Namespace, log):
    """The internal route's kv store (the tools service's kinds: SQLite by default, Redis, memory),
    opened before the model loads so a bad path or an unreachable Redis fails the start at once.
    None after printing why it cannot open."""
    from inloop.services.tools.state import open_store

    try:
        state = open_store(args.tool_state_db, args.tool_state_redis, service="runtime")
    except Exception as exc:  # sqlite3 / redis errors, a directory we may not create
        where = (f"--tool-state-redis {args.tool_state_redis}" if args.tool_state_redis else
                 f"--tool-state-db {args.tool_state_db or 'default'}")
        log.error("tool_state_failed", error=str(exc), where=where)
        print(f"error: cannot open the internal route's kv state ({where}): {exc}", file=sys.stderr)
        return None
    log.info("tool_state_opened", state=state.describe(), **state.stats())
    return state


async def _start_http(args: argparse.Namespace, scheduler, security, log, drain=None):
    """The OpenAI-compatible API beside gRPC (same host rule, the same TLS files, the same token)."""
    if args.http_port < 0:
        return None
    from inloop.services.common.metrics import metrics_tls
    from inloop.services.runtime.service.http_server import make_app, start_http

    app = make_app(scheduler, args.served_model_name, security.token if security is not None else None, drain)
    server, port = await start_http(app, args.host, args.http_port, metrics_tls(args), args.grace_s)
    scheme = "https" if metrics_tls(args) else "http"
    log.info("http_listening", address=f"{args.host}:{port}", port=port, scheme=scheme)
    print(f"inloop runtime http listening on {scheme}://{args.host}:{port}/v1", flush=True)
    return server


# ---- generate ---------------------------------------------------------------------
def _build_request(args: argparse.Namespace):
    from inloop.v1 import runtime_pb2 as pb

    sampling = pb.SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                                 top_k=args.top_k, stop=args.stop or [],
                                 return_uncertainty=args.uncertainty)
    if args.top_p is not None:
        sampling.top_p = args.top_p
    if args.seed is not None:
        sampling.seed = args.seed
    req = pb.GenerateRequest(sampling=sampling)
    if args.raw:
        req.prompt = args.prompt
    else:
        if args.system:
            req.messages.add(role="system", content=args.system)
        req.messages.add(role="user", content=args.prompt)
    return req


def _print_summary(final) -> None:
    u, t = final.usage, final.timings
    tps = u.completion_tokens / (t.decode_ms / 1e3) if t.decode_ms > 0 else 0.0
    print(f"[{final.model}] finish={final.finish_reason} prompt_tokens={u.prompt_tokens} "
          f"completion_tokens={u.completion_tokens} queue={t.queue_ms:.1f}ms ttft={t.ttft_ms:.1f}ms "
          f"prefill={t.prefill_ms:.1f}ms decode={t.decode_ms:.1f}ms ({tps:.1f} tok/s)", file=sys.stderr)
    if final.HasField("uncertainty"):
        s = final.uncertainty
        print(f"uncertainty: mean_logprob={s.mean_logprob:.3f} min_logprob={s.min_logprob:.3f} "
              f"mean_entropy={s.mean_entropy:.3f} max_entropy={s.max_entropy:.3f} "
              f"mean_margin={s.mean_margin:.3f} min_margin={s.min_margin:.3f}", file=sys.stderr)


def cmd_generate(args: argparse.Namespace) -> int:
    import grpc

    from inloop.services.common.client_cli import rpc_failure_line, service_target
    from inloop.services.common.grpc_client import make_channel
    from inloop.services.common.security import SecurityError, client_security_from_args
    from inloop.v1 import runtime_pb2_grpc

    if args.raw and args.system:
        print("error: --system needs chat mode; drop --raw", file=sys.stderr)
        return 2
    try:
        security = client_security_from_args(args)
    except SecurityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    final = None
    target = service_target("runtime", args.target)
    with make_channel(target, security) as channel:
        call = runtime_pb2_grpc.RuntimeStub(channel).GenerateStream(_build_request(args), timeout=args.timeout)
        try:
            for chunk in call:
                if chunk.HasField("token"):
                    sys.stdout.write(chunk.token.text)
                    sys.stdout.flush()
                else:
                    final = chunk.result
        except grpc.RpcError as exc:
            print("\n" + rpc_failure_line(exc, target, "runtime"), file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            call.cancel()  # the server stops generating at its next token
            print("\ncancelled", file=sys.stderr)
            return 130
    print()
    if final is not None:
        _print_summary(final)
    return 0


# ---- argparse ---------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    from inloop.services.common.config import add_serve_command
    add_serve_command(subparsers, "runtime", help="the runtime service (owns the model and the GPU)",
                      serve_help="serve a model over gRPC (inloop.v1.Runtime, health, reflection)",
                      summary="Serve a model over gRPC.", command=cmd_serve)

    from inloop.services.common.client_cli import ShownDefaults, add_max_tokens, default_address

    gen = subparsers.add_parser("generate", help="stream a completion from a running runtime",
                                description="Stream one completion from a runtime (GenerateStream): the text on "
                                            "stdout, a timing summary on stderr.", formatter_class=ShownDefaults)
    gen.add_argument("prompt", help="the user message (or the raw prompt with --raw)")
    gen.add_argument("--target", default=None,
                     help=f"runtime host:port (default: $INLOOP_RUNTIME, else {default_address('runtime')}; "
                          f"$INLOOP_RUNTIME_TARGET is its deprecated old name)")
    add_max_tokens(gen)
    gen.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 = greedy")
    gen.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens; 0 = off")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling, in (0, 1]; off by default")
    gen.add_argument("--seed", type=int, default=None, help="sampling seed (default: none, so not reproducible)")
    gen.add_argument("--stop", action="append", help="a stop string (repeatable)")
    gen.add_argument("--system", default=None, help="a system message before the prompt")
    gen.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    gen.add_argument("--uncertainty", action="store_true", help="print the uncertainty summary")
    gen.add_argument("--timeout", type=float, default=120.0, help="deadline of the whole call, seconds")
    from inloop.services.common.config import add_client_security_options
    add_client_security_options(gen)
    gen.set_defaults(func=cmd_generate)
