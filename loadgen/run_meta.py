"""The `meta` block every loadgen artifact carries (loadgen/reporting.py writes the artifact).

    meta = run_meta(args, backend="cpu", model_dir=path, seeds=[0], profiles={})

A number in a report is only comparable to another when we know what produced it: the
commit, the exact command, the host (CPU model, cores, GPU), the backend, which weights
(sha256 of the safetensors files), the seeds and the package versions. The matrix reuses
`run_meta` for its own artifacts, so everything here is cheap to call repeatedly: the
weights' hash is cached by (path, mtime, size), in memory and on disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PACKAGES = ("grpcio", "protobuf", "numpy", "inloop")
_REPO = Path(__file__).resolve().parents[1]
_SHA_MEMO: dict[tuple[str, int, int], str] = {}


# ---- model identity -------------------------------------------------------------------
def _sha_cache_path() -> Path:
    from inloop.services.runtime.model.default_model import cache_root

    return cache_root() / "sha256-cache.json"


def _read_sha_cache() -> dict:
    try:
        return json.loads(_sha_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_sha_cache(cache: dict) -> None:
    """Atomic replace, so two runs finishing together never leave half a file."""
    path = _sha_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sha256-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs a re-hash next time
        pass


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of one file, memoised by (resolved path, mtime_ns, size) in memory and on disk."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key in _SHA_MEMO:
        return _SHA_MEMO[key]
    disk = _read_sha_cache()
    entry = disk.get(key[0])
    if entry and entry.get("mtime_ns") == key[1] and entry.get("size") == key[2]:
        _SHA_MEMO[key] = entry["sha256"]
        return entry["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    _SHA_MEMO[key] = digest
    disk = _read_sha_cache()  # re-read: another run may have added entries meanwhile
    # Forget files that are gone (temporary models of tests and experiments), so it stays small.
    disk = {p: e for p, e in disk.items() if os.path.exists(p)}
    disk[key[0]] = {"mtime_ns": key[1], "size": key[2], "sha256": digest}
    _write_sha_cache(disk)
    return digest


def model_sha256(model_dir: str | Path | None) -> str:
    """The weights' identity: sha256 of the one *.safetensors file (what `sha256sum` prints),
    or for a sharded checkpoint the sha256 of the `sha256sum`-style lines "HASH  NAME\\n" of
    its shards in name order; for a .gguf file, the file's own sha256 (what its publisher
    lists), not that of its conversion. "" when there is no directory or no safetensors file."""
    if model_dir is not None and Path(model_dir).suffix == ".gguf" and Path(model_dir).is_file():
        return file_sha256(Path(model_dir))
    if model_dir is None or not Path(model_dir).is_dir():
        return ""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return ""
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{file_sha256(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def resolve_model_dir(spec: str | None) -> Path | None:
    """--model as given -> what holds its weights, without pulling anything: 'default' maps
    to where `inloop model pull-default` converts to, a .gguf file stays the file, a Hub id
    ORG/NAME[@REVISION] maps to its snapshot in the local HF cache (None if not there)."""
    if not spec:
        return None
    if spec == "default":
        from inloop.services.runtime.model.default_model import default_model_dir

        return default_model_dir()
    path = Path(spec).expanduser()
    if path.exists():
        return path
    from inloop.services.runtime.model.hub import parse_hub_id

    hub_id = parse_hub_id(spec)
    if hub_id is None:
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id[0], revision=hub_id[1], local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (or no huggingface_hub): nothing to hash
        return None


def model_label(model_dir: str | Path | None) -> dict:
    """How a report names the weights: a Hub snapshot as ORG/NAME with its commit, a .gguf
    file by its stem, else the directory's name."""
    if model_dir is None:
        return {"name": ""}
    path = Path(model_dir)
    if len(path.parts) >= 3 and path.parent.name == "snapshots" and path.parts[-3].startswith("models--"):
        return {"name": path.parts[-3][len("models--"):].replace("--", "/"), "revision": path.name}
    return {"name": path.stem if path.suffix == ".gguf" else path.name}


# ---- host and software ----------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """`nvidia-smi -L` names without UUIDs ("NVIDIA H100 80GB HBM3", "2x NVIDIA H200"); None
    where there is no nvidia-smi or it fails (no driver, no device)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    names = []
    for line in out.stdout.splitlines():  # "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"
        if line.startswith("GPU ") and ":" in line:
            names.append(line.split(":", 1)[1].split("(UUID", 1)[0].strip())
    if out.returncode != 0 or not names:
        return None
    counts = {n: names.count(n) for n in dict.fromkeys(names)}
    return ", ".join(n if c == 1 else f"{c}x {n}" for n, c in counts.items())


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def package_versions(names=PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def command_line(argv: list[str] | None = None) -> str:
    """The command as one shell-quoted string, argv[0] cut to its name ("inloop loadgen load
    --target ..."): the program's install path says nothing about the run and leaks paths."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def jsonable_args(args) -> dict:
    """vars(args) without the handler (`func`) and with Paths/tuples made JSON values."""
    out = {}
    for key, value in vars(args).items():
        if callable(value):
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = json.loads(json.dumps(value, default=str))
    return out


def run_meta(args, backend: str, model_dir: str | Path | None, seeds: list[int],
             profiles: dict | None = None, *, model_name: str | None = None) -> dict:
    """The artifact's `meta` block. `model_dir` may be None (a remote runtime whose weights
    we cannot see): the sha256 is then "" and `model_name` (e.g. ModelInfo.name) names it."""
    label = model_label(model_dir)
    if model_name is not None:
        label["name"] = model_name
    return {
        "commit": git_commit(),
        "command": command_line(),
        "host": {"cpu": cpu_model(), "cores": os.cpu_count() or 0, "gpu": gpu_name()},
        "backend": backend,
        "model": {**label, "sha256": model_sha256(model_dir)},
        "seeds": [int(s) for s in seeds],
        "packages": package_versions(),
        "profiles": dict(profiles or {}),
        "args": jsonable_args(args) if args is not None else {},
    }
