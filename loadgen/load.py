"""`inloop loadgen load`: concurrent streaming clients against a runtime, vLLM-style.

    inloop loadgen load --target 10.0.0.5:50051 --concurrency 8 --num-prompts 200
    inloop loadgen load --model default --backend cpu --request-rate 2 --num-prompts 50 \\
        --goodput ttft:500 e2el:4000 --out results/

Two ways to offer load, as in vLLM's `bench serve`:

- closed loop, `--concurrency N` (default 4): N clients, each sends its next request as
  soon as its previous one ended, so exactly N are in flight until the prompts run out;
  `--concurrency 1,2,4,8,16,32` sweeps the levels against one runtime, in that order, each
  with --num-prompts prompts of its own (drawn with seed + level index, so the prefix cache
  does not serve one level the prompts of the last), and prints output tokens/s and TTFT /
  TPOT p50 / p99 per level (the artifact's load section then carries the `sweep`);
- open loop, `--request-rate R`: requests arrive as a Poisson process of R req/s (gaps
  drawn from a gamma distribution with shape --burstiness, 1 = exponential), seeded by
  --seed, whether or not earlier ones finished; the first request goes at t = 0.

Prompts are the built-in set (short chat prompts of varied lengths, loadgen.prompt_set)
drawn with --seed; every request is a streaming GenerateStream with --max-tokens, greedy,
with a deadline of --timeout seconds. --warmup requests run first and are not counted.

The result block uses vLLM's names: completed and failed requests, duration, request /
output token / total token throughput, TTFT, TPOT (excluding the first token), ITL (gaps
between streamed tokens) and E2EL in ms (mean, median, p90, p95, p99), and goodput when
--goodput SLOs are given. A failed request (queue full, deadline, runtime gone) is counted
by its gRPC status, never retried. With --target, a runtime that does not answer
GetModelInfo within --connect-timeout is a clear error (exit 1) rather than a hang; with
--model the runtime is started here and stopped (SIGTERM) at the end. --out DIR writes
DIR/load-<timestamp>.json (schema inloop.loadgen/v1). Exit status 1 when every request
failed, else 0.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time

import numpy as np


def poisson_offsets(n: int, rate: float, seed: int, burstiness: float = 1.0) -> np.ndarray:
    """Send times (s from the start) of n requests arriving at `rate` req/s on average.

    Gaps are gamma(shape=burstiness, scale=1/(rate*burstiness)) as in vLLM's get_request:
    burstiness 1 is a Poisson process, < 1 burstier, > 1 more uniform. The first request is
    sent at 0 and each later one after the previous gap, so n requests span n-1 gaps.
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"request rate must be a finite number > 0, got {rate}")
    if burstiness <= 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])]) if n else np.zeros(0)


async def _closed_loop(send, requests: list, concurrency: int) -> list:
    """`concurrency` workers pull the next request as soon as their previous one ended."""
    results: list = [None] * len(requests)
    queue = iter(enumerate(requests))  # shared: next() never awaits, so workers cannot collide

    async def worker():
        for i, req in queue:
            results[i] = await send(req)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
    return results


async def _open_loop(send, requests: list, offsets: np.ndarray) -> list:
    """Each request starts at its offset from now, however many are still in flight."""
    start = time.perf_counter()
    tasks = []
    for req, offset in zip(requests, offsets):
        delay = start + float(offset) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(req)))
    return list(await asyncio.gather(*tasks))


