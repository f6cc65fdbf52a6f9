"""A user's GGUF file, converted once into the cache and reused after.

    $INLOOP_CACHE (or ~/.cache/inloop)/models/gguf/<stem>-<hash of its absolute path>/
      HF layout written by gguf_convert, and .complete: the GGUF's sha256, size and mtime

The next start with the same file finds the marker and loads the directory at once; a file
changed in place (other size or mtime, and another sha256) is converted again. Concurrent
starts on one cache convert once (a file lock), as for the default model.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from inloop.services.runtime.model.default_model import (_pull_lock, _read_marker, _say, _write_marker, cache_root,
                                                          sha256_of)


def gguf_model_dir(gguf: Path) -> Path:
    gguf = gguf.expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", gguf.stem)[:80] or "model"
    return cache_root() / "models" / "gguf" / f"{stem}-{hashlib.sha256(str(gguf).encode()).hexdigest()[:12]}"


def _is_current(marker: dict, gguf: Path) -> bool:
    """Size and mtime stand in for the hash; only when they changed is the file hashed again."""
    stat = gguf.stat()
    if stat.st_size == marker.get("gguf_size") and stat.st_mtime_ns == marker.get("gguf_mtime_ns"):
        return True
    return sha256_of(gguf) == marker.get("gguf_sha256")


def convert_cached(gguf: str | Path, force: bool = False, progress: bool = True, out_dir: Path | None = None) -> Path:
    """The HF directory converted from `gguf` (converted now unless the cache has it)."""
    gguf = Path(gguf).expanduser().resolve()
    model_dir = out_dir or gguf_model_dir(gguf)
    marker = _read_marker(model_dir)
    if not force and marker is not None and _is_current(marker, gguf):
        _say(f"{gguf.name} already converted at {model_dir}")
        return model_dir
    with _pull_lock(model_dir):
        marker = _read_marker(model_dir)  # another process may have finished while we waited
        if not force and marker is not None and _is_current(marker, gguf):
            _say(f"{gguf.name} converted by another process at {model_dir}")
            return model_dir
        from inloop.services.runtime.model.gguf_convert import convert_gguf

        digest = sha256_of(gguf)
        stat = gguf.stat()
        _say(f"converting {gguf.name} -> {model_dir}")
        convert_gguf(gguf, model_dir, progress=progress)
        _write_marker(model_dir, {"gguf_sha256": digest, "gguf_size": stat.st_size,
                                  "gguf_mtime_ns": stat.st_mtime_ns, "gguf_path": str(gguf)})
        _say(f"{gguf.name} ready at {model_dir}")
    return model_dir
