"""scripts/gpu_baseline.py: a commit's tree exported for gpu_check --baseline, benched in a
child whose imports resolve to that tree (a stub tree here: no GPU), and the comparison lines."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from . import scripts

REPO = Path(__file__).resolve().parents[4]
SCRIPT = scripts.SCRIPTS / "gpu_baseline.py"


@pytest.fixture(scope="module")
def gpu_baseline():
    return scripts.load("gpu_baseline")


def test_prepare_exports_the_commits_services_proto_and_bench(gpu_baseline, tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("no .git in this copy")
    short = gpu_baseline.prepare("HEAD", tmp_path / "b")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert short == head.stdout.strip() and (tmp_path / "b" / "COMMIT").read_text().strip() == short
    assert (tmp_path / "b" / "bench/cuda/benchmark.py").exists() and (tmp_path / "b" / "services/cli.py").exists()
    assert (tmp_path / "b" / "proto/inloop/v1").is_dir() and not (tmp_path / "b" / "tests").exists()


def _stub_tree(root: Path, decode_ms: float, namespaced: bool = False) -> Path:
    """A tree whose bench_cuda returns decode_ms. `namespaced`: this layout (services import as
    inloop.services, the benchmark in bench/cuda/); else ae93aa1's (plain services, the
    benchmark inside the CUDA backend)."""
    cuda = root / "services/runtime/backends/cuda"
    cuda.mkdir(parents=True)
    pkg = "inloop.services" if namespaced else "services"
    (root / "services/cli.py").write_text(f"from {pkg}.runtime.backends.cuda import backend\n")
    for d in (root / "services", root / "services/runtime", root / "services/runtime/backends", cuda):
        (d / "__init__.py").write_text("")
    (cuda / "backend.py").write_text("class CudaBackend:\n    pass\n")
    benchmark = root / "bench/cuda/benchmark.py" if namespaced else cuda / "benchmark.py"
    benchmark.parent.mkdir(parents=True, exist_ok=True)
    benchmark.write_text(
        "import os\n"
        "def bench_cuda(model_dir, be, prompt_len, decode_tokens):\n"
        f"    return {{'decode_ms_per_token': {decode_ms}, 'ttft_ms': 3.0, 'unused': 1,\n"
        "            'decode_kinds': {'kinds': {'gemv_residual': {'only_us_each': 2.0}}},\n"
        "            'model': str(model_dir), 'tokens': decode_tokens, 'cache': os.environ['INLOOP_CACHE']}\n")
    (root / "COMMIT").write_text("abc1234\n")
    return root


@pytest.mark.parametrize("namespaced", [False, True], ids=["services", "inloop.services"])
def test_bench_runs_the_trees_code_not_this_checkouts(gpu_baseline, tmp_path, monkeypatch, namespaced):
    tree = _stub_tree(tmp_path / "tree", 0.5, namespaced)
    assert gpu_baseline.package_of(tree) == ("inloop.services" if namespaced else "services")
    monkeypatch.setattr(gpu_baseline, "KEEP", gpu_baseline.KEEP + ("model", "tokens", "cache"))
    # as gpu_env.sh leaves it: this checkout's inloop namespace and the repository first on the path
    ours = scripts.load("import_tree").link(REPO, tmp_path / "ours-src")
    monkeypatch.setenv("PYTHONPATH", f"{ours}:{REPO}")
    r = gpu_baseline.bench(tree, tmp_path / "model", tmp_path / "work", 32, 7)
    assert r["commit"] == "abc1234" and r["decode_ms_per_token"] == 0.5 and "unused" not in r
    assert r["model"] == str(tmp_path / "model") and r["tokens"] == 7
    assert r["cache"] == str(tmp_path / "work" / "baseline-cache")


def test_a_failing_baseline_is_reported_not_raised(gpu_baseline, tmp_path):
    tree = _stub_tree(tmp_path / "tree", 0.5)
    (tree / "services/runtime/backends/cuda/backend.py").write_text("raise RuntimeError('no device here')\n")
    r = gpu_baseline.bench(tree, tmp_path / "model", tmp_path / "work", 32, 7)
    assert r["commit"] == "abc1234" and "no device here" in r["error"]


def test_summary_compares_each_model(gpu_baseline):
    bench = {"smollm2-135m": {"ours": {"decode_ms_per_token": 0.4, "ttft_ms": 2.0,
                                       "decode_kinds": {"kinds": {"gemv_residual": {"only_us_each": 1.5}}}},
                              "baseline": {"commit": "abc1234", "decode_ms_per_token": 0.5, "ttft_ms": 2.5,
                                           "decode_kinds": {"kinds": {"gemv_residual": {"only_us_each": 2.0}}}}},
             "qwen2.5-0.5b": {"ours": {}, "baseline": {"commit": "abc1234", "error": "exit 1: boom"}},
             "other": {"ours": {"decode_ms_per_token": 1.0}}}
    lines = gpu_baseline.summary_lines(bench)
    assert lines[0] == ("smollm2-135m  baseline abc1234 -> this: decode ms/tok 0.500 -> 0.400 (0.80x), "
                        "TTFT ms 2.50 -> 2.00 (0.80x)")
    assert lines[1].endswith("per launch alone (us): gemv_residual 2.0 -> 1.5")
    assert lines[2] == "qwen2.5-0.5b  baseline abc1234: exit 1: boom" and len(lines) == 3


def test_cli_help():
    out = subprocess.run([sys.executable, str(SCRIPT), "prepare", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "the commit to compare against" in out.stdout


def test_import_tree_makes_a_checkout_the_installed_namespace(tmp_path):
    """What gpu_env.sh does where pip cannot run: the links resolve `inloop.services` and
    `inloop.v1` to this checkout, ahead of any installed copy."""
    src = scripts.load("import_tree").link(REPO, tmp_path / "src")
    code = "import inloop.services.cli as c, inloop.loadgen.cli as l, inloop.v1.runtime_pb2 as p; print(c.__file__, l.__file__, p.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, check=True).stdout.split()
    assert out == [str(src / "inloop/services/cli.py"), str(src / "inloop/loadgen/cli.py"),
                   str(src / "inloop/v1/runtime_pb2.py")]
