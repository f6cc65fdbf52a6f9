"""Hub ids through huggingface_hub, never contacting a real hub: the offline path reads an HF
cache these tests lay out themselves; HF_ENDPOINT points at a closed loopback port for the
no-network message, and at a small local server that answers as the Hub does for a gated or
missing repo (its X-Error-Code headers)."""
from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.hub import parse_hub_id
from inloop.services.runtime.model.resolve import model_name, resolve_model
from inloop.services.runtime.model.tiny import make_tiny
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import runtime_pb2_grpc
from tests.service_procs import ServiceProcess

REPO_ID = "tiny-org/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hub_cache(hf_home: Path, repo_id: str, model_dir: Path, commit: str = COMMIT) -> Path:
    """The standard HF cache layout (hub/models--ORG--NAME/{refs/main, snapshots/COMMIT, blobs})."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in model_dir.iterdir():
        blob = repo / "blobs" / f"{abs(hash(path.name)):x}"
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snapshot


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inloop.services.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """A fresh HF_HOME and INLOOP_CACHE; no token from the host."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("INLOOP_CACHE", str(tmp_path / "inloop"))
    for var in ("HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "hf"


def test_parse_hub_id():
    assert parse_hub_id("Qwen/Qwen3-0.6B") == ("Qwen/Qwen3-0.6B", None)
    assert parse_hub_id("HuggingFaceTB/SmolLM3-3B@main") == ("HuggingFaceTB/SmolLM3-3B", "main")
    assert parse_hub_id(f"org/name@{COMMIT}") == ("org/name", COMMIT)
    for not_an_id in ("default", "/abs/path", "./rel/dir", "a/b/c", "model.gguf", "org/model.gguf", "org/"):
        assert parse_hub_id(not_an_id) is None, not_an_id


def test_pull_serve_and_answer_offline(hub_env, tmp_path, monkeypatch):
    """pull from the prepared cache, serve it by its Hub id, answer a prompt: all with HF_HUB_OFFLINE=1."""
    model = make_tiny("llama", tmp_path / "tiny", seed=11)
    snapshot = lay_out_hub_cache(hub_env, REPO_ID, model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pulled = _cli("model", "pull", REPO_ID)
    assert pulled.returncode == 0, pulled.stderr
    assert Path(pulled.stdout.strip()) == snapshot

    srv = ServiceProcess("runtime", ["serve", "--model", REPO_ID, "--backend", "cpu", "--port", "0"],
                         tmp_path / "runtime.jsonl")
    try:
        req = pb.GenerateRequest(sampling=pb.SamplingParams(max_tokens=8))
        req.messages.add(role="user", content="What is 17 * 23?")
        from inloop.services.common.grpc_client import insecure_channel

        reply = runtime_pb2_grpc.RuntimeStub(insecure_channel(srv.target)).Generate(req, timeout=60)
        assert reply.model == REPO_ID
        assert reply.usage.completion_tokens > 0
        from inloop.services.contract.generation import ChatMessage, GenerateRequest, SamplingParams

        local = Engine.load(snapshot).generate(GenerateRequest(messages=[ChatMessage("user", "What is 17 * 23?")],
                                                               sampling=SamplingParams(max_tokens=8)))
        assert list(reply.token_ids) == local.token_ids  # the served model is the cached one
    finally:
        srv.stop()


def test_no_network_is_one_line_that_says_what_to_do(hub_env, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    done = _cli("model", "pull", "some-org/not-cached")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot reach the Hub at http://127.0.0.1:{port} and some-org/not-cached "
                                "is not in the cache"), done.stderr
    assert "check the network" in lines[-1]


def test_offline_and_not_cached(hub_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    done = _cli("model", "pull", "some-org/not-cached")
    assert done.returncode == 1
    assert "is not in the Hub cache" in done.stderr and "HF_HUB_OFFLINE is set" in done.stderr
    assert "inloop model pull some-org/not-cached" in done.stderr


def test_unsupported_architecture_lists_the_supported_ones(hub_env, tmp_path, monkeypatch):
    model = make_tiny("llama", tmp_path / "tiny")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox",
                                                   "architectures": ["GPTNeoXForCausalLM"]}))
    lay_out_hub_cache(hub_env, "org/neox", model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    done = _cli("model", "pull", "org/neox")
    assert done.returncode == 1
    assert "unsupported model_type 'gpt_neox'" in done.stderr
    assert "inloop runs llama, qwen2, qwen3, smollm3" in done.stderr


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers every API call as the Hub does for a gated repo or a missing one."""

    def do_GET(self):  # noqa: N802 - the http.server hook
        code, error = (403, "GatedRepo") if "gated" in self.path else (404, "RepoNotFound")
        self.send_response(code)
        self.send_header("X-Error-Code", error)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"error": error}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(hub_env, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()


def test_gated_and_missing_repos(fake_hub):
    gated = _cli("model", "pull", "org/gated-model")
    assert gated.returncode == 1
    assert gated.stderr.strip().splitlines()[-1] == (
        "error: org/gated-model is gated: accept its terms on its Hub page, then set HF_TOKEN to a token of that "
        "account (or run `hf auth login`)")
    missing = _cli("model", "pull", "org/missing-model")
    assert missing.returncode == 1
    assert "org/missing-model was not found on http://127.0.0.1:" in missing.stderr
    assert "set HF_TOKEN if the repo is private" in missing.stderr


def test_local_directory_wins_over_the_hub_id(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_tiny("qwen2", tmp_path / "tiny-org" / "tiny-llama")
    assert resolve_model(REPO_ID) == Path(REPO_ID)
    assert "wins over the Hub id tiny-org/tiny-llama" in capsys.readouterr().err
    assert model_name(REPO_ID, Path(REPO_ID)) == "tiny-llama"


def test_chat_template_jinja_beside_the_tokenizer(tmp_path):
    """Newer Hub repos ship the template as chat_template.jinja, not inside tokenizer_config.json."""
    from inloop.services.runtime.model.tokenizer import Tokenizer

    model = make_tiny("llama", tmp_path / "tiny")
    config = json.loads((model / "tokenizer_config.json").read_text())
    template = config.pop("chat_template").replace("assistant", "bot")
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").write_text(template)
    assert Tokenizer(model).render_chat([{"role": "user", "content": "Hi"}]).endswith("<|im_start|>bot\n")
