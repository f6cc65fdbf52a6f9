"""`inloop eval ...`: quality evaluations (accuracy beside the loadgen's latency)."""
from __future__ import annotations


def register(sub) -> None:
    from inloop.loadgen.eval import bfcl

    p = sub.add_parser("eval", help="quality evaluations: BFCL function calling (ours vs HF transformers)")
    esub = p.add_subparsers(dest="eval_command", metavar="CMD")
    bfcl.register(esub)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