async def run_load(channel, prompts: list[str], max_tokens: int, *, concurrency: int | None = None,
                   rate: float | None = None, seed: int = 0, burstiness: float = 1.0,
                   timeout_s: float = 120.0, warmup: int = 0, progress: bool = False,
                   run_id: str = "load") -> tuple[list, float]:
    """Send one streaming request per prompt over `channel` (an aio channel to the runtime).

    Exactly one of `concurrency` (closed loop) and `rate` (open loop, Poisson) is set.
    Returns (StreamResults in prompt order, duration in s from the first send to the last
    completion). `warmup` requests (the first prompts again) run before and are not returned.
    """
    from tqdm import tqdm

    from inloop.loadgen.stream_client import chat_request, stream_generate
    from inloop.v1 import runtime_pb2_grpc

    if (concurrency is None) == (rate is None):
        raise ValueError("give exactly one of concurrency (closed loop) and rate (open loop)")
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    offsets = poisson_offsets(len(prompts), rate, seed, burstiness) if rate is not None else None
    stub = runtime_pb2_grpc.RuntimeStub(channel)
    for i in range(warmup):
        await stream_generate(stub, chat_request(prompts[i % len(prompts)], max_tokens, f"{run_id}-warmup-{i}"),
                              timeout_s)
    requests = [chat_request(p, max_tokens, f"{run_id}-{i}") for i, p in enumerate(prompts)]
    bar = tqdm(total=len(requests), file=sys.stderr, disable=not progress, unit="req", desc="load")

    async def send(req):
        result = await stream_generate(stub, req, timeout_s)
        bar.update(1)
        return result

    start = time.perf_counter()
    try:
        if concurrency is not None:
            results = await _closed_loop(send, requests, concurrency)
        else:
            results = await _open_loop(send, requests, offsets)
    finally:
        bar.close()
    return results, time.perf_counter() - start


# ---- the command ------------------------------------------------------------------------
async def _against(channel, args, prompts, launcher=None):
    """Wait for a self-started runtime, check the target answers, then run the load."""
    import grpc

    from inloop.loadgen.stream_client import model_info

    if launcher is not None:
        await launcher.wait_healthy(channel, timeout_s=args.start_timeout)
    try:
        info = await model_info(channel, timeout_s=args.connect_timeout)
    except grpc.aio.AioRpcError as exc:
        raise ConnectionError(f"runtime at {args.target or launcher.target} did not answer GetModelInfo "
                              f"within {args.connect_timeout:.0f}s: {exc.code().name}: {exc.details()}") from None
    if args.sweep:
        from inloop.loadgen.prompt_set import chat_prompts

        runs = []
        for k, level in enumerate(args.sweep):
            level_prompts = chat_prompts(args.num_prompts, args.seed + k)
            runs.append(await run_load(
                channel, level_prompts, args.max_tokens, concurrency=level, seed=args.seed + k,
                timeout_s=args.timeout, warmup=args.warmup if k == 0 else 0,
                progress=not args.disable_tqdm, run_id=f"load{int(time.time())}-c{level}"))
        return info, runs, None
    results, duration = await run_load(
        channel, prompts, args.max_tokens, concurrency=args.concurrency, rate=args.request_rate,
        seed=args.seed, burstiness=args.burstiness, timeout_s=args.timeout, warmup=args.warmup,
        progress=not args.disable_tqdm, run_id=f"load{int(time.time())}")
    return info, results, duration


