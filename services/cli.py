"""The `inloop` command: one entry point, one sub-command module per service.

Each module listed in COMMAND_MODULES exposes `register(subparsers)`, which adds its
sub-commands and sets `func` on each parser. Modules are imported lazily so that
`inloop --help` does not pay for numpy, grpc or the CUDA bindings.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "inloop.services.runtime.model.cli",        # inloop model pull-default | make-tiny
    "inloop.services.runtime.cli",              # inloop runtime serve, inloop generate
    "inloop.services.runtime.backends.cuda.cli",  # inloop cuda compile
    "inloop.services.runtime.bench",            # inloop bench runtime
    "inloop.services.common.health_cli",        # inloop health TARGET
    "inloop.services.tools.cli",                # inloop tools serve
    "inloop.services.controller.cli",           # inloop controller serve
    "inloop.services.common.task_cli",          # inloop task run (either route)
    "inloop.services.common.certs_cli",         # inloop certs dev
    "inloop.services.common.config_cli",        # inloop config show
    "inloop.loadgen.cli",                       # inloop loadgen compare|matrix|loops|coldwarm|load|report
    "inloop.loadgen.lab.cli",                   # inloop lab up|run|down|status (two hosts on network namespaces)
)


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
