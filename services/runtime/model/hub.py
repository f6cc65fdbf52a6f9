"""Hub ids (`ORG/NAME[@REVISION]`) through `huggingface_hub` and its standard cache.

    pull_hub("Qwen/Qwen3-0.6B")            -> the snapshot directory in the HF cache
    pull_hub("Qwen/Qwen3-0.6B", "main")    (a branch, tag or commit)

`snapshot_download` does the work: only the files a model directory needs (ALLOW_PATTERNS),
progress bars, resumed downloads, HF_TOKEN for gated and private repos, HF_ENDPOINT, HF_HOME /
HF_HUB_CACHE for the cache, and HF_HUB_OFFLINE=1 to serve what was pulled before with no
network at all. config.json comes first, so an architecture we cannot run fails before
gigabytes of weights move. Every failure is one ModelLoadError line that says what to do.
"""
from __future__ import annotations

import re
from pathlib import Path

from inloop.services.runtime.model.architectures import read_config
from inloop.services.runtime.model.config import ModelLoadError

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
ALLOW_PATTERNS = [
    "config.json", "generation_config.json",
    "*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json",
]


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """('ORG/NAME', revision or None) when `spec` reads as a Hub id, else None."""
    match = HUB_ID.match(spec)
    if match is None or spec.endswith(".gguf"):
        return None
    return match["repo"], match["revision"]


def _hub_error(exc: Exception, repo: str, revision: str | None) -> ModelLoadError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError, IncompleteSnapshotError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    spec = repo if revision is None else f"{repo}@{revision}"
    cache = constants.HF_HUB_CACHE
    if isinstance(exc, GatedRepoError):
        return ModelLoadError(f"{repo} is gated: accept its terms on its Hub page, then set HF_TOKEN to a token "
                              "of that account (or run `hf auth login`)")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelLoadError(f"{repo} was not found on {constants.ENDPOINT}: check the id, or set HF_TOKEN "
                              "if the repo is private")
    if isinstance(exc, RevisionNotFoundError):
        return ModelLoadError(f"{repo} has no revision {revision!r}: name a branch, tag or commit it has")
    if isinstance(exc, IncompleteSnapshotError):
        return ModelLoadError(f"the cached copy of {spec} in {cache} is incomplete (a download stopped): run "
                              f"`inloop model pull {spec}` with network to finish it")
    if isinstance(exc, LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return ModelLoadError(f"{spec} is not in the Hub cache ({cache}) and HF_HUB_OFFLINE is set: pull it "
                                  f"with network first (`inloop model pull {spec}`, or copy a cache that has it)")
        return ModelLoadError(f"cannot reach the Hub at {constants.ENDPOINT} and {spec} is not in the cache "
                              f"({cache}): check the network, proxy or HF_ENDPOINT, or pull it on a host with "
                              "network and copy the cache")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "an error"
        if status == 401:
            return ModelLoadError(f"{constants.ENDPOINT} refused the token for {repo} (401): set HF_TOKEN to a "
                                  "valid token, or unset it for a public repo")
        return ModelLoadError(f"{constants.ENDPOINT} answered {status} for {repo}: try again later")
    if isinstance(exc, HFValidationError):
        return ModelLoadError(f"{spec!r} is not a valid Hub id: write ORG/NAME or ORG/NAME@REVISION")
    detail = (str(exc).strip().splitlines() or [""])[0][:200]
    return ModelLoadError(f"cannot fetch {spec} from {constants.ENDPOINT} ({type(exc).__name__}: {detail}): "
                          "check the network, proxy or HF_ENDPOINT")


def pull_hub(repo: str, revision: str | None = None) -> Path:
    """The model's snapshot directory in the HF cache, downloaded (or completed) if needed."""
    from huggingface_hub import snapshot_download

    try:
        config_dir = Path(snapshot_download(repo, revision=revision, allow_patterns=["config.json"]))
        if not (config_dir / "config.json").is_file():
            raise ModelLoadError(f"{repo} has no config.json (a GGUF-only repo?): download its .gguf file and "
                                 "pass the file's path to --model")
        read_config(config_dir)  # an unsupported architecture fails here, naming the supported ones
        snapshot = Path(snapshot_download(repo, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except ModelLoadError:
        raise
    except Exception as exc:  # the Hub client's errors, its transport's (proxy, TLS), the cache's
        raise _hub_error(exc, repo, revision) from None
    if not any(snapshot.glob("*.safetensors")):
        raise ModelLoadError(f"{repo} has no *.safetensors weights: inloop loads safetensors checkpoints "
                             "(or a .gguf file given by path)")
    return snapshot
