"""vLLM `bench serve` metrics over a list of timed streams, and their table.

A port of `calculate_metrics` in vLLM's `benchmarks/benchmark_serving.py`, same names and
same rules, so our numbers read like theirs:

- completed / failed requests; duration = first send to last completion;
- request throughput = completed / duration; output token throughput = generated tokens
  / duration; total token throughput = (prompt + generated tokens of completed requests)
  / duration;
- TTFT per request; TPOT = (E2EL - TTFT) / (output tokens - 1), only for requests with more
  than one output token (the first token is excluded); ITL = every gap between streamed
  tokens, pooled over requests; E2EL = the whole request;
- goodput (req/s) = completed requests meeting every given SLO (`ttft:MS tpot:MS
  e2el:MS`) / duration; for the TPOT SLO a one-token answer counts as TPOT 0, as in vLLM.

Each latency gets mean/median/p90/p95/p99/std in ms (loadgen.stats.summarize_ms).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from inloop.loadgen.stats import summarize_ms
from inloop.loadgen.stream_client import StreamResult

GOODPUT_METRICS = ("ttft", "tpot", "e2el")


@dataclass
class LoadMetrics:
    completed: int
    failed: int
    duration_s: float
    total_input: int
    total_output: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    goodput: float | None
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2el_ms: dict[str, float]
    errors: dict[str, int] = field(default_factory=dict)  # gRPC status name -> failed requests


def parse_goodput(specs: list[str] | None) -> dict[str, float]:
    """["ttft:500", "e2el:2000"] -> {"ttft": 500.0, "e2el": 2000.0} (ms); ValueError names the bad item."""
    slos: dict[str, float] = {}
    for spec in specs or []:
        name, sep, value = spec.partition(":")
        name = name.strip().lower()
        if not sep or name not in GOODPUT_METRICS:
            raise ValueError(f"--goodput {spec!r}: expected NAME:MS with NAME one of {', '.join(GOODPUT_METRICS)}")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(f"--goodput {spec!r}: {value!r} is not a number of milliseconds") from None
        if ms < 0:
            raise ValueError(f"--goodput {spec!r}: an SLO must be >= 0 ms")
        slos[name] = ms
    return slos


def request_tpot_ms(r: StreamResult) -> float | None:
    """(E2EL - TTFT) / (output tokens - 1); None for a request with at most one output token."""
    if r.output_tokens <= 1:
        return None
    return (r.e2el_ms - r.ttft_ms) / (r.output_tokens - 1)


def calculate_metrics(results: list[StreamResult], duration_s: float,
                      goodput_slos: dict[str, float] | None = None) -> LoadMetrics:
    ok = [r for r in results if r.success]
    ttfts = [r.ttft_ms for r in ok]
    e2els = [r.e2el_ms for r in ok]
    tpots = [t for r in ok if (t := request_tpot_ms(r)) is not None]
    itls = [gap for r in ok for gap in r.itl_ms]
    total_input = sum(r.prompt_tokens for r in ok)
    total_output = sum(r.output_tokens for r in ok)
    per_s = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)

    goodput = None
    if goodput_slos:
        def good(r: StreamResult) -> bool:
            measured = {"ttft": r.ttft_ms, "tpot": request_tpot_ms(r) or 0.0, "e2el": r.e2el_ms}
            return all(measured[name] <= slo for name, slo in goodput_slos.items())
        goodput = per_s(sum(good(r) for r in ok))

    return LoadMetrics(
        completed=len(ok), failed=len(results) - len(ok), duration_s=duration_s,
        total_input=total_input, total_output=total_output,
        request_throughput=per_s(len(ok)), output_throughput=per_s(total_output),
        total_token_throughput=per_s(total_input + total_output), goodput=goodput,
        ttft_ms=summarize_ms(ttfts), tpot_ms=summarize_ms(tpots), itl_ms=summarize_ms(itls),
        e2el_ms=summarize_ms(e2els),
        errors=dict(Counter(r.status for r in results if not r.success)),
    )


def load_section(m: LoadMetrics, mode: str, concurrency: int | None, rate: float | None) -> dict:
    """The artifact's "load" section (schema inloop.loadgen/v1, plus token totals and errors)."""
    return {
        "mode": mode, "concurrency": concurrency, "rate": rate,
        "completed": m.completed, "failed": m.failed, "duration_s": m.duration_s,
        "request_throughput": m.request_throughput, "output_throughput": m.output_throughput,
        "total_token_throughput": m.total_token_throughput, "goodput": m.goodput,
        "ttft_ms": m.ttft_ms, "tpot_ms": m.tpot_ms, "itl_ms": m.itl_ms, "e2el_ms": m.e2el_ms,
        # Beyond the v1 keys (readers ignore extras): vLLM's token totals, and why requests failed.
        "total_input_tokens": m.total_input, "total_output_tokens": m.total_output, "errors": m.errors,
    }


