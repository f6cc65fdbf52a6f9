"""`inloop loadgen coldwarm`: how fast a fresh runtime answers, and how fast once warm.

    inloop loadgen coldwarm --model default --backend cuda --warm-requests 16 --out results/

It starts `inloop runtime serve` itself (a child process on a free loopback port) and
measures, in order:

1. start -> healthy: from the spawn until grpc.health.v1 answers SERVING (the model is
   loaded); health is polled every --health-poll-ms, which bounds the resolution;
2. the cold request: the first GenerateStream after that, its time to the first token
   chunk (cold TTFT) and to the complete response (cold full);
3. --warmup requests that are not counted, then --warm-requests timed ones (the same
   prompt, greedy): mean / p95 / p99 of the full response and mean TTFT;

then stops the runtime with SIGTERM and checks that it exits 0 (a graceful stop). All
requests run over one channel that is already connected when the cold request starts,
so the cold numbers are the runtime's, not the TCP handshake's.

It prints a table, and with --out DIR writes DIR/coldwarm-<timestamp>.json (schema
inloop.loadgen/v1, with the run's meta: commit, host, backend, model sha256, packages).
Exit status: 0, or 1 when the runtime failed to start, a request failed, or the runtime
did not exit 0 on SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from inloop.loadgen.stats import summarize_ms

DEFAULT_PROMPT = "What is a service mesh? Answer in two sentences."


class MeasureError(RuntimeError):
    """A request of the measurement failed (the run's numbers would be meaningless)."""


async def measure(launcher, prompt: str, max_tokens: int, warm_requests: int, warmup: int,
                  timeout_s: float, start_timeout_s: float, poll_s: float) -> tuple[dict, object]:
    """Time a started runtime (see the module docstring); returns (section, ModelInfo)."""
    from inloop.loadgen.stream_client import chat_request, model_info, stream_generate
    from inloop.services.common.grpc_client import aio_insecure_channel
    from inloop.v1 import runtime_pb2_grpc

    async with aio_insecure_channel(launcher.target) as channel:
        start_to_healthy_ms = await launcher.wait_healthy(channel, timeout_s=start_timeout_s, poll_s=poll_s)
        stub = runtime_pb2_grpc.RuntimeStub(channel)

        async def one(request_id: str):
            r = await stream_generate(stub, chat_request(prompt, max_tokens, request_id), timeout_s)
            if not r.success:
                raise MeasureError(f"request {request_id} failed: {r.error}")
            return r

        cold = await one("coldwarm-cold")
        for i in range(warmup):
            await one(f"coldwarm-warmup-{i}")
        warm = [await one(f"coldwarm-warm-{i}") for i in range(warm_requests)]
        info = await model_info(channel)
    full = summarize_ms([r.e2el_ms for r in warm])
    section = {
        "start_to_healthy_ms": start_to_healthy_ms,
        "cold_ttft_ms": cold.ttft_ms,
        "cold_e2e_ms": cold.e2el_ms,
        "warm": {"n": len(warm), "mean_ms": full["mean"], "p95_ms": full["p95"], "p99_ms": full["p99"],
                 "ttft_mean_ms": summarize_ms([r.ttft_ms for r in warm])["mean"]},
    }
    return section, info


def format_table(section: dict, warmup: int, backend: str, model: str) -> str:
    w = section["warm"]
    rows = [
        ("Model / backend:", f"{model} / {backend}"),
        ("Start -> healthy (ms):", f"{section['start_to_healthy_ms']:.2f}"),
        ("Cold TTFT (ms):", f"{section['cold_ttft_ms']:.2f}"),
        ("Cold full response (ms):", f"{section['cold_e2e_ms']:.2f}"),
        ("Start -> healthy + cold TTFT (ms):", f"{section['start_to_healthy_ms'] + section['cold_ttft_ms']:.2f}"),
        ("Start -> healthy + cold full (ms):", f"{section['start_to_healthy_ms'] + section['cold_e2e_ms']:.2f}"),
        ("Warm requests:", f"{w['n']} (after {warmup} warmup)"),
        ("Warm mean (ms):", f"{w['mean_ms']:.2f}"),
        ("Warm p95 (ms):", f"{w['p95_ms']:.2f}"),
        ("Warm p99 (ms):", f"{w['p99_ms']:.2f}"),
        ("Warm TTFT mean (ms):", f"{w['ttft_mean_ms']:.2f}"),
        ("Exit code after SIGTERM:", str(section.get("exit_code"))),
    ]
    lines = ["{s:{c}^{n}}".format(s=" Cold / Warm Start ", n=50, c="=")]
    lines += [f"{label:<40} {value}" for label, value in rows]
    lines.append("=" * 50)
    return "\n".join(lines)


def cmd_coldwarm(args: argparse.Namespace) -> int:
    from inloop.loadgen.reporting import write_run
    from inloop.loadgen.run_meta import resolve_model_dir, run_meta
    from inloop.loadgen.runtime_launcher import RuntimeLauncher, RuntimeLaunchError

    if args.warm_requests < 1 or args.warmup < 0 or args.max_tokens < 1:
        print("error: --warm-requests and --max-tokens must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    launcher = RuntimeLauncher(args.model, args.backend, log_path=args.runtime_log)
    section = info = None
    try:
        launcher.start(timeout_s=args.start_timeout)
        section, info = asyncio.run(measure(
            launcher, args.prompt, args.max_tokens, args.warm_requests, args.warmup,
            args.timeout, args.start_timeout, args.health_poll_ms / 1e3))
    except (RuntimeLaunchError, MeasureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    finally:
        exit_code = launcher.stop()
    if section is None:
        print(f"(runtime log kept at {launcher.log_path})", file=sys.stderr)
        return 1
    # Beyond the v1 keys (readers ignore extras): whether the runtime stopped cleanly.
    section["exit_code"] = exit_code
    print(format_table(section, args.warmup, info.backend, info.name))
    if args.out:
        meta = run_meta(args, info.backend, resolve_model_dir(args.model), seeds=[], profiles={},
                        model_name=info.name)
        paths = write_run(args.out, "coldwarm", meta, section)
        for path in paths.values():
            print(f"wrote {path}", file=sys.stderr)
    if exit_code != 0:
        print(f"error: the runtime exited with code {exit_code} after SIGTERM (expected 0); "
              f"log kept at {launcher.log_path}", file=sys.stderr)
        return 1
    launcher.cleanup()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="model directory or 'default' (passed to runtime serve)")
    p.add_argument("--backend", choices=("cpu", "cuda", "auto"), default="auto",
                   help="passed to runtime serve; the artifact records the backend the runtime reports")
    p.add_argument("--warm-requests", type=int, default=16, help="timed warm requests (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed requests between the cold one and the warm ones (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=32, help="per request (default %(default)s)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message of every request")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline of each request, seconds")
    p.add_argument("--start-timeout", type=float, default=300.0,
                   help="seconds the runtime gets to listen and to become healthy")
    p.add_argument("--health-poll-ms", type=float, default=10.0,
                   help="health probe interval while starting: the start -> healthy resolution")
    p.add_argument("--runtime-log", default=None,
                   help="write the runtime's JSON logs here (default: a temp file, kept only on failure)")
    p.add_argument("--out", default=None, help="write DIR/coldwarm-<timestamp>.json")


def register_coldwarm(lsub) -> None:
    """Add `coldwarm` to the `inloop loadgen` sub-commands."""
    p = lsub.add_parser("coldwarm", help="start a runtime, time start->healthy, the cold request and warm requests",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_coldwarm)