def cmd_load(args: argparse.Namespace) -> int:
    from inloop.loadgen.load_metrics import calculate_metrics, format_table, load_section, parse_goodput
    from inloop.loadgen.prompt_set import chat_prompts
    from inloop.loadgen.reporting import write_run
    from inloop.loadgen.run_meta import resolve_model_dir, run_meta
    from inloop.loadgen.runtime_launcher import RuntimeLauncher, RuntimeLaunchError
    from inloop.services.common.grpc_client import aio_insecure_channel

    if args.request_rate is None and args.concurrency is None:
        args.concurrency = [4]
    args.sweep = args.concurrency if args.concurrency is not None and len(args.concurrency) > 1 else None
    if args.concurrency is not None:
        args.concurrency = args.concurrency[0]
    try:
        slos = parse_goodput(args.goodput)
        if args.request_rate is not None:
            poisson_offsets(0, args.request_rate, args.seed, args.burstiness)  # validates rate/burstiness
        if args.num_prompts < 1 or args.max_tokens < 1 or (args.concurrency or 1) < 1:
            raise ValueError("--num-prompts, --max-tokens and --concurrency must be >= 1")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prompts = chat_prompts(args.num_prompts, args.seed)
    launcher = None
    try:
        if args.model:
            launcher = RuntimeLauncher(args.model, args.backend, log_path=args.runtime_log)
            launcher.start(timeout_s=args.start_timeout)

        async def go():
            async with aio_insecure_channel(args.target or launcher.target) as channel:
                return await _against(channel, args, prompts, launcher)

        info, results, duration = asyncio.run(go())
    except (RuntimeLaunchError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if launcher is not None:
            code = launcher.stop()
            if code != 0:
                print(f"warning: the runtime exited with code {code} after SIGTERM; log at {launcher.log_path}",
                      file=sys.stderr)
            else:
                launcher.cleanup()
    if args.sweep:
        return _report_sweep(args, info, results, slos)
    mode = "concurrency" if args.concurrency is not None else "poisson"
    metrics = calculate_metrics(results, duration, slos or None)
    print(format_table(metrics, mode, args.concurrency, args.request_rate))
    if args.out:
        meta = run_meta(args, info.backend, resolve_model_dir(args.model), seeds=[args.seed], profiles={},
                        model_name=info.name)
        paths = write_run(args.out, "load", meta, load_section(metrics, mode, args.concurrency,
                                                                    args.request_rate))
        for path in paths.values():
            print(f"wrote {path}", file=sys.stderr)
    return 0 if metrics.completed else 1


def _report_sweep(args, info, runs, slos) -> int:
    """One table over the levels (and each level's vLLM block with --verbose-sweep); the
    artifact's load section is the first level's, with every level under `sweep`."""
    from inloop.loadgen.load_metrics import calculate_metrics, format_table, load_section, sweep_table
    from inloop.loadgen.reporting import write_run
    from inloop.loadgen.run_meta import resolve_model_dir, run_meta

    metrics = [calculate_metrics(results, duration, slos or None) for results, duration in runs]
    if args.verbose_sweep:
        for level, m in zip(args.sweep, metrics):
            print(format_table(m, "concurrency", level, None))
    print(sweep_table(args.sweep, metrics))
    if args.out:
        meta = run_meta(args, info.backend, resolve_model_dir(args.model), seeds=[args.seed], profiles={},
                        model_name=info.name)
        section = load_section(metrics[0], "concurrency", args.sweep[0], None)
        section["sweep"] = [load_section(m, "concurrency", level, None) for level, m in zip(args.sweep, metrics)]
        for path in write_run(args.out, "load", meta, section).values():
            print(f"wrote {path}", file=sys.stderr)
    return 0 if all(m.completed for m in metrics) else 1


def _levels(text: str) -> list[int]:
    """--concurrency: one level, or a comma-separated sweep (1,2,4,8)."""
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give an integer or a comma-separated list (1,2,4,8)") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: concurrency levels must be >= 1")
    return levels


def add_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="a running runtime, host:port")
    where.add_argument("--model", help="start a runtime here on this model (directory or 'default')")
    p.add_argument("--backend", choices=("cpu", "cuda", "auto"), default="auto", help="with --model: passed to runtime serve")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--concurrency", type=_levels, default=None,
                     help="closed loop: requests in flight (default 4); 1,2,4,8 sweeps the levels in one run")
    how.add_argument("--request-rate", type=float, default=None, help="open loop: Poisson arrivals, requests/s")
    p.add_argument("--burstiness", type=float, default=1.0,
                   help="with --request-rate: gamma shape of the gaps (1 = Poisson, <1 burstier)")
    p.add_argument("--num-prompts", type=int, default=100, help="requests to send (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=64, help="per request (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="draws the prompts and the arrival times")
    p.add_argument("--warmup", type=int, default=1, help="untimed requests before the run (default %(default)s)")
    p.add_argument("--goodput", nargs="+", metavar="NAME:MS", default=None,
                   help="SLOs for goodput, e.g. ttft:500 tpot:50 e2el:4000 (ms); a request is good if it meets all")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline of each request, seconds")
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="deadline of the first GetModelInfo (a runtime that is down fails here)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="with --model: seconds to become healthy")
    p.add_argument("--runtime-log", default=None, help="with --model: the runtime's log file (default: temp)")
    p.add_argument("--disable-tqdm", action="store_true", help="no progress bar on stderr")
    p.add_argument("--verbose-sweep", action="store_true", help="with a sweep: each level's full result block too")
    p.add_argument("--out", default=None, help="write DIR/load-<timestamp>.json")


def register_load(lsub) -> None:
    """Add `load` to the `inloop loadgen` sub-commands."""
    p = lsub.add_parser("load", help="concurrent streaming load (closed loop or Poisson), vLLM bench serve metrics",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_load)
