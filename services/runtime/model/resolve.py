"""What `--model` names, made into an HF-layout directory the runtime loads.

    default               the bundled SmolLM2-135M-Instruct, converted into the cache once
    DIR                   an HF-layout directory (config.json, *.safetensors, tokenizer.json)
    FILE.gguf             a llama / qwen2 / qwen3 GGUF, converted into the cache once
    ORG/NAME[@REVISION]   a Hub model, through huggingface_hub's cache (hub.py)

A local directory wins over a Hub id of the same spelling, and says so.
"""
from __future__ import annotations

from pathlib import Path

from inloop.services.runtime.model.config import ModelLoadError
from inloop.services.runtime.model.default_model import _say, pull_default

SPEC_HELP = "'default', an HF-layout directory, a .gguf file, or a Hub id ORG/NAME[@REVISION]"


def _checked_dir(path: Path) -> Path:
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} has no config.json: point --model at an HF-layout directory "
            "(config.json, *.safetensors, tokenizer.json), a .gguf file, a Hub id, or use 'default'"
        )
    return path


def resolve_model(spec: str) -> Path:
    """The model directory `spec` names; converts or downloads (into the caches) when needed."""
    from inloop.services.runtime.model.hub import parse_hub_id, pull_hub

    if spec == "default":
        return pull_default()
    path = Path(spec).expanduser()
    hub_id = parse_hub_id(spec)
    if path.is_dir():
        if hub_id is not None:
            _say(f"using the local directory {path.resolve()} (a directory of that name wins over the Hub id {spec})")
        return _checked_dir(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {spec} not found")
        from inloop.services.runtime.model.gguf_cache import convert_cached
        from inloop.services.runtime.model.gguf_convert import GGUFConversionError

        try:
            return convert_cached(path)
        except GGUFConversionError as exc:
            raise ModelLoadError(f"{path.name}: {exc}") from None
    if hub_id is not None:
        return pull_hub(*hub_id)
    raise ModelLoadError(f"model {spec!r} is not {SPEC_HELP}")


def model_name(spec: str, model_dir: Path) -> str:
    """The name a served model answers to: the Hub id, the GGUF file's stem, else the directory's."""
    from inloop.services.runtime.model.hub import parse_hub_id

    path = Path(spec).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path.stem
    hub_id = parse_hub_id(spec)
    if hub_id is not None and not path.is_dir():
        return hub_id[0]
    return model_dir.name
