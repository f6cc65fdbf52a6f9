"""`inloop loadgen backends`: the same measurements against several OpenAI-compatible servers,
one at a time, side by side in one table with each figure's ratio to inloop's.

    inloop loadgen backends --backend inloop --backend llama-server --model default
    inloop loadgen backends --backend inloop --backend vllm=http://10.0.0.7:8000/v1

Per backend: process start -> healthy (for the ones we start), the cold request (TTFT and the
full response), --warm-requests more (mean and p99 of the full response, mean TTFT, decode
tokens/s), then a load run (--prompts requests, --concurrency at a time; vLLM bench serve's
metrics: output tokens/s, TTFT and TPOT medians). Same prompt(s), greedy, the same output
length (`ignore_eos`, or transformers serve's `generation_config` min_new_tokens), each server on --threads CPU threads.

Built-in local backends (started here, stopped after): `inloop` (our runtime's HTTP API,
numpy backend), `llama-server` (llama.cpp's own server, built by scripts/build_llama_server.sh,
on the default model's GGUF), `transformers-serve` (HF's `transformers serve`). Anything else
is NAME=URL (a /v1 base of a running server).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from inloop.loadgen.openai_stream import FIXED_LENGTH_HF, FIXED_LENGTH_OPENAI

DEFAULT_PROMPT = "Explain what a service mesh is and why teams use one."
BUILTIN = ("inloop", "llama-server", "transformers-serve")


@dataclass
class Backend:
    name: str
    url: str = ""                                  # a /v1 base; for a started one, known once started
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    fixed_length: str = FIXED_LENGTH_OPENAI         # how it is asked for exactly max_tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(spec: str, model: str, threads: int, concurrency: int) -> Backend:
    """NAME=URL, or a built-in name started on a free loopback port."""
    if "=" in spec:
        name, url = spec.split("=", 1)
        return Backend(name, url.rstrip("/"))
    if spec not in BUILTIN:
        raise ValueError(f"unknown backend {spec!r}: use one of {', '.join(BUILTIN)} or NAME=URL")
    port = free_port()
    threads_env = {"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    url = f"http://127.0.0.1:{port}/v1"
    if spec == "inloop":
        return Backend(spec, url, [sys.executable, "-m", "inloop.services.cli", "runtime", "serve", "--model", model,
                                   "--backend", "cpu", "--port", "0", "--http-port", str(port), "--metrics-port", "-1",
                                   "--max-queue", "64"], threads_env)
    from inloop.services.runtime.model.default_model import find_gguf, resolve_model

    if spec == "llama-server":
        binary = llama_server_binary()
        gguf = find_gguf() if model == "default" else Path(model)
        return Backend(spec, url, [binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                                   "-t", str(threads), "-c", "4096", "-np", str(concurrency)], threads_env)
    exe = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    # transformers >= 5 takes the model to preload as its one argument (it was --force-model)
    return Backend(spec, url, [exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                               str(resolve_model(model))], threads_env, fixed_length=FIXED_LENGTH_HF)


def llama_server_binary() -> str:
    cache = Path(os.environ.get("INLOOP_CACHE", Path.home() / ".cache" / "inloop")) / "llama-server" / "bin"
    binary = cache / "llama-server"
    if not binary.exists():
        raise FileNotFoundError(f"no llama-server at {binary}: build it once with bash scripts/build_llama_server.sh")
    return str(binary)


# ---- measuring one backend ------------------------------------------------------------------
async def _healthy(client, b: Backend, timeout_s: float) -> float:
    """Seconds from the spawn until GET /v1/models answers 200 (the model is loaded)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if b.proc is not None and b.proc.poll() is not None:
            raise RuntimeError(f"{b.name} exited with {b.proc.returncode} while starting")
        try:
            r = await client.get(b.url + "/models", timeout=2)
            if r.status_code == 200 and (b.name != "inloop" or (await client.get(
                    b.url.removesuffix("/v1") + "/health", timeout=2)).status_code == 200):
                return time.perf_counter() - started
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{b.name} not healthy within {timeout_s:.0f} s")


