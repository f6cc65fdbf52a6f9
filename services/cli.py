"""The `inloop` command: one entry point, one sub-command module per service.

Each module listed in COMMAND_MODULES exposes `register(subparsers)`, which adds its
sub-commands and sets `func` on each parser. Modules are imported lazily so that
`inloop --help` does not pay for numpy, grpc or the CUDA bindings.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

COMMAND_MODULES = (
    "inloop.services.runtime.model.cli",          # inloop model pull-default | make-tiny
    "inloop.services.runtime.service.cli",        # inloop runtime serve, inloop generate
    "inloop.services.runtime.backends.cuda.cli",  # inloop cuda compile
    "inloop.services.common.health_cli",          # inloop health TARGET
    "inloop.services.tools.service.cli",          # inloop tools serve
    "inloop.services.controller.cli",             # inloop controller serve
    "inloop.services.common.task_cli",            # inloop task run (either route)
    "inloop.services.common.certs_cli",           # inloop certs dev
    "inloop.services.common.config_cli",          # inloop config show
    "inloop.loadgen.cli",                         # inloop loadgen compare|matrix|loops|coldwarm|load|report
    "inloop.loadgen.lab.cli",                     # inloop lab up|run|down|status (two hosts on network namespaces)
    "inloop.loadgen.eval.cli",                    # inloop eval bfcl (function-calling accuracy)
)
# `inloop bench runtime` (ours vs HF transformers) lives in the checkout's bench/, not in the
# installed package: an editable install finds it beside services/.
CHECKOUT = Path(__file__).resolve().parents[1]
BENCH_MODULE = "bench.runtime_vs_hf"


def register_bench(sub) -> None:
    if (CHECKOUT / "bench" / "runtime_vs_hf.py").exists():
        if str(CHECKOUT) not in sys.path:
            sys.path.insert(0, str(CHECKOUT))
        importlib.import_module(BENCH_MODULE).register(sub)
        return
    p = sub.add_parser("bench", help="benchmarks: run them from a checkout of the repository",
                       description="The benchmarks (inloop bench runtime: ours vs HF transformers) live in "
                                   "the repository's bench/ and are not part of the installed package. Run "
                                   "them from a checkout: git clone ...; bash scripts/setup.sh --test; "
                                   ".venv/bin/inloop bench runtime --help")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=lambda args: p.error("the benchmarks are not in the installed package (bench/ of a "
                                             "checkout has them); see `inloop bench --help`"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inloop",
        description="inloop: a split-host LLM service mesh (runtime, controller, tools, loadgen).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a part not built yet, or an optional dependency missing
            if exc.name and exc.name.startswith(name.rsplit(".", 1)[0]):
                continue
            raise
        module.register(sub)
        if name == "inloop.services.runtime.backends.cuda.cli":
            register_bench(sub)  # where it always was in `inloop --help`
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
