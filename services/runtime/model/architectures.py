"""Which model class runs a directory: the dense decoders (config.py, transformer.py) or the
hybrid Qwen3.5 (qwen3_5_config.py, qwen3_5.py), chosen by config.json's model_type."""
from __future__ import annotations

import json
from pathlib import Path

import structlog

from inloop.services.contract.backend import Backend
from inloop.services.runtime.model.config import ModelConfig, ModelLoadError
from inloop.services.runtime.model.qwen3_5_config import HYBRID_ARCHS, Qwen35Config
from inloop.services.runtime.model.weights import Weights

log = structlog.get_logger("model.architectures")


def read_config(model_dir: str | Path) -> ModelConfig | Qwen35Config:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{path} not found: a model directory needs an HF config.json")
    hf = json.loads(path.read_text())
    if hf.get("model_type") in HYBRID_ARCHS:
        return Qwen35Config.from_hf(hf)
    return ModelConfig.from_hf(hf)


def build_model(cfg: ModelConfig | Qwen35Config, backend: Backend, weights: Weights):
    """The model on `backend`: a backend's own loader where it has one (CUDA: straight to
    the GPU), else the forward pass written against the backend interface."""
    if isinstance(cfg, Qwen35Config):
        from inloop.services.runtime.model.qwen3_5 import Qwen35Model
        return Qwen35Model(cfg, backend, weights)
    from inloop.services.runtime.model.transformer import Transformer
    return backend.load_model(cfg, weights) or Transformer(cfg, backend, weights)


def backend_for(cfg: ModelConfig | Qwen35Config, requested: str) -> str:
    """The backend name to make: 'auto' means cpu for Qwen3.5, whose CUDA path (kernels run op
    by op, no graphs) has not yet run on a GPU; an explicit 'cuda' runs it."""
    if requested == "auto" and isinstance(cfg, Qwen35Config):
        log.info("backend_auto_cpu", arch=cfg.arch,
                 reason="Qwen3.5 on cuda runs op by op and is not yet checked on a GPU: ask for it with --backend cuda")
        return "cpu"
    return requested
