"""What every trace-reading loadgen command sets up: the OTLP receiver, the loadgen's own
tracing, and the services (started here, or already running elsewhere).

    with open_harness(args, log_dir) as h:
        h.runtime, h.controller, h.store       # targets and every span received

Local (no `--runtime`/`--controller`): the three services start on loopback as children,
exporting to the receiver. Existing deployment (`--runtime A --controller B`): nothing is
started; the receiver listens on `--otlp-listen` (default 0.0.0.0:14317: not OTLP's 4317, which
a collector on the same host already holds) and the services, or a collector fanning out, must
export there.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from inloop.loadgen.otlp_receiver import OtlpReceiver, SpanStore, StoreProcessor, mtls_credentials
from inloop.loadgen.stack import LocalStack
from inloop.services.common.config import add_client_security_options

# The receiver's port against an existing deployment. Not 4317: the loadgen runs on the CPU host
# (deploy/README.md, the lab), where the OpenTelemetry Collector already listens on 4317.
LOADGEN_OTLP_PORT = 14317


@dataclass
class Harness:
    runtime: str
    controller: str
    store: SpanStore
    receiver: OtlpReceiver
    stack: LocalStack | None
    model: str          # --model as given ("" for an existing deployment)
    backend: str
    security: object = None   # ClientSecurity for the calls to the services (TLS, token)

    def runner(self, args: argparse.Namespace):
        from inloop.loadgen.task_runner import TaskRunner
        return TaskRunner(self.runtime, self.controller, max_tokens=args.max_tokens,
                          deadline_ms=args.deadline_ms, security=self.security)


def add_harness_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("services")
    g.add_argument("--model", default="default",
                   help="model to serve when the loadgen starts the services itself ('default' = SmolLM2)")
    g.add_argument("--backend", default="cpu", choices=("cpu", "cuda", "auto"), help="runtime backend (local)")
    g.add_argument("--prefix-cache", action=argparse.BooleanOptionalAction, default=None,
                   help="start the runtime with automatic prefix caching on or off (local only; default: "
                        "the runtime's own default). On, the external route's session-less Generate "
                        "calls reuse earlier KV caches too")
    g.add_argument("--runtime", default="", help="an existing runtime's host:port (then nothing is started)")
    g.add_argument("--controller", default="", help="an existing controller's host:port")
    g.add_argument("--otlp-listen", default="",
                   help="where the OTLP receiver listens (default: loopback, free port when local; "
                        f"0.0.0.0:{LOADGEN_OTLP_PORT} against an existing deployment, beside a collector's 4317)")
    g.add_argument("--otlp-tls", action="store_true",
                   help="the OTLP receiver requires mTLS with the --tls-cert/--tls-key/--tls-ca files "
                        "(services then export to https://, presenting their own certificates)")
    add_client_security_options(p)


def prefix_cache_args(on: bool | None) -> tuple[str, ...]:
    """The runtime flag for prefix caching on/off; none for the runtime's default."""
    return () if on is None else ("--prefix-cache",) if on else ("--no-prefix-cache",)


def check_counts(args: argparse.Namespace) -> str:
    """The first count flag out of range, as an error message ("" when all are fine): checked
    before anything starts, so a typo costs no model load."""
    for name, low in (("runs", 1), ("per_family", 1), ("warmups", 0), ("max_tokens", 1), ("deadline_ms", 1)):
        value = getattr(args, name, None)
        if value is not None and value < low:
            return f"--{name.replace('_', '-')} must be >= {low}, not {value}"
    return ""


@contextlib.contextmanager
def open_harness(args: argparse.Namespace, log_dir: Path):
    from inloop.services.common.security import client_security_from_args
    from inloop.services.common.telemetry import setup_tracing

    if bool(args.runtime) != bool(args.controller):
        raise SystemExit("error: give both --runtime and --controller (an existing deployment), or neither")
    local = not args.runtime
    listen = args.otlp_listen or ("127.0.0.1:0" if local else f"0.0.0.0:{LOADGEN_OTLP_PORT}")
    host, _, port = listen.rpartition(":")
    credentials = None
    if args.otlp_tls:
        if not (args.tls_cert and args.tls_key and args.tls_ca):
            raise SystemExit("error: --otlp-tls needs --tls-cert, --tls-key and --tls-ca")
        credentials = mtls_credentials(args.tls_cert, args.tls_key, args.tls_ca)
    store = SpanStore()
    receiver = OtlpReceiver(store).start(host or "127.0.0.1", int(port or 0), credentials)
    own_spans = StoreProcessor(store)
    setup_tracing("inloop-loadgen", (own_spans,))
    stack = None
    try:
        if local:
            print(f"loadgen: starting runtime ({args.model}, {args.backend}), tools and controller on loopback; "
                  f"logs in {log_dir}", file=sys.stderr)
            stack = LocalStack(args.model, args.backend, log_dir, otlp_endpoint=receiver.endpoint,
                               runtime_args=prefix_cache_args(args.prefix_cache)).start()
            runtime, controller = stack.runtime, stack.controller
        else:
            print(f"loadgen: OTLP receiver on {receiver.address}; the services must export there", file=sys.stderr)
            runtime, controller = args.runtime, args.controller
        # The local stack is plaintext on loopback; a deployment may need TLS and a token.
        security = None if local else client_security_from_args(args)
        yield Harness(runtime, controller, store, receiver, stack, args.model if local else "",
                      args.backend if local else "", security)
    finally:
        if stack is not None:
            codes = stack.stop()
            bad = {k: v for k, v in codes.items() if v != 0}
            if bad:
                print(f"loadgen: services that did not stop cleanly: {bad}", file=sys.stderr)
        own_spans.close()
        receiver.stop()


@dataclass
class TracedRun:
    """Records of a run, each joined to its trace, and the whole traces kept for the report."""
    records: list[dict]
    traces: dict[str, list[dict]]
    model: str
    settings: dict[str, str] = None  # the runtime's serve settings in force (GetModelInfo)

    def report_extra(self) -> dict:
        """The artifact's hops/runs/traces sections."""
        from inloop.loadgen.trace_analysis import hop_rows

        return {"hops": {"rows": hop_rows(self.records)}, "runs": self.records, "traces": self.traces}


def run_traced(args: argparse.Namespace, out_dir: Path, total: int, desc: str, run, traced: bool = True) -> TracedRun:
    """Open the harness, call `run(runner, progress)` (it returns the task records) under a
    progress bar of `total` tasks, then (with `traced`) join every record to its trace."""
    from tqdm import tqdm

    from inloop.loadgen.trace_analysis import attach_breakdowns, sample_traces

    with open_harness(args, out_dir / "logs") as h:
        settings = runtime_settings(h)
        runner = h.runner(args)
        try:
            with tqdm(total=total, desc=desc, unit="task", file=sys.stderr, dynamic_ncols=True) as bar:
                records = run(runner, bar)
        finally:
            runner.close()
        traces = {}
        if traced:
            print(f"{desc}: collecting traces", file=sys.stderr)
            attach_breakdowns(records, h.store)
            traces = sample_traces(records, h.store)
    return TracedRun(records, traces, h.model, settings)


def runtime_settings(h: Harness) -> dict[str, str]:
    """The serve settings the runtime reports (prefix caching, queue, ...); {} from a runtime
    too old to say."""
    from inloop.services.common.grpc_client import make_channel
    from inloop.v1 import runtime_pb2 as pb
    from inloop.v1 import runtime_pb2_grpc

    with make_channel(h.runtime, h.security) as channel:
        info = runtime_pb2_grpc.RuntimeStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    return dict(info.settings)