_LATENCIES = (("ttft_ms", "TTFT", "Time to First Token"),
              ("tpot_ms", "TPOT", "Time per Output Token (excl. 1st token)"),
              ("itl_ms", "ITL", "Inter-token Latency"),
              ("e2el_ms", "E2EL", "End-to-end Latency"))


def format_table(m: LoadMetrics, mode: str, concurrency: int | None, rate: float | None) -> str:
    """The result block in vLLM's layout (40-column labels, 2 decimals)."""
    lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]

    def row(label, value, fmt="<10"):
        lines.append(f"{label:<40} {value:{fmt}}")

    row("Successful requests:", m.completed)
    row("Failed requests:", m.failed)
    if m.errors:
        row("Failures by status:", ", ".join(f"{k} x{v}" for k, v in sorted(m.errors.items())))
    if mode == "concurrency":
        row("Maximum request concurrency:", concurrency)
    else:
        row("Request rate (req/s, Poisson):", rate, "<10.2f")
    row("Benchmark duration (s):", m.duration_s, "<10.2f")
    row("Total input tokens:", m.total_input)
    row("Total generated tokens:", m.total_output)
    row("Request throughput (req/s):", m.request_throughput, "<10.2f")
    if m.goodput is not None:
        row("Request goodput (req/s):", m.goodput, "<10.2f")
    row("Output token throughput (tok/s):", m.output_throughput, "<10.2f")
    row("Total Token throughput (tok/s):", m.total_token_throughput, "<10.2f")
    for key, short, title in _LATENCIES:
        lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        stats = getattr(m, key)
        row(f"Mean {short} (ms):", stats["mean"], "<10.2f")
        row(f"Median {short} (ms):", stats["median"], "<10.2f")
        for p in ("p90", "p95", "p99"):
            row(f"{p.upper()} {short} (ms):", stats[p], "<10.2f")
    lines.append("=" * 50)
    return "\n".join(lines)


def sweep_table(levels: list[int], metrics: list[LoadMetrics]) -> str:
    """One row per concurrency level: output tokens/s (and its ratio to the first level's),
    TTFT and TPOT p50/p99 in ms, completed/failed."""
    head = (f"{'concurrency':>11} {'out tok/s':>10} {'x first':>8} {'TTFT p50':>9} {'TTFT p99':>9} "
            f"{'TPOT p50':>9} {'TPOT p99':>9} {'ok':>5} {'failed':>6}")
    lines = ["{s:{c}^{n}}".format(s=" Concurrency sweep ", n=len(head), c="="), head]
    base = metrics[0].output_throughput if metrics else 0.0
    for level, m in zip(levels, metrics):
        ratio = m.output_throughput / base if base else float("nan")
        lines.append(f"{level:>11} {m.output_throughput:>10.2f} {ratio:>8.2f} {m.ttft_ms.get('median', float('nan')):>9.1f} "
                     f"{m.ttft_ms.get('p99', float('nan')):>9.1f} {m.tpot_ms.get('median', float('nan')):>9.1f} {m.tpot_ms.get('p99', float('nan')):>9.1f} "
                     f"{m.completed:>5} {m.failed:>6}")
    return "\n".join(lines)
