"""What `--model` names, made into an HF-layout directory the runtime loads.

    default               the bundled SmolLM2-135M-Instruct, converted into the cache once
    DIR                   an HF-layout directory (config.json, *.safetensors, tokenizer.json)
    FILE.gguf             a llama / qwen2 / qwen3 GGUF, converted into the cache once
"""
from __future__ import annotations

from pathlib import Path

from inloop.services.runtime.model.config import ModelLoadError
from inloop.services.runtime.model.default_model import pull_default

SPEC_HELP = "'default', an HF-layout directory, or a .gguf file"


def _checked_dir(path: Path) -> Path:
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} has no config.json: point --model at an HF-layout directory "
            "(config.json, *.safetensors, tokenizer.json), a .gguf file, or use 'default'"
        )
    return path


def resolve_model(spec: str) -> Path:
    """The model directory `spec` names; converts or downloads (into the caches) when needed."""
    if spec == "default":
        return pull_default()
    path = Path(spec).expanduser()
    if path.is_dir():
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
    raise ModelLoadError(f"model {spec!r} is not {SPEC_HELP}")


def model_name(spec: str, model_dir: Path) -> str:
    """The name a served model answers to: the GGUF file's stem, else the directory's."""
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path.stem
    return model_dir.name