async def measure(b: Backend, prompts: list[str], max_tokens: int, warm: int, concurrency: int,
                  timeout_s: float, start_timeout_s: float) -> dict:
    import httpx

    from inloop.loadgen.load import _closed_loop
    from inloop.loadgen.load_metrics import calculate_metrics
    from inloop.loadgen.openai_stream import chat_body, stream_chat

    out: dict = {"backend": b.name, "url": b.url}
    async with httpx.AsyncClient() as client:
        if b.command:
            b.proc = subprocess.Popen(b.command, env={**os.environ, **b.env}, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
            out["start_to_healthy_s"] = await _healthy(client, b, start_timeout_s)
        model = (await client.get(b.url + "/models", timeout=10)).json()["data"][0]["id"]
        out["model"] = model

        async def one(prompt: str):
            result = await stream_chat(client, b.url, chat_body(model, prompt, max_tokens, b.fixed_length), timeout_s)
            if not result.success:
                raise RuntimeError(f"{b.name}: {result.error}")
            return result

        cold = await one(prompts[0])
        out.update(cold_ttft_ms=cold.ttft_ms, cold_full_ms=cold.e2el_ms, output_tokens=cold.output_tokens)
        warms = [await one(prompts[0]) for _ in range(warm)]
        full = [r.e2el_ms for r in warms]
        out.update(warm_mean_ms=statistics.fmean(full), warm_p99_ms=_p99(full),
                   ttft_ms=statistics.median(r.ttft_ms for r in warms),
                   decode_tok_s=statistics.median(max(r.output_tokens - 1, 1) / max(r.e2el_ms - r.ttft_ms, 1e-6) * 1e3
                                                  for r in warms))
        started = time.perf_counter()
        results = await _closed_loop(lambda p: stream_chat(client, b.url, chat_body(model, p, max_tokens, b.fixed_length), timeout_s),
                                     prompts, concurrency)
        m = calculate_metrics(results, time.perf_counter() - started)
        out.update(load_output_tok_s=m.output_throughput, load_ttft_median_ms=m.ttft_ms.get("median"),
                   load_tpot_median_ms=m.tpot_ms.get("median"), load_failed=m.failed)
    return out


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def stop(b: Backend) -> None:
    if b.proc is not None and b.proc.poll() is None:
        os.killpg(b.proc.pid, signal.SIGTERM)
        try:
            b.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(b.proc.pid, signal.SIGKILL)
            b.proc.wait()


# ---- the table ---------------------------------------------------------------------------------
COLUMNS = (("start_to_healthy_s", "start->healthy s", ".2f"), ("cold_ttft_ms", "cold TTFT ms", ".0f"),
           ("cold_full_ms", "cold full ms", ".0f"), ("warm_mean_ms", "warm mean ms", ".0f"),
           ("warm_p99_ms", "warm p99 ms", ".0f"), ("ttft_ms", "TTFT ms", ".1f"),
           ("decode_tok_s", "decode tok/s", ".1f"), ("load_output_tok_s", "load out tok/s", ".1f"),
           ("load_ttft_median_ms", "load TTFT p50", ".0f"), ("load_tpot_median_ms", "load TPOT p50", ".1f"))


def format_table(rows: list[dict], reference: str = "inloop") -> str:
    ref = next((r for r in rows if r.get("backend") == reference and "error" not in r), None)
    head = f"{'backend':<20}" + "".join(f"{label:>17}" for _, label, _ in COLUMNS)
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['backend']:<20}  error: {r['error'][:150]}")
            continue
        lines.append(f"{r['backend']:<20}" + "".join(
            f"{r[key]:>17{fmt}}" if isinstance(r.get(key), (int, float)) else f"{'-':>17}" for key, _, fmt in COLUMNS))
        if ref is not None and r is not ref:
            lines.append(f"{'  x inloop':<20}" + "".join(
                f"{r[key] / ref[key]:>17.2f}" if isinstance(r.get(key), (int, float)) and ref.get(key) else f"{'-':>17}"
                for key, _, _ in COLUMNS))
    lines.append("(x inloop: this backend's figure over inloop's; for times > 1 means slower, for tok/s faster)")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[dict]:
    prompts = [args.prompt] * args.prompts
    rows = []
    for spec in args.backend:
        try:
            b = backend_for(spec, args.model, args.threads, args.concurrency)
        except (ValueError, FileNotFoundError) as exc:
            rows.append({"backend": spec, "error": str(exc)})
            continue
        try:
            print(f"backends: measuring {b.name}", file=sys.stderr, flush=True)
            rows.append(await measure(b, prompts, args.max_tokens, args.warm_requests, args.concurrency,
                                      args.timeout, args.start_timeout))
        except Exception as exc:  # noqa: BLE001 - one backend failing must not lose the others' rows
            rows.append({"backend": b.name, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            stop(b)
    return rows


def cmd_backends(args: argparse.Namespace) -> int:
    rows = asyncio.run(run(args))
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"kind": "backends", "settings": {k: getattr(args, k) for k in (
            "model", "prompt", "prompts", "max_tokens", "warm_requests", "concurrency", "threads")}, "backends": rows},
            indent=2, default=str))
    return 0 if all("error" not in r for r in rows) else 1


def register_backends(lsub) -> None:
    p = lsub.add_parser("backends", help="cold/warm and load side by side against OpenAI-compatible servers",
                        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", action="append", required=True, metavar="NAME|NAME=URL",
                   help=f"a built-in ({', '.join(BUILTIN)}) started here, or NAME=URL of a running /v1 (repeatable)")
    p.add_argument("--model", default="default", help="the model the built-ins serve: 'default' or a directory")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message of every request")
    p.add_argument("--prompts", type=int, default=8, help="requests in the load run (default 8)")
    p.add_argument("--max-tokens", type=int, default=32, help="output tokens per request (default 32)")
    p.add_argument("--warm-requests", type=int, default=5, help="timed warm requests (default 5)")
    p.add_argument("--concurrency", type=int, default=2, help="requests at once in the load run (default 2)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads each server may use (default 2)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to become healthy (default 300)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(func=cmd_backends)
