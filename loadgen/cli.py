"""`inloop loadgen ...`: the commands that drive both routes and report them side by side."""
from __future__ import annotations

import importlib

# (module, function) pairs, each adding one sub-command to `inloop loadgen`.
SUBCOMMANDS = (
    ("inloop.loadgen.compare", "register_compare"),       # compare: same cases, both routes, no faults
    ("inloop.loadgen.matrix", "register"),                # matrix: profiles x tasks x routes
    ("inloop.loadgen.loops", "register"),                 # loops: agentic scenarios, gate on/off
    ("inloop.loadgen.coldwarm", "register_coldwarm"),     # coldwarm: start -> healthy, cold/warm latency
    ("inloop.loadgen.load", "register_load"),             # load: concurrent clients, vLLM's metrics
    ("inloop.loadgen.backends", "register_backends"),     # backends: the same against OpenAI-compatible servers
    ("inloop.loadgen.calibrate_gate", "register"),        # calibrate-gate: fit the gate's default threshold
    ("inloop.loadgen.report.cli", "register_report"),     # report: re-render an artifact
    ("inloop.loadgen.report.summary", "register_summary"),  # summary: one page over a directory's results
)


def register(sub) -> None:
    p = sub.add_parser("loadgen", help="drive both routes with the same tasks and report them side by side")
    lsub = p.add_subparsers(dest="loadgen_command", metavar="CMD")
    for module, function in SUBCOMMANDS:
        try:
            getattr(importlib.import_module(module), function)(lsub)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a missing dependency inside a present module is a real error
                raise
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
